"""Fuzz target of the network tunnel's packet path (jumpoint/network/ip_packets.py, packet_filter.py).

Valid IPv4 packets (TCP, UDP, ICMP queries and errors, other protocols,
fragments), mutated ones and plain random bytes go to L{ip_packets.parse}
and to a L{PacketFilter} both ways.  The parser must return a L{Packet} or
a L{Malformed} (nothing may escape), and a packet it accepts has the size
its header says; the filter must return a verdict naming one of its rules,
and pass nothing inbound to a console that sent nothing.  Run long with
C{scripts/fuzz.sh}.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jumpoint.network.flow_table import FlowTable
from jumpoint.network.ip_packets import Malformed, Packet, parse
from jumpoint.network.packet_filter import RULES, PacketFilter
from shared.addresses import FilterRule
from tests.unit.ipv4_builder import MF, echo, icmp_error, ipv4, tcp, udp

INNER = "100.64.0.2"
ADDRESSES = st.sampled_from([INNER, "198.18.1.10", "198.18.0.1", "0.0.0.0"])
PORTS = st.integers(0, 65535)
DATA = st.binary(max_size=48)

VALID = st.one_of(
    st.builds(tcp, ADDRESSES, ADDRESSES, PORTS, PORTS, st.integers(0, 255), DATA),
    st.builds(udp, ADDRESSES, ADDRESSES, PORTS, PORTS, DATA),
    st.builds(echo, ADDRESSES, ADDRESSES, PORTS, PORTS, st.booleans()),
    st.builds(
        lambda src, original, kind: icmp_error(src, INNER, original, kind=kind),
        ADDRESSES,
        st.builds(udp, ADDRESSES, ADDRESSES, PORTS, PORTS, DATA),
        st.sampled_from([3, 4, 5, 11, 12]),
    ),
    st.builds(
        lambda proto, src, dst, body, more, offset: ipv4(
            proto, src, dst, body, ip_flags=MF if more else 0, offset=offset * 8
        ),
        st.integers(0, 255),
        ADDRESSES,
        ADDRESSES,
        st.binary(min_size=8, max_size=48).map(lambda b: b[: len(b) // 8 * 8]),
        st.booleans(),
        st.integers(0, 16),
    ),
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(VALID))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.integers(0, 3))
        if kind == 0 and data:
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        elif kind == 1 and data:
            data[draw(st.integers(0, min(len(data), 40) - 1))] = draw(st.integers(0, 255))
        elif kind == 2:
            del data[draw(st.integers(0, len(data))) :]
        else:
            data += draw(st.binary(max_size=16))
    return bytes(data)


INPUTS = st.one_of(VALID, mutated(), st.binary(max_size=128))


def _filter() -> PacketFilter:
    rules = [FilterRule.parse("198.18.0.0/15"), FilterRule.parse("0.0.0.0/0/udp/53")]
    return PacketFilter(INNER, rules, lambda a, p: True, lambda n: True, FlowTable(8))


@given(st.lists(INPUTS, min_size=1, max_size=8))
def test_parse_and_filter_are_total(packets: list[bytes]) -> None:
    f = _filter()
    for data in packets:
        for max_size in (20, 1400, 65535):
            result = parse(data, max_size)
            assert isinstance(result, Packet | Malformed)
            if isinstance(result, Packet):
                assert result.total_length == len(data) <= max_size
        for verdict in (f.inbound(data, 0.0), f.outbound(data, 0.0)):
            assert verdict.allowed or verdict.rule in RULES
    assert len(f.flows) <= 8


@given(st.lists(INPUTS, max_size=16))
def test_nothing_comes_in_unasked(packets: list[bytes]) -> None:
    f = _filter()
    assert not any(f.inbound(data, 0.0).allowed for data in packets)
