"""The namespace harness itself (tests/e2e/netns.py): it leaves nothing behind, whatever happens.

As root: a lab's three namespaces, veths and processes are gone after the
block, also when the block fails; namespaces named like a lab whose process
is dead (a run that was killed) are swept when the next lab is made, and a
live process's lab is left alone.  Addresses only from 198.18.0.0/15.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.e2e.netns import CONSOLE_LINK, REMOTE_LINK, namespaces, sweep_leftovers, three_namespaces

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0, reason="network namespaces need Linux and root"
)


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_lab_is_wired_and_deleted_even_when_its_block_fails() -> None:
    names: list[str] = []
    sleeper_pid = 0
    with pytest.raises(RuntimeError, match="the test failed"), three_namespaces("fail") as lab:
        names = [lab.console, lab.jumpoint, lab.remote]
        assert set(names) <= set(namespaces())
        ping = lab.run(lab.console, "ping", "-n", "-c", "1", "-W", "2", str(CONSOLE_LINK[1].ip))
        assert ping.returncode == 0
        ping = lab.run(lab.jumpoint, "ping", "-n", "-c", "1", "-W", "2", str(REMOTE_LINK[1].ip))
        assert ping.returncode == 0
        assert lab.routes(lab.console) == [  # no default route: nothing leaves the lab
            {
                "dst": "198.18.1.0/30",
                "dev": "jptc0",
                "protocol": "kernel",
                "scope": "link",
                "prefsrc": "198.18.1.2",
                "flags": [],
            }
        ]
        sleeper_pid = lab.spawn(lab.remote, "sleep", "600").pid
        raise RuntimeError("the test failed")
    assert not set(names) & set(namespaces())
    with pytest.raises(ProcessLookupError):
        os.kill(sleeper_pid, 0)


def test_the_namespaces_of_a_dead_run_are_swept_and_a_live_ones_kept() -> None:
    dead = [f"jpt-{side}-{dead_pid()}" for side in "cjr"]
    live = f"jpt-r-{os.getpid()}-live"
    try:
        for name in [*dead, live]:
            subprocess.run(["ip", "netns", "add", name], check=True)
        swept = sweep_leftovers()
        assert sorted(swept) == sorted(dead)
        present = namespaces()
        assert live in present and not set(dead) & set(present)
    finally:
        for name in [*dead, live]:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
