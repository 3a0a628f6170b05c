"""A TUN descriptor on the reactor: one IP packet per read, one per write, never blocking.

L{TunLink} adopts an open, non-blocking TUN descriptor (Twisted's
C{TuntapPort} only opens its own): it is an L{IReadDescriptor} the reactor
watches, and each readable turn reads at most L{READ_BURST} packets of at
most the MTU each, handing every one to C{on_packet} (a network session
sends it on its datagram flow); while a turn reads, the channel's writes are
held (C{writes}, L{shared.protocol.datagrams.WriteHold}), so the burst leaves
in one TLS write.  While the channel's datagram queue is full the link
stops reading (L{TunLink.pause_reading}, a
L{shared.protocol.datagrams.DatagramSource}) and reads again once it drained
(L{TunLink.resume_reading}): the interface's own queue drops the surplus,
not this process after reading and framing it.  L{TunLink.write_packet} writes one packet
into the descriptor; when the device's queue is full (C{EAGAIN}) or the
kernel refuses the packet, it is dropped and counted: datagrams are
unreliable by design, and nothing waits.  No write buffer exists, so
nothing grows.

The descriptor's end (a read error, or end of file) is reported once through
C{on_lost}; L{TunLink.stop} takes it off the reactor without reporting (the
session is ending and closes the descriptor itself).  L{TunLink.counters}
is a frozen snapshot the live view can read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.abstract import FileDescriptor
from twisted.python.failure import Failure

from shared.protocol.datagrams import WriteHold

READ_BURST = 64
"""Most packets read in one reactor turn (then the reactor serves the others)."""


@dataclass(frozen=True)
class TunCounters:
    """The packets of one TUN link so far: out (interface → Jumpoint) and in (back)."""

    packets_out: int = 0
    bytes_out: int = 0
    dropped_out: int = 0
    """Packets read from the interface that the flow dropped (full queue, too large, closed)."""
    packets_in: int = 0
    bytes_in: int = 0
    dropped_in: int = 0
    """Packets from the Jumpoint not written because the device's queue was full (C{EAGAIN})."""
    refused_in: int = 0
    """Packets from the Jumpoint the kernel refused (malformed, the interface down)."""

    def as_dict(self) -> dict[str, int]:
        return {
            "packets_out": self.packets_out,
            "bytes_out": self.bytes_out,
            "dropped_out": self.dropped_out,
            "packets_in": self.packets_in,
            "bytes_in": self.bytes_in,
            "dropped_in": self.dropped_in,
            "refused_in": self.refused_in,
        }


class TunLink(FileDescriptor):
    """One TUN descriptor read and written on the reactor (module docstring).

    @param fd: the open descriptor, already non-blocking.
    @param mtu: the interface's MTU: the size of each read.
    @param on_packet: takes one packet read; returns C{False} if it was dropped.
    @param on_lost: told once why the descriptor ended (not after L{stop}).
    @param writes: held while a turn reads (the flow's channel), if given.
    """

    def __init__(
        self,
        fd: int,
        mtu: int,
        on_packet: Callable[[bytes], bool],
        on_lost: Callable[[str], None],
        reactor: Any = None,
        writes: WriteHold | None = None,
    ) -> None:
        super().__init__(reactor)
        self._fd = fd
        self._writes = writes
        self.mtu = mtu
        self._on_packet = on_packet
        self._on_lost = on_lost
        self._stopped = False
        self._paused = False
        self._counts = dict.fromkeys(TunCounters.__dataclass_fields__, 0)

    def fileno(self) -> int:
        return -1 if self._stopped else self._fd

    def logPrefix(self) -> str:
        return "TunLink"

    def start(self) -> None:
        self.connected = 1
        if not self._paused:
            self.startReading()  # type: ignore[no-untyped-call]

    def pause_reading(self) -> None:
        """The flow's queue is full: leave packets in the interface until L{resume_reading}."""
        if not self._paused:
            self._paused = True
            if not self._stopped:
                self.stopReading()  # type: ignore[no-untyped-call]

    def resume_reading(self) -> None:
        """The flow's queue drained: read again."""
        if self._paused:
            self._paused = False
            if not self._stopped:
                self.startReading()  # type: ignore[no-untyped-call]

    def stop(self) -> None:
        """Off the reactor for good, without telling C{on_lost} (the caller closes the fd)."""
        if not self._stopped:
            self.stopReading()  # type: ignore[no-untyped-call]
            self._stopped = True
            self.connected = 0
            self.disconnected = 1

    def doRead(self) -> Failure | None:
        writes = self._writes
        if writes is None:
            return self._read_burst()
        writes.hold_writes()
        try:
            return self._read_burst()
        finally:
            writes.release_writes()

    def _read_burst(self) -> Failure | None:
        """Read up to L{READ_BURST} packets, each handed to C{on_packet}."""
        fd, mtu, on_packet, counts = self._fd, self.mtu, self._on_packet, self._counts
        read = os.read
        for _ in range(READ_BURST):
            if self._stopped or self._paused:
                return None
            try:
                packet = read(fd, mtu)
            except BlockingIOError:
                return None
            except OSError as error:
                return Failure(error)
            if not packet:
                return Failure(EOFError("the interface's descriptor reached its end"))
            counts["packets_out"] += 1
            counts["bytes_out"] += len(packet)
            if not on_packet(packet):
                counts["dropped_out"] += 1
        return None

    def connectionLost(self, reason: Failure) -> None:
        """The reactor saw the descriptor end: off the reactor, C{on_lost} told once."""
        if self._stopped:
            return
        self.stop()
        value = reason.value
        if isinstance(value, OSError):
            why = value.strerror or str(value)
        else:
            why = str(value) or "the descriptor closed"
        self._on_lost(why)

    def write_packet(self, packet: bytes) -> bool:
        """Write one packet into the interface now; C{False}: dropped (and counted)."""
        counts = self._counts
        if self._stopped:
            counts["dropped_in"] += 1
            return False
        try:
            os.write(self._fd, packet)
        except BlockingIOError:  # the device's queue is full: a datagram may be lost
            counts["dropped_in"] += 1
            return False
        except OSError:  # EINVAL, EIO...: a packet the kernel refuses, the interface down
            counts["refused_in"] += 1
            return False
        counts["packets_in"] += 1
        counts["bytes_in"] += len(packet)
        return True

    def counters(self) -> TunCounters:
        return TunCounters(**self._counts)
