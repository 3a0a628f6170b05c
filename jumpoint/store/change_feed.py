"""The daemon learns of changes made by other processes and members: the C{ChangeFeed} seam.

A feed calls its subscriber on the reactor thread with a
L{jumpoint.store.change_notice.Change} (one row of one table changed) or
with C{None} (anything may have changed: re-read everything you keep).

  - L{DataVersionFeed} (SQLite): polls C{PRAGMA data_version} on the
    database thread every C{interval}; a new version means another process
    committed, and the subscriber gets C{None}.
  - L{ListenFeed} (PostgreSQL): a dedicated thread with its own connection
    runs C{LISTEN jumpoint_changes}; every notification (sent by
    L{jumpoint.store.change_notice.announce} in the writer's transaction,
    delivered at its commit) is passed on.  Notifications are not replayed
    to a listener that was disconnected, so after every (re)connect it
    first LISTENs, then sends C{None} (a full resync), and it sends C{None}
    again every C{resync_interval} as a safety net for a lost one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from jumpoint.db_thread import DatabaseWriter
from jumpoint.store.change_notice import CHANNEL, Change
from jumpoint.store.connection import Connection
from jumpoint.store.postgres import PostgresConnection, redacted

log = Logger()

Subscriber = Callable[[Change | None], None]

RESYNC_INTERVAL = 5.0
"""Seconds between two full re-checks on PostgreSQL (a lost notification is caught then)."""

RECONNECT_FIRST = 0.1
RECONNECT_MAX = 5.0

WAIT_SLICE = 0.25
"""Seconds the listening thread waits for notifications before it looks at its stop flag."""


class ChangeFeed(Protocol):
    """Tells its subscriber what changed (see the module docstring)."""

    def start(self, subscriber: Subscriber) -> None: ...

    def stop(self) -> None: ...


def _data_version(db: Connection) -> int:
    return int(db.execute("PRAGMA data_version").fetchone()[0])


class DataVersionFeed:
    """SQLite: a poll of C{PRAGMA data_version} on the database thread, one at a time."""

    def __init__(self, writer: DatabaseWriter, clock: IReactorTime, interval: float) -> None:
        self.writer = writer
        self.clock = clock
        self.interval = interval
        self._subscriber: Subscriber | None = None
        self._last: int | None = None
        self._polling = False
        self._call: IDelayedCall | None = None

    def start(self, subscriber: Subscriber) -> None:
        self._subscriber = subscriber
        self._tick()

    def stop(self) -> None:
        self._subscriber = None
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _tick(self) -> None:
        self._call = None
        if self._subscriber is None:
            return
        self.poll()
        self._call = self.clock.callLater(self.interval, self._tick)

    def poll(self) -> None:
        """Look at the data version now; tell the subscriber if it moved (or on the first look)."""
        if self._polling:
            return
        self._polling = True
        self.writer.submit(_data_version).addCallbacks(self._polled, self._failed)

    def _polled(self, version: int) -> None:
        self._polling = False
        changed, self._last = version != self._last, version
        if changed and self._subscriber is not None:
            self._subscriber(None)

    def _failed(self, failure: Failure) -> None:
        self._polling = False
        log.warn("cannot check the state database for changes: {error}", error=failure.value)


class ListenFeed:
    """PostgreSQL: C{LISTEN} on a dedicated connection and thread (see the module docstring)."""

    def __init__(
        self,
        open_connection: Callable[[], PostgresConnection],
        call_from_thread: Callable[..., Any],
        *,
        resync_interval: float = RESYNC_INTERVAL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open = open_connection
        self._call_from_thread = call_from_thread
        self.resync_interval = resync_interval
        self._monotonic = monotonic
        self._subscriber: Subscriber | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        """Set while the feed listens (tests wait for it)."""

    def start(self, subscriber: Subscriber) -> None:
        self._subscriber = subscriber
        self._thread = threading.Thread(target=self._run, name="jumpoint-changes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._subscriber = None
        self._stopping.set()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _deliver(self, change: Change | None) -> None:
        subscriber = self._subscriber
        if subscriber is not None:
            subscriber(change)

    def _run(self) -> None:
        delay = RECONNECT_FIRST
        while not self._stopping.is_set():
            try:
                connection = self._open()
            except Exception as error:
                log.warn("change feed: cannot connect: {error}", error=redacted(str(error).strip()))
                self._stopping.wait(delay)
                delay = min(RECONNECT_MAX, delay * 2)
                continue
            delay = RECONNECT_FIRST
            try:
                self._listen(connection)
            except Exception as error:
                if not self._stopping.is_set():
                    log.warn(
                        "change feed: the connection was lost ({error}); reconnecting",
                        error=redacted(str(error).strip()),
                    )
            finally:
                self.connected.clear()
                try:
                    connection.close()
                except Exception as error:
                    log.debug("change feed: close failed: {error}", error=error)

    def _listen(self, connection: PostgresConnection) -> None:
        connection.execute_raw(f"LISTEN {CHANNEL}")
        self.connected.set()
        self._call_from_thread(self._deliver, None)  # LISTEN first, then resync
        next_resync = self._monotonic() + self.resync_interval
        while not self._stopping.is_set():
            for notice in connection.raw.notifies(timeout=WAIT_SLICE):
                self._call_from_thread(self._deliver, Change.parse(notice.payload))
            if self._monotonic() >= next_resync:
                connection.execute_raw("SELECT 1")  # also proves the connection is alive
                self._call_from_thread(self._deliver, None)
                next_resync = self._monotonic() + self.resync_interval
