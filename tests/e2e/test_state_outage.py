"""End to end: the state database stops taking writes mid-session; nothing is lost, new sessions fail closed.

An L{Outage} makes the Jumpoint's state database refuse its writes for a
while.  On SQLite it is a foreign C{sqlite3} shell holding the write lock
(C{BEGIN IMMEDIATE}) for longer than the Jumpoint waits for a lock before it
counts the database as unavailable; the PostgreSQL variant (the server
stopped) plugs in as another L{Outage} (see L{OUTAGES}).  Meanwhile: the
tunnel opened before keeps carrying bytes, new connections in it go through
(their records go to the local spool file), a new `jump open` is refused at
once with code C{state_unavailable} (status 10) and a clear message; once the
database is back a new session opens, and `jumpoint audit` shows every event
exactly once (counted, by C{event_id}).
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from shared.errors import ExitCode
from tests.e2e.harness import Deployment, Process, audit_until, tcp_item, wait_until
from tests.e2e.harness import tunnel_address as address_of
from tests.e2e.servers import EchoServer
from tests.e2e.test_state_lock import ForeignLock

REFUSED_MESSAGE = "cannot reach its state database; new sessions are refused until it is back"


class Outage(Protocol):
    """Makes the deployment's state database refuse writes between L{begin} and L{end}."""

    def begin(self, deployment: Deployment) -> None: ...

    def end(self) -> None: ...


class SqliteLock:
    """A foreign `sqlite3` shell holds the write lock of state.db."""

    def __init__(self) -> None:
        self.lock: ForeignLock | None = None

    def begin(self, deployment: Deployment) -> None:
        self.lock = ForeignLock(str(deployment.directory / "state.db"))

    def end(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


OUTAGES = {"sqlite-lock": SqliteLock}
"""The ways of taking the database away, by backend (PostgreSQL: the server stopped)."""


@pytest.fixture(params=sorted(OUTAGES))
def outage(request: pytest.FixtureRequest) -> Iterator[Outage]:
    made: Outage = OUTAGES[request.param]()
    try:
        yield made
    finally:
        made.end()


def _round_trip(connection: socket.socket, size: int = 2048) -> None:
    payload = os.urandom(size)
    connection.sendall(payload)
    received = b""
    while len(received) < size:
        chunk = connection.recv(size - len(received))
        assert chunk, "the tunnel closed"
        received += chunk
    assert received == payload


def _spooled_lines(directory: Path) -> int:
    return sum(len(path.read_bytes().splitlines()) for path in directory.glob("audit-spool.jsonl*"))


def test_an_unavailable_state_database_keeps_sessions_refuses_new_ones_and_loses_no_event(
    deployment: Deployment, outage: Outage
) -> None:
    echo = EchoServer()
    try:
        deployment.items = [tcp_item("echo", echo.port)]
        deployment.create()
        daemon: Process = deployment.serve()
        session = deployment.open("echo")
        host, port = address_of(session.wait_for_event("ready"))
        kept = socket.create_connection((host, port), timeout=30)
        _round_trip(kept)

        outage.begin(deployment)
        opened = 0

        def refusing() -> bool:
            nonlocal opened
            _round_trip(kept)  # the open tunnel carries on
            with socket.create_connection((host, port), timeout=30) as fresh:
                _round_trip(fresh, 256)
            opened += 1
            return "new decisions are refused until it is back" in daemon.output()

        wait_until(refusing, what="the Jumpoint to count its database as unavailable")
        wait_until(
            lambda: _spooled_lines(deployment.directory) > 0,
            what="records in the local spool file",
        )
        refused = deployment.jump("open", "echo", "--", "true")
        assert refused.returncode == ExitCode.STATE_UNAVAILABLE, refused.stderr
        assert REFUSED_MESSAGE in refused.stderr
        _round_trip(kept)  # still carrying after the refusal
        outage.end()

        wait_until(
            lambda: "the audit log is written again" in daemon.output(),
            what="the Jumpoint to write its audit log again",
        )
        again = deployment.jump("open", "echo", "--", "true")
        assert again.returncode == 0, again.stderr
        _round_trip(kept)
        kept.close()

        rows = audit_until(
            deployment,
            lambda entries: (
                sum(e["event"] == "connection_closed" for e in entries) == opened + 1
                and _spooled_lines(deployment.directory) == 0
            ),
            "--item",
            "echo",
            "--limit",
            "1000000",
            what="every connection's rows, and the spool file replayed",
        )
        events = Counter(e["event"] for e in rows)
        assert events["connection_opened"] == opened + 1
        assert len({e["stream"] for e in rows if e["event"] == "connection_closed"}) == opened + 1
        assert events["session_opened"] == 2  # the first one, and the one after the outage
        assert events["session_requested"] == 2
        assert events["request_refused"] == 1  # the one refused at once, audited afterwards
        assert events["session_closed"] == 1  # the one after the outage
        identities = [e["event_id"] for e in rows]
        assert len(identities) == len(set(identities))  # nothing twice
    finally:
        echo.close()
