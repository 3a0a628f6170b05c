"""The sweep of detached sessions whose grace ran out, and closing a session known by its row only.

L{sweep_expired_sessions} is the one periodic job that closes detached rows
past their grace (code C{link_lost}): the sessions a stopped Jumpoint left
resumable, or that another member detached.  It reads at most
L{SWEEP_BATCH} rows per run on the database thread, and skips the sessions
this Jumpoint holds in memory (their own timer closes them, with their
totals).  Each close is one conditional update committed with its
C{session_closed} event (L{close_detached_row}): a row resumed or closed in
the meantime is left alone and nothing is audited for it.  In a cluster
this is a leader-only job.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

from jumpoint.audit import AuditLog
from jumpoint.detached_rows import ExpiredRow, Totals, closing_detached, expired_rows
from jumpoint.detached_sessions import LINK_LOST
from shared.errors import SessionGone

log = Logger()

SWEEP_INTERVAL = 10.0
"""Seconds between two sweeps."""

SWEEP_BATCH = 500
"""Rows one sweep closes at most (the rest wait for the next one)."""


@dataclass(frozen=True)
class SessionFields:
    """Whose session, on which item: the columns of its audit events."""

    user: str
    session: str
    item: str


EXPIRED_REASON = "the console did not reconnect within the session's reconnect grace (link_lost)"


def close_detached_row(
    audit: AuditLog,
    fields: SessionFields,
    totals: Totals,
    code: str,
    reason: str,
    rule: str | None = None,
) -> Deferred[bool]:
    """Close a detached session by its row: C{True} once committed, C{False} if it no longer was."""
    committed = audit.record(
        "session_closed",
        user=fields.user,
        session=fields.session,
        item=fields.item,
        durable=True,
        rule=rule,
        apply=closing_detached(fields.session, audit.clock.seconds(), reason),
        code=code,
        reason=reason,
        connections=totals.connections,
        bytes_to_target=totals.bytes_to_target,
        bytes_from_target=totals.bytes_from_target,
    )

    def gone(failure: Failure) -> bool:
        failure.trap(SessionGone)
        return False

    return committed.addCallbacks(lambda _: True, gone)


def sweep_expired_sessions(audit: AuditLog, held: Collection[str]) -> Deferred[int]:
    """Close the detached rows past their grace, except C{held}; fires with how many closed."""
    now = audit.clock.seconds()
    reading = audit.writer.submit(expired_rows(now, SWEEP_BATCH + len(held)))

    def close(rows: list[ExpiredRow]) -> Deferred[list[bool]]:
        due = [row for row in rows if row.session_id not in held][:SWEEP_BATCH]
        closing = [
            close_detached_row(
                audit,
                SessionFields(row.user, row.session_id, row.item),
                row.totals,
                LINK_LOST,
                EXPIRED_REASON,
            )
            for row in due
        ]
        return gatherResults(closing)

    def failed(failure: Failure) -> int:
        log.warn("the sweep of detached sessions failed: {error}", error=failure.getErrorMessage())
        return 0

    counted = reading.addCallback(close).addCallback(lambda done: sum(1 for d in done if d))
    return counted.addErrback(failed)
