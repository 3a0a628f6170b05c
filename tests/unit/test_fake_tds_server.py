"""The fake SQL Server (L{tests.tds.fake_server}) against real TDS clients, no proxy.

pytds and pymssql from PyPI, FreeTDS C{tsql} from Debian C{freetds-bin}, tedious 18 on
Node (C{tests/tds/node}).  Each test asserts what the client got (rows, error text) and
what the server saw (its login / batch / RPC records).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytds
import pytest

from tests.tds import clients, wire
from tests.tds.clients import ClientError, TlsFiles
from tests.tds.fake_server import FakeTdsOptions, FakeTdsServer

HOST = "127.0.0.1"
USER = "app_user"
PASSWORD = "Str0ng!Secret"


def _requires(available: bool, install: str) -> Callable[[Any], Any]:
    """A client the test needs: when it is missing the test FAILS (CI installs every client)."""

    def decorate(test: Any) -> Any:
        @functools.wraps(test)
        def checked(*args: Any, **kwargs: Any) -> Any:
            if not available:
                pytest.fail(f"this test needs a client that is not installed: {install}")
            return test(*args, **kwargs)

        return checked

    return decorate


needs_pymssql = _requires(
    subprocess.run([sys.executable, "-c", "import pymssql"], capture_output=True).returncode == 0,
    "pip install pymssql (scripts/setup.sh)",
)
needs_tsql = _requires(clients.tsql_path() is not None, "apt-get install freetds-bin")
needs_tedious = _requires(clients.tedious_installed(), "(cd tests/tds/node && npm ci)")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return clients.write_tls_files(tmp_path_factory.mktemp("tds-tls"))


@pytest.fixture
def make_server(tls: TlsFiles) -> Iterator[Callable[..., FakeTdsServer]]:
    servers: list[FakeTdsServer] = []

    def make(**options: Any) -> FakeTdsServer:
        options.setdefault("cert", tls.cert)
        options.setdefault("key", tls.key)
        server = FakeTdsServer(FakeTdsOptions(**options)).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
    for server in servers:
        assert not [e for e in server.errors if "Traceback" in e], server.errors


@pytest.fixture
def server(make_server: Callable[..., FakeTdsServer]) -> FakeTdsServer:
    return make_server(user=USER, password=PASSWORD)


def only_login(server: FakeTdsServer) -> dict[str, Any]:
    logins = server.wait_for(lambda records: any("ok" in r for r in records))
    found = [r for r in logins if "ok" in r]
    assert len(found) == 1, found
    return found[0]


# ----------------------------------------------------------------------------- pytds


def test_pytds_without_encryption(server: FakeTdsServer) -> None:
    assert clients.run_pytds(HOST, server.port, USER, PASSWORD, database="sales") == [(1,)]
    login = only_login(server)
    assert login["ok"] is True
    assert (login["user"], login["password"], login["database"]) == (USER, PASSWORD, "sales")
    assert login["encryption"] == "none"
    assert login["auth"] == "sql"
    assert login["library"] == "Python TDS Library"
    assert login["tds_version"] == "0x74000004"
    assert "SELECT 1" in server.batches()


def test_pytds_full_tls_verifies_the_ca(
    make_server: Callable[..., FakeTdsServer], tls: TlsFiles, tmp_path: Path
) -> None:
    server = make_server(user=USER, password=PASSWORD, rows=3000)
    rows = clients.run_pytds(HOST, server.port, USER, PASSWORD, cafile=tls.ca, query="SELECT rows")
    assert len(rows) == 3000 and rows[-1] == (3000, "row 3000 of 3000")  # many packets inside TLS
    login = only_login(server)
    assert (login["encryption"], login["tls_version"]) == ("full", "TLSv1.2")
    assert login["password"] == PASSWORD

    other = clients.write_tls_files(tmp_path)
    with pytest.raises(Exception, match="certificate verify failed|CERTIFICATE_VERIFY_FAILED"):
        clients.run_pytds(HOST, server.port, USER, PASSWORD, cafile=other.ca)
    assert len(server.logins()) == 1  # the untrusted session never reached LOGIN7


def test_pytds_login_only_encryption(server: FakeTdsServer, tls: TlsFiles) -> None:
    rows = clients.run_pytds(
        HOST, server.port, USER, PASSWORD, cafile=tls.ca, enc_login_only=True, query="SELECT rows"
    )
    assert len(rows) == 100
    login = only_login(server)
    assert login["encryption"] == "login-only"
    assert login["password"] == PASSWORD


@pytest.mark.parametrize("mode", ["none", "full", "login-only"])
def test_pytds_ntlm(
    make_server: Callable[..., FakeTdsServer], tls: TlsFiles, tmp_path: Path, mode: str
) -> None:
    users = tmp_path / "ntlm_users"
    users.write_text("CORP:alice:Al1ce-pass\n")
    server = make_server(ntlm_user_file=str(users))
    tls_options: dict[str, Any] = {
        "none": {},
        "full": {"cafile": tls.ca},
        "login-only": {"cafile": tls.ca, "enc_login_only": True},
    }[mode]
    good = ("CORP\\alice", "Al1ce-pass")
    assert clients.run_pytds(HOST, server.port, ntlm=good, **tls_options) == [(1,)]
    login = only_login(server)
    assert (login["auth"], login["ntlm_user"], login["ok"]) == ("ntlm", "CORP\\alice", True)
    assert (login["ntlm_check"], login["encryption"]) == ("ntlm", mode)
    assert (login["user"], login["password"]) == ("", "")

    with pytest.raises(pytds.OperationalError, match="untrusted domain") as failure:
        clients.run_pytds(HOST, server.port, ntlm=("CORP\\alice", "wrong"), **tls_options)
    assert failure.value.msg_no == 18452
    assert server.logins()[-1]["ok"] is False


def test_pytds_multi_packet_result(make_server: Callable[..., FakeTdsServer]) -> None:
    server = make_server(rows=5000)
    rows = clients.run_pytds(HOST, server.port, "u", "p", query="SELECT rows FROM big")
    assert len(rows) == 5000
    assert rows[0] == (1, "row 1 of 5000")
    assert rows[-1] == (5000, "row 5000 of 5000")

    _, result = clients.raw_login(HOST, server.port, "u", "p", query="SELECT rows")
    assert result is not None
    assert len(result.response.rows) == 5000
    assert result.packets > 30  # 4096-byte packets
    assert result.response.of("done")[-1] == {
        "status": wire.DONE_COUNT,
        "curcmd": wire.CURCMD_SELECT,
        "rowcount": 5000,
    }


def test_pytds_login_error_text(make_server: Callable[..., FakeTdsServer]) -> None:
    server = make_server(login_error="Jumpoint: access to this database is not granted")
    with pytest.raises(
        pytds.OperationalError, match="access to this database is not granted"
    ) as failure:
        clients.run_pytds(HOST, server.port, USER, PASSWORD)
    assert failure.value.msg_no == 18456
    assert only_login(server)["ok"] is False


def test_pytds_wrong_password(server: FakeTdsServer) -> None:
    with pytest.raises(pytds.OperationalError, match=f"Login failed for user '{USER}'") as failure:
        clients.run_pytds(HOST, server.port, USER, "guess")
    assert failure.value.msg_no == 18456
    login = only_login(server)
    assert (login["ok"], login["password"]) == (False, "guess")


def test_routing_is_followed_by_pytds(make_server: Callable[..., FakeTdsServer]) -> None:
    target = make_server(user=USER, password=PASSWORD)
    router = make_server(route_to=f"{HOST}:{target.port}")
    assert clients.run_pytds(HOST, router.port, USER, PASSWORD) == [(1,)]
    assert only_login(router)["ok"] is True
    assert router.batches() == []  # the client left after the routing ENVCHANGE
    assert only_login(target)["password"] == PASSWORD
    assert "SELECT 1" in target.batches()

    login, _ = clients.raw_login(HOST, router.port, USER, PASSWORD)
    routing = [
        e
        for e in login.response.of("envchange")
        if isinstance(e, dict) and e["type"] == wire.ENV_ROUTING
    ]
    assert routing == [
        {"type": wire.ENV_ROUTING, "protocol": 0, "port": target.port, "server": HOST}
    ]
    assert login.response.of("loginack")


@pytest.mark.parametrize("encrypted", [False, True], ids=["clear", "tls"])
def test_cancel_mid_result(server: FakeTdsServer, tls: TlsFiles, encrypted: bool) -> None:
    cafile = tls.ca if encrypted else None
    with clients.pytds_connect(HOST, server.port, USER, PASSWORD, cafile=cafile) as connection:
        cursor = connection.cursor()
        started = time.monotonic()
        cursor.execute("WAITFOR DELAY '00:00:30'; SELECT rows")
        assert cursor.fetchone() == (1, "row 1")
        assert cursor.fetchone() == (2, "row 2")
        cursor.cancel()  # ATTENTION, then read until DONE(ATTN)
        assert time.monotonic() - started < 10
        records = server.wait_for(lambda rs: any(r.get("while") == "streaming" for r in rs))
        assert next(r for r in records if "attention" in r)["rows_sent"] >= 2
        assert only_login(server)["encryption"] == ("full" if encrypted else "none")

        cursor.execute("SELECT 1")  # the connection is usable again
        assert cursor.fetchall() == [(1,)]


def test_cancel_from_another_thread(server: FakeTdsServer) -> None:
    """The reading thread blocks in fetchall while another thread sends the ATTENTION.

    pytds' public C{cursor.cancel()} also reads the reply, so two threads would read one
    socket; the other thread therefore only sends (C{put_cancel}) and the reader consumes
    the DONE(ATTN).
    """
    with clients.pytds_connect(HOST, server.port, USER, PASSWORD) as connection:
        cursor = connection.cursor()
        cursor.execute("WAITFOR DELAY '00:00:30'")
        timer = threading.Timer(0.3, cursor._session.put_cancel)
        started = time.monotonic()
        timer.start()
        rows = cursor.fetchall()
        timer.join()
        assert time.monotonic() - started < 10
        assert 1 <= len(rows) < 200
        server.wait_for(lambda rs: any(r.get("while") == "streaming" for r in rs))
        cursor.execute("SELECT 1")
        assert cursor.fetchall() == [(1,)]


def test_packet_size_follows_the_login_request(make_server: Callable[..., FakeTdsServer]) -> None:
    server = make_server(rows=3000)
    login, result = clients.raw_login(
        HOST, server.port, "u", "p", query="SELECT rows", packet_size=8192, login_packet_size=100
    )
    assert {"type": wire.ENV_PACKETSIZE, "new": "8192"} in login.response.of("envchange")
    assert result is not None and len(result.response.rows) == 3000
    assert result.packets == -(-len(result.payload) // (8192 - 8))
    record = only_login(server)
    assert (record["packet_size"], record["user"], record["password"]) == (8192, "u", "p")


def test_attention_when_idle_is_acknowledged(server: FakeTdsServer) -> None:
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(
            wire.packet(wire.PRELOGIN, wire.build_prelogin([(wire.PL_ENCRYPTION, b"\x02")]))
        )
        clients.read_message(sock)
        sock.sendall(wire.packet(wire.LOGIN7, wire.build_login7(USER, PASSWORD)))
        assert wire.parse_response(clients.read_message(sock)[0]).of("loginack")
        sock.sendall(wire.packet(wire.ATTENTION, b""))
        reply = wire.parse_response(clients.read_message(sock)[0])
        assert reply.of("done") == [{"status": wire.DONE_ATTN, "curcmd": 0, "rowcount": 0}]


# ----------------------------------------------------------------------------- pymssql


@needs_pymssql
@pytest.mark.parametrize(
    ("encryption", "mode"), [("off", "none"), ("request", "login-only"), ("require", "full")]
)
def test_pymssql(server: FakeTdsServer, encryption: str, mode: str) -> None:
    rows = clients.run_pymssql(
        HOST, server.port, USER, PASSWORD, encryption=encryption, database="sales"
    )
    assert rows == [(1,)]
    login = only_login(server)
    assert (login["encryption"], login["user"], login["password"]) == (mode, USER, PASSWORD)
    assert login["appname"].startswith("pymssql=")
    batches = server.batches()
    assert any(b.startswith("SET ARITHABORT ON") for b in batches)
    assert "BEGIN TRAN" in batches
    assert batches[-1] == "SELECT 1"


@needs_pymssql
def test_pymssql_strict_tds8(
    make_server: Callable[..., FakeTdsServer], tls: TlsFiles, tmp_path: Path
) -> None:
    server = make_server(user=USER, password=PASSWORD, strict=True)
    conf = clients.freetds_conf(tmp_path, "strict", ca_file=tls.ca)
    rows = clients.run_pymssql(
        HOST, server.port, USER, PASSWORD, encryption=None, freetds_conf=conf, query="SELECT rows"
    )
    assert len(rows) == 100
    login = only_login(server)
    assert (login["encryption"], login["alpn"], login["tls_version"]) == (
        "strict",
        "tds/8.0",
        "TLSv1.3",
    )
    assert login["password"] == PASSWORD


@needs_pymssql
def test_pymssql_strict_against_a_tds7_server(
    server: FakeTdsServer, tls: TlsFiles, tmp_path: Path
) -> None:
    """Like SQL Server 2022 without "force strict": a first byte 0x16 is served as TDS 8.0."""
    conf = clients.freetds_conf(tmp_path, "strict", ca_file=tls.ca)
    assert clients.run_pymssql(HOST, server.port, USER, PASSWORD, None, conf) == [(1,)]
    assert only_login(server)["encryption"] == "strict"


@needs_pymssql
def test_pymssql_wrong_password(server: FakeTdsServer) -> None:
    with pytest.raises(ClientError, match=f"Login failed for user '{USER}'"):
        clients.run_pymssql(HOST, server.port, USER, "nope")
    assert only_login(server)["ok"] is False


# ----------------------------------------------------------------------------- tsql


@needs_tsql
@pytest.mark.parametrize(
    ("encryption", "mode"), [("request", "login-only"), ("off", "none"), ("require", "full")]
)
def test_tsql(server: FakeTdsServer, tls: TlsFiles, encryption: str, mode: str) -> None:
    completed = clients.run_tsql(
        HOST, server.port, USER, PASSWORD, encryption, ca_file=tls.ca, check=True
    )
    assert clients.tsql_rows(completed.stdout) == [["1"]]
    assert "(1 row affected)" in completed.stdout
    login = only_login(server)
    assert (login["encryption"], login["appname"], login["password"]) == (mode, "TSQL", PASSWORD)
    assert server.batches() == ["SELECT 1\n"]  # tsql sends the line with its newline


@needs_tsql
def test_tsql_multi_packet_and_login_error(make_server: Callable[..., FakeTdsServer]) -> None:
    server = make_server(rows=2000)
    completed = clients.run_tsql(
        HOST, server.port, "u", "p", "request", query="SELECT rows", check=True
    )
    rows = clients.tsql_rows(completed.stdout)
    assert rows[0] == ["id", "name"]
    assert rows[1:] == [[str(n), f"row {n} of 2000"] for n in range(1, 2001)]

    refusing = make_server(login_error="Jumpoint: not in your schedule")
    completed = clients.run_tsql(HOST, refusing.port, "u", "p", "request")
    assert completed.returncode != 0
    assert "Msg 18456" in completed.stderr + completed.stdout
    assert "Jumpoint: not in your schedule" in completed.stderr + completed.stdout


# ----------------------------------------------------------------------------- tedious


@needs_tedious
@pytest.mark.parametrize(
    ("encrypt", "trust", "use_ca", "mode"),
    [
        (False, False, False, "none"),  # encrypt: false ⇒ PRELOGIN ENCRYPT_NOT_SUP
        (True, True, False, "full"),
        (True, False, True, "full"),
    ],
)
def test_tedious(
    server: FakeTdsServer, tls: TlsFiles, encrypt: bool, trust: bool, use_ca: bool, mode: str
) -> None:
    result = clients.run_tedious(
        HOST,
        server.port,
        USER,
        PASSWORD,
        encrypt=encrypt,
        trust=trust,
        ca=tls.ca if use_ca else None,
    )
    assert result["ok"] is True, result
    assert result["rows"] == [[1]]
    login = only_login(server)
    assert (login["encryption"], login["appname"], login["password"]) == (mode, "Tedious", PASSWORD)
    assert server.rpcs() == ["sp_executesql"]
    assert [r["statement"] for r in server.records if "rpc" in r] == ["SELECT 1"]
    assert server.batches()[0].startswith("set ")  # tedious' session settings


@needs_tedious
def test_tedious_rejects_an_untrusted_certificate(server: FakeTdsServer) -> None:
    result = clients.run_tedious(HOST, server.port, USER, PASSWORD, encrypt=True)
    assert result["ok"] is False
    assert "unable to verify the first certificate" in result["error"]["message"]
    assert server.logins() == []


@needs_tedious
def test_tedious_strict_multi_packet_and_errors(
    make_server: Callable[..., FakeTdsServer], tls: TlsFiles
) -> None:
    strict = make_server(user=USER, password=PASSWORD, strict=True, rows=3000)
    result = clients.run_tedious(
        HOST, strict.port, USER, PASSWORD, encrypt="strict", ca=tls.ca, query="SELECT rows"
    )
    assert result["ok"] is True, result
    assert len(result["rows"]) == 3000 and result["rows"][-1] == [3000, "row 3000 of 3000"]
    assert (only_login(strict)["encryption"], only_login(strict)["alpn"]) == ("strict", "tds/8.0")

    result = clients.run_tedious(HOST, strict.port, USER, "bad", encrypt="strict", ca=tls.ca)
    assert result["ok"] is False
    assert {
        "kind": "error",
        "number": 18456,
        "message": f"Login failed for user '{USER}'.",
    } in result["messages"]


@needs_tedious
def test_tedious_ntlm(make_server: Callable[..., FakeTdsServer], tmp_path: Path) -> None:
    users = tmp_path / "ntlm_users"
    users.write_text("CORP:bob:B0b-pass\n")
    server = make_server(ntlm_user_file=str(users))
    result = clients.run_tedious(HOST, server.port, "bob", "B0b-pass", ntlm_domain="CORP")
    assert result["ok"] is True, result
    login = only_login(server)
    assert (login["ntlm_user"], login["ntlm_check"]) == ("CORP\\bob", "lmv2")

    result = clients.run_tedious(HOST, server.port, "bob", "wrong", ntlm_domain="CORP")
    assert result["ok"] is False
    assert result["messages"][0]["number"] == 18452


# ----------------------------------------------------------------------------- negotiation table


def test_required_server_refuses_a_client_without_tls(
    make_server: Callable[..., FakeTdsServer],
) -> None:
    server = make_server(encryption="required")
    with pytest.raises(pytds.Error, match="required by server"):
        clients.run_pytds(HOST, server.port, USER, PASSWORD)
    assert server.logins() == []


def test_not_supported_server(make_server: Callable[..., FakeTdsServer], tls: TlsFiles) -> None:
    server = make_server(encryption="not-supported", user=USER, password=PASSWORD)
    with pytest.raises(Exception, match="not supported"):
        clients.run_pytds(HOST, server.port, USER, PASSWORD, cafile=tls.ca)
    assert clients.run_pytds(HOST, server.port, USER, PASSWORD) == [(1,)]
    assert only_login(server)["encryption"] == "none"


# ----------------------------------------------------------------------------- robustness, CLI


def test_malformed_input_closes_only_that_connection(server: FakeTdsServer) -> None:
    garbage = [
        b"\x12\x01\x00\x04\x00\x00\x00\x00",  # length < header
        wire.packet(wire.PRELOGIN, b"\x01\x00\xff\x00\x01"),  # option points outside
        wire.packet(wire.SQL_BATCH, b"hello"),  # no PRELOGIN / LOGIN7
    ]
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(
            wire.packet(wire.PRELOGIN, wire.build_prelogin([(wire.PL_ENCRYPTION, b"\x02")]))
        )
        clients.read_message(sock)
        sock.sendall(wire.packet(wire.LOGIN7, b"\x00" * 20))  # LOGIN7 too short
        assert sock.recv(100) == b""
    for data in garbage:
        with socket.create_connection((HOST, server.port), timeout=10) as sock:
            sock.sendall(data)
            assert sock.recv(100) == b""
    assert clients.run_pytds(HOST, server.port, USER, PASSWORD) == [(1,)]
    assert len(server.errors) == 4
    assert all("ProtocolError" in e for e in server.errors), server.errors
    server.errors.clear()


def test_command_line_server(tls: TlsFiles, tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.tds.fake_server",
            "--port",
            "0",
            "--user",
            USER,
            "--password",
            PASSWORD,
            "--cert",
            tls.cert,
            "--key",
            tls.key,
            "--database",
            "inventory",
            "--record",
            str(record),
        ],
        cwd=clients.REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(clients.REPO)},
    )
    try:
        assert process.stdout is not None
        event = json.loads(process.stdout.readline())
        assert event["event"] == "listening"
        assert clients.run_pytds(HOST, event["port"], USER, PASSWORD, cafile=tls.ca) == [(1,)]
        deadline = time.monotonic() + 10
        lines: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not any("batch" in line for line in lines):
            lines = (
                [json.loads(line) for line in record.read_text().splitlines()]
                if record.exists()
                else []
            )
            time.sleep(0.05)
        login = next(line for line in lines if "ok" in line)
        assert (login["user"], login["password"], login["encryption"], login["ok"]) == (
            USER,
            PASSWORD,
            "full",
            True,
        )
        assert {"batch": "SELECT 1"} in lines
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0


@needs_tedious
def test_tedious_falls_back_to_clear_text(make_server: Callable[..., FakeTdsServer]) -> None:
    """tedious 18 with encrypt: true carries on unencrypted when the server says NOT_SUP."""
    server = make_server(encryption="not-supported", user=USER, password=PASSWORD)
    result = clients.run_tedious(HOST, server.port, USER, PASSWORD, encrypt=True)
    assert result["ok"] is True, result
    assert only_login(server)["encryption"] == "none"


@needs_pymssql
def test_pymssql_require_refuses_a_server_without_tls(
    make_server: Callable[..., FakeTdsServer],
) -> None:
    server = make_server(encryption="not-supported", user=USER, password=PASSWORD)
    with pytest.raises(ClientError, match="pymssql failed"):
        clients.run_pymssql(HOST, server.port, USER, PASSWORD, encryption="require")
    assert server.logins() == []
