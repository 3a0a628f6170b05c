"""The sessions table belongs to jumpoint/session_store.py: its writes, its reads, and no SQL elsewhere."""

from __future__ import annotations

import re
from pathlib import Path

from jumpoint.session_store import (
    ClosedRow,
    OpenedRow,
    SessionStore,
    StaleSession,
    closing,
    closing_stale,
    opening,
)
from jumpoint.state import StateDatabase

ROOT = Path(__file__).resolve().parents[2]


def _opened(session_id: str) -> OpenedRow:
    return OpenedRow(session_id, "alice", "db", 10.0, "T-1", None, None)


def test_a_session_row_is_open_until_it_is_closed(tmp_path: Path) -> None:
    database = StateDatabase(tmp_path / "state.db")
    store = SessionStore(database)
    with database.transaction() as db:
        opening(_opened("s1"))(db)
        opening(_opened("s2"))(db)
    assert store.open_rows() == [
        StaleSession("s1", "alice", "db"),
        StaleSession("s2", "alice", "db"),
    ]
    with database.transaction() as db:
        closing(ClosedRow("s1", 20.0, "closed by the user", 3, 100, 200))(db)
    assert store.open_rows() == [StaleSession("s2", "alice", "db")]
    row = database.connection.execute(
        "SELECT closed_at, close_reason, connections, bytes_to_target, bytes_from_target,"
        " ticket FROM sessions WHERE id = 's1'"
    ).fetchone()
    assert tuple(row) == (20.0, "closed by the user", 3, 100, 200, "T-1")


def test_closing_a_stale_row_leaves_a_closed_one_alone(tmp_path: Path) -> None:
    database = StateDatabase(tmp_path / "state.db")
    with database.transaction() as db:
        opening(_opened("s1"))(db)
        closing(ClosedRow("s1", 20.0, "closed", 0, 0, 0))(db)
        opening(_opened("s2"))(db)
        closing_stale("s1", 30.0, "the Jumpoint stopped")(db)
        closing_stale("s2", 30.0, "the Jumpoint stopped")(db)
    rows = database.connection.execute(
        "SELECT id, closed_at, close_reason FROM sessions ORDER BY id"
    ).fetchall()
    assert [tuple(r) for r in rows] == [
        ("s1", 20.0, "closed"),
        ("s2", 30.0, "the Jumpoint stopped"),
    ]
    assert SessionStore(database).open_rows() == []


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
