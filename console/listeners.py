"""Binding the console's local listeners, with errors that say what to do.

Local addresses must lie in 127.0.0.0/8.  Several systems that use the same
remote port get one loopback address each (127.0.0.5:5432, 127.0.0.6:5432);
macOS only configures 127.0.0.1, so there a missing alias either prints the
C{ifconfig lo0 alias} command or falls back to 127.0.0.1 with a free port.
"""

from __future__ import annotations

import errno
import ipaddress
import sys
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger

from shared.errors import LocalBindError

log = Logger()

Listen = Callable[[int, ServerFactory, str], IListeningPort]
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


def check_local_address(address: str, allow_any_address: bool = False) -> str:
    """Refuse anything outside 127.0.0.0/8 before trying to bind (unless the session has an acl)."""
    try:
        parsed = ipaddress.IPv4Address(address)
    except ValueError:
        raise LocalBindError(
            f"{address!r} is not an IPv4 address", hint="use a loopback address such as 127.0.0.5"
        ) from None
    if parsed not in LOOPBACK and not allow_any_address:
        raise LocalBindError(
            f"local address {address} is outside 127.0.0.0/8",
            hint="tunnels listen on loopback; use an address such as 127.0.0.5, or, where your"
            " groups allow it, say who may connect with --acl CIDR",
        )
    return address


def _next_address(address: str) -> str:
    candidate = ipaddress.IPv4Address(address) + 1
    if candidate not in LOOPBACK or candidate == ipaddress.IPv4Address("127.255.255.255"):
        candidate = ipaddress.IPv4Address("127.0.0.2")
    return str(candidate)


@dataclass
class BindResult:
    port: IListeningPort
    address: str
    local_port: int
    fell_back: bool = False


def bind(
    listen: Listen,
    address: str,
    port: int | None,
    factory: ServerFactory,
    platform: str = sys.platform,
    allow_fallback: bool = True,
    allow_any_address: bool = False,
) -> BindResult:
    """Bind C{address}:C{port} (C{None}: any free port) or raise a clear L{LocalBindError}.

    C{allow_any_address}: the Jumpoint granted an acl, so a non-loopback address may be used.
    """
    check_local_address(address, allow_any_address)
    try:
        listening = listen(port or 0, factory, address)
    except CannotListenError as error:
        code = getattr(error.socketError, "errno", None)
        shown = f"{address}:{port if port else 'auto'}"
        if code == errno.EADDRINUSE:
            raise LocalBindError(
                f"local port {shown} is already in use",
                hint=f"another program or jump session listens there; open the item on another"
                f" loopback address with --local-address {_next_address(address)}, or use"
                " local_port: auto",
            ) from None
        if code == errno.EACCES:
            raise LocalBindError(
                f"binding {shown} needs privilege (ports below 1024 are reserved)",
                hint="run jump with that privilege (sudo, or CAP_NET_BIND_SERVICE on Linux), or"
                " choose a local_port of 1024 or above, or auto",
            ) from None
        if code == errno.EADDRNOTAVAIL:
            alias = f"sudo ifconfig lo0 alias {address} up"
            if platform == "darwin" and allow_fallback and address != "127.0.0.1":
                log.warn(
                    "{address} is not configured on lo0 (macOS has only 127.0.0.1); falling"
                    " back to 127.0.0.1 with a free port. To keep {address}, run: {alias}",
                    address=address,
                    alias=alias,
                )
                fallback = bind(listen, "127.0.0.1", None, factory, platform, False)
                fallback.fell_back = True
                return fallback
            hint = (
                f"macOS configures only 127.0.0.1; add the alias once with: {alias}"
                if platform == "darwin"
                else "this loopback address is not configured on this system"
            )
            raise LocalBindError(f"cannot bind {shown}: address not available", hint=hint) from None
        raise LocalBindError(f"cannot bind {shown}: {error.socketError}") from None
    host = listening.getHost()
    return BindResult(listening, address, int(getattr(host, "port", port or 0)))
