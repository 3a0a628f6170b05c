"""Socket tuning shared by the channel and the bridges."""

from __future__ import annotations

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
