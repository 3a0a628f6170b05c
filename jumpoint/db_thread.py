"""Who runs the state database's writes: one dedicated thread per database, or inline.

A write waits while another process holds SQLite's write lock (up to the
busy timeout), so writes must never run on the reactor thread: a foreign
C{sqlite3} shell holding C{BEGIN IMMEDIATE} would freeze every tunnel.
L{DatabaseThread} owns its own connection to the file and runs submitted
jobs one at a time, in order, on one dedicated thread; each job's result or
error comes back as a Deferred fired on the reactor.  Its queue is bounded:
past L{QUEUE_LIMIT} waiting jobs, L{DatabaseThread.submit} fails at once
with L{DatabaseQueueFull} (callers spool and retry, see L{jumpoint.audit}).

L{InlineDatabase} runs the same jobs at once on the caller's connection: for
the admin commands (their own process, nothing else to keep turning) and for
the synchronous unit tests.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from shared.errors import InternalError

log = Logger()

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]

QUEUE_LIMIT = 1_000
"""Jobs that may wait for the database thread; more are refused (L{DatabaseQueueFull})."""

BUSY_TIMEOUT = 1.0
"""Seconds one write waits for another process's lock before it fails (and is retried)."""


class DatabaseQueueFull(InternalError):
    """The database thread has L{QUEUE_LIMIT} jobs waiting already."""

    code = "database_busy"


def is_busy(error: BaseException) -> bool:
    """Whether C{error} is SQLite's "database is locked/busy" (worth retrying as is)."""
    if not isinstance(error, sqlite3.OperationalError):
        return False
    text = str(error).lower()
    return "locked" in text or "busy" in text


def connect(path: Path, timeout: float) -> sqlite3.Connection:
    """A connection with the Jumpoint's settings (WAL, full sync, foreign keys)."""
    db = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    return db


class DatabaseWriter(Protocol):
    """Runs jobs against the state database; results as Deferreds."""

    def submit(self, job: Job[T]) -> Deferred[T]: ...

    def stop(self) -> Deferred[None]: ...


class InlineDatabase:
    """Runs every job at once on C{connection} (admin commands, synchronous tests)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def submit(self, job: Job[T]) -> Deferred[T]:
        try:
            return succeed(job(self.connection))
        except Exception:
            return fail(Failure())

    def stop(self) -> Deferred[None]:
        return succeed(None)


_STOP = object()


class DatabaseThread:
    """One dedicated thread with its own connection to C{path} (see the module docstring).

    @param call_from_thread: how results reach the reactor thread
        (C{reactor.callFromThread}).
    """

    def __init__(
        self,
        path: Path,
        call_from_thread: Callable[..., Any],
        *,
        queue_limit: int = QUEUE_LIMIT,
        busy_timeout: float = BUSY_TIMEOUT,
    ) -> None:
        self.path = path
        self._call_from_thread = call_from_thread
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_limit)
        self._connection = connect(path, busy_timeout)
        self._stopped: Deferred[None] | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"jumpoint-database {path.name}", daemon=True
        )
        self._thread.start()

    def submit(self, job: Job[T]) -> Deferred[T]:
        if self._stopped is not None:
            return fail(InternalError("the Jumpoint is stopping; its database is closed"))
        result: Deferred[T] = Deferred()
        try:
            self._queue.put_nowait((job, result))
        except queue.Full:
            return fail(
                DatabaseQueueFull(
                    "the Jumpoint's database has too many writes waiting; the request was"
                    " not carried out",
                    hint="ask your administrator to check the Jumpoint's disk and database",
                )
            )
        return result

    def stop(self) -> Deferred[None]:
        """Run the jobs already queued, then close the connection and end the thread."""
        if self._stopped is None:
            self._stopped = Deferred()
            self._queue.put(_STOP)  # blocks only while the queue is full (jobs are running)
        return self._stopped

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is _STOP:
                self._connection.close()
                stopped = self._stopped
                assert stopped is not None
                self._call_from_thread(stopped.callback, None)
                return
            job, result = entry
            try:
                value = job(self._connection)
            except BaseException:
                failure = Failure()
                if self._connection.in_transaction:
                    self._rollback()
                self._call_from_thread(result.errback, failure)
            else:
                self._call_from_thread(result.callback, value)

    def _rollback(self) -> None:
        try:
            self._connection.execute("ROLLBACK")
        except sqlite3.Error as error:
            log.error("database thread: rollback failed: {error}", error=error)
