"""Small target servers for end-to-end tests, each on its own thread.

L{EchoServer} echoes every connection and records the SHA-256 of what each
connection sent; L{SinkServer} accepts and never reads; L{FirehoseServer}
accepts and writes without end.  Real third-party servers (redis-server,
an HTTP server) are started by the tests themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
from collections.abc import Callable


class _ThreadedServer:
    """Accept loop on a thread; each connection is handled by L{handle} on its own thread."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1024)
        self.port = int(self.listener.getsockname()[1])
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        self._stopping = False
        self.stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections.append(connection)
            threading.Thread(target=self._run, args=(connection,), daemon=True).start()

    def _run(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self.handle(connection)

    def handle(self, connection: socket.socket) -> None:
        raise NotImplementedError

    @property
    def accepted(self) -> int:
        with self.lock:
            return len(self.connections)

    def close(self) -> None:
        self._stopping = True
        self.stopped.set()
        self.listener.close()
        with self.lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.close()


class EchoServer(_ThreadedServer):
    """Echoes until the client half-closes, then half-closes; records hashes."""

    def __init__(self) -> None:
        self.received_hashes: list[str] = []
        super().__init__()

    def handle(self, connection: socket.socket) -> None:
        digest = hashlib.sha256()
        while True:
            data = connection.recv(256 * 1024)
            if not data:
                break
            digest.update(data)
            connection.sendall(data)
        connection.shutdown(socket.SHUT_WR)
        with self.lock:
            self.received_hashes.append(digest.hexdigest())
        connection.close()


class SinkServer(_ThreadedServer):
    """Accepts connections and never reads from them."""

    def handle(self, connection: socket.socket) -> None:
        self.stopped.wait()


class FirehoseServer(_ThreadedServer):
    """Writes 64 KiB blocks to every connection until it breaks; counts bytes."""

    def __init__(self) -> None:
        self.sent = 0
        super().__init__()

    def handle(self, connection: socket.socket) -> None:
        block = b"x" * 65536
        while not self._stopping:
            connection.sendall(block)
            with self.lock:
                self.sent += len(block)


def serve_http_directory(directory: str) -> tuple[Callable[[], None], int]:
    """A real HTTP server (the standard library's) on a free port, in a thread."""
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop, int(server.server_address[1])


class DnsResponder:
    """A tiny DNS server over UDP on a thread: A queries for its names, hand-built answers.

    Answers every query for a name in C{records} with its IPv4 address (one A
    record, TTL 60) and anything else with NXDOMAIN; counts the queries it
    answered.  Enough for `dig` (RFC 1035 section 4: header, question, answer).
    """

    def __init__(self, records: dict[str, str]) -> None:
        self.records = {name.lower().rstrip("."): address for name, address in records.items()}
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port = int(self.socket.getsockname()[1])
        self.queries = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                query, client = self.socket.recvfrom(65535)
            except OSError:
                return
            answer = self.answer(query)
            if answer is not None:
                self.queries += 1
                with contextlib.suppress(OSError):
                    self.socket.sendto(answer, client)

    def answer(self, query: bytes) -> bytes | None:
        """The response to one query, or C{None} for something that is not one."""
        if len(query) < 12:
            return None
        labels, offset = [], 12
        while offset < len(query) and query[offset]:
            length = query[offset]
            labels.append(query[offset + 1 : offset + 1 + length].decode("ascii", "replace"))
            offset += 1 + length
        question_end = offset + 5  # the zero label, QTYPE and QCLASS
        if question_end > len(query):
            return None
        qtype = int.from_bytes(query[offset + 1 : offset + 3], "big")
        address = self.records.get(".".join(labels).lower())
        flags = 0x8180 if address is not None else 0x8183  # response, RD, RA; NXDOMAIN
        answers = 1 if address is not None and qtype == 1 else 0
        header = query[:2] + flags.to_bytes(2, "big") + b"\x00\x01"
        header += answers.to_bytes(2, "big") + b"\x00\x00\x00\x00"
        body = query[12:question_end]
        if answers:
            body += b"\xc0\x0c\x00\x01\x00\x01" + (60).to_bytes(4, "big") + b"\x00\x04"
            body += socket.inet_aton(address or "0.0.0.0")
        return header + body

    def close(self) -> None:
        self.socket.close()
