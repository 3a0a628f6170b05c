"""The console's side of the channel: connect, hello, requests, and how it ended.

L{connect} dials the Jumpoint from a profile over mutually authenticated TLS
and returns a L{ConsoleChannel} once the Jumpoint has welcomed it.  Failures
become L{JumpError}s that say what happened: Jumpoint unreachable, which side
rejected which certificate, or the reason the Jumpoint gave.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

from twisted.internet import error as net_error
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from console import __version__
from console.profiles import Profile, format_address
from shared.errors import (
    CertificateRejected,
    JumpError,
    JumpointUnreachable,
    ProtocolViolation,
    SessionLost,
    UsageError,
    error_from_json,
)
from shared.protocol import control
from shared.protocol.channel import CONSOLE_HELLO, ChannelEvent, ChannelProtocol
from shared.protocol.frames import PROTOCOL_VERSION, ErrorCode, describe_code
from shared.protocol.mux import MuxSettings, Stream
from shared.protocol.sockets import tune_transport
from shared.protocol.tls import CONSOLE_EXPIRED, client_options, describe_tls_failure, wrap_client

CONNECT_TIMEOUT = 15.0
TRANSCRIPT_ENV = "JUMP_TRANSCRIPT"
"""Diagnostics: a file that receives every byte the console gets from the Jumpoint
(the channel's plaintext: frames with control messages and stream data, so
whatever the tunnels carry).  Created with mode 0600; an existing file is set
to 0600 before anything is written to it."""


def _open_transcript() -> Any:
    import os

    path = os.environ.get(TRANSCRIPT_ENV)
    if not path:
        return None
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as error:
        raise UsageError(f"{TRANSCRIPT_ENV}: cannot open {path}: {error.strerror}") from None
    if hasattr(os, "fchmod"):
        os.fchmod(descriptor, 0o600)  # an existing file keeps no wider mode
    return os.fdopen(descriptor, "ab", buffering=0)  # kept open for the channel's life


CLOSE_TIMEOUT = 3.0


def keepalive_settings(settings: MuxSettings, welcome: dict[str, Any]) -> MuxSettings:
    """The console follows the Jumpoint's keepalive (its C{limits}), when it is sane."""
    interval, timeout = welcome.get("keepalive_interval"), welcome.get("keepalive_timeout")
    if not all(
        isinstance(value, int | float) and not isinstance(value, bool)
        for value in (interval, timeout)
    ):
        return settings
    assert isinstance(interval, int | float) and isinstance(timeout, int | float)
    if not 1 <= interval < timeout <= 3600:
        return settings
    return dataclasses.replace(
        settings, keepalive_interval=float(interval), keepalive_timeout=float(timeout)
    )


class ConsoleRefused(CertificateRejected):
    """The Jumpoint refused this console at its hello (revoked, denied): its decision."""


class ConsoleChannel(ChannelProtocol):
    """The console's connection to one Jumpoint."""

    is_client = True
    hello_transitions = CONSOLE_HELLO

    def __init__(
        self,
        clock: IReactorTime,
        profile: Profile,
        address: str | None = None,
        timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        super().__init__(clock, MuxSettings(), handshake_timeout=timeout)
        self.profile = profile
        self.address = address or profile.address
        """The member dialled (C{host:port}); its certificate is checked for the profile's name."""
        self._transcript = _open_transcript()
        self.welcome: Deferred[dict[str, Any]] = Deferred()
        self.welcome_message: dict[str, Any] = {}
        self.lost: Deferred[JumpError] = Deferred()
        self.session_closed_reason: tuple[str, str] | None = None
        self.on_flow_closed: Callable[[int, str], None] | None = None
        """Told of the Jumpoint's C{flow_closed} (flow id, reason): the session's UDP flows."""
        self._requests: dict[int, Deferred[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._goaway: tuple[int, str] | None = None
        self._goaway_by_peer = False

    # -- lifecycle ---------------------------------------------------------

    def channel_started(self) -> None:
        assert self.mux is not None
        self.hello.fire(ChannelEvent.STARTED)
        self.mux.send_control(
            {"type": control.HELLO, "version": PROTOCOL_VERSION, "client": f"jump {__version__}"}
        )

    def mux_closing(self, code: int, reason: str, by_peer: bool) -> None:
        self._goaway = (code, reason)
        self._goaway_by_peer = by_peer

    def channel_lost(self, reason: Failure) -> None:
        error = self._explain_loss(reason)
        for pending in list(self._requests.values()):
            pending.errback(error)
        self._requests.clear()
        if not self.welcome.called:
            self.welcome.errback(error)
        if not self.lost.called:
            self.lost.callback(error)

    def _client_certificate(self) -> bytes | None:
        """The profile's client.pem, to say until when it was valid (C{None} if unreadable)."""
        try:
            return (self.profile.directory / "client.pem").read_bytes()
        except OSError:
            return None

    def _explain_loss(self, reason: Failure) -> JumpError:
        tls = (
            describe_tls_failure(
                reason,
                transport=self.transport,
                client_certificate_pem=self._client_certificate(),
            )
            if not self.welcome.called
            else None
        )
        welcomed = self.welcome.called
        if self.handshake_timed_out and not welcomed:
            return JumpointUnreachable(
                f"the TLS handshake with the Jumpoint at {self.address} did not finish"
                f" within {self.handshake_timeout:g}s",
                hint="check that the address is a Jumpoint and that nothing in between"
                " intercepts TLS",
            )
        if tls is not None and not welcomed:
            side, why = tls
            if side == "jumpoint":
                who = "the Jumpoint rejected this console's certificate"
                hint = "enroll again with a new enrollment file from your administrator"
                if why.startswith(f"{CONSOLE_EXPIRED}: valid until"):
                    hint = (
                        "if this machine's clock is right, enroll again with a new enrollment"
                        " file from your administrator; if the certificate should still be"
                        " valid, the Jumpoint's clock is wrong: tell your administrator"
                    )
            elif "has expired: valid until" in why or "is not yet valid: valid from" in why:
                who = "this console rejected the Jumpoint's certificate"
                hint = (
                    "check this machine's clock; if it is right, the Jumpoint's certificate"
                    " must be renewed: tell your administrator"
                )
            elif "not valid for" in why:
                who = "this console rejected the Jumpoint's certificate"
                hint = (
                    f"check the address of profile {self.profile.name!r}"
                    f" ({self.address}): the Jumpoint's certificate does not name it"
                )
            else:
                who = "this console rejected the Jumpoint's certificate"
                hint = (
                    f"the CA of profile {self.profile.name!r} did not sign the certificate of"
                    f" {self.address}: is it the right Jumpoint? If it was set up"
                    " again, enroll again"
                )
            return CertificateRejected(f"{who}: {why}", hint=hint)
        if self._goaway is not None:
            code, why = self._goaway
            if code in (ErrorCode.REVOKED, ErrorCode.DENIED) and not welcomed:
                return ConsoleRefused(
                    f"the Jumpoint rejected this console's certificate: {why}",
                    hint="ask your administrator for a new enrollment file",
                )
            if self.session_closed_reason is not None:
                return SessionLost(
                    f"the Jumpoint closed the session: {self.session_closed_reason[1]}"
                )
            if self._goaway_by_peer and code == ErrorCode.RESTARTING:
                return SessionLost(f"the Jumpoint is restarting: {why}")
            if self._goaway_by_peer and code == ErrorCode.CANCEL:  # the transport went away
                return SessionLost(f"the connection to the Jumpoint was lost: {why}")
            if not self._goaway_by_peer and code in (ErrorCode.KEEPALIVE_TIMEOUT, ErrorCode.LIMIT):
                # This console gave up on a dead or stuck link: the Jumpoint closed nothing.
                return SessionLost(f"the connection to the Jumpoint was lost: {why}")
            if not self._goaway_by_peer:
                return SessionLost(
                    f"this console closed the connection to the Jumpoint"
                    f" ({describe_code(code)}): {why}"
                )
            return SessionLost(f"the Jumpoint closed the connection ({describe_code(code)}): {why}")
        if not welcomed:
            return JumpointUnreachable(
                f"the connection to the Jumpoint at {self.address} closed during the"
                f" handshake: {reason.getErrorMessage()}"
            )
        return SessionLost(f"the connection to the Jumpoint was lost: {reason.getErrorMessage()}")

    def loss_is_reconnectable(self) -> bool:
        """Whether the channel was lost rather than ended by a decision (then: reconnect).

        The Jumpoint ending the session (C{session_closed}: revoked, denied,
        idle timeout...) or the channel (any GOAWAY but C{RESTARTING} and its
        own keepalive timeout) is a decision; a reset, a dead link this
        console detected, a stuck link, a Jumpoint killed are not.
        """
        if self.session_closed_reason is not None:
            return False
        if self._goaway is None:
            return True
        code = self._goaway[0]
        if self._goaway_by_peer:  # CANCEL: the transport was lost (reset, closed, killed)
            return code in (ErrorCode.RESTARTING, ErrorCode.KEEPALIVE_TIMEOUT, ErrorCode.CANCEL)
        return code in (ErrorCode.KEEPALIVE_TIMEOUT, ErrorCode.LIMIT)

    def dataReceived(self, data: bytes) -> None:
        if self._transcript is not None:
            self._transcript.write(data)
        super().dataReceived(data)

    # -- control -----------------------------------------------------------

    def control_received(self, message: dict[str, Any]) -> None:
        assert self.mux is not None
        try:
            kind = control.check_message(message, control.JUMPOINT_MESSAGES)
            if kind == control.WELCOME:
                self.peer_event(ChannelEvent.WELCOME, "second welcome")
            else:
                self.peer_event(ChannelEvent.MESSAGE, f"{kind!r} out of turn")
        except ProtocolViolation as violation:
            self.mux.go_away(ErrorCode.PROTOCOL_ERROR, violation.message)
            return
        if kind == control.WELCOME:
            self.mux.establish()
            self.mux.settings = keepalive_settings(self.mux.settings, message)
            settings = self.mux.settings
            # the kernel gives up on unacknowledged data within the keepalive timeout too
            tune_transport(self.transport, settings.keepalive_interval, settings.keepalive_timeout)
            self.mux.start_keepalive()
            self.welcome_message = message
            self.welcome.callback(message)
        elif kind in (control.RESULT, control.ERROR):
            pending = self._requests.pop(message["id"], None)
            if pending is None:
                self.mux.go_away(ErrorCode.PROTOCOL_ERROR, "reply to an unknown request")
            elif kind == control.RESULT:
                pending.callback(message)
            else:
                pending.errback(error_from_json(message["error"]))
        elif kind == control.SESSION_CLOSED:
            self.session_closed_reason = (message["code"], message["reason"])
        elif kind == control.FLOW_CLOSED and self.on_flow_closed is not None:
            self.on_flow_closed(message["flow"], message["reason"])

    def request(self, kind: str, **fields: Any) -> Deferred[dict[str, Any]]:
        """Send a request; the Deferred fires with the result or fails with a L{JumpError}."""
        assert self.mux is not None
        request_id = next(self._ids)
        pending: Deferred[dict[str, Any]] = Deferred()
        self._requests[request_id] = pending
        self.mux.send_control({"type": kind, "id": request_id, **fields})
        return pending

    def stream_requested(self, stream: Stream, payload: bytes) -> None:
        stream.reset(ErrorCode.REFUSED, "the console accepts no streams")

    def close(self, reason: str = "console closed") -> None:
        """Close the connection politely (GOAWAY, then TLS close)."""
        if self.mux is not None and not self.mux.closing:
            self.mux.go_away(ErrorCode.NO_ERROR, reason)
        elif self.transport is not None:
            self.transport.loseConnection()

    async def close_and_wait(self, reactor: Any, reason: str = "console closed") -> None:
        """Close, and wait (at most a few seconds) until the connection is gone."""
        self.close(reason)
        if self.lost.called:
            return
        timer = reactor.callLater(CLOSE_TIMEOUT, self._abort)
        waiter: Deferred[None] = Deferred()

        def gone(result: JumpError) -> JumpError:
            waiter.callback(None)
            return result

        self.lost.addBoth(gone)
        await waiter
        if timer.active():
            timer.cancel()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]


def _connect_error(failure: Failure, profile: Profile, address: str, host: str) -> JumpError:
    hint = (
        f"check that `jumpoint serve` runs there and that profile {profile.name!r}"
        " has the right address"
    )
    return connect_failure(failure, address, host, hint)


def connect_failure(failure: Failure, address: str, host: str, hint: str) -> JumpError:
    """A failed TCP connection to the Jumpoint at C{address} as a L{JumpError}."""
    value = failure.value
    where = f"the Jumpoint at {address}"
    if isinstance(value, JumpError):
        return value
    if isinstance(value, net_error.ConnectionRefusedError):
        return JumpointUnreachable(f"{where} refused the connection", hint=hint)
    if isinstance(value, net_error.DNSLookupError):
        return JumpointUnreachable(f"cannot resolve {host}", hint=hint)
    if isinstance(value, net_error.TimeoutError | net_error.ConnectingCancelledError):
        return JumpointUnreachable(f"connecting to {where} timed out", hint=hint)
    return JumpointUnreachable(f"cannot reach {where}: {failure.getErrorMessage()}", hint=hint)


async def connect(
    reactor: Any,
    profile: Profile,
    member: tuple[str, int] | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> ConsoleChannel:
    """Connect to the profile's Jumpoint (or the C{member} given) and wait for its welcome.

    Every member's certificate is checked against the profile's server name.
    C{timeout} bounds the TCP connect and the TLS handshake (each).
    """
    host, port = member or (profile.host, profile.port)
    ca, certificate, key = profile.read_credentials()
    options = client_options(profile.server_name, ca, certificate, key)
    endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    channel = ConsoleChannel(reactor, profile, format_address(host, port), timeout)
    factory = Factory.forProtocol(lambda: channel)
    factory.noisy = False
    try:
        await endpoint.connect(wrap_client(options, factory))
    except Exception:
        raise _connect_error(Failure(), profile, channel.address, host) from None
    await channel.welcome
    return channel
