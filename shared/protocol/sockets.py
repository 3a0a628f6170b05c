"""Socket tuning shared by the channel and the bridges."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from twisted.internet.interfaces import ITCPTransport

READ_SIZE = 256 * 1024
"""Bytes read per system call (Twisted's default is 64 KiB); also the write
buffer size above which Twisted pauses a transport's producer."""


def tune_transport(
    transport: object, keepalive_interval: float = 15.0, keepalive_timeout: float = 45.0
) -> None:
    """Tune the channel's TCP socket (under TLS): no Nagle delay, larger reads, dead links.

    Frames are written whole, so Nagle's algorithm would only hold back small
    ones (an OPEN, a one-byte DATA) until the peer's delayed ACK.  The
    kernel drops the connection when sent data stays unacknowledged for
    C{keepalive_timeout} (TCP_USER_TIMEOUT) and probes an idle one every
    C{keepalive_interval} (TCP keepalive), so a dead link is noticed even
    when the multiplexer's own keepalive cannot run.
    """
    for candidate in (transport, getattr(transport, "transport", None)):
        tcp = ITCPTransport(candidate, None)
        if tcp is not None and hasattr(candidate, "bufferSize"):
            candidate.bufferSize = READ_SIZE
            tcp.setTcpNoDelay(True)
            tcp.setTcpKeepAlive(True)
            handle = getattr(candidate, "getHandle", None)
            if handle is not None:
                set_dead_link_timeouts(handle(), keepalive_interval, keepalive_timeout)


def set_dead_link_timeouts(sock: Any, interval: float, timeout: float) -> None:
    """TCP_USER_TIMEOUT and keepalive probes on C{sock} (where the system has them)."""
    interval_s = max(1, int(interval))
    options = [
        ("TCP_USER_TIMEOUT", max(1000, int(timeout * 1000))),
        ("TCP_KEEPIDLE", interval_s),
        ("TCP_KEEPINTVL", interval_s),
        ("TCP_KEEPCNT", max(1, int(timeout // interval_s))),
    ]
    for name, value in options:
        option = getattr(socket, name, None)
        if option is None:
            continue
        with contextlib.suppress(OSError, AttributeError):  # not TCP, or not supported here
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def _idle_tcp(transport: object) -> Any:
    """The transport itself if it is a connected Twisted TCP connection with nothing
    waiting in its write buffer, else C{None}.

    The socket must be the transport's own attribute: a wrapper such as
    Twisted's TLS protocol forwards unknown attributes to the connection under
    it, and writing to that socket would skip the wrapper (and its encryption).
    """
    tcp: Any = transport
    if (
        "socket" in getattr(tcp, "__dict__", ())
        and getattr(tcp, "connected", False)
        and not getattr(tcp, "disconnecting", True)
        and not getattr(tcp, "_writeDisconnecting", True)
        and not getattr(tcp, "_tempDataBuffer", True)
        and getattr(tcp, "offset", -1) == len(getattr(tcp, "dataBuffer", b"?"))
    ):
        return tcp
    return None


def write_now(transport: object, data: bytes) -> None:
    """Write to a TCP transport, straight to the socket while Twisted's buffer is empty.

    Saves the buffer round trip, a reactor turn and two epoll updates; what
    the kernel does not take, and every error, goes through Twisted's write.
    """
    tcp = _idle_tcp(transport)
    if tcp is not None:
        try:
            sent = tcp.socket.send(data)
        except OSError:  # would block, or an error Twisted's own write will report
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)  # type: ignore[attr-defined]


class WriteBatch:
    """Writes to local sockets collected while one read event is handled.

    The channel delivers several frames per read; their bytes for the same
    socket leave in one system call at the end of the event (L{flush_all}).
    A bridge flushes its own socket before closing it (L{flush}), so ordering
    with FIN and resets is kept.
    """

    def __init__(self) -> None:
        self.open = False
        self._pending: dict[int, tuple[object, list[bytes]]] = {}

    def write(self, transport: object, data: bytes) -> None:
        if not self.open:
            write_now(transport, data)
            return
        entry = self._pending.get(id(transport))
        if entry is None:
            self._pending[id(transport)] = (transport, [data])
        else:
            entry[1].append(data)

    def flush(self, transport: object) -> None:
        entry = self._pending.pop(id(transport), None)
        if entry is not None:
            chunks = entry[1]
            write_now(transport, chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def flush_all(self) -> None:
        pending, self._pending = self._pending, {}
        for transport, chunks in pending.values():
            write_now(transport, chunks[0] if len(chunks) == 1 else b"".join(chunks))
