"""The C{sessions} table: one row per access session, opened and closed.

Every statement on the table lives here or, for detached (resumable)
sessions and the rows a killed daemon left open, in L{jumpoint.detached_rows}.
A write is a job (L{opening}, L{closing}) that the audit log commits on the
database thread in the same transaction as the event that records it
(C{session_opened}, C{session_closed}).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from jumpoint.store.connection import Connection

Write = Callable[[Connection], None]
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

    def insert(db: Connection) -> None:
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

    def update(db: Connection) -> None:
        db.execute(
            "UPDATE sessions SET closed_at = ?, close_reason = ?, connections = ?,"
            " bytes_to_target = ?, bytes_from_target = ? WHERE id = ?",
            values,
        )

    return update
