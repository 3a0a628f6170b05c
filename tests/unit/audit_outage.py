"""Helpers of the audit outage tests: a writer that fails on demand, and the spool's parts.

L{OutageWriter} runs jobs inline on a real SQLite connection, or fails them
as a database does when it is locked (C{busy}), gone (C{unavailable}), or
when it commits and the answer is lost (C{lost_reply}).  L{new_audit} builds
an L{AuditLog} with a spool file on an inline worker (everything synchronous
on a L{MemoryReactorClock}); building a second one on the same files is
what a Jumpoint started after a crash does.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.testing import MemoryReactorClock

from jumpoint.audit import AuditLog, query
from jumpoint.audit_spool_file import LIMIT_BYTES, SpoolFile, Step
from jumpoint.audit_spooler import Spooler
from jumpoint.db_thread import InlineDatabase
from jumpoint.session_store import SPOOLED_WRITES
from jumpoint.state import StateDatabase
from jumpoint.worker_thread import InlineWorker

OK = "ok"
BUSY = "busy"
UNAVAILABLE = "unavailable"
LOST_REPLY = "lost_reply"


class OutageWriter:
    """An inline writer whose database can be made busy, unavailable, or lose its replies."""

    def __init__(self, database: StateDatabase) -> None:
        self.inline = InlineDatabase(database.connection)
        self.mode = OK
        self.attempts = 0

    def submit(self, job: Callable[[sqlite3.Connection], Any]) -> Deferred[Any]:
        self.attempts += 1
        if self.mode == BUSY:
            return fail(sqlite3.OperationalError("database is locked"))
        if self.mode == UNAVAILABLE:
            return fail(sqlite3.OperationalError("unable to open database file"))
        if self.mode == LOST_REPLY:
            job(self.inline.connection)  # committed; the answer never arrives
            return fail(sqlite3.OperationalError("disk I/O error"))
        return self.inline.submit(job)

    def stop(self) -> Deferred[None]:
        return self.inline.stop()


def new_audit(
    writer: Any,
    directory: Path,
    clock: MemoryReactorClock,
    *,
    limit_bytes: int = LIMIT_BYTES,
    step: Step | None = None,
    **options: Any,
) -> AuditLog:
    """An audit log with its spool file in C{directory} (all inline, on C{clock})."""
    spool_file = (
        SpoolFile(directory / "audit-spool.jsonl", limit_bytes)
        if step is None
        else SpoolFile(directory / "audit-spool.jsonl", limit_bytes, step)
    )
    spooler = Spooler(spool_file, InlineWorker(), SPOOLED_WRITES, 2_000)
    return AuditLog(writer, directory / "audit.jsonl", clock, spooler=spooler, **options)


def committed_streams(database: StateDatabase) -> list[int]:
    """The C{stream} field of every committed C{connection_closed} row, in commit order."""
    rows = query(database, event="connection_closed", limit=1_000_000)
    return [int(row.detail["stream"]) for row in rows]


def run_for(clock: MemoryReactorClock, seconds: float, step: float = 0.1) -> None:
    """Let C{seconds} pass in steps (timers fire as they come due)."""
    for _ in range(round(seconds / step)):
        clock.advance(step)
