"""End to end: 256 concurrent connections, the 257th refused, and bounded memory."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import time

from tests.e2e.harness import Deployment, rss_kib, tcp_item, tunnel_address, wait_until
from tests.e2e.servers import EchoServer, FirehoseServer, SinkServer

LIMIT = 256


async def _open_all(
    host: str, port: int, count: int
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    return list(await asyncio.gather(*(asyncio.open_connection(host, port) for _ in range(count))))


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
) -> tuple[str, str]:
    async def send() -> None:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    received = hashlib.sha256()
    while chunk := await reader.read(256 * 1024):
        received.update(chunk)
    await sender
    writer.close()
    return hashlib.sha256(payload).hexdigest(), received.hexdigest()


def test_256_concurrent_connections_with_sha256_and_the_257th_refused(deployment: Deployment):
    """256 connections move random data both ways intact; the 257th is refused at once."""
    echo = EchoServer()
    try:
        deployment.items = [tcp_item("echo", echo.port)]
        deployment.create().serve()
        session = deployment.open("echo")
        host, port = tunnel_address(session.wait_for_event("ready"))

        async def scenario() -> tuple[list[tuple[str, str]], bytes]:
            connections = await _open_all(host, port, LIMIT)
            wait_until(lambda: echo.accepted >= LIMIT, what="256 connections at the target")
            try:
                extra_reader, extra_writer = await asyncio.open_connection(host, port)
                refused = await asyncio.wait_for(extra_reader.read(1), 10)
                extra_writer.close()
            except ConnectionResetError:  # refused so fast that connect() saw the reset
                refused = b""
            payloads = [os.urandom(64 * 1024 + i * 997) for i in range(LIMIT)]
            results = await asyncio.gather(
                *(_exchange(r, w, p) for (r, w), p in zip(connections, payloads, strict=True))
            )
            return results, refused

        results, refused = asyncio.run(scenario())
        assert refused == b""
        assert echo.accepted == LIMIT, "the 257th connection must never reach the target"
        for sent, received in results:
            assert sent == received
        sent_hashes = sorted(sent for sent, _ in results)
        wait_until(lambda: len(echo.received_hashes) == LIMIT, what="all hashes at the target")
        assert sorted(echo.received_hashes) == sent_hashes
        refusal = session.wait_for_stderr("refused a local connection")
        assert "(rule: max_connections)" in refusal
        # the Jumpoint took the decision, and audited it
        denied = deployment.jumpoint("audit", "--json", "--event", "connection_denied").stdout
        assert [json.loads(line)["rule"] for line in denied.splitlines()] == ["max_connections"]
        stats = wait_until(
            lambda: next(
                (
                    e
                    for e in reversed(session.json_events())
                    if e["event"] == "stats"
                    and e["tunnels"][0]["total_connections"] == LIMIT
                    and e["connections"] == 0
                ),
                None,
            ),
            what="stats after all connections closed",
        )
        assert stats["tunnels"][0]["refused_connections"] == 1
    finally:
        echo.close()


def _fill_until_blocked(
    sock: socket.socket, block: bytes, quiet: float = 2.0, limit: float = 60.0
) -> int:
    """Write until nothing more is accepted for C{quiet} seconds; returns bytes written."""
    sock.setblocking(False)
    written = 0
    last_progress = time.monotonic()
    start = last_progress
    while time.monotonic() - last_progress < quiet:
        assert time.monotonic() - start < limit, "the writer was never stopped by backpressure"
        try:
            written += sock.send(block)
            last_progress = time.monotonic()
        except BlockingIOError:
            import select

            select.select([], [sock], [], 0.05)  # wait for writability, bounded
    return written


def test_a_reader_that_stops_reading_keeps_memory_bounded(deployment: Deployment):
    """Upload to a target that never reads: backpressure stops the writer, memory stays bounded,
    and another stream in the same session still works (no global stall)."""
    sink = SinkServer()
    echo = EchoServer()
    try:
        deployment.items = [
            {
                "name": "slow",
                "type": "tcp",
                "host": "127.0.0.1",
                "tunnels": [
                    {"local_port": "auto", "remote_port": sink.port},
                    {"local_port": "auto", "remote_port": echo.port},
                ],
            }
        ]
        server = deployment.create().serve()
        session = deployment.open("slow")
        ready = session.wait_for_event("ready")
        before = rss_kib(server.pid) + rss_kib(session.pid)
        with socket.create_connection(tunnel_address(ready, 0)) as writer:
            written = _fill_until_blocked(writer, os.urandom(256 * 1024))
            grown = rss_kib(server.pid) + rss_kib(session.pid) - before
            # kernel buffers + stream window + transport buffers; nowhere near what a
            # writer without backpressure would push in that time
            assert written < 96 * 1024 * 1024, written
            assert grown < 64 * 1024, f"RSS grew by {grown} KiB"
            # keep pushing: nothing more gets in, memory does not move
            more = _fill_until_blocked(writer, os.urandom(256 * 1024), quiet=1.0)
            assert more < 4 * 1024 * 1024
            assert rss_kib(server.pid) + rss_kib(session.pid) - before < 64 * 1024
            # the other stream of the same session is unaffected
            with socket.create_connection(tunnel_address(ready, 1), timeout=10) as other:
                other.sendall(b"ping")
                other.shutdown(socket.SHUT_WR)
                assert other.recv(16) == b"ping"
    finally:
        sink.close()
        echo.close()


def test_a_client_that_stops_reading_keeps_memory_bounded(deployment: Deployment):
    """Download from a target that writes without end to a client that never reads."""
    firehose = FirehoseServer()
    try:
        deployment.items = [
            {
                "name": "fire",
                "type": "tcp",
                "host": "127.0.0.1",
                "tunnels": [{"local_port": "auto", "remote_port": firehose.port}],
            }
        ]
        server = deployment.create().serve()
        session = deployment.open("fire")
        ready = session.wait_for_event("ready")
        before = rss_kib(server.pid) + rss_kib(session.pid)
        with socket.create_connection(tunnel_address(ready)) as reader:
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            last = [-1, time.monotonic()]

            def stalled() -> bool:
                with firehose.lock:
                    sent = firehose.sent
                if sent != last[0]:
                    last[0], last[1] = sent, time.monotonic()
                return sent > 0 and time.monotonic() - last[1] > 2.0

            wait_until(stalled, timeout=60, what="the target to be stopped by backpressure")
            assert firehose.sent < 96 * 1024 * 1024
            grown = rss_kib(server.pid) + rss_kib(session.pid) - before
            assert grown < 64 * 1024, f"RSS grew by {grown} KiB"
            # reading again drains it and the flow resumes
            drained = 0
            reader.settimeout(10)
            while drained < 32 * 1024 * 1024:
                chunk = reader.recv(1 << 20)
                assert chunk
                drained += len(chunk)
    finally:
        firehose.close()
