"""Socket tuning shared by the channel and the bridges."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import ITCPTransport

READ_SIZE = 256 * 1024
"""Bytes read per system call (Twisted's default is 64 KiB); also the write
buffer size above which Twisted pauses a transport's producer."""


def tune_transport(transport: object) -> None:
    """Tune the channel's TCP socket (under TLS): no Nagle delay, larger reads.

    Frames are written whole, so Nagle's algorithm would only hold back small
    ones (an OPEN, a one-byte DATA) until the peer's delayed ACK.
    """
    for candidate in (transport, getattr(transport, "transport", None)):
        tcp = ITCPTransport(candidate, None)
        if tcp is not None and hasattr(candidate, "bufferSize"):
            candidate.bufferSize = READ_SIZE
            tcp.setTcpNoDelay(True)
            tcp.setTcpKeepAlive(True)


def send_now(transport: object) -> None:
    """Hand a TCP transport's buffered bytes to the kernel now, not at the next reactor turn.

    Twisted buffers every write until the reactor sees the socket writable,
    which costs a loop iteration (and two epoll updates) per hop; a tunnel
    chains several hops, so for small messages that latency adds up.  Only
    the plain writing state is handled here; closing, half-closing and
    errors stay with the reactor (the socket remains registered for writing
    whenever bytes are left).
    """
    tcp: Any = transport
    if not hasattr(tcp, "dataBuffer"):  # a TLS transport: the TCP connection under it
        tcp = getattr(transport, "transport", None)
    if (
        tcp is not None
        and getattr(tcp, "connected", False)
        and not getattr(tcp, "disconnecting", True)
        and not getattr(tcp, "_writeDisconnecting", True)
        and getattr(tcp, "_tempDataBuffer", None)
    ):
        tcp.doWrite()
