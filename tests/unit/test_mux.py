"""Synchronous tests of the multiplexer (shared/protocol/mux.py).

Two L{Multiplexer}s, a console side (C{is_client=True}) and a Jumpoint side,
are wired back to back through in-memory transports; nothing moves until the
test pumps bytes from one transport into the other multiplexer, and time only
passes when the test advances the shared L{Clock}.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from shared.protocol import frames
from shared.protocol.control import StreamTarget
from shared.protocol.frames import ErrorCode, Flag, Frame, FrameParser, FrameType, encode_frame
from shared.protocol.mux import Multiplexer, MuxSettings, Stream

TARGET = StreamTarget("db1.internal", 5432).encode()


# -- fakes --------------------------------------------------------------------


class FakeTransport:
    """An in-memory transport: written bytes wait in C{outbox} until pumped."""

    def __init__(self) -> None:
        self.outbox = bytearray()
        self.history = bytearray()
        self.producer: Any = None
        self.streaming: bool | None = None
        self.unregistered = False
        self.disconnecting = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.disconnecting, "write after loseConnection"
        self.outbox += data
        self.history += data

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert self.producer is None
        self.producer, self.streaming = producer, streaming

    def unregisterProducer(self) -> None:
        self.unregistered = True
        self.producer = None

    def loseConnection(self) -> None:
        self.disconnecting = True

    def abortConnection(self) -> None:
        self.disconnecting = self.aborted = True

    def frames(self) -> list[Frame]:
        """Every frame ever written on this transport."""
        parser = FrameParser(2**32 - 1)
        out = parser.feed(bytes(self.history))
        assert parser.buffered == 0
        return out

    def frames_of(self, kind: FrameType) -> list[Frame]:
        return [f for f in self.frames() if f.type is kind]


class RecordingApp:
    """A StreamApplication that records what its stream tells it."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.events: list[tuple[Any, ...]] = []
        self.paused = False

    def stream_data(self, data: bytes) -> None:
        self.data += data
        self.events.append(("data", len(data)))

    def stream_ended(self) -> None:
        self.events.append(("ended",))

    def stream_reset(self, code: int, reason: str) -> None:
        self.events.append(("reset", code, reason))

    def pause_sending(self) -> None:
        assert not self.paused, "pause_sending twice in a row"
        self.paused = True
        self.events.append(("pause",))

    def resume_sending(self) -> None:
        assert self.paused, "resume_sending without pause_sending"
        self.paused = False
        self.events.append(("resume",))

    def count(self, name: str) -> int:
        return sum(1 for event in self.events if event[0] == name)

    @property
    def resets(self) -> list[tuple[int, str]]:
        return [(e[1], e[2]) for e in self.events if e[0] == "reset"]


class RecordingHandler:
    """A MuxHandler that records calls; it attaches an application to peer streams."""

    def __init__(self, accept: bool = True) -> None:
        self.make_app: Callable[[Stream], Any] | None = (
            (lambda stream: RecordingApp()) if accept else None
        )
        self.controls: list[dict[str, Any]] = []
        self.requested: list[tuple[Stream, bytes]] = []
        self.apps: dict[int, Any] = {}
        self.closing: list[tuple[int, str, bool]] = []

    def control_received(self, message: dict[str, Any]) -> None:
        self.controls.append(message)

    def stream_requested(self, stream: Stream, payload: bytes) -> None:
        self.requested.append((stream, payload))
        if self.make_app is not None:
            app = self.make_app(stream)
            self.apps[stream.stream_id] = app
            stream.attach(app)

    def mux_closing(self, code: int, reason: str, by_peer: bool) -> None:
        self.closing.append((code, reason, by_peer))


@dataclass
class Side:
    mux: Multiplexer
    transport: FakeTransport
    handler: RecordingHandler
    rtts: list[float] = field(default_factory=list)


class Pair:
    """A console-side and a Jumpoint-side multiplexer connected back to back."""

    def __init__(
        self,
        settings: MuxSettings | None = None,
        *,
        establish: bool = True,
        server_accepts: bool = True,
    ) -> None:
        self.clock = Clock()
        self.client = self._side(True, settings, RecordingHandler())
        self.server = self._side(False, settings, RecordingHandler(server_accepts))
        if establish:
            self.client.mux.establish()
            self.server.mux.establish()

    def _side(self, is_client: bool, settings: MuxSettings | None, h: RecordingHandler) -> Side:
        rtts: list[float] = []
        mux = Multiplexer(
            is_client=is_client,
            handler=h,
            clock=self.clock,
            settings=settings,
            on_rtt=rtts.append,
        )
        transport = FakeTransport()
        mux.make_connection(transport)  # type: ignore[arg-type]
        assert transport.producer is mux and transport.streaming is True
        return Side(mux, transport, h, rtts)

    def other(self, side: Side) -> Side:
        return self.server if side is self.client else self.client

    def pump(self, source: Side, limit: int | None = None) -> int:
        """Deliver up to C{limit} bytes written by C{source} to the other side."""
        outbox = source.transport.outbox
        amount = len(outbox) if limit is None else min(limit, len(outbox))
        chunk = bytes(outbox[:amount])
        del outbox[:amount]
        if chunk:
            self.other(source).mux.data_received(chunk)
        return amount

    def flush(self, rounds: int = 1000) -> None:
        """Pump both ways until nothing moves."""
        for _ in range(rounds):
            if not (self.pump(self.client) + self.pump(self.server)):
                return
        raise AssertionError("the two sides never went quiet")

    def open(self, payload: bytes = TARGET) -> tuple[Stream, RecordingApp, Stream, RecordingApp]:
        """Open a stream from the console and deliver the OPEN."""
        stream = self.client.mux.open_stream(payload)
        app = RecordingApp()
        stream.attach(app)
        self.flush()
        peer, peer_payload = self.server.handler.requested[-1]
        assert peer.stream_id == stream.stream_id
        assert peer_payload == payload
        return stream, app, peer, self.server.handler.apps[peer.stream_id]


def pattern(start: int, size: int) -> bytes:
    """Position-dependent bytes, so that reordering or loss shows."""
    return bytes((i * 7 + i // 251) % 256 for i in range(start, start + size))


def goaway_codes(side: Side) -> list[int]:
    return [frames.decode_reason(f.payload)[0] for f in side.transport.frames_of(FrameType.GOAWAY)]


def reset_codes(side: Side) -> list[tuple[int, int]]:
    return [
        (f.stream_id, frames.decode_reason(f.payload)[0])
        for f in side.transport.frames_of(FrameType.RESET)
    ]


def window_updates(side: Side) -> list[int]:
    return [
        frames.decode_window_increment(f.payload)
        for f in side.transport.frames_of(FrameType.WINDOW_UPDATE)
    ]


def assert_closed_with(side: Side, code: ErrorCode, *, by_peer: bool = False) -> None:
    assert side.mux.closing
    assert [(c, p) for c, _, p in side.handler.closing] == [(code, by_peer)]
    assert side.transport.disconnecting and side.transport.unregistered


# -- hello, opening and data ----------------------------------------------------------


def test_open_before_hello_is_a_protocol_error() -> None:
    pair = Pair(establish=False)
    stream = pair.client.mux.open_stream(TARGET)
    app = RecordingApp()
    stream.attach(app)
    pair.pump(pair.client)
    assert pair.server.handler.requested == []
    assert goaway_codes(pair.server) == [ErrorCode.PROTOCOL_ERROR]
    assert_closed_with(pair.server, ErrorCode.PROTOCOL_ERROR)
    # The console learns why when the GOAWAY arrives.
    pair.pump(pair.server)
    assert_closed_with(pair.client, ErrorCode.PROTOCOL_ERROR, by_peer=True)
    assert app.resets == [(ErrorCode.PROTOCOL_ERROR, "OPEN before the hello exchange")]
    assert pair.client.mux.streams == {}


def test_control_and_ping_before_hello() -> None:
    pair = Pair(establish=False)
    pair.client.mux.send_control({"type": "hello", "version": 1, "client": "jump/test"})
    pair.client.mux.start_keepalive()
    pair.flush()
    assert pair.server.handler.controls == [{"type": "hello", "version": 1, "client": "jump/test"}]
    assert pair.client.mux.srtt == 0.0
    assert not pair.server.mux.closing and not pair.client.mux.closing


def test_frame_limit_before_and_after_hello() -> None:
    pair = Pair(establish=False)
    big = encode_frame(FrameType.CONTROL, 0, 0, b" " * (frames.MAX_PAYLOAD_BEFORE_HELLO + 1))
    # The header alone is refused before the hello exchange.
    pair.server.mux.data_received(big[: frames.HEADER_SIZE])
    assert goaway_codes(pair.server) == [ErrorCode.FRAME_SIZE_ERROR]
    assert_closed_with(pair.server, ErrorCode.FRAME_SIZE_ERROR)

    pair = Pair()
    message = json.dumps({"type": "x", "pad": "a" * frames.MAX_PAYLOAD_BEFORE_HELLO}).encode()
    pair.server.mux.data_received(encode_frame(FrameType.CONTROL, 0, 0, message))
    assert pair.server.handler.controls[0]["type"] == "x"
    assert not pair.server.mux.closing


def test_open_write_and_data_arrives() -> None:
    pair = Pair()
    stream, app, peer, peer_app = pair.open()
    assert stream.stream_id == 1 and peer.stream_id == 1
    assert pair.client.mux.open_stream(TARGET).stream_id == 3
    stream.write(b"hello, ")
    stream.write(b"world")
    pair.flush()
    assert bytes(peer_app.data) == b"hello, world"
    peer.write(b"and back")
    pair.flush()
    assert bytes(app.data) == b"and back"
    assert stream.bytes_sent == 12 and peer.bytes_received == 12
    assert app.count("pause") == 0 and peer_app.count("pause") == 0


def test_large_write_is_split_into_chunks() -> None:
    pair = Pair()
    stream, _, _, peer_app = pair.open()
    payload = pattern(0, 3 * frames.MAX_DATA_CHUNK + 5)
    stream.write(payload)
    sizes = [len(f.payload) for f in pair.client.transport.frames_of(FrameType.DATA)]
    assert sizes == [frames.MAX_DATA_CHUNK] * 3 + [5]
    pair.flush()
    assert bytes(peer_app.data) == payload


def test_server_opens_even_streams() -> None:
    pair = Pair()
    stream = pair.server.mux.open_stream(TARGET)
    stream.attach(RecordingApp())
    assert stream.stream_id == 2
    assert pair.server.mux.open_stream(TARGET).stream_id == 4
    pair.flush()
    assert [s.stream_id for s, _ in pair.client.handler.requested] == [2, 4]


# -- flow control -----------------------------------------------------------------------

SMALL = MuxSettings(
    initial_window=1024,
    max_stream_window=8192,
    stream_queue_limit=1024,
    max_pending_per_stream=8192,
)


def test_window_exhaustion_and_recovery() -> None:
    pair = Pair(SMALL)
    stream, app, peer, peer_app = pair.open()
    peer.pause_receiving()
    payload = pattern(0, 3000)
    stream.write(payload[:1000])  # fits the window: sent at once
    assert stream.queued_bytes == 0 and stream.send_window == 24
    stream.write(payload[1000:2000])  # 24 bytes go out, 976 wait
    assert stream.send_window == 0 and stream.queued_bytes == 976
    assert app.count("pause") == 0  # the queue is below stream_queue_limit
    stream.write(payload[2000:])
    assert stream.queued_bytes == 1976 >= SMALL.stream_queue_limit
    assert app.events == [("pause",)]
    # The app ignores the pause a little: the queue grows, but stays bounded.
    stream.write(b"!" * 100)
    payload += b"!" * 100
    assert stream.queued_bytes == 2076 <= SMALL.max_pending_per_stream
    assert app.count("pause") == 1
    pair.flush()
    # Only the window went through, and it stays closed while the receiver is paused.
    assert bytes(peer_app.data) == payload[: SMALL.initial_window]
    assert window_updates(pair.server) == []
    assert stream.send_window == 0 and app.paused and stream.queued_bytes == 2076
    pair.clock.advance(10)
    pair.flush()
    assert window_updates(pair.server) == []
    assert len(peer_app.data) == SMALL.initial_window

    peer.resume_receiving()
    assert window_updates(pair.server) != []
    pair.flush()
    assert bytes(peer_app.data) == payload
    assert app.events == [("pause",), ("resume",)]
    assert stream.queued_bytes == 0


def test_window_not_reopened_by_data_arriving_while_paused() -> None:
    pair = Pair(SMALL)
    stream, _, peer, peer_app = pair.open()
    peer.pause_receiving()
    # Arrives in several frames, each well over a quarter of the window.
    for i in range(4):
        stream.write(pattern(i * 256, 256))
        pair.flush()
    assert len(peer_app.data) == SMALL.initial_window
    assert window_updates(pair.server) == []
    assert peer.recv_credit == 0
    assert stream.send_window == 0
    # Pausing again does not release anything; resuming does, once.
    peer.pause_receiving()
    assert window_updates(pair.server) == []
    peer.resume_receiving()
    peer.resume_receiving()
    assert sum(window_updates(pair.server)) >= SMALL.initial_window
    assert len(window_updates(pair.server)) == 1


def test_partial_consumption_below_a_quarter_sends_no_update() -> None:
    pair = Pair(SMALL)
    stream, _, peer, _ = pair.open()
    stream.write(b"x" * (SMALL.initial_window // 4 - 1))
    pair.flush()
    assert window_updates(pair.server) == []
    stream.write(b"x")
    pair.flush()
    assert window_updates(pair.server)[0] >= SMALL.initial_window // 4
    assert stream.send_window == peer.recv_credit


def test_fin_waits_for_pending_data() -> None:
    pair = Pair(SMALL)
    stream, app, peer, peer_app = pair.open()
    peer.pause_receiving()
    payload = pattern(0, 2500)
    stream.write(payload)
    stream.end_write()
    pair.flush()
    assert ("ended",) not in peer_app.events
    fin = [f for f in pair.client.transport.frames() if f.flags & Flag.FIN]
    assert fin == []
    peer.resume_receiving()
    pair.flush()
    assert bytes(peer_app.data) == payload
    assert peer_app.events[-1] == ("ended",)
    peer.end_write()
    pair.flush()
    assert app.events[-1] == ("ended",)
    assert pair.client.mux.streams == {} and pair.server.mux.streams == {}


def test_sender_ignoring_backpressure_is_reset_with_limit() -> None:
    settings = MuxSettings(
        initial_window=1024, stream_queue_limit=1024, max_pending_per_stream=2048
    )
    pair = Pair(settings)
    stream, app, peer, peer_app = pair.open()
    peer.pause_receiving()
    stream.write(b"a" * 1500)
    assert stream.queued_bytes == 476 and app.events == []
    stream.write(b"b" * 1572)
    assert stream.queued_bytes == 2048 and stream.state == "open"
    assert app.events == [("pause",)]
    stream.write(b"c")
    assert stream.state == "closed" and stream.queued_bytes == 0
    assert app.resets == [(ErrorCode.LIMIT, "the application ignored backpressure")]
    assert 1 not in pair.client.mux.streams
    pair.flush()
    assert peer_app.resets == [(ErrorCode.LIMIT, "sender ignored backpressure")]
    assert 1 not in pair.server.mux.streams
    assert bytes(peer_app.data) == b"a" * 1024


def test_writes_queue_while_the_transport_is_paused() -> None:
    pair = Pair(SMALL)
    stream, app, _, peer_app = pair.open()
    pair.client.mux.pauseProducing()
    before = len(pair.client.transport.history)
    stream.write(b"q" * 100)
    stream.write(b"r" * 100)
    assert len(pair.client.transport.history) == before  # nothing written
    assert stream.queued_bytes == 200 and not app.paused
    # FIN waits behind the queued data.
    stream.end_write()
    assert len(pair.client.transport.history) == before
    pair.client.mux.resumeProducing()
    pair.flush()
    assert bytes(peer_app.data) == b"q" * 100 + b"r" * 100
    assert peer_app.events[-1] == ("ended",)


def test_round_robin_between_busy_streams() -> None:
    settings = MuxSettings(max_pending_per_stream=1 << 20, stream_queue_limit=1 << 20)
    pair = Pair(settings)
    first, _, _, first_peer_app = pair.open()
    second, _, _, second_peer_app = pair.open()
    pair.client.mux.pauseProducing()
    mark = len(pair.client.transport.frames())
    first.write(pattern(0, 3 * frames.MAX_DATA_CHUNK))
    second.write(pattern(1, 2 * frames.MAX_DATA_CHUNK))
    pair.client.mux.resumeProducing()
    data = [f for f in pair.client.transport.frames()[mark:] if f.type is FrameType.DATA]
    assert [(f.stream_id, len(f.payload)) for f in data] == [
        (1, frames.MAX_DATA_CHUNK),
        (3, frames.MAX_DATA_CHUNK),
        (1, frames.MAX_DATA_CHUNK),
        (3, frames.MAX_DATA_CHUNK),
        (1, frames.MAX_DATA_CHUNK),
    ]
    pair.flush()
    assert bytes(first_peer_app.data) == pattern(0, 3 * frames.MAX_DATA_CHUNK)
    assert bytes(second_peer_app.data) == pattern(1, 2 * frames.MAX_DATA_CHUNK)


class PausingTransport(FakeTransport):
    """A transport whose buffer fills after C{capacity} bytes, like a TLS transport."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def write(self, data: bytes) -> None:
        super().write(data)
        self.capacity -= len(data)
        if self.capacity <= 0 and self.producer is not None:
            self.producer.pauseProducing()


def test_transport_filling_up_during_a_write_stops_the_writer() -> None:
    clock = Clock()
    handler = RecordingHandler()
    mux = Multiplexer(is_client=True, handler=handler, clock=clock)
    transport = PausingTransport(capacity=100_000)
    mux.make_connection(transport)  # type: ignore[arg-type]
    mux.establish()
    stream = mux.open_stream(TARGET)
    app = RecordingApp()
    stream.attach(app)
    stream.write(b"x" * 200_000)
    # Two 64 KiB frames filled the transport; the rest waits for resumeProducing.
    sizes = [len(f.payload) for f in transport.frames_of(FrameType.DATA)]
    assert sizes == [frames.MAX_DATA_CHUNK] * 2
    assert stream.queued_bytes == 200_000 - 2 * frames.MAX_DATA_CHUNK
    assert app.paused  # more than stream_queue_limit is queued
    transport.capacity = 10**9
    mux.resumeProducing()
    assert sum(len(f.payload) for f in transport.frames_of(FrameType.DATA)) == 200_000
    assert app.events == [("pause",), ("resume",)]


def test_peer_exceeding_its_credit_gets_flow_control_error() -> None:
    pair = Pair(SMALL)
    stream, app, _, peer_app = pair.open()
    other, other_app, _, other_peer_app = pair.open()
    # A misbehaving console ignores its window.
    raw = encode_frame(FrameType.DATA, 0, stream.stream_id, b"z" * (SMALL.initial_window + 1))
    pair.server.mux.data_received(raw)
    assert peer_app.data == bytearray()
    assert peer_app.resets == [(ErrorCode.FLOW_CONTROL_ERROR, "peer exceeded its credit window")]
    assert reset_codes(pair.server) == [(stream.stream_id, ErrorCode.FLOW_CONTROL_ERROR)]
    assert stream.stream_id not in pair.server.mux.streams
    pair.flush()
    assert app.resets == [(ErrorCode.FLOW_CONTROL_ERROR, "peer sent more than its credit window")]
    # A stream error: the connection and the other stream carry on.
    assert not pair.server.mux.closing and not pair.client.mux.closing
    other.write(b"still fine")
    pair.flush()
    assert bytes(other_peer_app.data) == b"still fine"
    assert other_app.resets == [] and other_peer_app.resets == []
    # Late DATA for the reset stream is ignored.
    pair.server.mux.data_received(encode_frame(FrameType.DATA, 0, stream.stream_id, b"late"))
    assert not pair.server.mux.closing


def test_credit_is_exact_at_the_boundary() -> None:
    pair = Pair(SMALL)
    stream, _, peer, peer_app = pair.open()
    peer.pause_receiving()
    raw = encode_frame(FrameType.DATA, 0, stream.stream_id, b"z" * SMALL.initial_window)
    pair.server.mux.data_received(raw)
    assert len(peer_app.data) == SMALL.initial_window and peer_app.resets == []
    pair.server.mux.data_received(encode_frame(FrameType.DATA, 0, stream.stream_id, b"!"))
    assert peer_app.resets[0][0] == ErrorCode.FLOW_CONTROL_ERROR


@pytest.mark.parametrize("increment", [0, 2**31 - SMALL.initial_window])
def test_invalid_window_update_resets_the_stream(increment: int) -> None:
    pair = Pair(SMALL)
    stream, app, _, peer_app = pair.open()
    pair.client.mux.data_received(frames.encode_window_update(stream.stream_id, increment))
    assert app.resets == [(ErrorCode.FLOW_CONTROL_ERROR, "peer sent an invalid window update")]
    assert reset_codes(pair.client) == [(stream.stream_id, ErrorCode.FLOW_CONTROL_ERROR)]
    pair.flush()
    assert peer_app.resets == [(ErrorCode.FLOW_CONTROL_ERROR, "invalid window increment")]
    assert not pair.client.mux.closing


def test_window_update_up_to_the_maximum_is_accepted() -> None:
    pair = Pair(SMALL)
    stream, app, _, _ = pair.open()
    increment = 2**31 - 1 - SMALL.initial_window
    pair.client.mux.data_received(frames.encode_window_update(stream.stream_id, increment))
    assert app.resets == [] and stream.send_window == 2**31 - 1


def test_autotune_grows_up_to_max_stream_window() -> None:
    pair = Pair(SMALL)
    stream, app, peer, peer_app = pair.open()
    windows = [peer.recv_window]
    sent = 0
    for _ in range(40):
        while not app.paused:
            stream.write(pattern(sent, 512))
            sent += 512
        pair.flush()
        windows.append(peer.recv_window)
    assert bytes(peer_app.data) == pattern(0, sent)
    assert windows == sorted(windows)
    assert windows[0] == SMALL.initial_window and windows[-1] == SMALL.max_stream_window
    assert max(windows) <= SMALL.max_stream_window
    # Windows only ever double.
    assert set(windows) <= {1024, 2048, 4096, 8192}
    # Credit granted = initial window + increments = bytes received + credit left.
    granted = SMALL.initial_window + sum(window_updates(pair.server))
    assert granted == peer.bytes_received + peer.recv_credit
    # The sender's credit and the receiver's idea of it agree.
    assert stream.send_window == peer.recv_credit


def test_autotune_does_not_grow_a_slow_stream() -> None:
    pair = Pair(SMALL)
    stream, _, peer, peer_app = pair.open()
    for i in range(20):
        # A quarter of the window per update, each more than 4 RTTs after the last.
        pair.clock.advance(4 * SMALL.default_rtt + 0.01)
        stream.write(pattern(i * 256, 256))
        pair.flush()
    assert len(peer_app.data) == 20 * 256
    assert peer.recv_window == SMALL.initial_window
    assert window_updates(pair.server) == [256] * 20


def test_autotune_uses_measured_rtt() -> None:
    pair = Pair(SMALL)
    pair.server.mux.start_keepalive()
    pair.clock.advance(1.0)
    pair.flush()
    assert pair.server.mux.srtt == 1.0
    fast, _, fast_peer, _ = pair.open()
    slow, _, slow_peer, _ = pair.open()
    # Well over 4 * default_rtt, but within 4 measured RTTs of the streams' creation.
    pair.clock.advance(3.9)
    fast.write(b"q" * 256)
    pair.flush()
    assert fast_peer.recv_window == 2 * SMALL.initial_window
    pair.clock.advance(0.2)  # 4.1 s since creation: more than 4 RTTs
    slow.write(b"q" * 256)
    pair.flush()
    assert slow_peer.recv_window == SMALL.initial_window


def test_autotune_respects_connection_window_cap() -> None:
    settings = MuxSettings(
        initial_window=1024, max_stream_window=1 << 20, connection_window_cap=4096
    )
    pair = Pair(settings)
    fast, fast_app, fast_peer, _ = pair.open()
    _, _, idle_peer, _ = pair.open()

    def drive(rounds: int) -> None:
        for _ in range(rounds):
            while not fast_app.paused:
                fast.write(b"f" * 256)
            pair.flush()
            total = sum(s.recv_window for s in pair.server.mux.streams.values())
            assert total <= settings.connection_window_cap
            assert pair.server.mux._total_windows == total

    drive(20)
    # 1024 + 1024 -> 2048 + 1024 (idle) = 3072; doubling again would reach 5120.
    assert fast_peer.recv_window == 2048 and idle_peer.recv_window == 1024
    # Once the idle stream is gone, its share may be used.
    idle_peer.reset(ErrorCode.CANCEL, "done")
    drive(20)
    assert fast_peer.recv_window == 4096


# -- half-close and reset ------------------------------------------------------------------


def test_half_close_both_ways() -> None:
    pair = Pair()
    stream, app, peer, peer_app = pair.open()
    stream.write(b"request")
    stream.end_write()
    assert stream.local_fin and stream.state == "half-closed (local)"
    pair.flush()
    assert peer_app.events == [("data", 7), ("ended",)]
    assert peer.remote_fin and peer.state == "half-closed (remote)"
    # Writes after end_write are dropped.
    stream.write(b"ignored")
    pair.flush()
    assert bytes(peer_app.data) == b"request"
    # The other direction still works.
    peer.write(b"response")
    pair.flush()
    assert bytes(app.data) == b"response"
    assert stream.stream_id in pair.client.mux.streams
    assert peer.stream_id in pair.server.mux.streams
    peer.end_write()
    pair.flush()
    assert app.events[-1] == ("ended",)
    assert stream.closed and peer.closed and stream.state == "closed"
    assert pair.client.mux.streams == {} and pair.server.mux.streams == {}
    assert app.resets == [] and peer_app.resets == []
    # Windows of finished streams are given back to the session budget.
    assert pair.client.mux._total_windows == 0 and pair.server.mux._total_windows == 0


def test_fin_from_the_other_side_first() -> None:
    pair = Pair()
    stream, app, peer, peer_app = pair.open()
    peer.end_write()
    pair.flush()
    assert app.events == [("ended",)]
    stream.write(b"late reply")
    stream.end_write()
    pair.flush()
    assert peer_app.events == [("data", 10), ("ended",)]
    assert pair.client.mux.streams == {} and pair.server.mux.streams == {}


def test_duplicate_fin_is_ignored() -> None:
    pair = Pair()
    stream, _, _, peer_app = pair.open()
    fin = encode_frame(FrameType.DATA, Flag.FIN, stream.stream_id, b"")
    pair.server.mux.data_received(fin + fin)
    assert peer_app.events == [("ended",)]
    assert not pair.server.mux.closing


def test_data_after_fin_is_refused() -> None:
    pair = Pair()
    stream, _, _, peer_app = pair.open()
    fin = encode_frame(FrameType.DATA, Flag.FIN, stream.stream_id, b"")
    late = encode_frame(FrameType.DATA, 0, stream.stream_id, b"late")
    pair.server.mux.data_received(fin + late)
    assert bytes(peer_app.data) == b""
    assert peer_app.resets != [] or pair.server.mux.closing


def test_fin_with_payload() -> None:
    pair = Pair()
    stream, _, _, peer_app = pair.open()
    pair.server.mux.data_received(encode_frame(FrameType.DATA, Flag.FIN, stream.stream_id, b"x"))
    assert peer_app.events == [("data", 1), ("ended",)]


def test_reset_reaches_the_peer_app() -> None:
    pair = Pair()
    stream, app, peer, peer_app = pair.open()
    stream.write(b"some data")
    stream.reset(ErrorCode.CANCEL, "local socket closed")
    assert stream.closed and pair.client.mux.streams == {}
    pair.flush()
    assert bytes(peer_app.data) == b"some data"
    assert peer_app.resets == [(ErrorCode.CANCEL, "local socket closed")]
    assert peer.closed and pair.server.mux.streams == {}
    # The resetting side's own application is not told; nothing is echoed back.
    assert app.resets == []
    assert pair.server.transport.frames_of(FrameType.RESET) == []
    # Operations on a reset stream do nothing.
    stream.write(b"more")
    stream.end_write()
    stream.reset(ErrorCode.CANCEL, "again")
    assert pair.client.transport.frames_of(FrameType.RESET)[1:] == []


def test_reset_reason_is_truncated() -> None:
    pair = Pair()
    _, _, peer, _ = pair.open()
    peer.reset(ErrorCode.DENIED, "ü" * 2000)
    (frame,) = pair.server.transport.frames_of(FrameType.RESET)
    assert len(frame.payload) == 4 + frames.MAX_REASON_BYTES
    pair.flush()


def test_reset_of_a_never_opened_stream_is_a_protocol_error() -> None:
    pair = Pair()
    pair.server.mux.data_received(
        encode_frame(FrameType.RESET, 0, 99, frames.encode_reason(ErrorCode.CANCEL, "x"))
    )
    assert pair.server.mux.closing


def test_reset_of_a_closed_stream_is_ignored() -> None:
    pair = Pair()
    stream = pair.client.mux.open_stream(TARGET)
    stream.attach(RecordingApp())
    pair.flush()
    stream.reset(ErrorCode.CANCEL, "gone")
    pair.flush()
    pair.server.mux.data_received(
        encode_frame(
            FrameType.RESET, 0, stream.stream_id, frames.encode_reason(ErrorCode.CANCEL, "x")
        )
    )
    assert not pair.server.mux.closing


def test_stream_without_application_is_reset() -> None:
    pair = Pair(server_accepts=False)
    stream = pair.client.mux.open_stream(TARGET)
    app = RecordingApp()
    stream.attach(app)
    stream.write(b"data")
    pair.flush()
    assert app.resets == [(ErrorCode.INTERNAL_ERROR, "stream has no application")]


# -- stream ids and the stream limit -----------------------------------------------------


def test_257th_stream_is_refused_with_limit() -> None:
    pair = Pair()
    streams = []
    for _ in range(MuxSettings().max_streams + 1):
        stream = pair.client.mux.open_stream(TARGET)
        app = RecordingApp()
        stream.attach(app)
        stream.write(b"hi")
        streams.append((stream, app))
    pair.flush()
    assert len(pair.server.handler.requested) == 256
    assert len(pair.server.mux.streams) == 256
    last, last_app = streams[-1]
    assert last.stream_id == 513
    assert last_app.resets == [(ErrorCode.LIMIT, "the session already carries 256 connections")]
    assert reset_codes(pair.server) == [(513, ErrorCode.LIMIT)]
    assert all(app.resets == [] for _, app in streams[:-1])
    assert not pair.server.mux.closing
    # When a stream ends, a new one is accepted again.
    streams[0][0].reset(ErrorCode.CANCEL, "bye")
    again = pair.client.mux.open_stream(TARGET)
    again_app = RecordingApp()
    again.attach(again_app)
    pair.flush()
    assert again_app.resets == [] and len(pair.server.handler.requested) == 257


def test_small_stream_limit() -> None:
    pair = Pair(MuxSettings(max_streams=2))
    pair.open()
    pair.open()
    stream = pair.client.mux.open_stream(TARGET)
    app = RecordingApp()
    stream.attach(app)
    pair.flush()
    assert [code for code, _ in app.resets] == [ErrorCode.LIMIT]


@pytest.mark.parametrize(
    ("data", "side"),
    [
        # Stream 2 would be opened by the Jumpoint, not the console.
        (encode_frame(FrameType.OPEN, 0, 2, TARGET), "server"),
        # Odd ids are the console's.
        (encode_frame(FrameType.OPEN, 0, 3, TARGET), "client"),
        # DATA and WINDOW_UPDATE for streams never opened.
        (encode_frame(FrameType.DATA, 0, 5, b"x"), "server"),
        (frames.encode_window_update(7, 10), "server"),
        (encode_frame(FrameType.DATA, 0, 2, b"x"), "server"),
        (encode_frame(FrameType.DATA, 0, 1, b"x"), "client"),
    ],
)
def test_invalid_stream_ids_are_protocol_errors(data: bytes, side: str) -> None:
    pair = Pair()
    receiver = pair.server if side == "server" else pair.client
    receiver.mux.data_received(data)
    assert goaway_codes(receiver) == [ErrorCode.PROTOCOL_ERROR]
    assert_closed_with(receiver, ErrorCode.PROTOCOL_ERROR)


def test_open_ids_must_increase() -> None:
    pair = Pair()
    pair.server.mux.data_received(encode_frame(FrameType.OPEN, 0, 5, TARGET))
    assert len(pair.server.handler.requested) == 1
    pair.server.mux.data_received(encode_frame(FrameType.OPEN, 0, 3, TARGET))
    assert_closed_with(pair.server, ErrorCode.PROTOCOL_ERROR)
    # Stream 5's application learns about the shutdown.
    assert pair.server.handler.apps[5].resets[0][0] == ErrorCode.PROTOCOL_ERROR


def test_skipped_ids_count_as_opened() -> None:
    pair = Pair()
    pair.server.mux.data_received(encode_frame(FrameType.OPEN, 0, 5, TARGET))
    # Stream 3 was skipped, so it is "closed", not "never opened": ignored.
    pair.server.mux.data_received(encode_frame(FrameType.DATA, 0, 3, b"x"))
    assert not pair.server.mux.closing


# -- keepalive -------------------------------------------------------------------------------


def test_ping_timeout_closes_with_keepalive_timeout() -> None:
    settings = MuxSettings()
    pair = Pair()
    stream, app, _, _ = pair.open()
    pair.client.mux.start_keepalive()
    assert len(pair.client.transport.frames_of(FrameType.PING)) == 1
    pair.clock.advance(settings.keepalive_timeout - 0.001)
    # At most one ping is outstanding: none was sent at 15 s and 30 s.
    assert len(pair.client.transport.frames_of(FrameType.PING)) == 1
    assert not pair.client.mux.closing
    pair.clock.advance(0.001)
    assert goaway_codes(pair.client) == [ErrorCode.KEEPALIVE_TIMEOUT]
    assert_closed_with(pair.client, ErrorCode.KEEPALIVE_TIMEOUT)
    ((_, reason, _),) = pair.client.handler.closing
    assert reason == "no answer to a keepalive ping within 45s"
    assert app.resets == [(ErrorCode.KEEPALIVE_TIMEOUT, reason)]
    assert stream.closed and pair.client.mux.streams == {}
    assert pair.clock.getDelayedCalls() == []
    # The peer learns why.
    pair.flush()
    assert [(c, p) for c, _, p in pair.server.handler.closing] == [
        (ErrorCode.KEEPALIVE_TIMEOUT, True)
    ]


def test_keepalive_timeout_aborts_the_transport() -> None:
    # Regression (issue 9, point 11): a polite TLS close waits for a dead peer forever.
    pair = Pair()
    pair.client.mux.start_keepalive()
    pair.clock.advance(MuxSettings().keepalive_timeout)
    assert pair.client.transport.aborted
    assert pair.client.transport.unregistered


def test_anything_heard_from_the_peer_keeps_the_link_alive() -> None:
    settings = MuxSettings(keepalive_interval=1.0, keepalive_timeout=3.0)
    pair = Pair(settings)
    pair.client.mux.start_keepalive()
    # The peer answers nothing but keeps sending other frames: the link is alive.
    for _ in range(20):
        pair.clock.advance(1.0)
        pair.client.mux.data_received(encode_frame(FrameType.CONTROL, 0, 0, b'{"type":"x"}'))
    assert not pair.client.mux.closing
    assert len(pair.client.transport.frames_of(FrameType.PING)) == 1  # never answered
    # Then it falls silent: the link is dropped exactly keepalive_timeout later.
    pair.clock.advance(2.999)
    assert not pair.client.mux.closing
    pair.clock.advance(0.001)
    assert_closed_with(pair.client, ErrorCode.KEEPALIVE_TIMEOUT)
    assert pair.client.transport.aborted
    assert pair.clock.getDelayedCalls() == []


def test_deadline_runs_from_the_last_answer_not_the_next_ping() -> None:
    # The peer stops right after answering a ping: the link is declared dead
    # keepalive_timeout after that answer, not after the next ping goes unanswered.
    settings = MuxSettings(keepalive_interval=15.0, keepalive_timeout=45.0)
    pair = Pair(settings)
    pair.client.mux.start_keepalive()
    pair.clock.advance(0.1)
    pair.flush()  # ping answered at t=0.1
    pair.clock.advance(45.0 - 0.001)
    assert not pair.client.mux.closing
    pair.clock.advance(0.001)
    assert_closed_with(pair.client, ErrorCode.KEEPALIVE_TIMEOUT)


def test_a_polite_close_is_aborted_when_the_peer_never_finishes_it() -> None:
    pair = Pair(MuxSettings(close_timeout=5.0))
    pair.client.mux.go_away(ErrorCode.NO_ERROR, "bye")
    assert pair.client.transport.disconnecting and not pair.client.transport.aborted
    pair.clock.advance(4.9)
    assert not pair.client.transport.aborted
    pair.clock.advance(0.1)
    assert pair.client.transport.aborted
    assert pair.clock.getDelayedCalls() == []


def test_a_polite_close_that_finishes_cancels_the_abort() -> None:
    pair = Pair()
    pair.client.mux.go_away(ErrorCode.NO_ERROR, "bye")
    pair.client.mux.connection_lost("closed cleanly")
    assert pair.clock.getDelayedCalls() == []
    assert not pair.client.transport.aborted


def test_ping_answered_sets_srtt() -> None:
    pair = Pair()
    pair.client.mux.start_keepalive()
    assert pair.client.mux.srtt is None
    pair.clock.advance(0.25)
    pair.pump(pair.client)
    (ping,) = pair.client.transport.frames_of(FrameType.PING)
    (ack,) = pair.server.transport.frames_of(FrameType.PING)
    assert ack.flags == Flag.ACK and ack.payload == ping.payload and ping.flags == 0
    pair.clock.advance(0.25)
    pair.pump(pair.server)
    assert pair.client.mux.srtt == pytest.approx(0.5)
    assert pair.client.rtts == [pytest.approx(0.5)]
    # The next ping goes out after the interval; the deadline was cancelled.
    pair.clock.advance(MuxSettings().keepalive_interval)
    assert len(pair.client.transport.frames_of(FrameType.PING)) == 2
    pair.clock.advance(0.1)
    pair.flush()
    assert pair.client.mux.srtt == pytest.approx(0.875 * 0.5 + 0.125 * 0.1)
    for _ in range(10):
        pair.clock.advance(MuxSettings().keepalive_interval)
        pair.flush()
    assert not pair.client.mux.closing
    assert len(pair.client.rtts) == 12


def test_ping_from_the_peer_is_echoed() -> None:
    pair = Pair()
    pair.server.mux.data_received(encode_frame(FrameType.PING, 0, 0, b"12345678"))
    (ack,) = pair.server.transport.frames_of(FrameType.PING)
    assert (ack.flags, ack.payload) == (Flag.ACK, b"12345678")


# -- GOAWAY, garbage and connection loss -------------------------------------------------------


@pytest.mark.parametrize(
    ("garbage", "code"),
    [
        (b"\xff" * 32, ErrorCode.FRAME_SIZE_ERROR),
        (struct.pack("!BBII", 0x42, 0, 0, 0), ErrorCode.PROTOCOL_ERROR),
        (encode_frame(FrameType.CONTROL, 0, 0, b"{not json"), ErrorCode.PROTOCOL_ERROR),
        (encode_frame(FrameType.CONTROL, 0, 0, b'["a list"]'), ErrorCode.PROTOCOL_ERROR),
        (encode_frame(FrameType.CONTROL, 0, 0, b'{"type": 1}'), ErrorCode.PROTOCOL_ERROR),
        (encode_frame(FrameType.CONTROL, 0, 0, b"\xff\xfe"), ErrorCode.PROTOCOL_ERROR),
        (encode_frame(FrameType.PING, 0, 0, b"short"), ErrorCode.FRAME_SIZE_ERROR),
        (encode_frame(FrameType.DATA, 0, 0, b"x"), ErrorCode.PROTOCOL_ERROR),
        (encode_frame(FrameType.RESET, 0, 1, b"\0"), ErrorCode.FRAME_SIZE_ERROR),
    ],
)
def test_garbage_closes_with_goaway(garbage: bytes, code: ErrorCode) -> None:
    pair = Pair()
    _, app, _, peer_app = pair.open()
    after = encode_frame(FrameType.CONTROL, 0, 0, b'{"type": "after"}')
    pair.server.mux.data_received(garbage + after)
    assert goaway_codes(pair.server) == [code]
    assert_closed_with(pair.server, code)
    assert pair.server.handler.controls == []
    assert [c for c, _ in peer_app.resets] == [code]
    # Nothing more is processed or written once closing.
    pair.server.mux.data_received(after)
    assert pair.server.handler.controls == []
    pair.flush()
    assert_closed_with(pair.client, code, by_peer=True)
    assert [c for c, _ in app.resets] == [code]


def test_deeply_nested_control_json_closes_with_goaway() -> None:
    # json.loads raises RecursionError, not ValueError, on deeply nested input.
    pair = Pair()
    pair.server.mux.data_received(encode_frame(FrameType.CONTROL, 0, 0, b"[" * 60_000))
    assert_closed_with(pair.server, ErrorCode.PROTOCOL_ERROR)


def test_goaway_from_peer() -> None:
    pair = Pair()
    _, app, _, peer_app = pair.open()
    pair.server.mux.go_away(ErrorCode.SHUTDOWN, "maintenance")
    assert_closed_with(pair.server, ErrorCode.SHUTDOWN)
    assert peer_app.resets == [(ErrorCode.SHUTDOWN, "maintenance")]
    pair.server.mux.go_away(ErrorCode.SHUTDOWN, "again")
    assert len(goaway_codes(pair.server)) == 1
    pair.flush()
    assert pair.client.handler.closing == [(ErrorCode.SHUTDOWN, "maintenance", True)]
    assert app.resets == [(ErrorCode.SHUTDOWN, "maintenance")]
    assert pair.client.transport.disconnecting
    assert pair.client.transport.frames_of(FrameType.GOAWAY) == []


def test_connection_lost_resets_streams_with_cancel() -> None:
    pair = Pair()
    stream, app, _, _ = pair.open()
    pair.client.mux.start_keepalive()
    pair.client.mux.connection_lost("connection reset by peer")
    assert app.resets == [(ErrorCode.CANCEL, "connection reset by peer")]
    assert pair.client.handler.closing == [(ErrorCode.CANCEL, "connection reset by peer", True)]
    assert not pair.client.transport.disconnecting
    assert pair.clock.getDelayedCalls() == []
    stream.write(b"nothing happens")
    assert pair.client.mux.streams == {}


# -- transport backpressure ---------------------------------------------------------------------


def test_transport_pause_pauses_each_stream_once_its_queue_fills() -> None:
    pair = Pair(SMALL)
    opened = [pair.open() for _ in range(3)]
    pair.client.mux.pauseProducing()
    pair.client.mux.pauseProducing()
    # The pause alone does not reach the applications ...
    assert all(app.events == [] for _, app, _, _ in opened)
    late = pair.client.mux.open_stream(TARGET)
    late_app = RecordingApp()
    late.attach(late_app)
    assert late_app.events == []
    # ... but each stream's writes now queue, and it pauses once its queue is full.
    for index, (stream, app, _, _) in enumerate(opened):
        stream.write(pattern(index, 600))
        assert app.events == []
        stream.write(pattern(index + 600, 600))
        assert app.events == [("pause",)]
        stream.write(pattern(index + 1200, 100))  # ignoring the pause a little
        assert app.events == [("pause",)]
    assert pair.client.transport.frames_of(FrameType.DATA) == []
    pair.client.mux.resumeProducing()
    pair.client.mux.resumeProducing()
    for _, app, _, _ in opened:
        assert app.events == [("pause",), ("resume",)]
    assert late_app.events == []
    pair.flush()
    for index, (_, app, _, peer_app) in enumerate(opened):
        assert bytes(peer_app.data) == pattern(index, 1300)
        assert app.events == [("pause",), ("resume",)]


def test_transport_pause_while_window_blocked_then_credit_returns() -> None:
    pair = Pair(SMALL)
    stream, app, _, peer_app = pair.open()
    payload = pattern(0, SMALL.initial_window + 1100)
    stream.write(payload)
    assert stream.queued_bytes == 1100 and app.events == [("pause",)]
    pair.client.mux.pauseProducing()
    pair.flush()  # credit returns, but the transport is still full: nothing moves
    assert stream.send_window > 0 and stream.queued_bytes == 1100
    assert app.events == [("pause",)]
    pair.client.mux.resumeProducing()
    assert stream.queued_bytes == 0 and app.events == [("pause",), ("resume",)]
    pair.flush()
    assert bytes(peer_app.data) == payload


def test_control_buffer_cap_exceeded_while_paused_closes() -> None:
    settings = MuxSettings(control_buffer_cap=300)
    pair = Pair(settings)
    _, app, _, _ = pair.open()
    message = {"type": "note", "text": "x" * 40}
    size = frames.HEADER_SIZE + len(json.dumps(message, separators=(",", ":")))
    pair.client.mux.pauseProducing()
    sent = 0
    while sent + size <= settings.control_buffer_cap:
        pair.client.mux.send_control(message)
        sent += size
    assert not pair.client.mux.closing
    # A new pause starts counting afresh.
    pair.client.mux.resumeProducing()
    pair.client.mux.pauseProducing()
    pair.client.mux.send_control(message)
    assert not pair.client.mux.closing
    while not pair.client.mux.is_closed():
        pair.client.mux.send_control(message)
    assert_closed_with(pair.client, ErrorCode.LIMIT)
    assert pair.client.handler.closing[0][1] == "the peer does not read what it is sent"
    # The peer gets a GOAWAY (should it ever read again) and the transport is aborted.
    assert goaway_codes(pair.client) == [ErrorCode.LIMIT]
    assert pair.client.transport.aborted
    assert app.resets[0][0] == ErrorCode.LIMIT


class RefusingHandler(RecordingHandler):
    """Resets every stream the peer opens, as the Jumpoint does without a session."""

    def stream_requested(self, stream: Stream, payload: bytes) -> None:
        stream.reset(ErrorCode.DENIED, "no session is open on this connection")


def _written_while_paused(side: Side) -> bytes:
    return bytes(side.transport.history)


def test_open_flood_against_a_paused_transport_stays_under_the_cap() -> None:
    # Regression (issue 9, point 6): the RESETs answering a peer's OPENs were not
    # counted, so 1.44 MB of OPENs from a peer that does not read left 6.12 MB queued.
    settings = MuxSettings()
    clock = Clock()
    handler = RefusingHandler()
    mux = Multiplexer(is_client=False, handler=handler, clock=clock, settings=settings)
    transport = FakeTransport()
    mux.make_connection(transport)  # type: ignore[arg-type]
    mux.establish()
    mux.pauseProducing()  # the peer does not read
    flood = b"".join(
        encode_frame(FrameType.OPEN, 0, 2 * index + 1, TARGET) for index in range(120_000)
    )
    for offset in range(0, len(flood), 256 * 1024):  # as the transport reads
        mux.data_received(flood[offset : offset + 256 * 1024])
    goaway = encode_frame(
        FrameType.GOAWAY,
        0,
        0,
        frames.encode_reason(ErrorCode.LIMIT, "the peer does not read what it is sent"),
    )
    assert len(transport.history) <= settings.control_buffer_cap + len(goaway)
    assert transport.history.endswith(goaway)
    assert mux.closing and transport.aborted and transport.unregistered
    assert handler.closing == [(ErrorCode.LIMIT, "the peer does not read what it is sent", False)]
    assert mux.streams == {}


def test_ping_flood_against_a_paused_transport_stays_under_the_cap() -> None:
    pair = Pair(MuxSettings(control_buffer_cap=10_000))
    pair.server.mux.pauseProducing()
    ping = encode_frame(FrameType.PING, 0, 0, b"12345678")
    pair.server.mux.data_received(ping * 5_000)
    assert len(pair.server.transport.history) <= 10_000 + 100
    assert_closed_with(pair.server, ErrorCode.LIMIT)
    assert pair.server.transport.aborted


def test_window_updates_and_resets_count_against_the_cap() -> None:
    pair = Pair(MuxSettings(control_buffer_cap=2_000))
    opened = [pair.open() for _ in range(4)]
    pair.server.mux.pauseProducing()
    before = len(pair.server.transport.history)
    # WINDOW_UPDATEs answering the peer's DATA count ...
    for stream, _, _, _ in opened[:2]:
        stream.write(pattern(0, MuxSettings().initial_window))
    pair.pump(pair.client)
    assert window_updates(pair.server)
    # ... so do RESETs ...
    for _, _, peer, _ in opened[2:]:
        peer.reset(ErrorCode.CANCEL, "x" * 200)
    assert pair.server.mux.bytes_while_paused == len(pair.server.transport.history) - before
    # ... and the RESETs answering OPENs beyond the stream limit.
    while not pair.server.mux.closing:
        pair.client.mux.open_stream(TARGET)
        pair.pump(pair.client)
    assert len(pair.server.transport.history) - before <= 2_000 + 100
    assert_closed_with(pair.server, ErrorCode.LIMIT)


def test_control_frames_are_not_counted_when_not_paused() -> None:
    pair = Pair(MuxSettings(control_buffer_cap=100))
    for _ in range(20):
        pair.client.mux.send_control({"type": "note", "text": "x" * 40})
    assert not pair.client.mux.closing


def test_control_message_size_limit() -> None:
    pair = Pair()
    with pytest.raises(ValueError, match="too large"):
        pair.client.mux.send_control({"type": "x", "pad": "a" * frames.MAX_CONTROL_PAYLOAD})


def test_no_timers_left_after_keepalive_ping_overflows_control_cap() -> None:
    pair = Pair(MuxSettings(control_buffer_cap=10))
    pair.client.mux.pauseProducing()
    pair.client.mux.start_keepalive()  # an 18-byte PING exceeds the cap: closed
    assert pair.client.mux.closing
    assert pair.clock.getDelayedCalls() == []


# -- property: a random script between two multiplexers -------------------------------------------

PROPERTY_SETTINGS = MuxSettings(
    initial_window=1024,
    max_stream_window=4096,
    connection_window_cap=1 << 20,
    stream_queue_limit=1024,
    max_pending_per_stream=4096,
    keepalive_interval=1.0,
    keepalive_timeout=1e9,
)
MAX_WRITE = 3000


class Source:
    """A well-behaved sending application: it stops writing when told to pause."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.paused = False
        self.backlog = bytearray()
        self.produced = 0
        self.written = bytearray()
        self.eof = False
        self.resets: list[tuple[int, str]] = []

    def produce(self, size: int) -> None:
        self.backlog += pattern(self.produced, size)
        self.produced += size
        self.flush()

    def finish(self) -> None:
        self.eof = True
        self.flush()

    def flush(self) -> None:
        while self.backlog and not self.paused and not self.stream.closed:
            chunk = bytes(self.backlog[:MAX_WRITE])
            del self.backlog[:MAX_WRITE]
            self.stream.write(chunk)
            self.written += chunk
        if self.eof and not self.backlog:
            self.stream.end_write()

    def stream_data(self, data: bytes) -> None:
        raise AssertionError("nothing flows back")

    def stream_ended(self) -> None:
        pass

    def stream_reset(self, code: int, reason: str) -> None:
        self.resets.append((code, reason))

    def pause_sending(self) -> None:
        assert not self.paused
        self.paused = True

    def resume_sending(self) -> None:
        assert self.paused
        self.paused = False
        self.flush()


class Sink:
    """A receiving application with its own bounded output buffer."""

    def __init__(self, stream: Stream, paused: bool = False) -> None:
        self.stream = stream
        self.receiving_paused = False
        self.consumed = bytearray()
        self.buffered = bytearray()
        self.ended = False
        self.resets: list[tuple[int, str]] = []
        if paused:  # like a Jumpoint whose target connection is not up yet
            self.pause()

    def pause(self) -> None:
        self.receiving_paused = True
        self.stream.pause_receiving()

    def resume(self) -> None:
        self.receiving_paused = False
        self.consumed += self.buffered
        self.buffered.clear()
        self.stream.resume_receiving()

    def stream_data(self, data: bytes) -> None:
        assert not self.ended
        if self.receiving_paused:
            self.buffered += data
        else:
            self.consumed += data

    def stream_ended(self) -> None:
        self.ended = True
        self.stream.end_write()

    def stream_reset(self, code: int, reason: str) -> None:
        self.resets.append((code, reason))

    def pause_sending(self) -> None:
        pass

    def resume_sending(self) -> None:
        pass


# The source writes in chunks of at most MAX_WRITE bytes, whatever it produces.
writes = st.tuples(st.just("write"), st.integers(min_value=1, max_value=4 * MAX_WRITE))
pumps = st.tuples(st.just("pump_forward"), st.integers(min_value=1, max_value=5000))
operations = st.one_of(
    # Writes and deliveries are drawn more often than the other operations.
    writes,
    writes,
    writes,
    pumps,
    pumps,
    st.tuples(st.just("pump_back"), st.integers(min_value=1, max_value=100)),
    st.tuples(st.just("flush")),
    st.tuples(st.just("pause_receiving")),
    st.tuples(st.just("resume_receiving")),
    st.tuples(st.just("pause_transport")),
    st.tuples(st.just("resume_transport")),
    st.tuples(st.just("end_write")),
    st.tuples(st.just("advance"), st.sampled_from([0.001, 0.05, 0.3, 1.0, 2.5])),
)


@hypothesis_settings(max_examples=200)
@given(st.lists(operations, min_size=15, max_size=100), st.booleans())
def test_random_script_delivers_everything_in_order(
    script: list[tuple[Any, ...]], start_paused: bool
) -> None:
    settings = PROPERTY_SETTINGS
    pair = Pair(settings)
    pair.client.mux.start_keepalive()
    pair.server.mux.start_keepalive()
    stream = pair.client.mux.open_stream(TARGET)
    source = Source(stream)
    stream.attach(source)
    pair.server.handler.make_app = lambda peer: Sink(peer, paused=start_paused)

    def receiver() -> Sink | None:
        sink: Sink | None = pair.server.handler.apps.get(stream.stream_id)
        return sink

    most_buffered = 0

    def check() -> None:
        nonlocal most_buffered
        assert not pair.client.mux.closing and not pair.server.mux.closing
        assert stream.queued_bytes <= settings.max_pending_per_stream
        assert source.resets == []
        sink = receiver()
        if sink is not None:
            assert sink.resets == []
            # Unconsumed bytes never exceed what the receiver granted.
            assert len(sink.buffered) <= sink.stream.recv_window
            assert sink.stream.recv_window <= settings.max_stream_window
            received = bytes(sink.consumed + sink.buffered)
            assert received == bytes(source.written[: len(received)])
            quiet = not pair.client.transport.outbox and not pair.server.transport.outbox
            if quiet and not sink.stream.remote_fin:
                # Nothing in flight: both ends agree on the sender's credit.
                assert stream.send_window == sink.stream.recv_credit
            most_buffered = max(most_buffered, len(sink.buffered))

    for op in script:
        kind = op[0]
        sink = receiver()
        if kind == "write":
            if not source.eof:
                source.produce(op[1])
        elif kind == "pause_receiving":
            if sink is not None:
                sink.pause()
        elif kind == "resume_receiving":
            if sink is not None:
                sink.resume()
        elif kind == "pause_transport":
            pair.client.mux.pauseProducing()
        elif kind == "resume_transport":
            pair.client.mux.resumeProducing()
        elif kind == "end_write":
            source.finish()
        elif kind == "advance":
            pair.clock.advance(op[1])
        elif kind == "pump_forward":
            pair.pump(pair.client, op[1])
        elif kind == "pump_back":
            pair.pump(pair.server, op[1])
        else:
            pair.flush()
        check()
    event(f"source paused at the end of the script: {source.paused}")
    event(f"receiver buffered data: {most_buffered > 0}")

    # Let everything drain: the receiver catches up, the sender finishes.
    pair.client.mux.resumeProducing()
    pair.flush()
    sink = receiver()
    assert sink is not None
    sink.resume()
    source.finish()
    pair.flush()
    check()
    assert bytes(sink.consumed) == bytes(source.written) == pattern(0, source.produced)
    assert sink.buffered == bytearray() and sink.ended
    assert stream.queued_bytes == 0 and not source.backlog
    assert pair.client.mux.streams == {} and pair.server.mux.streams == {}
