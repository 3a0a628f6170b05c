"""End to end: `jump open` survives a lost channel (issue 12, "Reconnect (console)").

(a) the Jumpoint killed -9 and started again on its port: the listener
stays bound, `reconnecting` then `reconnected` are reported, the connection
open at the loss is reset (counted), one made while the Jumpoint was down
waits and then goes through, and a new one carries a transfer intact
(SHA-256); (b) a silent link (a relay stopped with SIGSTOP, the profile's
addresses [relay, direct]) is noticed within the keepalive timeout and the
session comes back through the direct address; (c) `--no-reconnect` exits 9
at the first loss, its listener closed.  (a) and (b) need the Jumpoint's
side (resume tokens, detached sessions): the resume track.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from tests.e2e.harness import (
    Deployment,
    Process,
    free_port,
    tcp_item,
    tunnel_address,
    wait_until,
)
from tests.e2e.servers import EchoServer

KEEPALIVE_INTERVAL = 1.0
KEEPALIVE_TIMEOUT = 3.0
ROOT = Path(__file__).resolve().parents[2]


def listening(port: int) -> bool:
    """Whether a socket listens on C{port} (from /proc/net/tcp; connecting would be a client)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                return True
    return False


def echo_sha256(host: str, port: int, size: int = 4 * 1024 * 1024) -> tuple[str, str]:
    """Send C{size} random bytes through the tunnel, read the echo: (sent, received) SHA-256."""
    payload = os.urandom(size)
    received = hashlib.sha256()
    with socket.create_connection((host, port), timeout=30) as connection:
        connection.sendall(payload)
        connection.shutdown(socket.SHUT_WR)
        while data := connection.recv(256 * 1024):
            received.update(data)
    return hashlib.sha256(payload).hexdigest(), received.hexdigest()


def open_connection(host: str, port: int) -> socket.socket:
    """A connection through the tunnel that is known to be carried (one echo round trip)."""
    connection = socket.create_connection((host, port), timeout=30)
    connection.sendall(b"ping")
    assert connection.recv(4) == b"ping"
    return connection


def reset_or_closed(connection: socket.socket) -> bool:
    try:
        return connection.recv(1) == b""
    except OSError:
        return True


def deploy(deployment: Deployment, echo: EchoServer, keepalive: bool = False) -> Process:
    deployment.items = [tcp_item("web", echo.port)]
    if keepalive:
        deployment.sections = {
            "limits": {
                "keepalive_interval": f"{KEEPALIVE_INTERVAL:g}s",
                "keepalive_timeout": f"{KEEPALIVE_TIMEOUT:g}s",
            }
        }
    return deployment.create().serve()


def set_addresses(deployment: Deployment, addresses: list[str]) -> None:
    (path,) = deployment.home.glob("profiles/*/profile.yaml")
    document = yaml.safe_load(path.read_text())
    document["addresses"] = addresses
    path.write_text(yaml.safe_dump(document))


@contextmanager
def relay_to(port: int) -> Iterator[tuple[Process, int]]:
    relay_port = free_port()
    relay = Process(
        [sys.executable, "-m", "tests.e2e.tcp_relay", str(relay_port), f"127.0.0.1:{port}"],
        dict(os.environ),
        cwd=ROOT,
    )
    try:
        relay.wait_for_stdout("ready")
        yield relay, relay_port
    finally:
        relay.signal(signal.SIGCONT)
        relay.stop()


def test_a_jumpoint_killed_and_restarted_is_reconnected_with_the_listener_kept(
    deployment: Deployment,
) -> None:
    echo = EchoServer()
    try:
        server = deploy(deployment, echo)
        session = deployment.open("web", "--connect-wait", "60s")
        host, port = tunnel_address(session.wait_for_event("ready"))
        before = open_connection(host, port)
        server.signal(signal.SIGKILL)
        server.wait()
        reconnecting = session.wait_for_event("reconnecting")
        assert reconnecting["attempt"] == 1 and reconnecting["reason"]
        assert reconnecting["reset_connections"] == 1
        assert 0 <= reconnecting["retry_in"] <= 0.5
        assert reset_or_closed(before)
        assert listening(port), "the listener was closed while reconnecting"
        # a connection made while the Jumpoint is down waits, then goes through
        waiting = socket.create_connection((host, port), timeout=60)
        waiting.sendall(b"held")
        deployment.serve()
        reconnected = session.wait_for_event("reconnected", timeout=60)
        assert waiting.recv(4) == b"held"
        waiting.close()
        assert reconnected["address"] == f"127.0.0.1:{deployment.port}"
        assert reconnected["down_for"] > 0
        sent, received = echo_sha256(host, port)
        assert sent == received
        wait_until(lambda: sent in echo.received_hashes, what="the echo server's hash")
        session.signal(signal.SIGTERM)
        assert session.wait() == 0, session.output()
    finally:
        echo.close()


def test_a_silent_link_is_noticed_within_the_keepalive_timeout_and_failed_over(
    deployment: Deployment,
) -> None:
    echo = EchoServer()
    try:
        deploy(deployment, echo, keepalive=True)
        direct = f"127.0.0.1:{deployment.port}"
        with relay_to(deployment.port) as (relay, relay_port):
            set_addresses(deployment, [f"127.0.0.1:{relay_port}", direct])
            session = deployment.open("web")
            host, port = tunnel_address(session.wait_for_event("ready"))
            sent, received = echo_sha256(host, port, 65536)  # carried through the relay
            assert sent == received
            relay.signal(signal.SIGSTOP)
            stopped = time.monotonic()
            reconnecting = session.wait_for_event("reconnecting", timeout=KEEPALIVE_TIMEOUT + 10)
            elapsed = time.monotonic() - stopped
            assert elapsed <= KEEPALIVE_TIMEOUT + 1.0, f"the dead link took {elapsed:.2f}s"
            assert "keepalive" in reconnecting["reason"]
            assert listening(port)
            reconnected = session.wait_for_event("reconnected", timeout=30)
            assert reconnected["address"] == direct
            sent, received = echo_sha256(host, port)
            assert sent == received
            session.signal(signal.SIGTERM)
            assert session.wait() == 0, session.output()
    finally:
        echo.close()


def test_no_reconnect_exits_9_at_the_first_loss(deployment: Deployment) -> None:
    echo = EchoServer()
    try:
        server = deploy(deployment, echo)
        session = deployment.open("web", "--no-reconnect")
        _, port = tunnel_address(session.wait_for_event("ready"))
        server.signal(signal.SIGKILL)
        assert session.wait() == 9, session.output()
        assert not listening(port)
        events = [e["event"] for e in session.json_events()]
        assert "reconnecting" not in events
        (closed,) = [e for e in session.json_events() if e["event"] == "closed"]
        assert closed["code"] == "jumpoint_lost"
        assert "the connection to the Jumpoint was lost" in closed["reason"]
    finally:
        echo.close()


def test_no_reconnect_and_reconnect_for_exclude_each_other(deployment: Deployment) -> None:
    deployment.create()
    result = deployment.jump("open", "web", "--no-reconnect", "--reconnect-for", "1m")
    assert result.returncode == 2 and "exclude each other" in result.stderr
