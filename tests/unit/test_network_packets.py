"""The IPv4 parser of network tunnels (jumpoint/network/ip_packets.py): fields, every rejection, totality."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jumpoint.network import ip_packets
from jumpoint.network.ip_packets import Malformed, Packet, Reason, parse
from tests.unit.ipv4_builder import (
    ACK,
    DF,
    GRE,
    ICMP,
    MF,
    SCTP,
    SYN,
    TCP,
    UDP,
    addr,
    echo,
    fragments,
    icmp_error,
    icmp_message,
    ipv4,
    tcp,
    tcp_segment,
    udp,
    udp_datagram,
)

CONSOLE = "100.64.0.2"
REMOTE = "198.18.1.10"


def parsed(data: bytes, **options: int) -> Packet:
    packet = parse(data, **options)  # type: ignore[arg-type]
    assert isinstance(packet, Packet), packet
    return packet


def reason(data: bytes | bytearray | memoryview, **options: int) -> Reason:
    packet = parse(data, **options)  # type: ignore[arg-type]
    assert isinstance(packet, Malformed), packet
    return packet.reason


def test_tcp_fields() -> None:
    packet = parsed(
        tcp(CONSOLE, REMOTE, 40000, 22, SYN | ACK, b"x" * 10, ident=77, ip_flags=DF, ttl=9)
    )
    assert (packet.protocol, packet.src, packet.dst) == (TCP, addr(CONSOLE), addr(REMOTE))
    assert (packet.sport, packet.dport, packet.tcp_flags) == (40000, 22, SYN | ACK)
    assert (packet.identification, packet.dont_fragment, packet.more_fragments) == (77, True, False)
    assert (packet.ttl, packet.total_length, packet.header_length) == (9, 50, 20)
    assert packet.fragment_offset == 0 and not packet.is_fragment
    assert packet.icmp_type is None and packet.embedded is None


def test_udp_fields() -> None:
    packet = parsed(udp(CONSOLE, REMOTE, 5353, 53, b"query"))
    assert (packet.protocol, packet.sport, packet.dport, packet.tcp_flags) == (UDP, 5353, 53, None)


def test_echo_fields() -> None:
    packet = parsed(echo(CONSOLE, REMOTE, ident=0xBEEF, seq=3))
    assert (packet.protocol, packet.icmp_type, packet.icmp_code, packet.icmp_id) == (
        ICMP,
        8,
        0,
        0xBEEF,
    )
    assert packet.sport is None and packet.embedded is None


def test_icmp_error_carries_the_embedded_header() -> None:
    original = udp(CONSOLE, REMOTE, 5000, 53, b"payload")
    packet = parsed(icmp_error("198.18.1.1", CONSOLE, original, kind=11, code=0))
    assert (packet.icmp_type, packet.icmp_code, packet.icmp_id) == (11, 0, None)
    embedded = packet.embedded
    assert embedded is not None
    assert (embedded.protocol, embedded.src, embedded.dst) == (UDP, addr(CONSOLE), addr(REMOTE))
    assert (embedded.sport, embedded.dport, embedded.fragment_offset) == (5000, 53, 0)


def test_icmp_error_about_an_echo_carries_its_identifier() -> None:
    packet = parsed(icmp_error("198.18.1.1", CONSOLE, echo(CONSOLE, REMOTE, ident=9)))
    assert packet.embedded is not None
    assert (packet.embedded.icmp_type, packet.embedded.icmp_id) == (8, 9)


def test_other_protocols_have_no_ports() -> None:
    packet = parsed(ipv4(GRE, CONSOLE, REMOTE, b"\0" * 8))
    assert (packet.protocol, packet.sport, packet.dport) == (GRE, None, None)
    assert parsed(ipv4(SCTP, CONSOLE, REMOTE, struct.pack("!HHI", 1, 2, 0))).dport == 2


def test_options_are_part_of_the_header() -> None:
    packet = parsed(ipv4(UDP, CONSOLE, REMOTE, udp_datagram(1, 2), options=b"\x01\x01\x01\x00"))
    assert (packet.header_length, packet.sport) == (24, 1)


def test_fragments() -> None:
    first, middle, last = fragments(udp(CONSOLE, REMOTE, 1, 2, b"a" * 40), 16)
    head = parsed(first)
    assert (head.more_fragments, head.fragment_offset, head.sport, head.dport) == (True, 0, 1, 2)
    assert head.is_fragment
    tail = parsed(middle)
    assert (tail.more_fragments, tail.fragment_offset, tail.sport) == (True, 16, None)
    end = parsed(last)
    assert (end.more_fragments, end.fragment_offset, end.sport) == (False, 32, None)


def test_address_text() -> None:
    assert ip_packets.format_address(addr("198.18.1.10")) == "198.18.1.10"
    assert ip_packets.parse_address("198.18.1.10") == addr("198.18.1.10")
    for bad in ("1.2.3", "1.2.3.256", "a.b.c.d", "1.2.3.4.5", "1.2.3.0001"):
        with pytest.raises(ValueError):
            ip_packets.parse_address(bad)


GOOD = udp(CONSOLE, REMOTE, 1, 2, b"data")


@pytest.mark.parametrize(
    ("data", "expected", "options"),
    [
        (b"", Reason.TRUNCATED, {}),
        (GOOD[:19], Reason.TRUNCATED, {}),
        (ipv4(UDP, CONSOLE, REMOTE, b"", options=b"\x01" * 4)[:22], Reason.TRUNCATED, {}),
        (ipv4(UDP, CONSOLE, REMOTE, udp_datagram(1, 2), total_length=40), Reason.TRUNCATED, {}),
        (ipv4(UDP, CONSOLE, REMOTE, udp_datagram(1, 2), version=6), Reason.IPV6, {}),
        (b"\x60" + b"\0" * 39, Reason.IPV6, {}),
        (ipv4(UDP, CONSOLE, REMOTE, udp_datagram(1, 2), version=5), Reason.BAD_VERSION, {}),
        (
            ipv4(UDP, CONSOLE, REMOTE, udp_datagram(1, 2), header_words=4),
            Reason.BAD_HEADER_LENGTH,
            {},
        ),
        (ipv4(UDP, CONSOLE, REMOTE, udp_datagram(1, 2), total_length=20), Reason.BAD_LENGTH, {}),
        (GOOD + b"\0", Reason.BAD_LENGTH, {}),
        (udp(CONSOLE, REMOTE, 1, 2, b"x" * 1373), Reason.TOO_BIG, {}),
        (udp(CONSOLE, REMOTE, 1, 2, b"x" * 100), Reason.TOO_BIG, {"max_size": 100}),
        (
            ipv4(UDP, CONSOLE, REMOTE, udp_datagram(1, 2), bad_checksum=True),
            Reason.BAD_CHECKSUM,
            {},
        ),
        (ipv4(UDP, CONSOLE, REMOTE, udp_datagram(1, 2), ip_flags=0x8000), Reason.BAD_FLAGS, {}),
        (ipv4(UDP, CONSOLE, REMOTE, b"x" * 12, ip_flags=MF), Reason.BAD_FRAGMENT, {}),
        (ipv4(UDP, CONSOLE, REMOTE, b"", ip_flags=MF), Reason.BAD_FRAGMENT, {}),
        (
            ipv4(UDP, CONSOLE, REMOTE, b"x" * 16, offset=65512),
            Reason.BAD_FRAGMENT,
            {"max_size": 65535},
        ),
        (ipv4(TCP, CONSOLE, REMOTE, b"x" * 8, ip_flags=MF), Reason.TINY_FRAGMENT, {}),
        (ipv4(TCP, CONSOLE, REMOTE, b"x" * 12), Reason.BAD_TRANSPORT, {}),
        (
            ipv4(TCP, CONSOLE, REMOTE, tcp_segment(1, 2, SYN, offset_words=4)),
            Reason.BAD_TRANSPORT,
            {},
        ),
        (
            ipv4(TCP, CONSOLE, REMOTE, tcp_segment(1, 2, SYN, offset_words=6)),
            Reason.BAD_TRANSPORT,
            {},
        ),
        (ipv4(UDP, CONSOLE, REMOTE, udp_datagram(1, 2, b"ab", length=7)), Reason.BAD_TRANSPORT, {}),
        (
            ipv4(UDP, CONSOLE, REMOTE, udp_datagram(1, 2, b"ab", length=11)),
            Reason.BAD_TRANSPORT,
            {},
        ),
        (
            ipv4(UDP, CONSOLE, REMOTE, udp_datagram(1, 2, b"a" * 8, length=9), ip_flags=MF),
            Reason.BAD_TRANSPORT,
            {},
        ),
        (ipv4(UDP, CONSOLE, REMOTE, b"\0" * 4), Reason.BAD_TRANSPORT, {}),
        (ipv4(ICMP, CONSOLE, REMOTE, b"\x08\0\0\0"), Reason.BAD_TRANSPORT, {}),
        (
            ipv4(ICMP, CONSOLE, REMOTE, icmp_message(3, 1, data=GOOD[:20])),
            Reason.BAD_ICMP_ERROR,
            {},
        ),
        (
            ipv4(ICMP, CONSOLE, REMOTE, icmp_message(11, 0, data=b"\x45" + b"\0" * 10)),
            Reason.BAD_ICMP_ERROR,
            {},
        ),
        (
            ipv4(ICMP, CONSOLE, REMOTE, icmp_message(3, 1, data=b"\x65" + GOOD[1:28])),
            Reason.BAD_ICMP_ERROR,
            {},
        ),
        (
            ipv4(ICMP, CONSOLE, REMOTE, icmp_message(3, 1, data=b"\x44" + GOOD[1:28])),
            Reason.BAD_ICMP_ERROR,
            {},
        ),
    ],
)
def test_rejections(data: bytes, expected: Reason, options: dict[str, int]) -> None:
    assert reason(data, **options) is expected


def test_a_rejection_says_protocol_and_destination_when_it_can() -> None:
    packet = parse(udp(CONSOLE, REMOTE, 1, 2, b"x" * 2000))
    assert packet == Malformed(Reason.TOO_BIG, UDP, addr(REMOTE))
    assert parse(b"\x45") == Malformed(Reason.TRUNCATED)


def test_checksum_may_be_left_to_the_kernel() -> None:
    data = ipv4(UDP, CONSOLE, REMOTE, udp_datagram(1, 2), bad_checksum=True)
    assert parsed(data, verify_checksum=False).dport == 2


def test_the_hard_cap_holds_whatever_max_size_says() -> None:
    largest = udp(CONSOLE, REMOTE, 1, 2, b"x" * (65535 - 28))
    assert parsed(largest, max_size=10**6).total_length == 65535
    assert reason(largest + b"x", max_size=10**6) is Reason.BAD_LENGTH


def test_buffers_of_every_kind_parse_alike() -> None:
    data = tcp(CONSOLE, REMOTE, 1, 2, SYN)
    assert parsed(bytearray(data)) == parsed(data) == parsed(memoryview(data))  # type: ignore[arg-type]


# totality: nothing but a Packet or a Malformed, for any input


def _valid() -> st.SearchStrategy[bytes]:
    address = st.sampled_from([CONSOLE, REMOTE, "0.0.0.0", "255.255.255.255"])
    port = st.integers(0, 65535)
    data = st.binary(max_size=64)
    return st.one_of(
        st.builds(tcp, address, address, port, port, st.integers(0, 255), data),
        st.builds(udp, address, address, port, port, data),
        st.builds(echo, address, address, port, st.integers(0, 65535), st.booleans()),
        st.builds(
            lambda original, kind: icmp_error(REMOTE, CONSOLE, original, kind=kind),
            st.builds(udp, address, address, port, port, data),
            st.sampled_from([3, 4, 5, 11, 12]),
        ),
        st.builds(
            lambda proto, body: ipv4(proto, CONSOLE, REMOTE, body),
            st.integers(0, 255).filter(lambda proto: proto not in ip_packets._L4_MINIMUM),
            data,
        ),
    )


def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(_valid()))
    for _ in range(draw(st.integers(1, 4))):
        choice = draw(st.integers(0, 2))
        if choice == 0 and data:
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.integers(0, 255))
        elif choice == 1:
            del data[draw(st.integers(0, len(data))) :]
        else:
            data += draw(st.binary(max_size=8))
    return bytes(data)


def _check_total(data: bytes) -> None:
    for max_size in (20, 1400, 65535):
        for verify in (True, False):
            result = parse(data, max_size, verify)
            assert isinstance(result, Packet | Malformed)
            if isinstance(result, Packet):
                assert result.total_length == len(data) <= max_size
                assert 20 <= result.header_length <= min(60, len(data))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    _check_total(data)


@given(st.composite(_mutated)())
def test_mutated_packets_never_raise(data: bytes) -> None:
    _check_total(data)


@given(_valid())
def test_valid_packets_parse(data: bytes) -> None:
    assert isinstance(parse(data), Packet)
