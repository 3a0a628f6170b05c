"""Announcing a change to the other members: C{NOTIFY jumpoint_changes} in the write's transaction.

Every write that changes users, certificates, approvals, items or sessions
calls L{announce} inside its transaction.  On PostgreSQL that queues a
notification on channel L{CHANNEL} with the payload C{table:key}, which the
server delivers to every listener when (and only if) the transaction
commits (L{jumpoint.store.change_feed}); on SQLite it does nothing: the
members there are one process, and other processes' commits are seen
through C{PRAGMA data_version}.
"""

from __future__ import annotations

from dataclasses import dataclass

from jumpoint.store.connection import Connection
from jumpoint.store.postgres import PostgresConnection

CHANNEL = "jumpoint_changes"

PAYLOAD_LIMIT = 1000
"""Characters of a key sent (PostgreSQL refuses payloads of 8000 bytes or more)."""

USERS = "users"
CERTIFICATES = "certificates"
APPROVALS = "approvals"
ITEMS = "items"
SESSIONS = "sessions"


@dataclass(frozen=True)
class Change:
    """One announced change: its table and the key of its row (may be empty)."""

    table: str
    key: str

    @classmethod
    def parse(cls, payload: str) -> Change:
        table, _, key = payload.partition(":")
        return cls(table, key)


def announce(db: Connection, table: str, key: object) -> None:
    """Tell the other members that row C{key} of C{table} changed (at commit)."""
    if isinstance(db, PostgresConnection):
        text = str(key)
        if len(text) > PAYLOAD_LIMIT:
            text = ""  # the listeners re-read the whole table
        db.execute("SELECT pg_notify(?, ?)", (CHANNEL, f"{table}:{text}"))
