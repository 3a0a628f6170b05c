"""End to end: a foreign lock on the state database never stalls a tunnel nor loses an event.

A real C{sqlite3} shell holds C{BEGIN IMMEDIATE} on the Jumpoint's state
database for several seconds, as an administrator poking at it would.
Meanwhile a tunnel keeps carrying bytes (round trips on a connection opened
before, and new connections, each one audited), reads keep being answered,
and afterwards `jumpoint audit` shows every connection's events.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

from tests.e2e.harness import Deployment, audit_until, tcp_item, wait_until
from tests.e2e.harness import tunnel_address as address_of
from tests.e2e.servers import EchoServer

LOCK_SECONDS = 4.0
MAX_ROUND_TRIP = 1.0
"""Seconds one echo round trip may take while the lock is held (it took the busy timeout)."""


def _round_trip(connection: socket.socket, size: int = 4096) -> float:
    payload = os.urandom(size)
    started = time.monotonic()
    connection.sendall(payload)
    received = b""
    while len(received) < size:
        chunk = connection.recv(size - len(received))
        assert chunk, "the tunnel closed"
        received += chunk
    assert received == payload
    return time.monotonic() - started


class ForeignLock:
    """A `sqlite3` shell holding the write lock of C{path} until L{release}."""

    def __init__(self, path: str) -> None:
        self.shell = subprocess.Popen(
            ["sqlite3", path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.shell.stdin is not None and self.shell.stdout is not None
        self.shell.stdin.write(".bail on\n.timeout 10000\nBEGIN IMMEDIATE;\nSELECT 'locked';\n")
        self.shell.stdin.flush()
        line = self.shell.stdout.readline()  # printed only once BEGIN IMMEDIATE succeeded
        assert line.strip() == "locked", self.shell.stderr.read() if self.shell.stderr else line

    def release(self) -> None:
        assert self.shell.stdin is not None
        self.shell.stdin.write("COMMIT;\n.quit\n")
        self.shell.stdin.close()
        assert self.shell.wait(30) == 0


def test_a_foreign_sqlite_lock_never_stalls_a_tunnel_and_every_event_is_audited(
    deployment: Deployment,
) -> None:
    echo = EchoServer()
    try:
        deployment.items = [tcp_item("echo", echo.port)]
        deployment.create().serve()
        session = deployment.open("echo")
        host, port = address_of(session.wait_for_event("ready"))
        kept = socket.create_connection((host, port), timeout=30)
        _round_trip(kept)

        lock = ForeignLock(str(deployment.directory / "state.db"))
        locked_at = time.monotonic()
        round_trips: list[float] = []
        opened = 0
        try:
            while time.monotonic() - locked_at < LOCK_SECONDS:
                round_trips.append(_round_trip(kept))
                with socket.create_connection((host, port), timeout=30) as fresh:
                    round_trips.append(_round_trip(fresh, 512))
                opened += 1
            started = time.monotonic()
            listed = deployment.jump("items", "--json")  # a read: answered during the lock
            assert listed.returncode == 0, listed.stderr
            assert time.monotonic() - started < LOCK_SECONDS
            held_for = time.monotonic() - locked_at
        finally:
            lock.release()
        assert held_for >= LOCK_SECONDS
        assert opened >= 5 and max(round_trips) < MAX_ROUND_TRIP, round_trips
        _round_trip(kept)
        kept.close()

        # every connection's events arrive once the lock is gone
        entries = audit_until(
            deployment,
            lambda rows: sum(r["event"] == "connection_closed" for r in rows) == opened + 1,
            "--item",
            "echo",
            "--limit",
            "1000000",
            what="a connection_closed row for every connection",
        )
        events = [e["event"] for e in entries]
        assert events.count("connection_opened") == opened + 1
        streams = {e["stream"] for e in entries if e["event"] == "connection_closed"}
        assert len(streams) == opened + 1
        wait_until(
            lambda: deployment.jumpoint("audit", "--json", "--event", "session_opened").stdout,
            what="the session_opened row",
        )
        rows = deployment.jumpoint("audit", "--json", "--limit", "1000000").stdout.splitlines()
        assert not any(json.loads(r)["event"] == "session_closed" for r in rows)
    finally:
        echo.close()
