"""The statements on the C{sessions} table that make a session resumable, resume it, or end it.

A session whose channel is lost is I{detached}: its row gets C{detached_at},
the reason and the grace it has (L{detaching}).  Resuming it reads the row
(L{read_for_resume}, with the user as the database says now) and claims it
(L{claiming}: in one conditional update, so that two consoles, or two
members sharing the database, cannot both take it).  A detached row past its
grace is closed by L{closing_detached}, refused (nothing written) if the row
is no longer detached.  L{jumpoint.session_store} has the other statements.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from jumpoint.session_store import FlatJsonWrite, SpooledWrite, Write
from jumpoint.state import User, user_for_certificate
from jumpoint.store.connection import Connection
from shared.errors import SESSION_GONE_MESSAGE, SessionGone


@dataclass(frozen=True)
class Totals:
    """A session's counts so far (kept in its row while it is detached)."""

    connections: int
    bytes_to_target: int
    bytes_from_target: int


@dataclass(frozen=True)
class ResumableRow:
    """What resuming a session needs of its row."""

    session_id: str
    user: str
    item: str
    opened_at: float
    closed: bool
    token_hash: str | None
    detached_at: float | None
    reconnect_grace: float
    reconnects: int
    totals: Totals

    def within_grace(self, now: float) -> bool:
        """Not closed, and attached or detached for less than its grace."""
        if self.closed:
            return False
        return self.detached_at is None or now <= self.detached_at + self.reconnect_grace


@dataclass(frozen=True)
class ResumeLookup:
    """The session's row and the requesting certificate's user, as the database has them now."""

    row: ResumableRow | None
    user: User | None
    why_not: str


_ROW_COLUMNS = (
    "id, user_name, item, opened_at, closed_at, token_hash, detached_at,"
    " COALESCE(reconnect_grace, 0), reconnects, connections, bytes_to_target, bytes_from_target"
)


def _row(values: tuple[object, ...]) -> ResumableRow:
    (session_id, user, item, opened_at, closed_at, token_hash, detached_at, grace, reconnects) = (
        values[:9]
    )
    connections, to_target, from_target = values[9:]
    return ResumableRow(
        session_id=str(session_id),
        user=str(user),
        item=str(item),
        opened_at=float(opened_at),  # type: ignore[arg-type]
        closed=closed_at is not None,
        token_hash=None if token_hash is None else str(token_hash),
        detached_at=None if detached_at is None else float(detached_at),  # type: ignore[arg-type]
        reconnect_grace=float(grace),  # type: ignore[arg-type]
        reconnects=int(reconnects),  # type: ignore[call-overload]
        totals=Totals(int(connections), int(to_target), int(from_target)),  # type: ignore[call-overload]
    )


def read_for_resume(session_id: str, serial: str) -> Callable[[Connection], ResumeLookup]:
    """The job that reads a session's row and the user of certificate C{serial}."""

    def read(db: Connection) -> ResumeLookup:
        found = db.execute(
            f"SELECT {_ROW_COLUMNS} FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        user, why = user_for_certificate(db, serial)
        return ResumeLookup(None if found is None else _row(found), user, why)

    return read


@dataclass(frozen=True)
class Detaching(FlatJsonWrite):
    """The write that marks an open session's row detached, with its totals so far.

    A record's write (it may wait in the audit spool file): rebuilt from its
    JSON form (L{DETACHED_WRITES}); it changes only a row that is still open.
    """

    session_id: str
    at: float
    reason: str
    grace: float
    totals: Totals
    name: ClassVar[str] = "session_detaching"

    def __call__(self, db: Connection) -> None:
        db.execute(
            "UPDATE sessions SET detached_at = ?, detach_reason = ?, reconnect_grace = ?,"
            " connections = ?, bytes_to_target = ?, bytes_from_target = ?"
            " WHERE id = ? AND closed_at IS NULL",
            (
                self.at,
                self.reason,
                self.grace,
                self.totals.connections,
                self.totals.bytes_to_target,
                self.totals.bytes_from_target,
                self.session_id,
            ),
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**{**data, "totals": Totals(**data["totals"])})


def detaching(session_id: str, at: float, reason: str, grace: float, totals: Totals) -> Detaching:
    """The write that marks an open session's row detached (L{Detaching})."""
    return Detaching(session_id, at, reason, grace, totals)


def claiming(session_id: str, token_hash: str, reconnects: int, now: float) -> Write:
    """The write that takes a session for a new channel, or raises L{SessionGone}.

    It holds only if nobody changed the row since it was read (C{reconnects}
    unchanged), the row is still open and within its grace: one winner.
    """

    def claim(db: Connection) -> None:
        cursor = db.execute(
            "UPDATE sessions SET detached_at = NULL, detach_reason = NULL,"
            " reconnects = reconnects + 1"
            " WHERE id = ? AND token_hash = ? AND closed_at IS NULL AND reconnects = ?"
            " AND (detached_at IS NULL OR detached_at + COALESCE(reconnect_grace, 0) >= ?)",
            (session_id, token_hash, reconnects, now),
        )
        if cursor.rowcount != 1:
            raise SessionGone(SESSION_GONE_MESSAGE)

    return claim


def closing_detached(session_id: str, closed_at: float, reason: str) -> Write:
    """The write that closes a detached row, or raises L{SessionGone} if it no longer is."""

    def close(db: Connection) -> None:
        cursor = db.execute(
            "UPDATE sessions SET closed_at = ?, close_reason = ?"
            " WHERE id = ? AND closed_at IS NULL AND detached_at IS NOT NULL",
            (closed_at, reason, session_id),
        )
        if cursor.rowcount != 1:
            raise SessionGone(SESSION_GONE_MESSAGE)

    return close


@dataclass(frozen=True)
class ExpiredRow:
    """A detached row past its grace."""

    session_id: str
    user: str
    item: str
    totals: Totals


def expired_rows(now: float, limit: int) -> Callable[[Connection], list[ExpiredRow]]:
    """The job that reads at most C{limit} detached rows whose grace ran out before C{now}."""

    def read(db: Connection) -> list[ExpiredRow]:
        rows = db.execute(
            "SELECT id, user_name, item, connections, bytes_to_target, bytes_from_target"
            " FROM sessions WHERE closed_at IS NULL AND detached_at IS NOT NULL"
            " AND detached_at + COALESCE(reconnect_grace, 0) < ? ORDER BY detached_at LIMIT ?",
            (now, limit),
        ).fetchall()
        return [
            ExpiredRow(str(r[0]), str(r[1]), str(r[2]), Totals(int(r[3]), int(r[4]), int(r[5])))
            for r in rows
        ]

    return read


@dataclass(frozen=True)
class AttachedRow:
    """An open row that is not detached (at start-up: held by a Jumpoint that was killed)."""

    session_id: str
    user: str
    item: str


def attached_rows(db: Connection) -> list[AttachedRow]:
    """The open rows without C{detached_at}."""
    rows = db.execute(
        "SELECT id, user_name, item FROM sessions WHERE closed_at IS NULL AND detached_at IS NULL"
    ).fetchall()
    return [AttachedRow(str(r[0]), str(r[1]), str(r[2])) for r in rows]


@dataclass(frozen=True)
class DetachingLeftOpen(FlatJsonWrite):
    """The write that detaches a row a stopped Jumpoint left attached (its totals unknown).

    A record's write, like L{Detaching}: it changes only an open, attached row.
    """

    session_id: str
    at: float
    reason: str
    grace: float
    name: ClassVar[str] = "session_detaching_left_open"

    def __call__(self, db: Connection) -> None:
        db.execute(
            "UPDATE sessions SET detached_at = ?, detach_reason = ?, reconnect_grace = ?"
            " WHERE id = ? AND closed_at IS NULL AND detached_at IS NULL",
            (self.at, self.reason, self.grace, self.session_id),
        )


def detaching_left_open(session_id: str, at: float, reason: str, grace: float) -> DetachingLeftOpen:
    """The write that detaches a row a stopped Jumpoint left attached (L{DetachingLeftOpen})."""
    return DetachingLeftOpen(session_id, at, reason, grace)


DETACHED_WRITES: dict[str, Callable[[dict[str, Any]], SpooledWrite]] = {
    Detaching.name: Detaching.from_json,
    DetachingLeftOpen.name: DetachingLeftOpen.from_json,
}
"""How a detachment waiting in the audit spool file is rebuilt, by its C{name}."""
