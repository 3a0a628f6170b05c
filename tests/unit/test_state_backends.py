"""The state stores on both backends (SQLite, PostgreSQL): one SQL, the same answers.

Every test that takes C{open_state} runs twice, on a fresh SQLite file and
on a fresh database of the run's throwaway PostgreSQL server
(tests/postgres_server.py).  The rest checks the seam itself: the dialect
translation, the migrations (versions, a schema too new or too old, two
migrations at once), the C{state:} configuration and the DSN's secrecy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from twisted.internet.task import Clock

from jumpoint import enrollment_tokens as tokens
from jumpoint.approvals import APPROVED, PENDING, ApprovalStore
from jumpoint.audit import AuditLog, query
from jumpoint.item_store import ItemStore
from jumpoint.state import MIGRATIONS, StateDatabase
from jumpoint.store import migrations, postgres
from jumpoint.store.connection import POSTGRESQL
from jumpoint.store.dialect import schema_to_postgres, statement_to_postgres
from jumpoint.store.migrations import SchemaOutdated, SchemaTooNew
from shared.errors import ConfigError, UnknownItem, UsageError
from shared.items import item_from_data
from tests.postgres_server import PostgresServer

Opener = Callable[[], StateDatabase]


def test_users_certificates_and_revocation_seen_by_another_connection(open_state: Opener) -> None:
    database = open_state()
    assert database.schema_version == len(MIGRATIONS)
    database.add_user("alice", "ops", "abc1", "2099-01-01", ("dba",))
    with pytest.raises(UsageError, match="already exists"):
        database.add_user("alice", "ops", "abc2", "2099-01-01")
    user, why = database.user_for_certificate("abc1")
    assert user is not None and user.all_groups == ("ops", "dba") and why == ""
    other = open_state()  # the admin command's own connection
    assert other.revoke_user("alice") == 1
    user, why = database.user_for_certificate("abc1")
    assert user is None and "revoked" in why
    assert database.revoked_serials() == {"abc1"}
    database.set_groups("alice", ("ops", "ops", "audit"))  # a duplicate is ignored
    assert database.groups_of("alice") == ("ops", "audit")


def test_approvals_get_their_id_from_returning_and_are_decided_once(open_state: Opener) -> None:
    store = ApprovalStore(open_state())
    first = store.request("alice", "db", "fix", 3600.0, 600.0, 100.0)
    second = store.request("alice", "db", "again", 60.0, 600.0, 101.0)
    assert (first.id, second.id) == (1, 2) and first.status == PENDING
    decided = store.decide(first.id, "bob", True, "ok", 110.0)
    assert decided.status == APPROVED and decided.valid_until == 3710.0
    with pytest.raises(UsageError, match="approved, not pending"):
        store.decide(first.id, "carol", True, None, 111.0)
    assert store.valid_for("alice", "db", 200.0) == decided
    assert store.latest_for("alice", "db") == second
    assert [a.id for a in store.list(user="alice", items={"db"})] == [1, 2]


def test_items_written_and_read_back(open_state: Opener) -> None:
    store = ItemStore(open_state())
    item = item_from_data(
        {"name": "web", "type": "tcp", "host": "10.0.0.5", "tunnels": [{"remote_port": 80}]},
        "console",
    )
    store.create(item, "alice", 10.0)
    with pytest.raises(UsageError, match="already exists"):
        store.create(item, "alice", 11.0)
    found = store.get("web")
    assert found is not None and found.created_by == "alice" and found.host == "10.0.0.5"
    with store.database.transaction() as db:
        store.updating(item.with_changes(host="10.0.0.6"), 12.0)(db)
    assert [i.host for i in store.all()] == ["10.0.0.6"]
    with pytest.raises(UnknownItem), store.database.transaction() as db:
        store.deleting("nothing")(db)


def test_audit_events_committed_and_queried(open_state: Opener) -> None:
    database = open_state()
    audit = AuditLog(database, None, Clock())
    audit.record_sync("user_added", user="alice", rule=None, groups=["ops"], note="50% done?")
    audit.record_sync("session_denied", user="bob", item="db", rule="groups.open")
    entries = query(database, user="bob")
    assert [(e.event, e.rule, e.item) for e in entries] == [("session_denied", "groups.open", "db")]
    everything = query(database, limit=1)
    assert [e.event for e in everything] == ["session_denied"]
    assert query(database, event="user_added")[0].detail["note"] == "50% done?"


def test_enrollment_tokens_on_both_backends(open_state: Opener) -> None:
    database = open_state()
    with database.transaction() as db:
        tokens.add_user_with_token(db, "carol", ("ops", "ops"), "secret-token", 100.0, 60.0, 7)
    token = tokens.look_up(database.connection, tokens.token_hash("secret-token"))
    assert token is not None and token.user == "carol" and token.user_revoked is False
    assert tokens.pending(database.connection, 120.0) == {"carol": 160.0}
    assert tokens.never_enrolled(database.connection) == {"carol"}
    database.revoke_user("carol")
    token = tokens.look_up(database.connection, tokens.token_hash("secret-token"))
    assert token is not None and token.user_revoked and token.revoked_at is not None


def test_translation_of_statements_and_schema() -> None:
    assert statement_to_postgres("SELECT a FROM t WHERE b = ? AND c LIKE '50%?'") == (
        "SELECT a FROM t WHERE b = %s AND c LIKE '50%%?'"
    )
    assert statement_to_postgres("BEGIN IMMEDIATE") == "BEGIN"
    assert schema_to_postgres(
        "CREATE TABLE a (id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL, t REAL)"
    ) == (
        "CREATE TABLE a (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
        " n BIGINT NOT NULL, t DOUBLE PRECISION)"
    )


def test_postgresql_columns_are_64_bit_and_identity(postgres_dsn: str) -> None:
    database = StateDatabase.postgres(postgres_dsn, "test", migrate=True)
    rows = database.connection.execute(
        "SELECT column_name, data_type, is_identity FROM information_schema.columns"
        " WHERE table_name = 'approvals' AND column_name IN ('id', 'duration')"
        " ORDER BY column_name"
    ).fetchall()
    assert [tuple(r) for r in rows] == [
        ("duration", "double precision", "NO"),
        ("id", "bigint", "YES"),
    ]
    database.close()


def test_migrate_reports_the_versions_and_runs_once(postgres_dsn: str) -> None:
    connection = postgres.connect(postgres_dsn)
    assert migrations.read_version(connection, POSTGRESQL) == 0
    assert migrations.migrate(connection, POSTGRESQL, MIGRATIONS, "x") == (0, len(MIGRATIONS))
    assert migrations.migrate(connection, POSTGRESQL, MIGRATIONS, "x") == (
        len(MIGRATIONS),
        len(MIGRATIONS),
    )
    connection.close()


def test_two_members_migrating_at_once_both_succeed(postgres_dsn: str) -> None:
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        connection = postgres.connect(postgres_dsn)
        try:
            results.append(migrations.migrate(connection, POSTGRESQL, MIGRATIONS, "x"))
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sorted(results) == [(0, len(MIGRATIONS)), (len(MIGRATIONS), len(MIGRATIONS))]


def test_a_member_refuses_an_unmigrated_database_and_says_what_to_run(postgres_dsn: str) -> None:
    with pytest.raises(SchemaOutdated, match="schema version 0; this jumpoint needs") as caught:
        StateDatabase.postgres(postgres_dsn, "jumpoint.yaml: state")
    assert "jumpoint migrate" in (caught.value.hint or "")


def test_a_schema_newer_than_known_is_refused_by_both_backends(open_state: Opener) -> None:
    database = open_state()
    with database.transaction() as db:
        db.execute("UPDATE schema_version SET version = ?", (len(MIGRATIONS) + 5,))
    with pytest.raises(SchemaTooNew, match=f"version {len(MIGRATIONS) + 5}, newer than"):
        open_state()
    if database.backend == POSTGRESQL:
        assert database.dsn is not None
        with pytest.raises(SchemaTooNew, match=rf"knows \({len(MIGRATIONS)}\)"):
            StateDatabase.postgres(database.dsn, "x")


def test_a_connection_error_never_shows_the_password(postgres_server: PostgresServer) -> None:
    dsn = f"host=127.0.0.1 port={postgres_server.port} user=nobody password=hunter2 dbname=x"
    with pytest.raises(ConfigError) as caught:
        StateDatabase.postgres(dsn, "jumpoint.yaml: state")
    assert "hunter2" not in caught.value.message
    assert postgres.redacted("postgresql://u:hunter2@h/db") == "postgresql://u:***@h/db"
    assert postgres.redacted("host=h password='a b' user=u") == "host=h password=*** user=u"


def test_the_backends_report_busy_and_unavailable_apart() -> None:
    import sqlite3

    from jumpoint.db_thread import DatabaseThread

    assert DatabaseThread.classify(sqlite3.OperationalError("database is locked")) == "busy"
    assert DatabaseThread.classify(psycopg.OperationalError("connection refused")) == "unavailable"
    assert DatabaseThread.classify(ValueError("x")) == "other"


def _config(tmp_path: Path, state: str) -> Path:
    path = tmp_path / "jumpoint.yaml"
    path.write_text(
        "jumpoint: {name: j, listen: '127.0.0.1:1', addresses: [127.0.0.1]}\n" + state,
        encoding="utf-8",
    )
    return path


def test_state_config_takes_the_dsn_by_reference_only(tmp_path: Path) -> None:
    from jumpoint.config import parse_config

    def parse(state: str) -> object:
        path = _config(tmp_path, state)
        return parse_config(path.read_text(encoding="utf-8"), path)

    with pytest.raises(ConfigError, match=r"jumpoint.yaml:4: state.password: .*never goes"):
        parse("state:\n  backend: postgresql\n  password: hunter2\n")
    with pytest.raises(ConfigError, match=r"state.dsn: ") as caught:
        parse("state:\n  backend: postgresql\n  dsn: postgresql://u:hunter2@h/db\n")
    assert "hunter2" not in caught.value.message
    with pytest.raises(ConfigError, match="exactly one of dsn_file and dsn_env"):
        parse("state:\n  backend: postgresql\n")
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text("host=h dbname=d\n", encoding="utf-8")
    dsn_file.chmod(0o644)
    with pytest.raises(ConfigError, match=r":4: state.dsn_file: .*chmod 600"):
        parse("state:\n  backend: postgresql\n  dsn_file: dsn\n")
    dsn_file.chmod(0o600)
    config = parse("state:\n  backend: postgresql\n  dsn_file: dsn\n")
    assert config.state.shared and config.state.read_dsn(tmp_path) == "host=h dbname=d"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"state.dsn_env: the environment variable NOPE_X"):
        parse("state:\n  backend: postgresql\n  dsn_env: NOPE_X\n")
    sqlite = parse("state:\n  path: other.db\n")
    assert sqlite.state_database == tmp_path / "other.db"  # type: ignore[attr-defined]
    assert parse("").state_database == tmp_path / "state.db"  # type: ignore[attr-defined]
