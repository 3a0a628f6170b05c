"""A small builder of IPv4, TCP, UDP and ICMP packets for the network tunnel tests.

Written from RFC 791/792/793/768 (not from the parser under test): fields are
packed with C{struct} and the header checksum computed the textbook way, so
a test states each packet's fields and the parser has to read them back.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

ICMP, TCP, UDP, GRE, SCTP = 1, 6, 17, 47, 132
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
DF, MF = 0x4000, 0x2000


def addr(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of C{data}."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(
    protocol: int,
    src: str,
    dst: str,
    payload: bytes,
    *,
    ident: int = 1,
    ip_flags: int = 0,
    offset: int = 0,
    ttl: int = 64,
    options: bytes = b"",
    total_length: int | None = None,
    version: int = 4,
    header_words: int | None = None,
    bad_checksum: bool = False,
) -> bytes:
    """An IPv4 packet; C{offset} in bytes (a multiple of 8)."""
    words = header_words if header_words is not None else 5 + len(options) // 4
    length = total_length if total_length is not None else 20 + len(options) + len(payload)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        version << 4 | words,
        0,
        length,
        ident,
        ip_flags | offset >> 3,
        ttl,
        protocol,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    header += options
    value = checksum(header) ^ (0x5555 if bad_checksum else 0)
    header = header[:10] + struct.pack("!H", value) + header[12:]
    return header + payload


def tcp_segment(
    sport: int, dport: int, flags: int, data: bytes = b"", offset_words: int = 5
) -> bytes:
    return (
        struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, offset_words << 4, flags, 65535, 0, 0)
        + data
    )


def udp_datagram(sport: int, dport: int, data: bytes = b"", length: int | None = None) -> bytes:
    size = 8 + len(data) if length is None else length
    return struct.pack("!HHHH", sport, dport, size, 0) + data


def icmp_message(kind: int, code: int, rest: bytes = b"\0\0\0\0", data: bytes = b"") -> bytes:
    body = struct.pack("!BBH", kind, code, 0) + rest + data
    return body[:2] + struct.pack("!H", checksum(body)) + body[4:]


def tcp(
    src: str, dst: str, sport: int, dport: int, flags: int = SYN, data: bytes = b"", **ip: Any
) -> bytes:
    return ipv4(TCP, src, dst, tcp_segment(sport, dport, flags, data), **ip)


def udp(src: str, dst: str, sport: int, dport: int, data: bytes = b"", **ip: Any) -> bytes:
    return ipv4(UDP, src, dst, udp_datagram(sport, dport, data), **ip)


def echo(
    src: str, dst: str, ident: int, seq: int = 1, reply: bool = False, kind: int | None = None
) -> bytes:
    icmp_type = kind if kind is not None else (0 if reply else 8)
    return ipv4(ICMP, src, dst, icmp_message(icmp_type, 0, struct.pack("!HH", ident, seq), b"ping"))


def icmp_error(src: str, dst: str, original: bytes, kind: int = 3, code: int = 3) -> bytes:
    """An ICMP error from C{src} to C{dst} about C{original}: its header and 8 bytes (RFC 792)."""
    header_length = (original[0] & 0x0F) * 4
    return ipv4(
        ICMP, src, dst, icmp_message(kind, code, b"\0\0\0\0", original[: header_length + 8])
    )


def fragments(packet: bytes, size: int) -> list[bytes]:
    """C{packet} split into fragments carrying C{size} bytes of payload each (a multiple of 8)."""
    header = packet[:20]
    protocol = header[9]
    src = str(ipaddress.IPv4Address(header[12:16]))
    dst = str(ipaddress.IPv4Address(header[16:20]))
    ident = struct.unpack("!H", header[4:6])[0]
    payload = packet[20:]
    pieces = []
    for start in range(0, len(payload), size):
        last = start + size >= len(payload)
        pieces.append(
            ipv4(
                protocol,
                src,
                dst,
                payload[start : start + size],
                ident=ident,
                ip_flags=0 if last else MF,
                offset=start,
            )
        )
    return pieces
