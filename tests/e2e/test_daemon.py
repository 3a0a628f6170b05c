"""End to end: the daemon's commands, lifecycle, logs and the console's errors."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sqlite3
import stat

import yaml

from shared.errors import ExitCode
from tests.e2e.harness import (
    Deployment,
    Process,
    audit_until,
    free_port,
    tcp_item,
    tool,
    tunnel_address,
    wait_until,
)
from tests.e2e.servers import EchoServer


def test_check_config_reports_file_line_and_key(deployment: Deployment) -> None:
    deployment.create()
    text = deployment.config.read_text()
    deployment.config.write_text(text + "\nbogus_key: 1\n")
    result = deployment.jumpoint("check-config", check=False)
    assert result.returncode == ExitCode.CONFIG
    assert f"{deployment.config}:" in result.stderr and "bogus_key: unknown key" in result.stderr
    assert "Traceback" not in result.stderr
    served = deployment.jumpoint("serve", check=False)  # refused before starting
    assert served.returncode == ExitCode.CONFIG and "bogus_key" in served.stderr


def test_init_writes_keys_0600_and_refuses_to_overwrite(deployment: Deployment) -> None:
    deployment.create()
    for name in ("ca.key", "server.key"):
        assert stat.S_IMODE((deployment.directory / name).stat().st_mode) == 0o600
    enrollment = deployment.root / "alice.enroll"
    assert stat.S_IMODE(enrollment.stat().st_mode) == 0o600
    again = deployment.jumpoint(
        "init",
        "--dir",
        str(deployment.directory),
        "--name",
        "test",
        "--listen",
        "127.0.0.1:1",
        check=False,
    )
    assert again.returncode == ExitCode.USAGE and "already exists" in again.stderr
    bad = deployment.jumpoint(
        "init",
        "--dir",
        str(deployment.root / "x"),
        "--name",
        "my lab",
        "--listen",
        "127.0.0.1:1",
        check=False,
    )
    assert bad.returncode == ExitCode.USAGE and "invalid Jumpoint name" in bad.stderr


def test_serve_logs_json_and_stops_cleanly_on_sigterm(deployment: Deployment) -> None:
    """--log-format json: one JSON object per line; SIGTERM: clean exit 0 with GOAWAY."""
    deployment.items = [
        {
            "name": "web",
            "type": "tcp",
            "host": "127.0.0.1",
            "tunnels": [{"local_port": "auto", "remote_port": 9}],
        }
    ]
    deployment.serve_args = ["--log-format", "json"]
    server = deployment.create().serve()
    session = deployment.open("web", "--no-reconnect")  # it ends with the daemon
    session.wait_for_event("ready")
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert session.wait() == ExitCode.SESSION_LOST
    (closed,) = [e for e in session.json_events() if e["event"] == "closed"]
    assert "shutting down" in closed["reason"]
    events = [json.loads(line) for line in server.stdout_lines if line.strip()]
    texts = [e.get("log_format", "") for e in events]
    assert any("listening on" in t for t in texts)
    opened = next(e for e in events if "opened" in e.get("log_format", ""))
    assert opened["user"] == "alice" and opened["item"] == "web"


def test_user_list_and_an_undefined_group(deployment: Deployment) -> None:
    """A user whose group is later removed from jumpoint.yaml may open nothing."""
    deployment.items = [
        {
            "name": "web",
            "type": "tcp",
            "host": "127.0.0.1",
            "tunnels": [{"local_port": "auto", "remote_port": 9}],
        }
    ]
    deployment.create()
    document = yaml.safe_load(deployment.config.read_text())
    document["groups"]["contractors"] = {"jump_groups": ["*"]}
    deployment.config.write_text(yaml.safe_dump(document))
    carol_home = deployment.root / "carol-home"
    deployment.add_user("carol", group="contractors", home=carol_home)
    del document["groups"]["contractors"]
    deployment.config.write_text(yaml.safe_dump(document))
    server = deployment.serve()
    listing = json.loads(deployment.jumpoint("user", "list", "--json").stdout)
    assert {(u["name"], u["group"], u["status"]) for u in listing} == {
        ("alice", "default", "active"),
        ("carol", "contractors", "active"),
    }
    items = deployment.jump("items", JUMP_HOME=str(carol_home))
    assert items.returncode == ExitCode.DENIED
    assert "which jumpoint.yaml does not define (rule: groups)" in items.stderr
    opened = deployment.jump("open", "web", JUMP_HOME=str(carol_home))
    assert opened.returncode == ExitCode.DENIED
    wait_until(
        lambda: any("refused" in line and "carol" in line for line in server.stdout_lines),
        what="the refusal in the Jumpoint's log",
    )


def test_console_errors_are_clear(deployment: Deployment) -> None:
    """Unknown item, port in use, address outside loopback, Jumpoint unreachable."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy_port = taken.getsockname()[1]
    try:
        deployment.items = [
            {
                "name": "busy",
                "type": "tcp",
                "host": "127.0.0.1",
                "tunnels": [{"local_port": busy_port, "remote_port": 9}],
            }
        ]
        deployment.create()
        server = deployment.serve()
        unknown = deployment.jump("open", "nope")
        assert unknown.returncode == ExitCode.NOT_FOUND
        assert "no item named 'nope'" in unknown.stderr and "jump items" in unknown.stderr
        in_use = deployment.jump("open", "busy")
        assert in_use.returncode == ExitCode.LOCAL_BIND
        assert "is already in use" in in_use.stderr and "--local-address" in in_use.stderr
        elsewhere = deployment.jump("open", "busy", "--local-address", "127.0.0.77", "--for", "1s")
        assert elsewhere.returncode == 0, elsewhere.stderr  # the suggested fix works
        assert f"127.0.0.77:{busy_port} -> 127.0.0.1:9" in elsewhere.stdout
        outside = deployment.jump("open", "busy", "--local-address", "10.1.2.3")
        assert outside.returncode == ExitCode.DENIED, outside.stderr
        assert "(rule: tunnels_restricted.acl)" in outside.stderr
        server.stop()
        down = deployment.jump("items")
        assert down.returncode == ExitCode.UNREACHABLE
        assert "refused the connection" in down.stderr
        for result in (unknown, in_use, outside, down):
            assert "Traceback" not in result.stderr
    finally:
        taken.close()


def test_target_unreachable_closes_only_that_connection(deployment: Deployment) -> None:
    """A refused target closes that local connection with the reason; the session stays up."""
    dead_port = free_port()
    deployment.items = [
        {
            "name": "web",
            "type": "tcp",
            "host": "127.0.0.1",
            "tunnels": [{"local_port": "auto", "remote_port": dead_port}],
        }
    ]
    deployment.create().serve()
    session = deployment.open("web", "--for", "60s")
    host, port = tunnel_address(session.wait_for_event("ready"))
    for _ in range(2):
        with socket.create_connection((host, port), timeout=10) as client:
            client.sendall(b"hello")
            with contextlib.suppress(ConnectionResetError):  # closed, by FIN or RST
                assert client.recv(10) == b""
    line = session.wait_for_stderr("refused the connection")
    assert f"127.0.0.1:{dead_port}" in line
    stats = wait_until(
        lambda: next(
            (
                e
                for e in reversed(session.json_events())
                if e["event"] == "stats" and e["tunnels"][0]["failed_connections"] == 2
            ),
            None,
        ),
        what="two failed connections in the stats",
    )
    assert "refused" in stats["tunnels"][0]["last_error"]
    assert session.popen.poll() is None  # still up
    session.signal(signal.SIGINT)
    assert session.wait() == 0


def test_both_commands_report_their_version(deployment: Deployment) -> None:
    for name in ("jump", "jumpoint"):
        version = Process([*tool(name), "--version"], deployment.env())
        assert version.wait() == 0
        assert any("0.1.0" in line for line in version.stdout_lines), version.output()


def _echo_round_trip(host: str, port: int, payload: bytes = b"still here\n") -> bytes:
    with socket.create_connection((host, port), timeout=30) as connection:
        connection.sendall(payload)
        received = b""
        while len(received) < len(payload):
            chunk = connection.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def test_a_second_serve_on_the_same_config_exits_3_and_leaves_the_live_sessions_alone(
    deployment: Deployment,
) -> None:
    """The second daemon takes the instance lock before it touches any state."""
    echo = EchoServer()
    try:
        deployment.items = [tcp_item("echo", echo.port)]
        first = deployment.create().serve()
        session = deployment.open("echo")
        ready = session.wait_for_event("ready")
        host, port = tunnel_address(ready)
        assert _echo_round_trip(host, port) == b"still here\n"
        opened = audit_until(deployment, bool, "--event", "session_opened")
        session_id = opened[0]["session"]

        second = deployment.jumpoint("serve", check=False)
        assert second.returncode == ExitCode.CONFIG, second.stdout + second.stderr

        # the live session is untouched: no close in the audit nor in the state, still working
        closes = deployment.jumpoint("audit", "--json", "--event", "session_closed").stdout
        assert closes.strip() == ""
        state = sqlite3.connect(str(deployment.directory / "state.db"))
        row = state.execute("SELECT closed_at FROM sessions WHERE id = ?", (session_id,)).fetchone()
        state.close()
        assert row == (None,)
        assert _echo_round_trip(host, port) == b"still here\n"
        assert first.popen.poll() is None and session.popen.poll() is None
        assert "another Jumpoint" in second.stderr and str(first.pid) in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        echo.close()


def test_sighup_reloads_other_signals_are_logged_and_ignored_sigterm_logs_a_stop_line(
    deployment: Deployment,
) -> None:
    """SIGHUP reloads (tests/e2e/test_reload.py); no signal ends the daemon silently."""
    server = deployment.create().serve()
    server.signal(signal.SIGHUP)
    server.wait_for_stdout("SIGHUP: reloading the configuration")
    server.signal(signal.SIGUSR1)
    server.wait_for_stdout("received SIGUSR1: ignored")
    assert server.popen.poll() is None
    listed = deployment.jump("items")  # still serving
    assert listed.returncode == 0, listed.stderr
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    output = "\n".join(server.stdout_lines)
    assert "configuration reloaded: generation 2: no change" in output
    assert "received SIGTERM: stopping" in output
    assert "stopped" in server.stdout_lines[-1]
