"""The network service's requests and decisions, without I/O (docs/network-service.md).

`jump network-service` and L{console.network_client} speak JSON lines over a
Unix socket.  This module holds what both ends check and nothing that
touches the system, so the rules are tested without root:

* the fields of an C{open} request: the inner address (one IPv4 unicast
  address, given to the interface as a /32), the routes (IPv4 networks,
  never the default route, never overlapping loopback, link-local,
  multicast, "this network" or the reserved block), the MTU and the
  optional interface name (C{jpt} and up to 12 lower-case letters or
  digits);
* the parsing of a request line (bounded, every field checked, unknown
  fields refused) and the encoding of the replies;
* L{attached_clash}: a route that overlaps a network the machine is
  attached to (its interfaces' own link routes) is refused;
* L{admit}: whether a peer (its SO_PEERCRED uid, gid and supplementary
  groups) may use the service: root always, others when the service's group
  is among the process's groups.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from shared.errors import AccessDenied, InvalidRequest, JumpError

PROTOCOL_VERSION = 1
"""The C{version} field of every request and of the service's greeting."""
DEFAULT_SOCKET = "/run/jumpoint/network.sock"
DEFAULT_GROUP = "jumpoint-network"
DEFAULT_MTU = 1400
MIN_MTU = 576
"""The least datagram every IPv4 host must accept (RFC 791)."""
MAX_MTU = 65535
MAX_ROUTES = 256
MAX_LINE = 32768
"""The longest request or reply line, newline excluded (256 routes fit in a third of it)."""
NAME_PATTERN = re.compile(r"jpt[a-z0-9]{1,12}")
"""An interface name a caller may ask for (at most 15 bytes: IFNAMSIZ less the NUL)."""
AUTO_NAME = "jpt%d"
"""The name handed to the kernel when the caller asks for none: it picks the next free jptN."""
GROUP_RULE = "network_service.group"
"""The rule named when a caller outside the service's group is refused."""

FORBIDDEN: tuple[tuple[IPv4Network, str], ...] = (
    (IPv4Network("0.0.0.0/8"), "'this network'"),
    (IPv4Network("127.0.0.0/8"), "loopback"),
    (IPv4Network("169.254.0.0/16"), "link-local"),
    (IPv4Network("224.0.0.0/4"), "multicast"),
    (IPv4Network("240.0.0.0/4"), "reserved and broadcast"),
)
"""Networks never given to or routed into a jumpoint interface, with what they are."""

_OPEN_FIELDS = frozenset({"op", "version", "address", "routes", "mtu", "name"})
_CLOSE_FIELDS = frozenset({"op", "version"})


@dataclass(frozen=True)
class OpenRequest:
    """Create a TUN interface with this address, MTU and routes, and hand it over."""

    address: IPv4Address
    routes: tuple[IPv4Network, ...]
    mtu: int = DEFAULT_MTU
    name: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "op": "open",
            "version": PROTOCOL_VERSION,
            "address": str(self.address),
            "routes": [str(route) for route in self.routes],
            "mtu": self.mtu,
        }
        if self.name is not None:
            out["name"] = self.name
        return out


@dataclass(frozen=True)
class CloseRequest:
    """Remove the interface and its routes, answer what was removed, then hang up."""

    def to_json(self) -> dict[str, Any]:
        return {"op": "close", "version": PROTOCOL_VERSION}


Request = OpenRequest | CloseRequest


def _forbidden(network: IPv4Network) -> str | None:
    for reserved, what in FORBIDDEN:
        if network.overlaps(reserved):
            return f"{reserved} ({what})"
    return None


def check_address(value: object) -> IPv4Address:
    """The inner address: one IPv4 unicast address outside the L{FORBIDDEN} networks."""
    if not isinstance(value, str) or len(value) > 15:
        raise InvalidRequest("address: an IPv4 address such as 198.19.0.2 is needed")
    try:
        address = IPv4Address(value)
    except ValueError:
        raise InvalidRequest(f"address: {value!r} is not an IPv4 address") from None
    clash = _forbidden(IPv4Network(address))
    if clash is not None:
        raise InvalidRequest(f"address: {address} is in {clash}, never an interface's address")
    return address


def check_route(value: object) -> IPv4Network:
    """One route: an IPv4 network (an address alone is a /32) that is safe to route."""
    if not isinstance(value, str) or len(value) > 18:
        raise InvalidRequest("routes: each route is an IPv4 network such as 198.18.1.0/24")
    try:
        network = IPv4Network(value, strict=True)
    except ValueError:
        try:
            loose = IPv4Network(value, strict=False)
        except ValueError:
            raise InvalidRequest(f"routes: {value!r} is not an IPv4 network") from None
        raise InvalidRequest(
            f"routes: {value!r} has host bits set (the network is {loose})"
        ) from None
    if network.prefixlen == 0:
        raise InvalidRequest("routes: the default route (0.0.0.0/0) is never routed here")
    clash = _forbidden(network)
    if clash is not None:
        raise InvalidRequest(f"routes: {network} overlaps {clash}, which is never routed here")
    return network


def check_routes(value: object) -> tuple[IPv4Network, ...]:
    """The routes: 1 to L{MAX_ROUTES} distinct networks, each L{check_route}."""
    if not isinstance(value, list | tuple) or not value:
        raise InvalidRequest("routes: a non-empty list of IPv4 networks is needed")
    if len(value) > MAX_ROUTES:
        raise InvalidRequest(f"routes: {len(value)} routes, at most {MAX_ROUTES}")
    routes = tuple(check_route(item) for item in value)
    seen: set[IPv4Network] = set()
    for route in routes:
        if route in seen:
            raise InvalidRequest(f"routes: {route} is listed twice")
        seen.add(route)
    return routes


def check_mtu(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest("mtu: an integer is needed")
    if not MIN_MTU <= value <= MAX_MTU:
        raise InvalidRequest(f"mtu: {value} is out of range ({MIN_MTU} to {MAX_MTU})")
    return value


def check_name(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        shown = value if isinstance(value, str) and len(value) <= 40 else type(value).__name__
        raise InvalidRequest(
            f"name: {shown!r} is not an interface name this service gives"
            " ('jpt' and 1 to 12 lower-case letters or digits, such as jpt0)"
        )
    return value


def open_request(
    address: object, routes: object, mtu: object = DEFAULT_MTU, name: object = None
) -> OpenRequest:
    """An L{OpenRequest} with every field checked (L{InvalidRequest} names the bad one)."""
    return OpenRequest(
        check_address(address), check_routes(routes), check_mtu(mtu), check_name(name)
    )


def parse_request(line: bytes) -> Request:
    """One request line (without its newline); L{InvalidRequest} says what is wrong."""
    if len(line) > MAX_LINE:
        raise InvalidRequest(f"request longer than {MAX_LINE} bytes")
    try:
        data = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("a request is one JSON object per line") from None
    if not isinstance(data, dict):
        raise InvalidRequest("a request is one JSON object per line")
    if data.get("version") != PROTOCOL_VERSION:
        raise InvalidRequest(f"version: this service speaks version {PROTOCOL_VERSION}")
    op = data.get("op")
    fields = {"open": _OPEN_FIELDS, "close": _CLOSE_FIELDS}.get(op) if isinstance(op, str) else None
    if fields is None:
        raise InvalidRequest("op: 'open' or 'close' is needed")
    unknown = sorted(str(key)[:40] for key in data if key not in fields)
    if unknown:
        raise InvalidRequest(f"unknown field(s) in {op!r}: {', '.join(unknown)}")
    if op == "close":
        return CloseRequest()
    if "address" not in data or "routes" not in data:
        raise InvalidRequest("open: 'address' and 'routes' are needed")
    return open_request(
        data["address"], data["routes"], data.get("mtu", DEFAULT_MTU), data.get("name")
    )


def encode(message: Mapping[str, Any]) -> bytes:
    """One message as a line (compact JSON and a newline), at most L{MAX_LINE} bytes before it."""
    line = json.dumps(message, separators=(",", ":"), sort_keys=True).encode("utf-8")
    if len(line) > MAX_LINE:
        raise ValueError(f"message longer than {MAX_LINE} bytes")
    return line + b"\n"


def error_message(error: JumpError) -> dict[str, Any]:
    return {"event": "error", **error.to_json()}


@dataclass(frozen=True)
class Peer:
    """Who is at the other end of a connection (SO_PEERCRED and its groups)."""

    pid: int
    uid: int
    gid: int
    groups: frozenset[int]
    """The supplementary groups of the process (SO_PEERGROUPS or /proc/PID/status)."""
    user: str | None = None
    """The uid's name in the user database, if it has one (for messages only)."""

    def describe(self) -> str:
        who = f"uid {self.uid}" + (f" ({self.user})" if self.user else "")
        return f"{who} gid {self.gid} pid {self.pid}"

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "uid": self.uid, "gid": self.gid, "user": self.user}


@dataclass(frozen=True)
class Group:
    """The service's group: callers in it (and root) may create interfaces."""

    name: str
    gid: int
    members: frozenset[str] = frozenset()
    """Member names in the group database (for the hint only: the decision reads the process)."""


@dataclass(frozen=True)
class Admission:
    allowed: bool
    reason: str
    error: AccessDenied | None = None


def admit(peer: Peer, group: Group, primary_gid: int | None = None) -> Admission:
    """Whether C{peer} may use the service.

    Root always may.  Others may when C{group} is the process's group or one
    of its supplementary groups: the credentials the process runs with, as
    for a file with group permissions, not the group database (a user added
    to the group logs in again to get it).  C{primary_gid} is the uid's group
    in the user database, read for the hint only.
    """
    if peer.uid == 0:
        return Admission(True, "root")
    if peer.gid == group.gid or group.gid in peer.groups:
        return Admission(True, f"member of group {group.name}")
    listed = (peer.user is not None and peer.user in group.members) or primary_gid == group.gid
    name = peer.user or f"#{peer.uid}"
    if listed:
        hint = (
            f"{name} is in group {group.name} in the group database, but this login is not:"
            f" log in again (or run `newgrp {group.name}`) and retry"
        )
    else:
        hint = (
            f"ask an administrator to run `usermod -aG {group.name} {name}`,"
            " then log in again; or run jump as root"
        )
    error = AccessDenied(
        f"the network service refused {peer.describe()}: not a member of group {group.name}",
        hint,
        GROUP_RULE,
    )
    return Admission(False, f"not in group {group.name}", error)


def parse_status_groups(status: str) -> frozenset[int]:
    """The C{Groups:} line of a /proc/PID/status text (empty if there is none)."""
    for line in status.splitlines():
        if line.startswith("Groups:"):
            return frozenset(int(part) for part in line.split()[1:] if part.isdigit())
    return frozenset()


def attached_clash(
    routes: Iterable[IPv4Network], attached: Iterable[tuple[IPv4Network, str]]
) -> str | None:
    """Why one of C{routes} may not be added: it overlaps a network this machine is on.

    C{attached} are the networks of the machine's own interfaces (the
    kernel's link routes, with the interface's name).  Routing part of one of
    them into a TUN would cut this machine off from its neighbours there, the
    path to the Jumpoint perhaps included, so it is refused rather than done.
    """
    known = list(attached)
    for route in routes:
        for network, interface in known:
            if route.overlaps(network):
                return (
                    f"routes: {route} overlaps {network}, the network of {interface} on this"
                    " machine (routing it into the tunnel would cut this machine off from it)"
                )
    return None


def parse_routes_reply(value: object) -> tuple[IPv4Network, ...]:
    """Routes read back from a reply (checked like a request's, the empty list allowed)."""
    if not isinstance(value, list) or len(value) > MAX_ROUTES:
        raise InvalidRequest(f"routes: a list of at most {MAX_ROUTES} networks is needed")
    return tuple(check_route(item) for item in value)


def check_interface(value: object) -> str:
    """An interface name in a reply: what L{NAME_PATTERN} allows."""
    name = check_name(value)
    if name is None:
        raise InvalidRequest("interface: a name is needed")
    return name
