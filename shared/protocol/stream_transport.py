"""A multiplexed stream as a real Twisted transport, so that any Protocol can run on it.

L{StreamTransport} is the stream's application (L{StreamApplication}) on one
side and an L{ITransport} to a Twisted L{IProtocol} on the other (compare
magic-wormhole's dilation C{SubChannel}, a transport, producer and consumer
over one subchannel).  It provides:

* L{ITransport}: C{write} and C{writeSequence} queue DATA on the stream,
  C{loseConnection} ends our direction (FIN after every queued byte),
  C{abortConnection} resets the stream, C{getHost} / C{getPeer} return a
  L{StreamAddress} (the channel's address and the stream id);
  C{loseWriteConnection} half-closes, as on TCP;
* L{IPushProducer}, for whoever consumes what the protocol receives:
  C{pauseProducing} holds back the stream's credit (the peer stops sending
  once its window is used up), C{resumeProducing} releases it;
* L{IConsumer}, for whatever feeds the protocol's writes: a registered push
  producer is paused when the stream's queue is full (its credit is used up,
  or the channel is), and resumed when WINDOW_UPDATE lets the queue drain; a
  pull producer is asked for more on each reactor turn while there is room.

Half-close: the peer's FIN reaches an L{IHalfCloseableProtocol} as
C{readConnectionLost}; any other protocol sees the connection end (our FIN
follows, as Twisted does for a TCP peer's end of input).  The protocol hears
C{connectionLost} once: with L{ConnectionDone} when both FINs have gone
through (every queued byte was sent), with L{ConnectionAborted} after
C{abortConnection}, and with L{StreamReset} (a L{ConnectionLost} that
carries the reset's code and reason) when the stream is reset.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IHalfCloseableProtocol,
    IProducer,
    IProtocol,
    IPullProducer,
    IPushProducer,
    ITransport,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from shared.protocol.frames import ErrorCode, describe_code
from shared.protocol.mux import Stream


@implementer(IAddress)
@dataclass(frozen=True)
class StreamAddress:
    """One end of a stream: the channel's own address on that side, and the stream id.

    @ivar channel: the channel transport's host or peer address (C{None} once
        the channel is gone).
    """

    channel: object
    stream_id: int

    def __str__(self) -> str:
        return f"{self.channel} stream {self.stream_id}"


class StreamReset(ConnectionLost):
    """The stream was reset (by the peer, or by the multiplexer): C{code} and C{reason} say why."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{describe_code(code)}: {reason}")
        self.code = code
        self.reason = reason


_DONE = Failure(ConnectionDone())
"""The reason of every orderly end (as Twisted's own C{connectionDone}): no Failure per close."""


@implementer(ITransport, IPushProducer, IConsumer)
class StreamTransport:
    """A Twisted transport over one L{Stream} (see the module docstring).

    Create it with L{StreamTransport.connect}: that makes the connection to
    the protocol, then attaches the transport to the stream.

    @ivar disconnecting: whether C{loseConnection} (or an abort) was called.
    """

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.protocol: IProtocol | None = None
        self.disconnecting = False
        self._producer: IProducer | None = None
        self._streaming = False
        self._sending_paused = False
        self._pull_call: IDelayedCall | None = None
        self._lost = False
        self._half_closeable: IHalfCloseableProtocol | None = None

    @classmethod
    def connect(cls, stream: Stream, protocol: IProtocol) -> StreamTransport:
        """Run C{protocol} on C{stream}: C{makeConnection}, then stream traffic reaches it."""
        transport = cls(stream)
        transport.protocol = protocol
        if IHalfCloseableProtocol.providedBy(protocol):  # asked once, not per FIN
            transport._half_closeable = IHalfCloseableProtocol(protocol)
        protocol.makeConnection(transport)
        stream.on_closed_in_order = transport._closed_in_order
        stream.attach(transport)  # a stream reset before now is reported here
        return transport

    # -- ITransport ------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not isinstance(data, bytes):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        self.stream.write(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        """End our direction (FIN after the queued bytes); the connection ends with the peer's."""
        if self.disconnecting or self._lost:
            return
        self.disconnecting = True
        self.unregisterProducer()
        self.stream.end_write()

    def loseWriteConnection(self) -> None:
        """Half-close: FIN after the queued bytes; the peer's data still arrives."""
        if self._lost:
            return
        self.stream.end_write()

    def abortConnection(self) -> None:
        """Reset the stream now; queued bytes are dropped."""
        if self._lost:
            return
        self.disconnecting = True
        self.stream.reset(ErrorCode.CANCEL, "the connection was aborted")
        self._connection_lost(Failure(ConnectionAborted()))

    def getPeer(self) -> StreamAddress:
        return StreamAddress(self._channel_address("getPeer"), self.stream.stream_id)

    def getHost(self) -> StreamAddress:
        return StreamAddress(self._channel_address("getHost"), self.stream.stream_id)

    def _channel_address(self, which: str) -> object:
        channel = self.stream.mux.transport
        return None if channel is None else getattr(channel, which)()

    # -- IPushProducer (inbound: the protocol's consumer is full) --------

    def pauseProducing(self) -> None:
        """Hold back the stream's credit: the peer stops once its window is used."""
        self.stream.pause_receiving()

    def resumeProducing(self) -> None:
        self.stream.resume_receiving()

    def stopProducing(self) -> None:
        """The consumer is gone for good: never re-open the window."""
        self.stream.pause_receiving()

    # -- IConsumer (outbound: what feeds our writes) ---------------------

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        if self._producer is not None:
            raise RuntimeError(f"a producer ({self._producer!r}) is already registered")
        if self._lost:
            producer.stopProducing()
            return
        self._producer = producer
        self._streaming = streaming
        if streaming:
            if self._sending_paused:
                IPushProducer(producer).pauseProducing()
        else:
            self._pull_soon()

    def unregisterProducer(self) -> None:
        self._producer = None
        self._cancel_pull()

    def _pull_soon(self) -> None:
        """Ask a pull producer for more on the next reactor turn, while the stream has room."""
        if self._pull_call is None and not self._sending_paused:
            self._pull_call = self.stream.mux.clock.callLater(0, self._pull)

    def _pull(self) -> None:
        self._pull_call = None
        producer = self._producer
        if producer is None or self._streaming or self._sending_paused or self._lost:
            return
        IPullProducer(producer).resumeProducing()
        if self._producer is producer:
            self._pull_soon()

    def _cancel_pull(self) -> None:
        call, self._pull_call = self._pull_call, None
        if call is not None and call.active():
            call.cancel()

    # -- StreamApplication (what the stream tells us) --------------------

    def stream_data(self, data: bytes) -> None:
        if self.protocol is not None and not self._lost:
            self.protocol.dataReceived(data)

    def stream_ended(self) -> None:
        protocol = self.protocol
        if protocol is None or self._lost:
            return
        if self._half_closeable is not None:
            self._half_closeable.readConnectionLost()
        else:
            self.stream.end_write()  # as Twisted closes a TCP connection on the peer's EOF

    def stream_reset(self, code: int, reason: str) -> None:
        self._connection_lost(Failure(StreamReset(code, reason)))

    def pause_sending(self) -> None:
        self._sending_paused = True
        if self._producer is not None and self._streaming:
            IPushProducer(self._producer).pauseProducing()

    def resume_sending(self) -> None:
        self._sending_paused = False
        if self._producer is None:
            return
        if self._streaming:
            IPushProducer(self._producer).resumeProducing()
        else:
            self._pull_soon()

    # -- the end ---------------------------------------------------------

    def _closed_in_order(self) -> None:
        """Both FINs went through: the connection is done."""
        self._connection_lost(_DONE)

    def _connection_lost(self, reason: Failure) -> None:
        if self._lost:
            return
        self._lost = True
        producer, self._producer = self._producer, None
        self._cancel_pull()
        if producer is not None:
            producer.stopProducing()
        if self.protocol is not None:
            self.protocol.connectionLost(reason)


__all__ = ["StreamAddress", "StreamReset", "StreamTransport"]
