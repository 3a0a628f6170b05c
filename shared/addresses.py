"""Address and port matching rules for the Jumpoint's access policy.

This module parses and evaluates three kinds of policy text, with no I/O:

 - port sets, as in C{tunnels_restricted.local} / C{.remote} and in CLI port
   lists such as C{22,80,8000-8100}: L{PortSet}, L{parse_port_list};
 - the Jumpoint-local allow-list of targets (C{allowed_targets}), with entries
   such as C{10.0.0.0/8:5432}, C{db.corp.example} or C{:22}: L{AllowedTarget},
   L{AllowList}, and the built-in egress default around it (L{EgressGuard}:
   loopback, link-local and the Jumpoint's own listener are never targets
   unless an entry lists them explicitly);
 - Network Tunnel filter rules such as C{10.0.0.0/24/tcp/22,80}: L{FilterRule}
   (addresses, an IANA IP protocol: L{parse_protocol}, ports), L{parse_filter_rules}.

Host names are never resolved here: the caller resolves them and passes the
addresses in.  Every parse error is a C{ValueError} whose message quotes the
bad text and says what was expected; the caller adds where the text came from.
IPv4-mapped IPv6 addresses (C{::ffff:10.0.0.1}) are treated as their IPv4
address everywhere, in policy entries as well as in the addresses checked.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TypeAlias

IPAddress: TypeAlias = IPv4Address | IPv6Address
IPNetwork: TypeAlias = IPv4Network | IPv6Network

MIN_PORT = 1
MAX_PORT = 65535


_PORT_EXPECTED = "expected a port from 1 to 65535 or a range such as 8000-8100"
_PORT_LIST_EXPECTED = "expected ports such as 22,80,8000-8100"
_TARGET_EXPECTED = (
    "expected ADDRESS, ADDRESS:PORT or :PORT, where ADDRESS is an IP address, CIDR or"
    " host name (for example 10.0.0.0/8:5432, [fd00::/8]:443, db.example:5432 or :22)"
)

_PORT_RE = re.compile(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?")
_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.ASCII)


# Port sets


def _parse_port(digits: str) -> int:
    port = int(digits) if len(digits) <= 5 else MAX_PORT + 1
    if not MIN_PORT <= port <= MAX_PORT:
        raise ValueError(f"port {digits!r} is out of range: expected 1 to 65535")
    return port


def _parse_port_range(value: int | str) -> tuple[int, int]:
    """Parse C{22}, C{"22"} or C{"20000-30000"} into an inclusive range."""
    text = str(value)  # a bool becomes "True", which is rejected below
    match = _PORT_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a port: {_PORT_EXPECTED}")
    first = _parse_port(match[1])
    last = first if match[2] is None else _parse_port(match[2])
    if first > last:
        raise ValueError(f"port range {text.strip()!r} is reversed: write the lower port first")
    return first, last


def _merge(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sort inclusive ranges and merge those that overlap or touch."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if not MIN_PORT <= first <= last <= MAX_PORT:
            raise ValueError(f"invalid port range {first}-{last}")
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return tuple(merged)


@dataclass(frozen=True)
class PortSet:
    """A set of TCP/UDP ports, kept as sorted, merged, inclusive ranges.

    The constructor normalises the ranges it is given, so equal sets compare
    equal.  An empty set holds no port (and is false); what an empty set means
    in a policy is the caller's decision.
    """

    ranges: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "ranges", _merge(self.ranges))

    @classmethod
    def parse(cls, values: Iterable[int | str]) -> PortSet:
        """Parse ports (C{22} or C{"22"}) and ranges (C{"20000-30000"}); spaces are allowed."""
        if isinstance(values, str):
            raise ValueError(f"expected a list of ports, not the single string {values!r}")
        return cls(tuple(_parse_port_range(value) for value in values))

    @classmethod
    def all(cls) -> PortSet:
        """Every port, 1 to 65535."""
        return cls(((MIN_PORT, MAX_PORT),))

    def __contains__(self, port: object) -> bool:
        if not isinstance(port, int) or isinstance(port, bool):
            return False
        return any(first <= port <= last for first, last in self.ranges)

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def union(self, other: PortSet) -> PortSet:
        return PortSet(self.ranges + other.ranges)

    def iter_ports_in_order(self) -> Iterator[int]:
        """Yield every port in the set, lowest first, without building a list."""
        for first, last in self.ranges:
            yield from range(first, last + 1)

    def describe(self, separator: str = ", ") -> str:
        """The set as text, e.g. C{"22, 80, 20000-30000"}, or C{"none"} when empty.

        A non-empty description parses back (L{parse_port_list}) to an equal set.
        """
        if not self.ranges:
            return "none"
        return separator.join(
            str(first) if first == last else f"{first}-{last}" for first, last in self.ranges
        )


def _parse_port_items(text: str) -> PortSet:
    if not text.strip():
        raise ValueError(_PORT_LIST_EXPECTED)
    items = text.split(",")
    if not all(item.strip() for item in items):
        raise ValueError(f"an item between commas is empty: {_PORT_LIST_EXPECTED}")
    return PortSet.parse(items)


def parse_port_list(text: str) -> PortSet:
    """Parse a comma-separated port list as typed on a command line, e.g. C{22,80,8000-8100}.

    Spaces around items are allowed; an empty list or an empty item is an error.
    """
    try:
        return _parse_port_items(text)
    except ValueError as error:
        raise ValueError(f"invalid port list {text!r}: {error}") from None


# Addresses


def _unmap(address: IPAddress) -> IPAddress:
    """The IPv4 address behind an IPv4-mapped IPv6 address, otherwise C{address}."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _unmap_network(network: IPNetwork) -> IPNetwork:
    """The IPv4 network behind a network of IPv4-mapped addresses, otherwise C{network}."""
    if isinstance(network, IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return IPv4Network((mapped, network.prefixlen - 96))
    return network


def _reject_zone_id(text: str) -> None:
    if "%" in text:
        raise ValueError(f"{text!r} has a zone id: zone ids (%...) are not supported")


def _parse_address(text: str) -> IPAddress:
    """Parse an IP address written in a policy."""
    _reject_zone_id(text)
    try:
        return _unmap(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def _parse_network(text: str) -> IPNetwork:
    """Parse a CIDR written in a policy; host bits must be zero."""
    _reject_zone_id(text)
    try:
        return _unmap_network(ipaddress.ip_network(text))
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a CIDR: expected an address and a prefix length such as"
            " 10.0.0.0/8 or fd00::/8"
        ) from None
    raise ValueError(f"{text!r} has host bits set: did you mean {str(loose)!r}?")


def _parse_hostname(text: str) -> str:
    """Parse a host name into its canonical form: lower case, no trailing dot."""
    name = text.lower().removesuffix(".")
    if len(name) > 253 or _HOSTNAME_RE.fullmatch(name) is None:
        raise ValueError(f"{text!r} is not an IP address, CIDR or host name")
    if name.rsplit(".", 1)[-1].isdigit():  # e.g. 10.0.0.300 or 10.0.0
        raise ValueError(f"{text!r} is not a valid IP address")
    return name


PARSED_ADDRESS_CACHE = 1024
"""Texts whose parsed address is kept (L{ip_address}): a connection's target and peer
addresses come back on every connection, and parsing one costs more than the rest of its
check."""


@functools.lru_cache(maxsize=PARSED_ADDRESS_CACHE)
def ip_address(text: str) -> IPAddress:
    """C{ipaddress.ip_address(text)}, remembered for the last L{PARSED_ADDRESS_CACHE} texts.

    Addresses are immutable, so the same object may be handed out again; a text that is
    not an address raises C{ValueError} every time (errors are not remembered).
    """
    return ipaddress.ip_address(text)


def _parse_checked_address(text: str) -> IPAddress:
    """Parse an address being checked (e.g. a resolver's answer); a zone id is ignored."""
    try:
        address = ip_address(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None
    if isinstance(address, IPv6Address) and address.scope_id is not None:
        address = IPv6Address(int(address))
    return _unmap(address)


def _describe_network(network: IPNetwork) -> str:
    """A CIDR, or just the address for a single-address network."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def _with_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


# The Jumpoint-local allow-list


@dataclass(frozen=True)
class AllowedTarget:
    """One C{allowed_targets} entry: which addresses, at which ports.

    At most one of C{network} and C{hostname} is set; when neither is, the
    entry allows any address (it was written C{:PORT}).  C{ports} C{None}
    means any port.  A single IP address is kept as a one-address network.
    """

    network: IPNetwork | None = None
    hostname: str | None = None
    ports: PortSet | None = None

    @classmethod
    def parse(cls, text: str) -> AllowedTarget:
        """Parse an entry such as C{10.0.0.0/8:5432}, C{[::1]:22}, C{db.example} or C{:22}."""
        try:
            return cls._parse(text.strip())
        except ValueError as error:
            raise ValueError(f"invalid allowed target {text!r}: {error}") from None

    @classmethod
    def _parse(cls, text: str) -> AllowedTarget:
        if not text:
            raise ValueError(_TARGET_EXPECTED)
        port_text: str | None
        if text.startswith("["):
            where, closing, rest = text[1:].partition("]")
            if not closing:
                raise ValueError("missing ']' after the IPv6 address")
            if ":" not in where:
                raise ValueError(f"brackets are only for IPv6 addresses, not {where!r}")
            if rest and not rest.startswith(":"):
                raise ValueError(f"unexpected {rest!r} after ']': expected :PORT or nothing")
            port_text = rest[1:] if rest else None
        elif text.count(":") == 1:
            where, _, port_text = text.partition(":")
        else:  # a host with no port, or a bare IPv6 address (which cannot have a port)
            where, port_text = text, None
        ports = None
        if port_text is not None:
            if not port_text.strip():
                raise ValueError("expected a port or port range after ':'")
            ports = PortSet.parse([port_text])
        where = where.strip()
        if not where:
            return cls(ports=ports)
        if "/" in where:
            return cls(network=_parse_network(where), ports=ports)
        if ":" in where:  # only IPv6 addresses have colons
            return cls(network=ipaddress.ip_network(_parse_address(where)), ports=ports)
        try:
            return cls(network=ipaddress.ip_network(IPv4Address(where)), ports=ports)
        except ValueError:
            return cls(hostname=_parse_hostname(where), ports=ports)

    def describe(self) -> str:
        """The entry's canonical text, which parses back to an equal entry."""
        if self.hostname is not None:
            where = self.hostname
        elif self.network is not None:
            where = _describe_network(self.network)
        else:
            where = ""
        if self.ports is None:
            return where
        if ":" in where:
            where = f"[{where}]"
        return f"{where}:{self.ports.describe()}"

    def _allows(
        self, address: IPAddress, port: int, resolved: Mapping[str, frozenset[IPAddress]]
    ) -> bool:
        if self.ports is not None and port not in self.ports:
            return False
        if self.network is not None:
            return address in self.network
        if self.hostname is not None:
            return address in resolved.get(self.hostname, frozenset())
        return True


@dataclass(frozen=True)
class AllowDecision:
    """The outcome of L{AllowList.check}.

    When denied, C{address} is the first address no entry allows (C{None} if
    there were no addresses) and C{reason} says why, in one sentence.
    """

    allowed: bool
    address: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class AllowList:
    """The C{allowed_targets} list: a target passes if every one of its addresses does.

    An empty list allows nothing.  (An omitted C{allowed_targets} key means no
    restriction; the caller does not build an L{AllowList} for it.)
    """

    entries: tuple[AllowedTarget, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        if isinstance(entries, str):
            raise ValueError(
                f"expected a list of allowed targets, not the single string {entries!r}"
            )
        return cls(tuple(AllowedTarget.parse(entry) for entry in entries))

    def hostnames(self) -> set[str]:
        """The host names the entries mention (lower case, no trailing dot), to be resolved."""
        return {entry.hostname for entry in self.entries if entry.hostname is not None}

    def describe(self) -> str:
        return ", ".join(entry.describe() for entry in self.entries)

    def check(
        self, port: int, addresses: Sequence[str], resolved_hosts: Mapping[str, Sequence[str]]
    ) -> AllowDecision:
        """Decide whether a target at C{port} whose host resolved to C{addresses} is allowed.

        @param addresses: the target's IP addresses (just the one for an IP literal).
        @param resolved_hosts: the addresses each name of L{hostnames} resolved to,
            keyed by that name; a missing name resolved to nothing.
        @raise ValueError: if an address is not an IP address.
        """
        if not addresses:
            return AllowDecision(False, None, "the target has no addresses to check")
        resolved = {
            name: frozenset(_parse_checked_address(text) for text in resolved_hosts.get(name, ()))
            for name in self.hostnames()
        }
        for text in addresses:
            address = _parse_checked_address(text)
            if not any(entry._allows(address, port, resolved) for entry in self.entries):
                reason = f"{_with_port(text, port)} is not in allowed_targets"
                return AllowDecision(False, text, reason)
        return AllowDecision(True)


# The built-in egress default

PROTECTED_NETWORKS: tuple[tuple[str, IPNetwork], ...] = (
    ("loopback", IPv4Network("127.0.0.0/8")),
    ("loopback", IPv6Network("::1/128")),
    ("loopback", IPv4Network("0.0.0.0/8")),  # 0.0.0.0 reaches this host on Linux
    ("loopback", IPv6Network("::/128")),
    ("link-local", IPv4Network("169.254.0.0/16")),  # cloud metadata: 169.254.169.254
    ("link-local", IPv6Network("fe80::/10")),
)
"""Addresses that are never targets unless an entry inside them lists them explicitly."""


def protected_network(address: IPAddress) -> tuple[str, IPNetwork] | None:
    """The kind (C{loopback}, C{link-local}) and protected network of C{address}, if any."""
    address = _unmap(address)
    for kind, network in PROTECTED_NETWORKS:
        if address.version == network.version and address in network:
            return kind, network
    return None


def _explicitly(
    entry: AllowedTarget, address: IPAddress, port: int, within: IPNetwork | None
) -> bool:
    """Whether C{entry} names C{address}:C{port} itself, not as part of a wider catch-all.

    For a protected address the entry's network must lie inside the protected
    network (C{127.0.0.0/8}, C{169.254.169.254}); for the Jumpoint's own
    listener the entry must also name the port.
    """
    network = entry.network
    if network is None or address.version != network.version or address not in network:
        return False
    if entry.ports is not None and port not in entry.ports:
        return False
    if within is not None:
        return network.version == within.version and network.subnet_of(within)  # type: ignore[arg-type]
    return entry.ports is not None


@dataclass(frozen=True)
class EgressGuard:
    """C{allowed_targets} with the built-in default around it: what a Jumpoint dials.

    A loopback or link-local address (L{PROTECTED_NETWORKS}), or one of the
    Jumpoint's own listening endpoints (C{own}), passes only if an entry of
    the allow-list names it explicitly (an IP or CIDR entry inside the
    protected network; for the own listener, with its port).  Every other
    address passes when there is no allow-list, and otherwise as
    L{AllowList.check} decides.
    """

    allow_list: AllowList | None
    own: frozenset[tuple[IPAddress, int]] = frozenset()

    @classmethod
    def of(cls, allow_list: AllowList | None, own: Iterable[tuple[str, int]] = ()) -> EgressGuard:
        """C{own}: the Jumpoint's listening endpoints; host names among them are skipped."""
        endpoints = set()
        for host, port in own:
            try:
                endpoints.add((_parse_checked_address(host), port))
            except ValueError:
                continue
        return cls(allow_list, frozenset(endpoints))

    def check(
        self, port: int, addresses: Sequence[str], resolved_hosts: Mapping[str, Sequence[str]]
    ) -> AllowDecision:
        """Like L{AllowList.check}, with the built-in default applied first."""
        entries = self.allow_list.entries if self.allow_list is not None else ()
        for text in addresses:
            address = _parse_checked_address(text)
            protected = protected_network(address)
            own = (address, port) in self.own
            if protected is None and not own:
                continue
            within = protected[1] if protected is not None else None
            if any(_explicitly(entry, address, port, within) for entry in entries):
                continue
            what = (
                f"a {protected[0]} address"
                if protected is not None
                else "the Jumpoint's own listener"
            )
            reason = (
                f"{_with_port(text, port)} is {what}: never a target unless allowed_targets"
                " lists it explicitly"
            )
            return AllowDecision(False, text, reason)
        if self.allow_list is None:
            return AllowDecision(True)
        return self.allow_list.check(port, addresses, resolved_hosts)


# Network tunnel filter rules

IP_PROTOCOLS: Mapping[str, int] = {
    "hopopt": 0,
    "icmp": 1,
    "igmp": 2,
    "ggp": 3,
    "ipv4": 4,
    "st": 5,
    "tcp": 6,
    "egp": 8,
    "igp": 9,
    "udp": 17,
    "rdp": 27,
    "dccp": 33,
    "ipv6": 41,
    "ipv6-route": 43,
    "ipv6-frag": 44,
    "rsvp": 46,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "ipv6-icmp": 58,
    "ipv6-nonxt": 59,
    "ipv6-opts": 60,
    "eigrp": 88,
    "ospfigp": 89,
    "ipip": 94,
    "etherip": 97,
    "encap": 98,
    "pim": 103,
    "ipcomp": 108,
    "vrrp": 112,
    "l2tp": 115,
    "sctp": 132,
    "udplite": 136,
    "mpls-in-ip": 137,
}
"""IANA keywords (lower case) of the IP protocols a rule can name; others by number (0-255)."""
PROTOCOL_ALIASES: Mapping[str, int] = {"ipencap": 4, "icmpv6": 58, "ospf": 89}
"""Other names in use (/etc/protocols): accepted, stored as the IANA keyword."""
_PROTOCOL_NAMES = {number: name for name, number in IP_PROTOCOLS.items()}
PORT_PROTOCOLS = ("tcp", "udp", "sctp", "dccp", "udplite")
"""The protocols with ports: only their rules may restrict ports."""
ANY_PROTOCOL = "any"
MAX_FILTER_RULES = 50

_RULE_EXPECTED = "expected ADDRESSES[/PROTOCOL[/PORTS]], for example 10.0.0.0/24/tcp/22,80"
_PROTOCOL_EXPECTED = (
    "expected an IANA keyword (tcp, udp, icmp, sctp, gre, esp, ...), a number from 0 to 255 or any"
)


def parse_protocol(value: str | int) -> str:
    """The canonical name of an IP protocol: its IANA keyword, its number as text, or C{any}.

    C{value} is a keyword (any case), an alias (C{ospf}), a number (C{47} or
    C{"47"}: stored as C{gre}) or C{any}.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an IP protocol: {_PROTOCOL_EXPECTED}")
    text = str(value).strip().lower()
    if text == ANY_PROTOCOL or text in IP_PROTOCOLS:
        return text
    if text in PROTOCOL_ALIASES:
        return _PROTOCOL_NAMES[PROTOCOL_ALIASES[text]]
    if text.isdigit() and text.isascii():
        number = int(text) if len(text) <= 3 else 256
        if number > 255:
            raise ValueError(f"protocol number {text} is out of range: expected 0 to 255")
        return _PROTOCOL_NAMES.get(number, str(number))
    raise ValueError(f"{str(value)!r} is not an IP protocol: {_PROTOCOL_EXPECTED}")


def protocol_number(protocol: str) -> int | None:
    """The number of a canonical protocol name (L{parse_protocol}); C{None} for C{any}."""
    if protocol == ANY_PROTOCOL:
        return None
    return IP_PROTOCOLS[protocol] if protocol in IP_PROTOCOLS else int(protocol)


@dataclass(frozen=True)
class AddressRange:
    """An inclusive range of addresses of one IP version, written C{A-B}."""

    first: IPAddress
    last: IPAddress

    def __post_init__(self) -> None:
        if self.first.version != self.last.version:
            raise ValueError(f"address range {self.describe()!r} mixes IPv4 and IPv6")
        if int(self.first) > int(self.last):
            raise ValueError(
                f"address range {self.describe()!r} is reversed: write the lower address first"
            )

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, IPv4Address | IPv6Address):
            return False
        same_version = address.version == self.first.version
        return same_version and int(self.first) <= int(address) <= int(self.last)

    def describe(self) -> str:
        return f"{self.first}-{self.last}"


FilterAddress: TypeAlias = IPAddress | IPNetwork | AddressRange


def _parse_filter_address(text: str) -> FilterAddress:
    text = text.strip()
    if not text:
        raise ValueError("an address between commas is empty: expected an IP, RANGE or CIDR")
    if "/" in text:
        return _parse_network(text)
    if "-" in text:
        first, _, last = text.partition("-")
        return AddressRange(_parse_address(first.strip()), _parse_address(last.strip()))
    return _parse_address(text)


def _canonical_address(item: FilterAddress) -> FilterAddress:
    """A one-address network or range is that address."""
    if isinstance(item, IPv4Network | IPv6Network) and item.num_addresses == 1:
        return item.network_address
    if isinstance(item, AddressRange) and item.first == item.last:
        return item.first
    return item


def _address_key(item: FilterAddress) -> tuple[int, int, int, int]:
    """Sorts by version, first and last address, then address, network, range."""
    if isinstance(item, AddressRange):
        return item.first.version, int(item.first), int(item.last), 2
    if isinstance(item, IPv4Network | IPv6Network):
        return item.version, int(item.network_address), int(item.broadcast_address), 1
    return item.version, int(item), int(item), 0


def parse_filter_addresses(text: str, legacy: bool = False) -> tuple[FilterAddress, ...]:
    """The C{ip} of a filter rule: an address, a list C{a,b,c}, a range C{a-b} or a CIDR.

    IPv4 only, and a range stands alone (not in a list).  C{legacy}: a rule
    stored before those two rules (IPv6, ranges in lists) is read as it was.
    """
    addresses = tuple(_parse_filter_address(item) for item in text.split(","))
    if not legacy:
        for item in addresses:
            version = item.first.version if isinstance(item, AddressRange) else item.version
            if version != 4:
                shown = _describe_filter_address(item)
                raise ValueError(f"{shown!r} is IPv6: filters are IPv4 only")
        ranges = [item for item in addresses if isinstance(item, AddressRange)]
        if ranges and len(addresses) > 1:
            raise ValueError(
                f"the range {ranges[0].describe()!r} is in a list: a range stands alone"
                " (give it a filter of its own)"
            )
    return addresses


def _filter_address_contains(item: FilterAddress, address: IPAddress) -> bool:
    if isinstance(item, IPv4Address | IPv6Address):
        return item == address
    return address in item


def _describe_filter_address(item: FilterAddress) -> str:
    return item.describe() if isinstance(item, AddressRange) else str(item)


def parse_filter_ports(value: str | int | Sequence[str | int]) -> PortSet:
    """The C{ports} of a filter rule: a port, a list C{53,123} or a range C{8000-8100}."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a port: {_PORT_EXPECTED}")
    if isinstance(value, int):
        return PortSet.parse([value])
    if isinstance(value, str):
        return _parse_port_items(value)
    if not value:
        raise ValueError(_PORT_LIST_EXPECTED)
    return PortSet.parse([str(item) for item in value])


@dataclass(frozen=True)
class FilterRule:
    """One Network Tunnel filter rule: addresses, an IP protocol, and ports.

    Its text is C{IP[,IP|CIDR][/PROTOCOL[/PORTS]]} (or C{RANGE[/PROTOCOL[/PORTS]]}).
    C{protocol} is canonical (L{parse_protocol}: an IANA keyword, a number
    for a protocol with no keyword here, or C{any}); C{ports} C{None} means
    every port, and only the protocols of L{PORT_PROTOCOLS} may restrict
    ports.  The addresses are kept sorted and without repeats, a one-address
    network or range as the address; a port set holding every port is
    C{None}.  Equal rules therefore have equal text (L{describe}).
    """

    addresses: tuple[FilterAddress, ...]
    protocol: str = ANY_PROTOCOL
    ports: PortSet | None = None

    def __post_init__(self) -> None:
        if not self.addresses:
            raise ValueError("a filter rule needs at least one address")
        canonical = sorted({_canonical_address(item) for item in self.addresses}, key=_address_key)
        object.__setattr__(self, "addresses", tuple(canonical))
        object.__setattr__(self, "protocol", parse_protocol(self.protocol))
        if self.ports is not None and self.protocol not in PORT_PROTOCOLS:
            with_ports = f"{', '.join(PORT_PROTOCOLS[:-1])} or {PORT_PROTOCOLS[-1]}"
            if self.protocol == ANY_PROTOCOL:
                raise ValueError(f"ports need a protocol with ports: {with_ports}")
            raise ValueError(
                f"{self.protocol} has no ports: ports are only allowed with {with_ports}"
            )
        if self.ports is not None and not self.ports:
            raise ValueError("the port list of a filter rule must not be empty")
        if self.ports == PortSet.all():
            object.__setattr__(self, "ports", None)

    @classmethod
    def parse(cls, text: str, legacy: bool = False) -> FilterRule:
        """Parse a rule such as C{10.0.0.5,10.0.0.8/tcp/22,8000-8100}.

        C{legacy}: a stored rule, read as L{parse_filter_addresses} says.
        """
        try:
            return cls._parse(text, legacy)
        except ValueError as error:
            raise ValueError(f"invalid filter rule {text!r}: {error}") from None

    @classmethod
    def _parse(cls, text: str, legacy: bool) -> FilterRule:
        if not text.strip():
            raise ValueError(_RULE_EXPECTED)
        parts = text.strip().split("/")
        addresses_text = parts.pop(0)
        # After a single address, a part starting with a digit is its prefix
        # length (10.0.0.0/24/tcp, 10.0.0.0/24,10.1.0.0/16); after a CIDR or a
        # range it is a protocol number (10.0.0.0/24/47): a protocol number
        # after a single address needs its /32 (10.0.0.5/32/47).
        prefix = ""
        while parts and parts[0].lstrip()[:1].isdigit():
            last = addresses_text.rsplit(",", 1)[-1]
            if "/" in last or "-" in last:
                break
            prefix = parts.pop(0).strip()
            addresses_text += "/" + prefix
        if len(parts) > 2:
            raise ValueError(f"too many '/' parts: {_RULE_EXPECTED}")
        try:
            addresses = parse_filter_addresses(addresses_text, legacy)
        except ValueError as error:
            if prefix.isdigit() and int(prefix) > 32 and "is not a CIDR" in str(error):
                hint = "a protocol number after a single address needs its /32: 10.0.0.5/32/47"
                raise ValueError(f"{error} ({hint})") from None
            raise
        if parts and not parts[0].strip():
            raise ValueError(f"expected a protocol after '/': {_PROTOCOL_EXPECTED}")
        protocol = parse_protocol(parts[0]) if parts else ANY_PROTOCOL
        ports = _parse_port_items(parts[1]) if len(parts) == 2 else None
        return cls(addresses, protocol, ports)

    @property
    def protocol_number(self) -> int | None:
        """The IP protocol number; C{None} for C{any}."""
        return protocol_number(self.protocol)

    @property
    def ip(self) -> str:
        """The C{ip} of the YAML form: the addresses, comma-separated."""
        return ",".join(_describe_filter_address(item) for item in self.addresses)

    def describe(self) -> str:
        """The rule's canonical text (C{any} and all-ports are left out); it parses back equal."""
        text = self.ip
        if self.protocol != ANY_PROTOCOL:
            last = self.addresses[-1]
            if self.protocol.isdigit() and isinstance(last, IPv4Address | IPv6Address):
                text += f"/{last.max_prefixlen}"  # else the number reads as a prefix length
            text += f"/{self.protocol}"
        if self.ports is not None:
            text += f"/{self.ports.describe(',')}"
        return text

    def matches(self, address: str, protocol: str | int, port: int | None) -> bool:
        """Whether the rule lets through traffic to C{address} over C{protocol} at C{port}.

        @param protocol: an IP protocol name or number (L{parse_protocol}), not C{any}.
        @param port: the destination port, C{None} for a protocol without ports.
        @raise ValueError: if C{address} is not an IP address or C{protocol} is unknown.
        """
        number = protocol_number(parse_protocol(protocol))
        if number is None:
            raise ValueError(f"{protocol!r} is not one protocol: expected a name or a number")
        if self.protocol_number not in (None, number):
            return False
        if self.ports is not None and (port is None or port not in self.ports):
            return False
        target = _parse_checked_address(address)
        return any(_filter_address_contains(item, target) for item in self.addresses)


def parse_filter_rules(texts: Sequence[str]) -> tuple[FilterRule, ...]:
    """Parse a Network Tunnel item's filter rules; there must be 1 to 50."""
    if isinstance(texts, str):
        raise ValueError(f"expected a list of filter rules, not the single string {texts!r}")
    if not 1 <= len(texts) <= MAX_FILTER_RULES:
        raise ValueError(
            f"a network tunnel needs 1 to {MAX_FILTER_RULES} filter rules, not {len(texts)}"
        )
    return tuple(FilterRule.parse(text) for text in texts)
