"""End to end: items from the console, policies, approvals, sessions, audit and recording.

Real `jumpoint serve` and `jump` processes; curl, tshark and the standard
library's HTTP server as real clients and servers.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

from shared.errors import ExitCode
from tests.e2e.harness import Deployment, audit_until, tunnel_address, wait_until
from tests.e2e.servers import EchoServer, serve_http_directory


def _curl(host: str, port: int, path: str = "/") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "20", f"http://{host}:{port}{path}"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _echo_once(host: str, port: int, payload: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=10) as connection:
        connection.sendall(payload)
        connection.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                return received
            received += chunk


def _audit(deployment: Deployment, *args: str) -> list[dict[str, Any]]:
    result = deployment.jumpoint("audit", "--json", *args)
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _events(entries: list[dict[str, Any]]) -> list[str]:
    return [entry["event"] for entry in entries]


MANAGERS = {
    "default": {"jump_groups": ["*"]},
    "ops": {"jump_groups": {"see": ["*"], "open": ["*"], "manage": ["team-*"]}},
}


def test_items_created_from_the_console_are_managed_and_opened(
    deployment: Deployment, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("console-made item\n")
    stop_http, http_port = serve_http_directory(str(site))
    try:
        deployment.items = [
            {
                "name": "fixed",
                "type": "tcp",
                "host": "127.0.0.1",
                "tunnels": [{"local_port": "auto", "remote_port": http_port}],
            }
        ]
        deployment.sections = {"groups": MANAGERS}
        deployment.user = "olga"
        deployment.create()
        deployment.jumpoint("user", "groups", "olga", "--group", "ops")
        deployment.serve()
        created = deployment.jump(
            "item",
            "create",
            "tcp",
            "web",
            "--host",
            "127.0.0.1",
            "--tunnel",
            f"auto:{http_port}",
            "--local-address",
            "127.0.0.9",
            "--jump-group",
            "team-web",
            "--tag",
            "frontend",
            "--comments",
            "made by olga",
        )
        assert created.returncode == 0, created.stderr
        assert "created tcp item 'web'" in created.stdout
        outside = deployment.jump(
            "item",
            "create",
            "tcp",
            "other",
            "--host",
            "127.0.0.1",
            "--tunnel",
            "auto:80",
            "--jump-group",
            "prod",
        )
        assert outside.returncode == ExitCode.DENIED
        assert "rule: groups.jump_groups.manage" in outside.stderr
        invalid = deployment.jump(
            "item",
            "create",
            "tcp",
            "bad",
            "--host",
            "127.0.0.1",
            "--tunnel",
            "auto:70000",
            "--jump-group",
            "team-web",
        )
        assert invalid.returncode != 0 and "remote_port" in invalid.stderr
        assert "between 1 and 65535" in invalid.stderr and "Traceback" not in invalid.stderr
        listed = json.loads(deployment.jump("items", "--json", "--tag", "frontend").stdout)
        assert [i["name"] for i in listed] == ["web"]
        assert listed[0]["read_only"] is False and listed[0]["created_by"] == "olga"
        searched = json.loads(deployment.jump("items", "--json", "--search", "OLGA").stdout)
        assert [i["name"] for i in searched] == ["web"]
        fixed = json.loads(deployment.jump("item", "show", "fixed", "--json").stdout)
        assert fixed["read_only"] is True
        refused = deployment.jump("item", "tag", "fixed", "x")
        assert refused.returncode == ExitCode.USAGE and "read-only" in refused.stderr
        added = deployment.jump("item", "tunnel", "add", "web", "auto:9")
        assert added.returncode == 0, added.stderr
        removed = deployment.jump("item", "tunnel", "remove", "web", "auto:9")
        assert removed.returncode == 0, removed.stderr
        untag = deployment.jump("item", "tag", "web", "")
        assert untag.returncode == 0 and "removed the tag" in untag.stdout
        top = json.loads(deployment.jump("items", "--json", "--tag", "").stdout)
        assert {i["name"] for i in top} == {"web", "fixed"}
        moved = deployment.jump("item", "move", "web", "--jump-group", "default")
        assert moved.returncode == ExitCode.DENIED  # olga does not manage "default"
        fetched = deployment.jump(
            "open",
            "web",
            "--",
            "sh",
            "-c",
            'curl -sS --max-time 20 "http://$JUMP_LOCAL_ADDR:$JUMP_LOCAL_PORT/index.html"',
        )
        assert fetched.returncode == 0, fetched.stderr
        assert "console-made item" in fetched.stdout
        deleted = deployment.jump("item", "delete", "web")
        assert deleted.returncode == 0, deleted.stderr
        gone = deployment.jump("item", "show", "web")
        assert gone.returncode == ExitCode.NOT_FOUND
        events = _events(_audit(deployment, "--user", "olga"))
        for expected in ("item_created", "item_changed", "item_deleted", "session_opened"):
            assert expected in events
    finally:
        stop_http()


def test_a_recorded_session_needs_consent_and_tshark_reads_the_recording(
    deployment: Deployment, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "secret.txt").write_text("recorded payload 4711\n")
    stop_http, http_port = serve_http_directory(str(site))
    try:
        deployment.items = [
            {
                "name": "rec",
                "type": "tcp",
                "host": "127.0.0.1",
                "tunnels": [{"local_port": "auto", "remote_port": http_port}],
                "session_policy": "recorded",
            }
        ]
        deployment.sections = {"session_policies": {"recorded": {"recording": True}}}
        deployment.create().serve()
        declined = deployment.jump("open", "rec", "--for", "5s")
        assert declined.returncode == ExitCode.DENIED
        assert "recorded" in declined.stderr and "--yes" in declined.stderr
        assert "->" not in declined.stdout  # no tunnel was created
        session = deployment.open("rec", "--yes")
        ready = session.wait_for_event("ready")
        assert ready["recording"] is True
        host, port = tunnel_address(ready)
        fetched = _curl(host, port, "/secret.txt")
        assert fetched.returncode == 0 and "recorded payload 4711" in fetched.stdout
        session.stop()
        recordings = sorted((deployment.directory / "recordings").glob("*.pcap"))
        assert [p.stem for p in recordings] == [ready["session"]]
        recording = recordings[0]
        assert recording.stat().st_mode & 0o777 == 0o600
        assert shutil.which("tshark"), "tshark is installed by scripts/setup.sh"

        def followed() -> str | None:
            result = subprocess.run(
                ["tshark", "-r", str(recording), "-qz", "follow,tcp,ascii,0"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            return result.stdout if "recorded payload 4711" in result.stdout else None

        text = wait_until(followed, what="the recording to hold the response")
        assert "GET /secret.txt HTTP/1.1" in text
        events = _events(_audit(deployment, "--item", "rec"))
        assert "consent_requested" in events and "session_opened" in events
    finally:
        stop_http()


def test_access_requests_are_approved_by_another_user(deployment: Deployment) -> None:
    echo = EchoServer()
    try:
        deployment.items = [
            {
                "name": "db",
                "type": "tcp",
                "host": "127.0.0.1",
                "tunnels": [{"local_port": "auto", "remote_port": echo.port}],
                "jump_policy": "guarded",
            }
        ]
        deployment.sections = {
            "groups": {"approvers": {"jump_groups": ["*"]}},
            "jump_policies": {
                "guarded": {
                    "approval_required": True,
                    "approver_group": "approvers",
                    "approval_max_duration": "2h",
                    "ticket_id_required": True,
                    "ticket_id_pattern": "^CHG-[0-9]+$",
                }
            },
        }
        deployment.create()
        deployment.add_user("bob", "approvers", deployment.home_of("bob"))
        deployment.serve()
        first = deployment.jump("open", "db", "--ticket", "CHG-1", "--for", "5s")
        assert first.returncode == ExitCode.DENIED
        assert "jump_policies.guarded.approval_required" in first.stderr
        assert "jump request db" in first.stderr
        too_long = deployment.jump("request", "db", "--reason", "migration", "--duration", "5h")
        assert too_long.returncode == ExitCode.DENIED
        asked = deployment.jump(
            "request", "db", "--reason", "migration", "--duration", "1h", "--json"
        )
        assert asked.returncode == 0, asked.stderr
        request = json.loads(asked.stdout)
        assert request["status"] == "pending"
        own = deployment.jump("approve", str(request["id"]))
        assert own.returncode == ExitCode.DENIED
        pending = json.loads(deployment.jump_as("bob", "approvals", "--json").stdout)
        assert [(r["id"], r["can_decide"]) for r in pending] == [(request["id"], True)]
        approved = deployment.jump_as("bob", "approve", str(request["id"]), "--comment", "ok")
        assert approved.returncode == 0, approved.stderr
        no_ticket = deployment.jump("open", "db", "--for", "5s")
        assert no_ticket.returncode == ExitCode.DENIED
        assert "jump_policies.guarded.ticket_id_required" in no_ticket.stderr
        bad_ticket = deployment.jump("open", "db", "--ticket", "nope", "--for", "5s")
        assert "jump_policies.guarded.ticket_id_pattern" in bad_ticket.stderr
        session = deployment.open("db", "--ticket", "CHG-42")
        ready = session.wait_for_event("ready")
        assert ready["closes_at"] is not None and "approval" in ready["closes_because"]
        assert _echo_once(*tunnel_address(ready), b"approved bytes") == b"approved bytes"
        session.stop()
        entries = audit_until(
            deployment, lambda rows: "connection_closed" in _events(rows), what="connections"
        )
        events = _events(entries)
        for expected in (
            "approval_requested",
            "approval_granted",
            "session_denied",
            "session_opened",
            "connection_opened",
            "connection_closed",
        ):
            assert expected in events, expected
        denial = next(e for e in entries if e["event"] == "session_denied")
        assert denial["rule"] == "jump_policies.guarded.approval_required"
        opened = next(e for e in entries if e["event"] == "session_opened")
        assert opened["ticket"] == "CHG-42" and opened["approval"] == request["id"]
        closed = next(e for e in entries if e["event"] == "connection_closed")
        assert closed["bytes_to_target"] == len(b"approved bytes")
        assert closed["bytes_from_target"] == len(b"approved bytes")
    finally:
        echo.close()


def test_idle_sessions_close_and_busy_ones_stay(deployment: Deployment) -> None:
    echo = EchoServer()
    try:
        deployment.items = [
            {
                "name": "quiet",
                "type": "tcp",
                "host": "127.0.0.1",
                "tunnels": [{"local_port": "auto", "remote_port": echo.port}],
                "session_policy": "short",
            }
        ]
        deployment.sections = {"session_policies": {"short": {"idle_timeout": "3s"}}}
        deployment.create().serve()
        idle = deployment.open("quiet")
        ready = idle.wait_for_event("ready")
        assert ready["idle_timeout"] == 3
        busy = deployment.open("quiet")
        busy_ready = busy.wait_for_event("ready")
        host, port = tunnel_address(busy_ready)
        connection = socket.create_connection((host, port), timeout=10)
        stop = threading.Event()

        def chatter() -> None:
            while not stop.wait(0.5):
                connection.sendall(b"ping")
                connection.recv(16)

        thread = threading.Thread(target=chatter, daemon=True)
        thread.start()
        closed = idle.wait_for_event("closed", timeout=30)
        assert "idle" in closed["reason"]
        assert idle.wait() == ExitCode.SESSION_LOST
        assert busy.popen.poll() is None  # traffic keeps it open past the idle timeout
        stop.set()
        thread.join(5)
        connection.close()
        busy.stop()
        audit_until(
            deployment,
            lambda rows: "idle_timeout" in [e.get("code") for e in rows],
            "--event",
            "session_closed",
        )
    finally:
        echo.close()


class _Webhook(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        _Webhook.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_foreign_sessions_allow_list_and_notifications(deployment: Deployment) -> None:
    echo = EchoServer()
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    _Webhook.received = []
    try:
        outside_port = echo.port + 1 if echo.port < 65535 else echo.port - 1
        deployment.items = [
            {
                "name": "db",
                "type": "tcp",
                "host": "127.0.0.1",
                "tunnels": [{"local_port": "auto", "remote_port": echo.port}],
                "jump_policy": "watched",
            },
            {
                "name": "elsewhere",
                "type": "tcp",
                "host": "localhost",
                "tunnels": [{"local_port": "auto", "remote_port": outside_port}],
            },
        ]
        deployment.sections = {
            "groups": {
                "admins": {
                    "jump_groups": ["*"],
                    "tunnels_restricted": {"terminate_foreign_tunnels": True},
                }
            },
            "allowed_targets": [f"127.0.0.0/8:{echo.port}"],
            "jump_policies": {
                "watched": {
                    "notifications": {
                        "webhook": f"http://127.0.0.1:{hook.server_address[1]}/jump?token=s3cret"
                    }
                }
            },
        }
        deployment.create()
        deployment.add_user("carol", "admins", deployment.home_of("carol"))
        deployment.add_user("dave", "default", deployment.home_of("dave"))
        deployment.serve()
        denied = deployment.jump("open", "elsewhere", "--for", "5s")
        assert denied.returncode == ExitCode.DENIED
        assert "rule: allowed_targets" in denied.stderr and "localhost" in denied.stderr
        session = deployment.open("db")
        ready = session.wait_for_event("ready")
        mine = json.loads(deployment.jump("sessions", "--json").stdout)
        assert [s["session"] for s in mine] == [ready["session"]]
        assert json.loads(deployment.jump_as("dave", "sessions", "--json").stdout) == []
        everyone = deployment.jump_as("dave", "sessions", "--all")
        assert everyone.returncode == ExitCode.DENIED
        assert "tunnels_restricted.terminate_foreign_tunnels" in everyone.stderr
        refused = deployment.jump_as("dave", "close", ready["session"])
        assert refused.returncode == ExitCode.DENIED
        listed = json.loads(deployment.jump_as("carol", "sessions", "--all", "--json").stdout)
        assert [s["user"] for s in listed] == ["alice"]
        closed = deployment.jump_as("carol", "close", ready["session"], "--reason", "maintenance")
        assert closed.returncode == 0, closed.stderr
        end = session.wait_for_event("closed")
        assert "carol" in end["reason"] and "maintenance" in end["reason"]
        assert session.wait() == ExitCode.SESSION_LOST
        received = wait_until(
            lambda: _Webhook.received if len(_Webhook.received) >= 2 else None,
            what="the session start and end notifications",
        )
        assert [r["event"] for r in received] == ["session_start", "session_end"]
        assert received[0]["session"] == ready["session"] and received[0]["user"] == "alice"
        assert "carol" in received[1]["reason"]
        audit_text = (deployment.directory / "audit.jsonl").read_text()
        assert "notification_sent" in audit_text and "s3cret" not in audit_text
        sent = [
            json.loads(line)
            for line in audit_text.splitlines()
            if json.loads(line)["event"] == "notification_sent"
        ]
        assert sent and all(
            (row["session"], row["user"], row["item"]) == (ready["session"], "alice", "db")
            for row in sent
        )
    finally:
        hook.shutdown()
        hook.server_close()
        echo.close()


def test_the_database_survives_a_killed_daemon(deployment: Deployment) -> None:
    deployment.sections = {"groups": MANAGERS}
    deployment.create()
    deployment.jumpoint("user", "groups", "alice", "--group", "ops")
    server = deployment.serve()
    for index in range(5):
        made = deployment.jump(
            "item",
            "create",
            "tcp",
            f"svc{index}",
            "--host",
            "127.0.0.1",
            "--tunnel",
            "auto:9",
            "--jump-group",
            "team-a",
        )
        assert made.returncode == 0, made.stderr
    session = deployment.open("svc0", "--no-reconnect")  # it ends with the daemon
    session.wait_for_event("ready")
    os.killpg(server.pid, 9)  # no clean shutdown
    server.wait()
    session.wait()
    deployment.serve()
    names = {i["name"] for i in json.loads(deployment.jump("items", "--json").stdout)}
    assert {f"svc{i}" for i in range(5)} <= names
    # the session a killed Jumpoint left open is resumable (detached), not closed
    stale = [e for e in _audit(deployment, "--event", "session_detached")]
    assert any(e.get("code") == "jumpoint_stopped" for e in stale)


WRITER = """
import sys, time
from pathlib import Path
from jumpoint.audit import AuditLog
from jumpoint.item_store import ItemStore
from jumpoint.state import StateDatabase
from shared.items import item_from_data

class Clock:
    def seconds(self): return time.time()
    def callLater(self, *a, **k): raise AssertionError("durable writes need no timer")

db = StateDatabase(Path(sys.argv[1]))
audit = AuditLog(db, None, Clock())
store = ItemStore(db)
n = 0
while True:
    spec = {"name": f"item{n}", "type": "tcp", "host": "127.0.0.1",
            "tunnels": [{"local_port": "auto", "remote_port": 9}], "comments": "x" * 2000}
    store.create(item_from_data(spec, "console"), "writer", time.time())
    audit.record("item_created", user="writer", item=f"item{n}", durable=True)
    print(n, flush=True)
    n += 1
"""


def test_a_process_killed_in_the_middle_of_writes_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    import sqlite3
    import sys

    path = tmp_path / "state.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    assert writer.stdout is not None
    acknowledged = []
    for line in writer.stdout:
        acknowledged.append(int(line))
        if len(acknowledged) >= 200:
            break
    writer.kill()  # SIGKILL, wherever it is: maybe inside a transaction
    writer.wait()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        names = {row[0] for row in db.execute("SELECT name FROM items")}
        audited = {row[0] for row in db.execute("SELECT item FROM audit")}
    for n in acknowledged:
        assert f"item{n}" in names and f"item{n}" in audited


def _pty_run(deployment: Deployment, args: list[str], answer: bytes) -> tuple[int, str]:
    """Run `jump ARGS` on a terminal, answer its question, return status and screen."""
    from tests.e2e.harness import Terminal, tool

    terminal = Terminal([*tool("jump"), *args], deployment.env())
    terminal.read_until(b"[y/N]", "the consent question")
    terminal.type(answer + b"\n")
    return terminal.finish()


def test_the_consent_question_on_a_terminal(deployment: Deployment) -> None:
    echo = EchoServer()
    try:
        deployment.items = [
            {
                "name": "rec",
                "type": "tcp",
                "host": "127.0.0.1",
                "tunnels": [{"local_port": "auto", "remote_port": echo.port}],
                "session_policy": "recorded",
            }
        ]
        deployment.sections = {"session_policies": {"recorded": {"recording": True}}}
        deployment.create().serve()
        status, screen = _pty_run(deployment, ["open", "rec", "--for", "1s"], b"n")
        assert status == ExitCode.DENIED
        assert "will be recorded" in screen or "are recorded" in screen
        assert "declined" in screen and "->" not in screen
        status, screen = _pty_run(deployment, ["open", "rec", "--for", "1s"], b"y")
        assert status == 0, screen
        assert f"-> 127.0.0.1:{echo.port}" in screen and "this session is recorded" in screen
        assert list((deployment.directory / "recordings").glob("*.pcap"))
    finally:
        echo.close()


def test_concurrent_consoles_create_items_without_corruption(deployment: Deployment) -> None:
    import sqlite3
    from concurrent.futures import ThreadPoolExecutor

    deployment.sections = {"groups": MANAGERS}
    deployment.create()
    deployment.jumpoint("user", "groups", "alice", "--group", "ops")
    deployment.serve()

    def create(index: int) -> int:
        return deployment.jump(
            "item",
            "create",
            "tcp",
            f"c{index}",
            "--host",
            "127.0.0.1",
            "--tunnel",
            "auto:9",
            "--jump-group",
            "team-x",
        ).returncode

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(create, range(16)))
    # meanwhile the admin adds users from another process
    deployment.add_user("eve", "default", deployment.home_of("eve"))
    assert codes == [0] * 16
    names = {i["name"] for i in json.loads(deployment.jump("items", "--json").stdout)}
    assert {f"c{i}" for i in range(16)} <= names
    with sqlite3.connect(deployment.directory / "state.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    created = [e for e in _audit(deployment, "--event", "item_created")]
    assert len(created) == 16


def _json_error(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON error event a failed `jump ... --json` printed (and its stderr agrees)."""
    (event,) = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert event["event"] == "error", event
    assert f"(rule: {event['rule']})" in result.stderr
    return event


def test_every_denial_is_named_in_json_and_audited_on_the_jumpoint(
    deployment: Deployment,
) -> None:
    """Item create without manage, a request over approval_max_duration, approve by a
    non-approver and by the requester, sessions --all, off loopback without --acl."""
    deployment.items = [
        {
            "name": "db",
            "type": "tcp",
            "host": "127.0.0.1",
            "tunnels": [{"local_port": "auto", "remote_port": 5432}],
            "jump_policy": "guarded",
        },
        {
            "name": "web",
            "type": "tcp",
            "host": "127.0.0.1",
            "tunnels": [{"local_port": "auto", "remote_port": 80}],
        },
    ]
    deployment.sections = {
        "groups": {"approvers": {"jump_groups": ["*"]}},
        "jump_policies": {
            "guarded": {
                "approval_required": True,
                "approver_group": "approvers",
                "approval_max_duration": "2h",
            }
        },
    }
    deployment.create()
    deployment.add_user("bob", "approvers", deployment.home_of("bob"))
    deployment.serve()
    mine = json.loads(
        deployment.jump("request", "db", "--reason", "fix", "--duration", "1h", "--json").stdout
    )["id"]
    bobs = json.loads(
        deployment.jump_as(
            "bob", "request", "db", "--reason", "own", "--duration", "1h", "--json"
        ).stdout
    )["id"]
    attempts = [
        (
            "alice",
            [
                "item",
                "create",
                "tcp",
                "x",
                "--host",
                "127.0.0.1",
                "--tunnel",
                "auto:22",
                "--jump-group",
                "prod",
                "--json",
            ],
            "groups.jump_groups.manage",
        ),
        (
            "alice",
            ["request", "db", "--reason", "fix", "--duration", "5h", "--json"],
            "jump_policies.guarded.approval_max_duration",
        ),
        ("alice", ["approve", str(mine), "--json"], "jump_policies.guarded.approver_group"),
        ("bob", ["approve", str(bobs), "--json"], "approvals.second_person"),
        ("alice", ["sessions", "--all", "--json"], "tunnels_restricted.terminate_foreign_tunnels"),
        (
            "alice",
            ["open", "web", "--local-address", "0.0.0.0", "--json", "--for", "5s"],
            "tunnels_restricted.acl",
        ),
    ]
    for user, args, rule in attempts:
        result = deployment.jump_as(user, *args)
        assert result.returncode == ExitCode.DENIED, (args, result.stderr)
        event = _json_error(result)
        assert (event["code"], event["rule"]) == ("denied", rule), args
    rows = [row for row in _audit(deployment) if row.get("rule")]
    assert [(row["user"], row["rule"]) for row in rows] == [
        (user, rule) for user, _, rule in attempts
    ]
    assert [row["event"] for row in rows] == [
        "item_denied",
        "request_denied",
        "request_denied",
        "request_denied",
        "request_denied",
        "session_denied",
    ]


def test_jumpoint_init_refuses_loopback_link_local_and_itself_as_targets(
    deployment: Deployment,
) -> None:
    """The configuration `jumpoint init` writes (no allowed_targets): the built-in default."""
    deployment.sections = {"groups": MANAGERS, "allowed_targets": None}
    deployment.create()
    assert "allowed_targets:" not in [
        line for line in deployment.config.read_text().splitlines() if not line.startswith("#")
    ]
    deployment.jumpoint("user", "groups", "alice", "--group", "ops")
    deployment.serve()
    refused = []
    for host, port in (
        ("169.254.169.254", 80),
        ("127.0.0.1", deployment.port),
        ("localhost", 22),
    ):
        result = deployment.jump(
            "item",
            "create",
            "tcp",
            f"to-{port}",
            "--host",
            host,
            "--tunnel",
            f"auto:{port}",
            "--jump-group",
            "team-a",
            "--json",
        )
        assert result.returncode == ExitCode.DENIED, result.stderr
        event = _json_error(result)
        assert event["rule"] == "allowed_targets" and "explicitly" in event["message"]
        refused.append(f"to-{port}")
    rows = _audit(deployment, "--event", "item_denied")
    assert [row["item"] for row in rows] == refused
    assert all(row["rule"] == "allowed_targets" for row in rows)
    assert json.loads(deployment.jump("items", "--json").stdout) == []
