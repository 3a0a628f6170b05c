"""Tell systemd how the daemon is doing: the sd_notify datagrams of a C{Type=notify} unit.

A datagram of C{KEY=VALUE} lines sent to the AF_UNIX socket named by
C{$NOTIFY_SOCKET} (a path, or an abstract name written with a leading C{@}).
Without the variable (not under systemd, or on Windows) nothing is sent.
Sending never blocks and never fails the daemon: a full or missing socket
is logged once per message and forgotten (systemd is then only late to see
the state).  No dependency: the protocol is these few lines (sd_notify(3)).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from twisted.logger import Logger

log = Logger()

NOTIFY_SOCKET = "NOTIFY_SOCKET"
MAX_STATUS = 200
"""Characters of C{STATUS=} text kept (one line, for C{systemctl status})."""


def socket_address(value: str) -> str | bytes:
    """The address of C{$NOTIFY_SOCKET}: C{@name} is the abstract socket C{\\0name}."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def status_line(text: str) -> str:
    """C{STATUS=} text: one line, bounded."""
    return " ".join(text.split())[:MAX_STATUS]


def monotonic_usec() -> int:
    """C{CLOCK_MONOTONIC} in microseconds, as C{MONOTONIC_USEC=} wants it."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send C{message} (lines of C{KEY=VALUE}); whether it was sent."""
    value = (os.environ if environ is None else environ).get(NOTIFY_SOCKET)
    family = getattr(socket, "AF_UNIX", None)
    if not value or family is None:
        return False
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            sender.sendto(message.encode("utf-8", "replace"), socket_address(value))
    except OSError as error:
        log.warn(
            "cannot notify systemd ({first}): {error}",
            first=message.split("\n", 1)[0],
            error=error,
        )
        return False
    return True


def ready(status: str, environ: Mapping[str, str] | None = None) -> bool:
    return notify(f"READY=1\nSTATUS={status_line(status)}", environ)


def status(text: str, environ: Mapping[str, str] | None = None) -> bool:
    """A new C{STATUS=} line only (what C{systemctl status} shows)."""
    return notify(f"STATUS={status_line(text)}", environ)


def reloading(environ: Mapping[str, str] | None = None) -> bool:
    return notify(
        f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec()}\nSTATUS=reloading the configuration",
        environ,
    )


def stopping(environ: Mapping[str, str] | None = None) -> bool:
    return notify("STOPPING=1\nSTATUS=stopping", environ)
