"""End to end: UDP tunnel pairs through real `jump open` and `jumpoint serve` on loopback.

Real clients and servers: `dig` against a small DNS responder
(L{tests.e2e.servers.DnsResponder}), a `socat` UDP echo server (and a
`socat` TCP echo on the same port for a C{tcp-udp} pair), datagrams of
every size up to the UDP maximum with their boundaries kept, the flow cap,
the idle timeout, the audit rows and the console's counters.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.e2e.harness import (
    Deployment,
    Process,
    audit_until,
    background_process,
    free_port,
    port_open,
    tunnel_address,
    wait_until,
)
from tests.e2e.servers import DnsResponder

needs_dig = pytest.mark.skipif(shutil.which("dig") is None, reason="dig (dnsutils) is missing")
needs_socat = pytest.mark.skipif(shutil.which("socat") is None, reason="socat is missing")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def udp_item(name: str, remote_port: int, protocol: str = "udp", **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "tcp",
        "host": "127.0.0.1",
        "tunnels": [{"local_port": "auto", "remote_port": remote_port, "protocol": protocol}],
        **more,
    }


@contextmanager
def dns_responder(records: dict[str, str]) -> Iterator[DnsResponder]:
    responder = DnsResponder(records)
    try:
        yield responder
    finally:
        responder.close()


def udp_round_trip(host: str, port: int, payload: bytes, client: socket.socket) -> bytes:
    client.sendto(payload, (host, port))
    data, _ = client.recvfrom(65535)
    return data


def client_socket(timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(timeout)
    return sock


def stats_where(session: Process, check: Any) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for event in reversed(session.json_events()):
            if event["event"] == "stats" and check(event):
                return event
        return None

    return wait_until(found, what="a stats event")


@needs_dig
def test_dig_resolves_through_a_udp_tunnel(deployment: Deployment) -> None:
    """dig asks a DNS responder through the tunnel; ready, stats and the audit show the flow."""
    with dns_responder({"svc.jpt.test": "198.18.1.10"}) as dns:
        deployment.items = [udp_item("dns", dns.port, local_address="127.0.0.9")]
        deployment.create().serve()
        session = deployment.open("dns")
        ready = session.wait_for_event("ready")
        tunnel = ready["tunnels"][0]
        assert tunnel["protocol"] == "udp" and tunnel["remote_port"] == dns.port
        assert ready["udp_idle_timeout"] == 60 and ready["max_udp_flows"] == 64
        host, port = tunnel_address(ready)
        assert host == "127.0.0.9" and port > 0
        for _ in range(3):  # one client port per dig run: three flows
            result = subprocess.run(
                ["dig", f"@{host}", "-p", str(port), "svc.jpt.test", "A", "+short", "+tries=1"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 0, result.stdout + result.stderr
            assert result.stdout.strip() == "198.18.1.10"
        missing = subprocess.run(
            ["dig", f"@{host}", "-p", str(port), "nothing.jpt.test", "+tries=1"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "status: NXDOMAIN" in missing.stdout
        assert dns.queries == 4
        stats = stats_where(session, lambda e: e.get("datagrams_from_remote", 0) >= 4)
        assert stats["total_udp_flows"] == 4 and stats["udp_drops"] == 0
        assert stats["tunnels"][0]["datagrams_to_remote"] == 4
        session.signal(2)
        assert session.wait() == 0
        closed = session.wait_for_event("closed")
        assert closed["total_udp_flows"] == 4 and closed["datagrams_from_remote"] == 4
        entries = audit_until(
            deployment,
            lambda rows: sum(r["event"] == "udp_flow_closed" for r in rows) == 4,
            "--item",
            "dns",
            what="four closed UDP flows",
        )
        opened = [e for e in entries if e["event"] == "udp_flow_opened"]
        assert len(opened) == 4
        assert {e["target"] for e in opened} == {f"127.0.0.1:{dns.port}"}
        assert all(e["client"].startswith("127.0.0.1:") for e in opened)
        flows = [e for e in entries if e["event"] == "udp_flow_closed"]
        assert all(e["datagrams_to_target"] == 1 == e["datagrams_from_target"] for e in flows)
        assert all(e["bytes_to_target"] > 12 and e["duration"] >= 0 for e in flows)


@needs_socat
def test_socat_udp_echo_keeps_every_datagram_whole_beside_tcp(deployment: Deployment) -> None:
    """A tcp-udp pair: datagrams up to 65507 bytes echo back whole; TCP works on the same port."""
    port = free_port()
    udp_echo = ["socat", "-b65536", "-T10", f"UDP4-RECVFROM:{port},bind=127.0.0.1,fork", "PIPE"]
    tcp_echo = ["socat", f"TCP4-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", "PIPE"]
    with (
        background_process(tcp_echo, lambda: port_open("127.0.0.1", port), "the TCP echo"),
        background_process(udp_echo, lambda: True, "the UDP echo"),
    ):
        deployment.items = [udp_item("echo", port, protocol="tcp-udp")]
        deployment.create().serve()
        session = deployment.open("echo")
        ready = session.wait_for_event("ready")
        assert ready["tunnels"][0]["protocol"] == "tcp-udp"
        host, local = tunnel_address(ready)
        with client_socket() as client:
            sizes = [1, 512, 1472, 3000, 9000, 16384, 65507]  # socat reads 0 bytes as EOF
            for size in sizes:
                payload = os.urandom(size)
                wait_until(
                    lambda p=payload: _echoed(client, host, local, p),
                    what=f"a {size}-byte datagram echoed",
                )
        with socket.create_connection((host, local), timeout=10) as tcp:
            tcp.sendall(b"over tcp\n")
            assert tcp.recv(100) == b"over tcp\n"
        stats = stats_where(session, lambda e: e.get("datagrams_from_remote", 0) >= len(sizes))
        assert stats["udp_flows"] == 1 and stats["total_udp_flows"] == 1
        assert stats["bytes_from_remote"] >= sum(sizes)


def _echoed(client: socket.socket, host: str, port: int, payload: bytes) -> bool:
    """One datagram there and back (the echo's first datagram may race its start: retried)."""
    client.settimeout(2.0)
    try:
        return udp_round_trip(host, port, payload, client) == payload
    except TimeoutError:
        return False


@needs_socat
def test_a_socat_client_and_the_flow_cap_and_idle_timeout(deployment: Deployment) -> None:
    """socat as the client; one flow allowed: a second client is refused and counted; an idle
    flow closes after udp_idle_timeout, and the client then gets a new one."""
    port = free_udp_port()
    udp_echo = ["socat", "-T30", f"UDP4-RECVFROM:{port},bind=127.0.0.1,fork", "PIPE"]
    with background_process(udp_echo, lambda: True, "the UDP echo"):
        deployment.items = [udp_item("capped", port, session_policy="one-flow")]
        deployment.sections = {
            "session_policies": {"one-flow": {"max_udp_flows": 1, "udp_idle_timeout": "2s"}}
        }
        deployment.create().serve()
        session = deployment.open("capped")
        ready = session.wait_for_event("ready")
        assert ready["max_udp_flows"] == 1 and ready["udp_idle_timeout"] == 2
        host, local = tunnel_address(ready)

        def socat_says(text: bytes) -> bool:
            result = subprocess.run(
                ["socat", "-t3", "-T3", "-", f"UDP4:{host}:{local}"],
                input=text,
                capture_output=True,
                timeout=30,
            )
            return result.stdout == text

        wait_until(lambda: socat_says(b"hello from socat\n"), what="socat's echo")
        with client_socket(timeout=0.5) as holder, client_socket(timeout=0.5) as second:
            wait_until(lambda: _echoed(holder, host, local, b"holding"), what="the first flow")
            second.sendto(b"refused", (host, local))
            with pytest.raises(TimeoutError):
                second.recvfrom(100)
            stats = stats_where(session, lambda e: e.get("refused_udp_flows", 0) >= 1)
            assert stats["udp_drops"] >= 1
            session.wait_for_stderr("rule: max_udp_flows")
            # the holder stays quiet: its flow idles out, and the second client gets through
            wait_until(lambda: _echoed(second, host, local, b"now"), what="a flow after idle")
        entries = audit_until(
            deployment,
            lambda rows: any(
                r["event"] == "udp_flow_closed" and "udp_idle_timeout" in r["reason"] for r in rows
            ),
            "--item",
            "capped",
            what="a flow closed by udp_idle_timeout",
        )
        assert any(e["event"] == "udp_flow_opened" for e in entries)
