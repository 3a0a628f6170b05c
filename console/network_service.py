"""`jump network-service`: the console's privileged helper for network tunnels.

Run as root (contrib/jump-network-service.service), it listens on a Unix
socket and creates a TUN interface for each admitted caller, hands the
descriptor over (SCM_RIGHTS) and removes the interface when the connection
ends: the caller asked, closed the socket, or died (even by SIGKILL, since
the kernel closes a dead process's sockets).  The protocol is described in
docs/network-service.md.

The service holds its own copy of every descriptor it hands over, so an
interface exists exactly as long as the connection that asked for it: it
does not vanish while the service reports on it, and it never outlives the
connection because the caller kept its copy open (the service deletes the
link; routes and address go with it).

A caller's routes may not overlap the routes of an interface the service
holds for another uid (that would take the other user's traffic); the
kernel-side checks are L{console.network_tun.create_tun}'s.  The netlink
work runs in the reactor's thread: a few local calls per request.

L{ServiceSession} is one connection's logic, sans-IO: it is given the peer's
credentials, request lines and the end of the connection, and answers
through a L{Sink}; the device work goes through L{Devices} (L{LinuxDevices}
in the service, a fake in the unit tests).  L{NetworkServiceProtocol} is the
thin Twisted protocol over it; L{serve} binds the socket and runs the reactor.
"""

from __future__ import annotations

import enum
import grp
import os
import pwd
import socket
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from twisted.internet import protocol as twisted_protocol
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime, IUNIXTransport
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from console.network_requests import (
    MAX_LINE,
    PROTOCOL_VERSION,
    CloseRequest,
    Group,
    OpenRequest,
    Peer,
    admit,
    encode,
    error_message,
    parse_request,
    parse_status_groups,
)
from console.network_tun import (
    Removed,
    TunDevice,
    create_tun,
    ensure_linux,
    has_net_admin,
    remove_tun,
)
from shared.errors import ConfigError, InternalError, InvalidRequest, JumpError, UsageError
from shared.lifecycle import Lifecycle, Transitions

log = Logger()

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
"""Linux 4.13+: the peer's supplementary groups, recorded at connect (no /proc race)."""
PEER_GROUPS_BUFFER = 4 * 4096
"""Room for 4096 supplementary groups; a peer with more is read from /proc instead."""


@dataclass(frozen=True)
class ServiceLimits:
    """Bounds on what callers may hold at once."""

    max_connections: int = 64
    max_interfaces_per_uid: int = 8
    request_timeout: float = 10.0
    """Seconds a connection may stay without an C{open} request."""


class SessionState(enum.Enum):
    CONNECTED = "connected"
    """Accepted; the peer is not checked yet."""
    WAITING = "waiting"
    """Admitted and greeted; waiting for the C{open} (or C{close}) request."""
    OPEN = "open"
    """The interface exists and its descriptor was handed over."""
    CLOSED = "closed"
    """Refused, finished or lost; the interface (if any) is removed."""


class SessionEvent(enum.Enum):
    ADMIT = enum.auto()
    REFUSE = enum.auto()
    OPENED = enum.auto()
    FAIL = enum.auto()
    """A bad request, a failed setup or the request timeout: an error reply, then hang up."""
    CLOSE = enum.auto()
    """The caller's C{close} request."""
    LOST = enum.auto()
    """The connection ended (the caller closed it or died)."""


SESSION_TRANSITIONS: Transitions[SessionState, SessionEvent] = Transitions(
    "network service session",
    SessionState,
    SessionEvent,
    {
        SessionState.CONNECTED: {
            SessionEvent.ADMIT: SessionState.WAITING,
            SessionEvent.REFUSE: SessionState.CLOSED,
            SessionEvent.LOST: SessionState.CLOSED,
        },
        SessionState.WAITING: {
            SessionEvent.OPENED: SessionState.OPEN,
            SessionEvent.FAIL: SessionState.CLOSED,
            SessionEvent.CLOSE: SessionState.CLOSED,
            SessionEvent.LOST: SessionState.CLOSED,
        },
        SessionState.OPEN: {
            SessionEvent.FAIL: SessionState.CLOSED,
            SessionEvent.CLOSE: SessionState.CLOSED,
            SessionEvent.LOST: SessionState.CLOSED,
        },
        SessionState.CLOSED: {},
    },
)


class Devices(Protocol):
    """Creates and removes interfaces (L{LinuxDevices}, or a fake in tests)."""

    def create(self, request: OpenRequest) -> TunDevice: ...

    def remove(self, device: TunDevice) -> Removed: ...


class LinuxDevices:
    """The real thing: L{console.network_tun}."""

    def create(self, request: OpenRequest) -> TunDevice:
        return create_tun(request)

    def remove(self, device: TunDevice) -> Removed:
        return remove_tun(device)


class Sink(Protocol):
    """Where a session's replies go (the Twisted protocol, or a list in tests)."""

    def send(self, message: dict[str, Any], fd: int | None = None) -> None:
        """Write one reply line; C{fd} rides on its first byte (SCM_RIGHTS)."""

    def hang_up(self) -> None:
        """Close the connection once the replies are written."""


@dataclass
class Registry:
    """The service's live sessions, and how many interfaces each uid holds (bounded)."""

    limits: ServiceLimits = field(default_factory=ServiceLimits)
    sessions: set[ServiceSession] = field(default_factory=set)
    per_uid: dict[int, int] = field(default_factory=dict)

    def foreign_clash(self, uid: int, request: OpenRequest) -> str | None:
        """Why C{request} may not have its routes: one overlaps another uid's interface.

        A more specific route would take that user's traffic into this
        user's TUN; an equal one would fail in the kernel anyway.
        """
        for session in self.sessions:
            device, peer = session.device, session.peer
            if device is None or peer is None or peer.uid == uid:
                continue
            for route in request.routes:
                for theirs in device.routes:
                    if route.overlaps(theirs):
                        return (
                            f"routes: {route} overlaps a route of another user's interface"
                            f" ({device.interface}): refused, it would take their traffic"
                        )
        return None

    def close_all(self, reason: str) -> None:
        for session in list(self.sessions):
            session.shut_down(reason)


class ServiceSession:
    """One connection: admit the peer, create its interface, remove it at the end."""

    def __init__(
        self,
        peer: Peer | None,
        group: Group,
        devices: Devices,
        sink: Sink,
        clock: IReactorTime,
        registry: Registry,
        primary_gid: int | None = None,
    ) -> None:
        self.peer = peer
        self.group = group
        self.devices = devices
        self.sink = sink
        self.clock = clock
        self.registry = registry
        self.primary_gid = primary_gid
        self.lifecycle: Lifecycle[SessionState, SessionEvent] = SESSION_TRANSITIONS.start(
            SessionState.CONNECTED
        )
        self.device: TunDevice | None = None
        self.removed: Removed | None = None
        self._timeout: IDelayedCall | None = None

    @property
    def who(self) -> str:
        return self.peer.describe() if self.peer is not None else "an unidentified peer"

    def start(self) -> None:
        """The connection is up: check the peer, then greet it or refuse it."""
        if self.peer is None:
            self._refuse(InvalidRequest("cannot read the caller's credentials (SO_PEERCRED)"))
            return
        if len(self.registry.sessions) >= self.registry.limits.max_connections:
            limit = self.registry.limits.max_connections
            self._refuse(JumpError(f"the network service is busy ({limit} connections)"))
            return
        admission = admit(self.peer, self.group, self.primary_gid)
        if admission.error is not None:
            self._refuse(admission.error)
            return
        self.lifecycle.fire(SessionEvent.ADMIT)
        self.registry.sessions.add(self)
        log.info("admitted {who}: {reason}", who=self.who, reason=admission.reason)
        self.sink.send(
            {
                "event": "ready",
                "version": PROTOCOL_VERSION,
                "peer": self.peer.to_json(),
                "admitted": admission.reason,
            }
        )
        self._timeout = self.clock.callLater(self.registry.limits.request_timeout, self._expire)

    def _refuse(self, error: JumpError) -> None:
        self.lifecycle.fire(SessionEvent.REFUSE)
        log.warn("refused {who}: {message}", who=self.who, message=error.message)
        self.sink.send(error_message(error))
        self.sink.hang_up()

    def _expire(self) -> None:
        self._timeout = None
        if self.lifecycle.state is SessionState.WAITING:
            limit = self.registry.limits.request_timeout
            self._fail(InvalidRequest(f"no request within {limit:g} seconds"))

    def line_received(self, line: bytes) -> None:
        if self.lifecycle.state not in (SessionState.WAITING, SessionState.OPEN):
            return  # refused or finished: the rest of what the peer sent is ignored
        try:
            request = parse_request(line)
        except InvalidRequest as error:
            self._fail(error)
            return
        if isinstance(request, CloseRequest):
            self._close()
        elif self.lifecycle.state is SessionState.OPEN:
            self._fail(InvalidRequest("one interface per connection: this one has one already"))
        else:
            self._open(request)

    def line_too_long(self) -> None:
        if self.lifecycle.state in (SessionState.WAITING, SessionState.OPEN):
            self._fail(InvalidRequest(f"request longer than {MAX_LINE} bytes"))

    def _open(self, request: OpenRequest) -> None:
        assert self.peer is not None
        uid = self.peer.uid
        held = self.registry.per_uid.get(uid, 0)
        if held >= self.registry.limits.max_interfaces_per_uid:
            limit = self.registry.limits.max_interfaces_per_uid
            self._fail(JumpError(f"uid {uid} holds {limit} interfaces already (the limit)"))
            return
        clash = self.registry.foreign_clash(uid, request)
        if clash is not None:
            self._fail(InvalidRequest(clash))
            return
        try:
            device = self.devices.create(request)
        except JumpError as error:
            self._fail(error)
            return
        except Exception:
            log.failure("creating an interface for {who}", who=self.who)
            self._fail(InternalError("the network service failed to create the interface"))
            return
        self._cancel_timeout()
        self.device = device
        self.registry.per_uid[uid] = held + 1
        self.lifecycle.fire(SessionEvent.OPENED)
        log.info(
            "created {interface} for {who}: {address}/32, mtu {mtu}, routes {routes}",
            interface=device.interface,
            who=self.who,
            address=device.address,
            mtu=device.mtu,
            routes=", ".join(str(route) for route in device.routes),
        )
        self.sink.send({"event": "opened", **device.to_json()}, fd=device.fd)

    def _close(self) -> None:
        self.lifecycle.fire(SessionEvent.CLOSE)
        removed = self._teardown("the caller asked")
        self.sink.send({"event": "closed", "removed": removed.to_json() if removed else None})
        self.sink.hang_up()

    def _fail(self, error: JumpError) -> None:
        self.lifecycle.fire(SessionEvent.FAIL)
        log.warn("error for {who}: {message}", who=self.who, message=error.message)
        removed = self._teardown("the request failed")
        message = error_message(error)
        if removed is not None:
            message["removed"] = removed.to_json()
        self.sink.send(message)
        self.sink.hang_up()

    def connection_lost(self) -> None:
        if self.lifecycle.state is SessionState.CLOSED:
            return
        self.lifecycle.fire(SessionEvent.LOST)
        self._teardown("the connection closed")

    def shut_down(self, reason: str) -> None:
        """The service is stopping: remove the interface now, then hang up."""
        if self.lifecycle.state is SessionState.CLOSED:
            return
        self.lifecycle.fire(SessionEvent.LOST)
        removed = self._teardown(reason)
        self.sink.send({"event": "closed", "removed": removed.to_json() if removed else None})
        self.sink.hang_up()

    def _cancel_timeout(self) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None

    def _teardown(self, reason: str) -> Removed | None:
        self._cancel_timeout()
        self.registry.sessions.discard(self)
        device, self.device = self.device, None
        if device is None:
            return None
        assert self.peer is not None
        held = self.registry.per_uid.get(self.peer.uid, 1) - 1
        if held > 0:
            self.registry.per_uid[self.peer.uid] = held
        else:
            self.registry.per_uid.pop(self.peer.uid, None)
        try:
            removed = self.devices.remove(device)
        except JumpError as error:
            log.error(
                "cannot remove {interface} of {who}: {message}",
                interface=device.interface,
                who=self.who,
                message=error.message,
            )
            return None
        except Exception:
            log.failure("removing {interface} of {who}", interface=device.interface, who=self.who)
            return None
        self.removed = removed
        log.info("{what} ({reason}; {who})", what=removed.describe(), reason=reason, who=self.who)
        return removed


def read_peer(connection: socket.socket | None) -> Peer:
    """The peer's credentials: SO_PEERCRED, and its groups (SO_PEERGROUPS or /proc)."""
    if connection is None:
        raise TypeError("not a socket transport")
    pid, uid, gid = struct.unpack(
        "3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    )
    try:
        raw = connection.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, PEER_GROUPS_BUFFER)
        groups = frozenset(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    except OSError:
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
        groups = parse_status_groups(status)
    try:
        user: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = None
    return Peer(pid=pid, uid=uid, gid=gid, groups=groups, user=user)


def primary_gid(uid: int) -> int | None:
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return None


def resolve_group(name: str) -> Group:
    """The service's group from the group database (a L{ConfigError} if there is none)."""
    try:
        entry = grp.getgrnam(name)
    except KeyError:
        raise ConfigError(
            f"--group: there is no group {name!r}",
            f"create it (groupadd --system {name}) and add the users who may open network"
            " tunnels (usermod -aG ...), or name another group",
        ) from None
    return Group(name=entry.gr_name, gid=entry.gr_gid, members=frozenset(entry.gr_mem))


class NetworkServiceProtocol(LineOnlyReceiver):
    """One connection, thin over a L{ServiceSession}."""

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE
    factory: NetworkServiceFactory
    session: ServiceSession | None = None

    def connectionMade(self) -> None:
        try:
            peer: Peer | None = read_peer(getattr(self.transport, "socket", None))
        except (OSError, ValueError, TypeError, struct.error):
            peer = None
        self.session = ServiceSession(
            peer,
            self.factory.group,
            self.factory.devices,
            self,
            self.factory.clock,
            self.factory.registry,
            primary_gid(peer.uid) if peer is not None else None,
        )
        self.session.start()

    def lineReceived(self, line: bytes) -> None:
        if self.session is not None:
            self.session.line_received(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        if self.session is not None:
            self.session.line_too_long()
        return None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.session is not None:
            self.session.connection_lost()

    def send(self, message: dict[str, Any], fd: int | None = None) -> None:
        if fd is not None:
            IUNIXTransport(self.transport).sendFileDescriptor(fd)
        self.transport.write(encode(message))  # type: ignore[union-attr]

    def hang_up(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]


class NetworkServiceFactory(Factory):
    noisy = False

    def __init__(
        self,
        group: Group,
        devices: Devices,
        clock: IReactorTime,
        limits: ServiceLimits | None = None,
    ) -> None:
        self.group = group
        self.devices = devices
        self.clock = clock
        self.registry = Registry(limits or ServiceLimits())

    def buildProtocol(self, addr: Any) -> twisted_protocol.Protocol:
        protocol = NetworkServiceProtocol()
        protocol.factory = self
        return protocol

    def stop(self) -> None:
        """Remove every interface (the service is stopping)."""
        self.registry.close_all("the service is stopping")


def prepare_socket_path(path: Path) -> None:
    """Make C{path}'s folder, and remove a socket there that a dead service left behind.

    A socket that a running service answers on, or a file that is not a
    socket, is an error.
    """
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    if not (path.exists() or path.is_symlink()):
        return
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise ConfigError(f"--socket: {path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            path.unlink()  # left by a service that is gone
        else:
            raise ConfigError(
                f"--socket: a network service listens on {path} already",
                "stop it first (systemctl stop jump-network-service), or use another --socket",
            )


def listen(path: Path, factory: NetworkServiceFactory, reactor: Any) -> Any:
    """Listen on C{path}, mode 0660 from birth (umask), owned by root and the service's group."""
    prepare_socket_path(path)
    previous = os.umask(0o117)
    try:
        port = reactor.listenUNIX(str(path), factory, backlog=64, mode=0o660, wantPID=False)
    except CannotListenError as error:
        raise ConfigError(f"--socket: cannot listen on {path}: {error.socketError}") from None
    finally:
        os.umask(previous)
    os.chown(path, 0, factory.group.gid)
    return port


def stop_service(port: IListeningPort, factory: NetworkServiceFactory) -> Deferred[None]:
    """Stop taking callers, then remove every interface; shutdown waits for the port.

    The port removes its socket file itself when it stops listening (never
    this code: a second removal would fail inside Twisted, a traceback in the
    log).
    """
    stopped = port.stopListening()
    factory.stop()
    return stopped if stopped is not None else succeed(None)


def serve(socket_path: str, group_name: str, reactor: Any) -> None:
    """Run the service until SIGINT or SIGTERM, then remove every interface it made."""
    ensure_linux()
    if not has_net_admin():
        raise UsageError(
            "jump network-service needs CAP_NET_ADMIN (run it as root)",
            "install contrib/jump-network-service.service and run"
            " `systemctl enable --now jump-network-service`",
        )
    group = resolve_group(group_name)
    factory = NetworkServiceFactory(group, LinuxDevices(), reactor)
    path = Path(socket_path)
    port = listen(path, factory, reactor)
    reactor.addSystemEventTrigger("before", "shutdown", stop_service, port, factory)
    log.info(
        "jump network-service listening on {path} for group {group} (gid {gid})",
        path=path,
        group=group.name,
        gid=group.gid,
    )
    reactor.run()
    log.info("jump network-service stopped")
