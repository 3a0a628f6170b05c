"""The network tunnel's packet filter (jumpoint/network/packet_filter.py) and its helpers.

Every rule is shown allowing and denying, in the order the checks run; then
return traffic (replies, ICMP errors related and unrelated, unsolicited
packets), fragments, TCP states and timeouts with an injected clock, the
compiled filter rules (rule_match.py) against L{FilterRule.matches}, and the
denial summariser (denials.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jumpoint.network import packet_filter as pf
from jumpoint.network.denials import OTHER, DenialSummariser
from jumpoint.network.flow_table import CLOSED, OPENED, FlowEvent, FlowState, FlowTable
from jumpoint.network.fragments import FragmentMemory
from jumpoint.network.ip_packets import format_address
from jumpoint.network.packet_filter import ALLOWED, PacketFilter, Verdict
from jumpoint.network.rule_match import FilterMatcher, protocol_number
from shared.addresses import FilterRule
from tests.unit.ipv4_builder import (
    ACK,
    FIN,
    GRE,
    ICMP,
    RST,
    SCTP,
    SYN,
    TCP,
    UDP,
    addr,
    echo,
    fragments,
    icmp_error,
    ipv4,
    tcp,
    udp,
    udp_datagram,
)

INNER = "100.64.0.2"
DNS = "198.18.1.5"
SSH = "198.18.1.10"
PINGABLE = "198.18.1.20"
ANYTHING = "198.18.2.3"
BLOCKED = "198.18.2.6"  # matches a filter rule, refused by allowed_targets
ROUTER = "198.18.0.1"
RULES = [
    "198.18.1.0/24/udp/53,123",
    "198.18.1.10/tcp/22,443",
    "198.18.1.20/icmp",
    "198.18.2.0-198.18.2.9",
]


@dataclass
class Checks:
    blocked: set[str] = field(default_factory=lambda: {BLOCKED})
    protocols: set[int] = field(default_factory=lambda: {ICMP, TCP, UDP, SCTP})
    target_calls: list[tuple[str, int | None]] = field(default_factory=list)
    events: list[FlowEvent] = field(default_factory=list)

    def target(self, address: str, port: int | None) -> bool:
        self.target_calls.append((address, port))
        return address not in self.blocked

    def protocol(self, number: int) -> bool:
        return number in self.protocols


def make(limit: int = 64, **options: object) -> tuple[PacketFilter, Checks]:
    checks = Checks()
    table = FlowTable(limit, checks.events.append)
    rules = [FilterRule.parse(text) for text in RULES]
    return PacketFilter(INNER, rules, checks.target, checks.protocol, table, **options), checks  # type: ignore[arg-type]


def denied(verdict: Verdict, rule: str) -> Verdict:
    assert (verdict.allowed, verdict.rule) == (False, rule), verdict
    return verdict


# outbound: every rule, allowing and denying


def test_a_flow_the_filters_allow_passes_both_ways() -> None:
    f, checks = make()
    assert f.outbound(udp(INNER, DNS, 5000, 53, b"q"), 0.0) is ALLOWED
    assert f.inbound(udp(DNS, INNER, 53, 5000, b"answer"), 0.1) is ALLOWED
    assert checks.target_calls == [(DNS, 53)]
    assert [event.event for event in checks.events] == [OPENED]
    assert (f.packets_out, f.bytes_out, f.packets_in, f.bytes_in) == (1, 29, 1, 34)


def test_checks_run_once_per_flow_not_per_packet() -> None:
    f, checks = make()
    for n in range(5):
        assert f.outbound(udp(INNER, DNS, 5000, 53, b"q"), float(n)) is ALLOWED
    assert checks.target_calls == [(DNS, 53)]
    assert len(f.flows) == 1


def test_malformed() -> None:
    f, _ = make()
    verdict = denied(f.outbound(udp(INNER, DNS, 5000, 53)[:-1], 0.0), pf.MALFORMED)
    assert verdict.reason == "truncated"
    verdict = denied(f.outbound(b"\x60" + bytes(39), 0.0), pf.MALFORMED)
    assert verdict.reason == "ipv6"


def test_ip_options_are_refused_from_the_console() -> None:
    f, _ = make()
    data = ipv4(UDP, INNER, DNS, udp_datagram(5000, 53), options=b"\x83\x03\x04\x00")  # LSRR
    assert denied(f.outbound(data, 0.0), pf.MALFORMED).reason == "ip_options"


def test_spoofed_source() -> None:
    f, checks = make()
    verdict = denied(f.outbound(udp("100.64.0.3", DNS, 5000, 53), 0.0), pf.SPOOFED_SOURCE)
    assert (verdict.protocol, verdict.peer) == (UDP, addr(DNS))
    assert verdict.reason == "source 100.64.0.3"  # the forged source, for the audit
    assert checks.target_calls == [] and len(f.flows) == 0


def test_a_spoofed_source_is_named_before_the_filter() -> None:
    f, _ = make()
    denied(f.outbound(udp("10.0.0.1", "10.9.9.9", 1, 9), 0.0), pf.SPOOFED_SOURCE)


@pytest.mark.parametrize(
    "packet",
    [
        udp(INNER, DNS, 5000, 54),  # port
        tcp(INNER, DNS, 5000, 53),  # protocol
        udp(INNER, "198.18.3.1", 5000, 53),  # address
        tcp(INNER, SSH, 5000, 80),
        echo(INNER, SSH, 1),
        ipv4(GRE, INNER, SSH, bytes(8)),
        udp(INNER, INNER, 5000, 53),  # the session's own address
    ],
)
def test_filter_denies(packet: bytes) -> None:
    f, checks = make()
    verdict = denied(f.outbound(packet, 0.0), pf.FILTER)
    assert checks.target_calls == []
    assert verdict.peer is not None


@pytest.mark.parametrize(
    "packet",
    [
        udp(INNER, DNS, 5000, 123),
        tcp(INNER, SSH, 5000, 443),
        echo(INNER, PINGABLE, 1),
        ipv4(GRE, INNER, ANYTHING, bytes(8)),
        ipv4(SCTP, INNER, ANYTHING, bytes(12)),
        tcp(INNER, ANYTHING, 5000, 5432),
    ],
)
def test_filter_allows(packet: bytes) -> None:
    f, checks = make()
    checks.protocols.add(GRE)
    assert f.outbound(packet, 0.0) is ALLOWED


def test_allowed_targets_gets_the_port_or_none() -> None:
    f, checks = make()
    denied(f.outbound(udp(INNER, BLOCKED, 5000, 53), 0.0), pf.ALLOWED_TARGETS)
    denied(f.outbound(echo(INNER, BLOCKED, 1), 0.0), pf.ALLOWED_TARGETS)
    assert checks.target_calls == [(BLOCKED, 53), (BLOCKED, None)]
    assert f.outbound(echo(INNER, PINGABLE, 1), 0.0) is ALLOWED
    assert checks.target_calls[-1] == (PINGABLE, None)


def test_tunnels_restricted_protocol_comes_after_allowed_targets() -> None:
    f, checks = make()
    verdict = denied(f.outbound(ipv4(GRE, INNER, ANYTHING, bytes(8)), 0.0), pf.PROTOCOL)
    assert verdict.protocol == GRE
    denied(f.outbound(ipv4(GRE, INNER, BLOCKED, bytes(8)), 0.0), pf.ALLOWED_TARGETS)
    checks.protocols.add(GRE)
    assert f.outbound(ipv4(GRE, INNER, ANYTHING, bytes(8)), 0.0) is ALLOWED


@pytest.mark.parametrize("flags", [ACK, FIN | ACK, RST, SYN | ACK, 0])
def test_a_tcp_flow_starts_with_a_bare_syn(flags: int) -> None:
    f, _ = make()
    denied(f.outbound(tcp(INNER, SSH, 40000, 22, flags), 0.0), pf.TCP_STATE)
    assert len(f.flows) == 0


def test_the_flow_limit() -> None:
    f, checks = make(limit=2)
    assert f.outbound(udp(INNER, DNS, 1, 53), 0.0) is ALLOWED
    assert f.outbound(udp(INNER, DNS, 2, 53), 0.0) is ALLOWED
    denied(f.outbound(udp(INNER, DNS, 3, 53), 1.0), pf.FLOW_LIMIT)
    assert f.outbound(udp(INNER, DNS, 1, 53), 1.0) is ALLOWED  # a known flow still passes
    assert f.outbound(udp(INNER, DNS, 3, 53), 30.0) is ALLOWED  # flow 2 expired at 30
    assert [e.event for e in checks.events] == [OPENED, OPENED, CLOSED, OPENED]


# inbound: only return traffic


def test_unsolicited_inbound_is_dropped() -> None:
    f, _ = make()
    assert f.outbound(udp(INNER, DNS, 5000, 53), 0.0) is ALLOWED
    for packet in [
        udp(DNS, INNER, 53, 5001),  # another port
        udp("198.18.1.6", INNER, 53, 5000),  # another host
        tcp(DNS, INNER, 53, 5000, SYN),  # another protocol
        udp(DNS, "100.64.0.3", 53, 5000),  # another session's address
        udp(INNER, DNS, 5000, 53),  # the console's own direction
        echo(DNS, INNER, 1),  # a ping from the remote network
    ]:
        verdict = denied(f.inbound(packet, 0.1), pf.UNSOLICITED)
        assert verdict.peer is not None
    assert f.denied_in == 6 and f.packets_in == 0


def test_inbound_malformed() -> None:
    f, _ = make()
    assert denied(f.inbound(b"\x45\x00", 0.0), pf.MALFORMED).reason == "truncated"


def test_replies_stop_after_the_flow_expires() -> None:
    f, checks = make()
    assert f.outbound(udp(INNER, DNS, 5000, 53), 0.0) is ALLOWED
    assert f.inbound(udp(DNS, INNER, 53, 5000), 29.9) is ALLOWED
    denied(f.inbound(udp(DNS, INNER, 53, 5000), 59.9), pf.UNSOLICITED)
    assert [e.event for e in checks.events] == [OPENED, CLOSED]


def test_ping_and_its_reply() -> None:
    f, _ = make()
    assert f.outbound(echo(INNER, PINGABLE, 7, seq=1), 0.0) is ALLOWED
    assert f.inbound(echo(PINGABLE, INNER, 7, seq=1, reply=True), 0.01) is ALLOWED
    assert f.outbound(echo(INNER, PINGABLE, 7, seq=2), 1.0) is ALLOWED
    assert len(f.flows) == 1
    denied(f.inbound(echo(PINGABLE, INNER, 8, reply=True), 1.0), pf.UNSOLICITED)  # other id
    denied(f.inbound(echo(PINGABLE, INNER, 7), 1.0), pf.UNSOLICITED)  # a request, same id
    denied(f.outbound(echo(INNER, PINGABLE, 7, reply=True), 1.0), pf.UNSOLICITED)
    denied(f.inbound(echo(PINGABLE, INNER, 7, reply=True, kind=14), 1.0), pf.UNSOLICITED)


def test_icmp_of_other_types_from_the_console() -> None:
    f, _ = make()
    router_solicitation = ipv4(ICMP, INNER, PINGABLE, bytes([10, 0, 0, 0, 0, 0, 0, 0]))
    assert denied(f.outbound(router_solicitation, 0.0), pf.UNSOLICITED).reason == "icmp type 10"


# ICMP errors


def test_related_icmp_errors_reach_the_console() -> None:
    f, checks = make()
    query = udp(INNER, DNS, 5000, 53, b"q")
    assert f.outbound(query, 0.0) is ALLOWED
    assert f.inbound(icmp_error(DNS, INNER, query, kind=3, code=3), 0.1) is ALLOWED
    assert f.inbound(icmp_error(ROUTER, INNER, query, kind=11, code=0), 0.1) is ALLOWED
    assert (
        f.inbound(icmp_error(ROUTER, INNER, query, kind=3, code=4), 0.1) is ALLOWED
    )  # frag needed
    (flow,) = list(f.flows)
    assert (flow.packets_in, flow.state) == (3, FlowState.UDP_UNREPLIED)  # counted, not a reply
    assert checks.target_calls == [(DNS, 53)]


def test_an_icmp_error_about_a_ping_is_related() -> None:
    f, _ = make()
    ping = echo(INNER, PINGABLE, 3)
    assert f.outbound(ping, 0.0) is ALLOWED
    assert f.inbound(icmp_error(ROUTER, INNER, ping, kind=11, code=0), 0.1) is ALLOWED


@pytest.mark.parametrize(
    "error",
    [
        icmp_error(DNS, INNER, udp(INNER, DNS, 5001, 53)),  # another flow
        icmp_error(DNS, INNER, udp("100.64.0.3", DNS, 5000, 53)),  # another source
        icmp_error(DNS, INNER, udp(DNS, INNER, 53, 5000)),  # the reply direction
        icmp_error(ROUTER, INNER, udp(INNER, DNS, 5000, 53), kind=5, code=1),  # a redirect
        icmp_error(DNS, INNER, ipv4(UDP, INNER, DNS, bytes(16), offset=8)),  # a later fragment
    ],
)
def test_unrelated_icmp_errors_are_dropped(error: bytes) -> None:
    f, _ = make()
    assert f.outbound(udp(INNER, DNS, 5000, 53), 0.0) is ALLOWED
    denied(f.inbound(error, 0.1), pf.UNSOLICITED)


def test_the_console_may_report_errors_about_replies_only_to_their_sender() -> None:
    f, _ = make()
    assert f.outbound(udp(INNER, DNS, 5000, 53), 0.0) is ALLOWED
    reply = udp(DNS, INNER, 53, 5000, b"late")
    assert f.inbound(reply, 0.1) is ALLOWED
    assert f.outbound(icmp_error(INNER, DNS, reply), 0.2) is ALLOWED  # port unreachable
    denied(f.outbound(icmp_error(INNER, ANYTHING, reply), 0.2), pf.UNSOLICITED)
    denied(f.outbound(icmp_error(INNER, DNS, udp(DNS, INNER, 53, 5009)), 0.2), pf.UNSOLICITED)
    denied(f.outbound(icmp_error(INNER, DNS, udp(INNER, DNS, 5000, 53)), 0.2), pf.UNSOLICITED)
    denied(f.outbound(icmp_error(INNER, DNS, reply, kind=5, code=0), 0.2), pf.UNSOLICITED)


# fragments


def big_udp(
    sport: int = 5000, dst: str = DNS, dport: int = 53, src: str = INNER, ident: int = 9
) -> list[bytes]:
    return fragments(udp(src, dst, sport, dport, b"z" * 40, ident=ident), 16)


def test_later_fragments_follow_a_first_fragment_that_passed() -> None:
    f, _ = make()
    first, *rest = big_udp()
    assert f.outbound(first, 0.0) is ALLOWED
    for piece in rest:
        assert f.outbound(piece, 0.1) is ALLOWED
    (flow,) = list(f.flows)
    assert (flow.packets_out, flow.bytes_out) == (3, sum(len(p) for p in [first, *rest]))


def test_a_later_fragment_alone_is_dropped() -> None:
    f, _ = make()
    _, second, _ = big_udp()
    assert denied(f.outbound(second, 0.0), pf.FRAGMENT).reason == "no first fragment passed"


def test_later_fragments_of_a_denied_datagram_are_dropped() -> None:
    f, _ = make()
    first, second, third = big_udp(dport=54)
    denied(f.outbound(first, 0.0), pf.FILTER)
    denied(f.outbound(second, 0.0), pf.FRAGMENT)
    denied(f.outbound(third, 0.0), pf.FRAGMENT)


def test_fragment_memory_lasts_thirty_seconds() -> None:
    f, _ = make()
    first, second, third = big_udp()
    assert f.outbound(first, 0.0) is ALLOWED
    assert f.outbound(second, 29.0) is ALLOWED
    denied(f.outbound(third, 30.0), pf.FRAGMENT)


def test_fragment_memory_is_bounded_and_forgets_the_oldest() -> None:
    f, _ = make(fragments=FragmentMemory(limit=2))
    datagrams = [big_udp(ident=n) for n in range(3)]
    for first, _, _ in datagrams:
        assert f.outbound(first, 0.0) is ALLOWED
    assert len(f.fragments) == 2 and f.fragments.forgotten == 1
    denied(f.outbound(datagrams[0][1], 0.1), pf.FRAGMENT)
    assert f.outbound(datagrams[2][1], 0.1) is ALLOWED


def test_a_tcp_fragment_at_offset_eight_is_dropped() -> None:
    f, _ = make()
    first = fragments(tcp(INNER, SSH, 40000, 22, SYN, b"x" * 20, ident=5), 24)[0]
    assert f.outbound(first, 0.0) is ALLOWED
    overlap = ipv4(TCP, INNER, SSH, bytes(16), ident=5, offset=8)
    assert denied(f.outbound(overlap, 0.0), pf.FRAGMENT).reason == "overlaps the tcp header"


def test_a_spoofed_later_fragment_is_a_spoof() -> None:
    f, _ = make()
    first = big_udp()[0]
    assert f.outbound(first, 0.0) is ALLOWED
    spoofed = ipv4(UDP, "100.64.0.3", DNS, bytes(16), ident=9, offset=16)
    denied(f.outbound(spoofed, 0.0), pf.SPOOFED_SOURCE)


def test_inbound_fragments_of_a_reply() -> None:
    f, _ = make()
    assert f.outbound(udp(INNER, DNS, 5000, 53), 0.0) is ALLOWED
    first, *rest = big_udp(src=DNS, dst=INNER, sport=53, dport=5000)
    assert f.inbound(rest[0], 0.1).rule == pf.FRAGMENT  # before its first fragment
    assert f.inbound(first, 0.1) is ALLOWED
    assert all(f.inbound(piece, 0.2) is ALLOWED for piece in rest)
    unsolicited = big_udp(src=DNS, dst=INNER, sport=53, dport=5001, ident=10)
    denied(f.inbound(unsolicited[0], 0.3), pf.UNSOLICITED)
    denied(f.inbound(unsolicited[1], 0.3), pf.FRAGMENT)


# TCP through the filter


def test_a_tcp_connection_through_the_filter() -> None:
    f, checks = make()
    exchange = [
        ("out", SYN, FlowState.SYN_SENT),
        ("in", SYN | ACK, FlowState.SYN_RECV),
        ("out", ACK, FlowState.ESTABLISHED),
        ("in", ACK, FlowState.ESTABLISHED),
        ("out", FIN | ACK, FlowState.FIN_WAIT),
        ("in", FIN | ACK, FlowState.LAST_ACK),
        ("out", ACK, FlowState.TIME_WAIT),
    ]
    for n, (way, flags, state) in enumerate(exchange):
        if way == "out":
            verdict = f.outbound(tcp(INNER, SSH, 40000, 22, flags), float(n))
        else:
            verdict = f.inbound(tcp(SSH, INNER, 22, 40000, flags), float(n))
        assert verdict is ALLOWED
        (flow,) = list(f.flows)
        assert flow.state is state
    denied(f.inbound(tcp(SSH, INNER, 22, 40000, ACK), 7 + 120.0), pf.UNSOLICITED)
    denied(f.outbound(tcp(INNER, SSH, 40000, 22, ACK), 7 + 120.0), pf.TCP_STATE)
    closed = [e for e in checks.events if e.event == CLOSED]
    assert [(e.state, e.packets_out, e.packets_in) for e in closed] == [("TIME_WAIT", 4, 3)]


def test_an_inbound_syn_is_unsolicited_and_a_reset_closes() -> None:
    f, _ = make()
    denied(f.inbound(tcp(SSH, INNER, 22, 40000, SYN), 0.0), pf.UNSOLICITED)
    assert f.outbound(tcp(INNER, SSH, 40000, 22, SYN), 0.0) is ALLOWED
    assert f.inbound(tcp(SSH, INNER, 22, 40000, RST | ACK), 0.1) is ALLOWED
    (flow,) = list(f.flows)
    assert (flow.state, flow.expires) == (FlowState.CLOSE, 10.1)


# totality and the no-leak property


@given(st.binary(max_size=120), st.booleans())
def test_the_filter_never_raises(data: bytes, inbound: bool) -> None:
    f, _ = make()
    verdict = f.inbound(data, 0.0) if inbound else f.outbound(data, 0.0)
    assert isinstance(verdict, Verdict)
    assert verdict.allowed or verdict.rule in pf.RULES


_ADDRESSES = st.sampled_from([DNS, SSH, PINGABLE, ANYTHING, INNER, ROUTER])
_PORTS = st.sampled_from([22, 53, 5000, 40000])
_INBOUND = st.one_of(
    st.builds(udp, _ADDRESSES, st.just(INNER), _PORTS, _PORTS),
    st.builds(tcp, _ADDRESSES, st.just(INNER), _PORTS, _PORTS, st.sampled_from([SYN, ACK, RST])),
    st.builds(echo, _ADDRESSES, st.just(INNER), st.integers(0, 3), st.just(1), st.booleans()),
    st.builds(
        lambda src, original: icmp_error(src, INNER, original),
        _ADDRESSES,
        st.builds(udp, st.just(INNER), _ADDRESSES, _PORTS, _PORTS),
    ),
)


@given(st.lists(_INBOUND, max_size=20))
def test_nothing_reaches_a_console_that_sent_nothing(packets: list[bytes]) -> None:
    f, _ = make()
    assert not any(f.inbound(packet, 0.0).allowed for packet in packets)
    assert len(f.flows) == 0


# compiled rules against FilterRule.matches


def test_protocol_numbers() -> None:
    assert [protocol_number(p) for p in ("tcp", "UDP", "icmp", "sctp", "47", "any", 132)] == [
        6,
        17,
        1,
        132,
        47,
        None,
        132,
    ]
    for bad in ("http", "256", -1):
        with pytest.raises(ValueError):
            protocol_number(bad)


def test_ipv6_addresses_in_a_rule_never_match() -> None:
    matcher = FilterMatcher([FilterRule.parse("fd00::/8,198.18.1.1", legacy=True)])
    assert matcher.matches(addr("198.18.1.1"), UDP, 1)
    assert not matcher.matches(addr("253.0.0.0"), UDP, 1)


_RULE_TEXTS = st.sampled_from(
    [
        "198.18.1.0/24",
        "198.18.1.10,198.18.1.12/tcp/22,80-90",
        "198.18.1.3-198.18.1.9/udp/53",
        "198.18.0.0/15/icmp",
    ]
)


@given(
    st.lists(_RULE_TEXTS, min_size=1, max_size=3),
    st.integers(addr("198.17.255.250"), addr("198.20.0.5")),
    st.sampled_from([("tcp", TCP), ("udp", UDP), ("icmp", ICMP)]),
    st.integers(1, 100),
)
def test_compiled_rules_agree_with_filter_rule_matches(
    texts: list[str], address: int, protocol: tuple[str, int], port: int
) -> None:
    rules = [FilterRule.parse(text) for text in texts]
    name, number = protocol
    checked_port = None if name == "icmp" else port
    expected = any(rule.matches(format_address(address), name, checked_port) for rule in rules)
    assert FilterMatcher(rules).matches(address, number, checked_port) == expected


# the denial summariser


def test_denials_are_summarised_once_per_key_and_window() -> None:
    summariser = DenialSummariser(window=10.0)
    for n in range(100):
        summariser.record(0.5 + n * 0.01, pf.FILTER, addr(DNS), UDP, "no filter rule matches")
    summariser.record(2.0, pf.SPOOFED_SOURCE, addr(SSH), TCP)
    assert summariser.due(9.0) == []
    summaries = summariser.due(10.5)
    assert [(s.rule, s.peer, s.protocol, s.count) for s in summaries] == [
        (pf.FILTER, DNS, UDP, 100),
        (pf.SPOOFED_SOURCE, SSH, TCP, 1),
    ]
    first = summaries[0]
    assert (first.first_seen, first.last_seen, first.window_start, first.window_end) == (
        0.5,
        1.49,
        0.5,
        10.5,
    )
    assert first.audit_details() == {
        "rule": pf.FILTER,
        "peer": DNS,
        "protocol": UDP,
        "count": 100,
        "reason": "no filter rule matches",
        "window": 10.0,
    }
    assert summariser.due(30.0) == []
    summariser.record(31.0, pf.FILTER, addr(DNS), UDP)
    assert [s.count for s in summariser.flush(32.0)] == [1]


def test_keys_beyond_the_limit_go_to_one_other_bucket() -> None:
    summariser = DenialSummariser(window=10.0, key_limit=3)
    for port in range(10):
        summariser.record(1.0, pf.UNSOLICITED, addr(DNS) + port, UDP)
    summaries = summariser.flush(5.0)
    assert [(s.rule, s.count) for s in summaries] == [(pf.UNSOLICITED, 1)] * 3 + [(OTHER, 7)]
    assert summaries[-1].reason == pf.UNSOLICITED and summaries[-1].peer is None


@given(
    st.lists(
        st.tuples(
            st.floats(0, 5),
            st.sampled_from(pf.RULES),
            st.one_of(st.none(), st.integers(0, 20)),
            st.sampled_from([None, TCP, UDP]),
        ),
        max_size=200,
    ),
    st.integers(1, 8),
)
def test_no_denial_is_dropped(
    records: list[tuple[float, str, int | None, int | None]], limit: int
) -> None:
    summariser = DenialSummariser(window=2.0, key_limit=limit)
    now = 0.0
    summaries = []
    for step, rule, peer, protocol in records:
        now += step
        summaries += summariser.due(now)
        summariser.record(now, rule, peer, protocol)
    summaries += summariser.flush(now)
    assert sum(s.count for s in summaries) == len(records) == summariser.recorded
    windows: dict[float, set[tuple[str, str | None, int | None]]] = {}
    for summary in summaries:
        keys = windows.setdefault(summary.window_start, set())
        assert (summary.rule, summary.peer, summary.protocol) not in keys
        keys.add((summary.rule, summary.peer, summary.protocol))
        assert len(keys) <= limit + 1


# construction options


def test_options_of_the_filter() -> None:
    with pytest.raises(ValueError, match="max_size"):
        make(max_size=19)
    f, _ = make(max_size=100)
    denied(f.outbound(udp(INNER, DNS, 5000, 53, b"x" * 80), 0.0), pf.MALFORMED)
    table = FlowTable(4)
    by_number = PacketFilter(
        addr(INNER), FilterMatcher([]), lambda a, p: True, lambda n: True, table
    )
    assert by_number.inner == addr(INNER)
    denied(by_number.outbound(udp(INNER, DNS, 5000, 53), 0.0), pf.FILTER)  # no rules: nothing


@pytest.mark.parametrize(("verify", "allowed"), [(False, True), (True, False)])
def test_inbound_checksums_are_the_kernels_unless_asked(verify: bool, allowed: bool) -> None:
    f, _ = make(verify_inbound_checksum=verify)
    assert f.outbound(udp(INNER, DNS, 5000, 53), 0.0) is ALLOWED
    reply = ipv4(UDP, DNS, INNER, udp_datagram(53, 5000), bad_checksum=True)
    assert f.inbound(reply, 0.1).allowed is allowed
    bad = ipv4(UDP, INNER, DNS, udp_datagram(5000, 53), bad_checksum=True)
    assert denied(f.outbound(bad, 0.2), pf.MALFORMED).reason == "bad_checksum"
