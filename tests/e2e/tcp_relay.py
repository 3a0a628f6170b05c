"""A TCP relay process for end-to-end tests: `python -m tests.e2e.tcp_relay PORT HOST:PORT`.

Accepts on 127.0.0.1:PORT and pumps every connection to HOST:PORT both ways
(one thread per direction).  Stopped with SIGSTOP it keeps its sockets and
the kernel keeps acknowledging: a silent link, noticed only by keepalives.
Prints "ready" once it listens.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading


def pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def main() -> None:
    port = int(sys.argv[1])
    host, _, target_port = sys.argv[2].rpartition(":")
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    print("ready", flush=True)
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection((host, int(target_port)))
        except OSError:
            client.close()
            continue
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump, args=(source, sink), daemon=True).start()


if __name__ == "__main__":
    main()
