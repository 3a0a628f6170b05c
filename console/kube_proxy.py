"""The console's HTTPS listener for Kubernetes cluster items: local auth, then an HTTP relay.

Each accepted connection of a C{k8s} tunnel is TLS (the per-session listener
certificate of L{SessionKubeconfig}, TLS 1.2 or later, ALPN C{http/1.1} only, since
SPDY and WebSocket upgrades need HTTP/1.1) around a L{KubeClientConnection},
which runs the shared h11 relay (L{shared.codecs.http.relay}) between kubectl and a
stream to the Jumpoint:

  - no stream is opened, so the Jumpoint dials nothing, until the first
    request head is complete and authenticated; a connection that has not
    got there within the session's C{login_timeout} (L{DEFAULT_LOGIN_TIMEOUT}
    without one) is closed and counted as a login timeout;
  - a request without exactly one C{Authorization: Bearer <session token>}
    line, or whose C{Host} is not the listener's C{ADDR:PORT} (or C{ADDR}),
    gets a local 401 and the connection is closed; none of its bytes cross
    the channel;
  - a malformed head gets a local 400 (a small C{Status}) and the connection
    is closed;
  - otherwise the request, re-encoded by h11 without the session token, goes
    to the stream; the request target is not judged here: the Jumpoint
    canonicalises it, decides and audits.

What comes back on the stream is parsed by h11 too, so the console knows
when an upgrade was accepted (101: raw bytes both ways from then on,
including what arrived together with the 101) and when it was refused (the
connection stays HTTP, and the next request is checked like the first).

Each connection's lifecycle is explicit: L{KubeConnectionState}, moved by
L{KubeConnectionEvent}s along L{KUBE_CONNECTION_TRANSITIONS}.  The HTTP
framing itself (heads, Content-Length and chunked bodies, the upgrade) is
the sans-IO L{HttpRelay}'s; this protocol only moves bytes and timers.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection
from typing import Any

from twisted.internet import ssl
from twisted.internet.interfaces import IDelayedCall, IProtocolFactory, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from console.kubeconfig import SessionKubeconfig
from shared.bridge import BridgeEvent, BridgeState, PlainRelay, TcpBridge
from shared.codecs.http.heads import Answer, Forward, RequestHead, error_answer, rewrite_headers
from shared.codecs.http.relay import Exchange, HttpRelay
from shared.k8s.api_policy import unauthorized_answer
from shared.lifecycle import Transitions
from shared.protocol.frames import ErrorCode, describe_code
from shared.protocol.mux import Stream

log = Logger()

ALPN = b"http/1.1"

DEFAULT_LOGIN_TIMEOUT = 30.0
"""Seconds a local connection has to send its first authenticated request (no session terms)."""

TOKEN_MESSAGE = (
    "Unauthorized: the request does not carry this session's token"
    " (use the kubeconfig printed by jump open)"
)
HOST_MESSAGE = "Unauthorized: the Host header does not name this session's listener"


def listener_hosts(address: str, port: int) -> frozenset[str]:
    """The C{Host} values accepted on a listener: C{ADDR:PORT} and C{ADDR} (lowercase)."""
    host = f"[{address}]" if ":" in address else address
    return frozenset({f"{host}:{port}".lower(), host.lower()})


def tls_options(session: SessionKubeconfig) -> ssl.CertificateOptions:
    """The listener's TLS settings: the session's certificate, TLS 1.2+, ALPN http/1.1 only."""
    certificate = ssl.PrivateCertificate.loadPEM(session.certificate_pem + b"\n" + session.key_pem)
    return ssl.CertificateOptions(
        privateKey=certificate.privateKey.original,
        certificate=certificate.original,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        acceptableProtocols=[ALPN],
    )


class KubeConnectionState(enum.Enum):
    """Where one kubectl connection is."""

    AWAITING_LOGIN = enum.auto()
    """No stream yet: waiting for a complete, authenticated request head."""
    RELAYING = enum.auto()
    """The stream is open; HTTP exchanges go through the relay (its leg reports the end)."""
    UPGRADED = enum.auto()
    """The cluster accepted an upgrade (101): raw bytes both ways."""
    TIMED_OUT = enum.auto()
    """No authenticated request within the login timeout: reported, being aborted."""
    CLOSED = enum.auto()
    """The local connection is gone."""


class KubeConnectionEvent(enum.Enum):
    """What moves a kubectl connection from one L{KubeConnectionState} to the next."""

    STREAM_OPENED = enum.auto()
    """The first authenticated request opened the stream."""
    SWITCHED = enum.auto()
    """The relay saw 101 Switching Protocols."""
    LOGIN_EXPIRED = enum.auto()
    """The login timeout passed without a stream."""
    LOST = enum.auto()
    """The local connection ended."""


_K, _KE = KubeConnectionState, KubeConnectionEvent
KUBE_CONNECTION_TRANSITIONS: Transitions[KubeConnectionState, KubeConnectionEvent] = Transitions(
    "kubernetes connection",
    KubeConnectionState,
    KubeConnectionEvent,
    {
        _K.AWAITING_LOGIN: {
            _KE.STREAM_OPENED: _K.RELAYING,
            _KE.LOGIN_EXPIRED: _K.TIMED_OUT,
            _KE.LOST: _K.CLOSED,
        },
        _K.RELAYING: {_KE.SWITCHED: _K.UPGRADED, _KE.LOST: _K.CLOSED},
        _K.UPGRADED: {_KE.LOST: _K.CLOSED},
        _K.TIMED_OUT: {_KE.LOST: _K.CLOSED},
        _K.CLOSED: {},
    },
)
"""Every move a kubectl connection may make; anything else raises L{IllegalTransition}."""


class _Refuse(Protocol):
    """Closes a connection at once (no session yet)."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.abortConnection()  # type: ignore[attr-defined]


class KubeListenerFactory(ServerFactory):
    """The factory bound for a k8s tunnel: TLS around C{inner}, once the session exists.

    The L{SessionKubeconfig} is made after binding (it needs the bound port); until
    C{get_session} returns it, connections are closed at once.
    """

    def __init__(
        self,
        inner: IProtocolFactory,
        get_session: Callable[[], SessionKubeconfig | None],
        clock: IReactorTime | None = None,
    ) -> None:
        self.inner = inner
        self.clock = clock
        self.get_session = get_session
        self._tls: TLSMemoryBIOFactory | None = None
        self._tls_for: SessionKubeconfig | None = None

    def buildProtocol(self, addr: Any) -> Protocol | None:
        session = self.get_session()
        if session is None:
            log.warn("refused a Kubernetes connection: the session is not ready yet")
            return _Refuse()
        if self._tls is None or self._tls_for is not session:
            self._tls = TLSMemoryBIOFactory(
                tls_options(session), False, self.inner, clock=self.clock
            )
            self._tls_for = session
        protocol: Protocol | None = self._tls.buildProtocol(addr)
        return protocol


class _StreamHandler(PlainRelay):
    """The stream side of one kubectl connection, once its first request is authenticated.

    The handler of a plain L{TcpBridge} on the connection's TLS transport (credit
    and backpressure as for any tunnel), except that what comes from the stream
    goes through the connection's HTTP relay instead of straight to kubectl.
    """

    def __init__(self, connection: KubeClientConnection) -> None:
        self.connection = connection

    def stream_data(self, bridge: TcpBridge, data: bytes) -> None:
        if bridge.tap is not None:
            bridge.tap.to_socket(data)
        self.connection.relay.feed_upstream(data)

    def stream_ended(self, bridge: TcpBridge) -> None:
        if bridge.state in (BridgeState.OPEN, BridgeState.READ_CLOSED):
            bridge.half_close.fire(BridgeEvent.PEER_FIN)  # the relay closes the client's side
        self.connection.relay.upstream_eof()

    def stream_reset(self, bridge: TcpBridge, code: int, reason: str) -> None:
        bridge.reset_code = code
        bridge.close_reason = f"{describe_code(code)}: {reason}"
        self.connection.relay.abort(bridge.close_reason)
        if bridge.transport is not None:
            bridge.transport.abortConnection()  # type: ignore[attr-defined]
        else:
            bridge.finish()


class KubeClientConnection(Protocol):
    """One kubectl connection (already decrypted): local auth, then an HTTP relay to a stream.

    @ivar lifecycle: where the connection is (L{KubeConnectionState}).

    No stream exists (so the Jumpoint dials nothing) until the first request
    head is complete and carries this session's token and Host.  A connection
    that has not got that far within C{login_timeout} seconds is closed and
    reported with C{on_ended(connection, True)}.

    @param open_stream: opens the stream to the Jumpoint (None: the session is closing).
    @param hosts: the accepted C{Host} values (L{listener_hosts}).
    @param on_opened: the stream is open; its bridge now counts as a connection.
    @param on_ended: the connection ended before it had a stream (timed out or not).
    @param on_closed: the stream's bridge ended (the tunnel's counters).
    @param local: the listener's address, for logs.
    """

    def __init__(
        self,
        open_stream: Callable[[], Stream | None],
        session: SessionKubeconfig,
        hosts: Collection[str],
        *,
        on_opened: Callable[[KubeClientConnection, TcpBridge], None] | None = None,
        on_ended: Callable[[KubeClientConnection, bool], None] | None = None,
        on_closed: Callable[[TcpBridge], None] | None = None,
        clock: IReactorTime | None = None,
        login_timeout: float | None = None,
        local: str = "",
    ) -> None:
        self.open_stream = open_stream
        self.session = session
        self.hosts = frozenset(h.lower() for h in hosts)
        self.on_opened = on_opened
        self.on_ended = on_ended
        self.on_closed = on_closed
        self.clock = clock
        self.login_timeout = DEFAULT_LOGIN_TIMEOUT if login_timeout is None else login_timeout
        self.local = local
        self.relay = HttpRelay(self)
        self.leg: TcpBridge | None = None
        self.refusals = 0
        """Requests answered locally (401, malformed)."""
        self.timed_out = False
        self._timer: IDelayedCall | None = None
        self.lifecycle = KUBE_CONNECTION_TRANSITIONS.start(KubeConnectionState.AWAITING_LOGIN)

    @property
    def state(self) -> KubeConnectionState:
        return self.lifecycle.state

    @property
    def stream(self) -> Stream | None:
        return self.leg.stream if self.leg is not None else None

    def _clock(self) -> IReactorTime:
        if self.clock is None:
            from twisted.internet import reactor

            self.clock = reactor
        assert self.clock is not None
        return self.clock

    # -- from kubectl ------------------------------------------------------------------

    def connectionMade(self) -> None:
        self._timer = self._clock().callLater(self.login_timeout, self._login_expired)

    def dataReceived(self, data: bytes) -> None:
        self.relay.feed_client(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        before = self.lifecycle.state
        self.lifecycle.fire(KubeConnectionEvent.LOST)
        leg = self.leg
        if leg is not None:
            self.relay.abort(f"the local connection was lost: {reason.getErrorMessage()}")
            leg.connectionLost(reason)
        else:
            self.relay.abort("closed")
            if before is KubeConnectionState.AWAITING_LOGIN:
                self._report_ended(timed_out=False)

    def abort(self) -> None:
        """Close now (the session is closing)."""
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _login_expired(self) -> None:
        self._timer = None
        if self.lifecycle.state is not KubeConnectionState.AWAITING_LOGIN:
            return
        self.lifecycle.fire(KubeConnectionEvent.LOGIN_EXPIRED)
        self.timed_out = True
        log.warn(
            "closed a Kubernetes connection from {peer} on {local}: no complete request"
            " within the login timeout ({timeout:g}s)",
            peer=self._peer(),
            local=self.local,
            timeout=self.login_timeout,
        )
        self._report_ended(timed_out=True)
        self.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _report_ended(self, timed_out: bool) -> None:
        """The connection ended before it had a stream (reported once: the lifecycle says so)."""
        if self.on_ended is not None:
            self.on_ended(self, timed_out)

    # -- the relay's handler --------------------------------------------------------------

    def now(self) -> float:
        return self._clock().seconds()

    def decide(self, exchange: Exchange) -> Forward | Answer:
        head = exchange.head
        message = self._unauthorized(head)
        if message is not None:
            self._refused_log(message, head)
            return unauthorized_answer(message)
        if self.leg is None and not self._open():
            return error_answer(
                503, "the session is closing", close=True, reason="ServiceUnavailable"
            )
        return Forward(rewrite_headers(head, remove=("Authorization",)))

    def _open(self) -> bool:
        """Open the stream for the first authenticated request; False if the session is closing."""
        if self.lifecycle.state is not KubeConnectionState.AWAITING_LOGIN or self.transport is None:
            return False
        stream = self.open_stream()
        if stream is None:
            return False
        self._cancel_timer()
        self.lifecycle.fire(KubeConnectionEvent.STREAM_OPENED)  # the leg reports the end
        leg = TcpBridge(stream, self.on_closed, _StreamHandler(self))
        self.leg = leg
        if self.on_opened is not None:
            self.on_opened(self, leg)
        leg.makeConnection(self.transport)  # type: ignore[no-untyped-call]
        return True

    def refused(self, status: int, reason: str) -> None:
        self._refused_log(f"malformed request ({status}): {reason}", None)

    def to_client(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def to_upstream(self, data: bytes) -> None:
        leg = self.leg
        if leg is not None and not leg.stream.closed:
            leg.send_to_stream(data)

    def switched(self, exchange: Exchange) -> None:
        self.lifecycle.fire(KubeConnectionEvent.SWITCHED)

    def exchange_finished(self, exchange: Exchange) -> None:
        pass  # audited on the Jumpoint

    def upstream_ended(self) -> None:
        # The Jumpoint has nothing more to say: TLS cannot half-close, so close in order.
        self._close_client()

    def client_ended(self) -> None:
        leg = self.leg
        if leg is not None:
            leg.stream.end_write()

    def finished(self, reason: str, clean: bool) -> None:
        leg = self.leg
        if leg is not None:
            leg.close_reason = leg.close_reason or reason
            if clean:
                leg.stream.end_write()
            else:
                leg.stream.reset(ErrorCode.CANCEL, reason)
        if self.lifecycle.state is KubeConnectionState.CLOSED:
            return
        if clean:
            self._close_client()
        elif self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # -- helpers ---------------------------------------------------------------------------

    def _unauthorized(self, head: RequestHead) -> str | None:
        """Why the request may not cross the channel, or None."""
        values = head.get_all("authorization")
        if len(values) != 1 or not self.session.check_token(values[0]):
            return TOKEN_MESSAGE
        host = head.get("host")
        if host is None or host.strip().lower() not in self.hosts:
            return HOST_MESSAGE
        return None

    def _refused_log(self, reason: str, head: RequestHead | None) -> None:
        self.refusals += 1
        log.warn(
            "refused a Kubernetes request from {peer} on {local}{what}: {reason}",
            peer=self._peer(),
            local=self.local,
            what=f" ({head.method} {head.target[:200]})" if head is not None else "",
            reason=reason,
        )

    def _close_client(self) -> None:
        """Close the TLS connection after everything written so far."""
        transport = self.transport
        if transport is None:
            return
        if self.leg is not None:  # its producer would make the TLS transport wait to close
            transport.unregisterProducer()  # type: ignore[attr-defined]
        transport.loseConnection()

    def _peer(self) -> str:
        transport = self.transport
        if transport is None:
            return "?"
        peer = transport.getPeer()
        return f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"


__all__ = [
    "ALPN",
    "DEFAULT_LOGIN_TIMEOUT",
    "KUBE_CONNECTION_TRANSITIONS",
    "KubeClientConnection",
    "KubeConnectionEvent",
    "KubeConnectionState",
    "KubeListenerFactory",
    "listener_hosts",
    "tls_options",
]
