"""End to end: reloading a running `jumpoint serve` (`jumpoint reload`, SIGHUP, sd_notify)."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.errors import ExitCode
from tests.e2e.harness import (
    DEADLINE,
    Deployment,
    audit_until,
    tcp_item,
    tunnel_address,
    wait_until,
)
from tests.e2e.servers import EchoServer


@pytest.fixture
def echo() -> EchoServer:
    server = EchoServer()
    yield server
    server.close()


def _round_trip(connection: socket.socket, payload: bytes) -> bytes:
    connection.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = connection.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def _connect(ready: dict[str, object]) -> socket.socket:
    host, port = tunnel_address(ready)  # type: ignore[arg-type]
    return socket.create_connection((host, port), timeout=30)


def _edit(deployment: Deployment, change: object) -> None:
    document = yaml.safe_load(deployment.config.read_text())
    change(document)  # type: ignore[operator]
    deployment.config.write_text(yaml.safe_dump(document, sort_keys=False))


def test_reload_adds_an_item_and_leaves_the_open_session_alone(
    deployment: Deployment, echo: EchoServer
) -> None:
    deployment.items = [tcp_item("echo", echo.port)]
    server = deployment.create().serve()
    session = deployment.open("echo")
    ready = session.wait_for_event("ready")
    with _connect(ready) as connection:
        assert _round_trip(connection, b"before\n") == b"before\n"

        def change(document: dict[str, Any]) -> None:
            document["items"].append(tcp_item("echo2", echo.port))
            document["jumpoint"]["listen"] = "127.0.0.1:1"  # needs a restart: kept

        _edit(deployment, change)
        reloaded = deployment.jumpoint("reload")
        assert "reloaded: generation 2: items +echo2" in reloaded.stdout, reloaded.stdout
        assert "needs a restart (the running values are kept): jumpoint.listen" in reloaded.stdout
        # the connection open across the reload still carries data, new ones too
        assert _round_trip(connection, b"after\n") == b"after\n"
    with _connect(ready) as again:
        assert _round_trip(again, b"new connection\n") == b"new connection\n"
    second = deployment.open("echo2")
    with _connect(second.wait_for_event("ready")) as through_new:
        assert _round_trip(through_new, b"new item\n") == b"new item\n"
    assert session.popen.poll() is None
    server.wait_for_stdout("configuration reloaded: generation 2: items +echo2")
    server.wait_for_stdout("jumpoint.listen changed in")
    assert deployment.listening()  # still on the port it started with
    rows = audit_until(deployment, bool, "--event", "config_reloaded")
    assert rows[-1]["generation"] == 2 and rows[-1]["changes"]["items"]["added"] == ["echo2"]
    closed = deployment.jumpoint("audit", "--json", "--event", "session_closed").stdout
    assert closed.strip() == ""


def test_reload_removing_the_items_closes_its_session_with_config_changed(
    deployment: Deployment, echo: EchoServer
) -> None:
    deployment.items = [tcp_item("echo", echo.port), tcp_item("other", echo.port)]
    deployment.create().serve()
    session = deployment.open("echo")
    session.wait_for_event("ready")
    kept = deployment.open("other")
    kept_ready = kept.wait_for_event("ready")
    _edit(deployment, lambda d: d["items"].pop(0))
    reloaded = deployment.jumpoint("reload")
    assert "closed 1 open sessions" in reloaded.stdout, reloaded.stdout
    assert session.wait() == ExitCode.SESSION_LOST
    ending = next(e for e in session.json_events() if e["event"] == "closed")
    assert ending["code"] == "config_changed"
    assert "rule: items.echo" in ending["reason"]
    rows = audit_until(
        deployment,
        lambda rows: any(r["code"] == "config_changed" for r in rows),
        "--event",
        "session_closed",
    )
    row = next(r for r in rows if r["code"] == "config_changed")
    assert row["rule"] == "items.echo" and row["item"] == "echo"
    with _connect(kept_ready) as connection:  # the other session is untouched
        assert _round_trip(connection, b"still\n") == b"still\n"
    assert kept.popen.poll() is None


def _line_of(path: Path, text: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


def test_a_broken_config_is_refused_with_file_line_and_key_and_the_daemon_keeps_serving(
    deployment: Deployment, echo: EchoServer
) -> None:
    deployment.items = [tcp_item("echo", echo.port)]
    server = deployment.create().serve()
    session = deployment.open("echo")
    ready = session.wait_for_event("ready")
    text = deployment.config.read_text()
    deployment.config.write_text(text.replace("keepalive_interval: 5s", "keepalive_interval: lots"))
    line = _line_of(deployment.config, "keepalive_interval: lots")
    refused = deployment.jumpoint("reload", check=False)
    assert refused.returncode == ExitCode.CONFIG, refused.stdout + refused.stderr
    where = f"{deployment.config}:{line}: limits.keepalive_interval:"
    assert where in refused.stderr and "Traceback" not in refused.stderr
    server.wait_for_stdout(f"configuration reload failed; generation 1 stays in force: {where}")
    with _connect(ready) as connection:  # an existing tunnel still works
        assert _round_trip(connection, b"alive\n") == b"alive\n"
    assert deployment.jump("items").returncode == 0  # and new connections are served

    # `jumpoint audit` reads the (broken) file too: the audit file, then
    def failure_row() -> dict[str, object] | None:
        lines = (deployment.directory / "audit.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines if "config_reload_failed" in line]
        return rows[-1] if rows else None

    row = wait_until(failure_row, what="the config_reload_failed audit row")
    assert where in str(row["error"]) and row["generation"] == 1


def test_sighup_reloads_too(deployment: Deployment, echo: EchoServer) -> None:
    deployment.items = [tcp_item("echo", echo.port)]
    server = deployment.create().serve()
    _edit(deployment, lambda d: d["items"].append(tcp_item("late", echo.port)))
    server.signal(signal.SIGHUP)
    server.wait_for_stdout("configuration reloaded: generation 2: items +late")
    session = deployment.open("late")
    with _connect(session.wait_for_event("ready")) as connection:
        assert _round_trip(connection, b"hup\n") == b"hup\n"
    assert server.popen.poll() is None


def _datagrams(receiver: socket.socket, want: str, seen: list[str]) -> list[str]:
    end = time.monotonic() + DEADLINE
    while not any(want in message for message in seen):
        if time.monotonic() > end:
            raise AssertionError(f"no {want!r} from the daemon; got {seen}")
        try:
            seen.append(receiver.recv(4096).decode())
        except TimeoutError:
            continue
    return seen


def test_the_daemon_tells_systemd_ready_reloading_and_stopping(
    deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        receiver.settimeout(0.5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        server = deployment.create().serve()
        seen: list[str] = []
        _datagrams(receiver, "READY=1", seen)
        assert "STATUS=serving" in seen[0]
        deployment.jumpoint("reload")
        _datagrams(receiver, "RELOADING=1", seen)
        reloading = next(m for m in seen if "RELOADING=1" in m)
        assert "MONOTONIC_USEC=" in reloading
        _datagrams(receiver, "generation 2", seen)
        assert seen[-1].startswith("READY=1")
        server.signal(signal.SIGTERM)
        _datagrams(receiver, "STOPPING=1", seen)
        assert server.wait() == 0
    assert [m.split("\n")[0] for m in seen] == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]
    wait_until(lambda: not deployment.listening(), what="the listener to close")
    assert json.dumps(seen)  # every datagram was text
