"""The Twisted side of the console's SQL Server leg: the login first, then a bridge.

A local SQL Server client's connection starts as a L{TdsLocalConnection}: no
stream yet, so nothing reaches the Jumpoint (and the Jumpoint dials nothing)
while the client negotiates PRELOGIN and TLS with the console.  Only when the
client's whole LOGIN7 is in does it open the stream and hand its connection
to a L{TdsClientHandler}.  A client that has not completed its login within
the session's C{login_timeout} is closed and counted
(L{LoginHost.login_ended}); until then it holds a slot of the session's
connection cap, as any connection does.

Bytes from the local client go through L{ClientLeg.from_client}: what it
answers itself (the PRELOGIN reply, TLS handshake flights, a login refusal)
is written back to the client, what is meant for the Jumpoint (the LOGIN7
without credentials, then the client's TDS) enters the stream through
L{TcpBridge.send_to_stream}, so that the stream's backpressure applies as for
any tunnel.  Bytes from the Jumpoint go through L{ClientLeg.from_jumpoint}
(encrypted when the client's connection is in TLS) and then on to the socket
as usual.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Protocol as Interface

from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from console.tds_client_leg import ClientLeg, LegOutput
from shared.bridge import PlainRelay, TcpBridge
from shared.items import LOGIN_TIMEOUT_DEFAULT
from shared.protocol.frames import ErrorCode
from shared.protocol.mux import Stream

log = Logger()

_MODE_TEXT = {
    "none": "no encryption",
    "login-only": "encryption of the login only",
    "full": "TLS for the whole connection",
    "strict": "TDS 8.0 strict TLS",
}


class TdsClientHandler(PlainRelay):
    """A local SQL Server client's connection, bridged to a stream through a L{ClientLeg}.

    The handler (L{shared.bridge.BridgeHandler}) of its L{bridge}: bytes from the
    client go through the leg before they enter the stream, bytes from the stream
    through the leg before they reach the client; the rest is the plain relay's.

    @param local: the listener's address, C{host:port} (for logs only).
    """

    def __init__(
        self,
        stream: Stream,
        leg: ClientLeg,
        on_closed: Callable[[TcpBridge], None] | None = None,
        *,
        local: str = "",
    ) -> None:
        self.bridge = TcpBridge(stream, on_closed, self)
        self.leg = leg
        self.local = local
        self._mode_logged = False
        self._client_closed = False

    # -- the bridge's hooks ---------------------------------------------------

    def socket_data(self, bridge: TcpBridge, data: bytes) -> None:
        if self._client_closed:
            return
        self.act(self.leg.from_client(data))

    def stream_data(self, bridge: TcpBridge, data: bytes) -> None:
        if self._client_closed:
            return
        out = self.leg.from_jumpoint(data)
        if out:
            bridge.send_to_socket(out)
        if self.leg.failure is not None:
            self._close_client(self.leg.failure)

    # -- acting on the leg ------------------------------------------------------

    def act(self, output: LegOutput) -> None:
        """Do what one call of L{ClientLeg.from_client} asked for."""
        if self._client_closed:
            return
        self._log_mode()
        if output.to_client:
            self._write_client(output.to_client)
        if output.to_jumpoint:
            self.bridge.send_to_stream(output.to_jumpoint)
        if output.close is not None:
            self._close_client(output.close)

    def _write_client(self, data: bytes) -> None:
        bridge = self.bridge
        transport = bridge.transport
        if transport is None:
            return
        # Through the stream's write batch, so that the order with relayed bytes holds.
        bridge.stream.write_to_socket(transport, data)

    def _log_mode(self) -> None:
        leg = self.leg
        if self._mode_logged or leg.mode is None:
            return
        if leg.mode != "none" and leg.tls_version is None and leg.failure is None:
            return  # wait for the handshake, to log the TLS version with the mode
        self._mode_logged = True
        details = _MODE_TEXT[leg.mode]
        if leg.tls_version:
            details += f", {leg.tls_version}"
        if leg.mode == "strict" and leg.alpn is None and leg.tls_version:
            details += ", without ALPN tds/8.0"
        log.info(
            "SQL Server client {peer} connected to {local}: {details}",
            peer=self._peer(),
            local=self.local,
            details=details,
        )

    def _peer(self) -> str:
        transport = self.bridge.transport
        if transport is None:
            return "?"
        peer = transport.getPeer()
        host, port = getattr(peer, "host", "?"), getattr(peer, "port", "?")
        return f"{host}:{port}"

    def _close_client(self, reason: str) -> None:
        """Write what is pending, close the client's connection, reset the stream with C{reason}."""
        if self._client_closed:
            return
        self._client_closed = True
        log.warn(
            "closed the SQL Server client {peer} on {local}: {reason}",
            peer=self._peer(),
            local=self.local,
            reason=reason,
        )
        self.bridge.close_reason = f"sql server client: {reason}"
        self.bridge.reset_code = ErrorCode.CANCEL
        self.bridge.stream.reset(
            ErrorCode.CANCEL, f"the SQL Server client's connection closed: {reason}"
        )
        transport = self.bridge.transport
        if transport is None:
            self.bridge.finish()
            return
        self.bridge.stream.flush_socket(transport)
        # As in stream_ended: a paused producer would make Twisted forget the close.
        transport.unregisterProducer()  # type: ignore[attr-defined]
        transport.loseConnection()


class LoginHost(Interface):
    """Where a L{TdsLocalConnection} reports its login's end (the console's tunnel)."""

    def login_completed(self, connection: TdsLocalConnection, bridge: TcpBridge) -> None:
        """The login is in: C{bridge} (with its stream) carries the connection from now on."""

    def login_ended(self, connection: TdsLocalConnection, *, timed_out: bool) -> None:
        """The connection ended before its login completed (C{timed_out}: by the login timeout)."""

    def connection_closed(self, bridge: TcpBridge) -> None:
        """The bridge of a logged-in connection ended."""


class _Phase(enum.Enum):
    LOGIN = "login"  # PRELOGIN, TLS and LOGIN7 with the console only; no stream
    BRIDGED = "bridged"  # a TdsClientHandler carries the connection
    CLOSED = "closed"  # ended before its login completed


@implementer(IHalfCloseableProtocol)
class TdsLocalConnection(Protocol):
    """A local SQL Server client's connection: its login with no stream, then a bridge.

    @param open_stream: opens the stream to the Jumpoint once the LOGIN7 is
        whole; C{None} when the channel can carry none any more.
    @param login_timeout: seconds the client has to complete its login
        (C{None}, from a Jumpoint that sends none: L{LOGIN_TIMEOUT_DEFAULT}).
    @param local: the listener's address, C{host:port} (for logs only).
    """

    def __init__(
        self,
        leg: ClientLeg,
        open_stream: Callable[[], Stream | None],
        host: LoginHost,
        *,
        clock: IReactorTime,
        login_timeout: float | None,
        local: str = "",
    ) -> None:
        self.leg = leg
        self.bridge: TcpBridge | None = None
        self.local = local
        self._open_stream = open_stream
        self._host = host
        self._clock = clock
        self._login_timeout = LOGIN_TIMEOUT_DEFAULT if login_timeout is None else login_timeout
        self._timer: IDelayedCall | None = None
        self._phase = _Phase.LOGIN

    @property
    def logging_in(self) -> bool:
        return self._phase is _Phase.LOGIN

    def connectionMade(self) -> None:
        self._timer = self._clock.callLater(self._login_timeout, self._login_timed_out)

    def dataReceived(self, data: bytes) -> None:
        if self.bridge is not None:
            self.bridge.dataReceived(data)
            return
        if self._phase is not _Phase.LOGIN:
            return
        output = self.leg.from_client(data)
        if output.to_jumpoint:
            self._bridge(output)
            return
        transport = self.transport
        assert transport is not None
        if output.to_client:
            transport.write(output.to_client)
        if output.close is not None:
            log.warn(
                "closed the SQL Server client {peer} on {local}: {reason}",
                peer=_peer(transport),
                local=self.local,
                reason=output.close,
            )
            self._end(timed_out=False)
            transport.loseConnection()

    def readConnectionLost(self) -> None:
        if self.bridge is not None:
            self.bridge.readConnectionLost()
        elif self._phase is _Phase.LOGIN and self.transport is not None:
            self._end(timed_out=False)  # the client gave up before its login
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        if self.bridge is not None:
            self.bridge.writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.bridge is not None:
            self.bridge.connectionLost(reason)
        else:
            self._end(timed_out=False)

    def abort(self) -> None:
        """Drop the connection now (the session is closing)."""
        if self.bridge is not None:
            if self.bridge.transport is not None:
                self.bridge.transport.abortConnection()  # type: ignore[attr-defined]
            return
        self._end(timed_out=False)
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _bridge(self, output: LegOutput) -> None:
        """The LOGIN7 is whole: open the stream, let a L{TdsClientHandler} take over."""
        self._cancel_timer()
        transport = self.transport
        assert transport is not None
        stream = self._open_stream()
        if stream is None:
            log.warn(
                "closed the SQL Server client {peer} on {local}: the connection to the"
                " Jumpoint is closing",
                peer=_peer(transport),
                local=self.local,
            )
            self._end(timed_out=False)
            transport.abortConnection()  # type: ignore[attr-defined]
            return
        handler = TdsClientHandler(stream, self.leg, self._host.connection_closed, local=self.local)
        self.bridge = handler.bridge
        self._phase = _Phase.BRIDGED
        self._host.login_completed(self, handler.bridge)
        handler.bridge.makeConnection(transport)  # type: ignore[no-untyped-call]
        handler.act(output)

    def _login_timed_out(self) -> None:
        self._timer = None
        transport = self.transport
        if self._phase is not _Phase.LOGIN or transport is None:
            return
        log.warn(
            "closed the SQL Server client {peer} on {local}: no complete login within"
            " {seconds:g}s (login_timeout)",
            peer=_peer(transport),
            local=self.local,
            seconds=self._login_timeout,
        )
        self._end(timed_out=True)
        transport.abortConnection()  # type: ignore[attr-defined]

    def _end(self, *, timed_out: bool) -> None:
        if self._phase is not _Phase.LOGIN:
            return
        self._phase = _Phase.CLOSED
        self._cancel_timer()
        self._host.login_ended(self, timed_out=timed_out)

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()


def _peer(transport: object) -> str:
    peer = transport.getPeer()  # type: ignore[attr-defined]
    host, port = getattr(peer, "host", "?"), getattr(peer, "port", "?")
    return f"{host}:{port}"
