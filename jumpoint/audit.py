"""The audit log: every decision and event, in the state database and as JSON lines.

L{AuditLog.record} takes one event (C{session_opened}, C{connection_closed},
C{session_denied} with its C{rule}, ...) with the user, session and item it
concerns and any further fields, and returns a Deferred that fires once the
event is committed.  Nothing here waits on the reactor thread: events go to a
bounded in-memory spool, and the spool is committed by the database thread
(L{jumpoint.db_thread}), in one transaction per batch, with the JSON-lines
file for log shippers written after each commit.

Two kinds of event:
  - a decision (C{durable=True}): committed at once, and the Jumpoint
    answers the console only when its Deferred fires.  A state change that
    goes with it (C{apply}: the session's row, the new item) is made in the
    same transaction, so there is never one without the other.  When the
    database cannot take it (a hard error such as a full disk, or another
    process holding the lock for longer than L{DURABLE_WAIT}), or the spool
    already holds L{SPOOL_LIMIT} events, the decision is refused: its
    Deferred fails with L{AuditUnavailable} (code C{audit_unavailable}) and
    nothing of it is written.
  - a record of what happened (C{connection_closed}, C{k8s_request}, ...):
    collected for L{FLUSH_DELAY} and committed with the others.  It is never
    dropped: a failed commit leaves it in the spool, retried with a growing
    delay (at most L{RETRY_MAX}) until the database takes it.  The spool
    limit refuses new decisions (and so new sessions and connections) but
    never these, so what already runs is always recorded.

L{query} serves C{jumpoint audit}.
"""

from __future__ import annotations

import functools
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from jumpoint.db_thread import DatabaseQueueFull, DatabaseWriter, InlineDatabase, is_busy
from jumpoint.state import StateDatabase
from jumpoint.store.connection import Connection
from jumpoint.store.error_kinds import OTHER, classify, is_database_error
from shared.errors import InternalError, JumpError

log = Logger()

FLUSH_DELAY = 0.2
"""Seconds a non-durable event may wait before it is committed."""

BATCH_LIMIT = 2_000
"""Events committed in one transaction."""

# json.dumps with options builds a new encoder per call; each event is encoded twice
_LINE_JSON = json.JSONEncoder(separators=(",", ":"), default=str)
"""The JSON lines file's encoder (C{json.dumps(..., separators=(",", ":"), default=str)})."""
_DETAIL_JSON = json.JSONEncoder(default=str)
"""The database row's detail column (C{json.dumps(..., default=str)})."""

SPOOL_LIMIT = 100_000
"""Events waiting for the database past which new decisions are refused."""

DURABLE_WAIT = 30.0
"""Seconds a decision waits for a locked database before it is refused."""

RETRY_FIRST = 0.1
RETRY_MAX = 2.0
"""The delay before retrying a failed commit: doubled each time, up to this."""

REPORT_INTERVAL = 30.0
"""Seconds between two log lines about a spool that still cannot be written."""

Apply = Callable[[Connection], Any]
"""A state change committed in the same transaction as its event (may raise L{JumpError})."""


class AuditUnavailable(InternalError):
    """The audit log cannot take a decision now, so the decision is not carried out."""

    code = "audit_unavailable"


def _refusal(why: str) -> AuditUnavailable:
    return AuditUnavailable(
        f"the Jumpoint cannot write its audit log ({why}); the request was not carried out",
        hint="ask your administrator to check the Jumpoint's disk and state database",
    )


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit log."""

    id: int
    time: float
    event: str
    user: str | None
    session: str | None
    item: str | None
    rule: str | None
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "time": _iso(self.time),
            "event": self.event,
            "user": self.user,
            "session": self.session,
            "item": self.item,
        }
        if self.rule is not None:
            out["rule"] = self.rule
        out.update(self.detail)
        return out


@functools.lru_cache(maxsize=4)
def _iso_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def _iso(seconds: float) -> str:
    """UTC ISO 8601 with milliseconds (the formatted second is cached: many events share it)."""
    second = int(seconds // 1)
    return f"{_iso_second(second)}.{int((seconds - second) * 1000):03d}Z"


@dataclass(eq=False)
class _Event:
    """One spooled event, waiting for its commit."""

    row: tuple[float, str, str | None, str | None, str | None, str | None, str]
    line: str | None
    durable: bool
    apply: Apply | None
    fields_from: Callable[[Any], dict[str, Any]] | None
    deadline: float
    done: Deferred[Any] = field(default_factory=Deferred)

    def completed(self, value: Any) -> _Event:
        """The row and line with the fields L{fields_from} takes from C{apply}'s value."""
        if self.fields_from is None:
            return self
        extra = self.fields_from(value)
        detail = {**json.loads(self.row[6]), **extra}
        line = self.line
        if line is not None:
            line = json.dumps({**json.loads(line), **extra}, separators=(",", ":"), default=str)
            line += "\n"
        row = (*self.row[:6], json.dumps(detail, default=str))
        return _Event(row, line, self.durable, None, None, self.deadline, self.done)


COMMITTED = "committed"
REFUSED = "refused"
"""A decision whose C{apply} raised: nothing of it was written."""
KEPT = "kept"
"""A record whose C{apply} failed: the audit row was written, the state change not."""

Outcome = tuple[str, Any]

_INSERT = (
    "INSERT INTO audit (time, event, user_name, session, item, rule, detail)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _commit_one(db: Connection, event: _Event) -> tuple[Outcome, str | None]:
    """Write one event of the open transaction; returns its outcome and its JSON line."""
    if event.apply is None:
        db.execute(_INSERT, event.row)
        return (COMMITTED, None), event.line
    db.execute("SAVEPOINT event")
    try:
        value = event.apply(db)
        written = event.completed(value)
    except Exception as error:
        if not isinstance(error, JumpError) and not is_database_error(error):
            raise
        if not isinstance(error, JumpError) and classify(error) != OTHER:
            raise  # locked or unreachable: the whole batch waits or fails
        db.execute("ROLLBACK TO event")
        db.execute("RELEASE event")
        refusal = (
            error
            if isinstance(error, JumpError)
            else InternalError(f"the Jumpoint cannot write its state database: {error}")
        )
        if event.durable:
            return (REFUSED, refusal), None
        db.execute(_INSERT, event.row)  # what happened is recorded even so
        return (KEPT, refusal), event.line
    db.execute(_INSERT, written.row)
    db.execute("RELEASE event")
    return (COMMITTED, value), written.line


def _commit(
    db: Connection, batch: list[_Event], file: IO[str] | None
) -> tuple[list[Outcome], str | None]:
    """The database thread's job: one transaction for C{batch}, then the JSON lines.

    Returns each event's outcome and the file's error, if any.
    """
    outcomes: list[Outcome] = []
    lines: list[str] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for event in batch:
            outcome, line = _commit_one(db, event)
            outcomes.append(outcome)
            if line is not None:
                lines.append(line)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    file_error = None
    if file is not None:
        try:
            file.write("".join(lines))
            file.flush()
        except (OSError, ValueError) as error:  # ValueError: closed while stopping
            file_error = str(error)
    return outcomes, file_error


class AuditLog:
    """Writes audit events (see the module docstring).

    @param writer: who runs the commits: the daemon's L{DatabaseThread}; a
        L{StateDatabase} means inline on its connection (admin commands, tests).
    """

    def __init__(
        self,
        writer: DatabaseWriter | StateDatabase,
        jsonl_path: Path | None,
        clock: IReactorTime,
        flush_delay: float = FLUSH_DELAY,
        *,
        spool_limit: int = SPOOL_LIMIT,
        durable_wait: float = DURABLE_WAIT,
    ) -> None:
        if isinstance(writer, StateDatabase):
            writer = InlineDatabase(writer.connection)
        self.writer: DatabaseWriter = writer
        self.clock = clock
        self.flush_delay = flush_delay
        self.spool_limit = spool_limit
        self.durable_wait = durable_wait
        self._spool: deque[_Event] = deque()
        self._in_flight = 0
        self._call: IDelayedCall | None = None
        self._failures = 0
        self._failing_since: float | None = None
        self._last_report = 0.0
        self._file: IO[str] | None = None
        self._closing: Deferred[None] | None = None
        self._give_up: IDelayedCall | None = None
        self.jsonl_path = jsonl_path
        if jsonl_path is not None:
            jsonl_path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(jsonl_path, "a", encoding="utf-8")  # noqa: SIM115 - kept open

    @property
    def spooled(self) -> int:
        """Events not committed yet (in the spool or being committed)."""
        return len(self._spool)

    @property
    def accepting(self) -> bool:
        """Whether a new decision can be taken (the spool is below its limit)."""
        return len(self._spool) < self.spool_limit

    def record(
        self,
        event: str,
        *,
        user: str | None = None,
        session: str | None = None,
        item: str | None = None,
        rule: str | None = None,
        durable: bool = False,
        apply: Apply | None = None,
        fields_from: Callable[[Any], dict[str, Any]] | None = None,
        **detail: Any,
    ) -> Deferred[Any]:
        """Spool one event; the Deferred fires (with C{apply}'s value) once it is committed.

        C{apply} is a state change made in the same transaction (on the
        database thread), C{fields_from} adds fields taken from its value
        (a new row's id).  A decision (C{durable}) may fail with
        L{AuditUnavailable}, or with the L{JumpError} its C{apply} raised
        (then nothing of it is written).  A record of what happened is never
        refused and never fails: the caller may ignore its Deferred.
        """
        if durable and not self.accepting:
            log.error(
                "refused a {event} decision: the audit spool holds {count} events",
                event=event,
                count=len(self._spool),
            )
            return fail(_refusal(f"{len(self._spool)} events are waiting for the database"))
        now = self.clock.seconds()
        line = None
        if self._file is not None:
            fields: dict[str, Any] = {
                "time": _iso(now),
                "event": event,
                "user": user,
                "session": session,
                "item": item,
            }
            if rule is not None:
                fields["rule"] = rule
            fields.update(detail)
            line = _LINE_JSON.encode(fields) + "\n"
        spooled = _Event(
            row=(now, event, user, session, item, rule, _DETAIL_JSON.encode(detail)),
            line=line,
            durable=durable,
            apply=apply,
            fields_from=fields_from,
            deadline=now + self.durable_wait,
        )
        self._spool.append(spooled)
        if durable or len(self._spool) - self._in_flight >= BATCH_LIMIT:
            self.flush()
        elif self._call is None and not self._in_flight:
            self._call = self.clock.callLater(self.flush_delay, self.flush)
        return spooled.done

    def record_sync(self, event: str, **fields: Any) -> Any:
        """L{record} a decision and commit it now (admin commands: an inline writer only)."""
        assert isinstance(self.writer, InlineDatabase)
        outcome: list[Any] = []
        self.record(event, durable=True, **fields).addBoth(outcome.append)
        assert outcome, "an inline commit has finished"
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        return outcome[0]

    def flush(self) -> None:
        """Commit the spooled events now (one batch at a time)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._in_flight or not self._spool:
            return
        batch = [self._spool[i] for i in range(min(len(self._spool), BATCH_LIMIT))]
        self._in_flight = len(batch)
        file = self._file
        committing = self.writer.submit(lambda db: _commit(db, batch, file))
        committing.addCallbacks(
            self._committed, self._failed, callbackArgs=(batch,), errbackArgs=(batch,)
        )

    def _committed(self, result: tuple[list[Outcome], str | None], batch: list[_Event]) -> None:
        outcomes, file_error = result
        self._take(batch)
        if self._failures:
            log.info(
                "the audit log is written again after {seconds:.1f}s ({count} events waiting)",
                seconds=self.clock.seconds() - (self._failing_since or 0.0),
                count=len(self._spool),
            )
        self._failures = 0
        self._failing_since = None
        if file_error is not None:
            log.critical(
                "the audit file {path} could not be written: {error}",
                path=str(self.jsonl_path),
                error=file_error,
            )
        for event, (outcome, value) in zip(batch, outcomes, strict=True):
            if outcome == COMMITTED:
                event.done.callback(value)
            elif outcome == REFUSED:
                event.done.errback(Failure(value))
            else:
                log.error(
                    "the {event} event was audited, but its state change failed: {error}",
                    event=event.row[1],
                    error=value.message,
                )
                event.done.callback(None)
        self._next()

    def _failed(self, failure: Failure, batch: list[_Event]) -> None:
        error = failure.value
        assert error is not None
        waiting = isinstance(error, DatabaseQueueFull) or is_busy(error)
        self._in_flight = 0
        now = self.clock.seconds()
        refused = [e for e in batch if e.durable and (not waiting or now >= e.deadline)]
        for event in refused:
            if event in self._spool:
                self._spool.remove(event)
        if not isinstance(error, JumpError) and not is_database_error(error):
            log.failure("the audit commit failed", failure)
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = now
        if self._failures == 1 or refused or now - self._last_report >= REPORT_INTERVAL:
            self._last_report = now
            log.critical(
                "the audit log cannot be written ({error}): {count} events kept and retried,"
                " {refused} decisions refused",
                error=str(error),
                count=len(self._spool),
                refused=len(refused),
            )
        why = "the database is locked" if waiting else str(error)
        for event in refused:
            event.done.errback(Failure(_refusal(why)))
        if self._spool:
            delay = min(RETRY_MAX, RETRY_FIRST * 2 ** (self._failures - 1))
            self._call = self.clock.callLater(delay, self.flush)
        self._closed_if_done()

    def _take(self, batch: list[_Event]) -> None:
        self._in_flight = 0
        for event in batch:
            if self._spool and self._spool[0] is event:
                self._spool.popleft()

    def _next(self) -> None:
        if self._spool:
            urgent = self._closing is not None or any(e.durable for e in self._spool)
            if urgent or len(self._spool) >= BATCH_LIMIT:
                self.flush()
            elif self._call is None:
                self._call = self.clock.callLater(self.flush_delay, self.flush)
        self._closed_if_done()

    def close(self, wait: float = 10.0) -> Deferred[None]:
        """Commit what is spooled (waiting at most C{wait} seconds), then close the file.

        Events still not committed then are written to the log, one critical
        line each, so that not even a stopping Jumpoint drops one silently.
        """
        if self._closing is None:
            self._closing = Deferred()
            self._give_up = self.clock.callLater(wait, self._abandon)
            self.flush()
            self._closed_if_done()
        return self._closing

    def _abandon(self) -> None:
        for event in list(self._spool):
            log.critical(
                "audit event not written (the database did not take it): {event}",
                event=json.dumps(event.row, default=str),
            )
            if event.durable:
                event.done.errback(Failure(_refusal("the Jumpoint is stopping")))
        self._spool.clear()
        self._finish_close()

    def _closed_if_done(self) -> None:
        if self._closing is not None and not self._spool:
            self._finish_close()

    def _finish_close(self) -> None:
        closing = self._closing
        if closing is None or closing.called:
            return
        if self._give_up is not None and self._give_up.active():
            self._give_up.cancel()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._file is not None:
            self._file.close()
            self._file = None
        closing.callback(None)


def query(
    database: StateDatabase,
    *,
    since: float | None = None,
    user: str | None = None,
    item: str | None = None,
    session: str | None = None,
    event: str | None = None,
    limit: int = 10_000,
) -> list[AuditEntry]:
    """Audit rows matching every given filter, oldest first."""
    clauses: list[str] = []
    parameters: list[Any] = []
    for column, value in (
        ("user_name", user),
        ("item", item),
        ("session", session),
        ("event", event),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            parameters.append(value)
    if since is not None:
        clauses.append("time >= ?")
        parameters.append(since)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = database.connection.execute(
        "SELECT id, time, event, user_name, session, item, rule, detail FROM"
        f" (SELECT * FROM audit{where} ORDER BY id DESC LIMIT ?) AS recent ORDER BY id",
        (*parameters, limit),
    ).fetchall()
    return [
        AuditEntry(row[0], row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7]))
        for row in rows
    ]
