"""End to end: a Jumpoint whose state is in PostgreSQL (a throwaway server of tests/postgres_server.py).

Always on PostgreSQL, whatever C{JUMPOINT_TEST_BACKEND} says: a revocation
made by another process reaches the open session through LISTEN/NOTIFY
within 1 s; C{jumpoint migrate} brings an empty database to the current
schema (and says so), a member refuses to serve on a schema it does not
know or one that was never migrated.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from jumpoint.state import MIGRATIONS
from shared.errors import ExitCode
from tests.e2e.harness import Deployment, tunnel_address, wait_until
from tests.postgres_server import PostgresServer

REVOCATION_BOUND = 1.0
"""Seconds from the revocation's commit to the session's end (issue 12)."""


@pytest.fixture
def pg_deployment(tmp_path: Path, postgres_dsn: str) -> Iterator[Deployment]:
    created = Deployment(tmp_path, postgres_dsn=postgres_dsn)
    try:
        yield created
    finally:
        created.stop_and_show()


def _echo_item() -> dict[str, object]:
    return {
        "name": "web",
        "type": "tcp",
        "host": "127.0.0.1",
        "tunnels": [{"local_port": "auto", "remote_port": 9}],
    }


def test_a_revocation_by_another_process_closes_the_session_within_a_second(
    pg_deployment: Deployment,
) -> None:
    pg_deployment.items = [_echo_item()]
    pg_deployment.create().serve()  # alice enrolls online: her certificate row is in PostgreSQL
    session = pg_deployment.open("web")
    ready = session.wait_for_event("ready")
    assert tunnel_address(ready)
    revoked = pg_deployment.jumpoint("user", "revoke", "alice")  # its own process and connection
    committed = time.monotonic()
    assert "revoked" in revoked.stdout
    wait_until(
        lambda: session.popen.poll() is not None,
        timeout=REVOCATION_BOUND,
        what="the session to close after the revocation",
    )
    assert time.monotonic() - committed < REVOCATION_BOUND
    assert session.wait() == ExitCode.SESSION_LOST
    (closed,) = [e for e in session.json_events() if e["event"] == "closed"]
    assert closed["code"] == "revoked"
    audit = pg_deployment.jumpoint("audit", "--json", "--user", "alice").stdout
    assert "session_opened" in audit and "session_closed" in audit


def test_migrate_brings_an_empty_database_to_the_schema_and_serve_needs_it(
    pg_deployment: Deployment, postgres_server: PostgresServer
) -> None:
    pg_deployment.create()
    empty = postgres_server.new_database()
    (pg_deployment.directory / "state.dsn").write_text(empty + "\n", encoding="utf-8")
    refused = pg_deployment.jumpoint("serve", check=False)
    assert refused.returncode == ExitCode.CONFIG, refused.stderr
    assert f"schema version 0; this jumpoint needs {len(MIGRATIONS)}" in refused.stderr
    assert "jumpoint migrate" in refused.stderr
    assert "Traceback" not in refused.stderr
    first = pg_deployment.jumpoint("migrate")
    assert f"from version 0 to {len(MIGRATIONS)}" in first.stdout
    again = pg_deployment.jumpoint("migrate")
    assert f"schema version {len(MIGRATIONS)}, up to date" in again.stdout
    pg_deployment.jumpoint("check-config")


def test_a_schema_newer_than_this_jumpoint_knows_is_refused(pg_deployment: Deployment) -> None:
    pg_deployment.create()
    assert pg_deployment.postgres_dsn is not None
    with psycopg.connect(pg_deployment.postgres_dsn, autocommit=True) as admin:
        admin.execute("UPDATE schema_version SET version = %s", (len(MIGRATIONS) + 1,))
    for command in (("serve",), ("migrate",)):
        refused = pg_deployment.jumpoint(*command, check=False)
        assert refused.returncode == ExitCode.CONFIG, refused.stderr
        assert (
            f"schema version {len(MIGRATIONS) + 1}, newer than this jumpoint knows"
            f" ({len(MIGRATIONS)})"
        ) in refused.stderr
        assert "Traceback" not in refused.stderr
