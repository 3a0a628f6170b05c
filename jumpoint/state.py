"""The Jumpoint's state database (SQLite): the schema, users and their certificates.

SQLite needs no server, commits are atomic, and several processes (the
daemon and the admin's C{jumpoint user ...} commands) may use the file at
once.  The schema is versioned: L{MIGRATIONS} lists the steps, and opening a
database applies the missing ones inside a transaction.  The running daemon
notices commits by other processes through C{PRAGMA data_version}, which is
how C{jumpoint user revoke} reaches it without a restart.

Items, sessions, approvals and the audit log have their own modules
(L{jumpoint.item_store}, L{jumpoint.session_store}, L{jumpoint.approvals},
L{jumpoint.audit}).  In the daemon this connection only reads (WAL readers
never wait for a writer, so a read never waits for another process's lock,
and its busy timeout is cut to L{READ_BUSY_TIMEOUT}); every write runs on
the database thread (L{jumpoint.db_thread}), mostly together with its audit
event.  The admin commands write here directly (L{StateDatabase.transaction}).
"""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from jumpoint.store import migrations, postgres
from jumpoint.store.change_notice import CERTIFICATES, USERS, announce
from jumpoint.store.connection import POSTGRESQL, SQLITE, Connection
from shared.errors import ConfigError, UnknownUser, UsageError

if TYPE_CHECKING:
    from jumpoint.config import JumpointConfig

MIGRATIONS: list[str] = [
    # 1: users and certificates
    """
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        user_group TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE certificates (
        serial TEXT PRIMARY KEY,
        user_name TEXT NOT NULL REFERENCES users(name),
        issued_at TEXT NOT NULL,
        not_after TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE INDEX certificates_by_user ON certificates(user_name);
    """,
    # 2: several groups per user; items from the console; sessions; approvals; audit
    """
    CREATE TABLE user_groups (
        user_name TEXT NOT NULL REFERENCES users(name),
        group_name TEXT NOT NULL,
        PRIMARY KEY (user_name, group_name)
    );
    INSERT INTO user_groups (user_name, group_name) SELECT name, user_group FROM users;
    CREATE TABLE items (
        name TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        jump_group TEXT NOT NULL,
        spec TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        user_name TEXT NOT NULL,
        item TEXT NOT NULL,
        opened_at REAL NOT NULL,
        closed_at REAL,
        close_reason TEXT,
        ticket TEXT,
        approval_id INTEGER,
        recording TEXT,
        connections INTEGER NOT NULL DEFAULT 0,
        bytes_to_target INTEGER NOT NULL DEFAULT 0,
        bytes_from_target INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX sessions_open ON sessions(closed_at);
    CREATE TABLE approvals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_name TEXT NOT NULL,
        item TEXT NOT NULL,
        reason TEXT NOT NULL,
        duration REAL NOT NULL,
        status TEXT NOT NULL,
        requested_at REAL NOT NULL,
        request_expires_at REAL NOT NULL,
        decided_at REAL,
        decided_by TEXT,
        comment TEXT,
        valid_until REAL
    );
    CREATE INDEX approvals_by_user_item ON approvals(user_name, item);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        event TEXT NOT NULL,
        user_name TEXT,
        session TEXT,
        item TEXT,
        rule TEXT,
        detail TEXT NOT NULL
    );
    CREATE INDEX audit_by_time ON audit(time);
    CREATE INDEX audit_by_user ON audit(user_name, time);
    CREATE INDEX audit_by_item ON audit(item, time);
    """,
    # 3: single-use enrollment tokens (jumpoint.enrollment_tokens)
    """
    CREATE TABLE enrollment_tokens (
        token_hash TEXT PRIMARY KEY,
        user_name TEXT NOT NULL REFERENCES users(name),
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        certificate_days INTEGER NOT NULL,
        used_at REAL,
        used_by TEXT,
        serial TEXT,
        revoked_at REAL
    );
    CREATE INDEX enrollment_tokens_by_user ON enrollment_tokens(user_name);
    """,
    # 4: each audit event's identity (jumpoint.audit): a UUID made when it is recorded, so that
    # a retry (a lost commit reply, a replay of the local spool) never adds it twice
    """
    ALTER TABLE audit ADD COLUMN event_id TEXT;
    CREATE UNIQUE INDEX audit_by_event_id ON audit(event_id);
    """,
    # 5: resumable sessions (jumpoint.session_resume): the resume token's hash, detachment
    """
    ALTER TABLE sessions ADD COLUMN token_hash TEXT;
    ALTER TABLE sessions ADD COLUMN detached_at REAL;
    ALTER TABLE sessions ADD COLUMN detach_reason TEXT;
    ALTER TABLE sessions ADD COLUMN reconnect_grace REAL;
    ALTER TABLE sessions ADD COLUMN reconnects INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX sessions_detached ON sessions(detached_at);
    """,
]


@dataclass(frozen=True)
class User:
    name: str
    group: str
    created_at: str
    revoked_at: str | None
    groups: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def all_groups(self) -> tuple[str, ...]:
        """Every group of the user (the first one given at enrollment first)."""
        return self.groups or (self.group,)


READ_BUSY_TIMEOUT = 0.05
"""Seconds a read on the reactor thread may wait for a lock (WAL: only rare checkpoints)."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class StateDatabase:
    """A connection to the state database; one per process.

    C{StateDatabase(path)} opens (and migrates) a SQLite file, as it always
    did; L{StateDatabase.postgres} connects to a shared PostgreSQL database
    and, unless told to migrate, only checks that its schema is this
    jumpoint's (L{jumpoint.store.migrations.check}); L{open_state} picks by
    the configuration.
    """

    backend = SQLITE

    def __init__(self, path: Path, busy_timeout: float = 10.0) -> None:
        self.path: Path | None = path
        self.where = str(path)
        self.dsn: str | None = None
        self.migrated_from = 0
        try:
            db = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None)
            self._db: Connection = db
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            self.migrated_from, _ = migrations.migrate(db, SQLITE, MIGRATIONS, self.where)
        except sqlite3.Error as error:
            raise ConfigError(
                f"{path}: cannot open the state database: {error}",
                hint="check that the directory and file are writable by this user",
            ) from None

    @classmethod
    def postgres(cls, dsn: str, where: str, *, migrate: bool = False) -> StateDatabase:
        """The shared database of C{dsn} (C{where} names it in errors: never the DSN)."""
        database = cls.__new__(cls)
        database.backend = POSTGRESQL
        database.path = None
        database.where = where
        database.dsn = dsn
        database.migrated_from = 0
        try:
            connection = postgres.connect(dsn)
        except psycopg.Error as error:
            raise ConfigError(
                f"{where}: cannot connect to the PostgreSQL state database:"
                f" {postgres.redacted(str(error).strip())}",
                hint="check state.dsn_file / state.dsn_env and that the server is running",
            ) from None
        database._db = connection
        try:
            if migrate:
                database.migrated_from, _ = migrations.migrate(
                    connection, POSTGRESQL, MIGRATIONS, where
                )
            else:
                migrations.check(connection, POSTGRESQL, MIGRATIONS, where)
        except BaseException:
            connection.close()
            raise
        return database

    def close(self) -> None:
        self._db.close()

    def set_busy_timeout(self, seconds: float) -> None:
        """How long a statement here waits for another connection's lock (SQLite)."""
        if self.backend == SQLITE:
            self._db.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    @property
    def connection(self) -> Connection:
        """The connection, for the stores that share this database."""
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One atomic write transaction (C{BEGIN IMMEDIATE} ... C{COMMIT}, or rolled back)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("SELECT version FROM schema_version").fetchone()[0])

    def data_version(self) -> int:
        """Changes whenever another connection commits (PRAGMA data_version; SQLite only)."""
        return data_version(self._db)

    def add_user(
        self,
        name: str,
        group: str,
        serial: str,
        not_after: str,
        more_groups: tuple[str, ...] = (),
    ) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT revoked_at FROM users WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] is None:
                raise UsageError(
                    f"user {name!r} already exists",
                    hint=f"run `jumpoint user revoke {name}` first to issue a new enrollment",
                )
            now = _now()
            db.execute(
                "INSERT INTO users (name, user_group, created_at, revoked_at)"
                " VALUES (?, ?, ?, NULL) ON CONFLICT(name)"
                " DO UPDATE SET user_group = excluded.user_group,"
                " created_at = excluded.created_at, revoked_at = NULL",
                (name, group, now),
            )
            db.execute(
                "INSERT INTO certificates (serial, user_name, issued_at, not_after)"
                " VALUES (?, ?, ?, ?)",
                (serial, name, now, not_after),
            )
            self._set_groups(name, (group, *more_groups))
            announce(db, CERTIFICATES, serial)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def revoke_user(self, name: str) -> int:
        """Revoke the user and all their certificates; returns how many certificates."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT revoked_at FROM users WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise UnknownUser(f"no user named {name!r}", hint="see `jumpoint user list`")
            now = _now()
            db.execute(
                "UPDATE users SET revoked_at = COALESCE(revoked_at, ?) WHERE name = ?", (now, name)
            )
            cursor = db.execute(
                "UPDATE certificates SET revoked_at = ? WHERE user_name = ? AND revoked_at IS NULL",
                (now, name),
            )
            db.execute(  # a token not redeemed yet dies with the user
                "UPDATE enrollment_tokens SET revoked_at = ?"
                " WHERE user_name = ? AND used_at IS NULL AND revoked_at IS NULL",
                (datetime.datetime.now(datetime.UTC).timestamp(), name),
            )
            announce(db, USERS, name)
            db.execute("COMMIT")
            return cursor.rowcount
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _set_groups(self, name: str, groups: tuple[str, ...]) -> None:
        self._db.execute("DELETE FROM user_groups WHERE user_name = ?", (name,))
        self._db.executemany(
            "INSERT INTO user_groups (user_name, group_name) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(name, group) for group in groups],
        )
        self._db.execute("UPDATE users SET user_group = ? WHERE name = ?", (groups[0], name))
        announce(self._db, USERS, name)

    def set_groups(self, name: str, groups: tuple[str, ...]) -> None:
        """Replace the groups of user C{name} (at least one)."""
        if not groups:
            raise UsageError("a user needs at least one group")
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is None:
                raise UnknownUser(f"no user named {name!r}", hint="see `jumpoint user list`")
            self._set_groups(name, groups)

    def groups_of(self, name: str) -> tuple[str, ...]:
        return groups_of(self._db, name)

    def list_users(self) -> list[User]:
        rows = self._db.execute(
            "SELECT name, user_group, created_at, revoked_at FROM users ORDER BY name"
        ).fetchall()
        return [User(row[0], row[1], row[2], row[3], self.groups_of(row[0])) for row in rows]

    def user(self, name: str) -> User | None:
        row = self._db.execute(
            "SELECT name, user_group, created_at, revoked_at FROM users WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else User(row[0], row[1], row[2], row[3], self.groups_of(name))

    def user_for_certificate(self, serial: str) -> tuple[User | None, str]:
        """The active user owning certificate C{serial}, or C{None} and the reason why not."""
        return user_for_certificate(self._db, serial)

    def revoked_serials(self) -> set[str]:
        rows = self._db.execute(
            "SELECT serial FROM certificates WHERE revoked_at IS NOT NULL"
        ).fetchall()
        return {row[0] for row in rows}


def open_state(config: JumpointConfig, *, migrate: bool = False) -> StateDatabase:
    """The state database of C{config}: its SQLite file, or its PostgreSQL database.

    A SQLite file is always migrated at open; a PostgreSQL database only
    when C{migrate} (C{jumpoint migrate}), else its schema is checked.
    """
    if config.state.backend == POSTGRESQL:
        dsn = config.state.read_dsn(config.path)
        return StateDatabase.postgres(dsn, f"{config.path}: state", migrate=migrate)
    return StateDatabase(config.state_database)


def groups_of(db: Connection, name: str) -> tuple[str, ...]:
    """Every group of user C{name}, the first one given at enrollment first."""
    rows = db.execute(
        "SELECT g.group_name FROM user_groups g JOIN users u ON u.name = g.user_name"
        " WHERE g.user_name = ? ORDER BY g.group_name != u.user_group, g.group_name",
        (name,),
    ).fetchall()
    return tuple(row[0] for row in rows)


def user_for_certificate(db: Connection, serial: str) -> tuple[User | None, str]:
    """The active user owning certificate C{serial}, or C{None} and the reason why not."""
    row = db.execute(
        "SELECT u.name, u.user_group, u.created_at, u.revoked_at, c.revoked_at"
        " FROM certificates c JOIN users u ON u.name = c.user_name WHERE c.serial = ?",
        (serial,),
    ).fetchone()
    if row is None:
        return None, "the certificate is not registered on this Jumpoint"
    user = User(row[0], row[1], row[2], row[3], groups_of(db, row[0]))
    if row[4] is not None or not user.active:
        return None, f"the certificate of user {user.name!r} has been revoked"
    return user, ""


def data_version(db: Connection) -> int:
    """Changes whenever another connection commits (PRAGMA data_version)."""
    return int(db.execute("PRAGMA data_version").fetchone()[0])
