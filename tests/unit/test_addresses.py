"""Tests of the policy's address and port rules (shared/addresses.py)."""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.addresses import (
    IP_PROTOCOLS,
    MAX_FILTER_RULES,
    PORT_PROTOCOLS,
    AddressRange,
    AllowDecision,
    AllowedTarget,
    AllowList,
    FilterAddress,
    FilterRule,
    PortSet,
    parse_filter_addresses,
    parse_filter_ports,
    parse_filter_rules,
    parse_port_list,
    parse_protocol,
    protocol_number,
)

# Port sets


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([22], ((22, 22),)),
        (["22"], ((22, 22),)),
        ([" 22 "], ((22, 22),)),
        (["20000-30000"], ((20000, 30000),)),
        ([" 20000 - 30000 "], ((20000, 30000),)),
        (["1-65535"], ((1, 65535),)),
        ([80, "22", 22], ((22, 22), (80, 80))),
        (["100-200", "150-300", "301"], ((100, 301),)),
        (["5-5"], ((5, 5),)),
        ([], ()),
    ],
)
def test_port_set_parse_accepts(
    values: list[int | str], expected: tuple[tuple[int, int], ...]
) -> None:
    assert PortSet.parse(values).ranges == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "port '0' is out of range: expected 1 to 65535"),
        ("0", "port '0' is out of range: expected 1 to 65535"),
        (70000, "port '70000' is out of range: expected 1 to 65535"),
        ("1-70000", "port '70000' is out of range: expected 1 to 65535"),
        ("123456789012345678901234567890", "port '123456789012345678901234567890' is out of range"),
        (-1, "'-1' is not a port: expected a port from 1 to 65535 or a range such as 8000-8100"),
        (
            "ssh",
            "'ssh' is not a port: expected a port from 1 to 65535 or a range such as 8000-8100",
        ),
        ("", "'' is not a port"),
        ("22-", "'22-' is not a port"),
        ("-22", "'-22' is not a port"),
        ("1-2-3", "'1-2-3' is not a port"),
        ("0x16", "'0x16' is not a port"),
        ("\uff12\uff12", "'\uff12\uff12' is not a port"),
        ("22.0", "'22.0' is not a port"),
        ("300-200", "port range '300-200' is reversed: write the lower port first"),
        (True, "'True' is not a port"),
    ],
)
def test_port_set_parse_rejects(value: int | str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        PortSet.parse([value])
    assert message in str(caught.value)


def test_port_set_parse_rejects_a_single_string() -> None:
    with pytest.raises(ValueError, match="expected a list of ports, not the single string '22'"):
        PortSet.parse("22")


def test_port_set_membership() -> None:
    ports = PortSet.parse([22, "80", "20000-30000"])
    assert 22 in ports
    assert 80 in ports
    assert 20000 in ports
    assert 25000 in ports
    assert 30000 in ports
    assert 21 not in ports
    assert 23 not in ports
    assert 19999 not in ports
    assert 30001 not in ports
    assert "22" not in ports
    assert None not in ports


def test_port_set_describe_sorts_and_merges() -> None:
    ports = PortSet.parse(["20000-30000", 80, "22", "25000-30005", "81", 79])
    assert ports.describe() == "22, 79-81, 20000-30005"
    assert ports.describe(",") == "22,79-81,20000-30005"
    assert PortSet.parse(["22"]).describe() == "22"
    assert PortSet().describe() == "none"


def test_port_set_equality_is_set_equality() -> None:
    assert PortSet.parse(["22-23", 24]) == PortSet.parse(["22-24"])
    assert PortSet(((5, 9), (1, 4))) == PortSet(((1, 9),))
    assert PortSet.parse([22]) != PortSet.parse([23])


def test_port_set_constructor_rejects_invalid_ranges() -> None:
    with pytest.raises(ValueError, match="invalid port range 0-5"):
        PortSet(((0, 5),))
    with pytest.raises(ValueError, match="invalid port range 9-5"):
        PortSet(((9, 5),))


def test_port_set_union() -> None:
    union = PortSet.parse([22, "100-200"]).union(PortSet.parse(["150-250", 23]))
    assert union == PortSet.parse(["22-23", "100-250"])
    assert PortSet().union(PortSet.parse([5])) == PortSet.parse([5])


def test_port_set_truth() -> None:
    assert not PortSet.parse([])
    assert not PortSet()
    assert PortSet.parse([1])
    assert PortSet.all() == PortSet.parse(["1-65535"])


def test_iter_ports_in_order_is_lazy_and_ascending() -> None:
    ports = PortSet.parse(["8000-8002", 22, "65534-65535"])
    assert list(ports.iter_ports_in_order()) == [22, 8000, 8001, 8002, 65534, 65535]
    everything = PortSet.all().iter_ports_in_order()
    assert list(itertools.islice(everything, 3)) == [1, 2, 3]
    assert next(everything) == 4
    assert list(PortSet().iter_ports_in_order()) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("22", "22"),
        ("22,80,8000-8100", "22, 80, 8000-8100"),
        (" 22 , 80 ,8000 - 8100 ", "22, 80, 8000-8100"),
        ("80,22,23", "22-23, 80"),
    ],
)
def test_parse_port_list_accepts(text: str, expected: str) -> None:
    assert parse_port_list(text).describe() == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "invalid port list '': expected ports such as 22,80,8000-8100"),
        ("  ", "invalid port list '  ': expected ports such as 22,80,8000-8100"),
        ("22,,80", "invalid port list '22,,80': an item between commas is empty"),
        ("22,", "invalid port list '22,': an item between commas is empty"),
        (
            "22,ssh",
            "invalid port list '22,ssh': 'ssh' is not a port: expected a port from 1 to 65535",
        ),
        ("22,0", "invalid port list '22,0': port '0' is out of range: expected 1 to 65535"),
        ("22 80", "invalid port list '22 80': '22 80' is not a port"),
    ],
)
def test_parse_port_list_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_port_list(text)
    assert str(caught.value).startswith(message)


port_numbers = st.integers(min_value=1, max_value=65535)


def _ordered(first: int, second: int) -> tuple[int, int]:
    return (min(first, second), max(first, second))


port_ranges = st.builds(_ordered, port_numbers, port_numbers)


@given(ranges=st.lists(port_ranges, min_size=1, max_size=8), probes=st.lists(port_numbers))
def test_describe_parses_back_to_the_same_ports(
    ranges: list[tuple[int, int]], probes: list[int]
) -> None:
    written = [str(first) if first == last else f"{first}-{last}" for first, last in ranges]
    ports = PortSet.parse(written)
    reparsed = parse_port_list(ports.describe())
    assert reparsed == ports
    edges = [
        edge + delta for first, last in ranges for edge in (first, last) for delta in (-1, 0, 1)
    ]
    for port in probes + edges:
        expected = any(first <= port <= last for first, last in ranges)
        assert (port in reparsed) == expected
        assert (port in ports) == expected


@given(ranges=st.lists(st.tuples(port_numbers, st.integers(0, 50)), max_size=6))
def test_iter_ports_in_order_yields_exactly_the_members(ranges: list[tuple[int, int]]) -> None:
    ports = PortSet(tuple((start, min(start + length, 65535)) for start, length in ranges))
    listed = list(ports.iter_ports_in_order())
    assert listed == sorted(set(listed))
    expected = {p for start, length in ranges for p in range(start, min(start + length, 65535) + 1)}
    assert set(listed) == expected


# The allow-list


@pytest.mark.parametrize(
    ("text", "network", "hostname", "ports", "canonical"),
    [
        ("10.0.0.0/8:5432", "10.0.0.0/8", None, "5432", "10.0.0.0/8:5432"),
        ("10.1.2.3:22", "10.1.2.3/32", None, "22", "10.1.2.3:22"),
        ("db.corp.example:5432", None, "db.corp.example", "5432", "db.corp.example:5432"),
        ("DB.Corp.Example.:5432", None, "db.corp.example", "5432", "db.corp.example:5432"),
        (":22", None, None, "22", ":22"),
        ("192.168.0.0/16", "192.168.0.0/16", None, None, "192.168.0.0/16"),
        ("192.168.1.7", "192.168.1.7/32", None, None, "192.168.1.7"),
        ("db.corp.example", None, "db.corp.example", None, "db.corp.example"),
        ("localhost", None, "localhost", None, "localhost"),
        ("my_host-1.corp", None, "my_host-1.corp", None, "my_host-1.corp"),
        ("[fd00::/8]:443", "fd00::/8", None, "443", "[fd00::/8]:443"),
        ("[::1]:22", "::1/128", None, "22", "[::1]:22"),
        ("[FD00:0::1]", "fd00::1/128", None, None, "fd00::1"),
        ("fd00::/8", "fd00::/8", None, None, "fd00::/8"),
        ("::1", "::1/128", None, None, "::1"),
        ("10.0.0.0/8:8000-8100", "10.0.0.0/8", None, "8000-8100", "10.0.0.0/8:8000-8100"),
        (":1-65535", None, None, "1-65535", ":1-65535"),
        ("  10.0.0.0/8 : 22 ", "10.0.0.0/8", None, "22", "10.0.0.0/8:22"),
        ("10.0.0.0/255.0.0.0:22", "10.0.0.0/8", None, "22", "10.0.0.0/8:22"),
        ("[::ffff:10.0.0.1]:22", "10.0.0.1/32", None, "22", "10.0.0.1:22"),
        ("[::ffff:10.0.0.0/104]:22", "10.0.0.0/8", None, "22", "10.0.0.0/8:22"),
        ("::ffff:0:0/96", "0.0.0.0/0", None, None, "0.0.0.0/0"),
    ],
)
def test_allowed_target_parse_accepts(
    text: str, network: str | None, hostname: str | None, ports: str | None, canonical: str
) -> None:
    target = AllowedTarget.parse(text)
    assert target.network == (None if network is None else ip_network(network))
    assert target.hostname == hostname
    assert target.ports == (None if ports is None else parse_port_list(ports))
    assert target.describe() == canonical
    assert AllowedTarget.parse(canonical) == target


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("", "expected ADDRESS, ADDRESS:PORT or :PORT"),
        ("   ", "expected ADDRESS, ADDRESS:PORT or :PORT"),
        ("host:", "expected a port or port range after ':'"),
        (":", "expected a port or port range after ':'"),
        ("[::1]:", "expected a port or port range after ':'"),
        ("10.0.0.1:0", "port '0' is out of range: expected 1 to 65535"),
        ("10.0.0.1:70000", "port '70000' is out of range: expected 1 to 65535"),
        ("db.example:ssh", "'ssh' is not a port: expected a port from 1 to 65535"),
        ("db.example:22,80", "'22,80' is not a port"),
        ("db.example:300-200", "port range '300-200' is reversed"),
        ("10.0.0.0/33:22", "'10.0.0.0/33' is not a CIDR: expected an address and a prefix length"),
        ("10.0.0.0/x", "'10.0.0.0/x' is not a CIDR"),
        ("db.example/24", "'db.example/24' is not a CIDR"),
        ("10.1.2.3/8", "'10.1.2.3/8' has host bits set: did you mean '10.0.0.0/8'?"),
        ("10.0.0.300", "'10.0.0.300' is not a valid IP address"),
        ("10.0.0", "'10.0.0' is not a valid IP address"),
        ("010.0.0.1", "'010.0.0.1' is not a valid IP address"),
        ("a b", "'a b' is not an IP address, CIDR or host name"),
        ("-bad.example", "'-bad.example' is not an IP address, CIDR or host name"),
        ("bad-.example", "'bad-.example' is not an IP address, CIDR or host name"),
        ("a..example", "'a..example' is not an IP address, CIDR or host name"),
        ("bücher.example", "'bücher.example' is not an IP address, CIDR or host name"),
        ("a" * 64 + ".example", "is not an IP address, CIDR or host name"),
        ("fd00::zz", "'fd00::zz' is not an IP address"),
        ("fd00::1:22:", "'fd00::1:22:' is not an IP address"),
        ("[10.0.0.1]:22", "brackets are only for IPv6 addresses, not '10.0.0.1'"),
        ("[::1", "missing ']' after the IPv6 address"),
        ("[::1]22", "unexpected '22' after ']': expected :PORT or nothing"),
        ("fe80::1%eth0", "'fe80::1%eth0' has a zone id: zone ids (%...) are not supported"),
    ],
)
def test_allowed_target_parse_rejects(text: str, detail: str) -> None:
    with pytest.raises(ValueError) as caught:
        AllowedTarget.parse(text)
    assert str(caught.value).startswith(f"invalid allowed target {text!r}: ")
    assert detail in str(caught.value)


def test_allow_list_parse_and_hostnames() -> None:
    allow = AllowList.parse(["DB.corp.example:5432", "10.0.0.0/8", "cache.corp.example", ":22"])
    assert allow.hostnames() == {"db.corp.example", "cache.corp.example"}
    assert allow.describe() == "db.corp.example:5432, 10.0.0.0/8, cache.corp.example, :22"
    assert AllowList.parse(["10.0.0.0/8"]).hostnames() == set()


def test_allow_list_parse_error_names_the_bad_entry() -> None:
    with pytest.raises(ValueError, match=r"invalid allowed target '10\.0\.0\.0/8:0': "):
        AllowList.parse(["10.1.2.3:22", "10.0.0.0/8:0"])


def test_allow_list_parse_rejects_a_single_string() -> None:
    with pytest.raises(
        ValueError, match="expected a list of allowed targets, not the single string"
    ):
        AllowList.parse("10.0.0.0/8")


def test_cidr_and_ip_entries() -> None:
    allow = AllowList.parse(["10.0.0.0/8:5432", "192.168.1.7:22", "172.16.0.0/12"])
    assert allow.check(5432, ["10.200.3.4"], {}).allowed
    assert allow.check(22, ["192.168.1.7"], {}).allowed
    assert allow.check(9999, ["172.20.0.1"], {}).allowed
    assert allow.check(22, ["10.200.3.4"], {}) == AllowDecision(
        False, "10.200.3.4", "10.200.3.4:22 is not in allowed_targets"
    )
    assert allow.check(22, ["192.168.1.8"], {}) == AllowDecision(
        False, "192.168.1.8", "192.168.1.8:22 is not in allowed_targets"
    )


def test_port_range_entries() -> None:
    allow = AllowList.parse(["10.0.0.0/8:8000-8100"])
    assert allow.check(8000, ["10.0.0.1"], {}).allowed
    assert allow.check(8100, ["10.0.0.1"], {}).allowed
    assert not allow.check(8101, ["10.0.0.1"], {}).allowed
    assert not allow.check(7999, ["10.0.0.1"], {}).allowed


def test_any_address_entry_allows_that_port_only() -> None:
    allow = AllowList.parse([":22"])
    assert allow.check(22, ["10.9.9.9", "fd00::5", "8.8.8.8"], {}).allowed
    decision = allow.check(23, ["10.9.9.9"], {})
    assert not decision.allowed
    assert decision.reason == "10.9.9.9:23 is not in allowed_targets"


def test_host_name_target_all_addresses_inside_is_allowed() -> None:
    allow = AllowList.parse(["10.0.0.0/8:5432"])
    assert allow.check(5432, ["10.0.0.1", "10.0.0.2", "10.3.3.3"], {}) == AllowDecision(True)


def test_host_name_target_one_address_outside_is_denied_and_named() -> None:
    allow = AllowList.parse(["10.0.0.0/8:5432"])
    decision = allow.check(5432, ["10.0.0.1", "10.9.9.9", "192.168.0.1", "10.0.0.2"], {})
    assert decision == AllowDecision(
        False, "192.168.0.1", "192.168.0.1:5432 is not in allowed_targets"
    )


def test_mixed_ipv4_and_ipv6_addresses() -> None:
    allow = AllowList.parse(["10.0.0.0/8:443", "[fd00::/8]:443"])
    assert allow.check(443, ["10.1.1.1", "fd00::1", "fdff::2"], {}).allowed
    decision = allow.check(443, ["10.1.1.1", "fe80::1", "fd00::1"], {})
    assert decision == AllowDecision(False, "fe80::1", "[fe80::1]:443 is not in allowed_targets")
    assert not AllowList.parse(["10.0.0.0/8"]).check(443, ["fd00::1"], {}).allowed
    assert not AllowList.parse(["fd00::/8"]).check(443, ["10.0.0.1"], {}).allowed


def test_ipv4_mapped_addresses_are_treated_as_ipv4() -> None:
    allow = AllowList.parse(["10.0.0.0/8:22"])
    assert allow.check(22, ["::ffff:10.0.0.1"], {}).allowed
    decision = allow.check(22, ["::ffff:10.9.9.9", "::ffff:192.168.0.1"], {})
    assert decision.address == "::ffff:192.168.0.1"
    assert decision.reason == "[::ffff:192.168.0.1]:22 is not in allowed_targets"
    # the IPv6 CIDR of all mapped addresses means every IPv4 address
    assert AllowList.parse(["[::ffff:0:0/96]:22"]).check(22, ["192.168.0.1"], {}).allowed
    mapped_entry = AllowList.parse(["[::ffff:10.0.0.0/104]:22"])
    assert mapped_entry.check(22, ["10.2.3.4"], {}).allowed
    assert mapped_entry.check(22, ["::ffff:10.2.3.4"], {}).allowed
    assert not mapped_entry.check(22, ["11.0.0.1"], {}).allowed


def test_host_name_entries_allow_what_the_name_resolved_to() -> None:
    allow = AllowList.parse(["db.corp.example:5432", "Cache.Corp.Example"])
    resolved = {
        "db.corp.example": ["10.0.0.5", "fd00::5"],
        "cache.corp.example": ["10.0.0.9"],
    }
    assert allow.check(5432, ["10.0.0.5", "fd00::5"], resolved).allowed
    assert allow.check(5432, ["fd00:0:0::5"], resolved).allowed
    assert allow.check(6379, ["10.0.0.9"], resolved).allowed
    assert not allow.check(6379, ["10.0.0.5"], resolved).allowed
    decision = allow.check(5432, ["10.0.0.5", "10.0.0.6"], resolved)
    assert decision == AllowDecision(False, "10.0.0.6", "10.0.0.6:5432 is not in allowed_targets")


def test_host_name_entry_that_resolved_to_nothing_allows_nothing() -> None:
    allow = AllowList.parse(["db.corp.example"])
    assert not allow.check(22, ["10.0.0.5"], {}).allowed
    assert not allow.check(22, ["10.0.0.5"], {"db.corp.example": []}).allowed


def test_host_name_entry_with_mapped_and_zoned_resolver_answers() -> None:
    allow = AllowList.parse(["db.corp.example"])
    resolved = {"db.corp.example": ["::ffff:10.0.0.5", "fe80::1%eth0"]}
    assert allow.check(22, ["10.0.0.5", "fe80::1"], resolved).allowed
    assert allow.check(22, ["fe80::1%eth1"], resolved).allowed


def test_no_addresses_is_denied() -> None:
    decision = AllowList.parse([":22"]).check(22, [], {})
    assert decision == AllowDecision(False, None, "the target has no addresses to check")


def test_empty_allow_list_denies_everything() -> None:
    allow = AllowList.parse([])
    assert allow.entries == ()
    assert allow.hostnames() == set()
    assert not allow.check(22, ["10.0.0.1"], {}).allowed


def test_check_rejects_something_that_is_not_an_address() -> None:
    with pytest.raises(ValueError, match="'db.example' is not an IP address"):
        AllowList.parse([":22"]).check(22, ["db.example"], {})


# Filter rules


@pytest.mark.parametrize(
    ("text", "canonical", "protocol", "ports"),
    [
        ("10.0.0.5,10.0.0.9,192.168.0.0/24", "10.0.0.5,10.0.0.9,192.168.0.0/24", "any", None),
        ("10.0.0.9,10.0.0.5,10.0.0.9", "10.0.0.5,10.0.0.9", "any", None),
        ("10.0.0.7-10.0.0.9", "10.0.0.7-10.0.0.9", "any", None),
        ("10.0.0.0/24/tcp", "10.0.0.0/24/tcp", "tcp", None),
        (
            "10.0.0.0/24/tcp/22,80,8000-8100",
            "10.0.0.0/24/tcp/22,80,8000-8100",
            "tcp",
            "22,80,8000-8100",
        ),
        ("10.0.0.0/24/udp/53", "10.0.0.0/24/udp/53", "udp", "53"),
        ("10.0.0.0/24/icmp", "10.0.0.0/24/icmp", "icmp", None),
        ("10.0.0.0/24/any", "10.0.0.0/24", "any", None),
        ("10.0.0.5/tcp/22", "10.0.0.5/tcp/22", "tcp", "22"),
        ("10.0.0.0/24,10.1.0.0/16/tcp/22", "10.0.0.0/24,10.1.0.0/16/tcp/22", "tcp", "22"),
        ("10.0.0.0/24/TCP/80,22", "10.0.0.0/24/tcp/22,80", "tcp", "22,80"),
        ("10.0.0.0/24/tcp/1-65535", "10.0.0.0/24/tcp", "tcp", None),
        (
            " 10.0.0.7 - 10.0.0.9 /tcp/ 22 ",
            "10.0.0.7-10.0.0.9/tcp/22",
            "tcp",
            "22",
        ),
        ("10.0.0.5/32", "10.0.0.5", "any", None),
        ("10.0.0.7-10.0.0.7", "10.0.0.7", "any", None),
        ("::ffff:10.0.0.5", "10.0.0.5", "any", None),
        ("::ffff:10.0.0.0/120", "10.0.0.0/24", "any", None),
        # IANA protocols, by keyword, alias or number
        ("10.0.0.0/24/sctp/3868", "10.0.0.0/24/sctp/3868", "sctp", "3868"),
        ("10.0.0.0/24/47", "10.0.0.0/24/gre", "gre", None),
        ("10.0.0.0/24/6/22", "10.0.0.0/24/tcp/22", "tcp", "22"),
        ("10.0.0.0/24/OSPF", "10.0.0.0/24/ospfigp", "ospfigp", None),
        ("10.0.0.1-10.0.0.9/143", "10.0.0.1-10.0.0.9/143", "143", None),
        ("10.0.0.5/32/143", "10.0.0.5/32/143", "143", None),
        ("10.0.0.5/esp", "10.0.0.5/esp", "esp", None),
        ("10.0.0.5/udplite/5000-5010", "10.0.0.5/udplite/5000-5010", "udplite", "5000-5010"),
    ],
)
def test_filter_rule_parse_accepts(
    text: str, canonical: str, protocol: str, ports: str | None
) -> None:
    rule = FilterRule.parse(text)
    assert rule.describe() == canonical
    assert rule.protocol == protocol
    assert rule.ports == (None if ports is None else parse_port_list(ports))
    assert FilterRule.parse(canonical) == rule


def test_filter_rule_parse_keeps_each_address_form_sorted() -> None:
    rule = FilterRule.parse("192.168.0.0/24,10.0.0.5")
    assert rule.addresses == (IPv4Address("10.0.0.5"), IPv4Network("192.168.0.0/24"))
    assert FilterRule.parse("10.0.0.7-10.0.0.9").addresses == (
        AddressRange(IPv4Address("10.0.0.7"), IPv4Address("10.0.0.9")),
    )
    assert rule.ip == "10.0.0.5,192.168.0.0/24"


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("", "expected ADDRESSES[/PROTOCOL[/PORTS]], for example 10.0.0.0/24/tcp/22,80"),
        ("10.0.0.0/24/nope", "'nope' is not an IP protocol: expected an IANA keyword (tcp, udp,"),
        ("10.0.0.0/24/256", "protocol number 256 is out of range: expected 0 to 255"),
        ("10.0.0.0/24/", "expected a protocol after '/': expected an IANA keyword"),
        ("10.0.0.0/24/icmp/22", "icmp has no ports: ports are only allowed with tcp, udp, sctp,"),
        ("10.0.0.0/24/gre/22", "gre has no ports"),
        ("10.0.0.0/24/any/22", "ports need a protocol with ports: tcp, udp, sctp, dccp or udplite"),
        ("10.0.0.0/24/tcp/", "expected ports such as 22,80,8000-8100"),
        ("10.0.0.0/24/tcp/0", "port '0' is out of range: expected 1 to 65535"),
        ("10.0.0.0/24/tcp/70000", "port '70000' is out of range"),
        ("10.0.0.0/24/tcp/ssh", "'ssh' is not a port"),
        ("10.0.0.0/24/tcp/22,,80", "an item between commas is empty"),
        ("10.0.0.0/24/tcp/22/x", "too many '/' parts"),
        (
            "10.0.0.9-10.0.0.7",
            "address range '10.0.0.9-10.0.0.7' is reversed: write the lower address first",
        ),
        ("10.0.0.1-fd00::1", "address range '10.0.0.1-fd00::1' mixes IPv4 and IPv6"),
        ("10.0.0.1-", "'' is not an IP address"),
        ("10.0.0.5,,10.0.0.6", "an address between commas is empty: expected an IP, RANGE or CIDR"),
        ("10.0.0.5,", "an address between commas is empty"),
        ("10.0.0.256", "'10.0.0.256' is not an IP address"),
        ("db.example/tcp", "'db.example' is not an IP address"),
        ("10.0.0.0/33", "'10.0.0.0/33' is not a CIDR"),
        ("10.0.0.5/47", "a protocol number after a single address needs its /32"),
        ("10.0.0.5/24", "'10.0.0.5/24' has host bits set: did you mean '10.0.0.0/24'?"),
        ("fe80::1%eth0", "'fe80::1%eth0' has a zone id"),
        ("fd00::/64/udp/53", "'fd00::/64' is IPv6: filters are IPv4 only"),
        ("10.0.0.1,::1", "'::1' is IPv6: filters are IPv4 only"),
        (
            "10.0.0.5,10.0.0.7-10.0.0.9",
            "the range '10.0.0.7-10.0.0.9' is in a list: a range stands alone",
        ),
    ],
)
def test_filter_rule_parse_rejects(text: str, detail: str) -> None:
    with pytest.raises(ValueError) as caught:
        FilterRule.parse(text)
    assert str(caught.value).startswith(f"invalid filter rule {text!r}: ")
    assert detail in str(caught.value)


def test_legacy_rules_keep_ipv6_and_ranges_in_lists() -> None:
    """Rows stored before the IPv4-only and range-alone rules stay readable."""
    text = "10.0.0.5,10.0.0.7-10.0.0.9,fd00::/64/udp/53"
    rule = FilterRule.parse(text, legacy=True)
    assert rule.describe() == text
    assert FilterRule.parse(rule.describe(), legacy=True) == rule
    with pytest.raises(ValueError, match="IPv4 only"):
        FilterRule.parse(text)


@pytest.mark.parametrize(
    ("given", "canonical", "number"),
    [
        ("tcp", "tcp", 6),
        ("UDP", "udp", 17),
        (" icmp ", "icmp", 1),
        (47, "gre", 47),
        ("047", "gre", 47),
        ("ipencap", "ipv4", 4),
        ("icmpv6", "ipv6-icmp", 58),
        (0, "hopopt", 0),
        (255, "255", 255),
        ("143", "143", 143),
        ("any", "any", None),
    ],
)
def test_parse_protocol_gives_the_iana_keyword(
    given: str | int, canonical: str, number: int | None
) -> None:
    assert parse_protocol(given) == canonical
    assert protocol_number(canonical) == number


@pytest.mark.parametrize(
    ("given", "detail"),
    [
        ("", "'' is not an IP protocol"),
        ("tcp6", "'tcp6' is not an IP protocol"),
        (True, "True is not an IP protocol"),
        (-1, "'-1' is not an IP protocol"),
        (256, "protocol number 256 is out of range"),
        ("1000000000", "protocol number 1000000000 is out of range"),
        ("١٢", "'١٢' is not an IP protocol"),  # digits, but not ASCII
    ],
)
def test_parse_protocol_rejects(given: str | int, detail: str) -> None:
    with pytest.raises(ValueError, match=detail.replace("(", r"\(")):
        parse_protocol(given)


def test_the_protocol_table_is_iana_numbered_and_every_port_protocol_is_in_it() -> None:
    assert len(set(IP_PROTOCOLS.values())) == len(IP_PROTOCOLS)
    assert all(0 <= number <= 255 for number in IP_PROTOCOLS.values())
    assert {name: IP_PROTOCOLS[name] for name in PORT_PROTOCOLS} == {
        "tcp": 6,
        "udp": 17,
        "sctp": 132,
        "dccp": 33,
        "udplite": 136,
    }
    for name, number in IP_PROTOCOLS.items():
        assert parse_protocol(number) == name == parse_protocol(name.upper())


def test_filter_ports_take_a_port_a_list_or_a_range() -> None:
    assert parse_filter_ports(53) == PortSet.parse([53])
    assert parse_filter_ports("53,123") == PortSet.parse([53, 123])
    assert parse_filter_ports(["53", "8000-8100"]) == PortSet.parse([53, "8000-8100"])
    for bad, detail in ((True, "not a port"), ([], "expected ports"), ("", "expected ports")):
        with pytest.raises(ValueError, match=detail):
            parse_filter_ports(bad)


def test_filter_addresses_take_an_address_a_list_a_range_or_a_cidr() -> None:
    assert parse_filter_addresses("10.0.0.1") == (IPv4Address("10.0.0.1"),)
    assert len(parse_filter_addresses("10.0.0.1,10.0.0.2,10.1.0.0/16")) == 3
    assert parse_filter_addresses("10.0.0.1-10.0.0.4") == (
        AddressRange(IPv4Address("10.0.0.1"), IPv4Address("10.0.0.4")),
    )


def test_filter_rule_constructor_validates() -> None:
    address = (IPv4Address("10.0.0.1"),)
    with pytest.raises(ValueError, match="at least one address"):
        FilterRule(())
    with pytest.raises(ValueError, match="'bogus' is not an IP protocol"):
        FilterRule(address, "bogus")
    with pytest.raises(ValueError, match="icmp has no ports"):
        FilterRule(address, "icmp", PortSet.parse([22]))
    with pytest.raises(ValueError, match="must not be empty"):
        FilterRule(address, "tcp", PortSet())
    assert FilterRule(address, "tcp", PortSet.all()).ports is None
    assert FilterRule(address, "6") == FilterRule(address, "TCP")
    assert FilterRule(address, "gre").protocol_number == 47


def test_filter_rule_matching_addresses() -> None:
    rule = FilterRule.parse("10.0.0.5,10.0.0.7-10.0.0.9,192.168.0.0/24,fd00::/64", legacy=True)
    for address in ["10.0.0.5", "10.0.0.7", "10.0.0.8", "10.0.0.9", "192.168.0.200", "fd00::1"]:
        assert rule.matches(address, "tcp", 22), address
    for address in ["10.0.0.6", "10.0.0.10", "192.168.1.1", "fd00:0:0:1::1", "::1"]:
        assert not rule.matches(address, "tcp", 22), address
    assert rule.matches("::ffff:10.0.0.8", "udp", 53)
    assert rule.matches("::ffff:192.168.0.9", "icmp", None)


def test_filter_rule_matching_protocols_and_ports() -> None:
    any_rule = FilterRule.parse("10.0.0.0/24")
    assert any_rule.matches("10.0.0.1", "tcp", 1)
    assert any_rule.matches("10.0.0.1", "udp", 65535)
    assert any_rule.matches("10.0.0.1", "icmp", None)
    assert any_rule.matches("10.0.0.1", 47, None)

    tcp_rule = FilterRule.parse("10.0.0.0/24/tcp/22,8000-8100")
    assert tcp_rule.matches("10.0.0.1", "tcp", 22)
    assert tcp_rule.matches("10.0.0.1", "TCP", 8050)
    assert tcp_rule.matches("10.0.0.1", 6, 8050)
    assert not tcp_rule.matches("10.0.0.1", "tcp", 80)
    assert not tcp_rule.matches("10.0.0.1", "tcp", None)
    assert not tcp_rule.matches("10.0.0.1", "udp", 22)
    assert not tcp_rule.matches("10.0.0.1", "icmp", None)

    all_udp = FilterRule.parse("10.0.0.0/24/udp")
    assert all_udp.matches("10.0.0.1", "udp", 12345)
    assert not all_udp.matches("10.0.0.1", "tcp", 12345)

    gre_rule = FilterRule.parse("10.0.0.0/24/47")
    assert gre_rule.matches("10.0.0.1", "gre", None)
    assert not gre_rule.matches("10.0.0.1", "icmp", None)


def test_filter_rule_matching_rejects_bad_arguments() -> None:
    rule = FilterRule.parse("10.0.0.0/24")
    with pytest.raises(ValueError, match="'any' is not one protocol"):
        rule.matches("10.0.0.1", "any", None)
    with pytest.raises(ValueError, match="'nope' is not an IP protocol"):
        rule.matches("10.0.0.1", "nope", None)
    with pytest.raises(ValueError, match="'nope' is not an IP address"):
        rule.matches("nope", "tcp", 22)


def test_parse_filter_rules_count() -> None:
    assert parse_filter_rules(["10.0.0.5"]) == (FilterRule.parse("10.0.0.5"),)
    fifty = [f"10.0.0.{n}" for n in range(MAX_FILTER_RULES)]
    assert len(parse_filter_rules(fifty)) == 50
    with pytest.raises(ValueError, match="a network tunnel needs 1 to 50 filter rules, not 0"):
        parse_filter_rules([])
    with pytest.raises(ValueError, match="a network tunnel needs 1 to 50 filter rules, not 51"):
        parse_filter_rules([*fifty, "10.0.0.99"])
    with pytest.raises(ValueError, match="expected a list of filter rules, not the single string"):
        parse_filter_rules("10.0.0.5")
    with pytest.raises(ValueError, match=r"invalid filter rule '10\.0\.0\.0/24/nope': "):
        parse_filter_rules(["10.0.0.5", "10.0.0.0/24/nope"])


def _not_mapped_address(address: IPv4Address | IPv6Address) -> bool:
    return not (isinstance(address, IPv6Address) and address.ipv4_mapped is not None)


def _not_mapped_network(network: IPv4Network | IPv6Network) -> bool:
    return _not_mapped_address(network.network_address) or network.prefixlen < 96


def _network(version: Literal[4, 6]) -> st.SearchStrategy[IPv4Network | IPv6Network]:
    bits = 32 if version == 4 else 128
    return st.builds(
        lambda address, prefix: ip_network((address, prefix), strict=False),
        st.ip_addresses(v=version),
        st.integers(0, bits),
    ).filter(_not_mapped_network)


def _range(version: Literal[4, 6]) -> st.SearchStrategy[AddressRange]:
    addresses = st.ip_addresses(v=version).filter(_not_mapped_address)
    return (
        st.lists(addresses, min_size=2, max_size=2)
        .map(sorted)
        .map(lambda pair: AddressRange(*pair))
    )


filter_addresses: st.SearchStrategy[FilterAddress] = st.one_of(
    st.ip_addresses().filter(_not_mapped_address),
    _network(4),
    _network(6),
    _range(4),
    _range(6),
)
restricted_ports = (
    st.lists(port_ranges, min_size=1, max_size=5)
    .map(lambda ranges: PortSet(tuple(ranges)))
    .filter(lambda ports: ports != PortSet.all())
)
protocols = st.one_of(
    st.sampled_from(["any", *IP_PROTOCOLS]),
    st.integers(0, 255).map(str),
)


@st.composite
def filter_rules(draw: st.DrawFn, ipv4_only: bool = False) -> FilterRule:
    if ipv4_only:
        single = st.one_of(st.ip_addresses(v=4), _network(4))
        listed = st.lists(single, min_size=1, max_size=5)
        addresses = tuple(draw(listed | _range(4).map(lambda r: [r])))
    else:
        addresses = tuple(draw(st.lists(filter_addresses, min_size=1, max_size=5)))
    protocol = parse_protocol(draw(protocols))
    ports = draw(st.none() | restricted_ports) if protocol in PORT_PROTOCOLS else None
    return FilterRule(addresses, protocol, ports)


@given(rule=filter_rules())
def test_filter_rule_describe_round_trips(rule: FilterRule) -> None:
    assert FilterRule.parse(rule.describe(), legacy=True) == rule


@given(rule=filter_rules(ipv4_only=True))
def test_an_ipv4_rule_round_trips_under_todays_rules(rule: FilterRule) -> None:
    assert FilterRule.parse(rule.describe()) == rule


@given(rule=filter_rules(), address=st.ip_addresses(), port=port_numbers)
def test_filter_rule_matches_agrees_with_its_parts(
    rule: FilterRule, address: IPv4Address | IPv6Address, port: int
) -> None:
    # an IPv4-mapped IPv6 address is matched as its IPv4 address
    plain = getattr(address, "ipv4_mapped", None) or address
    for protocol in ("tcp", "udp", "icmp", "sctp", "gre"):
        checked_port = port if protocol in PORT_PROTOCOLS else None
        expected = (
            rule.protocol in ("any", protocol)
            and (rule.ports is None or port in rule.ports)
            and any(
                (item == plain) if isinstance(item, IPv4Address | IPv6Address) else plain in item
                for item in rule.addresses
            )
        )
        assert rule.matches(str(address), protocol, checked_port) == expected
