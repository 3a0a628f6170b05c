"""The Jumpoint's side of the channel: authentication, requests and stream targets.

L{JumpointCore} is the daemon's shared state (configuration, state database,
live channels); L{JumpointChannel} is one console's connection.  After the
TLS handshake the channel maps the client certificate to an active user,
answers the console's control requests, and for every stream the console
opens checks the target against the session's item (only the item's host and
remote ports are reachable) before connecting it.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import error as net_error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from jumpoint.session import Session, new_session_id
from jumpoint.state import StateDatabase, User
from shared import control
from shared.bridge import TcpBridge
from shared.channel import ChannelProtocol
from shared.config import Group, JumpointConfig
from shared.control import StreamTarget
from shared.errors import AccessDenied, JumpError, ProtocolViolation, UnknownItem, UsageError
from shared.frames import PROTOCOL_VERSION, ErrorCode, describe_code
from shared.mux import MuxSettings, Stream
from shared.tls import peer_certificate_serial

ConnectTarget = Callable[[str, int, Protocol], "Deferred[Any]"]

log = Logger()


def classify_connect_failure(failure: Failure, host: str, port: int) -> tuple[ErrorCode, str]:
    """Map a failed connection to the target to a reset code and a reason."""
    value = failure.value
    target = f"{host}:{port}"
    if isinstance(value, net_error.ConnectionRefusedError):
        return ErrorCode.REFUSED, f"{target} refused the connection"
    if isinstance(value, net_error.TimeoutError | net_error.ConnectingCancelledError):
        return ErrorCode.TIMED_OUT, f"connecting to {target} timed out"
    if isinstance(value, net_error.DNSLookupError):
        return ErrorCode.UNREACHABLE, f"cannot resolve {host}"
    if isinstance(value, net_error.ConnectError) and getattr(value, "osError", None) in (
        errno.ECONNREFUSED,
    ):
        return ErrorCode.REFUSED, f"{target} refused the connection"
    return ErrorCode.UNREACHABLE, f"{target} is unreachable: {failure.getErrorMessage()}"


@dataclass
class JumpointCore:
    """State shared by every channel of one running Jumpoint."""

    config: JumpointConfig
    database: StateDatabase
    clock: IReactorTime
    connect_target: ConnectTarget
    channels: set[JumpointChannel] = field(default_factory=set)
    _data_version: int | None = None

    def mux_settings(self) -> MuxSettings:
        limits = self.config.limits
        return MuxSettings(
            max_streams=limits.max_connections_per_session,
            keepalive_interval=limits.keepalive_interval,
            keepalive_timeout=limits.keepalive_timeout,
        )

    def check_revocations(self) -> None:
        """Close the channels of users revoked since the last check (polled)."""
        version = self.database.data_version()
        if version == self._data_version:
            return
        self._data_version = version
        for channel in list(self.channels):
            if channel.certificate_serial is None:
                continue
            user, why = self.database.user_for_certificate(channel.certificate_serial)
            if user is None:
                channel.revoke(why)

    def sessions(self) -> list[Session]:
        return [c.session for c in self.channels if c.session is not None]


class JumpointChannel(ChannelProtocol):
    """One console's connection to the Jumpoint."""

    is_client = False

    def __init__(self, core: JumpointCore) -> None:
        super().__init__(core.clock, core.mux_settings(), core.config.limits.handshake_timeout)
        self.core = core
        self.user: User | None = None
        self.certificate_serial: str | None = None
        self.session: Session | None = None
        self.peer = "?"
        self.close_reason: str | None = None
        self._hello_done = False

    # -- lifecycle ---------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        assert self.transport is not None
        peer = self.transport.getPeer()
        self.peer = f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"

    def channel_started(self) -> None:
        assert self.mux is not None
        identity = peer_certificate_serial(self.transport)
        if identity is None:
            self.mux.go_away(ErrorCode.DENIED, "no client certificate")
            return
        serial, common_name = identity
        self.certificate_serial = serial
        user, why = self.core.database.user_for_certificate(serial)
        if user is None:
            log.warn(
                "refused console {peer} ({name}, certificate {serial}): {reason}",
                peer=self.peer,
                name=common_name,
                serial=serial,
                reason=why,
            )
            self.mux.go_away(ErrorCode.REVOKED, why)
            return
        self.user = user
        self.core.channels.add(self)
        log.info("console {peer} connected as user {user}", peer=self.peer, user=user.name)

    def mux_closing(self, code: int, reason: str, by_peer: bool) -> None:
        self.close_reason = reason if by_peer else f"{describe_code(code)}: {reason}"
        self._end_session(self.close_reason)

    def channel_lost(self, reason: Failure) -> None:
        self.core.channels.discard(self)
        self._end_session("connection lost")
        if self.user is not None:
            log.info(
                "console {peer} (user {user}) disconnected: {reason}",
                peer=self.peer,
                user=self.user.name,
                reason=self.close_reason or reason.getErrorMessage(),
            )

    def revoke(self, why: str) -> None:
        """The user was revoked: close the session and the connection."""
        log.warn(
            "closing the channel of {user}: {reason}", user=self.user and self.user.name, reason=why
        )
        assert self.mux is not None
        if self.session is not None:
            self.mux.send_control(
                {
                    "type": control.SESSION_CLOSED,
                    "session": self.session.session_id,
                    "code": "revoked",
                    "reason": why,
                }
            )
        self.mux.go_away(ErrorCode.REVOKED, why)

    def _end_session(self, reason: str) -> None:
        session, self.session = self.session, None
        if session is None or session.closed:
            return
        session.closed = True
        to_target, from_target = session.totals()
        for bridge in list(session.active):
            bridge.abort(ErrorCode.SESSION_CLOSED, f"the session was closed: {reason}")
        log.info(
            "session {session} of user {user} on item {item} closed: {reason};"
            " {connections} connections, {to_target} bytes to target,"
            " {from_target} bytes from target",
            session=session.session_id,
            user=session.user,
            item=session.item.name,
            reason=reason,
            connections=session.total_connections,
            to_target=to_target,
            from_target=from_target,
        )

    # -- control requests ------------------------------------------------

    def control_received(self, message: dict[str, Any]) -> None:
        assert self.mux is not None
        if self.user is None:
            return
        try:
            kind = control.check_message(message, control.CONSOLE_MESSAGES)
            if not self._hello_done and kind != control.HELLO:
                raise ProtocolViolation(f"{kind!r} before hello")
            if kind == control.HELLO:
                self._hello(message)
                return
        except ProtocolViolation as violation:
            log.warn("console {peer}: {reason}", peer=self.peer, reason=violation.message)
            self.mux.go_away(ErrorCode.PROTOCOL_ERROR, violation.message)
            return
        request_id = message["id"]
        try:
            result = self._dispatch(kind, message)
        except JumpError as refusal:
            log.warn(
                "refused {request} from user {user} ({peer}): {reason}",
                request=kind,
                user=self.user.name,
                peer=self.peer,
                reason=refusal.message,
            )
            self.mux.send_control(
                {"type": control.ERROR, "id": request_id, "error": refusal.to_json()}
            )
            return
        self.mux.send_control({"type": control.RESULT, "id": request_id, **result})

    def _hello(self, message: dict[str, Any]) -> None:
        assert self.mux is not None and self.user is not None
        if self._hello_done:
            raise ProtocolViolation("second hello")
        if message["version"] != PROTOCOL_VERSION:
            raise ProtocolViolation(f"unsupported protocol version {message['version']}")
        self._hello_done = True
        self.mux.send_control(
            {
                "type": control.WELCOME,
                "version": PROTOCOL_VERSION,
                "jumpoint": self.core.config.name,
                "user": self.user.name,
                "group": self.user.group,
            }
        )
        self.mux.establish()
        self.mux.start_keepalive()

    def _dispatch(self, kind: str, message: dict[str, Any]) -> dict[str, Any]:
        if kind == control.LIST_ITEMS:
            return {"items": [entry.to_json() for entry in self._visible_items()]}
        if kind == control.OPEN_SESSION:
            return self._open_session(message["item"])
        if kind == control.CLOSE_SESSION:
            if self.session is None:
                raise UsageError("no session is open on this connection")
            session_id = self.session.session_id
            self._end_session(f"closed by the user: {message['reason'][:200]}")
            return {"session": session_id}
        raise ProtocolViolation(f"unexpected request {kind!r}")

    def _group(self) -> Group:
        """The user's group; a group missing from jumpoint.yaml grants nothing."""
        assert self.user is not None
        group = self.core.config.groups.get(self.user.group)
        if group is None:
            raise AccessDenied(
                f"user {self.user.name!r} is in group {self.user.group!r}, which jumpoint.yaml"
                " does not define (rule: groups)",
                hint="ask your administrator to define the group or move you to another one",
            )
        return group

    def _visible_items(self) -> list[Any]:
        group = self._group()
        return [i for i in self.core.config.items if group.may_open(i)]

    def _open_session(self, item_name: str) -> dict[str, Any]:
        assert self.user is not None
        if self.session is not None:
            raise UsageError("a session is already open on this connection")
        group = self._group()
        item = self.core.config.item(item_name)
        if item is None or not group.may_open(item):
            # an item the user may not see is reported like a missing one
            raise UnknownItem(
                f"no item named {item_name!r} that you may open on Jumpoint"
                f" {self.core.config.name}",
                hint="list the items you may open with `jump items`",
            )
        limit = self.core.config.limits.max_connections_per_session
        session = Session(
            session_id=new_session_id(),
            user=self.user.name,
            item=item,
            max_connections=limit,
            opened_at=self.clock.seconds(),
        )
        self.session = session
        log.info(
            "session {session} opened: user {user}, item {item} ({host})",
            session=session.session_id,
            user=self.user.name,
            item=item.name,
            host=item.host,
        )
        return {
            "session": session.session_id,
            "item": item.to_json(),
            "tunnels": [
                {
                    "local_address": item.local_address,
                    "local_port": "auto" if t.local_port is None else t.local_port,
                    "remote_host": item.host,
                    "remote_port": t.remote_port,
                }
                for t in item.tunnels
            ],
            "max_connections": limit,
        }

    # -- streams -----------------------------------------------------------

    def stream_requested(self, stream: Stream, payload: bytes) -> None:
        session = self.session
        if session is None:
            stream.reset(ErrorCode.DENIED, "no session is open on this connection")
            return
        try:
            target = StreamTarget.decode(payload)
        except ProtocolViolation as violation:
            stream.reset(ErrorCode.PROTOCOL_ERROR, violation.message)
            return
        refusal: tuple[ErrorCode, str] | None = None
        if not session.item.allows_target(target.host, target.port):
            refusal = (
                ErrorCode.DENIED,
                f"{target.host}:{target.port} is not a tunnel of item {session.item.name!r}"
                " (rule: item host and remote ports)",
            )
        elif not session.has_room():
            refusal = (
                ErrorCode.LIMIT,
                f"the session already carries {session.max_connections} connections",
            )
        if refusal is not None:
            code, reason = refusal
            log.warn(
                "session {session}: refused stream {stream_id}: {reason}",
                session=session.session_id,
                stream_id=stream.stream_id,
                reason=reason,
            )
            stream.reset(code, reason)
            return

        connecting: list[Deferred[Any]] = []

        def closed(bridge: TcpBridge) -> None:
            session.connection_closed(bridge, target.host, target.port)
            if connecting and not connecting[0].called:
                connecting[0].cancel()

        bridge = TcpBridge(stream, on_closed=closed)
        bridge.wait_for_connection()
        session.connection_started(bridge)

        def failed(failure: Failure) -> None:
            code, reason = classify_connect_failure(failure, target.host, target.port)
            log.warn(
                "session {session}: stream {stream_id}: {reason}",
                session=session.session_id,
                stream_id=stream.stream_id,
                reason=reason,
            )
            bridge.connection_failed(code, reason)

        attempt = self.core.connect_target(target.host, target.port, bridge)
        connecting.append(attempt)
        attempt.addErrback(failed)


class JumpointFactory(Factory):
    """Builds a L{JumpointChannel} for every accepted TLS connection."""

    def __init__(self, core: JumpointCore) -> None:
        self.core = core

    def buildProtocol(self, addr: Any) -> JumpointChannel:
        return JumpointChannel(self.core)
