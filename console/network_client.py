"""Get a TUN interface for a network session, as the console's own user.

L{acquire_tun} returns an open TUN descriptor whose interface has the inner
address, the MTU and the routes asked for, and a C{cleanup} that removes
it.  Two ways, chosen by C{method}:

* C{direct}: this process holds CAP_NET_ADMIN (it runs as root), so it
  creates the interface itself with the service's own code
  (L{console.network_tun}).  The TUN is non-persistent and only this
  process holds it: if the process dies, the kernel removes it with its
  routes.
* C{service}: it asks `jump network-service` over its Unix socket
  (docs/network-service.md) and receives the descriptor (SCM_RIGHTS).  The
  connection stays open for the session: closing it, or dying, makes the
  service remove the interface; C{cleanup} asks first, so it can say what
  was removed.

C{auto} (the default) is C{direct} with CAP_NET_ADMIN, else C{service}.
Neither possible: a L{NetworkServiceUnavailable} that says what to install
or run.  Not Linux: L{shared.errors.NotSupported}.  All blocking and short
(a local socket and netlink); the caller runs it before its reactor work.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Literal

from console.network_requests import (
    DEFAULT_GROUP,
    DEFAULT_MTU,
    DEFAULT_SOCKET,
    MAX_LINE,
    PROTOCOL_VERSION,
    CloseRequest,
    OpenRequest,
    check_interface,
    encode,
    open_request,
    parse_routes_reply,
)
from console.network_tun import Removed, create_tun, ensure_linux, has_net_admin, remove_tun
from shared.errors import JumpError, ProtocolViolation, error_from_json

SOCKET_ENV = "JUMP_NETWORK_SOCKET"
"""Overrides the service's socket path (default L{DEFAULT_SOCKET})."""
TUN_MAJOR, TUN_MINOR = 10, 200
"""/dev/net/tun: what a received descriptor must be."""
Method = Literal["auto", "direct", "service"]

_HOW_TO = (
    "install and start the network service as root"
    " (contrib/jump-network-service.service: `systemctl enable --now jump-network-service`),"
    f" and join its group (`usermod -aG {DEFAULT_GROUP} USER`, then log in again);"
    " or run jump as root"
)


class NetworkServiceUnavailable(JumpError):
    """No way to create the interface: no CAP_NET_ADMIN here, and no service answers."""

    code = "network_service_unavailable"


@dataclass
class AcquiredTun:
    """An open TUN descriptor and its interface; L{cleanup} removes both."""

    fd: int
    interface: str
    address: IPv4Address
    routes: tuple[IPv4Network, ...]
    mtu: int
    method: Literal["direct", "service"]
    _release: Callable[[], Removed | None] = field(repr=False)
    _done: bool = field(default=False, repr=False)
    removed: Removed | None = None

    def cleanup(self) -> Removed | None:
        """Remove the interface and its routes and close C{fd} (once; later calls are no-ops).

        Returns what was removed, or C{None} if the service could not say
        (it went away: it removes what it made when the connection ends).
        """
        if not self._done:
            self._done = True
            self.removed = self._release()
        return self.removed


def acquire_tun(
    address: str | IPv4Address,
    routes: Sequence[str | IPv4Network],
    mtu: int = DEFAULT_MTU,
    *,
    name: str | None = None,
    method: Method = "auto",
    socket_path: str | None = None,
    timeout: float = 10.0,
) -> AcquiredTun:
    """A TUN interface with C{address}/32, C{mtu} and C{routes} (see the module docstring)."""
    ensure_linux()
    request = open_request(str(address), [str(route) for route in routes], mtu, name)
    if method == "direct" or (method == "auto" and has_net_admin()):
        return _direct(request)
    path = socket_path or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET
    return _via_service(request, path, timeout)


def _direct(request: OpenRequest) -> AcquiredTun:
    device = create_tun(request)
    return AcquiredTun(
        fd=device.fd,
        interface=device.interface,
        address=device.address,
        routes=device.routes,
        mtu=device.mtu,
        method="direct",
        _release=lambda: remove_tun(device),
    )


class _Lines:
    """Reads reply lines (bounded), each with the descriptors that came on its bytes."""

    def __init__(self, connection: socket.socket) -> None:
        self.connection = connection
        self.buffer = b""
        self.pending: list[tuple[int, int]] = []
        """Descriptors received and not yet handed out, with their offset in C{buffer}."""

    def close(self) -> None:
        for _, fd in self.pending:
            os.close(fd)
        self.pending = []

    def read(self) -> tuple[dict[str, Any], list[int]]:
        try:
            while b"\n" not in self.buffer:
                if len(self.buffer) > MAX_LINE:
                    raise ProtocolViolation("the network service sent an overlong line")
                data, received, flags, _ = socket.recv_fds(
                    self.connection, 4096, 4, socket.MSG_CMSG_CLOEXEC
                )
                # The kernel ends a read after the bytes that carried descriptors:
                # they belong to the last byte read (the sender puts them on a line's first).
                at = len(self.buffer) + max(len(data) - 1, 0)
                self.pending.extend((at, fd) for fd in received)
                if flags & socket.MSG_CTRUNC:
                    raise ProtocolViolation("the network service sent too many descriptors")
                if not data:
                    raise NetworkServiceUnavailable(
                        "the network service closed the connection without an answer"
                    )
                self.buffer += data
        except TimeoutError:
            raise NetworkServiceUnavailable("the network service did not answer in time") from None
        line, _, self.buffer = self.buffer.partition(b"\n")
        end = len(line) + 1
        fds = [fd for offset, fd in self.pending if offset < end]
        self.pending = [(offset - end, fd) for offset, fd in self.pending if offset >= end]
        try:
            message = json.loads(line)
            if not isinstance(message, dict):
                raise ValueError("not an object")
        except ValueError:
            for fd in fds:
                os.close(fd)
            raise ProtocolViolation("the network service sent a malformed line") from None
        return message, fds


def _connect(path: str, timeout: float) -> socket.socket:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    connection.settimeout(timeout)
    try:
        connection.connect(path)
    except OSError as error:
        connection.close()
        if isinstance(error, FileNotFoundError):
            problem = f"no network service listens on {path}"
        elif isinstance(error, ConnectionRefusedError):
            problem = f"the network service at {path} is not running"
        elif isinstance(error, PermissionError):
            problem = f"{path} does not admit you (permission denied: not in its group?)"
        else:
            problem = f"cannot reach the network service at {path}: {error.strerror}"
        raise NetworkServiceUnavailable(
            f"cannot create a network interface: this process lacks CAP_NET_ADMIN and {problem}",
            _HOW_TO,
        ) from None
    return connection


def _check_tun(fd: int) -> None:
    info = os.fstat(fd)
    if not stat.S_ISCHR(info.st_mode) or (os.major(info.st_rdev), os.minor(info.st_rdev)) != (
        TUN_MAJOR,
        TUN_MINOR,
    ):
        raise ProtocolViolation("the network service sent a descriptor that is not a TUN")


def _raise_reply(message: dict[str, Any]) -> None:
    if message.get("event") == "error":
        raise error_from_json(message)
    raise ProtocolViolation(f"unexpected reply from the network service: {message.get('event')!r}")


def _via_service(request: OpenRequest, path: str, timeout: float) -> AcquiredTun:
    return exchange(request, _connect(path, timeout))


def exchange(request: OpenRequest, connection: socket.socket) -> AcquiredTun:
    """Ask the service at the other end of C{connection} for C{request}'s interface.

    The connection is the caller's until this returns, then the returned
    L{AcquiredTun}'s (its C{cleanup} closes it); on an error it is closed.
    """
    lines = _Lines(connection)
    fds: list[int] = []
    try:
        greeting, fds = lines.read()
        if greeting.get("event") != "ready" or greeting.get("version") != PROTOCOL_VERSION:
            _raise_reply(greeting)
        for fd in fds:  # nothing comes with a greeting
            os.close(fd)
        fds = []
        connection.sendall(encode(request.to_json()))
        reply, fds = lines.read()
        if reply.get("event") != "opened":
            _raise_reply(reply)
        if len(fds) != 1:
            raise ProtocolViolation(f"the network service sent {len(fds)} descriptors, not 1")
        _check_tun(fds[0])
        interface = check_interface(reply.get("interface"))
        routes = parse_routes_reply(reply.get("routes"))
        mtu = reply.get("mtu")
        if not isinstance(mtu, int) or isinstance(mtu, bool):
            raise ProtocolViolation("the network service sent no MTU")
    except BaseException:
        for fd in fds:
            os.close(fd)
        lines.close()
        connection.close()
        raise
    fd = fds[0]

    def release() -> Removed | None:
        try:
            connection.sendall(encode(CloseRequest().to_json()))
            answer, extra = lines.read()
            for stray in extra:
                os.close(stray)
        except (OSError, JumpError):
            return None  # the service removes what it made when the connection ends
        finally:
            lines.close()
            connection.close()
            os.close(fd)
        return _removed(answer.get("removed"))

    return AcquiredTun(
        fd=fd,
        interface=interface,
        address=request.address,
        routes=routes,
        mtu=mtu,
        method="service",
        _release=release,
    )


def _removed(value: object) -> Removed | None:
    if not isinstance(value, dict):
        return None
    routes = value.get("routes")
    return Removed(
        interface=str(value.get("interface", ""))[:15],
        address=str(value.get("address", ""))[:18],
        routes=tuple(str(route)[:18] for route in routes[:256]) if isinstance(routes, list) else (),
        already_gone=bool(value.get("already_gone")),
    )
