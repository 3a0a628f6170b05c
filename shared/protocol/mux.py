"""The stream multiplexer: many flow-controlled streams over one byte channel.

Layers, bottom up (compare magic-wormhole's dilation and Twisted's HTTP/2):

* L{shared.protocol.frames.FrameParser} turns bytes into frames (size-limited, sans-IO);
* L{Multiplexer} owns the stream table, the keepalive and the round-robin
  writer; it is the L{IPushProducer} registered on the transport.  Streams
  with data to send take turns (one frame each) while the transport accepts
  data; when it is full, each stream queues up to
  L{MuxSettings.stream_queue_limit} bytes and then pauses its own source, so
  a busy stream cannot starve the others and memory stays bounded;
* L{Multiplexer.datagrams} (L{shared.protocol.datagrams.Datagrams}) is the
  channel's table of datagram flows and its bounded, drop-on-overflow
  queue of DATAGRAM frames, which have no credit.  While the transport
  accepts data a datagram is written at once; while it is paused, datagrams
  queue (and then drop), and the writer alternates turns: the datagram
  queue's turn sends up to L{frames.MAX_DATA_CHUNK} bytes of datagrams (at
  least one), a stream's turn one DATA frame of at most as many, so when
  both have a backlog each gets about half of the channel, and neither
  waits behind more than one turn of the other;
* L{Stream} is one flow-controlled stream with a credit window in each
  direction.  Its application (L{StreamApplication}) receives data, FIN and
  RESET, and is told to pause or resume sending.  Its lifecycle (open,
  half-closed either way, closing, closed) is explicit: L{StreamState}, moved
  by L{StreamEvent}s along L{STREAM_TRANSITIONS} (the table in
  docs/protocol.md, "Stream states").

Flow control (docs/protocol.md, "Flow control"): each side grants its peer a
credit window per stream.  A sender may only send as many DATA bytes as it has
credit; the receiver re-opens the window with WINDOW_UPDATE once its
application has consumed the data -- while the application has paused
reception (its own socket is full) consumed credit is held back.  Windows
start at L{MuxSettings.initial_window} and double, up to
L{MuxSettings.max_stream_window}, whenever the quarter window that triggers a
WINDOW_UPDATE was consumed within four round trips of the previous update, as
long as the sum of all windows stays under
L{MuxSettings.connection_window_cap}.  A stream that exceeds its credit is reset;
framing errors drop the whole connection.

Bounds on what a peer can make us hold: every frame written while the
transport is paused (RESETs answering OPENs, PING ACKs, WINDOW_UPDATEs,
control replies...) counts against L{MuxSettings.control_buffer_cap}; past
it the peer is evidently not reading and the connection is dropped.  The
keepalive drops a connection on which nothing has arrived for
L{MuxSettings.keepalive_timeout}.  A dead or non-reading peer's connection is
aborted (never closed politely: a polite TLS close waits for the peer's
flush and close_notify), and a polite close that has not finished within
L{MuxSettings.close_timeout} is aborted too.
"""

from __future__ import annotations

import enum
import json
import math
import struct
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime, ITransport
from twisted.logger import Logger
from zope.interface import implementer

from shared.lifecycle import Lifecycle, Transitions
from shared.protocol import frames
from shared.protocol.datagrams import DatagramLimits, Datagrams
from shared.protocol.frames import ErrorCode, Flag, Frame, FrameError, FrameType
from shared.protocol.sockets import WriteBatch


@dataclass(frozen=True)
class MuxSettings:
    """Tunables of one multiplexed connection (docs/protocol.md, "Limits")."""

    initial_window: int = 256 * 1024
    max_stream_window: int = 8 * 1024 * 1024
    connection_window_cap: int = 64 * 1024 * 1024
    max_streams: int = 256
    keepalive_interval: float = 15.0
    keepalive_timeout: float = 45.0
    stream_queue_limit: int = 64 * 1024
    max_pending_per_stream: int = 1024 * 1024
    control_buffer_cap: int = 1024 * 1024
    default_rtt: float = 0.05
    close_timeout: float = 5.0
    max_flows: int = 256
    datagram_queue_limit: int = 128 * 1024
    datagram_queue_length: int = 256


class StreamApplication(Protocol):
    """What a stream tells its application (a local or remote socket bridge)."""

    def stream_data(self, data: bytes) -> None:
        """Bytes arrived from the peer."""

    def stream_ended(self) -> None:
        """The peer will send no more data (half-close)."""

    def stream_reset(self, code: int, reason: str) -> None:
        """The stream was aborted by the peer or by the multiplexer."""

    def pause_sending(self) -> None:
        """Stop calling L{Stream.write} until L{resume_sending}."""

    def resume_sending(self) -> None:
        """Writing may continue."""


class MuxHandler(Protocol):
    """What the multiplexer tells its owner (the channel protocol)."""

    def control_received(self, message: dict[str, Any]) -> None:
        """A control message arrived on stream 0."""

    def stream_requested(self, stream: Stream, payload: bytes) -> None:
        """The peer opened C{stream}; attach an application or reset it."""

    def mux_closing(self, code: int, reason: str, by_peer: bool) -> None:
        """The connection is going away; the transport will be closed."""


class StreamState(enum.StrEnum):
    """A stream's lifecycle (docs/protocol.md, "Streams" and "Half-close").

    The values are the names used in logs and statistics.
    """

    OPEN = "open"
    FIN_QUEUED = "half-closed (local), FIN queued"
    """The application ended its direction; the FIN waits behind queued data."""
    HALF_CLOSED_LOCAL = "half-closed (local)"
    """Our FIN is sent; the peer may still send."""
    HALF_CLOSED_REMOTE = "half-closed (remote)"
    """The peer's FIN arrived; we may still send."""
    CLOSING = "closing"
    """Both directions ended, our FIN still waits behind queued data."""
    CLOSED = "closed"
    """Forgotten: both FINs went through, or the stream was reset."""


class StreamEvent(enum.Enum):
    """What moves a stream from one L{StreamState} to the next."""

    END_WRITE = enum.auto()
    """The application ends its direction (L{Stream.end_write})."""
    FIN_SENT = enum.auto()
    """Our FIN is written, after every queued byte."""
    FIN_RECEIVED = enum.auto()
    """The peer's FIN arrived."""
    DATA_RECEIVED = enum.auto()
    """DATA with payload arrived (allowed only while the peer's direction is open)."""
    RESET = enum.auto()
    """A RESET was sent or received, or the connection went away."""


_S, _E = StreamState, StreamEvent
STREAM_TRANSITIONS: Transitions[StreamState, StreamEvent] = Transitions(
    "stream",
    StreamState,
    StreamEvent,
    {
        _S.OPEN: {
            _E.END_WRITE: _S.FIN_QUEUED,
            _E.FIN_RECEIVED: _S.HALF_CLOSED_REMOTE,
            _E.DATA_RECEIVED: _S.OPEN,
            _E.RESET: _S.CLOSED,
        },
        _S.FIN_QUEUED: {
            _E.FIN_SENT: _S.HALF_CLOSED_LOCAL,
            _E.FIN_RECEIVED: _S.CLOSING,
            _E.DATA_RECEIVED: _S.FIN_QUEUED,
            _E.RESET: _S.CLOSED,
        },
        _S.HALF_CLOSED_LOCAL: {
            _E.FIN_RECEIVED: _S.CLOSED,
            _E.DATA_RECEIVED: _S.HALF_CLOSED_LOCAL,
            _E.RESET: _S.CLOSED,
        },
        _S.HALF_CLOSED_REMOTE: {
            _E.END_WRITE: _S.CLOSING,
            _E.RESET: _S.CLOSED,
        },
        _S.CLOSING: {
            _E.FIN_SENT: _S.CLOSED,
            _E.RESET: _S.CLOSED,
        },
        _S.CLOSED: {},
    },
)
"""Every move a stream may make; anything else raises L{IllegalTransition}.

DATA after the peer's FIN is not in the table: the receiver resets the stream
with C{PROTOCOL_ERROR}.  What the API tolerates as a no-op (a write or an
C{end_write} after the direction ended, a second FIN, a reset of a closed
stream) is checked before an event is fired, never fired.
"""


@dataclass
class Stream:
    """One flow-controlled stream.  Created only by L{Multiplexer}.

    Outbound data waits in a per-stream queue until the stream has credit
    and the multiplexer's round-robin writer gets to it; the application is
    paused while that queue holds L{MuxSettings.stream_queue_limit} bytes or
    more, so one busy stream cannot crowd out the others.
    """

    mux: Multiplexer
    stream_id: int
    send_window: int
    recv_window: int
    app: StreamApplication | None = None
    recv_credit: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    on_closed_in_order: Callable[[], None] | None = None
    """Called once both FINs have gone through (not on a reset: the application hears that)."""
    _lifecycle: Lifecycle[StreamState, StreamEvent] = field(
        default_factory=lambda: STREAM_TRANSITIONS.start(StreamState.OPEN)
    )
    _reset_before_attach: tuple[int, str] | None = None
    _queue: deque[bytes | memoryview] = field(default_factory=deque)
    _queued: int = 0
    _scheduled: bool = False
    _app_told_paused: bool = False
    _receive_paused: bool = False
    _unacked: int = 0
    _held: int = 0
    _epoch: float = 0.0

    @property
    def state(self) -> StreamState:
        return self._lifecycle.state

    @property
    def closed(self) -> bool:
        """Whether the stream is over (and forgotten by its multiplexer)."""
        return self._lifecycle.state is StreamState.CLOSED

    @property
    def local_fin(self) -> bool:
        """Whether our direction has ended (FIN queued or sent, or the stream closed)."""
        return self._lifecycle.state in _LOCAL_ENDED

    @property
    def remote_fin(self) -> bool:
        """Whether the peer's direction has ended (its FIN arrived, or the stream closed)."""
        return self._lifecycle.state in _REMOTE_ENDED

    def _move(self, event: StreamEvent) -> None:
        """Fire C{event}; a stream that gets to CLOSED is cleaned up and forgotten."""
        if self._lifecycle.fire(event) is StreamState.CLOSED:
            self._queue.clear()
            self._queued = 0
            self.mux._stream_finished(self)

    @property
    def queued_bytes(self) -> int:
        """Bytes written by the application and not yet sent."""
        return self._queued

    @property
    def receive_paused(self) -> bool:
        """Whether the application holds back credit (its socket is full)."""
        return self._receive_paused

    # -- the application's side ------------------------------------------

    def attach(self, app: StreamApplication) -> None:
        """Connect the application; it must be attached before the stream sees traffic.

        A stream that was reset before it had an application (one the
        multiplexer could not open) tells the application at once.
        """
        self.app = app
        pending, self._reset_before_attach = self._reset_before_attach, None
        if pending is not None:
            app.stream_reset(*pending)
            return
        self._update_app_pause()

    def write(self, data: bytes) -> None:
        """Queue C{data} for sending; it goes out as credit and the writer's turn allow."""
        size = len(data)
        if self._lifecycle.state not in _WRITABLE or not size:
            return
        self.bytes_sent += size
        mux = self.mux
        if (
            not self._queued
            and size <= self.send_window
            and size <= frames.MAX_DATA_CHUNK
            and mux._can_write_now()
        ):
            self.send_window -= size
            mux._write(frames.HEADER.pack(FrameType.DATA, 0, self.stream_id, size) + data)
            return
        self._queue.append(data)
        self._queued += size
        if self.send_window > 0:
            mux._schedule(self)
            if self.state == StreamState.CLOSED:  # the writer may have reset it
                return
        if self._queued > mux.settings.max_pending_per_stream:
            self.reset(ErrorCode.LIMIT, "sender ignored backpressure")
            self._notify_reset(ErrorCode.LIMIT, "the application ignored backpressure")
            return
        self._update_app_pause()

    def end_write(self) -> None:
        """Half-close: send FIN once queued data is out."""
        if self.local_fin:
            return
        self._move(StreamEvent.END_WRITE)
        if not self._queued:
            self._send_fin()

    def reset(self, code: int, reason: str) -> None:
        """Abort the stream and tell the peer why."""
        if self.closed:
            return
        self.mux._write_frame(
            FrameType.RESET, 0, self.stream_id, frames.encode_reason(code, reason)
        )
        self._finish()

    def pause_receiving(self) -> None:
        """The application cannot take more data: hold back credit."""
        self._receive_paused = True

    def resume_receiving(self) -> None:
        """The application has drained its buffer: release held credit."""
        if not self._receive_paused:
            return
        self._receive_paused = False
        held, self._held = self._held, 0
        if held:
            self._consumed(held)

    def write_to_socket(self, transport: object, data: bytes) -> None:
        """Write C{data}, which came from this stream, to a local socket.

        While the multiplexer handles a read event the bytes wait in its
        write batch, so that all the frames of one read reach each socket in
        one system call; outside an event they are written at once.
        """
        self.mux._writes.write(transport, data)

    def flush_socket(self, transport: object) -> None:
        """Write out now what L{write_to_socket} holds for C{transport}.

        Call it before closing, half-closing or replacing the socket, so that
        the bytes keep their order with the FIN or the reset.
        """
        self.mux._writes.flush(transport)

    # -- the multiplexer's side ------------------------------------------

    def _send_some(self, limit: int) -> None:
        """Send one DATA frame of at most C{limit} bytes (the writer's turn)."""
        size = min(limit, self.send_window, self._queued)
        if size > 0:
            queue = self._queue
            head = queue[0]
            if len(head) <= size:
                queue.popleft()
                size = len(head)
                chunk: bytes | memoryview = head
            else:
                view = head if isinstance(head, memoryview) else memoryview(head)
                chunk, queue[0] = view[:size], view[size:]
            self.send_window -= size
            self._queued -= size
            self.mux._write(frames.HEADER.pack(FrameType.DATA, 0, self.stream_id, size) + chunk)
        if not self._queued:
            if self._lifecycle.state in _FIN_WAITING:
                self._send_fin()
        elif self.send_window > 0:
            self.mux._schedule(self)
        self._update_app_pause()

    def _deliver(self, data: bytes) -> None:
        if self.app is None:
            self.reset(ErrorCode.INTERNAL_ERROR, "stream has no application")
            return
        self.app.stream_data(data)
        if self._receive_paused:
            self._held += len(data)
        else:
            self._consumed(len(data))

    def _consumed(self, amount: int) -> None:
        self._unacked += amount
        if self._unacked < self.recv_window // 4 or self._lifecycle.state not in _RECEIVING:
            return
        increment = self._unacked
        self._unacked = 0
        now = self.mux.clock.seconds()
        grow = self.mux._grant_growth(self, now - self._epoch)
        self._epoch = now
        self.recv_credit += increment + grow
        self.mux._send_window_update(self.stream_id, increment + grow)

    def _send_fin(self) -> None:
        self.mux._send_fin(self.stream_id)
        self._move(StreamEvent.FIN_SENT)
        if self.on_closed_in_order is not None and self.closed:
            self.on_closed_in_order()

    def _data_received(self, data: bytes) -> None:
        if self._lifecycle.state not in _RECEIVING:
            self.reset(ErrorCode.PROTOCOL_ERROR, "DATA after FIN")
            self._notify_reset(ErrorCode.PROTOCOL_ERROR, "the peer sent DATA after FIN")
            return
        if len(data) > self.recv_credit:
            self.reset(ErrorCode.FLOW_CONTROL_ERROR, "peer sent more than its credit window")
            self._notify_reset(ErrorCode.FLOW_CONTROL_ERROR, "peer exceeded its credit window")
            return
        self.recv_credit -= len(data)
        self.bytes_received += len(data)
        self._deliver(data)

    def _fin_received(self) -> None:
        if self.remote_fin:
            return  # a second FIN is ignored
        self._move(StreamEvent.FIN_RECEIVED)
        in_order = self.closed  # both FINs through (the application may reset it below)
        if self.app is not None:
            self.app.stream_ended()
        if in_order and self.on_closed_in_order is not None:
            self.on_closed_in_order()  # after the application heard the FIN

    def _window_update(self, increment: int) -> None:
        if increment == 0 or self.send_window + increment > 2**31 - 1:
            self.reset(ErrorCode.FLOW_CONTROL_ERROR, "invalid window increment")
            self._notify_reset(ErrorCode.FLOW_CONTROL_ERROR, "peer sent an invalid window update")
            return
        self.send_window += increment
        if self._queued:
            self.mux._schedule(self)

    def _update_app_pause(self) -> None:
        should_pause = self._queued >= self.mux.settings.stream_queue_limit
        if should_pause == self._app_told_paused or self.app is None or self.closed:
            return
        self._app_told_paused = should_pause
        if should_pause:
            self.app.pause_sending()
        else:
            self.app.resume_sending()

    def _notify_reset(self, code: int, reason: str) -> None:
        app = self.app
        self._finish()
        if app is not None:
            app.stream_reset(code, reason)
        else:
            self._reset_before_attach = (code, reason)

    def _finish(self) -> None:
        if not self.closed:
            self._move(StreamEvent.RESET)


_LOCAL_ENDED = frozenset(
    {StreamState.FIN_QUEUED, StreamState.HALF_CLOSED_LOCAL, StreamState.CLOSING, StreamState.CLOSED}
)
_REMOTE_ENDED = frozenset({StreamState.HALF_CLOSED_REMOTE, StreamState.CLOSING, StreamState.CLOSED})
_FIN_WAITING = frozenset({StreamState.FIN_QUEUED, StreamState.CLOSING})
_WRITABLE = frozenset(set(StreamState) - _LOCAL_ENDED)
_RECEIVING = STREAM_TRANSITIONS.allowing(StreamEvent.DATA_RECEIVED)
"""The states in which the peer may still send DATA (the table's DATA_RECEIVED)."""


_PING = struct.Struct("!d")
# The flags as plain ints: C{int & Flag.X} runs IntFlag's Python operator, once per frame.
_FIN_BIT = int(Flag.FIN)
_ACK_BIT = int(Flag.ACK)

HELD_WRITES_LIMIT = 64 * 1024
"""Most bytes of frames L{Multiplexer.hold_writes} collects before writing them out anyway."""


@implementer(IPushProducer)
class Multiplexer:
    """The multiplexer of one channel; see the module docstring."""

    log = Logger()

    def __init__(
        self,
        *,
        is_client: bool,
        handler: MuxHandler,
        clock: IReactorTime,
        settings: MuxSettings | None = None,
        on_rtt: Callable[[float], None] | None = None,
    ) -> None:
        self.settings = settings or MuxSettings()
        self.clock = clock
        self.handler = handler
        self.is_client = is_client
        self.streams: dict[int, Stream] = {}
        self.transport: ITransport | None = None
        self.parser = frames.FrameParser()
        self.established = False
        self.closing = False
        self.srtt: float | None = None
        self._on_rtt = on_rtt
        self._next_stream_id = 1 if is_client else 2
        self._highest_peer_stream = 0
        self._paused = False
        self._ready: deque[Stream] = deque()
        self._flushing = False
        self._writes = WriteBatch()
        self._bytes_while_paused = 0
        self._total_windows = 0
        self._keepalive_call: IDelayedCall | None = None
        self.streams_at_close = 0
        """Streams that were open when the channel closed (reset with it)."""
        self._ping_deadline: IDelayedCall | None = None
        self._abort_call: IDelayedCall | None = None
        self._ping_outstanding = False
        self._last_heard = 0.0
        self._datagrams_next = True
        """Whose turn is next in the writer when both datagrams and streams wait."""
        self._holds = 0
        self._held: list[bytes] = []
        self._held_bytes = 0
        self.datagrams = Datagrams(
            DatagramLimits(
                max_flows=self.settings.max_flows,
                queue_bytes=self.settings.datagram_queue_limit,
                queue_datagrams=self.settings.datagram_queue_length,
            ),
            write=self._write,
            writable=self._datagrams_writable,
            odd_ids=is_client,
            hold=self.hold_writes,
            release=self.release_writes,
        )

    # -- wiring ----------------------------------------------------------

    def is_closed(self) -> bool:
        """Whether the connection is closing or closed (no more frames are handled)."""
        return self.closing

    def make_connection(self, transport: ITransport) -> None:
        """Start writing to C{transport} and register as its producer."""
        self.transport = transport
        transport.registerProducer(self, True)  # type: ignore[attr-defined]

    def establish(self) -> None:
        """The peer passed the hello exchange: raise the frame limit, allow streams."""
        self.established = True
        self.parser.raise_limit()

    @property
    def bytes_while_paused(self) -> int:
        """Bytes written since the transport paused (counted against the control cap)."""
        return self._bytes_while_paused

    def start_keepalive(self) -> None:
        """Ping every keepalive interval; drop the connection when the peer falls silent.

        The deadline runs from the last bytes received: a live peer answers
        each ping within a round trip, so nothing heard for
        L{MuxSettings.keepalive_timeout} means the link or the peer is dead.
        """
        if self.closing or self._ping_deadline is not None:
            return
        self._last_heard = self.clock.seconds()
        self._send_ping()
        if not self.closing:
            self._ping_deadline = self.clock.callLater(
                self.settings.keepalive_timeout, self._check_alive
            )

    # -- inbound ---------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Feed bytes from the transport; protocol errors close the connection."""
        if self.closing:
            return
        self._last_heard = self.clock.seconds()
        outer = self._begin_event()
        try:
            for frame in self.parser.feed(data):
                if self.is_closed():
                    return
                self._frame_received(frame)
        except FrameError as error:
            self.log.warn("closing channel: protocol error: {reason}", reason=error.reason)
            self.go_away(error.code, error.reason)
        finally:
            if outer:
                self._end_event()

    def _frame_received(self, frame: Frame) -> None:
        kind = frame.type
        if kind is FrameType.DATAGRAM:  # first: the network tunnel's every packet
            if not self.established:
                raise FrameError(ErrorCode.PROTOCOL_ERROR, "DATAGRAM before the hello exchange")
            self.datagrams.frame_received(frame.stream_id, frame.payload)
        elif kind is FrameType.DATA:
            stream = self.streams.get(frame.stream_id)
            if stream is None:
                self._check_known(frame)
                return
            if frame.payload:
                stream._data_received(frame.payload)
            if frame.flags & _FIN_BIT and not stream.closed:
                stream._fin_received()
        elif kind is FrameType.WINDOW_UPDATE:
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                stream._window_update(frames.decode_window_increment(frame.payload))
            else:
                self._check_known(frame)
        elif kind is FrameType.OPEN:
            self._open_received(frame)
        elif kind is FrameType.RESET:
            code, reason = frames.decode_reason(frame.payload)
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                stream._notify_reset(code, reason)
            else:
                self._check_known(frame)
        elif kind is FrameType.PING:
            self._ping_received(frame)
        elif kind is FrameType.GOAWAY:
            code, reason = frames.decode_reason(frame.payload)
            self._close(code, reason, by_peer=True)
        elif kind is FrameType.CONTROL:
            self._control_received(frame.payload)

    def _check_known(self, frame: Frame) -> None:
        """Frames for streams that never existed are a protocol error."""
        peer_parity = 0 if self.is_client else 1
        own = frame.stream_id % 2 != peer_parity
        highest = self._next_stream_id - 2 if own else self._highest_peer_stream
        if frame.stream_id > highest:
            raise FrameError(
                ErrorCode.PROTOCOL_ERROR,
                f"{frame.type.name} frame for stream {frame.stream_id}, which was never opened",
            )

    def _open_received(self, frame: Frame) -> None:
        if not self.established:
            raise FrameError(ErrorCode.PROTOCOL_ERROR, "OPEN before the hello exchange")
        stream_id = frame.stream_id
        expected_parity = 0 if self.is_client else 1
        if stream_id % 2 != expected_parity or stream_id <= self._highest_peer_stream:
            raise FrameError(
                ErrorCode.PROTOCOL_ERROR, f"OPEN with an invalid stream id {stream_id}"
            )
        self._highest_peer_stream = stream_id
        stream = self._new_stream(stream_id)
        if len(self.streams) > self.settings.max_streams:
            self.log.warn(
                "stream {stream_id} refused: limit of {limit} connections reached",
                stream_id=stream_id,
                limit=self.settings.max_streams,
            )
            stream.reset(
                ErrorCode.LIMIT,
                f"the session already carries {self.settings.max_streams} connections",
            )
            return
        self.handler.stream_requested(stream, frame.payload)

    def _ping_received(self, frame: Frame) -> None:
        if frame.flags & _ACK_BIT:
            if not self._ping_outstanding:
                return  # unsolicited: not ours to measure
            self._ping_outstanding = False
            (sent,) = _PING.unpack(frame.payload)
            rtt = self.clock.seconds() - sent
            if not math.isfinite(rtt) or not 0 <= rtt <= self.settings.keepalive_timeout:
                return
            self.srtt = rtt if self.srtt is None else 0.875 * self.srtt + 0.125 * rtt
            if self._on_rtt is not None:
                self._on_rtt(rtt)
        else:
            self._write_control_frame(FrameType.PING, Flag.ACK, frame.payload)

    def _control_received(self, payload: bytes) -> None:
        try:
            message = json.loads(payload)
        except (ValueError, RecursionError):
            raise FrameError(ErrorCode.PROTOCOL_ERROR, "CONTROL payload is not JSON") from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise FrameError(ErrorCode.PROTOCOL_ERROR, "CONTROL message without a type")
        self.handler.control_received(message)

    # -- outbound --------------------------------------------------------

    def open_stream(self, payload: bytes) -> Stream:
        """Open a new stream towards the peer; C{payload} says what to connect it to.

        Ids are never reused: once this side has used every id of its parity
        up to C{MAX_STREAM_ID}, the channel can carry no new stream.  It is
        then closed with GOAWAY C{LIMIT}, and the stream returned is already
        reset (its application hears so when it attaches); no OPEN is sent.
        """
        stream_id = self._next_stream_id
        if stream_id > frames.MAX_STREAM_ID:
            reason = "the channel has used every stream id"
            if not self.closing:
                self.log.warn("closing channel: {reason}", reason=reason)
                self.go_away(ErrorCode.LIMIT, reason)
            refused = self._unregistered_stream(stream_id)
            refused._notify_reset(ErrorCode.LIMIT, reason)
            return refused
        self._next_stream_id += 2
        stream = self._new_stream(stream_id)
        self._write_frame(FrameType.OPEN, 0, stream_id, payload)
        return stream

    def send_control(self, message: dict[str, Any]) -> None:
        """Send one control message on stream 0."""
        payload = json.dumps(message, separators=(",", ":")).encode("utf-8")
        if len(payload) > frames.MAX_CONTROL_PAYLOAD:
            raise ValueError("control message too large")
        self._write_control_frame(FrameType.CONTROL, 0, payload)

    def go_away(self, code: int, reason: str, *, abort: bool = False) -> None:
        """Tell the peer why the connection closes, then close it.

        With C{abort} (the peer is dead or does not read) the transport is
        aborted at once instead of closed politely.
        """
        if self.closing:
            return
        goaway = frames.encode_frame(FrameType.GOAWAY, 0, 0, frames.encode_reason(code, reason))
        if self.transport is not None:
            self._write_held()
            self.transport.write(goaway)  # exempt from the cap: the last frame
        self._close(code, reason, by_peer=False, abort=abort)

    def _can_write_now(self) -> bool:
        """Whether a stream may write directly (nothing is waiting for its turn)."""
        return (
            not self._paused and not self._ready and not self.datagrams.queued and not self.closing
        )

    def _datagrams_writable(self) -> bool:
        """Whether a DATAGRAM frame may be written now (else it queues or drops)."""
        return not self._paused and not self.closing

    def _schedule(self, stream: Stream) -> None:
        """Give C{stream} a turn in the round-robin writer, and run the writer."""
        if not stream._scheduled:
            stream._scheduled = True
            self._ready.append(stream)
        self._run_writer()

    def _run_writer(self) -> None:
        """Send in turns until the transport is full: one frame per waiting stream,
        alternating with turns of the datagram queue (see the module docstring).
        """
        if self._flushing:
            return
        self._flushing = True
        outer = self._begin_event()
        try:
            ready = self._ready
            datagrams = self.datagrams
            while (ready or datagrams.queued) and not self._paused and not self.closing:
                if datagrams.queued and (self._datagrams_next or not ready):
                    self._datagrams_next = False
                    datagrams.send_turn(frames.MAX_DATA_CHUNK)
                    continue
                stream = ready.popleft()
                stream._scheduled = False
                if not stream.closed:
                    self._datagrams_next = True
                    stream._send_some(frames.MAX_DATA_CHUNK)
        finally:
            self._flushing = False
            if outer:
                self._end_event()

    def _send_fin(self, stream_id: int) -> None:
        self._write_frame(FrameType.DATA, Flag.FIN, stream_id, b"")

    def _send_window_update(self, stream_id: int, increment: int) -> None:
        self._write_control_frame(
            FrameType.WINDOW_UPDATE, 0, struct.pack("!I", increment), stream_id
        )

    def _write_frame(
        self, frame_type: FrameType, flags: int, stream_id: int, payload: bytes
    ) -> None:
        self._write(frames.encode_frame(frame_type, flags, stream_id, payload))

    def _write_control_frame(
        self, frame_type: FrameType, flags: int, payload: bytes, stream_id: int = 0
    ) -> None:
        """Write a frame that bypasses flow control (counted by L{_write} while paused)."""
        self._write(frames.encode_frame(frame_type, flags, stream_id, payload))

    def _write(self, data: bytes) -> None:
        """Write to the transport; while it is paused, every byte counts against the cap.

        Queued DATA waits in its stream while the transport is paused, so
        what is written then are the frames outside flow control, most of
        them answers to the peer (RESET for its OPENs, PING ACK, WINDOW_UPDATE,
        control replies): a peer that sends and does not read would make
        them pile up without end.
        """
        if self.transport is None or self.closing:
            return
        if self._paused:
            if self._held:  # written before the pause: they go first
                self._write_held()
            if self._bytes_while_paused + len(data) > self.settings.control_buffer_cap:
                reason = "the peer does not read what it is sent"
                self.log.warn("closing channel: {reason}", reason=reason)
                self.go_away(ErrorCode.LIMIT, reason, abort=True)
                return
            self._bytes_while_paused += len(data)
        elif self._holds:
            self._held.append(data)
            self._held_bytes += len(data)
            if self._held_bytes >= HELD_WRITES_LIMIT:
                self._write_held()
            return
        self.transport.write(data)

    def hold_writes(self) -> None:
        """Collect the frames written from now on, until as many L{release_writes}.

        A burst of datagrams (one TUN read turn) then leaves as one TLS write,
        a few records and one system call, instead of one of each per frame;
        the receiver decrypts a few records instead of one per datagram.  At
        most L{HELD_WRITES_LIMIT} bytes are held: beyond, they are written out
        (and the transport may pause), so nothing grows; order is kept.
        """
        self._holds += 1

    def release_writes(self) -> None:
        """End one L{hold_writes}; the last one writes out what was collected."""
        if self._holds <= 0:
            raise RuntimeError("release_writes without hold_writes")
        self._holds -= 1
        if not self._holds and self._held:
            self._write_held()

    @contextmanager
    def holding_writes(self) -> Iterator[None]:
        """L{hold_writes} for the duration of a C{with} block."""
        self.hold_writes()
        try:
            yield
        finally:
            self.release_writes()

    def _write_held(self) -> None:
        held, self._held = self._held, []
        self._held_bytes = 0
        if self.transport is not None and held:
            self.transport.write(held[0] if len(held) == 1 else b"".join(held))

    def _begin_event(self) -> bool:
        """Start collecting writes; C{False} if an outer event already collects them."""
        if self._writes.open:
            return False
        self._writes.open = True
        return True

    def _end_event(self) -> None:
        """Hand everything the event wrote to local sockets to the kernel: one call per socket."""
        self._writes.open = False
        self._writes.flush_all()

    # -- streams ---------------------------------------------------------

    def _unregistered_stream(self, stream_id: int) -> Stream:
        """A stream with the initial windows, not (yet) in the table of streams."""
        window = self.settings.initial_window
        return Stream(
            mux=self,
            stream_id=stream_id,
            send_window=window,
            recv_window=window,
            recv_credit=window,
        )

    def _new_stream(self, stream_id: int) -> Stream:
        stream = self._unregistered_stream(stream_id)
        stream._epoch = self.clock.seconds()
        self.streams[stream_id] = stream
        self._total_windows += stream.recv_window
        return stream

    def _grant_growth(self, stream: Stream, elapsed: float) -> int:
        """How much to grow C{stream}'s receive window, given how fast it was consumed."""
        settings = self.settings
        rtt = self.srtt if self.srtt is not None else settings.default_rtt
        if elapsed > 4 * max(rtt, 0.001) or stream.recv_window >= settings.max_stream_window:
            return 0
        growth = min(stream.recv_window, settings.max_stream_window - stream.recv_window)
        if self._total_windows + growth > settings.connection_window_cap:
            return 0
        stream.recv_window += growth
        self._total_windows += growth
        return growth

    def _stream_finished(self, stream: Stream) -> None:
        if self.streams.pop(stream.stream_id, None) is not None:
            self._total_windows -= stream.recv_window

    # -- keepalive -------------------------------------------------------

    def _send_ping(self) -> None:
        self._keepalive_call = None
        if self.closing:
            return
        if not self._ping_outstanding:
            self._ping_outstanding = True
            self._write_control_frame(FrameType.PING, 0, _PING.pack(self.clock.seconds()))
            if self.is_closed():  # the control-frame cap may have closed it
                return
        self._keepalive_call = self.clock.callLater(
            self.settings.keepalive_interval, self._send_ping
        )

    def _check_alive(self) -> None:
        self._ping_deadline = None
        if self.closing:
            return
        timeout = self.settings.keepalive_timeout
        silent = self.clock.seconds() - self._last_heard
        if silent < timeout:
            self._ping_deadline = self.clock.callLater(timeout - silent, self._check_alive)
            return
        reason = f"no answer to a keepalive ping within {timeout:g}s"
        self.log.warn("closing channel: {reason}", reason=reason)
        self.go_away(ErrorCode.KEEPALIVE_TIMEOUT, reason, abort=True)

    # -- closing ---------------------------------------------------------

    def connection_lost(self, reason: str) -> None:
        """The transport is gone: reset every stream locally."""
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
        self._close(ErrorCode.CANCEL, reason, by_peer=True, transport_gone=True)

    def _close(
        self,
        code: int,
        reason: str,
        *,
        by_peer: bool,
        transport_gone: bool = False,
        abort: bool = False,
    ) -> None:
        if self.closing:
            return
        if transport_gone or abort:
            self._held, self._held_bytes = [], 0  # they could not be sent any more
        else:
            self._write_held()
        self.closing = True
        self.streams_at_close = len(self.streams)
        for call in (self._keepalive_call, self._ping_deadline):
            if call is not None and call.active():
                call.cancel()
        self._keepalive_call = self._ping_deadline = None
        for stream in list(self.streams.values()):
            stream._notify_reset(code, reason)
        self.datagrams.close()
        self.handler.mux_closing(code, reason, by_peer)
        transport = self.transport
        if transport is None or transport_gone:
            return
        transport.unregisterProducer()  # type: ignore[attr-defined]
        if abort:
            transport.abortConnection()  # type: ignore[attr-defined]
            return
        transport.loseConnection()
        self._abort_call = self.clock.callLater(self.settings.close_timeout, self._abort)

    def _abort(self) -> None:
        """The polite close did not finish in time (a dead peer): abort the transport."""
        self._abort_call = None
        if self.transport is not None:
            self.log.info("closing channel: the peer did not finish the close; aborting")
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # -- IPushProducer (the transport tells us it is full or drained) ----

    def pauseProducing(self) -> None:
        """The transport is full: streams queue (each up to its limit) until it drains."""
        if self._paused:
            return
        self._paused = True
        self._bytes_while_paused = 0

    def resumeProducing(self) -> None:
        if not self._paused:
            return
        self._paused = False
        self._run_writer()

    def stopProducing(self) -> None:
        """The transport is going away; L{connection_lost} follows and closes the streams."""
