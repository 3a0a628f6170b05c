"""The records of a session's start and end: its row, its audit events, the log, the webhook.

L{record_opened} commits the session's row with its C{session_opened} event
(a decision: durable, before the session is set up); L{session_ended}
records its end (spooled and retried until committed, with the row's
totals), logs it and tells the jump policy's webhook; L{notify} sends
C{session_start} and C{session_end} to the webhooks that asked for them.
The SQL is L{jumpoint.session_store}'s, the bodies L{jumpoint.webhooks}'.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from jumpoint import session_store, webhooks
from jumpoint.audit import AuditLog
from jumpoint.config import JumpointConfig
from jumpoint.notify import Notifier
from jumpoint.recording import SessionRecorder
from jumpoint.session import Session
from jumpoint.session_terms import SessionTerms

log = Logger()

RecorderFactory = Callable[[str, int], SessionRecorder]
"""Makes a session's recorder: its id and the pcap link type of its kind."""
"""Makes the recorder of a recorded session (by session id)."""


class SessionContext(Protocol):
    """What recording a session's start and end use of the daemon."""

    @property
    def config(self) -> JumpointConfig: ...

    @property
    def clock(self) -> IReactorTime: ...

    @property
    def log_audit(self) -> AuditLog: ...

    @property
    def notifier(self) -> Notifier | None: ...


def record_opened(
    audit: AuditLog,
    session: Session,
    terms: SessionTerms,
    details: dict[str, Any],
    recording: str | None,
    token_hash: str | None = None,
) -> Deferred[None]:
    """Commit the session's row and its C{session_opened} event together."""
    row = session_store.OpenedRow(
        session_id=session.session_id,
        user=session.user,
        item=session.item.name,
        opened_at=session.opened_at,
        ticket=terms.ticket,
        approval_id=terms.approval_id,
        recording=recording,
        token_hash=token_hash,
    )
    return audit.record(
        "session_opened",
        **session.audit_fields(),
        durable=True,
        apply=session_store.opening(row),
        ticket=terms.ticket,
        approval=terms.approval_id,
        recording=recording,
        idle_timeout=terms.idle_timeout,
        closes_at=details["closes_at"],
        tunnels=details["tunnels"],
    )


def session_ended(
    context: SessionContext, session: Session, reason: str, code: str, rule: str | None = None
) -> None:
    """Record the end of a session: database row, audit (with the C{rule} that ended it, if
    one did), log, notification."""
    if session.link is not None:
        session.link.close(reason)  # its last rows (open flows, denials) before the session's
    to_target, from_target = session.totals()
    now = context.clock.seconds()
    if session.recorder is not None:
        session.recorder.close()
    row = session_store.ClosedRow(
        session_id=session.session_id,
        closed_at=now,
        reason=reason,
        connections=session.total_connections,
        bytes_to_target=to_target,
        bytes_from_target=from_target,
    )
    # not a decision: spooled and retried until committed, with the session's row
    context.log_audit.record(
        "session_closed",
        **session.audit_fields(),
        rule=rule,
        apply=session_store.closing(row),
        code=code,
        reason=reason,
        connections=session.total_connections,
        bytes_to_target=to_target,
        bytes_from_target=from_target,
    )
    log.info(
        "session {session} of user {user} on item {item} closed: {reason};"
        " {connections} connections, {to_target} bytes to target,"
        " {from_target} bytes from target",
        session=session.session_id,
        user=session.user,
        item=session.item.name,
        reason=reason,
        connections=session.total_connections,
        to_target=to_target,
        from_target=from_target,
    )
    notify(context, session, "session_end", reason)


def notify(context: SessionContext, session: Session, event: str, reason: str | None) -> None:
    """Tell the session's jump policy's webhook of C{event}, if it asked for it."""
    terms = session.terms
    policy = terms.jump_policy if terms is not None else None
    if policy is None or policy.webhook is None or context.notifier is None:
        return
    if event not in policy.notify_events:
        return
    body = webhooks.session_event(
        context.config.name, session, policy, event, reason, context.clock.seconds()
    )
    context.notifier.notify(policy.webhook, body, policy.webhook_secret)
