"""Datagrams through the multiplexer (shared/protocol/mux.py with shared/protocol/datagrams.py).

Two multiplexers back to back in memory (the helpers of tests/unit/test_mux.py):
datagrams cross between flows, DATAGRAM frames that break the rules close
the channel, and under a paused transport datagrams queue, drop and take
turns with the streams' DATA frames without either side starving.
"""

from __future__ import annotations

import dataclasses

import pytest
from twisted.internet.task import Clock

from shared.protocol import frames
from shared.protocol.datagrams import DropReason, FlowRefused
from shared.protocol.frames import HEADER_SIZE, ErrorCode, FrameType
from shared.protocol.mux import Multiplexer, MuxSettings
from tests.unit.test_mux import (
    TARGET,
    FakeTransport,
    Pair,
    RecordingApp,
    RecordingHandler,
    assert_closed_with,
    goaway_codes,
    pattern,
)

BIG_QUEUES = MuxSettings(
    initial_window=1 << 26,  # credit is never what holds a stream back here
    max_pending_per_stream=1 << 22,
    stream_queue_limit=1 << 22,
    datagram_queue_limit=1 << 22,
    datagram_queue_length=10_000,
)


class Receiver:
    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def datagram_received(self, payload: bytes) -> None:
        self.payloads.append(payload)


class PausingTransport(FakeTransport):
    """Pauses its producer once C{capacity} bytes are written, like a TLS transport."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def write(self, data: bytes) -> None:
        super().write(data)
        self.capacity -= len(data)
        if self.capacity <= 0 and self.producer is not None:
            self.producer.pauseProducing()

    def drain(self, capacity: int) -> None:
        """The kernel took the buffer: room for C{capacity} bytes, then resume the producer."""
        self.capacity = capacity
        self.producer.resumeProducing()


def one_side(
    settings: MuxSettings | None = None, transport: FakeTransport | None = None
) -> tuple[Multiplexer, FakeTransport]:
    mux = Multiplexer(is_client=True, handler=RecordingHandler(), clock=Clock(), settings=settings)
    transport = transport if transport is not None else FakeTransport()
    mux.make_connection(transport)  # type: ignore[arg-type]
    mux.establish()
    return mux, transport


def kinds(transport: FakeTransport, start: int = 0) -> list[str]:
    """The written frames from index C{start}: "D" a datagram, "S" stream DATA."""
    letters = {FrameType.DATAGRAM: "D", FrameType.DATA: "S"}
    return [letters[f.type] for f in transport.frames()[start:] if f.type in letters]


# -- across the channel ------------------------------------------------------------------


def test_datagrams_cross_both_ways_on_their_flows() -> None:
    pair = Pair()
    client, server = Receiver(), Receiver()
    flow_id = pair.client.mux.datagrams.next_flow_id()
    assert flow_id == 1 and pair.server.mux.datagrams.next_flow_id() == 2
    pair.client.mux.datagrams.open_flow(flow_id, client)
    pair.server.mux.datagrams.open_flow(flow_id, server)
    assert pair.client.mux.datagrams.send(flow_id, b"query")
    assert pair.client.mux.datagrams.send(flow_id, b"")
    pair.flush()
    assert server.payloads == [b"query", b""]
    pair.server.mux.datagrams.send(flow_id, b"answer")
    pair.flush()
    assert client.payloads == [b"answer"]
    assert pair.server.mux.datagrams.counters().received == 2
    assert not pair.client.mux.closing and not pair.server.mux.closing


def test_a_flow_id_is_not_a_stream_id() -> None:
    pair = Pair()
    stream, _, _, peer_app = pair.open()
    receiver = Receiver()
    pair.server.mux.datagrams.open_flow(stream.stream_id, receiver)
    pair.client.mux.datagrams.open_flow(stream.stream_id, Receiver())
    pair.client.mux.datagrams.send(stream.stream_id, b"datagram")
    stream.write(b"stream bytes")
    pair.flush()
    assert receiver.payloads == [b"datagram"]
    assert bytes(peer_app.data) == b"stream bytes"


def test_the_largest_datagram_crosses_and_takes_no_credit() -> None:
    pair = Pair(MuxSettings(initial_window=1024))
    stream, _, _, _ = pair.open()
    receiver = Receiver()
    pair.client.mux.datagrams.open_flow(1, Receiver())
    pair.server.mux.datagrams.open_flow(1, receiver)
    payload = pattern(0, frames.MAX_DATAGRAM_PAYLOAD)
    assert pair.client.mux.datagrams.send(1, payload)
    pair.flush()
    assert receiver.payloads == [payload]
    assert stream.send_window == 1024  # no stream credit was used
    assert pair.server.transport.frames_of(FrameType.WINDOW_UPDATE) == []


def test_a_datagram_for_a_closed_flow_is_dropped_and_the_channel_stays() -> None:
    pair = Pair()
    pair.client.mux.datagrams.open_flow(1, Receiver())
    pair.client.mux.datagrams.send(1, b"in flight")
    pair.flush()
    assert not pair.server.mux.closing
    counters = pair.server.mux.datagrams.counters()
    assert counters.receive_drops[DropReason.UNKNOWN_FLOW] == 1
    assert goaway_codes(pair.server) == []


# -- protocol errors -------------------------------------------------------------------


def test_a_datagram_before_the_hello_is_a_protocol_error() -> None:
    pair = Pair(establish=False)
    pair.server.mux.datagrams.open_flow(1, Receiver())
    pair.server.mux.data_received(frames.encode_datagram(1, b"early"))
    assert_closed_with(pair.server, ErrorCode.PROTOCOL_ERROR)
    assert pair.server.handler.closing[0][1] == "DATAGRAM before the hello exchange"
    assert goaway_codes(pair.server) == [ErrorCode.PROTOCOL_ERROR]


def test_a_datagram_for_flow_0_is_a_protocol_error() -> None:
    pair = Pair()
    pair.server.mux.data_received(frames.encode_frame(FrameType.DATAGRAM, 0, 0, b"x"))
    assert_closed_with(pair.server, ErrorCode.PROTOCOL_ERROR)
    assert pair.server.handler.closing[0][1] == "DATAGRAM frame on flow 0"


def test_an_oversize_datagram_is_a_frame_size_error() -> None:
    pair = Pair()
    size = frames.MAX_DATAGRAM_PAYLOAD + 1
    pair.server.mux.data_received(frames.encode_frame(FrameType.DATAGRAM, 0, 1, b"x" * size))
    assert_closed_with(pair.server, ErrorCode.FRAME_SIZE_ERROR)


def test_closing_the_channel_closes_the_flows_and_drops_the_queue() -> None:
    pair = Pair()
    datagrams = pair.client.mux.datagrams
    flow = datagrams.open_flow(1, Receiver())
    pair.client.mux.pauseProducing()
    datagrams.send(1, b"queued")
    pair.client.mux.go_away(ErrorCode.NO_ERROR, "bye")
    assert flow.closed and datagrams.queued == 0
    assert datagrams.send(1, b"after") is False
    with pytest.raises(FlowRefused):
        datagrams.open_flow(3, Receiver())
    assert pair.client.transport.frames_of(FrameType.DATAGRAM) == []


# -- a paused transport ------------------------------------------------------------------


def test_datagrams_queue_while_paused_then_drop_and_never_count_against_the_cap() -> None:
    settings = MuxSettings(datagram_queue_length=3, control_buffer_cap=50)
    pair = Pair(settings)
    receiver = Receiver()
    pair.client.mux.datagrams.open_flow(1, Receiver())
    pair.server.mux.datagrams.open_flow(1, receiver)
    pair.client.mux.pauseProducing()
    before = len(pair.client.transport.history)
    results = [pair.client.mux.datagrams.send(1, bytes([n]) * 40) for n in range(5)]
    assert results == [True, True, True, False, False]
    assert len(pair.client.transport.history) == before  # nothing written while paused
    assert pair.client.mux.bytes_while_paused == 0
    assert not pair.client.mux.closing  # 120 bytes queued, over the 50-byte control cap
    counters = pair.client.mux.datagrams.counters()
    assert counters.send_drops[DropReason.QUEUE_FULL] == 2
    assert (counters.queued, counters.queued_bytes) == (3, 3 * (HEADER_SIZE + 40))
    pair.client.mux.resumeProducing()
    pair.flush()
    assert receiver.payloads == [bytes([n]) * 40 for n in range(3)]


def test_a_stream_written_during_the_writers_run_goes_behind_queued_datagrams() -> None:
    """A write made while the writer runs (an application told to resume) waits its turn.

    Stream A's turn empties its queue, so its application is told to resume
    and writes to stream B at once; datagrams are still queued, so B's
    bytes go behind them instead of around them.
    """
    mux, transport = one_side(dataclasses.replace(BIG_QUEUES, stream_queue_limit=100))
    mux.datagrams.open_flow(1, Receiver())
    first, second = mux.open_stream(TARGET), mux.open_stream(TARGET)

    class WritesToSecondOnResume(RecordingApp):
        def resume_sending(self) -> None:
            super().resume_sending()
            second.write(b"from the resumed application")

    app = WritesToSecondOnResume()
    first.attach(app)
    second.attach(RecordingApp())
    mux.pauseProducing()
    first.write(pattern(0, frames.MAX_DATA_CHUNK))
    assert app.paused
    per_turn = frames.MAX_DATA_CHUNK // (HEADER_SIZE + 1000)
    for _ in range(per_turn + 3):
        mux.datagrams.send(1, b"d" * 1000)
    mark = len(transport.frames())
    mux.resumeProducing()
    sent = [f for f in transport.frames()[mark:] if f.type in (FrameType.DATA, FrameType.DATAGRAM)]
    assert [f.stream_id for f in sent if f.type is FrameType.DATA] == [
        first.stream_id,
        second.stream_id,
    ]
    assert ["D" if f.type is FrameType.DATAGRAM else "S" for f in sent] == (
        ["D"] * per_turn + ["S"] + ["D"] * 3 + ["S"]
    )


def test_datagrams_and_streams_alternate_when_both_wait() -> None:
    mux, transport = one_side(BIG_QUEUES)
    mux.datagrams.open_flow(1, Receiver())
    stream = mux.open_stream(TARGET)
    stream.attach(RecordingApp())
    mux.pauseProducing()
    stream.write(pattern(0, 3 * frames.MAX_DATA_CHUNK))
    size = 1000
    per_turn = frames.MAX_DATA_CHUNK // (HEADER_SIZE + size)  # 64 datagrams in 64 KiB
    for n in range(3 * per_turn + 5):
        assert mux.datagrams.send(1, bytes([n % 256]) * size)
    mark = len(transport.frames())
    mux.resumeProducing()
    expected = (["D"] * per_turn + ["S"]) * 3 + ["D"] * 5
    assert kinds(transport, mark) == expected
    assert mux.datagrams.queued == 0 and stream.queued_bytes == 0


def test_a_side_with_nothing_to_send_passes_its_turn() -> None:
    mux, transport = one_side(BIG_QUEUES)
    mux.datagrams.open_flow(1, Receiver())
    first = mux.open_stream(TARGET)
    second = mux.open_stream(TARGET)
    first.attach(RecordingApp())
    second.attach(RecordingApp())
    mux.pauseProducing()
    first.write(pattern(0, 2 * frames.MAX_DATA_CHUNK))
    second.write(pattern(1, 2 * frames.MAX_DATA_CHUNK))
    mux.datagrams.send(1, b"one datagram")
    mark = len(transport.frames())
    mux.resumeProducing()
    data = [f for f in transport.frames()[mark:] if f.type in (FrameType.DATA, FrameType.DATAGRAM)]
    # The datagram's turn comes first; then the streams take all the turns, round-robin.
    assert [(f.type.name, f.stream_id) for f in data] == [
        ("DATAGRAM", 1),
        ("DATA", first.stream_id),
        ("DATA", second.stream_id),
        ("DATA", first.stream_id),
        ("DATA", second.stream_id),
    ]


def test_neither_side_starves_across_many_pauses() -> None:
    """A transport that fills after every frame: each drain lets one turn through.

    A datagram source keeps the queue full and a stream keeps a backlog;
    the turns keep alternating from one pause to the next.
    """
    transport = PausingTransport(capacity=10**9)
    mux, _ = one_side(BIG_QUEUES, transport)
    mux.datagrams.open_flow(1, Receiver())
    stream = mux.open_stream(TARGET)
    stream.attach(RecordingApp())
    mark = len(transport.frames())
    transport.capacity = 1
    stream.write(pattern(0, 20 * frames.MAX_DATA_CHUNK))  # one frame written, then paused
    for _ in range(10):
        for _ in range(70):  # more than one turn's worth each time
            mux.datagrams.send(1, b"d" * 1000)
        transport.drain(capacity=1)
    assert kinds(transport, mark) == ["S"] + ["D", "S"] * 5


def test_streams_do_not_starve_datagrams_under_a_bulk_transfer() -> None:
    """A bulk stream and an occasional datagram: the datagram waits at most one DATA frame."""
    transport = PausingTransport(capacity=frames.MAX_DATA_CHUNK)
    mux, _ = one_side(BIG_QUEUES, transport)
    mux.datagrams.open_flow(1, Receiver())
    stream = mux.open_stream(TARGET)
    stream.attach(RecordingApp())
    stream.write(pattern(0, 40 * frames.MAX_DATA_CHUNK))
    for round_ in range(5):
        mark = len(transport.frames())
        mux.datagrams.send(1, b"ping %d" % round_)  # queued: the transport is paused
        transport.drain(capacity=2 * frames.MAX_DATA_CHUNK)
        assert kinds(transport, mark) == ["D", "S", "S"]  # then the stream goes on
    assert mux.datagrams.counters().sent == 5
    assert sum(mux.datagrams.counters().send_drops.values()) == 0


def test_a_datagram_sent_while_the_transport_accepts_data_is_written_at_once() -> None:
    mux, transport = one_side()
    mux.datagrams.open_flow(1, Receiver())
    stream = mux.open_stream(TARGET)
    stream.attach(RecordingApp())
    stream.write(b"s")
    mux.datagrams.send(1, b"d")
    stream.write(b"s")
    assert kinds(transport) == ["S", "D", "S"]
    assert mux.datagrams.queued == 0
