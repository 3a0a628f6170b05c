"""End to end: half-finished TLS handshakes cannot lock enrolled users out (issue 9, point 7).

A real `jumpoint serve` runs with 1024 file descriptors (the default of a
systemd unit without LimitNOFILE) and a long handshake timeout, so that
nothing but the pending-handshake caps can free its descriptors.  1 100 TCP
connections from 100 loopback source addresses each send the first bytes of
a ClientHello and nothing more; then a real `jump open` connects, and curl
fetches a file through its tunnel.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.harness import (
    Deployment,
    background_process,
    free_port,
    port_open,
    rss_kib,
    tunnel_address,
    wait_until,
)

HALF_DONE = 1100
SOURCES = 100
PARTIAL_CLIENT_HELLO = bytes.fromhex("160301020001") + b"\x00\x01\xfc\x03\x03" + os.urandom(40)
"""A record header announcing a 512-byte ClientHello, then only its first 50 bytes."""


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_1100_half_done_handshakes_at_1024_descriptors(deployment: Deployment, tmp_path: Path):
    site = tmp_path / "site"
    site.mkdir()
    payload = os.urandom(256 * 1024)
    (site / "blob.bin").write_bytes(payload)
    http_port = free_port()
    server_args = [sys.executable, "-m", "http.server", str(http_port), "--bind", "127.0.0.1"]
    with background_process(
        [*server_args, "--directory", str(site)],
        lambda: port_open("127.0.0.1", http_port),
        "the HTTP server",
    ):
        deployment.items = [
            {
                "name": "web",
                "type": "tcp",
                "host": "127.0.0.1",
                "tunnels": [{"local_port": "auto", "remote_port": http_port}],
            }
        ]
        # Defaults of the caps (512 in all, 32 per address); the handshake timeout is
        # long so that it cannot be what frees the descriptors.
        deployment.sections = {"limits": {"handshake_timeout": "300s"}}
        server = deployment.create().serve(max_files=1024)
        rss_before = rss_kib(server.pid)
        attackers: list[socket.socket] = []
        try:
            for index in range(HALF_DONE):
                attacker = socket.socket()
                attacker.bind((f"127.0.{1 + index % SOURCES}.{1 + index // SOURCES}", 0))
                attacker.settimeout(10)
                attacker.connect(("127.0.0.1", deployment.port))
                attacker.sendall(PARTIAL_CLIENT_HELLO)
                attackers.append(attacker)
            started = time.monotonic()
            session = deployment.open("web")
            host, port = tunnel_address(session.wait_for_event("ready", timeout=20))
            connected_in = time.monotonic() - started
            fetched = subprocess.run(
                ["curl", "-sS", "--max-time", "20", f"http://{host}:{port}/blob.bin"],
                capture_output=True,
                timeout=30,
            )
            assert fetched.returncode == 0, fetched.stderr
            assert fetched.stdout == payload
            assert connected_in < 15, f"jump open needed {connected_in:.1f}s"
            # The daemon holds at most the cap of them, not one descriptor per attempt.
            wait_until(
                lambda: open_descriptors(server.pid) < 700,
                what="the Jumpoint to close the handshakes over the cap",
            )
            # Held handshakes are bounded in memory too (5 000 used to cost ~300 MB).
            growth_mib = (rss_kib(server.pid) - rss_before) / 1024
            assert growth_mib < 64, f"RSS grew by {growth_mib:.0f} MiB"
            # One line at once and a summary per interval, not a line per connection.
            handshake_lines = [line for line in server.stdout_lines if "TLS handshake" in line]
            assert 1 <= len(handshake_lines) <= 2, handshake_lines
        finally:
            for attacker in attackers:
                attacker.close()
        assert server.popen.poll() is None
