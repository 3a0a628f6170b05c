"""Network items (filters) and tunnel protocols: the schema, the Jumpoint's changes, the CLI.

- jumpoint.yaml: a filter is a mapping C{{ip, protocol, ports}} or the text
  C{IP[/PROTOCOL[/PORTS]]}; every bad field is an error naming the file, the
  line and the key; both forms are stored and shown as one canonical text;
  a tunnel pair takes C{protocol: tcp | udp | tcp-udp};
- the Jumpoint (a real L{JumpointCore} over in-memory TLS, the world of
  L{tests.unit.test_session_rules}): C{filter_add}/C{filter_remove} and
  protocol-aware C{tunnel_add}/C{tunnel_remove}, with their refusals, rights
  and audit rows;
- the C{jump item ...} commands (L{console.cli.main}) against that Jumpoint:
  output, C{--json}, error codes and exit statuses.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from console import cli as jump_cli
from console import item_commands
from jumpoint.config import parse_config
from shared.errors import AccessDenied, ConfigError, ExitCode, UsageError
from shared.items import Item, item_from_data
from shared.kinds.tcp import parse_tunnel_text
from shared.protocol import control
from tests.unit.test_session_rules import CONFIG, World, keys, new_world, world

__all__ = ["keys", "new_world", "world"]  # fixtures used by the tests below

BASE = """\
jumpoint:
  name: test
  listen: 127.0.0.1:7443
  addresses: [127.0.0.1]
items:
  - name: lab-net
    type: network
    filters:
"""
FIRST_FILTER_LINE = BASE.count("\n") + 1
"""The line of the first filter of L{BASE} + filters."""


def parse(text: str) -> Any:
    return parse_config(text, Path("/etc/jumpoint/jumpoint.yaml"))


def filters_error(filters: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(BASE + filters)
    return caught.value.message


# -- jumpoint.yaml: the issue's form, the text form, one canonical form ----------


def test_the_issue_s_example_is_stored_and_shown_as_canonical_text() -> None:
    config = parse(
        BASE
        + """\
      - ip: 198.18.2.0/24
        protocol: udp
        ports: "53,123"
      - ip: 198.18.2.10
        protocol: tcp
        ports: "22,443"
      - {ip: "198.18.3.1-198.18.3.9", protocol: 47}
      - {ip: [198.18.4.2, 198.18.4.1], protocol: SCTP, ports: [3868, "5000-5010"]}
      - {ip: 198.18.5.0/24}
      - 198.18.6.0/24/icmp
"""
    )
    (item,) = config.items
    expected = [
        "198.18.2.0/24/udp/53,123",
        "198.18.2.10/tcp/22,443",
        "198.18.3.1-198.18.3.9/gre",
        "198.18.4.1,198.18.4.2/sctp/3868,5000-5010",
        "198.18.5.0/24",
        "198.18.6.0/24/icmp",
    ]
    assert item.to_json()["filters"] == expected
    assert [rule.protocol_number for rule in item.filters] == [17, 6, 47, 132, None, 1]
    # what is stored reads back the same, as a console item
    assert item_from_data(item.to_spec(), "console", stored=True).filters == item.filters


@pytest.mark.parametrize(
    "spelling",
    [
        "{ip: 10.0.0.9}",
        "10.0.0.9",
        "10.0.0.9/32",
        "10.0.0.9-10.0.0.9",
        "{ip: 10.0.0.9, protocol: any}",
        "10.0.0.9/any",
    ],
)
def test_every_spelling_of_a_rule_is_one_canonical_filter(spelling: str) -> None:
    config = parse(BASE + f"      - {spelling}\n")
    assert config.items[0].to_json()["filters"] == ["10.0.0.9"]


@pytest.mark.parametrize(
    ("filters", "line", "key", "detail"),
    [
        ("      - {protocol: tcp}\n", 0, "filters[0]", "missing required key 'ip'"),
        ("      - {ip: 10.0.0.1, colour: red}\n", 0, "filters[0].colour", "unknown key"),
        ("      - {ip: fd00::1}\n", 0, "filters[0].ip", "'fd00::1' is IPv6: filters are IPv4"),
        ("      - {ip: 10.0.0.256}\n", 0, "filters[0].ip", "'10.0.0.256' is not an IP address"),
        ("      - {ip: db.corp}\n", 0, "filters[0].ip", "'db.corp' is not an IP address"),
        ("      - {ip: ''}\n", 0, "filters[0].ip", "must be 1 to 4096 characters long"),
        ("      - {ip: 10.0.0.0/33}\n", 0, "filters[0].ip", "'10.0.0.0/33' is not a CIDR"),
        (
            "      - {ip: 10.0.0.5/24}\n",
            0,
            "filters[0].ip",
            "has host bits set: did you mean '10.0.0.0/24'?",
        ),
        (
            "      - {ip: '10.0.0.9-10.0.0.1'}\n",
            0,
            "filters[0].ip",
            "address range '10.0.0.9-10.0.0.1' is reversed",
        ),
        (
            "      - {ip: '10.0.0.1,10.0.0.5-10.0.0.9'}\n",
            0,
            "filters[0].ip",
            "the range '10.0.0.5-10.0.0.9' is in a list: a range stands alone",
        ),
        (
            "      - {ip: '10.0.0.1,,10.0.0.2'}\n",
            0,
            "filters[0].ip",
            "an address between commas is empty",
        ),
        ("      - {ip: {a: 1}}\n", 0, "filters[0].ip", "expected a single value"),
        (
            "      - {ip: 10.0.0.1, protocol: tcpp}\n",
            0,
            "filters[0].protocol",
            "'tcpp' is not an IP protocol: expected an IANA keyword",
        ),
        (
            "      - {ip: 10.0.0.1, protocol: 256}\n",
            0,
            "filters[0].protocol",
            "protocol number 256 is out of range: expected 0 to 255",
        ),
        ("      - {ip: 10.0.0.1, protocol: true}\n", 0, "filters[0].protocol", "expected a string"),
        (
            "      - {ip: 10.0.0.1, protocol: icmp, ports: 22}\n",
            0,
            "filters[0].ports",
            "icmp has no ports: ports are only allowed with tcp, udp, sctp, dccp or udplite",
        ),
        (
            "      - {ip: 10.0.0.1, ports: 22}\n",
            0,
            "filters[0].ports",
            "ports need a protocol with ports",
        ),
        (
            "      - {ip: 10.0.0.1, protocol: tcp, ports: 70000}\n",
            0,
            "filters[0].ports",
            "port '70000' is out of range",
        ),
        (
            "      - {ip: 10.0.0.1, protocol: tcp, ports: ssh}\n",
            0,
            "filters[0].ports",
            "'ssh' is not a port",
        ),
        (
            "      - {ip: 10.0.0.1, protocol: tcp, ports: '22,,80'}\n",
            0,
            "filters[0].ports",
            "an item between commas is empty",
        ),
        (
            "      - {ip: 10.0.0.1, protocol: tcp, ports: '90-80'}\n",
            0,
            "filters[0].ports",
            "port range '90-80' is reversed",
        ),
        ("      - {ip: 10.0.0.1, protocol: tcp, ports: []}\n", 0, "filters[0].ports", "1 to 256"),
        (
            "      - 10.0.0.1\n      - 10.0.0.2/tcp/x\n",
            1,
            "filters[1]",
            "invalid filter rule '10.0.0.2/tcp/x': 'x' is not a port",
        ),
        (
            "      - 10.0.0.1\n      - {ip: 10.0.0.1/32}\n",
            1,
            "filters[1]",
            "the same filter as filters[0] (10.0.0.1)",
        ),
        (
            "      - 10.0.0.0/24/TCP/22\n      - {ip: 10.0.0.0/24, protocol: 6, ports: 22}\n",
            1,
            "filters[1]",
            "the same filter as filters[0] (10.0.0.0/24/tcp/22)",
        ),
        ("      - [10.0.0.1]\n", 0, "filters[0]", "expected a single value"),
    ],
)
def test_every_bad_filter_field_names_file_line_and_key(
    filters: str, line: int, key: str, detail: str
) -> None:
    message = filters_error(filters)
    assert message.startswith(
        f"/etc/jumpoint/jumpoint.yaml:{FIRST_FILTER_LINE + line}: items[0].{key}: "
    ), message
    assert detail in message


def test_an_item_has_one_to_fifty_filters() -> None:
    message = filters_error("      []\n")
    assert message.startswith(f"/etc/jumpoint/jumpoint.yaml:{FIRST_FILTER_LINE}: items[0].filters")
    assert "expected 1 to 50 entries" in message
    fifty_one = "".join(f"      - 10.0.{n}.0/24\n" for n in range(51))
    assert "expected 1 to 50 entries" in filters_error(fifty_one)
    config = parse(BASE + "".join(f"      - 10.0.{n}.0/24\n" for n in range(50)))
    assert len(config.items[0].filters) == 50
    missing = BASE.replace("    filters:\n", "")
    with pytest.raises(ConfigError, match=r":6: items\[0\]: missing required key 'filters'"):
        parse(missing)


def test_a_stored_row_of_an_older_rule_stays_readable() -> None:
    """IPv6 and ranges in lists are refused now; a stored row with them still reads."""
    spec = {"name": "old", "type": "network", "filters": ["10.0.0.1,10.0.0.5-10.0.0.9,fd00::/64"]}
    with pytest.raises(ConfigError, match=r"item: filters\[0\]: .*IPv4 only"):
        item_from_data(spec, "console")
    stored = item_from_data(spec, "console", stored=True)
    assert stored.to_json()["filters"] == ["10.0.0.1,10.0.0.5-10.0.0.9,fd00::/64"]


# -- tunnel pairs take a protocol ---------------------------------------------------

TCP_BASE = """\
jumpoint:
  name: test
  listen: 127.0.0.1:7443
  addresses: [127.0.0.1]
items:
  - name: dns
    type: tcp
    host: 10.0.0.53
    tunnels:
"""


def test_tunnel_pairs_take_a_protocol_tcp_by_default() -> None:
    config = parse(
        TCP_BASE
        + """\
      - {local_port: 5353, remote_port: 53, protocol: udp}
      - {local_port: 5353, remote_port: 53}
      - {local_port: 8125, remote_port: 8125, protocol: tcp-udp}
      - {local_port: auto, remote_port: 22}
"""
    )
    (item,) = config.items
    assert [t.protocol for t in item.tunnels] == ["udp", "tcp", "tcp-udp", "tcp"]
    assert [t.text() for t in item.tunnels] == [
        "5353:53/udp",
        "5353:53",
        "8125:8125/tcp-udp",
        "auto:22",
    ]
    assert item.to_json()["tunnels"][0] == {
        "local_port": 5353,
        "remote_port": 53,
        "protocol": "udp",
    }
    # each protocol of a pair is a target of its own (5353:53 is there twice)
    assert item.allows_target("10.0.0.53", 53) and item.allows_target("10.0.0.53", 53, "udp")
    assert item.allows_target("10.0.0.53", 8125) and item.allows_target("10.0.0.53", 8125, "udp")
    assert not item.allows_target("10.0.0.53", 22, "udp")
    # UDP ports have no well-known scheme
    assert item.tunnels[0].effective_scheme is None and item.tunnels[3].effective_scheme == "ssh"


def test_a_udp_only_pair_opens_no_tcp_port() -> None:
    config = parse(TCP_BASE + "      - {remote_port: 53, protocol: udp}\n")
    (item,) = config.items
    assert not item.allows_target("10.0.0.53", 53)
    assert item.allows_target("10.0.0.53", 53, "udp")


@pytest.mark.parametrize(
    ("tunnels", "line", "key", "detail"),
    [
        (
            "      - {remote_port: 53, protocol: sctp}\n",
            0,
            "tunnels[0].protocol",
            "must be one of: tcp, udp, tcp-udp",
        ),
        (
            "      - {local_port: 5353, remote_port: 53, protocol: udp}\n"
            "      - {local_port: 5353, remote_port: 54, protocol: tcp-udp}\n",
            1,
            "tunnels[1]",
            "two tunnels use the same local port (5353/udp)",
        ),
        (
            "      - {local_port: 80, remote_port: 80}\n      - {local_port: 80, remote_port: 81}\n",
            1,
            "tunnels[1]",
            "two tunnels use the same local port (80/tcp)",
        ),
    ],
)
def test_a_bad_tunnel_protocol_names_file_line_and_key(
    tunnels: str, line: int, key: str, detail: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(TCP_BASE + tunnels)
    first = TCP_BASE.count("\n") + 1
    assert caught.value.message.startswith(
        f"/etc/jumpoint/jumpoint.yaml:{first + line}: items[0].{key}: "
    ), caught.value.message
    assert detail in caught.value.message


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("5353:53/udp", {"local_port": 5353, "remote_port": 53, "protocol": "udp"}),
        ("8125:8125/tcp-udp", {"local_port": 8125, "remote_port": 8125, "protocol": "tcp-udp"}),
        ("auto:53/UDP", {"local_port": "auto", "remote_port": 53, "protocol": "udp"}),
        (
            "8080:80/tcp/http",
            {"local_port": 8080, "remote_port": 80, "protocol": "tcp", "scheme": "http"},
        ),
        ("8080:80/http", {"local_port": 8080, "remote_port": 80, "scheme": "http"}),
        ("8080:80", {"local_port": 8080, "remote_port": 80}),
    ],
)
def test_the_console_text_of_a_pair_takes_a_protocol(text: str, parsed: dict[str, Any]) -> None:
    assert parse_tunnel_text(text) == parsed


@pytest.mark.parametrize("text", ["53:53/udp/dns/x", "53:53/udp/tcp", "53:53/", "53:53/udp/"])
def test_a_bad_pair_text_says_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match=r"LOCAL:REMOTE\[/PROTOCOL\]\[/SCHEME\]"):
        parse_tunnel_text(text)


# -- the Jumpoint: filter and tunnel changes over the channel -------------------------

NET = {
    "name": "lab-net",
    "type": "network",
    "jump_group": "lab",
    "filters": [
        {"ip": "198.18.2.0/24", "protocol": "udp", "ports": "53,123"},
        "198.18.2.10/tcp/22",
    ],
}


def _change(console: Any, item: str, change: str, value: str) -> dict[str, Any]:
    result = console.ask(control.CHANGE_ITEM, item=item, change=change, value=value)
    changed: dict[str, Any] = result["item"]
    return changed


def test_filters_are_added_and_removed_in_their_canonical_form(world: World) -> None:
    alice = world.connect("alice")
    created = alice.ask(control.CREATE_ITEM, item=NET)["item"]
    assert created["filters"] == ["198.18.2.0/24/udp/53,123", "198.18.2.10/tcp/22"]
    added = _change(alice, "lab-net", "filter_add", "198.18.2.11,198.18.2.9/ICMP")
    assert added["filters"][-1] == "198.18.2.9,198.18.2.11/icmp"
    # the same rule spelt another way is a duplicate
    error = alice.refused(
        control.CHANGE_ITEM, item="lab-net", change="filter_add", value="198.18.2.0/24/17/123,53"
    )
    assert isinstance(error, UsageError) and error.code == "usage"
    assert error.message == "item 'lab-net' already has filter 198.18.2.0/24/udp/53,123"
    removed = _change(alice, "lab-net", "filter_remove", "198.18.2.10/32/tcp/22")
    assert removed["filters"] == ["198.18.2.0/24/udp/53,123", "198.18.2.9,198.18.2.11/icmp"]
    error = alice.refused(
        control.CHANGE_ITEM, item="lab-net", change="filter_remove", value="198.18.9.9"
    )
    assert isinstance(error, UsageError)
    assert error.message == (
        "item 'lab-net' has no filter 198.18.9.9 (its filters: 198.18.2.0/24/udp/53,123,"
        " 198.18.2.9,198.18.2.11/icmp)"
    )
    _change(alice, "lab-net", "filter_remove", "198.18.2.9,198.18.2.11/icmp")
    error = alice.refused(
        control.CHANGE_ITEM,
        item="lab-net",
        change="filter_remove",
        value="198.18.2.0/24/udp/53,123",
    )
    assert isinstance(error, UsageError)
    assert error.message == (
        "filter 198.18.2.0/24/udp/53,123 is the last filter of item 'lab-net': an item has at"
        " least one"
    )
    assert error.hint == "add another filter first, or delete the item"
    # the database holds what was answered
    stored = world.core.catalog.get("lab-net")
    assert stored is not None and [r.describe() for r in stored.filters] == [
        "198.18.2.0/24/udp/53,123"
    ]
    rows = [(e.user, e.detail["change"], e.detail["value"]) for e in world.audit("item_changed")]
    assert rows == [
        ("alice", "filter_add", "198.18.2.9,198.18.2.11/icmp"),
        ("alice", "filter_remove", "198.18.2.10/tcp/22"),
        ("alice", "filter_remove", "198.18.2.9,198.18.2.11/icmp"),
    ]


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("fd00::/64", "'fd00::/64' is IPv6: filters are IPv4 only"),
        ("10.0.0.1,10.0.0.5-10.0.0.9", "a range stands alone"),
        ("10.0.0.0/24/icmp/7", "icmp has no ports"),
        ("10.0.0.0/24/bogus", "'bogus' is not an IP protocol"),
        ("", "expected ADDRESSES[/PROTOCOL[/PORTS]]"),
    ],
)
def test_a_bad_filter_is_refused_with_what_is_expected(
    world: World, value: str, detail: str
) -> None:
    alice = world.connect("alice")
    alice.ask(control.CREATE_ITEM, item=NET)
    error = alice.refused(control.CHANGE_ITEM, item="lab-net", change="filter_add", value=value)
    assert isinstance(error, UsageError) and detail in error.message
    assert error.hint is not None and "IP[,IP|CIDR][/PROTOCOL[/PORTS]]" in error.hint
    assert world.audit("item_changed") == []


def test_an_item_has_at_most_fifty_filters(world: World) -> None:
    alice = world.connect("alice")
    alice.ask(
        control.CREATE_ITEM,
        item={**NET, "filters": [f"10.0.{n}.0/24" for n in range(50)]},
    )
    error = alice.refused(
        control.CHANGE_ITEM, item="lab-net", change="filter_add", value="10.1.0.1"
    )
    assert isinstance(error, UsageError)
    assert error.message == "item 'lab-net' has 50 filters, the most an item may have"


def test_filter_changes_follow_the_tunnel_changes_rules(new_world: Callable[..., World]) -> None:
    """Only network items; read-only config items; the manage right on the jump group."""
    config = CONFIG + "  - {name: fixed-net, type: network, filters: [10.9.0.0/16]}\n"
    world = new_world(config=config)
    alice, dave = world.connect("alice"), world.connect("dave")
    error = alice.refused(control.CHANGE_ITEM, item="web", change="filter_add", value="10.0.0.1")
    assert isinstance(error, UsageError) and "read-only" in error.message
    alice.ask(
        control.CREATE_ITEM,
        item={"name": "labweb", "type": "tcp", "host": "10.1.9.9", "jump_group": "lab",
              "tunnels": [{"remote_port": 80}]},
    )  # fmt: skip
    error = alice.refused(control.CHANGE_ITEM, item="labweb", change="filter_add", value="10.0.0.1")
    assert isinstance(error, UsageError)
    assert error.message == "item 'labweb' is a tcp item; only network items have filters"
    alice.ask(control.CREATE_ITEM, item=NET)
    error = alice.refused(control.CHANGE_ITEM, item="lab-net", change="tunnel_add", value="1:2")
    assert isinstance(error, UsageError) and "only tcp items have tunnels" in error.message
    error = alice.refused(
        control.CHANGE_ITEM, item="fixed-net", change="filter_add", value="10.0.0.1"
    )
    assert isinstance(error, UsageError) and "read-only" in error.message
    dave.ask(control.CREATE_ITEM, item={**NET, "name": "prod-net", "jump_group": "prod"})
    denied = alice.refused(
        control.CHANGE_ITEM, item="prod-net", change="filter_add", value="10.0.0.1"
    )
    assert isinstance(denied, AccessDenied) and denied.rule == "groups.jump_groups.manage"
    denied = alice.refused(
        control.CHANGE_ITEM, item="prod-net", change="filter_remove", value="198.18.2.10/tcp/22"
    )
    assert isinstance(denied, AccessDenied) and denied.rule == "groups.jump_groups.manage"
    rows = [(e.event, e.rule, e.detail.get("action")) for e in world.audit("item_denied")]
    assert rows == [("item_denied", "groups.jump_groups.manage", "change_item")] * 2
    assert world.audit("item_changed") == []


def test_tunnel_changes_compare_the_protocol(world: World) -> None:
    alice = world.connect("alice")
    alice.ask(
        control.CREATE_ITEM,
        item={"name": "dns", "type": "tcp", "host": "10.1.9.53", "jump_group": "lab",
              "tunnels": [{"local_port": 5353, "remote_port": 53, "protocol": "udp"}]},
    )  # fmt: skip
    # the TCP pair on the same ports is another tunnel, not a duplicate
    both = _change(alice, "dns", "tunnel_add", "5353:53")
    assert [t["protocol"] for t in both["tunnels"]] == ["udp", "tcp"]
    error = alice.refused(control.CHANGE_ITEM, item="dns", change="tunnel_add", value="5353:53/udp")
    assert isinstance(error, UsageError) and "already has tunnel 5353:53/udp" in error.message
    error = alice.refused(
        control.CHANGE_ITEM, item="dns", change="tunnel_add", value="5353:54/tcp-udp"
    )
    assert isinstance(error, ConfigError)
    assert "tunnels[2]: two tunnels use the same local port (5353/tcp)" in error.message
    error = alice.refused(
        control.CHANGE_ITEM, item="dns", change="tunnel_remove", value="5353:53/tcp-udp"
    )
    assert isinstance(error, UsageError)
    assert error.message == (
        "item 'dns' has no tunnel 5353:53/tcp-udp (its tunnels: 5353:53/udp, 5353:53)"
    )
    kept = _change(alice, "dns", "tunnel_remove", "5353:53/udp")
    assert kept["tunnels"] == [{"local_port": 5353, "remote_port": 53, "protocol": "tcp"}]
    shown = alice.ask(control.SHOW_ITEM, item="dns")["item"]
    assert shown["tunnels"] == kept["tunnels"]


# -- the CLI against the in-process Jumpoint --------------------------------------------


@pytest.fixture
def jump(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """Run C{jump ARGS...} as alice against the world's Jumpoint: (status, stdout, stderr)."""
    alice = world.connect("alice")

    def call(profile: str | None, kind: str, **fields: Any) -> dict[str, Any]:
        return alice.ask(kind, **fields)

    monkeypatch.setattr(item_commands, "call", call)
    monkeypatch.setattr(jump_cli, "call", call)

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exited:
            jump_cli.main(list(args))
        out, err = capsys.readouterr()
        code = exited.value.code
        return (code if isinstance(code, int) else ExitCode.FAILURE), out, err

    return run


def test_jump_item_create_network_and_filter_add_remove(
    world: World, jump: Callable[..., tuple[int, str, str]]
) -> None:
    status, out, err = jump(
        "item", "create", "network", "lab-net", "--filter", "198.18.2.0/24/udp/53,123",
        "--filter", "198.18.2.10/TCP/443,22", "--jump-group", "lab",
    )  # fmt: skip
    assert status == ExitCode.OK, err
    assert "created network item 'lab-net'" in out
    assert "filter:          198.18.2.0/24/udp/53,123" in out
    assert "filter:          198.18.2.10/tcp/22,443" in out

    status, out, err = jump("item", "filter", "add", "lab-net", "198.18.2.0/24/icmp", "--json")
    assert status == ExitCode.OK, err
    assert json.loads(out)["filters"] == [
        "198.18.2.0/24/udp/53,123",
        "198.18.2.10/tcp/22,443",
        "198.18.2.0/24/icmp",
    ]
    status, out, err = jump("item", "filter", "remove", "lab-net", "198.18.2.10/tcp/443,22")
    assert status == ExitCode.OK, err
    assert out.startswith("removed filter 198.18.2.10/tcp/443,22 from 'lab-net'\n")

    status, out, _ = jump("items", "--json", "--jump-group", "lab")
    (listed,) = json.loads(out)
    assert listed["filters"] == ["198.18.2.0/24/udp/53,123", "198.18.2.0/24/icmp"]
    status, out, _ = jump("items", "--jump-group", "lab")
    assert "198.18.2.0/24/udp/53,123, 198.18.2.0/24/icmp" in out

    # errors: a stable code and exit status, JSON on stdout under --json
    status, out, err = jump("item", "filter", "add", "lab-net", "198.18.2.0/24/icmp", "--json")
    assert status == ExitCode.USAGE
    event = json.loads(out)
    assert event["event"] == "error" and event["code"] == "usage"
    assert event["message"] == "item 'lab-net' already has filter 198.18.2.0/24/icmp"
    status, _, err = jump("item", "filter", "remove", "lab-net", "198.18.2.0/24/icmp")
    assert status == ExitCode.OK
    status, _, err = jump("item", "filter", "remove", "lab-net", "198.18.2.0/24/udp/53,123")
    assert status == ExitCode.USAGE
    assert "is the last filter of item 'lab-net': an item has at least one" in err
    assert "Traceback" not in err
    status, _, err = jump(
        "item", "create", "network", "bad", "--filter", "fd00::/8", "--jump-group", "lab"
    )
    assert status == ExitCode.CONFIG
    assert "filters[0]: invalid filter rule 'fd00::/8': 'fd00::/8' is IPv6" in err
    status, _, err = jump("item", "filter", "add", "web", "10.0.0.1")
    assert status == ExitCode.USAGE and "read-only" in err
    changes = [e.detail["change"] for e in world.audit("item_changed")]
    assert changes == ["filter_add", "filter_remove", "filter_remove"]


def test_jump_item_create_tcp_with_udp_pairs_and_tunnel_json(
    jump: Callable[..., tuple[int, str, str]],
) -> None:
    status, out, err = jump(
        "item", "create", "tcp", "dns", "--host", "10.1.9.53", "--tunnel", "5353:53/udp",
        "--tunnel", "8125:8125/tcp-udp", "--tunnel", "auto:22", "--jump-group", "lab", "--json",
    )  # fmt: skip
    assert status == ExitCode.OK, err
    assert [(t["remote_port"], t["protocol"]) for t in json.loads(out)["tunnels"]] == [
        (53, "udp"),
        (8125, "tcp-udp"),
        (22, "tcp"),
    ]
    status, out, _ = jump("items", "--jump-group", "lab")
    assert "5353:53/udp, 8125:8125/tcp-udp, auto:22" in out
    status, out, err = jump("item", "tunnel", "add", "dns", "5353:53", "--json")
    assert status == ExitCode.OK, err
    assert json.loads(out)["tunnels"][-1] == {
        "local_port": 5353,
        "remote_port": 53,
        "protocol": "tcp",
    }
    status, out, err = jump("item", "tunnel", "remove", "dns", "5353:53/udp")
    assert status == ExitCode.OK, err
    assert "tunnels:         8125:8125/tcp-udp, auto:22, 5353:53" in out
    status, _, err = jump("item", "create", "tcp", "x", "--host", "h", "--tunnel", "1:2/udp/a/b")
    assert status == ExitCode.USAGE
    assert "--tunnel: '1:2/udp/a/b': expected LOCAL:REMOTE[/PROTOCOL][/SCHEME]" in err


def test_a_stored_filter_older_than_today_s_rules_can_be_removed(world: World) -> None:
    """A row stored before IPv4-only still lists, and its IPv6 filter can be removed."""
    spec = {"name": "old-net", "type": "network", "jump_group": "lab"}
    row = item_from_data({**spec, "filters": ["fd00::/64", "10.0.0.0/24"]}, "console", stored=True)
    world.core.catalog.store.create(row, "alice", 0.0)
    alice = world.connect("alice")
    shown = alice.ask(control.SHOW_ITEM, item="old-net")["item"]
    assert shown["filters"] == ["fd00::/64", "10.0.0.0/24"]
    error = alice.refused(control.CHANGE_ITEM, item="old-net", change="filter_add", value="fd00::1")
    assert isinstance(error, UsageError) and "IPv4 only" in error.message
    kept = _change(alice, "old-net", "filter_remove", "fd00::/64")
    assert kept["filters"] == ["10.0.0.0/24"]


def test_items_in_the_state_database_are_read_back(world: World) -> None:
    """What the Jumpoint stored is canonical text: the rows read back to the same items."""
    alice = world.connect("alice")
    alice.ask(control.CREATE_ITEM, item=NET)
    connection: sqlite3.Connection = world.core.database.connection
    (spec,) = connection.execute("SELECT spec FROM items WHERE name = 'lab-net'").fetchone()
    assert json.loads(spec)["filters"] == ["198.18.2.0/24/udp/53,123", "198.18.2.10/tcp/22"]
    item = world.core.catalog.get("lab-net")
    assert isinstance(item, Item) and item.created_by == "alice"
