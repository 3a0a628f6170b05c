"""The audit spool and the database thread: a locked database never stops the reactor.

The first tests drive L{AuditLog} with a fake writer (locked, full) on a
L{Clock}; the last ones use a real SQLite file locked by another connection
(C{BEGIN IMMEDIATE} held, as a C{sqlite3} shell would), a real
L{DatabaseThread} and a private reactor, and check that the reactor keeps
turning while the lock is held and that every event arrives afterwards.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock, LoopingCall
from twisted.python.failure import Failure

from jumpoint.audit import RETRY_MAX, AuditLog, AuditUnavailable, query
from jumpoint.db_thread import DatabaseQueueFull, DatabaseThread, InlineDatabase
from jumpoint.state import StateDatabase
from shared.errors import UsageError


class LockableWriter:
    """An inline writer that fails as SQLite does while another process holds the lock."""

    def __init__(self, database: StateDatabase, error: str = "database is locked") -> None:
        self.inline = InlineDatabase(database.connection)
        self.locked = False
        self.error = error
        self.attempts = 0

    def submit(self, job: Callable[[sqlite3.Connection], Any]) -> Deferred[Any]:
        self.attempts += 1
        if self.locked:
            return fail(sqlite3.OperationalError(self.error))
        return self.inline.submit(job)

    def stop(self) -> Deferred[None]:
        return self.inline.stop()


@pytest.fixture
def database(open_state: Callable[[], StateDatabase]) -> StateDatabase:
    """The state database, on each backend in turn (the spool's logic is the same)."""
    return open_state()


def outcome(deferred: Deferred[Any]) -> list[Any]:
    seen: list[Any] = []
    deferred.addBoth(seen.append)
    return seen


def test_events_recorded_while_the_database_is_locked_are_all_committed_later(
    database: StateDatabase, tmp_path: Path
) -> None:
    clock = Clock()
    writer = LockableWriter(database)
    audit = AuditLog(writer, tmp_path / "audit.jsonl", clock)
    writer.locked = True
    done = [outcome(audit.record("connection_opened", user="alice", stream=n)) for n in range(5)]
    decision = outcome(audit.record("session_opened", user="alice", durable=True))
    for _ in range(20):  # ten seconds of retries
        clock.advance(0.5)
    assert writer.attempts > 5  # retried, with a growing delay
    assert query(database) == [] and audit.spooled == 6
    assert decision == [] and all(d == [] for d in done)  # the decision still waits
    writer.locked = False
    clock.advance(RETRY_MAX)
    assert [e.detail.get("stream") for e in query(database)] == [0, 1, 2, 3, 4, None]
    assert decision == [None] and all(d == [None] for d in done)
    assert audit.spooled == 0
    assert len((tmp_path / "audit.jsonl").read_text().splitlines()) == 6


def test_a_decision_waits_for_a_lock_at_most_its_limit_then_is_refused(
    database: StateDatabase,
) -> None:
    clock = Clock()
    writer = LockableWriter(database)
    audit = AuditLog(writer, None, clock, durable_wait=5.0)
    writer.locked = True
    record = outcome(audit.record("connection_closed", user="alice"))
    decision = outcome(
        audit.record("session_opened", user="alice", durable=True, apply=_insert_item("x"))
    )
    clock.advance(4.0)
    assert decision == []
    clock.advance(2 * RETRY_MAX)
    assert isinstance(decision[0], Failure) and decision[0].check(AuditUnavailable)
    assert decision[0].value.code == "audit_unavailable"
    writer.locked = False
    clock.advance(RETRY_MAX)
    # the record of what happened is kept; the refused decision left nothing behind
    assert [e.event for e in query(database)] == ["connection_closed"] and record == [None]
    assert database.connection.execute("SELECT count(*) FROM items").fetchone() == (0,)


def test_a_full_spool_refuses_new_decisions_but_keeps_every_record(
    database: StateDatabase,
) -> None:
    clock = Clock()
    writer = LockableWriter(database, "disk I/O error")
    audit = AuditLog(writer, None, clock, spool_limit=3)
    writer.locked = True
    for n in range(3):
        audit.record("connection_closed", stream=n)
    assert not audit.accepting
    refused = outcome(audit.record("session_opened", user="alice", durable=True))
    assert isinstance(refused[0], Failure) and refused[0].check(AuditUnavailable)
    audit.record("connection_closed", stream=3)  # what already runs is still recorded
    assert audit.spooled == 4
    writer.locked = False
    clock.advance(RETRY_MAX)
    assert [e.detail["stream"] for e in query(database)] == [0, 1, 2, 3]
    assert audit.accepting


def test_a_state_change_and_its_event_commit_together_or_not_at_all(
    database: StateDatabase,
) -> None:
    audit = AuditLog(database, None, Clock())
    assert outcome(audit.record("item_created", durable=True, apply=_insert_item("a"))) == ["a"]
    taken = outcome(audit.record("item_created", durable=True, apply=_insert_item("a")))
    assert isinstance(taken[0], Failure) and taken[0].check(UsageError)
    assert [e.event for e in query(database)] == ["item_created"]
    rows = database.connection.execute("SELECT name FROM items").fetchall()
    assert rows == [("a",)]


def test_fields_taken_from_the_state_change_are_audited(
    database: StateDatabase, tmp_path: Path
) -> None:
    audit = AuditLog(database, tmp_path / "audit.jsonl", Clock())
    audit.record(
        "item_created", durable=True, apply=_insert_item("b"), fields_from=lambda v: {"row": v}
    )
    assert query(database)[0].detail == {"row": "b"}
    assert '"row":"b"' in (tmp_path / "audit.jsonl").read_text()


def _insert_item(name: str) -> Callable[[sqlite3.Connection], str]:
    def insert(db: sqlite3.Connection) -> str:
        if db.execute("SELECT 1 FROM items WHERE name = ?", (name,)).fetchone():
            raise UsageError(f"{name} exists")
        db.execute(
            "INSERT INTO items VALUES (?, 'tcp', 'g', '{}', 'me', 0, 0)",
            (name,),
        )
        return name

    return insert


# -- a real lock, a real thread, a real reactor ---------------------------------


def _private_reactor() -> Any:
    from twisted.internet.selectreactor import SelectReactor

    return SelectReactor()  # type: ignore[no-untyped-call]


def _hold_lock(path: Path, seconds: float, held: threading.Event) -> threading.Thread:
    """Another connection (another process, as far as SQLite knows) holds the write lock."""

    def hold() -> None:
        other = sqlite3.connect(str(path), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO audit (time, event, detail) VALUES (0, 'foreign', '{}')")
        held.set()
        time.sleep(seconds)  # the foreign shell sits there with its transaction open
        other.execute("COMMIT")
        other.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


def test_a_foreign_lock_never_stops_the_reactor_and_every_event_arrives(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateDatabase(path).close()  # the schema
    reactor = _private_reactor()
    writer = DatabaseThread(path, reactor.callFromThread, busy_timeout=0.2)
    audit = AuditLog(writer, tmp_path / "audit.jsonl", reactor)
    held = threading.Event()
    ticks: list[float] = []
    results: dict[str, Any] = {}
    lock_seconds = 2.0

    def tick() -> None:  # the data path: must keep turning while the lock is held
        ticks.append(time.monotonic())

    def scenario() -> None:
        ticker = LoopingCall(tick)
        ticker.clock = reactor
        ticker.start(0.01)
        locker = _hold_lock(path, lock_seconds, held)
        held.wait(5)
        results["lock_from"] = time.monotonic()
        for n in range(50):
            audit.record("connection_opened", user="alice", stream=n)
        decision = audit.record("session_opened", user="alice", durable=True)

        def committed(_: object) -> None:
            results["committed_at"] = time.monotonic()
            locker.join(5)
            reactor.callLater(0.3, reactor.stop)

        decision.addCallbacks(committed, lambda f: (results.update(error=f), reactor.stop()))

    reactor.callWhenRunning(scenario)
    reactor.callLater(20, reactor.stop)  # a deadline, should the test fail
    reactor.run(installSignalHandlers=False)
    writer.stop()
    writer.join(5)
    assert "error" not in results
    lock_from = results["lock_from"]
    # the decision waited for the lock (the reply waits), the reactor did not
    assert results["committed_at"] - lock_from >= lock_seconds - 0.5
    during = [t for t in ticks if lock_from <= t <= results["committed_at"]]
    gaps = [b - a for a, b in itertools.pairwise(during)]
    assert len(during) > 50 and max(gaps) < 0.15
    database = StateDatabase(path)
    events = [e.event for e in query(database)]
    database.close()
    assert events.count("connection_opened") == 50 and events.count("session_opened") == 1
    assert events[0] == "foreign"  # our events came after the foreign transaction
    assert len((tmp_path / "audit.jsonl").read_text().splitlines()) == 51


def test_the_database_thread_refuses_jobs_past_its_queue_limit(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateDatabase(path).close()
    delivered: list[Callable[[], None]] = []
    writer = DatabaseThread(path, lambda f, *a: delivered.append(lambda: f(*a)), queue_limit=2)
    gate = threading.Event()
    started = threading.Event()

    def slow(db: sqlite3.Connection) -> int:
        started.set()
        gate.wait(5)
        return 1

    first = outcome(writer.submit(slow))
    started.wait(5)
    queued = [outcome(writer.submit(lambda db: 2)) for _ in range(2)]
    refused = outcome(writer.submit(lambda db: 3))
    assert isinstance(refused[0], Failure) and refused[0].check(DatabaseQueueFull)
    gate.set()
    writer.stop()
    assert writer.join(5)
    for deliver in delivered:
        deliver()
    assert first == [1] and queued == [[2], [2]]
