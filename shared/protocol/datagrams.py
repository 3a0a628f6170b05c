"""The datagram layer of a channel: flows of unreliable datagrams (sans-IO).

A channel carries, beside its reliable streams, DATAGRAM frames
(docs/protocol.md, "Datagrams"): one IP packet or UDP datagram per frame,
with no credit, no acknowledgement and no retransmission.  The frame's id
field names a **flow**; this module keeps a channel's table of flows and its
outgoing datagram queue:

* the application opens and closes flows (L{Datagrams.open_flow},
  L{Datagrams.close_flow}); both ends open a flow under the same id, agreed
  by the control exchange of the item kind that uses it.  The table holds at
  most L{DatagramLimits.max_flows} flows;
* L{Datagrams.send} writes a datagram at once while the transport accepts
  data and nothing is queued ahead of it; otherwise it joins one bounded
  queue per channel (L{DatagramLimits.queue_bytes} bytes of frames and
  L{DatagramLimits.queue_datagrams} datagrams).  A datagram that does not
  fit is dropped (drop-tail), never waited for, so a full transport never
  blocks the sender;
* a reader that would only feed a full queue can pause instead
  (L{Datagrams.add_source}, L{DatagramSource}): once the queue is full it is
  told to stop reading, and once the writer drained the queue to half its
  bounds to read again, so the kernel's own queue (a TUN's, a socket's)
  drops the surplus rather than this process reading, framing and dropping
  it.  Nothing else waits: streams and the writer go on as before;
* the multiplexer's writer drains the queue in turns (L{Datagrams.send_turn}),
  alternating with the streams' DATA frames: see L{shared.protocol.mux};
* a datagram for a flow that is not open, sent or received, is dropped and
  counted, never an error: a flow may close while datagrams are in flight.

Every drop is counted by L{DropReason}, in each direction, and
L{Datagrams.counters} gives the figures for statistics.  The module does no
I/O: the multiplexer hands it a C{write} function and a C{writable} test.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from shared.lifecycle import Lifecycle, Transitions
from shared.protocol import frames


class DatagramReceiver(Protocol):
    """What a flow tells its application (a UDP relay, a TUN device)."""

    def datagram_received(self, payload: bytes) -> None:
        """One datagram of the flow arrived from the peer."""


class WriteHold(Protocol):
    """Holds a channel's writes for a burst: one TLS write for many frames (the multiplexer)."""

    def hold_writes(self) -> None:
        """Collect the frames written from now on (nestable)."""

    def release_writes(self) -> None:
        """End one L{hold_writes}; the last one writes out what was collected."""


class DatagramSource(Protocol):
    """A reader feeding a channel's datagram queue (a TUN link) that may pause."""

    def pause_reading(self) -> None:
        """The queue is full: stop reading until L{resume_reading}."""

    def resume_reading(self) -> None:
        """The queue drained to half its bounds: read again."""


def _no_hold() -> None:
    pass


class DropReason(enum.StrEnum):
    """Why a datagram was dropped (the names used in statistics)."""

    QUEUE_FULL = "queue_full"
    """The transport was paused and the channel's queue had no room for it."""
    UNKNOWN_FLOW = "unknown_flow"
    """Its flow is not open (never was, or closed while the datagram was in flight)."""
    TOO_LARGE = "too_large"
    """Longer than L{DatagramLimits.max_datagram}."""


class FlowState(enum.Enum):
    """A flow's lifecycle: open until the application or the channel closes it."""

    OPEN = "open"
    CLOSED = "closed"


class FlowEvent(enum.Enum):
    CLOSE = enum.auto()
    """L{Datagrams.close_flow}, or the channel closing (L{Datagrams.close})."""


FLOW_TRANSITIONS: Transitions[FlowState, FlowEvent] = Transitions(
    "flow",
    FlowState,
    FlowEvent,
    {FlowState.OPEN: {FlowEvent.CLOSE: FlowState.CLOSED}, FlowState.CLOSED: {}},
)


class FlowRefused(Exception):
    """L{Datagrams.open_flow} cannot open the flow (the message says why)."""


class FlowLimitReached(FlowRefused):
    """The channel already carries L{DatagramLimits.max_flows} flows."""


@dataclass(frozen=True)
class DatagramLimits:
    """The bounds of one channel's datagram layer.

    The multiplexer fills them from L{shared.protocol.mux.MuxSettings}
    (C{max_flows}, C{datagram_queue_limit}, C{datagram_queue_length}; their
    defaults are in docs/protocol.md, "Limits").
    """

    max_flows: int
    """Most flows open at once."""
    queue_bytes: int
    """Most bytes of DATAGRAM frames (headers included) waiting for the transport."""
    queue_datagrams: int
    """Most datagrams waiting for the transport."""
    max_datagram: int = frames.MAX_DATAGRAM_PAYLOAD
    """Largest payload this end sends."""

    def __post_init__(self) -> None:
        for name in ("max_flows", "queue_bytes", "queue_datagrams"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 0 <= self.max_datagram <= frames.MAX_DATAGRAM_PAYLOAD:
            raise ValueError(f"max_datagram must be from 0 to {frames.MAX_DATAGRAM_PAYLOAD}")


def _no_drops() -> dict[DropReason, int]:
    return dict.fromkeys(DropReason, 0)


@dataclass
class Flow:
    """One open (or closed) flow and its counters.  Created by L{Datagrams.open_flow}."""

    table: Datagrams
    flow_id: int
    receiver: DatagramReceiver
    sent: int = 0
    sent_bytes: int = 0
    received: int = 0
    received_bytes: int = 0
    dropped: int = 0
    """Datagrams of this flow dropped on the way out (full queue, too large, closed)."""
    _lifecycle: Lifecycle[FlowState, FlowEvent] = field(
        default_factory=lambda: FLOW_TRANSITIONS.start(FlowState.OPEN)
    )

    @property
    def state(self) -> FlowState:
        return self._lifecycle.state

    @property
    def closed(self) -> bool:
        return self._lifecycle.state is FlowState.CLOSED

    def send(self, payload: bytes) -> bool:
        """L{Datagrams.send} on this flow."""
        return self.table.send(self.flow_id, payload)

    def close(self) -> None:
        """L{Datagrams.close_flow} for this flow (a no-op once it is closed)."""
        if not self.closed:
            self.table.close_flow(self.flow_id)


@dataclass(frozen=True)
class DatagramCounters:
    """A snapshot of a channel's datagram figures (for the live view and C{stats})."""

    flows: int
    queued: int
    queued_bytes: int
    sent: int
    sent_bytes: int
    received: int
    received_bytes: int
    send_drops: Mapping[DropReason, int]
    """Outgoing datagrams dropped, by reason."""
    receive_drops: Mapping[DropReason, int]
    """Incoming datagrams dropped, by reason (only C{unknown_flow} happens)."""

    def as_dict(self) -> dict[str, int | dict[str, int]]:
        """The figures as JSON-ready values, drops keyed by the reasons' names."""
        return {
            "flows": self.flows,
            "queued": self.queued,
            "queued_bytes": self.queued_bytes,
            "sent": self.sent,
            "sent_bytes": self.sent_bytes,
            "received": self.received,
            "received_bytes": self.received_bytes,
            "send_drops": {reason.value: n for reason, n in self.send_drops.items()},
            "receive_drops": {reason.value: n for reason, n in self.receive_drops.items()},
        }


class Datagrams:
    """The flow table and outgoing queue of one channel; see the module docstring.

    @param write: writes one whole frame to the transport.
    @param writable: whether the transport accepts data now (it is not
        paused and the channel is not closing).
    @param odd_ids: whether L{next_flow_id} hands out odd ids (the console,
        which opens the odd streams) or even ones (the Jumpoint).
    @param hold: starts holding the channel's writes, C{release} ends it
        (L{WriteHold}: the multiplexer's; by default writes are never held).
    """

    def __init__(
        self,
        limits: DatagramLimits,
        *,
        write: Callable[[bytes], None],
        writable: Callable[[], bool],
        odd_ids: bool,
        hold: Callable[[], None] = _no_hold,
        release: Callable[[], None] = _no_hold,
    ) -> None:
        self.limits = limits
        self._write = write
        self._writable = writable
        self.hold_writes = hold
        """L{WriteHold.hold_writes}: a burst of L{send}s about to start (one channel write)."""
        self.release_writes = release
        """L{WriteHold.release_writes}: the burst is over."""
        self._flows: dict[int, Flow] = {}
        self._queue: deque[tuple[Flow, bytes]] = deque()
        self._queued_bytes = 0
        self.queued = 0
        """How many datagrams wait for the transport.  A plain attribute, since
        the multiplexer reads it on every stream write; only the table changes it."""
        self._next_id = 1 if odd_ids else 2
        self.closed = False
        self.sent = 0
        self.sent_bytes = 0
        self.received = 0
        self.received_bytes = 0
        self.send_drops = _no_drops()
        self.receive_drops = _no_drops()
        self._sources: list[DatagramSource] = []
        self.full = False
        """Whether the sources were told to pause (the queue filled; not yet half drained)."""

    # -- the application's side ------------------------------------------

    @property
    def flows(self) -> Mapping[int, Flow]:
        """The open flows by id (read-only)."""
        return MappingProxyType(self._flows)

    def flow(self, flow_id: int) -> Flow | None:
        return self._flows.get(flow_id)

    def next_flow_id(self) -> int:
        """A flow id of this end's parity that it has not handed out before.

        Ids of one parity per end (as for streams) let both ends allocate
        without asking each other; raises L{FlowLimitReached} once every id
        up to L{frames.MAX_FLOW_ID} of that parity is spent.
        """
        flow_id = self._next_id
        if flow_id > frames.MAX_FLOW_ID:
            raise FlowLimitReached("the channel has used every flow id")
        self._next_id += 2
        return flow_id

    def open_flow(self, flow_id: int, receiver: DatagramReceiver) -> Flow:
        """Open flow C{flow_id}: its datagrams from the peer go to C{receiver}.

        Raises L{FlowRefused} for an id out of range or already open, or once
        the channel closed, and L{FlowLimitReached} when the table is full.
        """
        if self.closed:
            raise FlowRefused("the channel is closed")
        if not 0 < flow_id <= frames.MAX_FLOW_ID:
            raise FlowRefused(f"flow id {flow_id} out of range (1 to {frames.MAX_FLOW_ID})")
        if flow_id in self._flows:
            raise FlowRefused(f"flow {flow_id} is already open")
        if len(self._flows) >= self.limits.max_flows:
            raise FlowLimitReached(f"the channel already carries {self.limits.max_flows} flows")
        flow = Flow(self, flow_id, receiver)
        self._flows[flow_id] = flow
        return flow

    def close_flow(self, flow_id: int) -> None:
        """Close flow C{flow_id}: its queued datagrams are dropped, later ones too.

        Closing a flow that is not open does nothing.
        """
        flow = self._flows.pop(flow_id, None)
        if flow is None:
            return
        flow._lifecycle.fire(FlowEvent.CLOSE)
        if any(queued is flow for queued, _ in self._queue):
            kept: deque[tuple[Flow, bytes]] = deque()
            for entry in self._queue:
                if entry[0] is flow:
                    self._queued_bytes -= len(entry[1])
                    self._drop_sent(flow, DropReason.UNKNOWN_FLOW)
                else:
                    kept.append(entry)
            self._queue = kept
            self.queued = len(kept)
            if self.full:
                self._resume_sources_if_drained()

    def add_source(self, source: DatagramSource) -> None:
        """Tell C{source} to pause while the queue is full (at most C{max_flows} sources).

        A source added while the queue is full is paused at once.
        """
        if source in self._sources:
            return
        if len(self._sources) >= self.limits.max_flows:
            raise FlowLimitReached(f"the channel already has {self.limits.max_flows} sources")
        self._sources.append(source)
        if self.full:
            source.pause_reading()

    def remove_source(self, source: DatagramSource) -> None:
        """No more pauses for C{source} (removing one not added does nothing)."""
        if source in self._sources:
            self._sources.remove(source)

    def send(self, flow_id: int, payload: bytes) -> bool:
        """Send one datagram on C{flow_id}; C{False} if it was dropped (and counted).

        Never blocks and never raises for the datagram itself: it is written,
        queued, or dropped.
        """
        flow = self._flows.get(flow_id)
        if flow is None:
            self.send_drops[DropReason.UNKNOWN_FLOW] += 1
            return False
        if len(payload) > self.limits.max_datagram:
            self._drop_sent(flow, DropReason.TOO_LARGE)
            return False
        frame = frames.encode_datagram(flow_id, payload)
        if not self._queue and self._writable():
            self._transmit(flow, frame)
            return True
        limits = self.limits
        if (
            len(self._queue) >= limits.queue_datagrams
            or self._queued_bytes + len(frame) > limits.queue_bytes
        ):
            self._drop_sent(flow, DropReason.QUEUE_FULL)
            self._pause_sources()
            return False
        self._queue.append((flow, frame))
        self.queued += 1
        self._queued_bytes += len(frame)
        if (
            self.queued >= limits.queue_datagrams
            or self._queued_bytes + len(frame) > limits.queue_bytes
        ):  # the next datagram of this size would be dropped
            self._pause_sources()
        return True

    def counters(self) -> DatagramCounters:
        return DatagramCounters(
            flows=len(self._flows),
            queued=self.queued,
            queued_bytes=self._queued_bytes,
            sent=self.sent,
            sent_bytes=self.sent_bytes,
            received=self.received,
            received_bytes=self.received_bytes,
            send_drops=MappingProxyType(dict(self.send_drops)),
            receive_drops=MappingProxyType(dict(self.receive_drops)),
        )

    # -- the multiplexer's side ------------------------------------------

    @property
    def queued_bytes(self) -> int:
        """How many bytes of frames wait for the transport."""
        return self._queued_bytes

    def send_turn(self, budget: int) -> int:
        """The datagrams' turn in the writer: send queued frames, oldest first.

        Sends at least one frame, then more while they fit in C{budget}
        bytes (headers included) and the transport stays writable.  Returns
        the bytes written.
        """
        queue = self._queue
        written = 0
        while queue and self._writable():
            flow, frame = queue[0]
            if written and written + len(frame) > budget:
                break
            queue.popleft()
            self.queued -= 1
            self._queued_bytes -= len(frame)
            written += len(frame)
            self._transmit(flow, frame)
        if self.full:
            self._resume_sources_if_drained()
        return written

    def frame_received(self, flow_id: int, payload: bytes) -> None:
        """A DATAGRAM frame arrived: hand it to its flow, or drop and count it."""
        flow = self._flows.get(flow_id)
        if flow is None:
            self.receive_drops[DropReason.UNKNOWN_FLOW] += 1
            return
        size = len(payload)
        self.received += 1
        self.received_bytes += size
        flow.received += 1
        flow.received_bytes += size
        flow.receiver.datagram_received(payload)

    def close(self) -> None:
        """The channel is closing: drop the queue and close every flow (receivers are not told).

        The application hears of the channel's end from the channel itself.
        Sending afterwards drops the datagram (C{unknown_flow}).
        """
        if self.closed:
            return
        self.closed = True
        self._queue.clear()
        self.queued = self._queued_bytes = 0
        self._sources.clear()  # their owners end with the channel (and stop reading)
        self.full = False
        flows, self._flows = self._flows, {}
        for flow in flows.values():
            flow._lifecycle.fire(FlowEvent.CLOSE)

    # -- helpers ---------------------------------------------------------

    def _transmit(self, flow: Flow, frame: bytes) -> None:
        size = len(frame) - frames.HEADER_SIZE
        self.sent += 1
        self.sent_bytes += size
        flow.sent += 1
        flow.sent_bytes += size
        self._write(frame)

    def _pause_sources(self) -> None:
        if not self.full:
            self.full = True
            for source in list(self._sources):
                source.pause_reading()

    def _resume_sources_if_drained(self) -> None:
        limits = self.limits
        if (
            self.queued <= limits.queue_datagrams // 2
            and self._queued_bytes <= limits.queue_bytes // 2
        ):
            self.full = False
            for source in list(self._sources):
                source.resume_reading()

    def _drop_sent(self, flow: Flow, reason: DropReason) -> None:
        self.send_drops[reason] += 1
        flow.dropped += 1
