"""Local connections accepted while `jump open` reconnects: held, then let through or refused.

A tunnel's listener stays bound while the channel is down.  A connection it
accepts meanwhile becomes a L{HeldConnection}: its reading is paused and it
waits, at most C{connect_wait} seconds, for the new channel.  Once the
session is up again L{HeldConnections.release} hands each one to the
tunnel's real factory (the protocol it builds is attached to the same
transport and gets whatever arrived while it waited); if the wait runs out,
or the reconnect gives up, it is closed with a reason that starts with
C{reconnecting:}.  At most L{MAX_HELD} connections wait at once; beyond that
a connection is refused at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

MAX_HELD = 64
"""Connections that wait for the new channel at the same time."""
MAX_HELD_BYTES = 256 * 1024
"""Bytes a held connection may send before its reading pauses takes hold (then it is closed)."""

Build = Callable[[], Protocol | None]
"""The tunnel's real protocol for a connection (C{None}: refused by the session's rules)."""
Refused = Callable[[str], None]
"""Told of every connection closed while waiting, with the reason."""


@implementer(IHalfCloseableProtocol)
class HeldConnection(Protocol):
    """A local connection waiting for the channel; then the front of the real protocol."""

    def __init__(self, holder: HeldConnections, build: Build) -> None:
        self.holder = holder
        self.build = build
        self.inner: Protocol | None = None
        self.waiting: list[bytes] = []
        self.waiting_bytes = 0
        self.timer: IDelayedCall | None = None
        self.gone = False

    def connectionMade(self) -> None:
        pause = getattr(self.transport, "pauseProducing", None)
        if pause is not None:
            pause()
        self.holder.waiting(self)

    def dataReceived(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.dataReceived(data)
            return
        self.waiting.append(data)
        self.waiting_bytes += len(data)
        if self.waiting_bytes > MAX_HELD_BYTES:
            self.refuse("reconnecting: the connection sent too much while it waited")

    def readConnectionLost(self) -> None:
        half: Any = IHalfCloseableProtocol(self.inner, None)
        if half is not None:
            half.readConnectionLost()
        elif self.inner is None and self.transport is not None:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        half: Any = IHalfCloseableProtocol(self.inner, None)
        if half is not None:
            half.writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.gone = True
        self.holder.forget(self)
        if self.inner is not None:
            self.inner.connectionLost(reason)

    def alive(self) -> bool:
        return not self.gone

    def release(self) -> None:
        """The channel is back: attach the real protocol (or close, if it refuses)."""
        if self.gone or self.transport is None:
            return
        inner = self.build()
        if inner is None:
            self.transport.abortConnection()  # type: ignore[attr-defined]
            return
        self.inner = inner
        inner.makeConnection(self.transport)  # type: ignore[no-untyped-call]
        waiting, self.waiting, self.waiting_bytes = self.waiting, [], 0
        for data in waiting:
            if not self.alive():
                return
            inner.dataReceived(data)
        resume = getattr(self.transport, "resumeProducing", None)
        if self.alive() and resume is not None:
            resume()

    def refuse(self, reason: str) -> None:
        if self.gone or self.transport is None:
            return
        self.holder.forget(self)
        self.holder.note_refused(reason)
        self.transport.abortConnection()  # type: ignore[attr-defined]


class HeldConnections:
    """The connections waiting for the channel (bounded), each with its own deadline."""

    def __init__(
        self, clock: IReactorTime, connect_wait: float, refused: Refused, limit: int = MAX_HELD
    ) -> None:
        self.clock = clock
        self.connect_wait = connect_wait
        self.refused = refused
        self.limit = limit
        self.held: set[HeldConnection] = set()
        self.released = 0
        self.refused_count = 0

    def full(self) -> bool:
        return len(self.held) >= self.limit

    def hold(self, build: Build) -> HeldConnection:
        return HeldConnection(self, build)

    def waiting(self, connection: HeldConnection) -> None:
        if self.full():
            connection.refuse(f"reconnecting: {self.limit} connections already wait")
            return
        self.held.add(connection)
        connection.timer = self.clock.callLater(
            self.connect_wait,
            connection.refuse,
            f"reconnecting: the channel was not back within --connect-wait"
            f" ({self.connect_wait:g}s)",
        )

    def note_refused(self, reason: str) -> None:
        self.refused_count += 1
        self.refused(reason)

    def forget(self, connection: HeldConnection) -> None:
        self.held.discard(connection)
        timer, connection.timer = connection.timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def release_all(self) -> int:
        """The channel is back: every held connection goes through; returns how many."""
        count = 0
        for connection in list(self.held):
            self.forget(connection)
            connection.release()
            count += 1
        self.released += count
        return count

    def refuse_all(self, reason: str) -> int:
        count = 0
        for connection in list(self.held):
            connection.refuse(reason)
            count += 1
        return count
