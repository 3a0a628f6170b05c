"""The audit log through a database outage: nothing lost, nothing twice, decisions fail closed.

Synchronous: an L{OutageWriter} (a real SQLite file behind a writer that
fails on demand), the spool file on an inline worker, a
L{MemoryReactorClock}.  A "crash" is an audit log dropped without closing
it (or one whose spool file raises between two steps); the Jumpoint started
afterwards is a new L{AuditLog} on the same files, which replays the spool
file before serving (L{AuditLog.replay_spool_now}).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from jumpoint.audit import RETRY_MAX, SPOOL_AFTER, UNAVAILABLE_AFTER, AuditUnavailable
from jumpoint.audit_spool_file import SpoolFile
from jumpoint.session_store import ClosedRow, closing
from jumpoint.state import StateDatabase
from shared.errors import ExitCode, StateUnavailable
from tests.unit.audit_outage import (
    BUSY,
    LOST_REPLY,
    OK,
    UNAVAILABLE,
    OutageWriter,
    committed_streams,
    new_audit,
    run_for,
)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[StateDatabase]:
    db = StateDatabase(tmp_path / "state.db")
    yield db
    db.close()


def outcome(deferred: Deferred[Any]) -> list[Any]:
    seen: list[Any] = []
    deferred.addBoth(seen.append)
    return seen


def spool_lines(directory: Path) -> int:
    total = 0
    for name in ("audit-spool.jsonl", "audit-spool.jsonl.replaying"):
        path = directory / name
        if path.exists():
            total += len(path.read_bytes().splitlines())
    return total


def test_records_survive_an_outage_in_the_spool_file_and_are_committed_once_after_it(
    database: StateDatabase, tmp_path: Path
) -> None:
    clock = MemoryReactorClock()
    writer = OutageWriter(database)
    audit = new_audit(writer, tmp_path, clock)
    writer.mode = UNAVAILABLE
    for n in range(300):
        audit.record("connection_closed", user="alice", stream=n)
        if n % 50 == 0:
            run_for(clock, 0.5)
    run_for(clock, 1.0)
    assert audit.spooled == 0 and spool_lines(tmp_path) == 300  # all of them on disk
    mode = stat.S_IMODE(os.stat(tmp_path / "audit-spool.jsonl").st_mode)
    assert mode == 0o600
    counters = audit.counters()
    assert counters["state"] == "unavailable" and counters["in_file"] == 300
    assert counters["to_file"] == 300 and committed_streams(database) == []
    writer.mode = OK
    run_for(clock, 3.0)
    assert committed_streams(database) == list(range(300))
    assert spool_lines(tmp_path) == 0 and not (tmp_path / "audit-spool.jsonl.replaying").exists()
    assert audit.counters()["replayed"] == 300 and audit.counters()["state"] == "ok"
    jsonl = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert len(jsonl) == 300 and len({json.loads(line)["event_id"] for line in jsonl}) == 300


def test_the_spool_file_outlives_a_crash_and_the_next_start_replays_it(
    database: StateDatabase, tmp_path: Path
) -> None:
    clock = MemoryReactorClock()
    writer = OutageWriter(database)
    crashed = new_audit(writer, tmp_path, clock)
    writer.mode = UNAVAILABLE
    row = ClosedRow("s1", 5.0, "closed by the user", 2, 10, 20)
    database.connection.execute(
        "INSERT INTO sessions (id, user_name, item, opened_at) VALUES ('s1', 'alice', 'web', 1)"
    )
    for n in range(40):
        crashed.record("connection_closed", stream=n)
    crashed.record("session_closed", session="s1", apply=closing(row), code="closed_by_user")
    run_for(clock, 1.0)
    assert spool_lines(tmp_path) == 41
    del crashed  # killed: never closed

    writer.mode = OK
    started = new_audit(writer, tmp_path, MemoryReactorClock())
    assert started.counters()["in_file"] == 41
    started.replay_spool_now(lambda job: job(database.connection))
    assert committed_streams(database) == list(range(40))
    closed = database.connection.execute("SELECT closed_at, connections FROM sessions").fetchall()
    assert closed == [(5.0, 2)]  # the state change waited in the file with its event
    assert spool_lines(tmp_path) == 0 and started.counters()["replayed"] == 41


def test_a_retry_after_a_lost_commit_reply_adds_nothing(
    database: StateDatabase, tmp_path: Path
) -> None:
    clock = MemoryReactorClock()
    writer = OutageWriter(database)
    audit = new_audit(writer, tmp_path, clock)
    writer.mode = LOST_REPLY  # the database commits, the answer is lost
    for n in range(10):
        audit.record("connection_closed", stream=n)
    run_for(clock, 0.5)
    assert committed_streams(database) == list(range(10))  # already in, unbeknown to us
    writer.mode = UNAVAILABLE
    audit.record("connection_closed", stream=10)
    run_for(clock, 1.0)
    writer.mode = LOST_REPLY  # and a replay of the spool file loses its answer too
    run_for(clock, 0.5)
    writer.mode = OK
    run_for(clock, 3.0)
    assert committed_streams(database) == list(range(11))  # each exactly once
    assert audit.counters()["already_committed"] >= 10 and spool_lines(tmp_path) == 0


def test_the_spool_file_stays_within_its_limit_and_keeps_the_rest_in_memory(
    database: StateDatabase, tmp_path: Path
) -> None:
    clock = MemoryReactorClock()
    writer = OutageWriter(database)
    audit = new_audit(writer, tmp_path, clock, limit_bytes=8_000)
    writer.mode = UNAVAILABLE
    for n in range(200):
        audit.record("connection_closed", stream=n, padding="x" * 40)
        run_for(clock, 0.2)
    size = sum(p.stat().st_size for p in tmp_path.glob("audit-spool.jsonl*"))
    assert 0 < size <= 8_000
    counters = audit.counters()
    assert counters["failed_appends"] >= 1 and not audit.accepting
    assert counters["in_file"] + counters["in_memory"] == 200  # none dropped, all counted
    writer.mode = OK
    run_for(clock, 1.0)  # the database is back; the file full still refuses decisions
    run_for(clock, 10.0)
    assert committed_streams(database) == list(range(200))
    assert audit.accepting and spool_lines(tmp_path) == 0


def test_a_full_spool_file_refuses_new_decisions(database: StateDatabase, tmp_path: Path) -> None:
    clock = MemoryReactorClock()
    writer = OutageWriter(database)
    audit = new_audit(writer, tmp_path, clock, limit_bytes=2_000, unavailable_after=60.0)
    writer.mode = BUSY
    for n in range(40):
        audit.record("connection_closed", stream=n)
        run_for(clock, 0.2)
    assert audit.spooler is not None and audit.spooler.full
    writer.mode = OK  # a lock is over, but the file has no room until it is replayed
    refused = outcome(audit.record("session_opened", user="alice", durable=True))
    assert isinstance(refused[0], Failure) and refused[0].check(AuditUnavailable)
    assert "spool file is full" in refused[0].value.message
    run_for(clock, 3.0)
    assert committed_streams(database) == list(range(40))
    assert outcome(audit.record("session_opened", user="alice", durable=True)) == [None]


def test_decisions_fail_closed_at_once_while_the_database_is_unavailable(
    database: StateDatabase, tmp_path: Path
) -> None:
    clock = MemoryReactorClock()
    writer = OutageWriter(database)
    audit = new_audit(writer, tmp_path, clock)
    writer.mode = UNAVAILABLE
    waiting = outcome(audit.record("session_opened", user="alice", durable=True))
    assert isinstance(waiting[0], Failure) and waiting[0].check(StateUnavailable)
    attempts = writer.attempts
    started = clock.seconds()
    refused = outcome(audit.record("session_opened", user="bob", durable=True))
    assert clock.seconds() == started and writer.attempts == attempts  # at once, no attempt
    error = refused[0].value
    assert isinstance(error, StateUnavailable) and error.code == "state_unavailable"
    assert error.exit_code == ExitCode.STATE_UNAVAILABLE
    assert "cannot reach its state database" in error.message
    assert audit.counters()["refused_decisions"] == 2
    audit.record("connection_closed", stream=1)  # an open session's records are taken
    run_for(clock, 5.0)  # probes keep asking the database
    assert isinstance(outcome(audit.record("item_created", durable=True))[0], Failure)
    writer.mode = OK
    run_for(clock, 2.5)  # one probe (or replay) succeeds
    assert audit.available
    assert outcome(audit.record("session_opened", user="carol", durable=True)) == [None]
    opened = database.connection.execute(
        "SELECT user_name FROM audit WHERE event = 'session_opened'"
    ).fetchall()
    assert opened == [("carol",)] and committed_streams(database) == [1]


def test_a_lock_spools_records_after_a_while_and_then_refuses_new_decisions(
    database: StateDatabase, tmp_path: Path
) -> None:
    clock = MemoryReactorClock()
    writer = OutageWriter(database)
    audit = new_audit(writer, tmp_path, clock)
    writer.mode = BUSY
    decision = outcome(audit.record("session_opened", user="alice", durable=True))
    audit.record("connection_closed", stream=0)
    run_for(clock, SPOOL_AFTER / 2)
    assert spool_lines(tmp_path) == 0 and decision == []  # a short lock: both wait
    run_for(clock, SPOOL_AFTER / 2 + RETRY_MAX)
    assert spool_lines(tmp_path) == 1 and decision == []  # the record is on disk now
    run_for(clock, UNAVAILABLE_AFTER)
    assert not audit.available
    refused = outcome(audit.record("session_opened", user="bob", durable=True))
    assert refused[0].check(StateUnavailable)
    assert decision == []  # the decision taken before still waits, up to DURABLE_WAIT
    writer.mode = OK
    run_for(clock, 3.0)
    assert decision == [None] and committed_streams(database) == [0]


def test_the_writer_classifies_its_errors(database: StateDatabase, tmp_path: Path) -> None:
    """The writer says which errors are a lock (its C{classify}, as the database thread's)."""

    class SaysBusy(OutageWriter):
        @staticmethod
        def classify(error: BaseException) -> str:
            return "busy"

    clock = MemoryReactorClock()
    writer = SaysBusy(database)
    audit = new_audit(writer, tmp_path, clock)
    writer.mode = UNAVAILABLE  # SQLite's "unable to open", but this writer says: busy
    pending = outcome(audit.record("session_opened", user="alice", durable=True))
    run_for(clock, 1.0)
    assert pending == [] and audit.available  # a lock: the decision waits
    injected = new_audit(OutageWriter(database), tmp_path / "b", clock, classify=lambda e: "busy")
    injected.writer.mode = UNAVAILABLE  # type: ignore[attr-defined]
    waiting = outcome(injected.record("session_opened", user="bob", durable=True))
    run_for(clock, 1.0)
    assert waiting == [] and injected.available
    writer.mode = OK
    injected.writer.mode = OK  # type: ignore[attr-defined]
    run_for(clock, 2.5)
    assert pending == [None] and waiting == [None]


def test_a_torn_last_line_is_cut_and_a_damaged_one_skipped(
    database: StateDatabase, tmp_path: Path
) -> None:
    clock = MemoryReactorClock()
    writer = OutageWriter(database)
    crashed = new_audit(writer, tmp_path, clock)
    writer.mode = UNAVAILABLE
    for n in range(3):
        crashed.record("connection_closed", stream=n)
    run_for(clock, 1.0)
    with open(tmp_path / "audit-spool.jsonl", "ab") as file:
        file.write(b"not json\n")
        file.write(b'{"v":1,"event_id":"half a li')  # the append a crash cut short
    writer.mode = OK
    started = new_audit(writer, tmp_path, MemoryReactorClock())
    assert not (tmp_path / "audit-spool.jsonl").read_bytes().endswith(b"li")
    started.replay_spool_now(lambda job: job(database.connection))
    assert committed_streams(database) == [0, 1, 2] and spool_lines(tmp_path) == 0


class Crash(Exception):
    """The process dies here."""


STEPS = ["append.unsynced", "append.written", "rotate.renamed", "commit.recorded", "commit.removed"]


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_any_step_of_the_spool_file_loses_nothing_and_adds_nothing_twice(
    database: StateDatabase, tmp_path: Path, step: str
) -> None:
    clock = MemoryReactorClock()
    writer = OutageWriter(database)
    armed = {"on": False}

    def crash_at(name: str) -> None:
        if armed["on"] and name == step:
            raise Crash(name)

    crashed = new_audit(writer, tmp_path, clock, step=crash_at)
    writer.mode = UNAVAILABLE
    for n in range(20):
        crashed.record("connection_closed", stream=n)
    run_for(clock, 1.0)  # the first 20 are in the file (no crash armed yet)
    armed["on"] = True
    for n in range(20, 25):
        crashed.record("connection_closed", stream=n)
    run_for(clock, 1.0)
    writer.mode = OK
    run_for(clock, 3.0)  # a replay: it may crash at its rename, its record or its removal
    kept_in_memory = [e for e in crashed._spool if not e.durable]
    del crashed

    started = new_audit(writer, tmp_path, MemoryReactorClock())
    started.replay_spool_now(lambda job: job(database.connection))
    streams = committed_streams(database)
    assert len(streams) == len(set(streams))  # nothing twice
    in_memory = {json.loads(e.row[6])["stream"] for e in kept_in_memory}
    # lost only what a crash loses by its nature: what was in memory, never what was on disk
    assert set(range(20)) <= set(streams)
    assert set(streams) | in_memory == set(range(25))
    assert spool_lines(tmp_path) == 0


def test_a_spool_file_write_failure_truncates_what_it_wrote(tmp_path: Path) -> None:
    def fail_before_sync(name: str) -> None:
        if name == "append.unsynced":
            raise OSError(28, "No space left on device")

    spool = SpoolFile(tmp_path / "spool.jsonl", 10_000)
    spool.append(['{"a":1}\n'])
    failing = SpoolFile(tmp_path / "spool.jsonl", 10_000, fail_before_sync)
    with pytest.raises(OSError):
        failing.append(['{"b":2}\n'])
    assert (tmp_path / "spool.jsonl").read_bytes() == b'{"a":1}\n'
    assert failing.events == 1 and failing.bytes == 8


def test_stopping_with_the_database_unavailable_keeps_the_records_in_the_spool_file(
    database: StateDatabase, tmp_path: Path
) -> None:
    clock = MemoryReactorClock()
    writer = OutageWriter(database)
    audit = new_audit(writer, tmp_path, clock, spool_after=60.0, unavailable_after=60.0)
    writer.mode = BUSY
    for n in range(5):
        audit.record("connection_closed", stream=n)
    closed = outcome(audit.close(wait=1.0))
    run_for(clock, 1.5)
    assert closed == [None] and spool_lines(tmp_path) == 5
    writer.mode = OK
    started = new_audit(writer, tmp_path, MemoryReactorClock())
    started.replay_spool_now(lambda job: job(database.connection))
    assert committed_streams(database) == list(range(5))


def test_a_retry_and_a_replay_add_nothing_on_either_backend(
    open_state: Callable[[], StateDatabase], tmp_path: Path
) -> None:
    database = open_state()
    clock = MemoryReactorClock()
    writer = OutageWriter(database)
    audit = new_audit(writer, tmp_path, clock)
    writer.mode = LOST_REPLY
    for n in range(5):
        audit.record("connection_closed", stream=n)
    run_for(clock, 0.5)  # committed, the answer lost: the records go to the spool file
    writer.mode = OK
    run_for(clock, 3.0)  # replayed: the database has them already
    assert committed_streams(database) == list(range(5))
    assert audit.counters()["already_committed"] == 5


def test_a_broken_spool_file_never_holds_up_the_records_in_memory(
    database: StateDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = MemoryReactorClock()
    writer = OutageWriter(database)
    audit = new_audit(writer, tmp_path, clock)
    writer.mode = UNAVAILABLE
    assert audit.spooler is not None

    def unreadable(limit: int) -> tuple[list[str], int]:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(audit.spooler.file, "next_batch", unreadable)
    for n in range(3):
        audit.record("connection_closed", stream=n)
    run_for(clock, 1.0)
    assert spool_lines(tmp_path) == 3
    writer.mode = OK
    run_for(clock, 5.0)  # the replay fails (the file cannot be read), a probe succeeds
    assert audit.available
    audit.record("connection_closed", stream=3)
    run_for(clock, 5.0)
    assert committed_streams(database) == [3]  # the new record went in regardless
    assert spool_lines(tmp_path) == 3  # and the spooled ones are still on disk, not lost
    monkeypatch.undo()
    run_for(clock, 3.0)
    assert committed_streams(database) == [3, 0, 1, 2]


def test_each_change_of_state_is_told_with_the_counters(
    database: StateDatabase, tmp_path: Path
) -> None:
    clock = MemoryReactorClock()
    writer = OutageWriter(database)
    audit = new_audit(writer, tmp_path, clock)
    told: list[tuple[str, str]] = []
    audit.on_state_change = lambda state, counters: told.append((state, counters))
    writer.mode = BUSY
    audit.record("connection_closed", stream=0)
    run_for(clock, 1.0)
    writer.mode = UNAVAILABLE
    run_for(clock, 3.0)
    writer.mode = OK
    run_for(clock, 3.0)
    assert [state for state, _ in told] == ["failing", "unavailable", "ok"]
    assert "in_file=1" in told[1][1] and "replayed=" in told[2][1]
