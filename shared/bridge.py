"""The bridge between one TCP connection and one multiplexed stream.

The same class serves both ends: on the console it wraps an accepted local
connection, on the Jumpoint the connection to the target.  Backpressure runs
both ways through Twisted's producer interfaces:

The stream side is a L{StreamTransport} (the stream as a Twisted transport)
with the bridge's L{_StreamSide} protocol on it; the TCP side is the
bridge's own transport.  Each transport is the other's producer:

* stream → socket: the stream transport is the registered producer of the
  TCP transport.  When the socket's buffer is full Twisted pauses it, which
  holds back the stream's credit, so the peer stops sending.
* socket → stream: the bridge's L{_SocketReader} is the registered producer
  of the stream transport.  When the stream has no credit (or the channel's
  TLS transport is full) it is paused, and the bridge stops reading its
  socket.

Half-close: end of input on the socket becomes FIN on the stream, and FIN
from the stream becomes a shutdown of writing on the socket.  The socket is
closed when both directions have ended, or aborted when the stream is reset.
That lifecycle is explicit: L{BridgeState}, moved by L{BridgeEvent}s along
L{BRIDGE_TRANSITIONS}; anything else raises L{IllegalTransition}.

What a bridge does with each event is its L{BridgeHandler}'s choice: the bridge
is composed, never subclassed.  The default handler, L{PLAIN_RELAY}, relays bytes
unchanged and ends each direction as TCP would; a kind with its own wire
protocol (SQL Server, Kubernetes) gives its own handler, which answers the same
hooks with the bridge's public actions (L{TcpBridge.send_to_stream},
L{TcpBridge.send_to_socket}, L{TcpBridge.end_stream}, ...) in its own order.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Protocol as Interface

from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer, ITCPTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from shared.lifecycle import Lifecycle, Transitions
from shared.protocol.frames import ErrorCode, describe_code
from shared.protocol.mux import Stream
from shared.protocol.stream_transport import StreamReset, StreamTransport


class BridgeTap(Interface):
    """Sees every byte a bridge relays (session recording on the Jumpoint)."""

    def from_socket(self, data: bytes) -> None:
        """Bytes read from the TCP connection, about to enter the stream."""

    def to_socket(self, data: bytes) -> None:
        """Bytes from the stream, about to be written to the TCP connection."""

    def closed(self, reset: bool) -> None:
        """The bridge ended (C{reset}: aborted rather than closed in order)."""


class BridgeState(enum.Enum):
    """Where a bridge is in its life (the half-close of the module docstring)."""

    CONNECTING = enum.auto()
    """The stream exists, the TCP connection not yet (stream data is buffered)."""
    CONNECTING_ENDED = enum.auto()
    """Still connecting, and the peer's FIN already came: replayed once connected."""
    OPEN = enum.auto()
    """Relaying both ways."""
    READ_CLOSED = enum.auto()
    """The socket's input ended (FIN sent on the stream); stream bytes still go to it."""
    WRITE_CLOSED = enum.auto()
    """The socket's writing side is shut (the peer's FIN); its input still flows."""
    CLOSING = enum.auto()
    """Both directions ended: the socket is being closed in order."""
    FINISHED = enum.auto()
    """Over: closed in order, reset, aborted, or never connected."""


class BridgeEvent(enum.Enum):
    """What moves a bridge from one L{BridgeState} to the next."""

    CONNECTED = enum.auto()
    """The TCP connection is made."""
    PEER_FIN = enum.auto()
    """FIN arrived on the stream (the socket's writing side is shut)."""
    WRITE_LOST = enum.auto()
    """Twisted reports the socket's writing side closed (also after our own shutdown)."""
    SOCKET_EOF = enum.auto()
    """The socket's input ended (FIN goes on the stream)."""
    RECONNECT = enum.auto()
    """A subclass replaces the TCP connection (the SQL Server reroute): connecting again."""
    FINISH = enum.auto()
    """The bridge ends: both directions closed in order, a reset, an abort, a failed dial."""


_B, _V = BridgeState, BridgeEvent
_LIVE = {_V.RECONNECT: _B.CONNECTING, _V.FINISH: _B.FINISHED}
BRIDGE_TRANSITIONS: Transitions[BridgeState, BridgeEvent] = Transitions(
    "bridge",
    BridgeState,
    BridgeEvent,
    {
        _B.CONNECTING: {
            _V.CONNECTED: _B.OPEN,
            _V.PEER_FIN: _B.CONNECTING_ENDED,
            _V.FINISH: _B.FINISHED,
        },
        _B.CONNECTING_ENDED: {_V.CONNECTED: _B.OPEN, _V.FINISH: _B.FINISHED},
        _B.OPEN: {
            _V.SOCKET_EOF: _B.READ_CLOSED,
            _V.PEER_FIN: _B.WRITE_CLOSED,
            _V.WRITE_LOST: _B.WRITE_CLOSED,
            **_LIVE,
        },
        _B.READ_CLOSED: {_V.PEER_FIN: _B.CLOSING, _V.WRITE_LOST: _B.CLOSING, **_LIVE},
        _B.WRITE_CLOSED: {
            _V.SOCKET_EOF: _B.CLOSING,
            _V.WRITE_LOST: _B.WRITE_CLOSED,  # the shutdown we asked for completed
            **_LIVE,
        },
        _B.CLOSING: {_V.WRITE_LOST: _B.CLOSING, **_LIVE},
        _B.FINISHED: {},
    },
)
"""Every move a bridge may make; anything else raises L{IllegalTransition}."""

_READ_ENDED = frozenset({BridgeState.READ_CLOSED, BridgeState.CLOSING})
_WRITE_ENDED = frozenset({BridgeState.WRITE_CLOSED, BridgeState.CLOSING})
_NOT_CONNECTED = frozenset(
    {BridgeState.CONNECTING, BridgeState.CONNECTING_ENDED, BridgeState.FINISHED}
)


class HalfClose:
    """A bridge's half-close: its L{BridgeState}, moved only along L{BRIDGE_TRANSITIONS}.

    The part of a bridge that owns the lifecycle; a bridge with its own idea of
    when a direction ends (the SQL Server and Kubernetes handlers) tells it here
    instead of touching the state.
    """

    def __init__(self) -> None:
        self.lifecycle = BRIDGE_TRANSITIONS.start(BridgeState.CONNECTING)
        self.fire: Callable[[BridgeEvent], BridgeState] = self.lifecycle.fire
        """Move on an event, or raise L{IllegalTransition} (the lifecycle's own C{fire},
        bound once: the bridge fires several events per connection)."""

    @property
    def state(self) -> BridgeState:
        return self.lifecycle.state

    @property
    def finished(self) -> bool:
        return self.lifecycle.state is BridgeState.FINISHED

    @property
    def read_ended(self) -> bool:
        """Whether the socket's input has ended (FIN sent on the stream)."""
        return self.lifecycle.state in _READ_ENDED

    @property
    def write_ended(self) -> bool:
        """Whether the socket's writing side is shut (the stream's FIN came)."""
        return self.lifecycle.state in _WRITE_ENDED

    def socket_ended(self) -> None:
        """The socket's input ended (once; nothing after the bridge finished)."""
        if not self.read_ended and not self.finished:
            self.fire(BridgeEvent.SOCKET_EOF)

    def reconnect(self) -> None:
        """A new TCP connection will replace the current one (the stream stays)."""
        if self.lifecycle.state not in _NOT_CONNECTED:
            self.fire(BridgeEvent.RECONNECT)


class BridgeHandler(Interface):
    """What a bridge does with each thing that happens to it (module docstring).

    Every hook gets the bridge; a handler answers with the bridge's public
    actions.  L{PLAIN_RELAY} is the plain answer to each hook.
    """

    @property
    def long_running(self) -> bool:
        """Whether the connection may stay silent for good (a watch, an upgrade)."""
        ...

    def connected(self, bridge: TcpBridge) -> None:
        """The TCP connection is made (the bridge relays what it held)."""

    def socket_data(self, bridge: TcpBridge, data: bytes) -> None:
        """Bytes read from the TCP connection."""

    def socket_ended(self, bridge: TcpBridge) -> None:
        """The TCP connection's input ended."""

    def socket_lost(self, bridge: TcpBridge, reason: Failure) -> None:
        """The TCP connection is gone."""

    def stream_data(self, bridge: TcpBridge, data: bytes) -> None:
        """Bytes from the stream."""

    def stream_ended(self, bridge: TcpBridge) -> None:
        """The stream's FIN came."""

    def stream_reset(self, bridge: TcpBridge, code: int, reason: str) -> None:
        """The peer reset the stream."""

    def connection_failed(self, bridge: TcpBridge, code: ErrorCode, reason: str) -> None:
        """The TCP connection could not be made (a refusal, a failed dial)."""

    def abort(self, bridge: TcpBridge, code: ErrorCode, reason: str) -> None:
        """Someone asked the bridge to end now (the session closes, the stream went away)."""

    def ended(self, bridge: TcpBridge) -> None:
        """The bridge is over (before its C{on_closed}): the handler's own clean-up."""


class PlainRelay:
    """The plain handler: bytes relayed unchanged, each direction ended as TCP does.

    Stateless: one instance, L{PLAIN_RELAY}, serves every plain bridge.  A kind's
    handler that changes only some hooks derives from it for the others.
    """

    @property
    def long_running(self) -> bool:
        """A plain TCP connection is judged by its traffic: never."""
        return False

    def connected(self, bridge: TcpBridge) -> None:
        pass

    def socket_data(self, bridge: TcpBridge, data: bytes) -> None:
        bridge.send_to_stream(data)

    def socket_ended(self, bridge: TcpBridge) -> None:
        bridge.end_stream()

    def socket_lost(self, bridge: TcpBridge, reason: Failure) -> None:
        bridge.close_after_socket(reason)

    def stream_data(self, bridge: TcpBridge, data: bytes) -> None:
        bridge.send_to_socket(data)

    def stream_ended(self, bridge: TcpBridge) -> None:
        bridge.end_socket_write()

    def stream_reset(self, bridge: TcpBridge, code: int, reason: str) -> None:
        bridge.abort_socket(code, reason)

    def connection_failed(self, bridge: TcpBridge, code: ErrorCode, reason: str) -> None:
        bridge.fail(code, reason)

    def abort(self, bridge: TcpBridge, code: ErrorCode, reason: str) -> None:
        bridge.abort_both(code, reason)

    def ended(self, bridge: TcpBridge) -> None:
        pass


PLAIN_RELAY: BridgeHandler = PlainRelay()
"""The handler of every bridge that is given none."""


@implementer(IHalfCloseableProtocol)
class _StreamSide(Protocol):
    """The bridge's protocol on its stream transport: tells the handler what the stream did."""

    def __init__(self, bridge: TcpBridge) -> None:
        self.bridge = bridge

    def dataReceived(self, data: bytes) -> None:
        bridge = self.bridge
        bridge.handler.stream_data(bridge, data)

    def readConnectionLost(self) -> None:
        bridge = self.bridge
        bridge.handler.stream_ended(bridge)

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        error = reason.value
        if isinstance(error, StreamReset):
            bridge = self.bridge
            bridge.handler.stream_reset(bridge, error.code, error.reason)
        # an orderly end (both FINs through) needs nothing: the socket closes on its own terms


@implementer(IPushProducer)
class _SocketReader:
    """What feeds the stream transport: the bridge reading its socket (paused when it is full)."""

    def __init__(self, bridge: TcpBridge) -> None:
        self.bridge = bridge

    def pauseProducing(self) -> None:
        self.bridge.pause_sending()

    def resumeProducing(self) -> None:
        self.bridge.resume_sending()

    def stopProducing(self) -> None:
        """The stream is over; the bridge's lifecycle closes the socket."""


@implementer(IHalfCloseableProtocol)
class TcpBridge(Protocol):
    """Relays bytes between a TCP connection and a stream (see module docstring).

    The bridge is the TCP connection's protocol; what it does with each event
    is its L{handler}'s choice (L{PLAIN_RELAY} by default).  The stream may start
    carrying data before the TCP connection exists (the Jumpoint connects to
    the target after the OPEN); until then data from the stream waits in a
    buffer bounded by the stream's credit window.

    @ivar close_reason: why the bridge ended, for statistics and logs.
    @ivar half_close: the half-close lifecycle (L{BridgeState}), the part that owns it.
    """

    def __init__(
        self,
        stream: Stream,
        on_closed: Callable[[TcpBridge], None] | None = None,
        handler: BridgeHandler = PLAIN_RELAY,
    ) -> None:
        self.stream = stream
        self.on_closed = on_closed
        self.handler = handler
        self.close_reason: str | None = None
        self.reset_code: int | None = None
        self._before_connect: list[bytes] | None = []
        self._sending_paused = False
        self.half_close = HalfClose()
        self.connected = False
        self.tap: BridgeTap | None = None
        self.stream_transport = StreamTransport.connect(stream, _StreamSide(self))
        self.stream_transport.registerProducer(_SocketReader(self), True)

    @property
    def long_running(self) -> bool:
        """Whether the connection may stay silent for good (a watch, an upgrade: its handler's)."""
        return self.handler.long_running

    # -- the lifecycle ---------------------------------------------------

    @property
    def lifecycle(self) -> Lifecycle[BridgeState, BridgeEvent]:
        return self.half_close.lifecycle

    @property
    def state(self) -> BridgeState:
        return self.half_close.state

    def drop_pending(self) -> None:
        """Forget the stream's bytes held while connecting (a handler that answers them itself)."""
        self._before_connect = None

    def forget_socket(self) -> None:
        """The TCP connection is gone for good or about to be replaced: write nothing to it."""
        self.transport = None

    # -- the TCP connection's protocol (Twisted calls these) --------------

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None
        if self.half_close.finished:
            transport.abortConnection()  # type: ignore[attr-defined]
            return
        ended_before_connect = self.half_close.lifecycle.state is BridgeState.CONNECTING_ENDED
        self.half_close.fire(BridgeEvent.CONNECTED)
        self.connected = True
        tcp = ITCPTransport(transport, None)
        if tcp is not None:
            tcp.setTcpNoDelay(True)
        transport.registerProducer(self.stream_transport, True)  # type: ignore[attr-defined]
        buffered, self._before_connect = self._before_connect, None
        self.stream.resume_receiving()
        if buffered:
            if self.tap is not None:
                for chunk in buffered:
                    self.tap.to_socket(chunk)
            transport.writeSequence(buffered)
        if self._sending_paused:
            transport.pauseProducing()  # type: ignore[attr-defined]
        if ended_before_connect:
            self.handler.stream_ended(self)  # the FIN that came while connecting
        self.handler.connected(self)

    def dataReceived(self, data: bytes) -> None:
        self.handler.socket_data(self, data)

    def readConnectionLost(self) -> None:
        self.handler.socket_ended(self)

    def writeConnectionLost(self) -> None:
        if self.half_close.finished:
            return
        self.half_close.fire(BridgeEvent.WRITE_LOST)
        self._maybe_close()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.handler.socket_lost(self, reason)

    # -- what the Jumpoint or the console asks of it ----------------------

    def wait_for_connection(self) -> None:
        """The TCP side is not connected yet: hold back credit until it is."""
        self.stream.pause_receiving()

    def connection_failed(self, code: ErrorCode, reason: str) -> None:
        """The TCP side could not be connected (the handler answers; plainly: reset the stream)."""
        self.handler.connection_failed(self, code, reason)

    def abort(self, code: ErrorCode, reason: str) -> None:
        """End both sides now (the handler answers; plainly: reset the stream, abort the socket)."""
        self.handler.abort(self, code, reason)

    # -- the actions a handler answers with ------------------------------------

    def send_to_stream(self, data: bytes) -> None:
        """Relay bytes (read from the socket, or the handler's own) to the stream."""
        if self.tap is not None:
            self.tap.from_socket(data)
        self.stream_transport.write(data)

    def send_to_socket(self, data: bytes) -> None:
        """Relay bytes from the stream to the socket (held until it is connected)."""
        if self._before_connect is not None:
            self._before_connect.append(data)
            return
        assert self.transport is not None
        if self.tap is not None:
            self.tap.to_socket(data)
        self.stream.write_to_socket(self.transport, data)

    def end_stream(self) -> None:
        """The socket's input ended: FIN on the stream (close when both directions ended)."""
        if self.half_close.finished:
            return
        self.half_close.fire(BridgeEvent.SOCKET_EOF)
        self.stream.end_write()
        self._maybe_close()

    def end_socket_write(self) -> None:
        """The stream's FIN: shut the socket's writing side after what is queued."""
        if self._before_connect is not None:
            if self.half_close.lifecycle.state is BridgeState.CONNECTING:
                self.half_close.fire(BridgeEvent.PEER_FIN)
            return
        transport = self.transport
        assert transport is not None
        self.stream.flush_socket(transport)
        if not self.half_close.write_ended and not self.half_close.finished:
            self.half_close.fire(BridgeEvent.PEER_FIN)
            # Twisted forgets a pending half-close when the buffer drains while a
            # registered producer is paused; no more data comes after FIN anyway.
            transport.unregisterProducer()  # type: ignore[attr-defined]
            transport.loseWriteConnection()  # type: ignore[attr-defined]
            self._maybe_close()

    def close_after_socket(self, reason: Failure) -> None:
        """The socket is gone: reset the stream unless both directions ended in order."""
        orderly = self.half_close.lifecycle.state is BridgeState.CLOSING
        if not self.stream.closed and not orderly:
            text = reason.getErrorMessage()
            self.stream.reset(ErrorCode.CANCEL, f"connection closed: {text}")
            self.close_reason = self.close_reason or f"aborted: {text}"
        self.finish()

    def abort_socket(self, code: int, reason: str) -> None:
        """The stream was reset: abort the socket after what is queued (or finish)."""
        self.reset_code = code
        self.close_reason = f"{describe_code(code)}: {reason}"
        if self.transport is not None:
            self.stream.flush_socket(self.transport)
            self.transport.abortConnection()  # type: ignore[attr-defined]
        else:
            self.finish()

    def fail(self, code: ErrorCode, reason: str) -> None:
        """The socket could not be connected: reset the stream with C{reason}, finish."""
        self.reset_code = code
        self.close_reason = f"{describe_code(code)}: {reason}"
        self.stream.reset(code, reason)
        self.finish()

    def abort_both(self, code: ErrorCode, reason: str) -> None:
        """Reset the stream and abort the socket now."""
        self.reset_code = code
        self.close_reason = f"{describe_code(code)}: {reason}"
        self.stream.reset(code, reason)
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]
        self.finish()

    # -- backpressure (the stream transport pauses the socket's reading) ----

    def pause_sending(self) -> None:
        self._sending_paused = True
        if self.transport is not None and self._before_connect is None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resume_sending(self) -> None:
        self._sending_paused = False
        if self.transport is not None and self._before_connect is None:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    # -- the end -------------------------------------------------------------

    def _maybe_close(self) -> None:
        if self.half_close.lifecycle.state is BridgeState.CLOSING and self.transport is not None:
            self.close_reason = self.close_reason or "closed"
            self.transport.loseConnection()

    def finish(self) -> None:
        """The bridge is over: tell the handler, the tap and C{on_closed} (once)."""
        if self.half_close.finished:
            return
        self.half_close.fire(BridgeEvent.FINISH)
        self._before_connect = None
        self.handler.ended(self)
        if self.tap is not None:
            aborted = (self.close_reason or "").startswith("aborted")
            self.tap.closed(self.reset_code is not None or aborted)
        if self.on_closed is not None:
            self.on_closed(self)
