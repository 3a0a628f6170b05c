"""The Jumpoint's nftables table, installed and removed by the real nft in a namespace of its own.

Needs root (CI runs as root): the test makes a network namespace named
C{jpt-egress-PID}, installs the table twice (the second run replaces the
first atomically), reads it back, removes it, and deletes the namespace
whatever happens.  No address is configured: nothing is routed anywhere.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from jumpoint.network.egress import TABLE, CommandResult, Egress, run_command
from jumpoint.network.settings import NetworkSettings

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"jpt-egress-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def in_namespace(name: str):  # type: ignore[no-untyped-def]
    def run(argv: Sequence[str], stdin: str | None) -> CommandResult:
        return run_command(["ip", "netns", "exec", name, *argv], stdin)

    return run


def table_text(name: str) -> CommandResult:
    return run_command(["ip", "netns", "exec", name, "nft", "list", "table", "inet", TABLE], None)


def test_the_real_nft_takes_the_table_replaces_it_and_removes_it(
    namespace: str, tmp_path: Path
) -> None:
    forward = tmp_path / "ip_forward"
    forward.write_text("1\n")
    settings = NetworkSettings(IPv4Network("198.19.4.0/24"), "jpt-eg0")
    egress = Egress(settings, in_namespace(namespace), forward)
    egress.install()
    egress.install()  # a table left by an earlier run is replaced, not doubled
    listed = table_text(namespace)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("chain forward") == 1
    assert 'iifname "jpt-eg0" ip saddr 198.19.4.0/24 accept' in listed.stdout
    assert 'oifname != "jpt-eg0" masquerade' in listed.stdout
    assert egress.remove() == [f"nftables table inet {TABLE}"]
    gone = table_text(namespace)
    assert gone.returncode != 0 and "No such file or directory" in gone.stderr
