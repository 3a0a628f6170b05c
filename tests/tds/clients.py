"""Run real TDS clients (pytds, pymssql, FreeTDS tsql, tedious) against a host/port.

Shared by the fake-server tests and the proxy end-to-end tests.  Every runner has a
timeout and raises L{ClientError} with the client's own words when it fails
(L{run_tsql} and L{run_tedious} return the raw outcome instead, see their docs).

Needs (CI setup)::

    .venv/bin/pip install python-tds pymssql pyspnego
    apt-get install -y freetds-bin                 # tsql 1.3.17
    (cd tests/tds/node && npm install)             # tedious 18.x for Node 20
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.tds import wire

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NODE_DIR = HERE / "node"
QUERY_JS = NODE_DIR / "query.js"


class ClientError(AssertionError):
    """A client failed; C{output} holds what it printed."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message if not output else f"{message}\n--- client output ---\n{output}")
        self.output = output


# ----------------------------------------------------------------------------- availability


def tsql_path() -> str | None:
    return shutil.which("tsql")


def node_path() -> str | None:
    return shutil.which("node")


def tedious_installed() -> bool:
    return (
        NODE_DIR / "node_modules" / "tedious" / "package.json"
    ).is_file() and node_path() is not None


# ----------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class TlsFiles:
    ca: str
    cert: str
    key: str


def write_tls_files(
    directory: str | Path, addresses: tuple[str, ...] = ("127.0.0.1", "localhost")
) -> TlsFiles:
    """A test CA and a server certificate for C{addresses}, as PEM files in C{directory}."""
    from shared import pki

    directory = Path(directory)
    ca = pki.create_ca("tds-test")
    server = pki.issue_server(ca, "tds-test", list(addresses))
    paths = TlsFiles(
        str(directory / "ca.pem"), str(directory / "server.pem"), str(directory / "server.key")
    )
    Path(paths.ca).write_bytes(ca.certificate_pem)
    Path(paths.cert).write_bytes(server.certificate_pem)
    Path(paths.key).write_bytes(server.key_pem)
    return paths


def freetds_conf(
    directory: str | Path, encryption: str, ca_file: str | None = None, extra: str = ""
) -> str:
    """Write a FreeTDS config with a C{[global]} section; return its path (for C{FREETDSCONF})."""
    lines = ["[global]", f"\tencryption = {encryption}"]
    if ca_file:
        lines.append(f"\tca file = {ca_file}")
    if extra:
        lines.append(extra)
    path = Path(directory) / f"freetds-{encryption}.conf"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


# ----------------------------------------------------------------------------- pytds (in-process)


@contextlib.contextmanager
def pytds_connect(
    host: str,
    port: int,
    user: str | None = None,
    password: str | None = None,
    database: str | None = None,
    cafile: str | None = None,
    enc_login_only: bool = False,
    ntlm: tuple[str, str] | None = None,
    timeout: float = 15.0,
    autocommit: bool = True,
) -> Iterator[Any]:
    """A pytds connection.  C{ntlm=("DOMAIN\\\\user", "password")} uses pyspnego NTLM.

    Host-name validation stays off: pytds 1.17.1 checks SANs with pyOpenSSL's
    C{X509.get_extension}, which pyOpenSSL 26 no longer has (AttributeError).  The chain
    is still verified against C{cafile}.
    """
    import pytds  # type: ignore[import-untyped]
    import pytds.login  # type: ignore[import-untyped]

    kwargs: dict[str, Any] = {
        "dsn": host,
        "port": port,
        "login_timeout": timeout,
        "timeout": timeout,
        "autocommit": autocommit,
        "disable_connect_retry": True,
    }
    if database:
        kwargs["database"] = database
    if ntlm is not None:
        kwargs["auth"] = pytds.login.SpnegoAuth(
            username=ntlm[0], password=ntlm[1], hostname=host, service="MSSQLSvc", protocol="ntlm"
        )
    else:
        kwargs["user"] = user
        kwargs["password"] = password
    if cafile:
        kwargs.update(cafile=cafile, validate_host=False, enc_login_only=enc_login_only)
    connection = pytds.connect(**kwargs)
    try:
        yield connection
    finally:
        connection.close()


def run_pytds(
    host: str,
    port: int,
    user: str | None = None,
    password: str | None = None,
    database: str | None = None,
    cafile: str | None = None,
    enc_login_only: bool = False,
    ntlm: tuple[str, str] | None = None,
    query: str = "SELECT 1",
    timeout: float = 15.0,
) -> list[tuple[Any, ...]]:
    """Connect, run C{query}, return its rows (C{[]} when it returns no result set).

    Encryption: no C{cafile} ⇒ PRELOGIN ENCRYPT_NOT_SUP; C{cafile} ⇒ ENCRYPT_ON (full TLS);
    plus C{enc_login_only} ⇒ ENCRYPT_OFF (only LOGIN7 encrypted).  pytds exceptions propagate
    (their text is the server's message, e.g. "Login failed for user 'sa'.").
    """
    with (
        pytds_connect(
            host, port, user, password, database, cafile, enc_login_only, ntlm, timeout
        ) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute(query)
        if cursor.description is None:
            return []
        return [tuple(row) for row in cursor.fetchall()]


# ----------------------------------------------------------------------------- pymssql (subprocess)

_PYMSSQL_SCRIPT = r"""
import json, sys
args = json.loads(sys.argv[1])
try:
    import pymssql
    kwargs = dict(server=args["host"], port=str(args["port"]), user=args["user"], password=args["password"],
                  login_timeout=args["timeout"], timeout=args["timeout"])
    if args.get("database"):
        kwargs["database"] = args["database"]
    if args.get("encryption"):
        kwargs["encryption"] = args["encryption"]
    connection = pymssql.connect(**kwargs)
    cursor = connection.cursor()
    cursor.execute(args["query"])
    rows = cursor.fetchall() if cursor.description else []
    connection.close()
    print(json.dumps({"ok": True, "rows": [list(r) for r in rows]}, default=str))
except Exception as error:
    detail = error.args[1].decode("utf-8", "replace") if len(error.args) > 1 and isinstance(error.args[1], bytes) else ""
    print(json.dumps({"ok": False, "error": f"{type(error).__name__}: {error}", "detail": detail}))
"""


def run_pymssql(
    host: str,
    port: int,
    user: str,
    password: str,
    encryption: str | None = "request",
    freetds_conf: str | None = None,
    query: str = "SELECT 1",
    database: str | None = None,
    timeout: float = 20.0,
    tdsdump: str | None = None,
) -> list[tuple[Any, ...]]:
    """pymssql (bundled FreeTDS 1.5.19) in a subprocess so C{FREETDSCONF} applies.

    C{encryption}: "off" (PRELOGIN NOT_SUP), "request" (OFF ⇒ login-only), "require" (ON),
    or None to take it from C{freetds_conf} (e.g. C{encryption = strict} for TDS 8.0).
    """
    env = _child_env(FREETDSCONF=freetds_conf, TDSDUMP=tdsdump)
    arguments = {
        "host": host,
        "port": port,
        "user": user,
        "password": password,
        "database": database,
        "encryption": encryption,
        "query": query,
        "timeout": max(1, int(timeout)),
    }
    result = _run_json(
        [sys.executable, "-c", _PYMSSQL_SCRIPT, json.dumps(arguments)], env, timeout + 15, "pymssql"
    )
    if not result["ok"]:
        raise ClientError(f"pymssql failed: {result['error']} {result.get('detail', '')}".strip())
    return [tuple(row) for row in result["rows"]]


# ----------------------------------------------------------------------------- tsql


def run_tsql(
    host: str,
    port: int,
    user: str,
    password: str,
    encryption: str = "request",
    query: str = "SELECT 1",
    ca_file: str | None = None,
    timeout: float = 30.0,
    tdsdump: str | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """FreeTDS C{tsql -H host -p port -U user -P password} fed C{query}, C{go}, C{exit} on stdin.

    C{encryption} (request / off / require) goes into a temporary FREETDSCONF C{[global]}
    section.  Returns the CompletedProcess (stdout has the rows, stderr the server
    messages); with C{check} a non-zero exit raises L{ClientError}.
    """
    tsql = tsql_path()
    if tsql is None:
        raise ClientError("tsql not found: apt-get install -y freetds-bin")
    with tempfile.TemporaryDirectory(prefix="tsql-") as directory:
        env = _child_env(FREETDSCONF=freetds_conf(directory, encryption, ca_file), TDSDUMP=tdsdump)
        command = [tsql, "-H", host, "-p", str(port), "-U", user, "-P", password]
        try:
            completed = subprocess.run(
                command,
                input=f"{query}\ngo\nexit\n",
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as error:
            raise ClientError(
                f"tsql timed out after {timeout}s", _text(error.stdout) + _text(error.stderr)
            ) from error
    if check and completed.returncode != 0:
        raise ClientError(
            f"tsql exited {completed.returncode}", completed.stdout + completed.stderr
        )
    return completed


def tsql_rows(stdout: str) -> list[list[str]]:
    """Data lines of tsql output (tab-separated), without prompts, headers or row counts."""
    rows = []
    for line in stdout.splitlines():
        while line.startswith(tuple(f"{n}> " for n in range(1, 100))):
            line = line.split("> ", 1)[1]
        if (
            not line.strip()
            or line.startswith(("locale ", "using default charset", "("))
            or line.endswith("rows affected)")
        ):
            continue
        rows.append(line.split("\t"))
    return rows


# ----------------------------------------------------------------------------- tedious


def run_tedious(
    host: str,
    port: int,
    user: str,
    password: str,
    encrypt: bool | str = False,
    trust: bool = False,
    ca: str | None = None,
    query: str = "SELECT 1",
    database: str | None = None,
    ntlm_domain: str | None = None,
    batch: bool = False,
    timeout: float = 30.0,
    debug: bool = False,
) -> dict[str, Any]:
    """tedious 18 (Node) via C{tests/tds/node/query.js}; returns its JSON result.

    C{{"ok": true, "rows": [[1]], ...}} or C{{"ok": false, "stage": ..., "error": {...}}}.
    C{encrypt}: False, True or "strict" (TDS 8.0); C{ca}: PEM file passed as
    C{cryptoCredentialsDetails.ca}; C{ntlm_domain}: NTLM instead of SQL login.  The query
    goes through C{execSql} (RPC sp_executesql) unless C{batch}.  Raises L{ClientError}
    only if Node itself fails or prints no result.
    """
    node = node_path()
    if node is None or not tedious_installed():
        raise ClientError(f"tedious not installed: (cd {NODE_DIR} && npm install)")
    config: dict[str, Any] = {
        "server": host,
        "port": port,
        "user": user,
        "password": password,
        "encrypt": encrypt,
        "trustServerCertificate": trust,
        "query": query,
        "batch": batch,
        "connectTimeout": int(timeout * 1000 * 0.8),
        "requestTimeout": int(timeout * 1000 * 0.8),
        "timeout": int(timeout * 1000 * 0.9),
        "debug": debug,
    }
    if ca:
        config["ca"] = ca
    if database:
        config["database"] = database
    if ntlm_domain is not None:
        config["ntlm"] = {"domain": ntlm_domain}
    return _run_json(
        [node, str(QUERY_JS), json.dumps(config)], _child_env(), timeout + 10, "tedious"
    )


# ----------------------------------------------------------------------------- raw client


@dataclass
class RawResult:
    prelogin: dict[int, bytes]
    response: wire.Response
    packets: int
    payload: bytes


def raw_login(
    host: str,
    port: int,
    user: str = "",
    password: str = "",
    database: str = "",
    query: str | None = None,
    timeout: float = 10.0,
    packet_size: int = 4096,
    login_packet_size: int = 4096,
) -> tuple[RawResult, RawResult | None]:
    """A bare TDS client without TLS (PRELOGIN ENCRYPT_NOT_SUP): login, optionally one batch.

    Returns (login result, query result or None).  Lets tests look at tokens that real
    clients hide (ENVCHANGE routing, packet counts of multi-packet results).
    C{packet_size} is the LOGIN7 PacketSize request; C{login_packet_size} frames LOGIN7 itself.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(
            wire.packet(
                wire.PRELOGIN,
                wire.build_prelogin(
                    [
                        (wire.PL_VERSION, bytes(6)),
                        (wire.PL_ENCRYPTION, bytes([wire.ENCRYPT_NOT_SUP])),
                        (wire.PL_INSTOPT, b"\x00"),
                        (wire.PL_THREADID, bytes(4)),
                        (wire.PL_MARS, b"\x00"),
                    ]
                ),
            )
        )
        payload, _ = read_message(sock)
        prelogin = wire.parse_prelogin(payload)
        login7 = wire.build_login7(
            user, password, database, servername=host, packet_size=packet_size
        )
        sock.sendall(b"".join(wire.split_message(wire.LOGIN7, login7, login_packet_size)))
        payload, count = read_message(sock)
        login = RawResult(prelogin, wire.parse_response(payload), count, payload)
        result = None
        if query is not None and login.response.of("loginack"):
            sock.sendall(wire.packet(wire.SQL_BATCH, wire.batch_payload(query)))
            payload, count = read_message(sock)
            result = RawResult(prelogin, wire.parse_response(payload), count, payload)
        return login, result


def read_message(sock: socket.socket) -> tuple[bytes, int]:
    """Read one server message (until EOM): (payload, number of packets)."""
    parts = []
    count = 0
    while True:
        header = wire.parse_header(_recv_exact(sock, wire.HEADER_SIZE))
        parts.append(_recv_exact(sock, header.length - wire.HEADER_SIZE))
        count += 1
        if header.eom:
            return b"".join(parts), count


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ClientError(f"server closed the connection ({len(data)}/{size} bytes read)")
        data += chunk
    return data


# ----------------------------------------------------------------------------- helpers


def _child_env(**extra: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for name, value in extra.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _run_json(command: list[str], env: dict[str, str], timeout: float, name: str) -> dict[str, Any]:
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=timeout, cwd=str(REPO)
        )
    except subprocess.TimeoutExpired as error:
        raise ClientError(
            f"{name} timed out after {timeout}s", _text(error.stdout) + _text(error.stderr)
        ) from error
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise ClientError(
            f"{name} printed no result (exit {completed.returncode})",
            completed.stdout + completed.stderr,
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result
