"""The thin protocol under both ends of the channel: TLS handshake, then the mux.

L{ChannelProtocol} is wrapped in Twisted's TLS protocol.  It waits for the
handshake (with a deadline), checks the negotiated ALPN protocol, then hands
every byte to its L{Multiplexer}.  Subclasses implement the L{MuxHandler}
callbacks plus L{ChannelProtocol.channel_started} and
L{ChannelProtocol.channel_lost}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IHandshakeListener, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from shared.protocol.frames import ALPN_PROTOCOL
from shared.protocol.mux import Multiplexer, MuxSettings, Stream
from shared.protocol.sockets import tune_transport


@implementer(IHandshakeListener)
class ChannelProtocol(Protocol):
    """Base class of the console's and the Jumpoint's channel protocols."""

    log = Logger()
    is_client = False

    def __init__(
        self, clock: IReactorTime, settings: MuxSettings, handshake_timeout: float = 10.0
    ) -> None:
        self.clock = clock
        self.settings = settings
        self.handshake_timeout = handshake_timeout
        self.mux: Multiplexer | None = None
        self.handshake_timed_out = False
        self._handshake_timer: IDelayedCall | None = None

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
