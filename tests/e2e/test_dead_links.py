"""End to end: dead links are dropped (issue 9, point 11).

A frozen process (`kill -STOP`) keeps its sockets open and its kernel keeps
acknowledging TCP, so only the channel keepalive can notice it: `jump open
--no-reconnect` must give up within the keepalive timeout plus a second, exit
9 with its listeners closed and say the connection was lost (without
`--no-reconnect` it reconnects: tests/e2e/test_reconnect.py); the Jumpoint must abort a
frozen console's connection instead of waiting for its TLS close.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.e2e.harness import (
    Deployment,
    Process,
    audit_until,
    free_port,
    port_open,
    tunnel_address,
    wait_until,
)

KEEPALIVE_INTERVAL = 1.0
KEEPALIVE_TIMEOUT = 3.0


@contextmanager
def frozen(process: Process) -> Iterator[None]:
    """SIGSTOP the process for the block; SIGCONT it afterwards whatever happens."""
    process.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        process.signal(signal.SIGCONT)


def _deploy(deployment: Deployment, interval: float, timeout: float) -> Process:
    deployment.items = [
        {
            "name": "web",
            "type": "tcp",
            "host": "127.0.0.1",
            "tunnels": [{"local_port": "auto", "remote_port": free_port()}],
        }
    ]
    deployment.sections = {
        "limits": {"keepalive_interval": f"{interval:g}s", "keepalive_timeout": f"{timeout:g}s"}
    }
    return deployment.create().serve()


def established_connections(port: int) -> int:
    """ESTABLISHED TCP connections whose local port is C{port} (from /proc/net/tcp)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            if int(local.rsplit(":", 1)[1], 16) == port and state == "01":
                count += 1
    return count


def test_a_frozen_jumpoint_makes_jump_open_exit_9_with_its_listeners_closed(
    deployment: Deployment,
) -> None:
    server = _deploy(deployment, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
    session = deployment.open("web", "--no-reconnect")
    host, port = tunnel_address(session.wait_for_event("ready"))
    assert port_open(host, port)
    with frozen(server):
        stopped = time.monotonic()
        status = session.wait(timeout=KEEPALIVE_TIMEOUT + 10)
        elapsed = time.monotonic() - stopped
        assert status == 9, session.output()
        assert elapsed <= KEEPALIVE_TIMEOUT + 1.0, f"jump open took {elapsed:.2f}s to give up"
        assert not port_open(host, port)
    (closed,) = [e for e in session.json_events() if e["event"] == "closed"]
    assert closed["code"] == "jumpoint_lost"
    stderr = "\n".join(session.stderr_lines)
    assert "the connection to the Jumpoint was lost" in stderr
    assert "the Jumpoint closed" not in stderr + closed["reason"]


def test_sigterm_while_the_jumpoint_is_frozen_does_not_exit_0(deployment: Deployment) -> None:
    server = _deploy(deployment, 5.0, 60.0)
    session = deployment.open("web")
    host, port = tunnel_address(session.wait_for_event("ready"))
    with frozen(server):
        session.signal(signal.SIGTERM)
        status = session.wait(timeout=20)
        assert status == 9, session.output()
        assert not port_open(host, port)
    stderr = "\n".join(session.stderr_lines)
    assert "the connection to the Jumpoint was lost" in stderr
    # The same signal with a live Jumpoint is a normal end.
    again = deployment.open("web")
    again.wait_for_event("ready")
    again.signal(signal.SIGTERM)
    assert again.wait() == 0, again.output()


def test_the_jumpoint_aborts_a_frozen_consoles_connection(deployment: Deployment) -> None:
    server = _deploy(deployment, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
    session = deployment.open("web")
    ready = session.wait_for_event("ready")
    assert established_connections(deployment.port) == 1
    with frozen(session):
        # detached, not closed: the session stays resumable for its reconnect grace
        audit_until(
            deployment,
            lambda rows: any(
                r["event"] == "session_detached"
                and r.get("session") == ready["session"]
                and r.get("code") == "keepalive_timeout"
                for r in rows
            ),
            what="the session_detached row of the frozen console",
        )
        # Not only audited: the TCP connection is gone too (aborted, not waiting for TLS).
        wait_until(
            lambda: established_connections(deployment.port) == 0,
            timeout=KEEPALIVE_TIMEOUT + 5,
            what="the Jumpoint to drop the frozen console's TCP connection",
        )
    assert server.popen.poll() is None
