"""The sessions table belongs to jumpoint/session_store.py and jumpoint/detached_rows.py.

Their writes and reads, the start-up of a Jumpoint that finds rows left open
(they become detached, resumable), the sweep of detached rows past their
grace, and no SQL on the table anywhere else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from jumpoint.audit import AuditLog, query
from jumpoint.detached_rows import Totals, attached_rows, claiming, detaching
from jumpoint.service import detach_left_open_sessions
from jumpoint.session_store import ClosedRow, OpenedRow, closing, opening
from jumpoint.session_sweep import sweep_expired_sessions
from jumpoint.state import StateDatabase
from shared.errors import SessionGone
from tests.unit.test_session_rules import outcome

ROOT = Path(__file__).resolve().parents[2]


def _opened(session_id: str) -> OpenedRow:
    return OpenedRow(session_id, "alice", "db", 10.0, "T-1", None, None, "hash-" + session_id)


@pytest.fixture
def database(open_state: Callable[[], StateDatabase]) -> StateDatabase:
    """A fresh state database of each backend (SQLite, PostgreSQL)."""
    return open_state()


def _row(database: StateDatabase, session_id: str) -> dict[str, Any]:
    cursor = database.connection.execute("SELECT * FROM sessions WHERE id = ?", (session_id,))
    return dict(zip([d[0] for d in cursor.description], cursor.fetchone(), strict=True))


def test_a_session_row_is_open_until_it_is_closed(database: StateDatabase) -> None:
    with database.transaction() as db:
        opening(_opened("s1"))(db)
        opening(_opened("s2"))(db)
    assert [r.session_id for r in attached_rows(database.connection)] == ["s1", "s2"]
    with database.transaction() as db:
        closing(ClosedRow("s1", 20.0, "closed by the user", 3, 100, 200))(db)
    assert [r.session_id for r in attached_rows(database.connection)] == ["s2"]
    row = _row(database, "s1")
    assert (row["closed_at"], row["close_reason"], row["connections"]) == (
        20.0,
        "closed by the user",
        3,
    )
    assert (row["bytes_to_target"], row["bytes_from_target"], row["ticket"]) == (100, 200, "T-1")
    assert row["token_hash"] == "hash-s1" and row["reconnects"] == 0


def test_a_claim_has_one_winner(database: StateDatabase) -> None:
    with database.transaction() as db:
        opening(_opened("s1"))(db)
        detaching("s1", 50.0, "lost", 300.0, Totals(2, 10, 20))(db)
    with database.transaction() as db:
        claiming("s1", "hash-s1", 0, 100.0)(db)
    for token_hash, reconnects, now in (
        ("hash-s1", 0, 100.0),  # the same claim again: reconnects changed
        ("wrong", 1, 100.0),
    ):
        with pytest.raises(SessionGone), database.transaction() as db:
            claiming("s1", token_hash, reconnects, now)(db)
    row = _row(database, "s1")
    assert row["reconnects"] == 1 and row["detached_at"] is None
    with database.transaction() as db:
        detaching("s1", 200.0, "lost", 300.0, Totals(2, 10, 20))(db)
    with pytest.raises(SessionGone), database.transaction() as db:
        claiming("s1", "hash-s1", 1, 501.0)(db)  # past its grace


def test_start_up_detaches_rows_left_open_and_the_sweep_closes_them_after_the_grace(
    database: StateDatabase,
) -> None:
    clock = Clock()
    clock.advance(1000)
    audit = AuditLog(database, None, clock)
    with database.transaction() as db:
        opening(_opened("s1"))(db)
        opening(_opened("s2"))(db)
        opening(_opened("held"))(db)
        closing(ClosedRow("s2", 20.0, "closed", 0, 0, 0))(db)
    assert detach_left_open_sessions(database, audit, clock.seconds(), 300.0) == 2
    assert _row(database, "s1")["detached_at"] == 1000.0
    assert _row(database, "s2")["detached_at"] is None  # closed rows are left alone
    (detached, _) = query(database, event="session_detached")
    assert detached.detail["code"] == "jumpoint_stopped"

    clock.advance(300)
    assert outcome(sweep_expired_sessions(audit, {"held"})) == 0  # not past its grace yet
    clock.advance(1)
    assert outcome(sweep_expired_sessions(audit, {"held"})) == 1
    (closed,) = query(database, event="session_closed")
    assert closed.session == "s1" and closed.detail["code"] == "link_lost"
    assert _row(database, "s1")["closed_at"] == 1301.0
    assert _row(database, "held")["closed_at"] is None  # its own timer closes it
    assert outcome(sweep_expired_sessions(audit, set())) == 1
    assert outcome(sweep_expired_sessions(audit, set())) == 0
    assert len(query(database, event="session_closed")) == 2


def test_no_module_but_the_store_speaks_sql_to_the_sessions_table() -> None:
    statement = re.compile(r"(?:INSERT\s+INTO|UPDATE|FROM|DELETE\s+FROM)\s+sessions\b")
    speaking = sorted(
        str(path.relative_to(ROOT))
        for package in ("jumpoint", "console", "shared")
        for path in (ROOT / package).rglob("*.py")
        if statement.search(path.read_text(encoding="utf-8"))
    )
    # the store and its part for detached (resumable) sessions
    assert speaking == ["jumpoint/detached_rows.py", "jumpoint/session_store.py"]


def test_the_detachments_can_wait_in_the_audit_spool_file() -> None:
    from jumpoint.detached_rows import DETACHED_WRITES, detaching_left_open

    for write in (
        detaching("s1", 50.0, "lost", 300.0, Totals(2, 10, 20)),
        detaching_left_open("s1", 50.0, "the Jumpoint stopped", 300.0),
    ):
        assert DETACHED_WRITES[write.name](write.to_json()) == write
