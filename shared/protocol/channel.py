"""The thin protocol under both ends of the channel: TLS handshake, then the mux.

L{ChannelProtocol} is wrapped in Twisted's TLS protocol.  It waits for the
handshake (with a deadline), checks the negotiated ALPN protocol, then hands
every byte to its L{Multiplexer}.  Subclasses implement the L{MuxHandler}
callbacks plus L{ChannelProtocol.channel_started} and
L{ChannelProtocol.channel_lost}.

The hello exchange (docs/protocol.md, "Hello exchange") is an explicit
lifecycle, L{ChannelProtocol.hello}: L{ChannelState} moved by
L{ChannelEvent}s along L{CONSOLE_HELLO} or L{JUMPOINT_HELLO}.  An event the
peer causes out of turn (a second C{welcome}, a request before C{hello}) is
a L{ProtocolViolation} (GOAWAY C{PROTOCOL_ERROR}); any other undefined move
raises L{IllegalTransition}.
"""

from __future__ import annotations

import enum
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IHandshakeListener, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from shared.errors import ProtocolViolation
from shared.lifecycle import Lifecycle, Transitions
from shared.protocol.frames import ALPN_PROTOCOL
from shared.protocol.mux import Multiplexer, MuxSettings, Stream
from shared.protocol.sockets import tune_transport


class ChannelState(enum.Enum):
    """Where a channel is in its hello exchange."""

    HANDSHAKING = enum.auto()
    """TLS is not up yet."""
    HELLO_SENT = enum.auto()
    """Console: C{hello} sent, waiting for C{welcome}."""
    AWAITING_HELLO = enum.auto()
    """Jumpoint: the console's certificate names an active user; waiting for C{hello}."""
    REFUSED = enum.auto()
    """Jumpoint: no client certificate, or no active user: GOAWAY sent."""
    ESTABLISHED = enum.auto()
    """C{welcome} sent (Jumpoint) or received (console): streams and requests."""
    CLOSED = enum.auto()
    """The connection is gone."""


class ChannelEvent(enum.Enum):
    """What moves a channel from one L{ChannelState} to the next."""

    STARTED = enum.auto()
    """TLS is up with C{jumpoint/1}: the console sends C{hello}; the Jumpoint knows the user."""
    REFUSED = enum.auto()
    """The Jumpoint refuses the console's certificate."""
    HELLO = enum.auto()
    """The Jumpoint got C{hello} (and answers C{welcome})."""
    WELCOME = enum.auto()
    """The console got C{welcome}."""
    MESSAGE = enum.auto()
    """Any other control message (requests, replies, C{session_closed})."""
    LOST = enum.auto()
    """The connection ended."""


_C, _H = ChannelState, ChannelEvent
CONSOLE_HELLO: Transitions[ChannelState, ChannelEvent] = Transitions(
    "console channel",
    ChannelState,
    ChannelEvent,
    {
        _C.HANDSHAKING: {_H.STARTED: _C.HELLO_SENT, _H.LOST: _C.CLOSED},
        # Replies before the welcome answer no request (GOAWAY, by the request table);
        # session_closed is kept for the error message.
        _C.HELLO_SENT: {
            _H.WELCOME: _C.ESTABLISHED,
            _H.MESSAGE: _C.HELLO_SENT,
            _H.LOST: _C.CLOSED,
        },
        _C.ESTABLISHED: {_H.MESSAGE: _C.ESTABLISHED, _H.LOST: _C.CLOSED},
    },
)
"""The console's hello; a second C{welcome} is a protocol violation."""

JUMPOINT_HELLO: Transitions[ChannelState, ChannelEvent] = Transitions(
    "jumpoint channel",
    ChannelState,
    ChannelEvent,
    {
        _C.HANDSHAKING: {
            _H.STARTED: _C.AWAITING_HELLO,
            _H.REFUSED: _C.REFUSED,
            _H.LOST: _C.CLOSED,
        },
        _C.AWAITING_HELLO: {_H.HELLO: _C.ESTABLISHED, _H.LOST: _C.CLOSED},
        _C.REFUSED: {_H.LOST: _C.CLOSED},
        _C.ESTABLISHED: {_H.MESSAGE: _C.ESTABLISHED, _H.LOST: _C.CLOSED},
    },
)
"""The Jumpoint's hello; a request before C{hello}, or a second C{hello}, is a violation."""


@implementer(IHandshakeListener)
class ChannelProtocol(Protocol):
    """Base class of the console's and the Jumpoint's channel protocols.

    @ivar hello: the hello lifecycle (L{CONSOLE_HELLO} or L{JUMPOINT_HELLO}).
    """

    log = Logger()
    is_client = False
    hello_transitions = JUMPOINT_HELLO

    def __init__(
        self, clock: IReactorTime, settings: MuxSettings, handshake_timeout: float = 10.0
    ) -> None:
        self.clock = clock
        self.settings = settings
        self.handshake_timeout = handshake_timeout
        self.mux: Multiplexer | None = None
        self.handshake_timed_out = False
        self._handshake_timer: IDelayedCall | None = None
        self.hello: Lifecycle[ChannelState, ChannelEvent] = self.hello_transitions.start(
            ChannelState.HANDSHAKING
        )

    def peer_event(self, event: ChannelEvent, violation: str) -> None:
        """Move the hello lifecycle on C{event} the peer caused; out of turn: C{violation}."""
        if not self.hello.allows(event):
            raise ProtocolViolation(violation)
        self.hello.fire(event)

    def connectionMade(self) -> None:
        tune_transport(
            self.transport, self.settings.keepalive_interval, self.settings.keepalive_timeout
        )
        self._handshake_timer = self.clock.callLater(
            self.handshake_timeout, self._handshake_timed_out
        )

    def _handshake_timed_out(self) -> None:
        self._handshake_timer = None
        self.handshake_timed_out = True
        assert self.transport is not None
        self.transport.abortConnection()  # type: ignore[attr-defined]

    def _cancel_timer(self) -> None:
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        self._handshake_timer = None

    def handshakeCompleted(self) -> None:
        self._cancel_timer()
        self.handshake_done()
        transport = self.transport
        assert transport is not None
        negotiated = getattr(transport, "negotiatedProtocol", None)
        if negotiated != ALPN_PROTOCOL:
            self.log.warn(
                "closing TLS connection: ALPN protocol {alpn!r} is not {expected!r}",
                alpn=negotiated,
                expected=ALPN_PROTOCOL,
            )
            transport.abortConnection()  # type: ignore[attr-defined]
            return
        self.mux = Multiplexer(
            is_client=self.is_client, handler=self, clock=self.clock, settings=self.settings
        )
        self.mux.make_connection(transport)
        self.channel_started()

    def dataReceived(self, data: bytes) -> None:
        if self.mux is None:
            assert self.transport is not None
            self.transport.abortConnection()  # type: ignore[attr-defined]
            return
        self.mux.data_received(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        self.hello.fire(ChannelEvent.LOST)
        if self.mux is not None:
            self.mux.connection_lost(reason.getErrorMessage())
        else:
            peer = self.transport.getPeer() if self.transport is not None else None
            why = (
                f"not finished within {self.handshake_timeout:g}s"
                if self.handshake_timed_out
                else reason.getErrorMessage()
            )
            self.handshake_failed(f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}", why)
        self.channel_lost(reason)

    # -- for subclasses ----------------------------------------------------

    def handshake_done(self) -> None:
        """The TLS handshake completed (the peer is authenticated by its certificate)."""

    def handshake_failed(self, peer: str, reason: str) -> None:
        """The connection ended before its TLS handshake completed."""
        emit = self.log.info if self.is_client else self.log.warn
        emit("TLS handshake with {peer} failed: {reason}", peer=peer, reason=reason)

    def channel_started(self) -> None:
        """TLS is up and the multiplexer is running."""

    def channel_lost(self, reason: Failure) -> None:
        """The connection is gone (after L{MuxHandler.mux_closing}, if the mux had started)."""

    def control_received(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    def stream_requested(self, stream: Stream, payload: bytes) -> None:
        raise NotImplementedError

    def mux_closing(self, code: int, reason: str, by_peer: bool) -> None:
        """The multiplexer is closing the connection."""
