"""The sessions this Jumpoint holds detached: their channel was lost, they wait to be resumed.

When a channel is lost without the console ending its session on purpose (a
reset, a keepalive timeout, the Jumpoint restarting), L{DetachedSessions.detach}
keeps the session: what cannot survive a lost channel is released (its
connections are reset and counted, its UDP flows and its kind's link closed),
the detachment is audited (C{session_detached}) with its row, and a timer of
C{limits.reconnect_grace} starts.  A console that resumes in time takes the
session back (L{DetachedSessions.take}); otherwise it is closed with code
C{link_lost}.  At most L{MAX_DETACHED} are held; beyond, a lost session closes.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from jumpoint.detached_rows import Totals, detaching
from jumpoint.session import Session
from jumpoint.session_lifecycle import SessionContext, session_ended
from shared.protocol.frames import ErrorCode
from shared.schema import format_duration

log = Logger()

MAX_DETACHED = 10_000
"""Detached sessions held at once (each holds only its record: no sockets, no buffers)."""

LINK_LOST = "link_lost"
"""The close code of a detached session that was not resumed within its grace."""


@dataclass
class _Held:
    session: Session
    detached_at: float
    timer: IDelayedCall


class DetachedSessions:
    """The detached sessions of this Jumpoint, by session id (see the module docstring)."""

    def __init__(self, context: SessionContext) -> None:
        self.context = context
        self._held: dict[str, _Held] = {}

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._held

    def __len__(self) -> int:
        return len(self._held)

    def ids(self) -> set[str]:
        return set(self._held)

    def detach(self, session: Session, reason: str, code: str) -> None:
        """Keep C{session} resumable: release what cannot survive, audit it, start its grace."""
        context = self.context
        grace = context.config.limits.reconnect_grace
        reset = release_channel_state(session, reason)
        if grace <= 0 or len(self._held) >= MAX_DETACHED:
            why = f"{reason}; the session cannot be kept for a reconnect"
            session.closed = True
            session.close_reason = why
            session_ended(context, session, why, LINK_LOST)
            return
        now = context.clock.seconds()
        to_target, from_target = session.totals()
        totals = Totals(session.total_connections, to_target, from_target)
        context.log_audit.record(
            "session_detached",
            **session.audit_fields(),
            apply=detaching(session.session_id, now, reason, grace, totals),
            code=code,
            reason=reason,
            connections_reset=reset,
            reconnect_grace=grace,
        )
        log.info(
            "session {session} of user {user} detached: {reason}; resumable for {grace}",
            session=session.session_id,
            user=session.user,
            reason=reason,
            grace=format_duration(grace),
        )
        timer = context.clock.callLater(grace, self._expired, session.session_id, grace)
        self._held[session.session_id] = _Held(session, now, timer)

    def take(self, session_id: str) -> Session | None:
        """The detached session C{session_id}, now the caller's (its grace timer stopped)."""
        held = self._held.pop(session_id, None)
        if held is None:
            return None
        if held.timer.active():
            held.timer.cancel()
        return held.session

    def peek(self, session_id: str) -> Session | None:
        """The detached session C{session_id}, left where it is."""
        held = self._held.get(session_id)
        return held.session if held is not None else None

    def close(self, session_id: str, reason: str, code: str) -> None:
        """End a detached session now (C{jump close} of another user's session)."""
        session = self.take(session_id)
        if session is None or session.closed:
            return
        session.closed = True
        session.close_reason = reason
        session_ended(self.context, session, reason, code)

    def give_back(self, session: Session, detached_at: float) -> None:
        """A resume that failed (not refused): hold it again for the rest of its grace."""
        grace = self.context.config.limits.reconnect_grace
        left = max(0.0, detached_at + grace - self.context.clock.seconds())
        timer = self.context.clock.callLater(left, self._expired, session.session_id, grace)
        self._held[session.session_id] = _Held(session, detached_at, timer)

    def detached_at(self, session_id: str) -> float | None:
        held = self._held.get(session_id)
        return held.detached_at if held is not None else None

    def _expired(self, session_id: str, grace: float) -> None:
        why = f"the console did not reconnect within {format_duration(grace)} (link_lost)"
        self.close(session_id, why, LINK_LOST)

    def stop(self) -> None:
        """The Jumpoint stops: the rows stay detached (resumable after the restart)."""
        for held in self._held.values():
            if held.timer.active():
                held.timer.cancel()
            if held.session.recorder is not None:
                held.session.recorder.close()
                held.session.recorder = None
        self._held.clear()


def release_channel_state(session: Session, reason: str) -> int:
    """End what a lost channel takes with it; returns the connections reset.

    The connections (they cannot survive), the UDP flows and the kind's link
    (its bytes join the session's totals); the session's timers stop until a
    resume starts them again with the terms decided then.
    """
    session.stop_timers()
    session.on_expired = None
    reset = len(session.active)
    for bridge in list(session.active):
        bridge.abort(ErrorCode.CANCEL, f"the channel was lost: {reason}")
    for flow in list(session.flows.values()):
        flow.close(f"the channel was lost: {reason}", tell_console=False)
    link = session.link
    if link is not None:
        to_target, from_target = link.totals()
        link.close(f"the channel was lost: {reason}")
        session.link = None
        session.bytes_to_target += to_target
        session.bytes_from_target += from_target
    return reset
