"""The C{sessions} table: one row per access session, opened and closed.

Every statement on the table lives here or, for detached (resumable)
sessions and the rows a killed daemon left open, in L{jumpoint.detached_rows}.
A write is a job (L{opening}, L{closing}) that the audit log commits on the
database thread in the same transaction as the event that records it
(C{session_opened}, C{session_closed}).  L{closing_stale} is kept for the
records an older Jumpoint left in the spool file.

The two writes that go with records rather than decisions (a session's end,
a stale row's end) may wait in the audit log's spool file while the database
is unavailable: they are L{SpooledWrite}s, rebuilt from their JSON form by
L{SPOOLED_WRITES}, and both are idempotent (a replay changes nothing more).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

from jumpoint.store.change_notice import SESSIONS, announce
from jumpoint.store.connection import Connection

Write = Callable[[Connection], None]
"""A write job, committed with its audit event."""


class SpooledWrite(Protocol):
    """A write that can wait in the audit spool file: its C{name} and JSON form rebuild it."""

    @property
    def name(self) -> str: ...

    def __call__(self, db: Connection) -> None: ...

    def to_json(self) -> dict[str, Any]: ...


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
        announce(db, SESSIONS, row.session_id)

    return insert


@dataclass(frozen=True)
class SessionClosing:
    """The write that records the end of a session and its totals (L{closing})."""

    row: ClosedRow
    name: ClassVar[str] = "session_closing"

    def __call__(self, db: Connection) -> None:
        row = self.row
        db.execute(
            "UPDATE sessions SET closed_at = ?, close_reason = ?, connections = ?,"
            " bytes_to_target = ?, bytes_from_target = ? WHERE id = ?",
            (
                row.closed_at,
                row.reason,
                row.connections,
                row.bytes_to_target,
                row.bytes_from_target,
                row.session_id,
            ),
        )
        announce(db, SESSIONS, row.session_id)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self.row)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionClosing:
        return cls(ClosedRow(**data))


def closing(row: ClosedRow) -> SessionClosing:
    """The write that records the end of a session and its totals."""
    return SessionClosing(row)


class FlatJsonWrite:
    """The JSON form of a spooled write that is a dataclass of plain fields."""

    def to_json(self) -> dict[str, Any]:
        fields: dict[str, Any] = dataclasses.asdict(self)  # type: ignore[call-overload]
        return fields

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**data)


@dataclass(frozen=True)
class StaleClosing(FlatJsonWrite):
    """The write that closes a row a killed daemon left open, if it still is (L{closing_stale})."""

    session_id: str
    closed_at: float
    reason: str
    name: ClassVar[str] = "session_closing_stale"

    def __call__(self, db: Connection) -> None:
        db.execute(
            "UPDATE sessions SET closed_at = ?, close_reason = ?"
            " WHERE id = ? AND closed_at IS NULL",
            (self.closed_at, self.reason, self.session_id),
        )
        announce(db, SESSIONS, self.session_id)


def closing_stale(session_id: str, closed_at: float, reason: str) -> StaleClosing:
    """The write that closes a row a killed daemon left open (if it still is)."""
    return StaleClosing(session_id, closed_at, reason)


SPOOLED_WRITES: dict[str, Callable[[dict[str, Any]], SpooledWrite]] = {
    SessionClosing.name: SessionClosing.from_json,
    StaleClosing.name: StaleClosing.from_json,
}
"""How a write waiting in the audit spool file is rebuilt, by its C{name}."""
