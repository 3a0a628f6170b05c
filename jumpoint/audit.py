"""The audit log: every decision and event, in the state database and as JSON lines.

L{AuditLog.record} takes one event (C{session_opened}, C{connection_closed},
C{session_denied} with its C{rule}, ...) with the user, session and item it
concerns and any further fields, gives it its identity (C{event_id}, a
UUID), and returns a Deferred that fires once the event is committed.
Nothing here waits on the reactor thread: events go to a bounded in-memory
spool, and the spool is committed by the database thread
(L{jumpoint.db_thread}), in one transaction per batch
(L{jumpoint.audit_commit}: an event already committed is never added again),
with the JSON-lines file for log shippers written after each commit.

Two kinds of event:
  - a decision (C{durable=True}): committed at once, and the Jumpoint
    answers the console only when its Deferred fires.  A state change that
    goes with it (C{apply}: the session's row, the new item) is made in the
    same transaction, so there is never one without the other.  While
    another process holds the lock, a decision waits up to L{DURABLE_WAIT},
    then is refused with L{AuditUnavailable} (code C{audit_unavailable}), as
    it is while the memory spool holds L{SPOOL_LIMIT} events or the spool
    file is full.  When the database is unavailable (an error that is not a
    lock: connection lost, disk full; or a lock held past
    L{UNAVAILABLE_AFTER}), decisions are refused at once with
    L{StateUnavailable} (code C{state_unavailable}) until a commit or a
    probe succeeds again (fail closed).  A refused decision writes nothing.
  - a record of what happened (C{connection_closed}, C{k8s_request}, ...):
    collected for L{FLUSH_DELAY} and committed with the others.  It is never
    dropped: while commits fail (unavailable, or a lock held past
    L{SPOOL_AFTER}) records go to the spool file (L{jumpoint.audit_spooler},
    local disk, fsync'd, bounded), which is replayed into the database once
    it takes writes again, and at start before serving; without a spool
    file, or while it is full, they wait in memory and are retried with a
    growing delay (at most L{RETRY_MAX}).  The limits refuse new decisions
    (and so new sessions and connections) but never these, so what already
    runs is always recorded.

L{AuditLog.counters} says what waits where and what was refused; the same
figures are in the log lines about failures and recovery.  L{query} serves
C{jumpoint audit}.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from jumpoint.audit_commit import COMMITTED, PRESENT, REFUSED, Apply, Outcome, PendingEvent, commit
from jumpoint.audit_spooler import Spooler, replay_at_start
from jumpoint.db_thread import DatabaseQueueFull, DatabaseWriter, InlineDatabase, Job
from jumpoint.state import StateDatabase
from jumpoint.store.error_kinds import BUSY, is_database_error
from jumpoint.store.error_kinds import classify as classify_error
from jumpoint.worker_thread import WorkerQueueFull
from shared.errors import InternalError, JumpError, StateUnavailable

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

SPOOL_AFTER = 2.0
"""Seconds of failing commits (a lock) after which records go to the spool file."""

UNAVAILABLE_AFTER = 5.0
"""Seconds of failing commits (a lock) after which new decisions are refused at once."""


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
    event_id: str | None
    """The event's identity (a UUID; none for events recorded before it existed)."""
    time: float
    event: str
    user: str | None
    session: str | None
    item: str | None
    rule: str | None
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id}
        if self.event_id is not None:
            out["event_id"] = self.event_id
        out |= {
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


def _state_unavailable() -> StateUnavailable:
    return StateUnavailable(
        "the Jumpoint cannot reach its state database; new sessions are refused until it is back",
        hint="sessions already open continue; try again later, or ask your administrator to"
        " check the Jumpoint's state database",
    )


class AuditLog:
    """Writes audit events (see the module docstring).

    @param writer: who runs the commits: the daemon's L{DatabaseThread}; a
        L{StateDatabase} means inline on its connection (admin commands, tests).
    @param spooler: the spool file for records the database cannot take
        (none: they wait in memory only, as in the admin commands).
    @param classify: what a commit's error means: C{"busy"} (a lock: worth
        waiting for) or anything else (the database is unavailable: fail
        closed); the writer's own C{classify} when it has one (the database
        thread, for either backend), else L{jumpoint.store.error_kinds.classify}.
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
        spooler: Spooler | None = None,
        classify: Callable[[BaseException], str] | None = None,
        spool_after: float = SPOOL_AFTER,
        unavailable_after: float = UNAVAILABLE_AFTER,
    ) -> None:
        if isinstance(writer, StateDatabase):
            writer = InlineDatabase(writer.connection)
        self.writer: DatabaseWriter = writer
        self.clock = clock
        self.flush_delay = flush_delay
        self.spool_limit = spool_limit
        self.durable_wait = durable_wait
        self.spooler = spooler
        self._classify: Callable[[BaseException], str] = (
            classify or getattr(writer, "classify", None) or classify_error
        )
        self.spool_after = spool_after
        self.unavailable_after = unavailable_after
        self._spool: deque[PendingEvent] = deque()
        self._in_flight = 0
        self._committing = False
        self._call: IDelayedCall | None = None
        self._store_call: IDelayedCall | None = None
        self._storing: Deferred[Any] | None = None
        self._failures = 0
        self._failing_since: float | None = None
        self._unavailable = False
        self._file_failed = False
        self._last_report = 0.0
        self._last_state = "ok"
        self.on_state_change: Callable[[str, str], None] | None = None
        """Told the new L{state} and the counters' text when the state changes (the
        daemon's systemd C{STATUS=} line)."""
        self.refused_decisions = 0
        """Decisions refused because the audit log could not take them."""
        self._file: IO[str] | None = None
        self._closing: Deferred[None] | None = None
        self._give_up: IDelayedCall | None = None
        self.jsonl_path = jsonl_path
        if jsonl_path is not None:
            jsonl_path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(jsonl_path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
        if spooler is not None and spooler.file.events:  # left by a stopped Jumpoint
            self._call = clock.callLater(RETRY_FIRST, self.flush)

    @property
    def spooled(self) -> int:
        """Events not committed yet, in memory (in the spool or being committed)."""
        return len(self._spool)

    @property
    def accepting(self) -> bool:
        """Whether a new decision could be spooled (memory and the spool file have room)."""
        full = self.spooler is not None and self.spooler.full
        return len(self._spool) < self.spool_limit and not full

    @property
    def available(self) -> bool:
        """Whether the state database takes writes, as far as the last commit showed."""
        return not self._unavailable

    @property
    def state(self) -> str:
        """C{ok}, C{failing} (commits fail; retried) or C{unavailable} (decisions refused)."""
        if self._unavailable:
            return "unavailable"
        return "failing" if self._failures else "ok"

    def counters(self) -> dict[str, int | str]:
        """What the audit log holds and has done (for logs and status)."""
        out: dict[str, int | str] = {
            "state": self.state,
            "in_memory": len(self._spool),
            "refused_decisions": self.refused_decisions,
        }
        if self.spooler is not None:
            out.update(
                in_file=self.spooler.waiting,
                file_bytes=self.spooler.file.bytes,
                **dataclasses.asdict(self.spooler.counters),
            )
        return out

    def _counters_text(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.counters().items())

    def _refusal_now(self) -> JumpError | None:
        """Why a new decision is refused at once, if it is."""
        if self._unavailable:
            return _state_unavailable()
        if len(self._spool) >= self.spool_limit:
            return _refusal(f"{len(self._spool)} events are waiting for the database")
        if self.spooler is not None and self.spooler.full:
            return _refusal("its spool file is full")
        return None

    def refuse_if_unavailable(self, action: str, user: str | None, item: str | None) -> None:
        """Raise L{StateUnavailable} when the database is unavailable, before a request
        that needs a decision reads anything (fail fast); the refusal is recorded
        (C{request_refused}: a record, so it waits in the spool file) and counted."""
        if not self._unavailable:
            return
        self.refused_decisions += 1
        refusal = _state_unavailable()
        log.warn(
            "refused a {action} request of {user}: the state database is unavailable ({counters})",
            action=action,
            user=user,
            counters=self._counters_text(),
        )
        if self.accepting:  # else the log line above is all (a flood must not grow memory)
            self.record(
                "request_refused",
                user=user,
                item=item,
                action=action,
                code=refusal.code,
                reason=refusal.message,
            )
        raise refusal

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
        L{AuditUnavailable} or L{StateUnavailable}, or with the L{JumpError}
        its C{apply} raised (then nothing of it is written).  A record of
        what happened is never refused and never fails (it fires once it is
        committed or kept in the spool file): the caller may ignore it.
        """
        if durable:
            refusal = self._refusal_now()
            if refusal is not None:
                self.refused_decisions += 1
                log.error(
                    "refused a {event} decision: {reason} ({counters})",
                    event=event,
                    reason=refusal.message,
                    counters=self._counters_text(),
                )
                return fail(refusal)
        now = self.clock.seconds()
        event_id = str(uuid.uuid4())
        line = None
        if self._file is not None:
            fields: dict[str, Any] = {
                "event_id": event_id,
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
        spooled = PendingEvent(
            event_id=event_id,
            row=(now, event, user, session, item, rule, _DETAIL_JSON.encode(detail)),
            line=line,
            durable=durable,
            apply=apply,
            fields_from=fields_from,
            deadline=now + self.durable_wait,
        )
        self._spool.append(spooled)
        if not durable and self._spooling():
            if self._store_call is None:
                self._store_call = self.clock.callLater(self.flush_delay, self._store)
        elif durable or len(self._spool) - self._in_flight >= BATCH_LIMIT:
            self.flush()
        elif self._call is None and not self._committing:
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

    def replay_spool_now(self, run: Callable[[Job[Any]], Any]) -> None:
        """Before serving: replay what a stopped Jumpoint left in the spool file.

        C{run} runs one database job synchronously (the start-up connection).
        When the database cannot take it yet, the file stays, and is
        replayed once commits succeed.
        """
        spooler = self.spooler
        if spooler is None or spooler.file.events == 0:
            return
        jsonl = self._file

        def commit_now(events: list[PendingEvent]) -> list[Any]:
            outcomes: list[Any] = run(lambda db: commit(db, events, jsonl))[0]
            return outcomes

        waiting = spooler.file.events
        try:
            committed, present = replay_at_start(
                spooler.file, spooler.writes, commit_now, BATCH_LIMIT
            )
        except Exception as error:
            log.warn(
                "the audit spool file {path} holds {count} events; the database does not take"
                " them yet ({error}): they are replayed once it does",
                path=str(spooler.file.path),
                count=spooler.file.events,
                error=str(error),
            )
            return
        spooler.counters.replayed += committed
        spooler.counters.already_committed += present
        log.info(
            "replayed the audit spool file {path} left by a stopped Jumpoint: {count} events"
            " ({committed} committed now, {present} were in the database already)",
            path=str(spooler.file.path),
            count=waiting,
            committed=committed,
            present=present,
        )

    def flush(self) -> None:
        """Commit now: the spooled events, or a batch of the spool file (one at a time)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._committing:
            return
        spooler = self.spooler
        from_file = spooler is not None and spooler.file.events > 0
        from_file = from_file and not any(e.durable for e in self._spool)
        skipped = self._file_failed and from_file
        if skipped:  # a broken file must hold up neither the others nor the probe
            from_file, self._file_failed = False, False
        if from_file:
            assert spooler is not None
            self._committing = True
            spooler.next_batch().addCallbacks(self._replay, self._replay_unreadable)
        elif self._spool:
            self._commit_memory()
        elif self._failures:
            self._committing = True  # a probe: does the database take writes again?
            self.writer.submit(lambda db: commit(db, [], None)).addCallbacks(
                self._probed, self._failed, errbackArgs=([],)
            )
        if skipped and not self._committing and self._call is None:
            self._call = self.clock.callLater(RETRY_MAX, self.flush)  # the file again, later

    def _commit_memory(self) -> None:
        batch = [self._spool[i] for i in range(min(len(self._spool), BATCH_LIMIT))]
        self._in_flight = len(batch)
        self._committing = True
        file = self._file
        committing = self.writer.submit(lambda db: commit(db, batch, file))
        committing.addCallbacks(
            self._committed, self._failed, callbackArgs=(batch,), errbackArgs=(batch,)
        )

    def _replay(self, events: list[PendingEvent]) -> None:
        if not events:
            self._committing = False
            self._next()
            return
        file = self._file
        self.writer.submit(lambda db: commit(db, events, file)).addCallbacks(
            self._replayed, self._failed, errbackArgs=(events,)
        )

    def _replay_unreadable(self, failure: Failure) -> None:
        self._committing = False
        self._file_failed = True
        log.critical(
            "the audit spool file cannot be read or cut: {error} (retried)",
            error=failure.getErrorMessage(),
        )
        if self._call is None and not (self._closing is not None and self._closing.called):
            self._call = self.clock.callLater(RETRY_MAX, self.flush)

    def _replayed(self, result: tuple[list[Outcome], str | None]) -> None:
        outcomes, file_error = result
        self._committing = False
        self._working_again()
        self._report_file_error(file_error)
        present = sum(1 for outcome, _ in outcomes if outcome == PRESENT)
        spooler = self.spooler
        assert spooler is not None
        spooler.replayed(present).addCallbacks(self._replay_step_done, self._replay_unreadable)

    def _replay_step_done(self, _: object) -> None:
        spooler = self.spooler
        assert spooler is not None
        if spooler.file.events == 0:
            log.info(
                "the audit spool file is replayed ({counters})", counters=self._counters_text()
            )
        self._next()

    def _probed(self, _: object) -> None:
        self._committing = False
        self._working_again()
        self._next()

    def _committed(
        self, result: tuple[list[Outcome], str | None], batch: list[PendingEvent]
    ) -> None:
        outcomes, file_error = result
        self._take(batch)
        self._working_again()
        if self.spooler is not None and self.spooler.file.events == 0:
            self.spooler.full = False  # the records go to the database, the file is empty
        self._report_file_error(file_error)
        for event, (outcome, value) in zip(batch, outcomes, strict=True):
            if outcome == COMMITTED:
                event.done.callback(value)
            elif outcome == REFUSED:
                event.done.errback(Failure(value))
            elif outcome == PRESENT:
                if event.durable:  # its answer was lost: the caller cannot know its value
                    event.done.errback(Failure(_refusal("its commit's answer was lost")))
                else:
                    event.done.callback(None)
            else:
                log.error(
                    "the {event} event was audited, but its state change failed: {error}",
                    event=event.row[1],
                    error=value.message,
                )
                event.done.callback(None)
        self._next()

    def _working_again(self) -> None:
        if self._failures:
            log.info(
                "the audit log is written again after {seconds:.1f}s ({counters})",
                seconds=self.clock.seconds() - (self._failing_since or 0.0),
                counters=self._counters_text(),
            )
        self._failures = 0
        self._failing_since = None
        self._unavailable = False
        self._state_changed()

    def _state_changed(self) -> None:
        state = self.state
        if state != self._last_state:
            self._last_state = state
            if self.on_state_change is not None:
                self.on_state_change(state, self._counters_text())

    def _report_file_error(self, file_error: str | None) -> None:
        if file_error is not None:
            log.critical(
                "the audit file {path} could not be written: {error}",
                path=str(self.jsonl_path),
                error=file_error,
            )

    def _spooling(self) -> bool:
        """Whether records go to the spool file now (the database has failed long enough)."""
        if self.spooler is None or self._failing_since is None:
            return False
        failing_for = self.clock.seconds() - self._failing_since
        return self._unavailable or failing_for >= self.spool_after

    def _failed(self, failure: Failure, batch: list[PendingEvent]) -> None:
        error = failure.value
        assert error is not None
        self._committing = False
        busy = (
            isinstance(error, DatabaseQueueFull | WorkerQueueFull) or self._classify(error) == BUSY
        )
        now = self.clock.seconds()
        for event in batch:
            event.tried = True
        self._in_flight = 0
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = now
        newly = not self._unavailable
        if not busy or now - self._failing_since >= self.unavailable_after:
            self._unavailable = True
        newly = newly and self._unavailable
        refused = [
            e for e in self._spool if e.durable and (not busy or (e in batch and now >= e.deadline))
        ]
        for event in refused:
            self._spool.remove(event)
        self.refused_decisions += len(refused)
        if not isinstance(error, JumpError) and not is_database_error(error):
            log.failure("the audit commit failed", failure)
        if self._failures == 1 or refused or newly or now - self._last_report >= REPORT_INTERVAL:
            self._last_report = now
            log.critical(
                "the audit log cannot be written ({error}): events are kept and retried,"
                " {refused} decisions refused now{unavailable} ({counters})",
                error=str(error),
                refused=len(refused),
                unavailable="; new decisions are refused until it is back"
                if self._unavailable
                else "",
                counters=self._counters_text(),
            )
        for event in refused:
            why = "the database is locked" if busy else str(error)
            event.done.errback(Failure(_refusal(why) if busy else _state_unavailable()))
        if self._spooling():
            self._store()
        self._state_changed()
        self._retry_later()
        self._closed_if_done()

    def _retry_later(self) -> None:
        if self._closing is not None and self._closing.called:
            return  # closed: what is left waits in the spool file for the next start
        if self._call is None:
            delay = min(RETRY_MAX, RETRY_FIRST * 2 ** max(0, self._failures - 1))
            self._call = self.clock.callLater(delay, self.flush)

    def _store(self) -> None:
        """Move the records in memory to the spool file (one append at a time)."""
        if self._store_call is not None and self._store_call.active():
            self._store_call.cancel()
        self._store_call = None
        spooler = self.spooler
        if spooler is None or spooler.storing or spooler.full:
            return
        held = self._in_flight
        movable = [e for i, e in enumerate(self._spool) if i >= held and not e.durable]
        if not movable:
            return
        kept = [e for i, e in enumerate(self._spool) if i < held or e.durable]
        self._spool = deque(kept)
        storing = spooler.store(movable, self._returned)
        self._storing = storing
        storing.addCallback(self._stored, movable)

    def _stored(self, stored: int, events: list[PendingEvent]) -> None:
        self._storing = None
        for event in events[:stored]:
            if not event.done.called:
                event.done.callback(None)  # kept in the spool file: durable now
        if stored < len(events):  # the rest is back in memory; tried again later
            self._closed_if_done()
            return
        if self._spooling() and any(not e.durable for e in self._spool):
            self._store()
        self._closed_if_done()

    def _returned(self, events: list[PendingEvent]) -> None:
        """An append failed: its records wait in memory again, in front (they are older)."""
        self._spool.extendleft(reversed(events))

    def _take(self, batch: list[PendingEvent]) -> None:
        self._in_flight = 0
        self._committing = False
        for event in batch:
            if self._spool and self._spool[0] is event:
                self._spool.popleft()

    def _next(self) -> None:
        spooler = self.spooler
        if spooler is not None and spooler.file.events:
            self.flush()
        elif self._spool:
            urgent = self._closing is not None or any(e.durable for e in self._spool)
            if urgent or len(self._spool) >= BATCH_LIMIT:
                self.flush()
            elif self._call is None:
                self._call = self.clock.callLater(self.flush_delay, self.flush)
        self._closed_if_done()

    def close(self, wait: float = 10.0) -> Deferred[None]:
        """Commit what is spooled (waiting at most C{wait} seconds), then close the file.

        Records still not committed then go to the spool file (replayed at
        the next start); without one (or when it cannot take them), each is
        written to the log, one critical line each, so that not even a
        stopping Jumpoint drops one silently.
        """
        if self._closing is None:
            self._closing = Deferred()
            self._give_up = self.clock.callLater(wait, self._abandon)
            self.flush()
            self._closed_if_done()
        return self._closing

    def _abandon(self) -> None:
        for event in [e for e in self._spool if e.durable]:
            self._spool.remove(event)
            event.done.errback(Failure(_refusal("the Jumpoint is stopping")))
        records = list(self._spool)
        self._spool.clear()
        spooler = self.spooler
        if spooler is None or spooler.full or not records:
            self._lost(records)
            self._finish_close()
            return
        before = self._storing if self._storing is not None else succeed(None)

        def store_them(_: object) -> Deferred[int]:
            return spooler.store(records, self._lost)

        before.addBoth(store_them).addBoth(lambda _: self._finish_close())

    def _lost(self, events: list[PendingEvent]) -> None:
        for event in events:
            log.critical(
                "audit event not written (the database did not take it): {event}",
                event=json.dumps([event.event_id, *event.row], default=str),
            )

    def _closed_if_done(self) -> None:
        storing = self.spooler is not None and self.spooler.storing
        if self._closing is not None and not self._spool and not storing:
            self._finish_close()

    def _finish_close(self) -> None:
        closing = self._closing
        if closing is None or closing.called:
            return
        for call in (self._give_up, self._call, self._store_call):
            if call is not None and call.active():
                call.cancel()
        self._call = self._store_call = None
        if self._file is not None:
            self._file.close()
            self._file = None
        log.info("the audit log is closed ({counters})", counters=self._counters_text())
        if self.spooler is None:
            closing.callback(None)
            return
        self.spooler.worker.stop().addBoth(lambda _: closing.callback(None))


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
        "SELECT id, event_id, time, event, user_name, session, item, rule, detail FROM"
        f" (SELECT * FROM audit{where} ORDER BY id DESC LIMIT ?) AS recent ORDER BY id",
        (*parameters, limit),
    ).fetchall()
    return [
        AuditEntry(
            id=row[0],
            event_id=row[1],
            time=row[2],
            event=row[3],
            user=row[4],
            session=row[5],
            item=row[6],
            rule=row[7],
            detail=json.loads(row[8]),
        )
        for row in rows
    ]
