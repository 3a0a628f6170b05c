"""Forged IPv4 packets for end-to-end tests, and a raw sender to run in a namespace.

The packets come from L{tests.unit.ipv4_builder} (any source address, any
fragment offset).  A test writes them into a TUN descriptor, or sends them
with a raw socket (L{send_raw}, C{IPPROTO_RAW}: the kernel keeps the header
as given, forged source included) to see what the Jumpoint does with a
spoofed packet or a stray fragment.  C{python -m tests.e2e.packets udp SRC
DST SPORT DPORT COUNT} sends COUNT UDP packets from the namespace it runs in;
C{... fragment SRC DST IDENT COUNT} sends COUNT later fragments
(L{later_fragment}) whose first fragment never comes.
"""

from __future__ import annotations

import socket
import struct
import sys

from tests.unit.ipv4_builder import DF, ICMP, MF, UDP, icmp_message, ipv4, udp


def echo_request(source: str, destination: str, ident: int, payload: bytes) -> bytes:
    """An ICMP echo request (sequence 1, don't fragment) carrying C{payload}."""
    message = icmp_message(8, 0, struct.pack("!HH", ident, 1), payload)
    return ipv4(ICMP, source, destination, message, ident=0x4A50, ip_flags=DF)


def later_fragment(source: str, destination: str, ident: int) -> bytes:
    """The second fragment of a UDP datagram (offset 1480 bytes, more to come), alone."""
    return ipv4(UDP, source, destination, b"\xab" * 64, ident=ident, ip_flags=MF, offset=1480)


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
            send_raw(udp(source, destination, sport, dport, b"forged %d" % number, ip_flags=DF))
    elif kind == "fragment":
        ident, count = (int(n) for n in numbers)
        for _ in range(count):
            send_raw(later_fragment(source, destination, ident))
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
