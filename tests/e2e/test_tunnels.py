"""End to end: real clients through real `jump open` and `jumpoint serve` processes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.e2e.harness import (
    Deployment,
    Terminal,
    background_process,
    free_port,
    port_open,
    run,
    tool,
    tunnel_address,
    wait_until,
)


def test_curl_through_a_tunnel_to_a_real_http_server(deployment: Deployment, tmp_path: Path):
    """curl fetches a file through the tunnel byte for byte; stats count the bytes."""
    site = tmp_path / "site"
    site.mkdir()
    payload = os.urandom(3 * 1024 * 1024)
    (site / "blob.bin").write_bytes(payload)
    http_port = free_port()
    with background_process(
        [
            sys.executable,
            "-m",
            "http.server",
            str(http_port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(site),
        ],
        lambda: port_open("127.0.0.1", http_port),
        "the HTTP server",
    ):
        deployment.items = [
            {
                "name": "web",
                "type": "tcp",
                "host": "127.0.0.1",
                "local_address": "127.0.0.7",
                "tunnels": [{"local_port": "auto", "remote_port": http_port}],
            }
        ]
        deployment.create().serve()
        session = deployment.open("web")
        ready = session.wait_for_event("ready")
        assert ready["item"] == "web" and ready["session"]
        host, port = tunnel_address(ready)
        assert host == "127.0.0.7" and port > 0
        assert ready["tunnels"][0]["remote_host"] == "127.0.0.1"
        assert ready["tunnels"][0]["remote_port"] == http_port
        out = tmp_path / "fetched.bin"
        result = subprocess.run(
            ["curl", "-sS", "--fail", "-o", str(out), f"http://{host}:{port}/blob.bin"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(payload).digest()

        def counted() -> dict | None:
            for event in reversed(session.json_events()):
                if event["event"] == "stats" and event["bytes_from_remote"] >= len(payload):
                    return event
            return None

        stats = wait_until(counted, what="stats with the downloaded bytes")
        assert stats["tunnels"][0]["total_connections"] == 1
        assert stats["bytes_to_remote"] > 0
        session.signal(signal.SIGINT)
        assert session.wait() == 0
        closed = session.json_events()[-1]
        assert closed["event"] == "closed"
        assert closed["code"] == "interrupted"
        # --json: nothing but JSON lines on stdout
        assert all(json.loads(line) for line in session.stdout_lines)


def test_redis_cli_through_a_tunnel(deployment: Deployment):
    """A real redis-server from Debian, used by redis-cli through the tunnel."""
    redis = shutil.which("redis-server")
    assert redis, "redis-server is required (apt-get install redis-server)"
    redis_port = free_port()
    with background_process(
        [
            redis,
            "--port",
            str(redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        lambda: port_open("127.0.0.1", redis_port),
        "redis-server",
    ):
        deployment.items = [
            {
                "name": "cache",
                "type": "tcp",
                "host": "127.0.0.1",
                "local_address": "127.0.0.8",
                "tunnels": [{"local_port": "auto", "remote_port": redis_port}],
            }
        ]
        deployment.create().serve()
        session = deployment.open("cache")
        host, port = tunnel_address(session.wait_for_event("ready"))
        cli = ["redis-cli", "-h", host, "-p", str(port)]
        value = os.urandom(16).hex()
        assert run([*cli, "SET", "jump-key", value], {}).stdout.strip() == "OK"
        assert run([*cli, "GET", "jump-key"], {}).stdout.strip() == value
        big = os.urandom(512 * 1024).hex()
        stored = subprocess.run(
            [*cli, "-x", "SET", "big"], input=big, capture_output=True, text=True, timeout=60
        )
        assert stored.stdout.strip() == "OK", stored.stderr
        assert run([*cli, "STRLEN", "big"], {}).stdout.strip() == str(len(big))
        assert run([*cli, "GET", "big"], {}).stdout.strip() == big
        session.signal(signal.SIGTERM)
        assert session.wait() == 0
        assert session.json_events()[-1]["code"] == "terminated"


def test_command_runs_with_the_tunnels_and_passes_its_exit_status(deployment: Deployment):
    """`jump open ITEM -- CMD` sets JUMP_* variables, waits for readiness, returns CMD's status."""
    with background_process(
        [sys.executable, "-m", "http.server", str(port := free_port()), "--bind", "127.0.0.1"],
        lambda: port_open("127.0.0.1", port),
        "the HTTP server",
    ):
        deployment.items = [
            {
                "name": "web",
                "type": "tcp",
                "host": "127.0.0.1",
                "tunnels": [
                    {"local_port": "auto", "remote_port": port},
                    {"local_port": free_port(), "remote_port": 9},
                ],
            }
        ]
        deployment.create().serve()
        script = (
            "set -e; curl -sS -o /dev/null --fail http://$JUMP_LOCAL_ADDR:$JUMP_LOCAL_PORT/;"
            ' echo "tunnels=$JUMP_TUNNELS"; exit 7'
        )
        result = deployment.jump("open", "web", "--", "sh", "-c", script)
        assert result.returncode == 7, result.stderr
        line = next(x for x in result.stdout.splitlines() if x.startswith("tunnels="))
        tunnels = json.loads(line.removeprefix("tunnels="))
        assert [t["remote_port"] for t in tunnels] == [port, 9]
        assert "session closed: the command exited with status 7" in result.stderr
        ok = deployment.jump("open", "web", "--", "true")
        assert ok.returncode == 0


def test_for_duration_closes_the_session(deployment: Deployment):
    """--for ends the session by itself with a closed event."""
    deployment.items = [
        {
            "name": "web",
            "type": "tcp",
            "host": "127.0.0.1",
            "tunnels": [{"local_port": "auto", "remote_port": 9}],
        }
    ]
    deployment.create().serve()
    session = deployment.open("web", "--for", "1s")
    session.wait_for_event("ready")
    assert session.wait() == 0
    events = session.json_events()
    assert events[0]["event"] == "ready"
    assert events[-1]["event"] == "closed" and events[-1]["code"] == "expired"


def test_items_lists_the_configured_items(deployment: Deployment):
    """`jump items --json` shows every item the user may open."""
    deployment.items = [
        {
            "name": "db",
            "type": "tcp",
            "host": "db.corp.example",
            "local_address": "127.0.0.5",
            "tunnels": [{"local_port": 5432, "remote_port": 5432}],
            "tag": "prod",
            "comments": "main database",
        },
    ]
    deployment.create().serve()
    result = deployment.jump("items", "--json")
    assert result.returncode == 0, result.stderr
    (item,) = json.loads(result.stdout)
    assert item["name"] == "db" and item["host"] == "db.corp.example"
    assert item["tunnels"] == [{"local_port": 5432, "remote_port": 5432, "protocol": "tcp"}]
    assert item["tag"] == "prod" and item["read_only"] is True
    table = deployment.jump("items")
    assert "db.corp.example" in table.stdout


def test_live_view_on_a_terminal(deployment: Deployment, tmp_path: Path):
    """On a terminal `jump open` redraws a table of tunnels with their statistics."""

    with background_process(
        [sys.executable, "-m", "http.server", str(port := free_port()), "--bind", "127.0.0.1"],
        lambda: port_open("127.0.0.1", port),
        "the HTTP server",
    ):
        deployment.items = [
            {
                "name": "web",
                "type": "tcp",
                "host": "127.0.0.1",
                "local_address": "127.0.0.9",
                "tunnels": [{"local_port": free_port("127.0.0.9"), "remote_port": port}],
            }
        ]
        deployment.create().serve()
        local_port = deployment.items[0]["tunnels"][0]["local_port"]
        terminal = Terminal([*tool("jump"), "open", "web", "--for", "4s"], deployment.env())
        terminal.read_until(b"-> 127.0.0.1:", "the bindings on the terminal")
        subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", f"http://127.0.0.9:{local_port}/"],
            check=True,
            timeout=30,
        )
        terminal.read_until(b"session closed", "the end of the session")
        status, text = terminal.finish(30)
        assert status == 0
        assert "TUNNEL" in text and "RECEIVED" in text and "DOWN/s" in text
        assert "\x1b[" in text  # redrawn in place
        assert f"127.0.0.9:{local_port} -> 127.0.0.1:{port}" in text
        assert "listening" in text
