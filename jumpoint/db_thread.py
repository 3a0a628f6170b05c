"""Who runs the state database's jobs: dedicated threads with their own connections, or inline.

A write waits while another process holds SQLite's write lock (up to the
busy timeout), and every PostgreSQL statement is a network round trip, so
neither may run on the reactor thread: a foreign C{sqlite3} shell holding
C{BEGIN IMMEDIATE} or a slow database server would freeze every tunnel.
L{DatabaseThread} owns its connections and runs submitted jobs on its
threads (one thread: one at a time, in order, as the writes need; the
PostgreSQL readers use a few); each job's result or error comes back as a
Deferred fired on the reactor.  Its queue is bounded: past L{QUEUE_LIMIT}
waiting jobs, L{DatabaseThread.submit} fails at once with
L{DatabaseQueueFull} (callers spool and retry, see L{jumpoint.audit}).

A PostgreSQL connection that is lost is made again on the next job, at
most once per backoff delay (L{RECONNECT_FIRST} doubling to
L{RECONNECT_MAX}); meanwhile jobs fail at once with
L{jumpoint.store.error_kinds.DatabaseUnavailable}: fail fast, never queue
behind a dead server.  L{DatabaseThread.classify} tells callers whether an
error means "busy, retry" (SQLite's lock) or "unavailable, fail fast".

L{InlineDatabase} runs the same jobs at once on the caller's connection: for
the admin commands (their own process, nothing else to keep turning), the
synchronous unit tests, and the daemon's SQLite reads (L{jumpoint.store.reader}).
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from jumpoint.store import postgres
from jumpoint.store.connection import Connection
from jumpoint.store.error_kinds import DatabaseUnavailable, classify, is_busy, is_unavailable
from shared.errors import InternalError

__all__ = ["DatabaseQueueFull", "DatabaseThread", "InlineDatabase", "classify", "is_busy"]

log = Logger()

T = TypeVar("T")
Job = Callable[[Connection], T]

QUEUE_LIMIT = 1_000
"""Jobs that may wait for the database thread; more are refused (L{DatabaseQueueFull})."""

BUSY_TIMEOUT = 1.0
"""Seconds one write waits for another process's lock before it fails (and is retried)."""

RECONNECT_FIRST = 0.1
RECONNECT_MAX = 5.0
"""Seconds between two attempts to reconnect to PostgreSQL: doubled each time, up to this."""


class DatabaseQueueFull(InternalError):
    """The database thread has L{QUEUE_LIMIT} jobs waiting already."""

    code = "database_busy"


def connect(path: Path, timeout: float) -> sqlite3.Connection:
    """A connection with the Jumpoint's settings (WAL, full sync, foreign keys)."""
    db = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    return db


def postgres_opener(dsn: str, application_name: str) -> Callable[[], Connection]:
    """Opens one connection to the PostgreSQL database of C{dsn}."""
    return lambda: postgres.connect(dsn, application_name=application_name)


class DatabaseWriter(Protocol):
    """Runs jobs against the state database; results as Deferreds."""

    def submit(self, job: Job[T]) -> Deferred[T]: ...

    def stop(self) -> Deferred[None]: ...


class InlineDatabase:
    """Runs every job at once on C{connection} (admin commands, synchronous tests)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def submit(self, job: Job[T]) -> Deferred[T]:
        try:
            return succeed(job(self.connection))
        except Exception:
            return fail(Failure())

    def stop(self) -> Deferred[None]:
        return succeed(None)

    @staticmethod
    def classify(error: BaseException) -> str:
        return classify(error)


_STOP = object()


class DatabaseThread:
    """Dedicated threads, each with its own connection (see the module docstring).

    @param path: the SQLite file, or a function opening a connection (PostgreSQL).
    @param call_from_thread: how results reach the reactor thread
        (C{reactor.callFromThread}).
    @param threads: how many threads take jobs (1 keeps them in order: writes).
    """

    def __init__(
        self,
        path: Path | Callable[[], Connection],
        call_from_thread: Callable[..., Any],
        *,
        queue_limit: int = QUEUE_LIMIT,
        busy_timeout: float = BUSY_TIMEOUT,
        threads: int = 1,
        name: str = "jumpoint-database",
        monotonic: Callable[[], float] = time.monotonic,
        retry_lost: bool = False,
    ) -> None:
        self._call_from_thread = call_from_thread
        self._retry_lost = retry_lost
        """Readers: a job whose connection turns out lost (the server restarted while it was
        idle) runs once more on a new one; reads can be repeated, writes are never retried."""
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_limit)
        self._stopped: Deferred[None] | None = None
        self._monotonic = monotonic
        self._remaining = threads
        self._lock = threading.Lock()
        if isinstance(path, Path):
            self.path: Path | None = path
            sqlite_path = path
            self._open: Callable[[], Connection] = lambda: connect(sqlite_path, busy_timeout)
            first: Connection | None = self._open()  # errors at start, on the caller's thread
        else:
            self.path = None
            self._open = path
            first = None  # PostgreSQL: connected on the thread, reconnected there
        self._threads = [
            threading.Thread(
                target=self._run,
                args=(first if index == 0 else None, self.path is None),
                name=f"{name} {index}",
                daemon=True,
            )
            for index in range(threads)
        ]
        if self.path is not None and threads > 1:
            raise ValueError("SQLite gets one database thread")
        for thread in self._threads:
            thread.start()

    @staticmethod
    def classify(error: BaseException) -> str:
        """C{"busy"} (retry as is), C{"unavailable"} (fail fast) or C{"other"}."""
        return classify(error)

    def submit(self, job: Job[T]) -> Deferred[T]:
        if self._stopped is not None:
            return fail(InternalError("the Jumpoint is stopping; its database is closed"))
        result: Deferred[T] = Deferred()
        try:
            self._queue.put_nowait((job, result))
        except queue.Full:
            return fail(
                DatabaseQueueFull(
                    "the Jumpoint's database has too many jobs waiting; the request was"
                    " not carried out",
                    hint="ask your administrator to check the Jumpoint's disk and database",
                )
            )
        return result

    def stop(self) -> Deferred[None]:
        """Run the jobs already queued, then close the connections and end the threads."""
        if self._stopped is None:
            self._stopped = Deferred()
            for _ in self._threads:  # blocks only while the queue is full (jobs are running)
                self._queue.put(_STOP)
        return self._stopped

    def join(self, timeout: float | None = None) -> bool:
        for thread in self._threads:
            thread.join(timeout)
        return not any(thread.is_alive() for thread in self._threads)

    def _run(self, connection: Connection | None, reconnects: bool) -> None:
        delay = RECONNECT_FIRST
        next_attempt = 0.0
        while True:
            entry = self._queue.get()
            if entry is _STOP:
                if connection is not None:
                    connection.close()
                self._thread_done()
                return
            job, result = entry
            if connection is None and reconnects and self._monotonic() >= next_attempt:
                try:
                    connection = self._open()
                    delay = RECONNECT_FIRST
                    log.info("database thread: connected to the state database")
                except Exception as error:
                    next_attempt = self._monotonic() + delay
                    delay = min(RECONNECT_MAX, delay * 2)
                    why = postgres.redacted(str(error).strip())
                    log.warn("database thread: cannot connect: {error}", error=why)
            if connection is None:
                self._call_from_thread(
                    result.errback,
                    Failure(
                        DatabaseUnavailable(
                            "the Jumpoint cannot reach its state database now",
                            hint="ask your administrator to check the database server",
                        )
                    ),
                )
                continue
            try:
                try:
                    value = job(connection)
                except Exception as error:
                    if not (self._retry_lost and reconnects and is_unavailable(error)):
                        raise
                    self._drop(connection)
                    connection = None
                    connection = self._open()
                    value = job(connection)
            except BaseException as error:
                failure = Failure()
                if connection is None:
                    pass
                elif reconnects and is_unavailable(error):
                    connection = self._drop(connection)
                elif connection.in_transaction:
                    connection = self._rollback(connection, reconnects)
                self._call_from_thread(result.errback, failure)
            else:
                self._call_from_thread(result.callback, value)

    def _thread_done(self) -> None:
        with self._lock:
            self._remaining -= 1
            last = self._remaining == 0
        if last:
            stopped = self._stopped
            assert stopped is not None
            self._call_from_thread(stopped.callback, None)

    @staticmethod
    def _drop(connection: Connection) -> None:
        try:
            connection.close()
        except Exception as error:
            log.debug("database thread: closing a lost connection: {error}", error=error)
        return None

    def _rollback(self, connection: Connection, reconnects: bool) -> Connection | None:
        try:
            connection.execute("ROLLBACK")
        except Exception as error:
            log.error("database thread: rollback failed: {error}", error=error)
            if reconnects:
                return self._drop(connection)
        return connection
