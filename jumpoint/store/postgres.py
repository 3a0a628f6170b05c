"""A psycopg 3 connection behind the shared interface (L{jumpoint.store.connection.Connection}).

The connection is in autocommit mode, like the SQLite ones (C{isolation_level
=None}): the shared code opens its transactions with C{BEGIN} and ends them
with C{COMMIT}/C{ROLLBACK}, and every statement is translated by
L{jumpoint.store.dialect}.  libpq's TCP keepalives and C{tcp_user_timeout}
are set so a dead server is noticed in seconds, not at TCP's 15 minutes.
Errors name the server but never the DSN's password (L{redacted}).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg.conninfo import make_conninfo

from jumpoint.store.dialect import statement_to_postgres

CONNECT_TIMEOUT = 5
"""Seconds one connection attempt may take."""

_KEEPALIVE = {
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
}

_PASSWORD_KEYWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_PASSWORD_URL = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def redacted(text: str) -> str:
    """C{text} (a DSN or an error quoting one) with any password replaced by C{***}."""
    text = _PASSWORD_KEYWORD.sub(r"\1***", text)
    return _PASSWORD_URL.sub(r"\1***@", text)


class PostgresConnection:
    """One psycopg connection; used by one thread at a time."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        return self.raw.execute(statement_to_postgres(sql), tuple(parameters))

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> psycopg.Cursor[Any]:
        cursor = self.raw.cursor()
        cursor.executemany(statement_to_postgres(sql), [tuple(p) for p in parameters])
        return cursor

    def execute_raw(self, sql: str) -> psycopg.Cursor[Any]:
        """A statement in PostgreSQL's own dialect, untranslated (migrations, LISTEN)."""
        return self.raw.execute(sql.encode("utf-8"))

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE

    @property
    def broken(self) -> bool:
        """Whether the connection to the server is lost (a new one is needed)."""
        return self.raw.closed or self.raw.broken

    def close(self) -> None:
        self.raw.close()


def connect(dsn: str, *, application_name: str = "jumpoint") -> PostgresConnection:
    """A new connection (autocommit, keepalives); raises C{psycopg.OperationalError}."""
    conninfo = make_conninfo(
        dsn,
        connect_timeout=str(CONNECT_TIMEOUT),
        application_name=application_name,
        **_KEEPALIVE,
    )
    raw = psycopg.connect(conninfo, autocommit=True)
    return PostgresConnection(raw)
