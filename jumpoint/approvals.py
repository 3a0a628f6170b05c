"""Access requests and their approvals (jump policies with C{approval_required}).

A user asks with C{jump request ITEM --reason TEXT --duration D}; a member
of the policy's approver group approves or denies it.  An unanswered request
expires after the policy's C{approval_request_timeout}; an approved one is
valid for its duration from the approval and then expires too.  Statuses are
kept in the state database; expiry is computed from the clock when read, so
nothing needs a timer.  Reads run where they are called; the two writes are
jobs (L{ApprovalStore.requesting}, L{ApprovalStore.deciding}) that the audit
log commits on the database thread together with their audit events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jumpoint.state import StateDatabase
from jumpoint.store.connection import Connection
from shared.errors import AccessDenied, UnknownRequest, UsageError

PENDING = "pending"
APPROVED = "approved"
DENIED = "denied"
EXPIRED = "expired"


@dataclass(frozen=True)
class Approval:
    """One access request and what became of it."""

    id: int
    user: str
    item: str
    reason: str
    duration: float
    status: str
    requested_at: float
    request_expires_at: float
    decided_at: float | None
    decided_by: str | None
    comment: str | None
    valid_until: float | None

    def status_at(self, now: float) -> str:
        if self.status == PENDING and now >= self.request_expires_at:
            return EXPIRED
        if self.status == APPROVED and self.valid_until is not None and now >= self.valid_until:
            return EXPIRED
        return self.status

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "item": self.item,
            "reason": self.reason,
            "duration": self.duration,
            "status": self.status_at(now),
            "requested_at": self.requested_at,
            "request_expires_at": self.request_expires_at,
            "decided_at": self.decided_at,
            "decided_by": self.decided_by,
            "comment": self.comment,
            "valid_until": self.valid_until,
        }


_COLUMNS = (
    "id, user_name, item, reason, duration, status, requested_at, request_expires_at,"
    " decided_at, decided_by, comment, valid_until"
)


class ApprovalStore:
    """The C{approvals} table."""

    def __init__(self, database: StateDatabase) -> None:
        self.database = database

    def requesting(
        self, user: str, item: str, reason: str, duration: float, timeout: float, now: float
    ) -> Callable[[Connection], Approval]:
        """The write that adds a pending request (its job returns the new request)."""

        def request(db: Connection) -> Approval:
            row = db.execute(
                "INSERT INTO approvals (user_name, item, reason, duration, status, requested_at,"
                " request_expires_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (user, item, reason, duration, PENDING, now, now + timeout),
            ).fetchone()
            return _read(db, int(row[0]))

        return request

    def request(
        self, user: str, item: str, reason: str, duration: float, timeout: float, now: float
    ) -> Approval:
        """L{requesting}, committed here (tools and tests; the daemon commits it audited)."""
        with self.database.transaction() as db:
            return self.requesting(user, item, reason, duration, timeout, now)(db)

    def decide(
        self, request_id: int, approver: str, approve: bool, comment: str | None, now: float
    ) -> Approval:
        """L{check_decidable} and L{deciding}, committed here (tools and tests)."""
        current = self.check_decidable(request_id, approver, now)
        with self.database.transaction() as db:
            return self.deciding(current, approver, approve, comment, now)(db)

    def get(self, request_id: int) -> Approval | None:
        row = self.database.connection.execute(
            f"SELECT {_COLUMNS} FROM approvals WHERE id = ?", (request_id,)
        ).fetchone()
        return None if row is None else Approval(*row)

    def list(self, *, user: str | None = None, items: set[str] | None = None) -> list[Approval]:
        rows = self.database.connection.execute(
            f"SELECT {_COLUMNS} FROM approvals ORDER BY id"
        ).fetchall()
        found = [Approval(*row) for row in rows]
        return [
            a
            for a in found
            if (user is None or a.user == user) and (items is None or a.item in items)
        ]

    def check_decidable(self, request_id: int, approver: str, now: float) -> Approval:
        """The pending request C{request_id}, if C{approver} may decide it (else an error)."""
        current = self.get(request_id)
        if current is None:
            raise UnknownRequest(f"no access request {request_id}", hint="see `jump approvals`")
        if current.user == approver:
            raise AccessDenied(
                f"request {request_id} is your own; another approver must decide it",
                rule="approvals.second_person",
            )
        status = current.status_at(now)
        if status != PENDING:
            raise UsageError(f"request {request_id} is {status}, not pending")
        return current

    def deciding(
        self, current: Approval, approver: str, approve: bool, comment: str | None, now: float
    ) -> Callable[[Connection], Approval]:
        """The write that decides C{current} (checked by L{check_decidable}); returns it decided."""

        def decide(db: Connection) -> Approval:
            cursor = db.execute(
                "UPDATE approvals SET status = ?, decided_at = ?, decided_by = ?, comment = ?,"
                " valid_until = ? WHERE id = ? AND status = ?",
                (
                    APPROVED if approve else DENIED,
                    now,
                    approver,
                    comment,
                    now + current.duration if approve else None,
                    current.id,
                    PENDING,
                ),
            )
            if cursor.rowcount != 1:
                raise UsageError(f"request {current.id} was decided meanwhile")
            return _read(db, current.id)

        return decide

    def valid_for(self, user: str, item: str, now: float) -> Approval | None:
        """The approved, unexpired request of C{user} for C{item} lasting longest, if any."""
        rows = self.database.connection.execute(
            f"SELECT {_COLUMNS} FROM approvals WHERE user_name = ? AND item = ? AND status = ?"
            " AND valid_until > ? ORDER BY valid_until DESC LIMIT 1",
            (user, item, APPROVED, now),
        ).fetchall()
        return Approval(*rows[0]) if rows else None

    def latest_for(self, user: str, item: str) -> Approval | None:
        row = self.database.connection.execute(
            f"SELECT {_COLUMNS} FROM approvals WHERE user_name = ? AND item = ?"
            " ORDER BY id DESC LIMIT 1",
            (user, item),
        ).fetchone()
        return None if row is None else Approval(*row)


def _read(db: Connection, request_id: int) -> Approval:
    row = db.execute(f"SELECT {_COLUMNS} FROM approvals WHERE id = ?", (request_id,)).fetchone()
    return Approval(*row)
