"""Hand-built IPv4 packets for end-to-end tests, and a raw sender to run in a namespace.

L{echo_request} and L{udp_packet} build whole IPv4 packets (header checksum
filled in) with any source address: a test writes them into a TUN
descriptor, or sends them with a raw socket (L{send_raw}, C{IPPROTO_RAW}:
the kernel keeps the header as given, forged source included) to see what
the Jumpoint does with a spoofed packet or a stray fragment.  C{python -m
tests.e2e.packets udp SRC DST SPORT DPORT COUNT} sends COUNT such UDP
packets from the namespace it runs in; C{... fragment SRC DST IDENT COUNT}
sends COUNT later fragments (L{later_fragment}) with no first fragment.
"""

from __future__ import annotations

import socket
import struct
import sys


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


DONT_FRAGMENT = 0x4000
MORE_FRAGMENTS = 0x2000


def ipv4_packet(
    source: str,
    destination: str,
    protocol: int,
    body: bytes,
    ident: int = 0x4A50,
    fragment: int = DONT_FRAGMENT,
) -> bytes:
    """An IPv4 header without options before C{body}; C{fragment}: the flags and offset field."""
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(body),
        ident,
        fragment,
        64,
        protocol,
        0,
        socket.inet_aton(source),
        socket.inet_aton(destination),
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + body


def echo_request(source: str, destination: str, ident: int, payload: bytes) -> bytes:
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + payload
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    return ipv4_packet(source, destination, 1, icmp)


def udp_packet(source: str, destination: str, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP datagram without a checksum (zero: allowed over IPv4)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return ipv4_packet(source, destination, 17, udp)


def later_fragment(source: str, destination: str, ident: int) -> bytes:
    """The second fragment of a UDP datagram (offset 1480 bytes, more to come) alone."""
    return ipv4_packet(source, destination, 17, b"\xab" * 64, ident, MORE_FRAGMENTS | 185)


def send_raw(packet: bytes) -> None:
    """Send a whole IPv4 packet as it is (needs CAP_NET_RAW); routed by its destination."""
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(packet, (socket.inet_ntoa(packet[16:20]), 0))


def main(argv: list[str]) -> int:
    """C{udp SRC DST SPORT DPORT COUNT} or C{fragment SRC DST IDENT COUNT}."""
    kind, source, destination, *numbers = argv
    if kind == "udp":
        sport, dport, count = (int(n) for n in numbers)
        for number in range(count):
            send_raw(udp_packet(source, destination, sport, dport, b"forged %d" % number))
    elif kind == "fragment":
        ident, count = (int(n) for n in numbers)
        for _ in range(count):
            send_raw(later_fragment(source, destination, ident))
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
