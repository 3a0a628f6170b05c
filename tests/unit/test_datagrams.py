"""Tests of the datagram flow table and queue (shared/protocol/datagrams.py), sans-IO.

The table writes through a fake outlet (a list of frames and a switch that
says whether the transport accepts data), so every test is synchronous and
sees exactly what would reach the transport.  A hypothesis state machine
drives the table with random opens, closes, sends, receipts, pauses and
drains against a plain model of what it must do.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from shared.lifecycle import IllegalTransition
from shared.protocol import frames
from shared.protocol.datagrams import (
    FLOW_TRANSITIONS,
    DatagramLimits,
    Datagrams,
    DropReason,
    Flow,
    FlowEvent,
    FlowLimitReached,
    FlowRefused,
    FlowState,
)
from shared.protocol.frames import HEADER_SIZE, Frame, FrameParser, FrameType

LIMITS = DatagramLimits(max_flows=4, queue_bytes=1000, queue_datagrams=5)


class Outlet:
    """Stands in for the multiplexer: records written frames, may refuse (paused)."""

    def __init__(self, *, pause_after: int | None = None) -> None:
        self.written: list[bytes] = []
        self.open = True
        self.pause_after = pause_after
        """Pause once this many more frames are written (a transport filling up)."""

    def write(self, data: bytes) -> None:
        assert self.open, "written while the transport is paused"
        self.written.append(data)
        if self.pause_after is not None:
            self.pause_after -= 1
            if self.pause_after <= 0:
                self.open = False

    def writable(self) -> bool:
        return self.open

    def frames(self) -> list[Frame]:
        parser = FrameParser(frames.MAX_PAYLOAD)
        out = parser.feed(b"".join(self.written))
        assert parser.buffered == 0
        return out

    def datagrams(self) -> list[tuple[int, bytes]]:
        found = self.frames()
        assert all(f.type is FrameType.DATAGRAM and f.flags == 0 for f in found)
        return [(f.stream_id, f.payload) for f in found]


class Receiver:
    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def datagram_received(self, payload: bytes) -> None:
        self.payloads.append(payload)


def table(limits: DatagramLimits = LIMITS, *, odd_ids: bool = True) -> tuple[Datagrams, Outlet]:
    outlet = Outlet()
    return Datagrams(limits, write=outlet.write, writable=outlet.writable, odd_ids=odd_ids), outlet


def drops(datagrams: Datagrams) -> dict[str, int]:
    return {reason.value: n for reason, n in datagrams.counters().send_drops.items() if n}


def frame_size(payload: bytes) -> int:
    return HEADER_SIZE + len(payload)


# -- sending and receiving ----------------------------------------------------------


def test_a_datagram_is_written_at_once_while_the_transport_accepts_data() -> None:
    datagrams, outlet = table()
    flow = datagrams.open_flow(3, Receiver())
    assert datagrams.send(3, b"ping") is True
    assert outlet.written == [frames.encode_datagram(3, b"ping")]
    assert (flow.sent, flow.sent_bytes, flow.dropped) == (1, 4, 0)
    counters = datagrams.counters()
    assert (counters.sent, counters.sent_bytes, counters.queued) == (1, 4, 0)


def test_an_empty_datagram_is_a_datagram() -> None:
    datagrams, outlet = table()
    receiver = Receiver()
    datagrams.open_flow(1, receiver)
    assert datagrams.send(1, b"")
    datagrams.frame_received(1, b"")
    assert outlet.datagrams() == [(1, b"")]
    assert receiver.payloads == [b""]


def test_a_received_datagram_goes_to_its_flow() -> None:
    datagrams, _ = table()
    first, second = Receiver(), Receiver()
    one = datagrams.open_flow(1, first)
    datagrams.open_flow(5, second)
    datagrams.frame_received(5, b"to five")
    datagrams.frame_received(1, b"to one")
    datagrams.frame_received(5, b"again")
    assert first.payloads == [b"to one"]
    assert second.payloads == [b"to five", b"again"]
    assert (one.received, one.received_bytes) == (1, 6)
    counters = datagrams.counters()
    assert (counters.received, counters.received_bytes) == (3, 18)
    assert sum(counters.receive_drops.values()) == 0


@given(st.integers(1, frames.MAX_FLOW_ID), st.binary(max_size=64))
def test_a_datagram_for_a_flow_never_opened_is_dropped_and_counted(
    flow_id: int, payload: bytes
) -> None:
    datagrams, outlet = table()
    receiver = Receiver()
    other = 1 if flow_id != 1 else 3
    datagrams.open_flow(other, receiver)
    datagrams.frame_received(flow_id, payload)  # no error: it may have closed in flight
    assert datagrams.send(flow_id, payload) is False
    assert receiver.payloads == [] and outlet.written == []
    counters = datagrams.counters()
    assert counters.receive_drops[DropReason.UNKNOWN_FLOW] == 1
    assert counters.send_drops[DropReason.UNKNOWN_FLOW] == 1
    assert (counters.received, counters.sent) == (0, 0)


def test_a_closed_flow_drops_what_arrives_and_what_is_sent() -> None:
    datagrams, outlet = table()
    receiver = Receiver()
    flow = datagrams.open_flow(1, receiver)
    datagrams.close_flow(1)
    assert flow.closed and flow.state is FlowState.CLOSED
    assert datagrams.flow(1) is None and 1 not in datagrams.flows
    datagrams.frame_received(1, b"late")
    assert flow.send(b"late") is False
    assert receiver.payloads == [] and outlet.written == []
    counters = datagrams.counters()
    assert counters.receive_drops[DropReason.UNKNOWN_FLOW] == 1
    assert counters.send_drops[DropReason.UNKNOWN_FLOW] == 1


def test_a_datagram_above_the_size_limit_is_dropped_as_too_large() -> None:
    datagrams, outlet = table(DatagramLimits(4, 1000, 5, max_datagram=100))
    flow = datagrams.open_flow(1, Receiver())
    assert datagrams.send(1, b"x" * 100) is True
    assert datagrams.send(1, b"x" * 101) is False
    assert outlet.datagrams() == [(1, b"x" * 100)]
    assert drops(datagrams) == {"too_large": 1}
    assert flow.dropped == 1


def test_the_protocol_maximum_is_the_default_size_limit() -> None:
    datagrams, outlet = table(DatagramLimits(4, 200_000, 5))
    datagrams.open_flow(1, Receiver())
    assert datagrams.send(1, b"x" * frames.MAX_DATAGRAM_PAYLOAD)
    assert not datagrams.send(1, b"x" * (frames.MAX_DATAGRAM_PAYLOAD + 1))
    assert drops(datagrams) == {"too_large": 1}
    assert len(outlet.written) == 1


def test_a_receiver_may_answer_and_close_its_flow_while_it_receives() -> None:
    datagrams, outlet = table()

    class Echo:
        def datagram_received(self, payload: bytes) -> None:
            datagrams.send(1, payload.upper())
            datagrams.close_flow(1)

    datagrams.open_flow(1, Echo())
    datagrams.frame_received(1, b"hi")
    datagrams.frame_received(1, b"gone")
    assert outlet.datagrams() == [(1, b"HI")]
    assert datagrams.counters().receive_drops[DropReason.UNKNOWN_FLOW] == 1


# -- the queue ------------------------------------------------------------------------


def test_datagrams_queue_while_paused_and_leave_in_order() -> None:
    datagrams, outlet = table()
    datagrams.open_flow(1, Receiver())
    datagrams.open_flow(3, Receiver())
    outlet.open = False
    sent = [(1, b"a"), (3, b"bb"), (1, b"ccc")]
    assert all(datagrams.send(flow_id, payload) for flow_id, payload in sent)
    assert outlet.written == []
    assert datagrams.queued == 3
    assert datagrams.queued_bytes == sum(frame_size(p) for _, p in sent)
    outlet.open = True
    # A send while datagrams are queued goes behind them, even if writable.
    assert datagrams.send(3, b"dddd")
    assert outlet.written == []
    datagrams.send_turn(10_000)
    assert outlet.datagrams() == [*sent, (3, b"dddd")]
    assert (datagrams.queued, datagrams.queued_bytes) == (0, 0)
    assert datagrams.counters().sent == 4


def test_the_queue_drops_beyond_its_datagram_count() -> None:
    datagrams, outlet = table()
    flow = datagrams.open_flow(1, Receiver())
    outlet.open = False
    results = [datagrams.send(1, bytes([n])) for n in range(LIMITS.queue_datagrams + 3)]
    assert results == [True] * LIMITS.queue_datagrams + [False] * 3
    assert datagrams.queued == LIMITS.queue_datagrams
    assert drops(datagrams) == {"queue_full": 3}
    assert flow.dropped == 3
    outlet.open = True
    datagrams.send_turn(10_000)
    # Drop-tail: the oldest ones were kept.
    assert outlet.datagrams() == [(1, bytes([n])) for n in range(LIMITS.queue_datagrams)]


def test_the_queue_drops_beyond_its_byte_limit_inclusively() -> None:
    limits = DatagramLimits(max_flows=4, queue_bytes=3 * (HEADER_SIZE + 100), queue_datagrams=100)
    datagrams, outlet = table(limits)
    datagrams.open_flow(1, Receiver())
    outlet.open = False
    assert datagrams.send(1, b"a" * 100)
    assert datagrams.send(1, b"b" * 100)
    assert not datagrams.send(1, b"c" * 101)  # one byte too many
    assert datagrams.send(1, b"d" * 100)  # fills the queue exactly
    assert datagrams.queued_bytes == limits.queue_bytes
    assert not datagrams.send(1, b"")  # even an empty one needs its header's room
    assert drops(datagrams) == {"queue_full": 2}
    outlet.open = True
    datagrams.send_turn(10_000)
    assert [p[:1] for _, p in outlet.datagrams()] == [b"a", b"b", b"d"]


def test_a_turn_sends_at_least_one_datagram_then_what_fits_the_budget() -> None:
    datagrams, outlet = table(DatagramLimits(4, 10_000, 50))
    datagrams.open_flow(1, Receiver())
    outlet.open = False
    for size in (500, 20, 20, 20):
        datagrams.send(1, b"x" * size)
    outlet.open = True
    assert datagrams.send_turn(100) == frame_size(b"x" * 500)  # larger than the budget
    assert datagrams.send_turn(2 * (HEADER_SIZE + 20)) == 2 * (HEADER_SIZE + 20)
    assert datagrams.queued == 1
    assert datagrams.send_turn(0) == HEADER_SIZE + 20
    assert datagrams.send_turn(100) == 0  # nothing left


def test_a_turn_stops_when_the_transport_fills_up() -> None:
    outlet = Outlet()
    datagrams = Datagrams(LIMITS, write=outlet.write, writable=outlet.writable, odd_ids=True)
    datagrams.open_flow(1, Receiver())
    outlet.open = False
    for n in range(4):
        datagrams.send(1, bytes([n]))
    outlet.open, outlet.pause_after = True, 2
    datagrams.send_turn(10_000)
    assert outlet.datagrams() == [(1, b"\x00"), (1, b"\x01")]
    assert datagrams.queued == 2
    outlet.open, outlet.pause_after = True, None
    datagrams.send_turn(10_000)
    assert [p for _, p in outlet.datagrams()] == [bytes([n]) for n in range(4)]


def test_closing_a_flow_drops_its_queued_datagrams_and_keeps_the_others() -> None:
    datagrams, outlet = table()
    one = datagrams.open_flow(1, Receiver())
    datagrams.open_flow(3, Receiver())
    outlet.open = False
    for flow_id, payload in [(1, b"a"), (3, b"b"), (1, b"c"), (3, b"d")]:
        datagrams.send(flow_id, payload)
    datagrams.close_flow(1)
    assert datagrams.queued == 2
    assert datagrams.queued_bytes == 2 * frame_size(b"b")
    assert drops(datagrams) == {"unknown_flow": 2}
    assert one.dropped == 2
    # The freed room takes new datagrams.
    assert datagrams.send(3, b"e")
    outlet.open = True
    datagrams.send_turn(10_000)
    assert outlet.datagrams() == [(3, b"b"), (3, b"d"), (3, b"e")]


def test_a_reopened_flow_id_does_not_get_the_old_flows_datagrams() -> None:
    datagrams, outlet = table()
    datagrams.open_flow(1, Receiver())
    outlet.open = False
    datagrams.send(1, b"old")
    datagrams.close_flow(1)
    datagrams.open_flow(1, Receiver())
    datagrams.send(1, b"new")
    outlet.open = True
    datagrams.send_turn(10_000)
    assert outlet.datagrams() == [(1, b"new")]


# -- opening and closing flows -------------------------------------------------------


@pytest.mark.parametrize(
    ("flow_id", "message"),
    [
        (0, "flow id 0 out of range"),
        (-5, "flow id -5 out of range"),
        (frames.MAX_FLOW_ID + 1, "out of range"),
    ],
)
def test_open_flow_refuses_an_id_out_of_range(flow_id: int, message: str) -> None:
    datagrams, _ = table()
    with pytest.raises(FlowRefused, match=message):
        datagrams.open_flow(flow_id, Receiver())
    assert datagrams.flows == {}


def test_open_flow_refuses_an_open_id_and_accepts_the_highest() -> None:
    datagrams, _ = table()
    datagrams.open_flow(frames.MAX_FLOW_ID, Receiver())
    with pytest.raises(FlowRefused, match=f"flow {frames.MAX_FLOW_ID} is already open"):
        datagrams.open_flow(frames.MAX_FLOW_ID, Receiver())


def test_the_flow_limit_is_enforced_and_freed_by_a_close() -> None:
    datagrams, _ = table()
    for flow_id in range(1, LIMITS.max_flows + 1):
        datagrams.open_flow(flow_id, Receiver())
    with pytest.raises(FlowLimitReached, match="already carries 4 flows"):
        datagrams.open_flow(99, Receiver())
    assert isinstance(FlowLimitReached("x"), FlowRefused)
    datagrams.close_flow(2)
    datagrams.open_flow(99, Receiver())
    assert sorted(datagrams.flows) == [1, 3, 4, 99]


def test_closing_an_unknown_flow_does_nothing() -> None:
    datagrams, _ = table()
    flow = datagrams.open_flow(1, Receiver())
    datagrams.close_flow(7)
    flow.close()
    flow.close()  # twice: a no-op
    datagrams.close_flow(1)
    assert datagrams.flows == {} and drops(datagrams) == {}


def test_flow_send_and_close_go_through_the_table() -> None:
    datagrams, outlet = table()
    flow = datagrams.open_flow(9, Receiver())
    assert isinstance(flow, Flow) and datagrams.flow(9) is flow
    assert flow.send(b"via the flow")
    flow.close()
    assert datagrams.flow(9) is None
    assert outlet.datagrams() == [(9, b"via the flow")]


@pytest.mark.parametrize(("odd_ids", "first"), [(True, 1), (False, 2)])
def test_next_flow_id_keeps_the_ends_parity_and_never_repeats(odd_ids: bool, first: int) -> None:
    datagrams, _ = table(odd_ids=odd_ids)
    ids = [datagrams.next_flow_id() for _ in range(5)]
    assert ids == [first + 2 * n for n in range(5)]


def test_next_flow_id_runs_out_at_the_ceiling() -> None:
    datagrams, _ = table()
    datagrams._next_id = frames.MAX_FLOW_ID  # the last odd id
    assert datagrams.next_flow_id() == frames.MAX_FLOW_ID
    with pytest.raises(FlowLimitReached, match="every flow id"):
        datagrams.next_flow_id()


def test_the_flow_lifecycle_is_open_then_closed() -> None:
    lifecycle = FLOW_TRANSITIONS.start(FlowState.OPEN)
    assert lifecycle.fire(FlowEvent.CLOSE) is FlowState.CLOSED
    with pytest.raises(IllegalTransition):
        lifecycle.fire(FlowEvent.CLOSE)


# -- the channel closing -------------------------------------------------------------


def test_closing_the_table_closes_every_flow_and_empties_the_queue() -> None:
    datagrams, outlet = table()
    flows = [datagrams.open_flow(flow_id, Receiver()) for flow_id in (1, 3)]
    outlet.open = False
    datagrams.send(1, b"queued")
    datagrams.close()
    datagrams.close()  # idempotent
    assert all(flow.closed for flow in flows)
    assert datagrams.flows == {} and (datagrams.queued, datagrams.queued_bytes) == (0, 0)
    assert datagrams.send(1, b"after") is False
    assert datagrams.counters().send_drops[DropReason.UNKNOWN_FLOW] == 1
    with pytest.raises(FlowRefused, match="closed"):
        datagrams.open_flow(5, Receiver())
    outlet.open = True
    assert datagrams.send_turn(10_000) == 0 and outlet.written == []


# -- limits and counters -------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_flows": 0, "queue_bytes": 1, "queue_datagrams": 1},
        {"max_flows": 1, "queue_bytes": 0, "queue_datagrams": 1},
        {"max_flows": 1, "queue_bytes": 1, "queue_datagrams": 0},
        {"max_flows": 1, "queue_bytes": 1, "queue_datagrams": 1, "max_datagram": -1},
        {"max_flows": 1, "queue_bytes": 1, "queue_datagrams": 1, "max_datagram": 65536},
    ],
)
def test_limits_are_checked(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        DatagramLimits(**kwargs)


def test_counters_are_a_snapshot_and_serialise_to_json_values() -> None:
    datagrams, outlet = table()
    datagrams.open_flow(1, Receiver())
    datagrams.send(1, b"abc")
    outlet.open = False
    datagrams.send(1, b"de")
    datagrams.send(5, b"?")
    datagrams.frame_received(7, b"?")
    datagrams.frame_received(1, b"fghi")
    snapshot = datagrams.counters()
    datagrams.send(1, b"later")
    assert snapshot.as_dict() == {
        "flows": 1,
        "queued": 1,
        "queued_bytes": frame_size(b"de"),
        "sent": 1,
        "sent_bytes": 3,
        "received": 1,
        "received_bytes": 4,
        "send_drops": {"queue_full": 0, "unknown_flow": 1, "too_large": 0},
        "receive_drops": {"queue_full": 0, "unknown_flow": 1, "too_large": 0},
    }
    assert datagrams.counters().queued == 2


# -- a state machine against a model -----------------------------------------------------

FLOW_IDS = st.sampled_from([1, 2, 3, 4, 5, 6])
MODEL_LIMITS = DatagramLimits(max_flows=3, queue_bytes=200, queue_datagrams=4, max_datagram=60)


class FlowTableMachine(RuleBasedStateMachine):
    """Random use of one table, checked step by step against a plain model.

    The model: a set of open flows (at most C{max_flows}), a FIFO of
    accepted datagrams (within both queue limits), drop counts by reason,
    and the list of datagrams each flow's receiver got.  The table must
    agree with it after every step, must never write while the outlet is
    paused, and must write each accepted datagram exactly once, in order,
    unless its flow closed first.
    """

    def __init__(self) -> None:
        super().__init__()
        self.outlet = Outlet()
        self.datagrams = Datagrams(
            MODEL_LIMITS, write=self.outlet.write, writable=self.outlet.writable, odd_ids=True
        )
        self.receivers: dict[int, Receiver] = {}
        self.open_ids: set[int] = set()
        self.queue: list[tuple[int, bytes]] = []
        self.expected_written: list[tuple[int, bytes]] = []
        self.expected_received: dict[int, list[bytes]] = {}
        self.send_drops: Counter[DropReason] = Counter()
        self.receive_drops: Counter[DropReason] = Counter()
        self.closed = False

    def _queued_bytes(self) -> int:
        return sum(frame_size(payload) for _, payload in self.queue)

    @rule(flow_id=FLOW_IDS)
    def open_flow(self, flow_id: int) -> None:
        receiver = Receiver()
        if self.closed or flow_id in self.open_ids:
            with pytest.raises(FlowRefused):
                self.datagrams.open_flow(flow_id, receiver)
            return
        if len(self.open_ids) >= MODEL_LIMITS.max_flows:
            with pytest.raises(FlowLimitReached):
                self.datagrams.open_flow(flow_id, receiver)
            return
        self.datagrams.open_flow(flow_id, receiver)
        self.open_ids.add(flow_id)
        self.receivers[flow_id] = receiver
        self.expected_received[flow_id] = []

    @rule(flow_id=FLOW_IDS)
    def close_flow(self, flow_id: int) -> None:
        self.datagrams.close_flow(flow_id)
        if flow_id in self.open_ids:
            self.open_ids.discard(flow_id)
            purged = [entry for entry in self.queue if entry[0] == flow_id]
            self.send_drops[DropReason.UNKNOWN_FLOW] += len(purged)
            self.queue = [entry for entry in self.queue if entry[0] != flow_id]

    @rule(flow_id=FLOW_IDS, size=st.integers(0, 80), fill=st.binary(min_size=1, max_size=1))
    def send(self, flow_id: int, size: int, fill: bytes) -> None:
        payload = fill * size
        accepted = self.datagrams.send(flow_id, payload)
        if flow_id not in self.open_ids:
            reason: DropReason | None = DropReason.UNKNOWN_FLOW
        elif size > MODEL_LIMITS.max_datagram:
            reason = DropReason.TOO_LARGE
        elif not self.queue and self.outlet.open:
            reason = None
            self.expected_written.append((flow_id, payload))
        elif (
            len(self.queue) >= MODEL_LIMITS.queue_datagrams
            or self._queued_bytes() + frame_size(payload) > MODEL_LIMITS.queue_bytes
        ):
            reason = DropReason.QUEUE_FULL
        else:
            reason = None
            self.queue.append((flow_id, payload))
        assert accepted is (reason is None)
        if reason is not None:
            self.send_drops[reason] += 1

    @rule(flow_id=FLOW_IDS, payload=st.binary(max_size=20))
    def receive(self, flow_id: int, payload: bytes) -> None:
        self.datagrams.frame_received(flow_id, payload)
        if flow_id in self.open_ids:
            self.expected_received[flow_id].append(payload)
        else:
            self.receive_drops[DropReason.UNKNOWN_FLOW] += 1

    @rule()
    def pause(self) -> None:
        self.outlet.open = False

    @rule(budget=st.integers(0, 300), pause_after=st.none() | st.integers(1, 3))
    def drain(self, budget: int, pause_after: int | None) -> None:
        """The transport drained: the writer gives the queue turns until it fills or empties."""
        self.outlet.open, self.outlet.pause_after = True, pause_after
        while self.datagrams.queued and self.outlet.open:
            before = len(self.outlet.written)
            self.datagrams.send_turn(budget)
            moved = len(self.outlet.written) - before
            assert moved >= 1
            self.expected_written += self.queue[:moved]
            del self.queue[:moved]
        self.outlet.pause_after = None

    @rule()
    def close_channel(self) -> None:
        self.datagrams.close()
        self.closed = True
        self.open_ids.clear()
        self.queue.clear()

    @invariant()
    def agrees_with_the_model(self) -> None:
        datagrams = self.datagrams
        assert set(datagrams.flows) == self.open_ids
        assert datagrams.queued == len(self.queue) <= MODEL_LIMITS.queue_datagrams
        assert datagrams.queued_bytes == self._queued_bytes() <= MODEL_LIMITS.queue_bytes
        counters = datagrams.counters()
        assert dict(counters.send_drops) == {r: self.send_drops[r] for r in DropReason}
        assert dict(counters.receive_drops) == {r: self.receive_drops[r] for r in DropReason}
        assert self.outlet.datagrams() == self.expected_written
        assert counters.sent == len(self.expected_written)
        assert counters.sent_bytes == sum(len(p) for _, p in self.expected_written)
        for flow_id, receiver in self.receivers.items():
            assert receiver.payloads == self.expected_received[flow_id]

    @invariant()
    def nothing_waits_while_the_outlet_is_open(self) -> None:
        # What the multiplexer relies on: a send queues only behind a paused
        # transport or a non-empty queue, and turns run whenever it drains.
        if self.outlet.open:
            assert self.datagrams.queued == 0


FlowTableMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40)
TestFlowTable = FlowTableMachine.TestCase
