"""A strict, total parser of untrusted IPv4 packets: bytes in, a L{Packet} or a L{Malformed} out.

The console sends raw IPv4 packets over the channel; before the Jumpoint
writes one to its TUN interface it parses the header here.  The parser never
raises on any input: every malformed packet gives a L{Malformed} with a named
L{Reason}.  It reads with C{struct.unpack_from} straight from the buffer
(bytes, bytearray or memoryview, never copied) and allocates one small
object per packet.

What it checks (RFC 791 for IPv4, RFC 792 for ICMP, RFC 1858 for fragments):

 - the version is 4 (6 gives L{Reason.IPV6}: network tunnels are IPv4 only),
   the header length (IHL) is at least 5 words and fits in the buffer;
 - the total length equals the buffer's length (a TUN read is exactly one
   packet, so trailing bytes mean a framing error) and is at most
   C{max_size} (the tunnel MTU, 1400 by default, never above 65535);
 - the header checksum, unless the caller passes C{verify_checksum=False}
   (for packets the Jumpoint's own kernel wrote to the TUN, which it already
   checked);
 - the reserved flag bit is zero; a fragment's data ends within 65535 bytes;
   a fragment other than the last carries a multiple of 8 bytes and at least 8;
 - IP options are parsed as part of the header (IHL up to 15) and reported in
   L{Packet.header_length}; whether a packet with options may pass is the
   filter's decision (L{jumpoint.network.packet_filter} refuses them from the
   console: source routing and similar options have no business on a tunnel);
 - in the first (or only) fragment, the transport header is complete: 20 bytes
   of TCP (with a data offset that fits), 8 of UDP (whose length field fits),
   8 of ICMP, 8 for the other protocols with ports (DCCP, SCTP, UDP-Lite).  A
   first fragment too short for its transport header is a L{Reason.TINY_FRAGMENT}
   (RFC 1858: the ports and TCP flags must be in the first fragment);
 - ICMP errors (destination unreachable, source quench, redirect, time
   exceeded, parameter problem) carry the IPv4 header of the datagram they are
   about and at least its first 8 bytes (RFC 792), which are parsed into an
   L{Embedded} (its own checksum and total length are not checked: routers may
   have changed the first and the second is the original datagram's).

Transport checksums (TCP, UDP, ICMP) are not checked: the receiver does that,
and no decision here depends on the payload.  Addresses are kept as integers
(L{format_address} turns one into text) so that the per-packet path allocates
no address objects.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

ICMP: Final = 1
TCP: Final = 6
UDP: Final = 17
DCCP: Final = 33
SCTP: Final = 132
UDPLITE: Final = 136

PORT_PROTOCOLS: Final = frozenset({TCP, UDP, DCCP, SCTP, UDPLITE})
"""Protocols whose header starts with a 16-bit source and destination port."""

ICMP_ERRORS: Final = frozenset({3, 4, 5, 11, 12})
"""ICMP types that carry the header of the datagram they report on (RFC 792)."""

ICMP_REQUESTS: Final = {8: 0, 13: 14, 15: 16, 17: 18}
"""ICMP query types (echo, timestamp, information, address mask) and their reply types."""

ICMP_REPLIES: Final = {reply: request for request, reply in ICMP_REQUESTS.items()}
"""ICMP reply types and the request type each answers."""

TCP_FIN: Final = 0x01
TCP_SYN: Final = 0x02
TCP_RST: Final = 0x04
TCP_ACK: Final = 0x10

DEFAULT_MAX_SIZE: Final = 1400
"""The default tunnel MTU: the largest packet accepted."""

HARD_MAX_SIZE: Final = 65535
"""The largest IPv4 packet there is; C{max_size} is capped at it."""

HEADER_SIZE: Final = 20
"""An IPv4 header without options."""

_HEADER = struct.Struct("!BxHHHBBxxII")  # ver/ihl, total, id, flags/offset, ttl, proto, src, dst
_PORTS = struct.Struct("!HH")
_ICMP = struct.Struct("!BBxxH")  # type, code, (checksum), identifier
_WORDS = tuple(struct.Struct(f"!{2 * words}H") for words in range(16))  # header checksum
_L4_MINIMUM = {TCP: 20, UDP: 8, ICMP: 8, DCCP: 8, SCTP: 8, UDPLITE: 8}


class Reason(enum.Enum):
    """Why a packet is malformed; the value is the name shown in audit rows."""

    TRUNCATED = "truncated"
    """Shorter than an IPv4 header, than its own header length, or than its total length."""
    BAD_VERSION = "bad_version"
    """The version field is neither 4 nor 6."""
    IPV6 = "ipv6"
    """An IPv6 packet: network tunnels carry IPv4 only."""
    BAD_HEADER_LENGTH = "bad_header_length"
    """The header length (IHL) is below 5 words."""
    BAD_LENGTH = "bad_length"
    """The total length field is below the header length or differs from the packet's size."""
    TOO_BIG = "too_big"
    """Larger than the tunnel's maximum packet size."""
    BAD_CHECKSUM = "bad_checksum"
    """The IPv4 header checksum is wrong."""
    BAD_FLAGS = "bad_flags"
    """The reserved flag bit is set."""
    BAD_FRAGMENT = "bad_fragment"
    """A fragment that ends beyond 65535 bytes, or a non-last one not a multiple of 8 bytes."""
    TINY_FRAGMENT = "tiny_fragment"
    """A first fragment too short for its transport header (RFC 1858)."""
    BAD_TRANSPORT = "bad_transport"
    """A transport header that is truncated or inconsistent (TCP data offset, UDP length)."""
    BAD_ICMP_ERROR = "bad_icmp_error"
    """An ICMP error without a valid embedded IPv4 header and 8 bytes of its data."""


@dataclass(slots=True)
class Malformed:
    """A packet that failed parsing, and why (treat as read-only)."""

    reason: Reason
    protocol: int | None = None
    """The protocol field, when the header got that far."""
    dst: int | None = None
    """The destination address, when the header got that far."""


@dataclass(slots=True)
class Embedded:
    """The header of the datagram an ICMP error reports on, and its first 8 bytes."""

    protocol: int
    src: int
    dst: int
    identification: int
    fragment_offset: int
    """In bytes."""
    sport: int | None
    """The source port, when the protocol has ports and this is a first fragment."""
    dport: int | None
    icmp_type: int | None
    """For an embedded ICMP message (a first fragment): its type..."""
    icmp_id: int | None
    """...and the identifier of a query (echo, timestamp, ...)."""


@dataclass(slots=True)
class Packet:
    """A well-formed IPv4 packet's header fields (treat as read-only: a slotted, unfrozen
    dataclass costs a fifth of a frozen one to build, per packet).

    Transport fields are set only in the first (or only) fragment of a
    datagram; in a later fragment (L{fragment_offset} > 0) they are C{None}.
    """

    protocol: int
    src: int
    dst: int
    total_length: int
    header_length: int
    """In bytes: 20 without options, up to 60."""
    identification: int
    dont_fragment: bool
    more_fragments: bool
    fragment_offset: int
    """In bytes (the header's field times 8)."""
    ttl: int
    sport: int | None = None
    dport: int | None = None
    tcp_flags: int | None = None
    """The TCP flags byte (CWR ECE URG ACK PSH RST SYN FIN)."""
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_id: int | None = None
    """The identifier of an ICMP query or reply (echo, timestamp, information, mask)."""
    embedded: Embedded | None = None
    """For an ICMP error, the header of the datagram it reports on."""

    @property
    def is_fragment(self) -> bool:
        """Whether this packet is one fragment of a larger datagram."""
        return self.more_fragments or self.fragment_offset > 0


def format_address(address: int) -> str:
    """An integer IPv4 address as dotted-quad text."""
    return f"{address >> 24 & 255}.{address >> 16 & 255}.{address >> 8 & 255}.{address & 255}"


def parse_address(text: str) -> int:
    """Dotted-quad text as an integer IPv4 address; C{ValueError} if it is not one."""
    parts = text.split(".")
    if len(parts) != 4 or not all(part.isdigit() and len(part) <= 3 for part in parts):
        raise ValueError(f"{text!r} is not an IPv4 address")
    value = 0
    for part in parts:
        byte = int(part)
        if byte > 255:
            raise ValueError(f"{text!r} is not an IPv4 address")
        value = value << 8 | byte
    return value


def checksum_ok(data: bytes | bytearray | memoryview, header_length: int) -> bool:
    """Whether the one's complement sum over the header is all ones (RFC 1071)."""
    words: tuple[int, ...] = _WORDS[header_length >> 2].unpack_from(data)
    total = sum(words)
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def _embedded(data: bytes | bytearray | memoryview, start: int, end: int) -> Embedded | None:
    """The IPv4 header (and 8 bytes) an ICMP error carries at C{start}, or C{None}."""
    if end - start < HEADER_SIZE:
        return None
    version_ihl, _total, ident, flags_offset, _ttl, protocol, src, dst = _HEADER.unpack_from(
        data, start
    )
    header_length = (version_ihl & 0x0F) << 2
    if version_ihl >> 4 != 4 or header_length < HEADER_SIZE:
        return None
    transport = start + header_length
    if end - transport < 8:
        return None
    offset = (flags_offset & 0x1FFF) << 3
    sport = dport = icmp_type = icmp_id = None
    if offset == 0:
        if protocol in PORT_PROTOCOLS:
            sport, dport = _PORTS.unpack_from(data, transport)
        elif protocol == ICMP:
            icmp_type, _code, identifier = _ICMP.unpack_from(data, transport)
            if icmp_type in ICMP_REQUESTS or icmp_type in ICMP_REPLIES:
                icmp_id = identifier
    return Embedded(protocol, src, dst, ident, offset, sport, dport, icmp_type, icmp_id)


def parse(
    data: bytes | bytearray | memoryview,
    max_size: int = DEFAULT_MAX_SIZE,
    verify_checksum: bool = True,
) -> Packet | Malformed:
    """Parse one IPv4 packet; never raises (a non-buffer C{data} is the caller's bug).

    @param max_size: the largest packet accepted (capped at L{HARD_MAX_SIZE}).
    @param verify_checksum: check the IPv4 header checksum.
    """
    size = len(data)
    if size < 1:
        return Malformed(Reason.TRUNCATED)
    version = data[0] >> 4
    if version != 4:
        return Malformed(Reason.IPV6 if version == 6 else Reason.BAD_VERSION)
    if size < HEADER_SIZE:
        return Malformed(Reason.TRUNCATED)
    version_ihl, total, ident, flags_offset, ttl, protocol, src, dst = _HEADER.unpack_from(data)
    header_length = (version_ihl & 0x0F) << 2
    if header_length < HEADER_SIZE:
        return Malformed(Reason.BAD_HEADER_LENGTH, protocol, dst)
    if size < header_length or size < total:
        return Malformed(Reason.TRUNCATED, protocol, dst)
    if total != size or total < header_length:
        return Malformed(Reason.BAD_LENGTH, protocol, dst)
    if size > max_size or size > HARD_MAX_SIZE:
        return Malformed(Reason.TOO_BIG, protocol, dst)
    if verify_checksum and not checksum_ok(data, header_length):
        return Malformed(Reason.BAD_CHECKSUM, protocol, dst)
    if flags_offset & 0x8000:
        return Malformed(Reason.BAD_FLAGS, protocol, dst)
    more = bool(flags_offset & 0x2000)
    offset = (flags_offset & 0x1FFF) << 3
    payload = total - header_length
    if offset + payload > HARD_MAX_SIZE - HEADER_SIZE or (more and (payload < 8 or payload & 7)):
        return Malformed(Reason.BAD_FRAGMENT, protocol, dst)
    packet = Packet(
        protocol,
        src,
        dst,
        total,
        header_length,
        ident,
        bool(flags_offset & 0x4000),
        more,
        offset,
        ttl,
    )
    if offset:
        return packet
    minimum = _L4_MINIMUM.get(protocol)
    if minimum is None:
        return packet
    if payload < minimum:
        return Malformed(Reason.TINY_FRAGMENT if more else Reason.BAD_TRANSPORT, protocol, dst)
    if protocol == ICMP:
        icmp_type, code, identifier = _ICMP.unpack_from(data, header_length)
        packet.icmp_type = icmp_type
        packet.icmp_code = code
        if icmp_type in ICMP_ERRORS:
            embedded = _embedded(data, header_length + 8, total)
            if embedded is None:
                return Malformed(Reason.BAD_ICMP_ERROR, protocol, dst)
            packet.embedded = embedded
        elif icmp_type in ICMP_REQUESTS or icmp_type in ICMP_REPLIES:
            packet.icmp_id = identifier
        return packet
    sport, dport = _PORTS.unpack_from(data, header_length)
    packet.sport = sport
    packet.dport = dport
    if protocol == TCP:
        data_offset = data[header_length + 12] >> 4
        if data_offset < 5 or (not more and data_offset << 2 > payload):
            return Malformed(Reason.BAD_TRANSPORT, protocol, dst)
        packet.tcp_flags = data[header_length + 13]
    elif protocol == UDP:
        # The UDP length covers the whole datagram: within an unfragmented packet's
        # payload, and at least the first fragment's part of it.
        length = (data[header_length + 4] << 8) | data[header_length + 5]
        if length < 8 or (length < payload if more else length > payload):
            return Malformed(Reason.BAD_TRANSPORT, protocol, dst)
    return packet
