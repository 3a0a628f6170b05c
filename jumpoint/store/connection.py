"""The DB-API-like interface both backends' connections satisfy (SQL with C{?} placeholders).

A C{sqlite3.Connection} satisfies it as it is (no wrapper, so SQLite keeps its
speed); L{jumpoint.store.postgres.PostgresConnection} translates each
statement for PostgreSQL.  Shared SQL uses C{RETURNING} rather than
C{lastrowid}, C{ON CONFLICT DO NOTHING} rather than C{INSERT OR IGNORE}, and
names every subquery in C{FROM}.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
BACKENDS = (SQLITE, POSTGRESQL)


class Cursor(Protocol):
    """What a statement returns: its rows and how many rows it changed."""

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    @property
    def rowcount(self) -> int: ...


class Connection(Protocol):
    """One connection to the state database (autocommit; C{BEGIN} opens a transaction)."""

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...

    @property
    def in_transaction(self) -> bool: ...

    def close(self) -> None: ...
