"""The conntrack-like flow table (jumpoint/network/flow_table.py): states, timeouts, limit, events.

The clock is a plain number passed to each call.  A hypothesis state machine
drives a table with random flows, packets and clock jumps against a model:
the table never holds more than its limit, and every flow opened is closed
exactly once, with the packets and bytes the model fed it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from jumpoint.network.flow_table import (
    CLOSED,
    OPENED,
    TCP_TRANSITIONS,
    Flow,
    FlowEvent,
    FlowState,
    FlowTable,
    Key,
    TcpEvent,
    Timeouts,
    flow_key,
    reply_key,
)
from jumpoint.network.ip_packets import Packet, parse
from tests.unit.ipv4_builder import ACK, FIN, GRE, ICMP, RST, SYN, TCP, UDP, addr, echo, ipv4

CONSOLE = addr("100.64.0.2")
REMOTE = addr("198.18.1.10")


def key(protocol: int = UDP, sport: int = 5000, dport: int = 53) -> Key:
    return (protocol, CONSOLE, sport, REMOTE, dport)


@dataclass
class Recorder:
    events: list[FlowEvent] = field(default_factory=list)

    def __call__(self, event: FlowEvent) -> None:
        self.events.append(event)

    def named(self, name: str) -> list[FlowEvent]:
        return [event for event in self.events if event.event == name]


def table(limit: int = 16) -> tuple[FlowTable, Recorder]:
    recorder = Recorder()
    return FlowTable(limit, recorder), recorder


def opened(
    flows: FlowTable, k: Key, now: float, flags: int | None = None, length: int = 100
) -> Flow:
    flow = flows.open(k, flags, now)
    assert flow is not None
    return flows.seen(flow, False, length, flags, now)


def found(flows: FlowTable, k: Key, now: float) -> tuple[Flow, bool]:
    result = flows.find(k, now)
    assert result is not None
    return result


# keys


def test_keys_of_packets() -> None:
    udp_packet = parse(ipv4(UDP, "100.64.0.2", "198.18.1.10", b"\x13\x88\x005\x00\x08\x00\x00"))
    assert isinstance(udp_packet, Packet)
    assert flow_key(udp_packet) == key(UDP, 5000, 53)
    gre = parse(ipv4(GRE, "100.64.0.2", "198.18.1.10", b"\0" * 4))
    assert isinstance(gre, Packet)
    assert flow_key(gre) == (GRE, CONSOLE, 0, REMOTE, 0)


def test_an_echo_reply_has_the_reply_key_of_its_request() -> None:
    request = parse(echo("100.64.0.2", "198.18.1.10", ident=7))
    reply = parse(echo("198.18.1.10", "100.64.0.2", ident=7, reply=True))
    other = parse(echo("100.64.0.2", "198.18.1.10", ident=7, kind=13))  # timestamp, same id
    assert isinstance(request, Packet) and isinstance(reply, Packet) and isinstance(other, Packet)
    request_key = flow_key(request)
    assert request_key is not None and request_key[0] == ICMP
    assert flow_key(reply) == reply_key(request_key)
    assert flow_key(other) != request_key


def test_an_icmp_error_and_a_later_fragment_have_no_key() -> None:
    unreachable = parse(
        ipv4(ICMP, "198.18.1.1", "100.64.0.2", b"\x09\0\0\0\0\0\0\0")
    )  # router advert
    assert isinstance(unreachable, Packet) and flow_key(unreachable) is None
    later = parse(ipv4(UDP, "100.64.0.2", "198.18.1.10", b"\0" * 8, offset=16))
    assert isinstance(later, Packet) and flow_key(later) is None


# directions and counters


def test_a_flow_is_found_both_ways() -> None:
    flows, _ = table()
    flow = opened(flows, key(), 0.0)
    assert found(flows, key(), 1.0) == (flow, False)
    assert found(flows, reply_key(key()), 1.0) == (flow, True)
    flows.seen(flow, True, 60, None, 1.0)
    assert (flow.packets_out, flow.bytes_out, flow.packets_in, flow.bytes_in) == (1, 100, 1, 60)


def test_events_carry_counters_and_duration() -> None:
    flows, recorder = table()
    flow = opened(flows, key(), 10.0)
    flows.seen(flow, True, 70, None, 11.0)
    flows.seen(flow, False, 30, None, 14.5)
    assert flows.close_all(20.0) == 1
    (start,) = recorder.named(OPENED)
    (end,) = recorder.named(CLOSED)
    assert (start.src, start.dst, start.sport, start.dport, start.protocol) == (
        "100.64.0.2",
        "198.18.1.10",
        5000,
        53,
        UDP,
    )
    assert start.flow_id == end.flow_id == 1
    assert (end.packets_out, end.bytes_out, end.packets_in, end.bytes_in) == (2, 130, 1, 70)
    assert (end.duration, end.closed_at, end.reason) == (4.5, 20.0, "session_end")
    assert end.audit_details()["duration"] == 4.5
    assert "reason" not in start.audit_details() and "icmp_id" not in start.audit_details()


def test_an_icmp_flow_reports_its_identifier_not_ports() -> None:
    flows, recorder = table()
    request = parse(echo("100.64.0.2", "198.18.1.10", ident=0x1234))
    assert isinstance(request, Packet)
    request_key = flow_key(request)
    assert request_key is not None
    opened(flows, request_key, 0.0)
    (event,) = recorder.named(OPENED)
    assert (event.sport, event.dport, event.icmp_id, event.state) == (None, None, 0x1234, "ICMP")


def test_count_does_not_refresh_the_timer() -> None:
    flows, _ = table()
    flow = opened(flows, key(), 0.0)
    flows.count(flow, True, 500)
    assert (flow.packets_in, flow.bytes_in, flow.expires) == (1, 500, 30.0)
    flows.close_all(1.0)
    flows.count(flow, True, 500)  # closed: nothing happens
    assert flow.packets_in == 1


# timeouts


@pytest.mark.parametrize(
    ("protocol", "state", "timeout"),
    [(UDP, FlowState.UDP_UNREPLIED, 30), (ICMP, FlowState.ICMP, 30), (GRE, FlowState.GENERIC, 600)],
)
def test_idle_flows_expire_after_their_timeout(
    protocol: int, state: FlowState, timeout: float
) -> None:
    flows, recorder = table()
    k = key(protocol, 0, 0) if protocol != UDP else key()
    flow = opened(flows, k, 100.0)
    assert flow.state is state
    assert flows.expire(100.0 + timeout - 0.001) == 0
    assert found(flows, k, 100.0 + timeout - 0.001)[0] is flow
    assert flows.expire(100.0 + timeout) == 1
    assert len(flows) == 0 and flows.find(k, 100.0 + timeout) is None
    (event,) = recorder.named(CLOSED)
    assert (event.reason, event.closed_at) == ("timeout", 100.0 + timeout)


def test_a_packet_restarts_the_timer() -> None:
    flows, _ = table()
    flow = opened(flows, key(), 0.0)
    flows.seen(flow, False, 10, None, 25.0)
    assert flows.expire(54.9) == 0
    assert flows.expire(55.0) == 1


def test_udp_becomes_a_stream_once_replied_and_two_seconds_old() -> None:
    flows, _ = table()
    flow = opened(flows, key(), 0.0)
    flows.seen(flow, True, 10, None, 0.5)
    assert (flow.state, flow.expires) == (FlowState.UDP_REPLIED, 30.5)
    flows.seen(flow, False, 10, None, 1.9)
    assert flow.state is FlowState.UDP_REPLIED
    flows.seen(flow, False, 10, None, 2.0)
    assert (flow.state, flow.expires) == (FlowState.UDP_STREAM, 122.0)


def test_an_unreplied_udp_flow_stays_short_lived() -> None:
    flows, _ = table()
    flow = opened(flows, key(), 0.0)
    flows.seen(flow, False, 10, None, 10.0)
    assert (flow.state, flow.expires) == (FlowState.UDP_UNREPLIED, 40.0)


def test_a_lookup_closes_an_expired_flow() -> None:
    flows, recorder = table()
    opened(flows, key(), 0.0)
    assert flows.find(reply_key(key()), 31.0) is None
    assert len(flows) == 0
    assert [e.reason for e in recorder.named(CLOSED)] == ["timeout"]


def test_the_sweep_closes_only_expired_flows_in_every_bucket() -> None:
    flows, recorder = table(64)
    for port in range(10):
        opened(flows, key(UDP, 1000 + port), float(port))  # 30 s each
        opened(flows, key(GRE, 0, 0) if port == 0 else key(TCP, 1000 + port), float(port), SYN)
    assert flows.expire(34.5) == 5  # UDP opened at 0..4
    assert sorted(e.sport or 0 for e in recorder.named(CLOSED)) == [1000, 1001, 1002, 1003, 1004]
    assert len(flows) == 15


def test_a_clock_going_back_counts_as_standing_still() -> None:
    flows, _ = table()
    flow = opened(flows, key(), 100.0)
    flows.seen(flow, False, 10, None, 50.0)
    assert (flow.last_seen, flow.expires) == (100.0, 130.0)


def test_custom_timeouts_and_their_validation() -> None:
    flows = FlowTable(4, timeouts=Timeouts(udp=5))
    flow = flows.open(key(), None, 0.0)
    assert flow is not None
    flows.seen(flow, False, 1, None, 0.0)
    assert flow.expires == 5
    with pytest.raises(ValueError, match="tcp_close"):
        Timeouts(tcp_close=0)
    with pytest.raises(ValueError):
        FlowTable(0)


# the limit


def test_a_new_flow_beyond_the_limit_is_refused_until_one_expires() -> None:
    flows, recorder = table(limit=3)
    for port in range(3):
        opened(flows, key(UDP, 1000 + port), float(port))
    assert flows.open(key(UDP, 2000), None, 10.0) is None
    assert (len(flows), flows.refused) == (3, 1)
    assert len(recorder.named(OPENED)) == 3
    assert flows.open(key(UDP, 2000), None, 30.0) is not None  # the first expired at 30
    assert len(flows) == 3
    assert [e.sport for e in recorder.named(CLOSED)] == [1000]


# TCP


def tcp_flow(flows: FlowTable, now: float = 0.0) -> Flow:
    return opened(flows, key(TCP, 40000, 22), now, SYN)


def test_tcp_handshake_and_orderly_close() -> None:
    flows, recorder = table()
    flow = tcp_flow(flows)
    expected = [
        (True, SYN | ACK, FlowState.SYN_RECV, 60),
        (False, ACK, FlowState.ESTABLISHED, 432000),
        (True, ACK, FlowState.ESTABLISHED, 432000),
        (False, FIN | ACK, FlowState.FIN_WAIT, 120),
        (False, FIN | ACK, FlowState.FIN_WAIT, 120),  # retransmitted FIN
        (True, ACK, FlowState.CLOSE_WAIT, 60),
        (True, FIN | ACK, FlowState.LAST_ACK, 30),
        (False, ACK, FlowState.TIME_WAIT, 120),
    ]
    assert (flow.state, flow.expires) == (FlowState.SYN_SENT, 120)
    for now, (reply, flags, state, timeout) in enumerate(expected, start=1):
        flow = flows.seen(flow, reply, 40, flags, float(now))
        assert (flow.state, flow.expires) == (state, now + timeout), (reply, flags)
    assert flows.expire(8 + 120) == 1
    (event,) = recorder.named(CLOSED)
    assert (event.state, event.packets_out, event.packets_in) == ("TIME_WAIT", 5, 4)


def test_a_simultaneous_fin_goes_to_last_ack() -> None:
    flows, _ = table()
    flow = tcp_flow(flows)
    for reply, flags in [(True, SYN | ACK), (False, ACK), (True, FIN | ACK), (False, FIN | ACK)]:
        flows.seen(flow, reply, 40, flags, 1.0)
    assert flow.state is FlowState.LAST_ACK


@pytest.mark.parametrize("reply", [False, True])
def test_a_reset_either_way_closes_after_ten_seconds(reply: bool) -> None:
    flows, recorder = table()
    flow = tcp_flow(flows)
    flows.seen(flow, True, 40, SYN | ACK, 1.0)
    flows.seen(flow, reply, 40, RST | ACK, 2.0)
    assert (flow.state, flow.expires) == (FlowState.CLOSE, 12.0)
    assert flows.expire(12.0) == 1
    assert recorder.named(CLOSED)[0].state == "CLOSE"


def test_a_refused_connection_closes() -> None:
    flows, _ = table()
    flow = tcp_flow(flows)
    flows.seen(flow, True, 40, RST | ACK, 0.1)
    assert flow.state is FlowState.CLOSE


@pytest.mark.parametrize(
    "closing", [[(True, RST)], [(False, FIN), (True, FIN | ACK), (False, ACK)]]
)
def test_a_syn_after_the_close_starts_a_new_flow(closing: list[tuple[bool, int]]) -> None:
    flows, recorder = table()
    flow = tcp_flow(flows)
    flows.seen(flow, True, 40, SYN | ACK, 1.0)
    flows.seen(flow, False, 40, ACK, 1.0)
    for reply, flags in closing:
        flows.seen(flow, reply, 40, flags, 2.0)
    new = flows.seen(flow, False, 60, SYN, 3.0)
    assert new is not flow and flow.closed
    assert (new.state, new.packets_out, new.bytes_out, new.flow_id) == (
        FlowState.SYN_SENT,
        1,
        60,
        2,
    )
    assert found(flows, key(TCP, 40000, 22), 3.0)[0] is new
    assert [(e.event, e.flow_id, e.reason) for e in recorder.events] == [
        (OPENED, 1, None),
        (CLOSED, 1, "reused"),
        (OPENED, 2, None),
    ]
    assert len(flows) == 1


def test_a_syn_on_an_established_flow_changes_nothing() -> None:
    flows, _ = table()
    flow = tcp_flow(flows)
    flows.seen(flow, True, 40, SYN | ACK, 1.0)
    flows.seen(flow, False, 40, ACK, 1.0)
    assert flows.seen(flow, False, 40, SYN, 2.0) is flow
    assert flow.state is FlowState.ESTABLISHED


def test_a_tcp_flow_opened_without_syn_is_picked_up_established() -> None:
    flows, _ = table()
    assert opened(flows, key(TCP), 0.0, ACK).state is FlowState.ESTABLISHED


def test_every_state_resets_to_close_and_only_tcp_states_move() -> None:
    tcp_states = {FlowState[name] for name in ("SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT")}
    tcp_states |= {FlowState[name] for name in ("CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE")}
    for state in FlowState:
        moves = TCP_TRANSITIONS.allowed(state)
        if state in tcp_states:
            assert (
                TCP_TRANSITIONS.target(state, TcpEvent.RST) is FlowState.CLOSE
                or state is FlowState.CLOSE
            )
        else:
            assert moves == frozenset()
        for event in moves:
            assert TCP_TRANSITIONS.target(state, event) in tcp_states


# the stateful model


KEYS = (
    [key(UDP, 1000 + n) for n in range(4)]
    + [key(TCP, 2000 + n, 22) for n in range(3)]
    + [key(GRE, 0, 0)]
)
TCP_FLAGS = [SYN, SYN | ACK, ACK, FIN | ACK, RST, RST | ACK, 0]


@dataclass
class Expected:
    packets_out: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    bytes_in: int = 0


class FlowTableMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.recorder = Recorder()
        self.limit = 5
        self.flows = FlowTable(self.limit, self.recorder, Timeouts(tcp_established=50, generic=40))
        self.now = 0.0
        self.expected: dict[int, Expected] = {}

    @rule(k=st.sampled_from(KEYS), flags=st.sampled_from(TCP_FLAGS), length=st.integers(20, 1400))
    def open_or_send(self, k: Key, flags: int, length: int) -> None:
        tcp_flags = flags if k[0] == TCP else None
        result = self.flows.find(k, self.now)
        if result is None:
            flow = self.flows.open(k, tcp_flags, self.now)
            if flow is None:
                assert len(self.flows) == self.limit
                return
            self.expected[flow.flow_id] = Expected()
        else:
            flow = result[0]
        flow = self.flows.seen(flow, False, length, tcp_flags, self.now)
        expected = self.expected.setdefault(flow.flow_id, Expected())
        expected.packets_out += 1
        expected.bytes_out += length

    @rule(k=st.sampled_from(KEYS), flags=st.sampled_from(TCP_FLAGS), length=st.integers(20, 1400))
    def reply(self, k: Key, flags: int, length: int) -> None:
        result = self.flows.find(reply_key(k), self.now)
        if result is None:
            return
        flow, is_reply = result
        assert is_reply
        flow = self.flows.seen(flow, True, length, flags if k[0] == TCP else None, self.now)
        expected = self.expected[flow.flow_id]
        expected.packets_in += 1
        expected.bytes_in += length

    @rule(seconds=st.floats(0, 70))
    def wait(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def sweep(self) -> None:
        before = len(self.flows)
        closed = self.flows.expire(self.now)
        assert len(self.flows) == before - closed
        assert all(flow.expires > self.now for flow in self.flows)

    @precondition(lambda self: len(self.flows) > 0)
    @rule()
    def end_session(self) -> None:
        self.flows.close_all(self.now)
        assert len(self.flows) == 0

    @invariant()
    def bounded(self) -> None:
        assert len(self.flows) <= self.limit
        opened = self.recorder.named(OPENED)
        closed = self.recorder.named(CLOSED)
        assert len(self.flows) == len(opened) - len(closed)

    def teardown(self) -> None:
        self.flows.close_all(self.now)
        opened = [e.flow_id for e in self.recorder.named(OPENED)]
        closed = self.recorder.named(CLOSED)
        assert (
            sorted(opened) == sorted(e.flow_id for e in closed) == list(range(1, len(opened) + 1))
        )
        for event in closed:
            expected = self.expected[event.flow_id]
            counters = (event.packets_out, event.bytes_out, event.packets_in, event.bytes_in)
            assert counters == (
                expected.packets_out,
                expected.bytes_out,
                expected.packets_in,
                expected.bytes_in,
            )
            assert event.closed_at is not None and event.duration >= 0


TestFlowTableMachine = FlowTableMachine.TestCase
TestFlowTableMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
