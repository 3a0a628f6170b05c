"""The console's side of one kubectl connection, sans-IO: local auth, the login timer, the relay.

L{KubeClientEngine} makes every decision L{console.kube_proxy.KubeClientConnection}
used to make between Twisted calls, and does no I/O: no reactor, no
transport, no stream.  The host feeds it events and performs the actions it
emits, in the order they come (the style of h11 and of L{HttpRelay}, which
it runs):

  - events: L{KubeClientEngine.connection_made}, L{client_data}, L{client_lost}
    (kubectl's side); L{upstream_data}, L{upstream_eof}, L{upstream_reset}
    (the stream's side); L{login_timer_fired} (time passing); and
    L{stream_opened}, the host's answer to L{OpenStream};
  - actions (L{Action}): bytes for kubectl (L{SendToClient}) or the stream
    (L{SendToStream}), L{OpenStream}, the login timer
    (L{StartLoginTimer} with its deadline, L{CancelLoginTimer}), a request
    answered here (L{Refused}, for the log), the end of a connection that
    never had a stream (L{ReportEnded}), closing kubectl's side in order
    (L{CloseClient}) or at once (L{AbortClient}), and the stream's end
    (L{HalfCloseStream}, L{FinishStream}).

The rules:

  - no stream before the first request head is complete and authenticated:
    exactly one C{Authorization} line carrying the session's token, and a
    C{Host} among the listener's; anything else gets a local 401 and the
    connection closes (none of its bytes go to the stream);
  - a malformed head gets the relay's local 400 (or 431) and is reported;
  - the first authenticated request opens the stream (L{OpenStream}): the
    host opens it at once and calls L{stream_opened} before returning, or
    does not (the session is closing), and the request is answered 503;
  - a connection without a stream by the login timeout is reported ended
    (timed out) and aborted; one lost before that is reported ended too;
  - the request, without the session token, goes to the stream; what comes
    back is relayed by h11 (101: raw bytes both ways).

The clock is injected (C{now}); the host runs the timer the engine asks for
and reports when it fires.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection
from dataclasses import dataclass

from shared.codecs.http.heads import Answer, Forward, RequestHead, error_answer, rewrite_headers
from shared.codecs.http.relay import Exchange, HttpRelay
from shared.k8s.api_policy import unauthorized_answer
from shared.lifecycle import Lifecycle, Transitions

DEFAULT_LOGIN_TIMEOUT = 30.0
"""Seconds a local connection has to send its first authenticated request (no session terms)."""

TOKEN_MESSAGE = (
    "Unauthorized: the request does not carry this session's token"
    " (use the kubeconfig printed by jump open)"
)
HOST_MESSAGE = "Unauthorized: the Host header does not name this session's listener"

MAX_LOGGED_TARGET = 200
"""Characters of a refused request's target that L{Refused.request} keeps."""


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


# -- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendToClient:
    """Write C{data} to kubectl."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SendToStream:
    """Send C{data} on the stream (dropped if the stream is gone)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class OpenStream:
    """Open the stream to the Jumpoint now, and call L{KubeClientEngine.stream_opened}
    before returning; do nothing if it cannot be opened (the request is answered 503)."""


@dataclass(frozen=True, slots=True)
class StartLoginTimer:
    """Call L{KubeClientEngine.login_timer_fired} in C{delay} seconds (at C{deadline})."""

    delay: float
    deadline: float


@dataclass(frozen=True, slots=True)
class CancelLoginTimer:
    """The login timer is not needed any more."""


@dataclass(frozen=True, slots=True)
class Refused:
    """A request was answered here with C{status}, for the log.

    @ivar reason: why, safe to log.
    @ivar request: the method and target (at most L{MAX_LOGGED_TARGET}
        characters of it), or None for a head too malformed to have them.
    """

    status: int
    reason: str
    request: str | None


@dataclass(frozen=True, slots=True)
class ReportEnded:
    """The connection ended without ever having a stream (once); C{timed_out}: by the timer."""

    timed_out: bool


@dataclass(frozen=True, slots=True)
class CloseClient:
    """Close kubectl's side after everything written so far."""


@dataclass(frozen=True, slots=True)
class AbortClient:
    """Close kubectl's side now."""


@dataclass(frozen=True, slots=True)
class HalfCloseStream:
    """kubectl sent its last byte (upgraded): FIN on the stream."""


@dataclass(frozen=True, slots=True)
class FinishStream:
    """The conversation is over: FIN on the stream if C{clean}, else reset it; C{reason} why."""

    reason: str
    clean: bool


Action = (
    SendToClient
    | SendToStream
    | OpenStream
    | StartLoginTimer
    | CancelLoginTimer
    | Refused
    | ReportEnded
    | CloseClient
    | AbortClient
    | HalfCloseStream
    | FinishStream
)
"""Everything the engine asks its host to do."""


class KubeClientEngine:
    """One kubectl connection's decisions (module docstring); no I/O.

    @param check_token: whether an C{Authorization} value carries the session's token.
    @param hosts: the accepted C{Host} values (compared in lowercase).
    @param emit: performs one L{Action}, at once (actions come in order).
    @param now: the clock, in seconds.
    @param login_timeout: seconds to the first authenticated request
        (L{DEFAULT_LOGIN_TIMEOUT} if None).
    @ivar refusals: requests answered here (401, malformed).
    @ivar timed_out: the login timer ended the connection.
    """

    def __init__(
        self,
        check_token: Callable[[str], bool],
        hosts: Collection[str],
        *,
        emit: Callable[[Action], None],
        now: Callable[[], float],
        login_timeout: float | None = None,
    ) -> None:
        self.check_token = check_token
        self.hosts = frozenset(h.lower() for h in hosts)
        self.emit = emit
        self.clock = now
        self.login_timeout = DEFAULT_LOGIN_TIMEOUT if login_timeout is None else login_timeout
        self.relay = HttpRelay(self)
        self.lifecycle: Lifecycle[KubeConnectionState, KubeConnectionEvent] = (
            KUBE_CONNECTION_TRANSITIONS.start(KubeConnectionState.AWAITING_LOGIN)
        )
        self.refusals = 0
        self.timed_out = False
        self.has_stream = False
        """The stream was opened (it stays True once the connection is closed)."""
        self._timer_armed = False

    @property
    def state(self) -> KubeConnectionState:
        return self.lifecycle.state

    # -- events from kubectl's side -------------------------------------------------------

    def connection_made(self) -> None:
        """kubectl connected: the login timer starts."""
        self._timer_armed = True
        deadline = self.clock() + self.login_timeout
        self.emit(StartLoginTimer(self.login_timeout, deadline))

    def client_data(self, data: bytes) -> None:
        self.relay.feed_client(data)

    def client_lost(self, message: str) -> None:
        """kubectl's connection is gone (C{message}: why, for the stream's reason)."""
        self._cancel_timer()
        before = self.lifecycle.state
        self.lifecycle.fire(KubeConnectionEvent.LOST)
        if self.has_stream:
            self.relay.abort(f"the local connection was lost: {message}")
        else:
            self.relay.abort("closed")
            if before is KubeConnectionState.AWAITING_LOGIN:
                self.emit(ReportEnded(timed_out=False))

    def login_timer_fired(self) -> None:
        """The deadline of L{StartLoginTimer} has come."""
        self._timer_armed = False
        if self.lifecycle.state is not KubeConnectionState.AWAITING_LOGIN:
            return
        self.lifecycle.fire(KubeConnectionEvent.LOGIN_EXPIRED)
        self.timed_out = True
        self.emit(ReportEnded(timed_out=True))
        self.emit(AbortClient())

    def stream_opened(self) -> None:
        """The host's answer to L{OpenStream}: the stream is open."""
        self._cancel_timer()
        self.lifecycle.fire(KubeConnectionEvent.STREAM_OPENED)  # the leg reports the end
        self.has_stream = True

    # -- events from the stream's side ----------------------------------------------------

    def upstream_data(self, data: bytes) -> None:
        self.relay.feed_upstream(data)

    def upstream_eof(self) -> None:
        self.relay.upstream_eof()

    def upstream_reset(self, reason: str) -> None:
        self.relay.abort(reason)

    # -- the relay's handler (called by L{relay}, not by the host) ------------------------

    def now(self) -> float:
        return self.clock()

    def decide(self, exchange: Exchange) -> Forward | Answer:
        head = exchange.head
        message = self._unauthorized(head)
        if message is not None:
            self.refusals += 1
            request = f"{head.method} {head.target[:MAX_LOGGED_TARGET]}"
            self.emit(Refused(401, message, request))
            return unauthorized_answer(message)
        if not self.has_stream and not self._open():
            return error_answer(
                503, "the session is closing", close=True, reason="ServiceUnavailable"
            )
        return Forward(rewrite_headers(head, remove=("Authorization",)))

    def refused(self, status: int, reason: str) -> None:
        self.refusals += 1
        self.emit(Refused(status, f"malformed request ({status}): {reason}", None))

    def to_client(self, data: bytes) -> None:
        self.emit(SendToClient(data))

    def to_upstream(self, data: bytes) -> None:
        if self.has_stream:
            self.emit(SendToStream(data))

    def switched(self, exchange: Exchange) -> None:
        self.lifecycle.fire(KubeConnectionEvent.SWITCHED)

    def exchange_finished(self, exchange: Exchange) -> None:
        pass  # audited on the Jumpoint

    def upstream_ended(self) -> None:
        # The Jumpoint has nothing more to say: TLS cannot half-close, so close in order.
        self.emit(CloseClient())

    def client_ended(self) -> None:
        if self.has_stream:
            self.emit(HalfCloseStream())

    def finished(self, reason: str, clean: bool) -> None:
        if self.has_stream:
            self.emit(FinishStream(reason, clean))
        if self.lifecycle.state is KubeConnectionState.CLOSED:
            return
        self.emit(CloseClient() if clean else AbortClient())

    # -- helpers ---------------------------------------------------------------------------

    def _open(self) -> bool:
        """Ask for the stream (first authenticated request); False if there is none."""
        if self.lifecycle.state is not KubeConnectionState.AWAITING_LOGIN:
            return False
        self.emit(OpenStream())
        return self.has_stream

    def _cancel_timer(self) -> None:
        if self._timer_armed:
            self._timer_armed = False
            self.emit(CancelLoginTimer())

    def _unauthorized(self, head: RequestHead) -> str | None:
        """Why the request may not cross the channel, or None."""
        values = head.get_all("authorization")
        if len(values) != 1 or not self.check_token(values[0]):
            return TOKEN_MESSAGE
        host = head.get("host")
        if host is None or host.strip().lower() not in self.hosts:
            return HOST_MESSAGE
        return None


__all__ = [
    "DEFAULT_LOGIN_TIMEOUT",
    "HOST_MESSAGE",
    "KUBE_CONNECTION_TRANSITIONS",
    "TOKEN_MESSAGE",
    "AbortClient",
    "Action",
    "CancelLoginTimer",
    "CloseClient",
    "FinishStream",
    "HalfCloseStream",
    "KubeClientEngine",
    "KubeConnectionEvent",
    "KubeConnectionState",
    "OpenStream",
    "Refused",
    "ReportEnded",
    "SendToClient",
    "SendToStream",
    "StartLoginTimer",
]
