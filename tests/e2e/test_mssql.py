"""End to end: real SQL Server clients through `jump open` and `jumpoint serve` to a test server.

No SQL Server can be installed here, so the target is the test TDS server of
`tests/tds/fake_server.py`, which speaks the real protocol (PRELOGIN, TLS
inside TDS, TDS 8.0, LOGIN7, NTLM, routing) and records the credentials it
received.  The clients are the real ones: pytds, pymssql (FreeTDS 1.5),
Debian's tsql (FreeTDS 1.3) and tedious 18 on Node.js.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.codecs.tds.login7 import obfuscate_password
from tests.e2e.harness import Deployment, Process, audit_until, tunnel_address, wait_until
from tests.tds import clients
from tests.tds.fake_server import FakeTdsServer

SECRET = "S3cr3t-Pa55w0rd!"
USER = "app_ro"


@dataclass
class SqlSetup:
    deployment: Deployment
    server: FakeTdsServer
    session: Process
    host: str
    port: int
    local_ca: str
    transcript: Path
    tls: clients.TlsFiles

    def audit(self, *args: str) -> list[dict[str, Any]]:
        result = self.deployment.jumpoint("audit", "--json", *args)
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _item(name: str, server: FakeTdsServer, ca_pem: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "mssql",
        "host": "127.0.0.1",
        "port": server.port,
        "username": USER,
        "database": "sales",
        "local_address": "127.0.0.6",
        "local_port": "auto",
        "ca_pem": ca_pem,
        **extra,
    }


def _open(deployment: Deployment, item: str, transcript: Path) -> tuple[Process, str, int]:
    session = deployment.open(item, JUMP_TRANSCRIPT=str(transcript))
    ready = session.wait_for_event("ready")
    host, port = tunnel_address(ready)
    return session, host, port


@pytest.fixture
def sql(deployment: Deployment, tmp_path: Path) -> Iterator[SqlSetup]:
    tls = clients.write_tls_files(tmp_path)
    server = FakeTdsServer(
        encryption="on", cert=tls.cert, key=tls.key, user=USER, password=SECRET, rows=2000
    ).start()
    try:
        secret = tmp_path / "sql.secret"
        secret.write_text(SECRET + "\n")
        secret.chmod(0o600)
        ca_pem = Path(tls.ca).read_text()
        deployment.items = [_item("sql", server, ca_pem)]
        deployment.sections = {"credentials": [{"item": "sql", "password_file": str(secret)}]}
        deployment.create().serve()
        transcript = tmp_path / "transcript.bin"
        session, host, port = _open(deployment, "sql", transcript)
        local_ca = deployment.jump("ca").stdout.strip()
        assert Path(local_ca).is_file()
        yield SqlSetup(deployment, server, session, host, port, local_ca, transcript, tls)
    finally:
        server.stop()


def _no_secret_reached_the_console(setup: SqlSetup) -> None:
    received = setup.transcript.read_bytes()
    assert received, "the transcript is empty: JUMP_TRANSCRIPT did not work"
    for form in (
        SECRET.encode(),
        SECRET.encode("utf-16-le"),
        obfuscate_password(SECRET),
    ):
        assert form not in received


def _only_the_injected_credential(setup: SqlSetup) -> None:
    logins = setup.server.logins()
    assert logins, "the server saw no login"
    for login in logins:
        assert login["user"] == USER and login["password"] == SECRET, login
        assert login["servername"] == "127.0.0.1"


def test_the_binding_names_the_login_and_database(sql: SqlSetup) -> None:
    opened = sql.deployment.jump("open", "sql", "--for", "1s")
    assert opened.returncode == 0, opened.stderr
    assert (
        f"-> 127.0.0.1:{sql.server.port} (SQL Server as '{USER}', database 'sales')"
        in opened.stdout
    )
    listed = sql.deployment.jump("items")
    assert "mssql" in listed.stdout


MODES = [
    pytest.param("pytds", "none", id="pytds-no-encryption"),
    pytest.param("pytds", "ca", id="pytds-ca-file"),
    pytest.param("pytds", "login-only", id="pytds-login-only"),
    pytest.param("pymssql", "off", id="pymssql-off"),
    pytest.param("pymssql", "request", id="pymssql-request"),
    pytest.param("pymssql", "require", id="pymssql-require"),
    pytest.param("pymssql", "strict", id="pymssql-strict"),
    pytest.param("tsql", "request", id="tsql-request"),
    pytest.param("tsql", "off", id="tsql-off"),
    pytest.param("tsql", "require", id="tsql-require"),
    pytest.param("tedious", "off", id="tedious-encrypt-off"),
    pytest.param("tedious", "on", id="tedious-encrypt-on"),
]


def _run(client: str, mode: str, host: str, port: int, ca: str, tmp: Path, query: str) -> Any:
    placeholder, anything = "jump", "x"
    if client == "pytds":
        return clients.run_pytds(
            host,
            port,
            placeholder,
            anything,
            cafile=ca if mode in ("ca", "login-only") else None,
            enc_login_only=mode == "login-only",
            query=query,
        )
    if client == "pymssql":
        if mode == "strict":
            conf = clients.freetds_conf(tmp, "strict", ca_file=ca)
            return clients.run_pymssql(
                host, port, placeholder, anything, encryption=None, freetds_conf=conf, query=query
            )
        return clients.run_pymssql(host, port, placeholder, anything, encryption=mode, query=query)
    if client == "tsql":
        result = clients.run_tsql(host, port, placeholder, anything, encryption=mode, query=query)
        return clients.tsql_rows(result.stdout)
    return clients.run_tedious(
        host, port, placeholder, anything, encrypt=mode == "on", trust=False, ca=ca, query=query
    )


@pytest.mark.parametrize(("client", "mode"), MODES)
def test_a_real_client_logs_in_with_the_injected_credential(
    sql: SqlSetup, tmp_path: Path, client: str, mode: str
) -> None:
    result = _run(client, mode, sql.host, sql.port, sql.local_ca, tmp_path, "SELECT 1")
    assert "1" in json.dumps(result, default=str), result
    _only_the_injected_credential(sql)
    _no_secret_reached_the_console(sql)


def test_batches_and_rpcs_are_audited_and_results_span_packets(sql: SqlSetup) -> None:
    rows = clients.run_pytds(sql.host, sql.port, "jump", "x", query="SELECT rows")
    assert len(rows) == 2000
    clients.run_tedious(sql.host, sql.port, "jump", "x", encrypt=False, query="SELECT 1")
    entries = audit_until(
        sql.deployment,
        lambda rows: (
            {"sql_batch", "sql_rpc"} <= {r["event"] for r in rows}
            and "SELECT rows" in json.dumps(rows)
        ),
        what="the batch and RPC audit rows",
    )
    entries = [e for e in entries if e["event"] in ("sql_batch", "sql_rpc")]
    texts = json.dumps(entries)
    assert "SELECT rows" in texts
    assert "sp_executesql" in texts
    assert all(e["session"] == sql.session.wait_for_event("ready")["session"] for e in entries)
    assert SECRET not in json.dumps(sql.audit())
    assert SECRET not in "\n".join(sql.deployment.processes[0].stdout_lines)


def test_cancel_works_in_the_middle_of_a_result(sql: SqlSetup) -> None:
    """The reader blocks in fetchall while another thread sends the ATTENTION through the tunnel.

    (pytds' own cursor.cancel() also reads the reply, so only the sending half runs
    on the other thread.)
    """
    with clients.pytds_connect(sql.host, sql.port, "jump", "x", timeout=30) as connection:
        cursor = connection.cursor()
        cursor.execute("WAITFOR DELAY '00:00:30'")

        def cancel_when_streaming() -> None:
            sql.server.wait_for(
                lambda records: any("WAITFOR" in r.get("batch", "") for r in records)
            )
            cursor._session.put_cancel()

        canceller = threading.Thread(target=cancel_when_streaming, daemon=True)
        canceller.start()
        rows = cursor.fetchall()  # ends early: the server acknowledged the attention
        canceller.join(10)
        assert 0 <= len(rows) < 600  # 30 s of rows at one packet every 50 ms is ~600
        sql.server.wait_for(lambda records: any(r.get("attention") for r in records))
        cursor.execute("SELECT 1")  # the connection still works after the cancel
        assert cursor.fetchall() == [(1,)]


def test_a_wrong_stored_credential_gives_a_clean_18456(
    deployment: Deployment, tmp_path: Path
) -> None:
    tls = clients.write_tls_files(tmp_path)
    with FakeTdsServer(
        encryption="on", cert=tls.cert, key=tls.key, user=USER, password=SECRET
    ) as server:
        wrong = tmp_path / "wrong.secret"
        wrong.write_text("not-the-password\n")
        wrong.chmod(0o600)
        deployment.items = [_item("sql", server, Path(tls.ca).read_text())]
        deployment.sections = {"credentials": [{"item": "sql", "password_file": str(wrong)}]}
        deployment.create().serve()
        session, host, port = _open(deployment, "sql", tmp_path / "t.bin")
        with pytest.raises(Exception) as failure:
            clients.run_pytds(host, port, "jump", "x")
        assert getattr(failure.value, "number", None) == 18456, failure.value
        assert "Login failed" in str(failure.value)
        assert "not-the-password" not in str(failure.value)
        assert session.popen.poll() is None  # the session stays up

        def login_failure_audited() -> bool:  # connection events are committed in batches
            lines = deployment.jumpoint("audit", "--json").stdout.splitlines()
            return "sql_login_failed" in [json.loads(line)["event"] for line in lines]

        wait_until(login_failure_audited, what="the sql_login_failed audit row")


def test_routing_is_followed_on_the_jumpoint(deployment: Deployment, tmp_path: Path) -> None:
    tls = clients.write_tls_files(tmp_path)
    with (
        FakeTdsServer(
            encryption="on", cert=tls.cert, key=tls.key, user=USER, password=SECRET
        ) as second,
        FakeTdsServer(
            encryption="on",
            cert=tls.cert,
            key=tls.key,
            user=USER,
            password=SECRET,
            route_to=f"127.0.0.1:{second.port}",
        ) as first,
    ):
        secret = tmp_path / "sql.secret"
        secret.write_text(SECRET)
        secret.chmod(0o600)
        deployment.items = [
            _item(
                "sql",
                first,
                Path(tls.ca).read_text(),
                allowed_routes=[f"127.0.0.1:{second.port}"],
            )
        ]
        deployment.sections = {"credentials": [{"item": "sql", "password_file": str(secret)}]}
        deployment.create().serve()
        transcript = tmp_path / "t.bin"
        _session, host, port = _open(deployment, "sql", transcript)
        assert clients.run_pytds(host, port, "jump", "x") == [(1,)]
        assert first.logins() and second.logins()
        assert all(login["password"] == SECRET for login in second.logins())
        assert str(second.port).encode("utf-16-le") not in transcript.read_bytes()
        (routed,) = audit_until(
            deployment, lambda rows: len(rows) == 1, "--event", "sql_routed", what="sql_routed"
        )
        assert routed["to"] == f"127.0.0.1:{second.port}"


@pytest.mark.parametrize("refused_by", ["allowed_routes", "allowed_targets"])
def test_a_route_the_rules_refuse_gets_a_clean_login_failure(
    deployment: Deployment, tmp_path: Path, refused_by: str
) -> None:
    tls = clients.write_tls_files(tmp_path)
    with (
        FakeTdsServer(
            encryption="on", cert=tls.cert, key=tls.key, user=USER, password=SECRET
        ) as second,
        FakeTdsServer(
            encryption="on",
            cert=tls.cert,
            key=tls.key,
            user=USER,
            password=SECRET,
            route_to=f"127.0.0.1:{second.port}",
        ) as first,
    ):
        secret = tmp_path / "sql.secret"
        secret.write_text(SECRET)
        secret.chmod(0o600)
        extra: dict[str, Any] = {}
        sections: dict[str, Any] = {"credentials": [{"item": "sql", "password_file": str(secret)}]}
        if refused_by == "allowed_targets":  # the item allows the route, the Jumpoint does not
            extra["allowed_routes"] = [f"127.0.0.1:{second.port}"]
            sections["allowed_targets"] = [f"127.0.0.1:{first.port}"]
        deployment.items = [_item("sql", first, Path(tls.ca).read_text(), **extra)]
        deployment.sections = sections
        deployment.create().serve()
        session, host, port = _open(deployment, "sql", tmp_path / "t.bin")
        with pytest.raises(Exception) as failure:
            clients.run_pytds(host, port, "jump", "x")
        assert getattr(failure.value, "number", None) == 18456, failure.value
        assert f"(rule: {refused_by})" in str(failure.value)
        assert first.logins() and second.accepted == 0  # the route was never dialled
        assert session.popen.poll() is None  # the session stays up
        (failed,) = audit_until(
            deployment,
            lambda rows: len(rows) == 1,
            "--event",
            "sql_login_failed",
            what="the sql_login_failed row of the refused route",
        )
        assert failed["rule"] == refused_by and failed["to"] == f"127.0.0.1:{second.port}"
        routed = deployment.jumpoint("audit", "--json", "--event", "sql_routed").stdout
        assert routed.strip() == ""


def _read_to_end(sock: Any) -> bytes:
    """Everything until the peer closes (or aborts) the connection."""
    received = bytearray()
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return bytes(received)


def test_a_client_that_never_logs_in_is_closed_at_the_login_timeout(
    deployment: Deployment, tmp_path: Path
) -> None:
    import socket
    import time

    tls = clients.write_tls_files(tmp_path)
    with FakeTdsServer(
        encryption="on", cert=tls.cert, key=tls.key, user=USER, password=SECRET
    ) as server:
        secret = tmp_path / "sql.secret"
        secret.write_text(SECRET)
        secret.chmod(0o600)
        deployment.items = [_item("sql", server, Path(tls.ca).read_text(), login_timeout="2s")]
        deployment.sections = {"credentials": [{"item": "sql", "password_file": str(secret)}]}
        deployment.create().serve()
        session, host, port = _open(deployment, "sql", tmp_path / "t.bin")
        ready = session.wait_for_event("ready")
        assert ready["login_timeout"] == 2
        silent = socket.create_connection((host, port), timeout=20)
        partial = socket.create_connection((host, port), timeout=20)
        partial.sendall(bytes.fromhex("12 01 00 2f 00 00 01 00 00 00 1a"))  # half a PRELOGIN
        started = time.monotonic()
        for sock in (silent, partial):
            with sock:  # a read times out (the test fails) unless the console closes it
                assert _read_to_end(sock) == b""  # nothing answers half a PRELOGIN
        assert time.monotonic() - started >= 1.5  # closed by the timeout, not at once

        def counted() -> dict[str, Any] | None:
            stats = [e for e in session.json_events() if e.get("event") == "stats"]
            if stats and stats[-1]["tunnels"][0]["login_timeouts"] == 2:
                return stats[-1]
            return None

        last = wait_until(counted, what="a stats event counting 2 login timeouts")
        assert last["connections"] == 0
        assert server.accepted == 0  # nothing was dialled for them
        assert clients.run_pytds(host, port, "jump", "x") == [(1,)]  # the session serves on
        assert server.accepted == 1


def test_windows_authentication_is_computed_on_the_jumpoint(
    deployment: Deployment, tmp_path: Path
) -> None:
    tls = clients.write_tls_files(tmp_path)
    users = tmp_path / "ntlm-users"
    users.write_text(f"CORP:{USER}:{SECRET}\n")
    with FakeTdsServer(
        encryption="on", cert=tls.cert, key=tls.key, ntlm_user_file=str(users)
    ) as server:
        secret = tmp_path / "sql.secret"
        secret.write_text(SECRET)
        secret.chmod(0o600)
        deployment.items = [_item("sql", server, Path(tls.ca).read_text())]
        deployment.sections = {
            "credentials": [
                {
                    "item": "sql",
                    "type": "ntlm",
                    "domain": "CORP",
                    "username": USER,
                    "password_file": str(secret),
                }
            ]
        }
        deployment.create().serve()
        _session, host, port = _open(deployment, "sql", tmp_path / "t.bin")
        assert clients.run_pytds(host, port, "jump", "x") == [(1,)]
        login = server.logins()[-1]
        assert login["auth"] == "ntlm" and USER in str(login["ntlm_user"]) and login["ok"]


def test_an_mssql_item_needs_a_credential(deployment: Deployment, tmp_path: Path) -> None:
    tls = clients.write_tls_files(tmp_path)
    with FakeTdsServer(encryption="on", cert=tls.cert, key=tls.key) as server:
        deployment.items = [_item("sql", server, Path(tls.ca).read_text())]
        deployment.create().serve()
        _session, host, port = _open(deployment, "sql", tmp_path / "t.bin")
        with pytest.raises(Exception) as failure:
            clients.run_pytds(host, port, "jump", "x")
        assert getattr(failure.value, "number", None) == 18456, failure.value
        assert "no credential" in str(failure.value)
        assert server.logins() == []  # nothing was sent to the server


def test_a_command_runs_with_the_sql_tunnel_and_passes_its_status(sql: SqlSetup) -> None:
    script = (
        "import os, sys, pytds\n"
        "c = pytds.connect(server=os.environ['JUMP_LOCAL_ADDR'],"
        " port=int(os.environ['JUMP_LOCAL_PORT']), user='jump', password='x', timeout=15)\n"
        "cur = c.cursor(); cur.execute('SELECT 1'); print('ROWS', cur.fetchall())\n"
        "sys.exit(7)\n"
    )
    import sys

    ran = sql.deployment.jump("open", "sql", "--", sys.executable, "-c", script)
    assert ran.returncode == 7, ran.stderr
    assert "ROWS [(1,)]" in ran.stdout
    _only_the_injected_credential(sql)
