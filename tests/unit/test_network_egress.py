"""The Jumpoint's network settings, inner address pool, egress rules and host checks."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from jumpoint.config import parse_config
from jumpoint.network import host_checks
from jumpoint.network.address_pool import POOL_EXHAUSTED, AddressPool
from jumpoint.network.egress import TABLE, CommandResult, Egress, EgressError, ruleset
from jumpoint.network.settings import NetworkSettings
from shared.errors import AccessDenied, ConfigError

BASE = """\
jumpoint:
  name: test
  listen: 127.0.0.1:7443
  addresses: [127.0.0.1]
"""


def parse(text: str) -> NetworkSettings:
    return parse_config(BASE + text, Path("/etc/jumpoint/jumpoint.yaml")).network


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.message


# -- settings ------------------------------------------------------------------


def test_without_a_network_section_every_default_holds() -> None:
    settings = parse("")
    assert settings == NetworkSettings()
    assert settings.pool == IPv4Network("100.64.0.0/16")
    assert (settings.interface, settings.egress, settings.mtu) == ("jpt0", "masquerade", 1400)
    assert settings.gateway == IPv4Address("100.64.0.1")
    assert parse("network:\n") == NetworkSettings()


def test_a_full_network_section() -> None:
    settings = parse(
        "network:\n  pool: 198.19.0.0/24\n  interface: jpt-lab\n  egress: masquerade\n"
        "  mtu: 1380\n  flow_limit: 100\n"
    )
    assert settings == NetworkSettings(
        IPv4Network("198.19.0.0/24"), "jpt-lab", "masquerade", 1380, 100
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("  pool: 8.8.8.0/24\n", "never public addresses"),
        ("  pool: 100.64.0.1/16\n", "CIDR"),
        ("  pool: fd00::/64\n", "IPv4 only"),
        ("  pool: 10.0.0.0/30\n", "/29 or larger"),
        ("  pool: 127.0.0.0/8\n", "loopback"),
        ("  interface: eth0.5\n", "an interface name"),
        ("  interface: averyveryverylongname\n", "15"),
        ("  egress: routed\n", "must be one of: masquerade"),
        ("  mtu: 100\n", "between 576 and 9000"),
        ("  flow_limit: 0\n", "between 1"),
        ("  speed: 10\n", "unknown key"),
    ],
)
def test_every_network_field_is_checked_with_file_line_and_key(text: str, message: str) -> None:
    error = error_of("network:\n" + text)
    key = text.strip().split(":")[0]
    assert error.startswith(f"/etc/jumpoint/jumpoint.yaml:6: network.{key}: ")
    assert message in error


# -- the inner address pool --------------------------------------------------------


def test_each_session_gets_its_own_address_and_keeps_it() -> None:
    pool = AddressPool(IPv4Network("198.19.0.0/29"))
    assert pool.gateway == IPv4Address("198.19.0.1") and pool.capacity == 5
    first = pool.allocate("s1")
    assert first == IPv4Address("198.19.0.2")
    assert pool.allocate("s1") == first
    assert pool.allocate("s2") == IPv4Address("198.19.0.3")
    assert pool.address_of("s2") == IPv4Address("198.19.0.3") and pool.in_use == 2


def test_a_released_address_is_reused_only_after_the_fresh_ones() -> None:
    pool = AddressPool(IPv4Network("198.19.0.0/29"))
    given = [pool.allocate(f"s{n}") for n in range(3)]
    assert pool.release("s0") == given[0]
    assert pool.release("s0") is None
    later = [pool.allocate(f"t{n}") for n in range(3)]
    assert later == [IPv4Address("198.19.0.5"), IPv4Address("198.19.0.6"), given[0]]


def test_a_full_pool_refuses_with_its_rule() -> None:
    pool = AddressPool(IPv4Network("198.19.0.0/29"))
    addresses = {pool.allocate(f"s{n}") for n in range(pool.capacity)}
    assert IPv4Address("198.19.0.0") not in addresses  # network
    assert IPv4Address("198.19.0.1") not in addresses  # the Jumpoint's own
    assert IPv4Address("198.19.0.7") not in addresses  # broadcast
    with pytest.raises(AccessDenied) as info:
        pool.allocate("one-too-many")
    assert info.value.rule == POOL_EXHAUSTED and "198.19.0.0/29" in info.value.message
    pool.release("s3")
    assert pool.allocate("one-too-many") == IPv4Address("198.19.0.5")


# -- egress --------------------------------------------------------------------------


class Runner:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.fail = fail

    def __call__(self, argv: Sequence[str], stdin: str | None) -> CommandResult:
        self.calls.append((list(argv), stdin))
        if self.fail:
            return CommandResult(1, "", "Error: Could not process rule: Operation not permitted")
        return CommandResult(0, "", "")


SETTINGS = NetworkSettings(IPv4Network("198.19.0.0/24"), "jpt9")


def test_the_ruleset_replaces_its_own_table_and_names_only_the_tunnel_traffic() -> None:
    text = ruleset(SETTINGS)
    lines = [line.strip() for line in text.splitlines()]
    assert lines[:3] == [
        f"table inet {TABLE} {{}}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
    ]
    assert 'iifname "jpt9" ip saddr 198.19.0.0/24 accept' in lines
    assert 'oifname "jpt9" ct state established,related accept' in lines
    assert 'ip saddr 198.19.0.0/24 oifname != "jpt9" masquerade' in lines
    assert sum("policy accept" in line for line in lines) == 3  # other traffic: the host's


def test_install_turns_forwarding_on_and_remove_restores_it(tmp_path: Path) -> None:
    forward = tmp_path / "ip_forward"
    forward.write_text("0\n")
    runner = Runner()
    egress = Egress(SETTINGS, runner, forward)
    egress.install()
    assert forward.read_text() == "1\n" and egress.installed
    assert runner.calls == [(["nft", "-f", "-"], ruleset(SETTINGS))]
    removed = egress.remove()
    assert runner.calls[-1] == (["nft", "delete", "table", "inet", TABLE], None)
    assert removed == [f"nftables table inet {TABLE}", "net.ipv4.ip_forward=1 (set back to 0)"]
    assert forward.read_text() == "0\n"
    assert egress.remove() == []


def test_forwarding_already_on_is_left_on(tmp_path: Path) -> None:
    forward = tmp_path / "ip_forward"
    forward.write_text("1\n")
    egress = Egress(SETTINGS, Runner(), forward)
    egress.install()
    assert egress.remove() == [f"nftables table inet {TABLE}"]
    assert forward.read_text() == "1\n"


def test_a_failing_nft_or_forwarding_is_a_clear_error(tmp_path: Path) -> None:
    forward = tmp_path / "ip_forward"
    forward.write_text("1\n")
    with pytest.raises(EgressError, match="Operation not permitted"):
        Egress(SETTINGS, Runner(fail=True), forward).install()
    with pytest.raises(EgressError, match="kernel forwarding cannot be enabled"):
        Egress(SETTINGS, Runner(), tmp_path / "missing" / "ip_forward").install()


# -- host checks ------------------------------------------------------------------------


def test_a_capable_linux_host_has_no_problem(tmp_path: Path) -> None:
    forward = tmp_path / "ip_forward"
    forward.write_text("0\n")
    found = host_checks.problems(
        SETTINGS,
        platform="linux",
        capabilities=lambda: 1 << host_checks.CAP_NET_ADMIN,
        which=lambda name: f"/usr/sbin/{name}",
        ip_forward=forward,
    )
    assert found == []


def test_each_missing_piece_is_one_line_saying_what_to_do(tmp_path: Path) -> None:
    found = host_checks.problems(
        SETTINGS,
        platform="linux",
        capabilities=lambda: 0,
        which=lambda name: None,
        ip_forward=tmp_path / "absent",
    )
    assert len(found) == 3
    assert "CAP_NET_ADMIN" in found[0] and "AmbientCapabilities" in found[0]
    assert "install nftables" in found[1]
    assert "kernel forwarding cannot be read" in found[2]
    windows = host_checks.problems(SETTINGS, platform="win32")
    assert windows == ["network tunnels need a Linux Jumpoint (this one runs on win32)"]


def test_capabilities_are_read_from_proc_status(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t0000000000001000\n")
    assert host_checks.effective_capabilities(status) == 1 << 12
    status.write_text("Name:\tx\n")
    assert host_checks.effective_capabilities(status) is None
