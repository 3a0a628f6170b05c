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

Every decision above, the login timer and the connection's lifecycle
(L{KubeConnectionState}, moved by L{KubeConnectionEvent}s along
L{KUBE_CONNECTION_TRANSITIONS}) are the sans-IO
L{console.kube_client_engine.KubeClientEngine}'s, which runs the L{HttpRelay}
(heads, Content-Length and chunked bodies, the upgrade).
L{KubeClientConnection} only feeds it kubectl's bytes, the stream's and the
timer, and performs the actions it emits on the TLS transport, the reactor's
clock and the stream's leg (a L{TcpBridge} with a L{_StreamHandler}).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, assert_never

from twisted.internet import ssl
from twisted.internet.interfaces import IDelayedCall, IProtocolFactory, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from console.kube_client_engine import (
    DEFAULT_LOGIN_TIMEOUT,
    KUBE_CONNECTION_TRANSITIONS,
    AbortClient,
    Action,
    CancelLoginTimer,
    CloseClient,
    FinishStream,
    HalfCloseStream,
    KubeClientEngine,
    KubeConnectionEvent,
    KubeConnectionState,
    OpenStream,
    Refused,
    ReportEnded,
    SendToClient,
    SendToStream,
    StartLoginTimer,
)
from console.kubeconfig import SessionKubeconfig
from shared.bridge import BridgeEvent, BridgeState, PlainRelay, TcpBridge
from shared.codecs.http.relay import HttpRelay
from shared.lifecycle import Lifecycle
from shared.protocol.frames import ErrorCode, describe_code
from shared.protocol.mux import Stream

log = Logger()

ALPN = b"http/1.1"


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
        self.connection.engine.upstream_data(data)

    def stream_ended(self, bridge: TcpBridge) -> None:
        if bridge.state in (BridgeState.OPEN, BridgeState.READ_CLOSED):
            bridge.half_close.fire(BridgeEvent.PEER_FIN)  # the relay closes the client's side
        self.connection.engine.upstream_eof()

    def stream_reset(self, bridge: TcpBridge, code: int, reason: str) -> None:
        bridge.reset_code = code
        bridge.close_reason = f"{describe_code(code)}: {reason}"
        self.connection.engine.upstream_reset(bridge.close_reason)
        if bridge.transport is not None:
            bridge.transport.abortConnection()  # type: ignore[attr-defined]
        else:
            bridge.finish()


class KubeClientConnection(Protocol):
    """One kubectl connection (already decrypted): a thin protocol over L{KubeClientEngine}.

    @ivar engine: the decisions (local auth, login timer, relay, lifecycle).
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
    @param clock: the timer's and the relay's clock (the global reactor if None).
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
        self.on_opened = on_opened
        self.on_ended = on_ended
        self.on_closed = on_closed
        self.clock = clock
        self.local = local
        self.engine = KubeClientEngine(
            session.check_token,
            hosts,
            emit=self._perform,
            now=lambda: self._clock().seconds(),
            login_timeout=login_timeout,
        )
        self.leg: TcpBridge | None = None
        self._timer: IDelayedCall | None = None

    @property
    def relay(self) -> HttpRelay:
        return self.engine.relay

    @property
    def lifecycle(self) -> Lifecycle[KubeConnectionState, KubeConnectionEvent]:
        return self.engine.lifecycle

    @property
    def state(self) -> KubeConnectionState:
        return self.engine.state

    @property
    def refusals(self) -> int:
        """Requests answered locally (401, malformed)."""
        return self.engine.refusals

    @property
    def timed_out(self) -> bool:
        return self.engine.timed_out

    @property
    def login_timeout(self) -> float:
        return self.engine.login_timeout

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
        self.engine.connection_made()

    def dataReceived(self, data: bytes) -> None:
        self.engine.client_data(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.engine.client_lost(reason.getErrorMessage())
        if self.leg is not None:
            self.leg.connectionLost(reason)

    def abort(self) -> None:
        """Close now (the session is closing)."""
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _login_timer_fired(self) -> None:
        self._timer = None
        self.engine.login_timer_fired()

    # -- the engine's actions ------------------------------------------------------------

    def _perform(self, action: Action) -> None:
        match action:
            case SendToClient(data=data):
                if self.transport is not None:
                    self.transport.write(data)
            case SendToStream(data=data):
                self._to_stream(data)
            case OpenStream():
                self._open_leg()
            case StartLoginTimer(delay=delay):
                self._timer = self._clock().callLater(delay, self._login_timer_fired)
            case CancelLoginTimer():
                if self._timer is not None and self._timer.active():
                    self._timer.cancel()
                self._timer = None
            case Refused():
                self._refused_log(action)
            case ReportEnded(timed_out=timed_out):
                self._report_ended(timed_out)
            case CloseClient():
                self._close_client()
            case AbortClient():
                self.abort()
            case HalfCloseStream():
                self._half_close_stream()
            case FinishStream(reason=reason, clean=clean):
                self._finish_stream(reason, clean)
            case _:
                assert_never(action)

    def _report_ended(self, timed_out: bool) -> None:
        """The connection ended before it had a stream (reported once: the engine says so)."""
        if timed_out:
            log.warn(
                "closed a Kubernetes connection from {peer} on {local}: no complete request"
                " within the login timeout ({timeout:g}s)",
                peer=self._peer(),
                local=self.local,
                timeout=self.login_timeout,
            )
        if self.on_ended is not None:
            self.on_ended(self, timed_out)

    def _refused_log(self, refused: Refused) -> None:
        log.warn(
            "refused a Kubernetes request from {peer} on {local}{what}: {reason}",
            peer=self._peer(),
            local=self.local,
            what=f" ({refused.request})" if refused.request is not None else "",
            reason=refused.reason,
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

    # -- the stream's leg: all the code that touches the bridge ----------------------------

    def _open_leg(self) -> None:
        """Open the stream and its leg for the first authenticated request (if we still can)."""
        if self.transport is None:
            return
        stream = self.open_stream()
        if stream is None:
            return  # the session is closing: the engine answers 503
        self.engine.stream_opened()
        leg = TcpBridge(stream, self.on_closed, _StreamHandler(self))
        self.leg = leg
        if self.on_opened is not None:
            self.on_opened(self, leg)
        leg.makeConnection(self.transport)  # type: ignore[no-untyped-call]

    def _to_stream(self, data: bytes) -> None:
        leg = self.leg
        if leg is not None and not leg.stream.closed:
            leg.send_to_stream(data)

    def _half_close_stream(self) -> None:
        if self.leg is not None:
            self.leg.stream.end_write()

    def _finish_stream(self, reason: str, clean: bool) -> None:
        leg = self.leg
        if leg is None:
            return
        leg.close_reason = leg.close_reason or reason
        if clean:
            leg.stream.end_write()
        else:
            leg.stream.reset(ErrorCode.CANCEL, reason)


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
