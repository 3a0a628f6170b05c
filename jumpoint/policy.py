"""User groups, their tunnel restrictions, and the union a user in several groups gets.

The model is RPort's (see docs/admin-guide.md, "Groups"): a group says which
jump groups its members may see, open and manage, whether they may open
tunnels at all (C{tunnels}), and optionally restricts those tunnels
(C{tunnels_restricted}: allowed local and remote ports, schemes, listener
ACLs, idle timeout and auto-close bounds, protocols, and two permissions).
Permissions only add up: a user in several groups gets the union, and for
every restriction the wider group wins (a group without that restriction
lifts it).  Jump and session policies live here too, as plain data; the
Jumpoint's L{jumpoint.access} takes the decisions.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from jumpoint.schedule import Schedule
from jumpoint.secret_ref import SecretRef
from shared.addresses import PortSet
from shared.items import Item

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
PROTOCOLS = ("tcp", "udp", "tcp-udp")


def _matches(patterns: Iterable[str], jump_group: str) -> bool:
    return any(fnmatchcase(jump_group, pattern) for pattern in patterns)


@dataclass(frozen=True)
class Restrictions:
    """One group's C{tunnels_restricted}; C{None} means "not restricted"."""

    local: PortSet | None = None
    remote: PortSet | None = None
    scheme: frozenset[str] | None = None
    acl: tuple[Network, ...] | None = None
    idle_timeout_min: float | None = None
    auto_close_min: float | None = None
    auto_close_max: float | None = None
    protocol: frozenset[str] | None = None
    skip_idle_timeout: bool = False
    terminate_foreign_tunnels: bool = False

    def allows_protocol(self, protocol: str) -> bool:
        if self.protocol is None:
            return True
        return protocol in self.protocol or "tcp-udp" in self.protocol


UNRESTRICTED = Restrictions(skip_idle_timeout=True)
"""What a group with C{tunnels: true} and no C{tunnels_restricted} grants."""


def _wider_set(values: list[frozenset[str] | None]) -> frozenset[str] | None:
    if any(value is None for value in values):
        return None
    return frozenset().union(*[v for v in values if v is not None])


def _wider_ports(values: list[PortSet | None]) -> PortSet | None:
    present = [v for v in values if v is not None]
    if len(present) < len(values):
        return None
    out = present[0]
    for other in present[1:]:
        out = out.union(other)
    return out


def _lowest(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return None if len(present) < len(values) else min(present)


def _highest(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return None if len(present) < len(values) else max(present)


def union(restrictions: list[Restrictions]) -> Restrictions:
    """The restrictions of a user in several groups: the wider one wins, field by field."""
    if not restrictions:
        return UNRESTRICTED
    acls = [r.acl for r in restrictions]
    acl: tuple[Network, ...] | None = None
    if all(a is not None for a in acls):
        acl = tuple(dict.fromkeys(n for a in acls if a is not None for n in a))
    return Restrictions(
        local=_wider_ports([r.local for r in restrictions]),
        remote=_wider_ports([r.remote for r in restrictions]),
        scheme=_wider_set([r.scheme for r in restrictions]),
        acl=acl,
        idle_timeout_min=_lowest([r.idle_timeout_min for r in restrictions]),
        auto_close_min=_lowest([r.auto_close_min for r in restrictions]),
        auto_close_max=_highest([r.auto_close_max for r in restrictions]),
        protocol=_wider_set([r.protocol for r in restrictions]),
        skip_idle_timeout=any(r.skip_idle_timeout for r in restrictions),
        terminate_foreign_tunnels=any(r.terminate_foreign_tunnels for r in restrictions),
    )


@dataclass(frozen=True)
class Group:
    """A user group of jumpoint.yaml (C{groups:}); patterns may use C{*} and C{?}."""

    name: str
    see: tuple[str, ...] = ("*",)
    open: tuple[str, ...] = ("*",)
    manage: tuple[str, ...] = ()
    tunnels: bool = True
    restrictions: Restrictions | None = None
    comments: str | None = None

    # kept for callers that only know one group
    @property
    def jump_groups(self) -> tuple[str, ...]:
        return self.open

    def may_open(self, item: Item) -> bool:
        return _matches(self.open, item.jump_group)


@dataclass(frozen=True)
class Grant:
    """What a user may do: the union over their groups (those defined in jumpoint.yaml)."""

    user: str
    groups: tuple[str, ...]
    see: tuple[str, ...] = ()
    open: tuple[str, ...] = ()
    manage: tuple[str, ...] = ()
    tunnels: bool = False
    restrictions: Restrictions = UNRESTRICTED
    tunnel_groups: tuple[str, ...] = ()
    missing_groups: tuple[str, ...] = ()

    @classmethod
    def of(cls, user: str, names: Iterable[str], groups: dict[str, Group]) -> Grant:
        names = tuple(names)
        defined = [groups[n] for n in names if n in groups]
        tunnel_groups = [g for g in defined if g.tunnels]
        return cls(
            user=user,
            groups=tuple(g.name for g in defined),
            see=tuple(dict.fromkeys(p for g in defined for p in (*g.see, *g.open, *g.manage))),
            open=tuple(dict.fromkeys(p for g in defined for p in g.open)),
            manage=tuple(dict.fromkeys(p for g in defined for p in g.manage)),
            tunnels=bool(tunnel_groups),
            restrictions=union([g.restrictions or UNRESTRICTED for g in tunnel_groups]),
            tunnel_groups=tuple(g.name for g in tunnel_groups),
            missing_groups=tuple(n for n in names if n not in groups),
        )

    def may_see(self, item: Item) -> bool:
        return _matches(self.see, item.jump_group)

    def may_open(self, item: Item) -> bool:
        return _matches(self.open, item.jump_group)

    def may_manage(self, jump_group: str) -> bool:
        return _matches(self.manage, jump_group)

    def rule_groups(self) -> str:
        """The groups named in a denial, e.g. C{groups ops, dev}."""
        names = self.tunnel_groups or self.groups
        if not names:
            return "groups (none defined)"
        return "group " + names[0] if len(names) == 1 else "groups " + ", ".join(names)


@dataclass(frozen=True)
class JumpPolicy:
    """When and how an item may be opened (C{jump_policies:} in jumpoint.yaml)."""

    name: str
    schedule: Schedule | None = None
    ticket_id_required: bool = False
    ticket_id_pattern: re.Pattern[str] | None = None
    webhook: str | None = None
    webhook_secret: SecretRef | None = None
    """Signs each webhook body (C{X-Jumpoint-Signature}); unsigned when C{None}."""
    notify_events: tuple[str, ...] = ("session_start", "session_end")
    approval_required: bool = False
    approver_group: str | None = None
    approval_max_duration: float = 8 * 3600
    approval_request_timeout: float = 24 * 3600


@dataclass(frozen=True)
class SessionPolicy:
    """What happens during a session (C{session_policies:} in jumpoint.yaml)."""

    name: str
    recording: bool = False
    idle_timeout: float | None = None
    auto_close: float | None = None
    max_connections: int | None = None
    login_timeout: float | None = None
    """Seconds a local connection of an mssql or k8s item has to finish its login."""
    udp_idle_timeout: float | None = None
    """Seconds without a datagram either way that close a UDP flow (C{None}: the default)."""
    max_udp_flows: int | None = None
    """Most UDP flows a session carries at once (C{None}: the default)."""


@dataclass(frozen=True)
class Policies:
    """Every jump and session policy of a configuration."""

    jump: dict[str, JumpPolicy] = field(default_factory=dict)
    session: dict[str, SessionPolicy] = field(default_factory=dict)
