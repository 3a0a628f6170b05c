"""A network item's filter rules compiled for the packet path: integer ranges, protocol numbers.

L{shared.addresses.FilterRule} holds a rule as written (addresses, ranges and
CIDRs; a protocol keyword; a port set) and matches text addresses.  The
packet filter checks each new flow against every rule of its item with
integer IPv4 addresses, so L{FilterMatcher} turns the rules into tuples of
inclusive integer ranges once, when the session starts (no I/O, no
resolution).

Protocols: a rule's protocol is C{any} (every IP protocol: a rule without a
protocol lets everything to its addresses through), an IANA keyword from
L{PROTOCOL_NUMBERS} or a number from 0 to 255.  Ports restrict the
destination port of the protocols that have ports; a packet without ports
never matches a rule with ports.  IPv6 addresses in a rule never match
(network tunnels carry IPv4 only).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import TypeAlias

from shared.addresses import ANY_PROTOCOL, AddressRange, FilterRule

PROTOCOL_NUMBERS = {
    "icmp": 1,
    "igmp": 2,
    "ipip": 4,
    "tcp": 6,
    "egp": 8,
    "udp": 17,
    "dccp": 33,
    "ipv6": 41,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "ospf": 89,
    "pim": 103,
    "vrrp": 112,
    "l2tp": 115,
    "sctp": 132,
    "udplite": 136,
}
"""IANA protocol keywords (as in /etc/protocols) and their numbers."""


def protocol_number(protocol: str | int) -> int | None:
    """The IP protocol number a rule names, C{None} for C{any}; C{ValueError} if unknown."""
    if isinstance(protocol, int):
        number = protocol
    else:
        text = protocol.strip().lower()
        if text == ANY_PROTOCOL:
            return None
        if text.isdigit():
            number = int(text)
        elif text in PROTOCOL_NUMBERS:
            return PROTOCOL_NUMBERS[text]
        else:
            raise ValueError(f"{protocol!r} is not an IP protocol keyword or number")
    if not 0 <= number <= 255:
        raise ValueError(f"IP protocol {number} is out of range: expected 0 to 255")
    return number


_Entry: TypeAlias = tuple[int, int, tuple[tuple[int, int], ...] | None]


@dataclass(frozen=True)
class CompiledRule:
    """One rule: inclusive IPv4 ranges, a protocol number and port ranges (C{None}: any)."""

    addresses: tuple[tuple[int, int], ...]
    protocol: int | None
    ports: tuple[tuple[int, int], ...] | None

    @classmethod
    def of(cls, rule: FilterRule) -> CompiledRule:
        ranges: list[tuple[int, int]] = []
        for item in rule.addresses:
            if isinstance(item, IPv4Address):
                ranges.append((int(item), int(item)))
            elif isinstance(item, IPv4Network):
                ranges.append((int(item.network_address), int(item.broadcast_address)))
            elif isinstance(item, AddressRange) and isinstance(item.first, IPv4Address):
                ranges.append((int(item.first), int(item.last)))
        ports = rule.ports.ranges if rule.ports is not None else None
        return cls(tuple(sorted(ranges)), protocol_number(rule.protocol), ports)

    def matches(self, dst: int, protocol: int, port: int | None) -> bool:
        if self.protocol is not None and self.protocol != protocol:
            return False
        ports = self.ports
        if ports is not None and (port is None or not any(a <= port <= b for a, b in ports)):
            return False
        return any(first <= dst <= last for first, last in self.addresses)


class FilterMatcher:
    """A network item's rules: a packet passes if any rule matches it.

    The rules are flattened, per protocol number, into one tuple of
    C{(first address, last address, port ranges or None)} entries, built the
    first time a protocol is checked (at most 256 of them), and scanned in a
    plain loop: a new flow costs a few hundred nanoseconds, not a call per rule.
    """

    def __init__(self, rules: Iterable[FilterRule]) -> None:
        self.rules = tuple(CompiledRule.of(rule) for rule in rules)
        self._by_protocol: dict[int, tuple[_Entry, ...]] = {}

    def _entries(self, protocol: int) -> tuple[_Entry, ...]:
        entries = tuple(
            (first, last, rule.ports)
            for rule in self.rules
            if rule.protocol is None or rule.protocol == protocol
            for first, last in rule.addresses
        )
        self._by_protocol[protocol] = entries
        return entries

    def matches(self, dst: int, protocol: int, port: int | None) -> bool:
        """Whether a packet to C{dst} (an integer address) over C{protocol} at C{port} passes."""
        entries = self._by_protocol.get(protocol)
        if entries is None:
            entries = self._entries(protocol)
        for first, last, ports in entries:
            if first <= dst <= last:
                if ports is None:
                    return True
                if port is not None:
                    for low, high in ports:
                        if low <= port <= high:
                            return True
        return False
