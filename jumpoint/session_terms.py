"""The terms a session was opened with: what it may do, and when it must close.

L{SessionRequest} is what the console asked for, L{jumpoint.access.decide}
turns it into the terms (and decides on it again at a reload,
L{jumpoint.session_recheck}); the session (L{jumpoint.session})
enforces them while it runs and its bridges read their C{login_timeout}.
They are plain data, kept apart from the access rules so that the data path
(the sessions and the kinds' bridges) does not import the rules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jumpoint.policy import Grant, JumpPolicy, SessionPolicy
from shared.addresses import PortSet
from shared.errors import UsageError
from shared.items import Item


@dataclass(frozen=True)
class SessionRequest:
    """What the console asks for (the C{open_session} control message)."""

    item: str
    ticket: str | None = None
    consent: bool = False
    local_address: str | None = None
    acl: tuple[str, ...] = ()
    auto_close: float | None = None
    idle_timeout: float | None = None
    """Seconds; 0 asks for no idle timeout."""

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> SessionRequest:
        return cls(
            item=str(message["item"]),
            ticket=message.get("ticket"),
            consent=bool(message.get("consent", False)),
            local_address=message.get("local_address"),
            acl=tuple(message.get("acl") or ()),
            auto_close=_seconds(message, "auto_close"),
            idle_timeout=_seconds(message, "idle_timeout"),
        )


def _seconds(message: Mapping[str, Any], key: str) -> float | None:
    """A duration of the request: JSON allows NaN and Infinity, which no rule can compare."""
    value = message.get(key)
    if value is None:
        return None
    if not math.isfinite(value):
        raise UsageError(f"{key} must be a finite number of seconds, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class Deadline:
    """A moment the session must close at, and the reason given then."""

    at: float
    code: str
    reason: str


@dataclass(frozen=True)
class SessionTerms:
    """Everything the session is allowed, as decided when it opened."""

    item: Item
    grant: Grant
    local_address: str
    local_ports: PortSet | None
    acl: tuple[str, ...]
    idle_timeout: float | None
    deadlines: tuple[Deadline, ...]
    max_connections: int
    recording: bool
    ticket: str | None
    approval_id: int | None
    jump_policy: JumpPolicy | None
    session_policy: SessionPolicy | None
    notes: tuple[str, ...] = field(default=())
    login_timeout: float | None = None
    """mssql, k8s: seconds a connection has to finish its login (L{resolve_login_timeout})."""
    udp_idle_timeout: float = 60.0
    """Seconds without a datagram either way that close a UDP flow."""
    max_udp_flows: int = 64
    """Most UDP flows the session carries at once (C{flow_open} beyond: C{max_udp_flows})."""

    def first_deadline(self) -> Deadline | None:
        return min(self.deadlines, key=lambda d: d.at) if self.deadlines else None

    def tunnels_json(self) -> list[dict[str, Any]]:
        out = []
        for tunnel in self.item.tunnels:
            entry: dict[str, Any] = {
                "local_address": self.local_address,
                "local_port": "auto" if tunnel.local_port is None else tunnel.local_port,
                "remote_host": self.item.host,
                "remote_port": tunnel.remote_port,
                "protocol": tunnel.protocol,
            }
            if self.local_ports is not None:
                entry["allowed_local_ports"] = self.local_ports.describe()
            out.append(entry)
        return out

    def to_json(self) -> dict[str, Any]:
        deadline = self.first_deadline()
        return {
            "tunnels": self.tunnels_json(),
            "acl": list(self.acl),
            "idle_timeout": self.idle_timeout,
            "closes_at": deadline.at if deadline else None,
            "closes_because": deadline.reason if deadline else None,
            "max_connections": self.max_connections,
            "login_timeout": self.login_timeout,
            "udp_idle_timeout": self.udp_idle_timeout,
            "max_udp_flows": self.max_udp_flows,
            "recording": self.recording,
            "jump_policy": self.jump_policy.name if self.jump_policy else None,
            "session_policy": self.session_policy.name if self.session_policy else None,
            "notes": list(self.notes),
        }
