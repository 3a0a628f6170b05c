"""A tunnel session on the Jumpoint: one user, one item, its terms, many connections.

The session counts its connections (current and total, capped by its terms),
its UDP flows (L{jumpoint.udp_flows}) and bytes, and enforces the rest of its
terms while it runs: the idle timeout (traffic in either direction resets it,
datagrams included, and a connection with data still waiting to move keeps
the session busy), and the deadlines decided when it
opened (auto-close, the end of a strict schedule window, the end of the
approval).  When one of them fires, the session's owner (the channel) is
asked to close it with the reason (L{Session.on_expired}).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from shared.items import Item
from shared.protocol.frames import ErrorCode
from shared.protocol.mux import Stream
from shared.schema import format_duration

if TYPE_CHECKING:
    from jumpoint.recording import SessionRecorder
    from jumpoint.session_terms import SessionRequest, SessionTerms

IDLE_CHECKS_PER_TIMEOUT = 6
MAX_IDLE_CHECK_INTERVAL = 30.0


class SessionConnection(Protocol):
    """What a session reads of one of its connections (a bridge of any kind)."""

    @property
    def stream(self) -> Stream:
        """The connection's stream: its byte counts, its queue, whether it holds back credit."""

    @property
    def connected(self) -> int:
        """Whether the connection to the target was made (Twisted's C{Protocol.connected})."""

    @property
    def long_running(self) -> bool:
        """Whether it may stay silent for good (a watch, an upgrade): no idle timeout then."""

    def abort(self, code: ErrorCode, reason: str) -> None:
        """End the connection now (the session closes)."""


class SessionLink(Protocol):
    """A session-wide data path of its kind beside its connections (a network tunnel's packets)."""

    def reply_fields(self) -> dict[str, Any]:
        """What the session's reply adds for the console to set up its end."""
        ...

    def totals(self) -> tuple[int, int]:
        """Bytes to and from the targets so far."""
        ...

    def stats(self) -> dict[str, int]:
        """Its figures for C{list_sessions} (flows, packets, drops)."""
        ...

    def close(self, reason: str) -> None:
        """The session ends: audit what is still open, release what it holds."""


class SessionFlow(Protocol):
    """What a session reads of one of its UDP flows (L{jumpoint.udp_flows.UdpFlow})."""

    @property
    def flow_id(self) -> int: ...

    @property
    def bytes_to_target(self) -> int: ...

    @property
    def bytes_from_target(self) -> int: ...

    def close(self, reason: str, *, tell_console: bool = True) -> None:
        """End the flow now (audited once)."""


def new_session_id() -> str:
    return secrets.token_hex(8)


@dataclass
class Session:
    """The Jumpoint's record of one open session."""

    session_id: str
    user: str
    item: Item
    max_connections: int
    opened_at: float
    terms: SessionTerms | None = None
    recorder: SessionRecorder | None = None
    active: set[SessionConnection] = field(default_factory=set)
    total_connections: int = 0
    bytes_to_target: int = 0
    bytes_from_target: int = 0
    closed: bool = False
    close_reason: str | None = None
    last_activity: float = 0.0
    flows: dict[int, SessionFlow] = field(default_factory=dict)
    """The open UDP flows, by flow id (at most C{terms.max_udp_flows})."""
    total_flows: int = 0
    on_expired: Callable[[Session, str, str], None] | None = None
    link: SessionLink | None = None
    request: SessionRequest | None = None
    """What the console asked for: a reload decides again on it (L{jumpoint.session_recheck})."""
    bound_ports: tuple[int, ...] = ()
    """The local ports the console reported it listens on (C{tunnels_bound})."""
    _timers: list[IDelayedCall] = field(default_factory=list)
    _last_total: int = -1

    def audit_fields(self) -> dict[str, Any]:
        """The user, session and item of an audit event about this session."""
        return {"user": self.user, "session": self.session_id, "item": self.item.name}

    def has_room(self) -> bool:
        return len(self.active) < self.max_connections

    def connection_started(self, bridge: SessionConnection) -> None:
        self.active.add(bridge)
        self.total_connections += 1

    def totals(self) -> tuple[int, int]:
        """Bytes to and from the targets so far, open connections and UDP flows included."""
        to_target = self.bytes_to_target + sum(_to_target(b) for b in self.active)
        from_target = self.bytes_from_target + sum(b.stream.bytes_sent for b in self.active)
        if self.link is not None:
            link_to, link_from = self.link.totals()
            to_target, from_target = to_target + link_to, from_target + link_from
        for flow in self.flows.values():
            to_target += flow.bytes_to_target
            from_target += flow.bytes_from_target
        return to_target, from_target

    def flow_started(self, flow: SessionFlow) -> None:
        self.flows[flow.flow_id] = flow
        self.total_flows += 1

    def flow_finished(self, flow: SessionFlow) -> None:
        """Count a UDP flow's end (its bytes join the session's totals)."""
        if self.flows.get(flow.flow_id) is not flow:
            return
        del self.flows[flow.flow_id]
        self.bytes_to_target += flow.bytes_to_target
        self.bytes_from_target += flow.bytes_from_target

    def connection_finished(self, bridge: SessionConnection) -> tuple[int, int] | None:
        """Count a connection's end; returns its (to target, from target) bytes."""
        if bridge not in self.active:
            return None
        self.active.discard(bridge)
        sent, received = _to_target(bridge), bridge.stream.bytes_sent
        self.bytes_to_target += sent
        self.bytes_from_target += received
        return sent, received

    # -- enforcing the terms ---------------------------------------------

    def start_timers(self, clock: IReactorTime) -> None:
        """Arm the idle check and the deadlines of the session's terms."""
        terms = self.terms
        if terms is None:
            return
        now = clock.seconds()
        self.last_activity = now
        self._last_total = sum(self.totals())  # the first check must not count as traffic
        for deadline in terms.deadlines:
            self._timers.append(
                clock.callLater(
                    max(0.0, deadline.at - now), self._expire, deadline.code, deadline.reason
                )
            )
        if terms.idle_timeout is not None:
            interval = min(terms.idle_timeout / IDLE_CHECKS_PER_TIMEOUT, MAX_IDLE_CHECK_INTERVAL)
            self._schedule_idle_check(clock, interval)

    def _schedule_idle_check(self, clock: IReactorTime, interval: float) -> None:
        self._timers.append(clock.callLater(interval, self._idle_check, clock, interval))

    def _busy(self) -> bool:
        """Bytes moved since the last check, or a connection with data still to move."""
        total = sum(self.totals())
        moved = total != self._last_total
        self._last_total = total
        waiting = any(
            b.stream.queued_bytes or b.stream.receive_paused for b in self.active if b.connected
        )
        # no idle timeout on upgraded or watch streams (k8s exec, port-forward, get -w, logs -f)
        long_running = any(b.long_running for b in self.active)
        return moved or waiting or long_running

    def _idle_check(self, clock: IReactorTime, interval: float) -> None:
        if self.closed or self.terms is None or self.terms.idle_timeout is None:
            return
        now = clock.seconds()
        if self._busy():
            self.last_activity = now
        idle_for = now - self.last_activity
        if idle_for >= self.terms.idle_timeout:
            self._expire(
                "idle_timeout",
                f"no traffic for {format_duration(self.terms.idle_timeout)} (idle timeout)",
            )
            return
        self._schedule_idle_check(clock, interval)

    def _expire(self, code: str, reason: str) -> None:
        if self.closed:
            return
        if self.on_expired is not None:
            self.on_expired(self, code, reason)

    def stop_timers(self) -> None:
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers.clear()

    def to_json(self, now: float) -> dict[str, Any]:
        to_target, from_target = self.totals()
        out: dict[str, Any] = {
            "session": self.session_id,
            "user": self.user,
            "item": self.item.name,
            "opened_at": self.opened_at,
            "age": max(0.0, now - self.opened_at),
            "connections": len(self.active),
            "total_connections": self.total_connections,
            "udp_flows": len(self.flows),
            "total_udp_flows": self.total_flows,
            "bytes_to_target": to_target,
            "bytes_from_target": from_target,
            "recording": self.recorder is not None,
        }
        if self.link is not None:
            out["link"] = self.link.stats()
        if self.terms is not None:
            deadline = self.terms.first_deadline()
            out["closes_at"] = deadline.at if deadline else None
            out["idle_timeout"] = self.terms.idle_timeout
            out["ticket"] = self.terms.ticket
        return out


def _to_target(bridge: SessionConnection) -> int:
    """Bytes delivered to the target (none if it never connected)."""
    return bridge.stream.bytes_received if bridge.connected else 0
