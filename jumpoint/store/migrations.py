"""Versioned schema migrations for both backends, written once in the SQLite dialect.

C{steps} is L{jumpoint.state.MIGRATIONS}: step N (1-based) brings the schema
from version N-1 to N; the version is the one row of C{schema_version}.
L{migrate} applies the missing steps in one transaction (on PostgreSQL under
a transaction-scoped advisory lock, so two members migrating at once run
one after the other and the second finds nothing to do) and returns the
versions before and after.  L{check} is what C{jumpoint serve} does on
PostgreSQL: it never migrates a shared database by itself, and refuses a
schema older than its own (run C{jumpoint migrate}) or newer (it does not
know it).  A SQLite file is migrated at open, as it always was.
"""

from __future__ import annotations

from collections.abc import Sequence

from jumpoint.store.connection import POSTGRESQL, Connection
from jumpoint.store.dialect import schema_to_postgres
from shared.errors import ConfigError

MIGRATION_LOCK = 0x6A756D70_6D696772  # "jumpmigr": pg_advisory_xact_lock's key
"""The advisory lock that serialises migrations of one PostgreSQL database."""

_CREATE_VERSION = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"


class SchemaTooNew(ConfigError):
    """The database's schema is newer than this jumpoint knows."""

    code = "schema_too_new"


class SchemaOutdated(ConfigError):
    """A shared database's schema is older than this jumpoint's: run C{jumpoint migrate}."""

    code = "schema_outdated"


def _statements(step: str, backend: str) -> list[str]:
    found = [s.strip() for s in step.split(";") if s.strip()]
    return [schema_to_postgres(s) for s in found] if backend == POSTGRESQL else found


def _too_new(where: str, version: int, known: int) -> SchemaTooNew:
    return SchemaTooNew(
        f"{where}: the state database has schema version {version}, newer than this"
        f" jumpoint knows ({known})",
        hint="upgrade jumpoint on this machine to the version that migrated the database",
    )


def read_version(db: Connection, backend: str) -> int:
    """The schema version (0: an empty database)."""
    if backend == POSTGRESQL:
        exists = db.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()[0]
    else:
        exists = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
    if not exists:
        return 0
    row = db.execute("SELECT version FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def migrate(db: Connection, backend: str, steps: Sequence[str], where: str) -> tuple[int, int]:
    """Apply the missing steps; returns (version before, version after)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if backend == POSTGRESQL:
            db.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
        db.execute(_statements(_CREATE_VERSION, backend)[0])
        row = db.execute("SELECT version FROM schema_version").fetchone()
        version = int(row[0]) if row else 0
        if version > len(steps):
            raise _too_new(where, version, len(steps))
        for step in steps[version:]:
            for statement in _statements(step, backend):
                db.execute(statement)
        if row is None:
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (len(steps),))
        elif version != len(steps):
            db.execute("UPDATE schema_version SET version = ?", (len(steps),))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return version, len(steps)


def check(db: Connection, backend: str, steps: Sequence[str], where: str) -> int:
    """The schema version, if it is exactly this jumpoint's (else an error naming both)."""
    version = read_version(db, backend)
    if version > len(steps):
        raise _too_new(where, version, len(steps))
    if version < len(steps):
        raise SchemaOutdated(
            f"{where}: the state database has schema version {version}; this jumpoint needs"
            f" {len(steps)}",
            hint="run `jumpoint migrate --config FILE` (once, from any member), then start again",
        )
    return version
