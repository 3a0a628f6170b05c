"""The C{sessions} table: one row per access session, opened, closed, and the stale ones.

Every statement on the table lives here.  A write is a job (L{opening},
L{closing}, L{closing_stale}) that the audit log commits on the database
thread in the same transaction as the event that records it
(C{session_opened}, C{session_closed}); L{SessionStore.open_rows} reads the
rows a killed daemon left open, at start-up under the instance lock.  The
statements of detached (resumable) sessions are L{jumpoint.detached_rows}'.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from jumpoint.state import StateDatabase

Write = Callable[[sqlite3.Connection], None]
"""A write job, committed with its audit event."""


@dataclass(frozen=True)
class OpenedRow:
    """What the row of a session that opened holds."""

    session_id: str
    user: str
    item: str
    opened_at: float
    ticket: str | None
    approval_id: int | None
    recording: str | None
    token_hash: str | None = None
    """The SHA-256 of the session's resume token (the token itself is never stored)."""


@dataclass(frozen=True)
class ClosedRow:
    """What the end of a session adds to its row."""

    session_id: str
    closed_at: float
    reason: str
    connections: int
    bytes_to_target: int
    bytes_from_target: int


def opening(row: OpenedRow) -> Write:
    """The write that adds the row of a session being opened."""
    values = (
        row.session_id,
        row.user,
        row.item,
        row.opened_at,
        row.ticket,
        row.approval_id,
        row.recording,
        row.token_hash,
    )

    def insert(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO sessions (id, user_name, item, opened_at, ticket, approval_id,"
            " recording, token_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            values,
        )

    return insert


def closing(row: ClosedRow) -> Write:
    """The write that records the end of a session and its totals."""
    values = (
        row.closed_at,
        row.reason,
        row.connections,
        row.bytes_to_target,
        row.bytes_from_target,
        row.session_id,
    )

    def update(db: sqlite3.Connection) -> None:
        db.execute(
            "UPDATE sessions SET closed_at = ?, close_reason = ?, connections = ?,"
            " bytes_to_target = ?, bytes_from_target = ? WHERE id = ?",
            values,
        )

    return update


def closing_stale(session_id: str, closed_at: float, reason: str) -> Write:
    """The write that closes a row a killed daemon left open (if it still is)."""

    def close(db: sqlite3.Connection) -> None:
        db.execute(
            "UPDATE sessions SET closed_at = ?, close_reason = ?"
            " WHERE id = ? AND closed_at IS NULL",
            (closed_at, reason, session_id),
        )

    return close


@dataclass(frozen=True)
class StaleSession:
    """A session row without an end."""

    session_id: str
    user: str
    item: str


class SessionStore:
    """Reads of the C{sessions} table (the writes are the jobs above)."""

    def __init__(self, database: StateDatabase) -> None:
        self.database = database

    def open_rows(self) -> list[StaleSession]:
        """The sessions whose rows have no end (at start-up: left by a stopped daemon)."""
        rows = self.database.connection.execute(
            "SELECT id, user_name, item FROM sessions WHERE closed_at IS NULL"
        ).fetchall()
        return [StaleSession(session_id, user, item) for session_id, user, item in rows]
