"""PostgreSQL's database threads and change feed against a real server that stops and starts.

The server is this module's own (tests/postgres_server.py), so stopping it
disturbs no other test.  Results cross threads through C{call_from_thread}
= a direct call under a lock; every wait polls with a deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.python.failure import Failure

from jumpoint.db_thread import DatabaseThread, postgres_opener
from jumpoint.state import StateDatabase
from jumpoint.store import postgres
from jumpoint.store.change_feed import ListenFeed
from jumpoint.store.change_notice import USERS, Change
from jumpoint.store.error_kinds import DatabaseUnavailable
from tests.postgres_server import PostgresServer, throwaway_server


@pytest.fixture(scope="module")
def own_server() -> Iterator[PostgresServer]:
    with throwaway_server() as server:
        yield server


def poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)  # polling interval, not synchronisation


class Calls:
    """call_from_thread for tests: runs the call at once, serialised."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, function: Callable[..., Any], *args: Any) -> None:
        with self.lock:
            function(*args)


def outcome_of(thread: DatabaseThread, job: Callable[[Any], Any]) -> list[Any]:
    seen: list[Any] = []
    thread.submit(job).addBoth(seen.append)
    return seen


def test_the_writer_fails_fast_while_the_server_is_down_and_reconnects(
    own_server: PostgresServer,
) -> None:
    dsn = own_server.new_database("writer")
    StateDatabase.postgres(dsn, "test", migrate=True).close()
    thread = DatabaseThread(postgres_opener(dsn, "test writer"), Calls())
    try:
        first = outcome_of(thread, lambda db: db.execute("SELECT 1").fetchone()[0])
        assert poll(lambda: first, 10, "the first job") == [1]
        own_server.stop()
        lost = outcome_of(thread, lambda db: db.execute("SELECT 1").fetchone()[0])
        poll(lambda: lost, 10, "the job on a stopped server")
        assert isinstance(lost[0], Failure) and thread.classify(lost[0].value) == "unavailable"
        started = time.monotonic()
        refused = outcome_of(thread, lambda db: 1)
        poll(lambda: refused, 5, "a job while the server is away")
        assert time.monotonic() - started < 2.0  # fail fast, never a connect timeout per job
        assert isinstance(refused[0], Failure)
        assert isinstance(refused[0].value, DatabaseUnavailable)
        assert thread.classify(refused[0].value) == "unavailable"
        own_server.start()

        def works() -> bool:
            done = outcome_of(thread, lambda db: db.execute("SELECT 2").fetchone()[0])
            poll(lambda: done, 10, "a job after the restart")
            return done == [2]

        poll(works, 15, "the writer to reconnect")
    finally:
        if not own_server.running():
            own_server.start()
        thread.stop()
        assert thread.join(10)


def test_the_change_feed_delivers_notifications_and_resyncs_after_a_reconnect(
    own_server: PostgresServer,
) -> None:
    dsn = own_server.new_database("feed")
    database = StateDatabase.postgres(dsn, "test", migrate=True)
    seen: list[Change | None] = []
    feed = ListenFeed(lambda: postgres.connect(dsn), Calls(), resync_interval=60.0)
    feed.start(seen.append)
    try:
        poll(lambda: None in seen, 10, "the first resync")
        database.add_user("alice", "ops", "c1", "2099-01-01")  # announces its certificate
        database.revoke_user("alice")  # announces the user
        poll(lambda: Change(USERS, "alice") in seen, 5, "the revocation's notification")
        assert Change("certificates", "c1") in seen
        with pytest.raises(RuntimeError), database.transaction():  # rolled back: no notice
            database.connection.execute("SELECT pg_notify('jumpoint_changes', 'users:bob')")
            raise RuntimeError("rolled back")
        database.close()
        before = seen.count(None)
        own_server.stop()
        own_server.start()
        poll(lambda: seen.count(None) > before, 20, "the resync after the reconnect")
        assert Change(USERS, "bob") not in seen
    finally:
        feed.stop()
        assert feed.join(10)
