"""A multiplexed stream as a Twisted transport: ordinary Protocols run on it, with backpressure.

Two multiplexers back to back in memory (L{tests.unit.test_mux.Pair}); on
each end of a stream a L{StreamTransport} carries a plain Twisted protocol
(an echo server, a L{LineReceiver}).
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IHalfCloseableProtocol,
    IPullProducer,
    IPushProducer,
    ITransport,
)
from twisted.internet.protocol import Protocol
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from shared.protocol.frames import ErrorCode, FrameType
from shared.protocol.mux import MuxSettings, Stream
from shared.protocol.stream_transport import StreamAddress, StreamReset, StreamTransport
from tests.unit.test_mux import TARGET, Pair

SMALL = MuxSettings(initial_window=4096, stream_queue_limit=1024, max_pending_per_stream=65536)


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class Lines(LineReceiver):
    delimiter = b"\n"

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.lost: list[Failure] = []
        self.made = 0

    def connectionMade(self) -> None:
        self.made += 1

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        self.lost.append(reason)


class Recorder(Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.events: list[str] = []
        self.lost: list[Failure] = []

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        self.lost.append(reason)


@implementer(IHalfCloseableProtocol)
class HalfCloser(Recorder):
    def readConnectionLost(self) -> None:
        self.events.append("read lost")

    def writeConnectionLost(self) -> None:
        self.events.append("write lost")


@implementer(IPushProducer)
class PushSource:
    def __init__(self) -> None:
        self.events: list[str] = []

    def pauseProducing(self) -> None:
        self.events.append("pause")

    def resumeProducing(self) -> None:
        self.events.append("resume")

    def stopProducing(self) -> None:
        self.events.append("stop")


def connected(
    pair: Pair, client: Protocol, server: Protocol
) -> tuple[StreamTransport, StreamTransport]:
    """Open a stream from the console and run C{client} and C{server} on its two ends."""
    pair.server.handler.make_app = None
    stream = pair.client.mux.open_stream(TARGET)
    near = StreamTransport.connect(stream, client)
    pair.flush()
    peer, _ = pair.server.handler.requested[-1]
    far = StreamTransport.connect(peer, server)
    pair.flush()
    return near, far


def test_the_adapter_provides_transport_producer_and_consumer() -> None:
    pair = Pair()
    near, _ = connected(pair, Lines(), Echo())
    assert verifyObject(ITransport, near)
    assert verifyObject(IPushProducer, near)
    assert verifyObject(IConsumer, near)


def test_addresses_name_the_channel_and_the_stream() -> None:
    pair = Pair()
    console: Any = pair.client.transport  # the channels' transports, with a real one's addresses
    console.getHost, console.getPeer = lambda: "console:1", lambda: "jumpoint:2"
    jumpoint: Any = pair.server.transport
    jumpoint.getHost, jumpoint.getPeer = lambda: "jumpoint:2", lambda: "console:1"
    near, far = connected(pair, Lines(), Echo())
    peer = near.getPeer()
    assert verifyObject(IAddress, peer)
    assert peer == StreamAddress("jumpoint:2", near.stream.stream_id)
    assert near.getHost() == StreamAddress("console:1", near.stream.stream_id)
    assert far.getPeer() == StreamAddress("console:1", near.stream.stream_id)


def test_a_line_receiver_talks_to_an_echo_protocol_over_a_stream() -> None:
    pair = Pair()
    lines = Lines()
    near, _ = connected(pair, lines, Echo())
    assert lines.made == 1 and lines.transport is near
    lines.sendLine(b"hello")
    near.writeSequence([b"wor", b"ld\n", b"third ", b"line\n"])
    pair.flush()
    assert lines.lines == [b"hello", b"world", b"third line"]


def test_a_registered_producer_is_paused_when_credit_runs_out_and_resumed_on_window_update() -> (
    None
):
    pair = Pair(SMALL)
    sink = Recorder()
    near, far = connected(pair, Recorder(), sink)
    source = PushSource()
    near.registerProducer(source, True)
    far.pauseProducing()  # the receiver's own consumer is full: hold back credit
    chunk = b"x" * 512
    for _ in range(12):  # the 4 KiB window, then the 1 KiB queue limit
        near.write(chunk)
        pair.flush()
    assert source.events == ["pause"]
    assert near.stream.send_window == 0
    updates_before = len(pair.server.transport.frames_of(FrameType.WINDOW_UPDATE))
    far.resumeProducing()
    pair.flush()
    assert len(pair.server.transport.frames_of(FrameType.WINDOW_UPDATE)) > updates_before
    assert source.events == ["pause", "resume"]
    assert bytes(sink.data) == chunk * 12


def test_a_producer_registered_while_the_stream_is_full_starts_paused() -> None:
    pair = Pair(SMALL)
    near, far = connected(pair, Recorder(), Recorder())
    far.pauseProducing()
    near.write(b"y" * 8192)
    pair.flush()
    source = PushSource()
    near.registerProducer(source, True)
    assert source.events == ["pause"]
    with pytest.raises(RuntimeError):
        near.registerProducer(PushSource(), True)


def test_a_pull_producer_is_asked_for_more_each_turn_until_unregistered() -> None:
    pair = Pair()
    sink = Recorder()
    near, _ = connected(pair, Recorder(), sink)

    @implementer(IPullProducer)
    class Pull:
        calls = 0

        def resumeProducing(self) -> None:
            self.calls += 1
            near.write(b"%d;" % self.calls)
            if self.calls == 3:
                near.unregisterProducer()

        def stopProducing(self) -> None:
            raise AssertionError("not stopped")

    pull = Pull()
    near.registerProducer(pull, False)
    for _ in range(5):
        pair.clock.advance(0)
    pair.flush()
    assert pull.calls == 3
    assert bytes(sink.data) == b"1;2;3;"


def test_the_peer_fin_half_closes_a_half_closeable_protocol() -> None:
    pair = Pair()
    far_protocol = HalfCloser()
    near_protocol = Recorder()
    near, far = connected(pair, near_protocol, far_protocol)
    near.write(b"request")
    near.loseWriteConnection()
    pair.flush()
    assert far_protocol.events == ["read lost"] and far_protocol.lost == []
    far.write(b"answer")  # the other direction still flows
    far.loseConnection()
    pair.flush()
    assert bytes(far_protocol.data) == b"request"
    assert bytes(near_protocol.data) == b"answer"
    for protocol in (near_protocol, far_protocol):
        assert len(protocol.lost) == 1 and protocol.lost[0].check(ConnectionDone)
    assert near.stream.closed and far.stream.closed


def test_the_peer_fin_ends_a_plain_protocol_and_our_fin_follows() -> None:
    pair = Pair()
    plain, near_protocol = Recorder(), Recorder()
    near, _ = connected(pair, near_protocol, plain)
    near.loseConnection()
    assert near.disconnecting
    pair.flush()
    assert len(plain.lost) == 1 and plain.lost[0].check(ConnectionDone)
    assert len(near_protocol.lost) == 1 and near_protocol.lost[0].check(ConnectionDone)
    assert near.stream.closed


def test_a_reset_stream_loses_the_connection_with_the_reason() -> None:
    pair = Pair()
    near_protocol, far_protocol = Recorder(), Recorder()
    near, far = connected(pair, near_protocol, far_protocol)
    source = PushSource()
    far.registerProducer(source, True)
    near.abortConnection()
    near.abortConnection()  # once is enough
    pair.flush()
    assert len(near_protocol.lost) == 1 and near_protocol.lost[0].check(ConnectionAborted)
    assert len(far_protocol.lost) == 1
    reset = far_protocol.lost[0].value
    assert isinstance(reset, StreamReset) and reset.code == ErrorCode.CANCEL
    assert source.events == ["stop"]
    assert near.stream.closed and far.stream.closed


def test_a_stream_reset_before_the_protocol_ran_is_reported_after_connection_made() -> None:
    pair = Pair()
    pair.server.handler.make_app = None
    stream = pair.client.mux.open_stream(TARGET)
    pair.flush()
    peer: Stream = pair.server.handler.requested[-1][0]
    peer.reset(ErrorCode.REFUSED, "no")
    pair.flush()
    lines = Lines()
    StreamTransport.connect(stream, lines)
    assert lines.made == 1
    assert len(lines.lost) == 1 and lines.lost[0].check(ConnectionLost)
    assert "no" in lines.lost[0].getErrorMessage()


def test_write_takes_bytes_only() -> None:
    pair = Pair()
    near, _ = connected(pair, Recorder(), Recorder())
    bad: Any = "text"
    with pytest.raises(TypeError):
        near.write(bad)


def test_a_reset_while_our_fin_waits_is_a_reset_not_an_orderly_end() -> None:
    pair = Pair(SMALL)
    near_protocol = HalfCloser()
    near, far = connected(pair, near_protocol, HalfCloser())
    far.pauseProducing()
    near.write(b"z" * 8192)  # more than the window: the rest waits in the stream
    near.loseWriteConnection()
    far.loseWriteConnection()
    pair.flush()
    assert near_protocol.events == ["read lost"] and near_protocol.lost == []
    assert near.stream.local_fin and near.stream.remote_fin and not near.stream.closed
    far.abortConnection()
    pair.flush()
    assert len(near_protocol.lost) == 1
    assert isinstance(near_protocol.lost[0].value, StreamReset)
