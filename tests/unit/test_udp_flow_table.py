"""The console's sans-IO UDP flow table: flows per client, bounds, refusals, idle timeouts.

(And what the views show of a UDP tunnel's counters.)

A fake L{FlowLink} records what the table asks of the channel and the
sockets; the clock is L{twisted.internet.task.Clock}.  A hypothesis state
machine drives random traffic, answers and time, and checks the bounds and
the accounting after every step.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from console.tunnel_counters import Tunnel
from console.udp_flow_table import (
    MAX_UDP_PAYLOAD,
    PENDING_DATAGRAMS,
    REFUSED_KEPT,
    ClientFlow,
    FlowState,
    UdpCounters,
    UdpFlowTable,
)
from console.view import JsonView, PlainView, TerminalView


@dataclass
class Link:
    """Records the table's requests; C{accept} decides whether the channel takes a datagram."""

    next_id: int = 1
    opened: list[ClientFlow] = field(default_factory=list)
    sent: list[tuple[int, bytes]] = field(default_factory=list)
    closed: list[tuple[int, str, bool]] = field(default_factory=list)
    replies: list[tuple[tuple[str, int], bytes]] = field(default_factory=list)
    accept: bool = True

    def next_flow_id(self) -> int:
        flow_id, self.next_id = self.next_id, self.next_id + 2
        return flow_id

    def open(self, flow: ClientFlow) -> None:
        self.opened.append(flow)

    def send(self, flow_id: int, payload: bytes) -> bool:
        if self.accept:
            self.sent.append((flow_id, payload))
        return self.accept

    def close(self, flow: ClientFlow, reason: str, *, tell_jumpoint: bool) -> None:
        self.closed.append((flow.flow_id, reason, tell_jumpoint))

    def reply(self, flow: ClientFlow, payload: bytes) -> None:
        self.replies.append((flow.client, payload))


def make(max_flows: int = 4, idle: float = 60.0) -> tuple[UdpFlowTable, Link, Clock]:
    clock, link = Clock(), Link()
    return UdpFlowTable(max_flows=max_flows, idle_timeout=idle, clock=clock, link=link), link, clock


A = ("127.0.0.1", 5000)
B = ("127.0.0.1", 5001)


def test_the_first_datagram_opens_a_flow_and_waits_for_the_answer() -> None:
    table, link, _ = make()
    tunnel = table.add_tunnel(53)
    table.from_client(tunnel, A, b"one")
    table.from_client(tunnel, A, b"two")
    (flow,) = link.opened
    assert flow.flow_id == 1 and flow.client == A and flow.state is FlowState.OPENING
    assert link.sent == []
    table.admitted(1)
    table.from_client(tunnel, A, b"three")
    assert link.sent == [(1, b"one"), (1, b"two"), (1, b"three")]  # in order, whole
    table.from_remote(1, b"answer")
    assert link.replies == [(A, b"answer")]
    counters = tunnel.counters.as_dict()
    assert counters == {
        "udp_flows": 1,
        "total_udp_flows": 1,
        "refused_udp_flows": 0,
        "datagrams_to_remote": 3,
        "datagrams_from_remote": 1,
        "udp_drops": 0,
    }
    assert tunnel.counters.bytes_to_remote == 11 and tunnel.counters.bytes_from_remote == 6
    table.from_client(tunnel, B, b"other client")
    assert [f.flow_id for f in link.opened] == [1, 3]  # one flow per client address


def test_the_same_client_on_two_tunnels_is_two_flows() -> None:
    table, link, _ = make()
    dns, ntp = table.add_tunnel(53), table.add_tunnel(123)
    table.from_client(dns, A, b"q")
    table.from_client(ntp, A, b"t")
    assert [(f.tunnel.remote_port, f.client) for f in link.opened] == [(53, A), (123, A)]


def test_datagrams_waiting_for_the_answer_are_bounded() -> None:
    table, link, _ = make()
    tunnel = table.add_tunnel(53)
    for index in range(PENDING_DATAGRAMS + 3):
        table.from_client(tunnel, A, bytes([index]))
    assert tunnel.counters.drops == 3
    table.admitted(1)
    assert [p for _, p in link.sent] == [bytes([i]) for i in range(PENDING_DATAGRAMS)]


def test_too_large_datagrams_and_a_full_channel_are_counted_drops() -> None:
    table, link, _ = make()
    tunnel = table.add_tunnel(53)
    table.from_client(tunnel, A, b"x" * (MAX_UDP_PAYLOAD + 1))
    assert link.opened == [] and tunnel.counters.drops == 1
    table.from_client(tunnel, A, b"x" * MAX_UDP_PAYLOAD)
    table.admitted(1)
    link.accept = False
    table.from_client(tunnel, A, b"queue full")
    assert tunnel.counters.drops == 2 and tunnel.counters.datagrams_to_remote == 1


def test_beyond_the_cap_a_new_client_is_refused_counted_and_logged() -> None:
    table, link, clock = make(max_flows=2)
    tunnel = table.add_tunnel(53)
    table.from_client(tunnel, A, b"a")
    table.from_client(tunnel, B, b"b")
    logged: list[str] = []

    def observe(event: dict[str, object]) -> None:
        if "max_udp_flows" in str(event.get("log_format", "")):
            logged.append(str(event["client"]))

    globalLogPublisher.addObserver(observe)
    try:
        for port in range(6000, 6005):
            table.from_client(tunnel, ("127.0.0.1", port), b"c")
        clock.advance(11)
        table.from_client(tunnel, ("127.0.0.1", 7000), b"c")
    finally:
        globalLogPublisher.removeObserver(observe)
    assert len(link.opened) == 2 and table.active == 2
    assert tunnel.counters.refused_flows == 6 and tunnel.counters.drops == 6
    assert logged == ["127.0.0.1:6000", "127.0.0.1:7000"]  # one line per interval


def test_a_refused_flow_holds_its_client_off_until_the_idle_timeout() -> None:
    table, link, clock = make(idle=30)
    tunnel = table.add_tunnel(53)
    table.from_client(tunnel, A, b"q1")
    table.from_client(tunnel, A, b"q2")
    table.refused(1, "not allowed (rule: allowed_targets)")
    assert link.closed == [(1, "not allowed (rule: allowed_targets)", False)]
    assert tunnel.counters.refused_flows == 1 and tunnel.counters.drops == 2
    assert tunnel.counters.last_error == "not allowed (rule: allowed_targets)"
    assert table.active == 0 and tunnel.counters.total_flows == 0
    clock.advance(29)
    table.from_client(tunnel, A, b"q3")
    assert len(link.opened) == 1 and tunnel.counters.drops == 3  # not asked again
    clock.advance(1)
    table.from_client(tunnel, A, b"q4")
    assert [f.flow_id for f in link.opened] == [1, 3]  # asked again, with a new id
    table.refused(99, "an unknown flow")  # ignored
    table.admitted(99)


def test_refused_clients_remembered_are_bounded() -> None:
    table, link, _ = make(max_flows=REFUSED_KEPT + 10)
    tunnel = table.add_tunnel(53)
    for port in range(REFUSED_KEPT + 5):
        table.from_client(tunnel, ("127.0.0.1", 10000 + port), b"q")
        table.refused(link.opened[-1].flow_id, "no")
    assert len(table._refused) == REFUSED_KEPT
    table.from_client(tunnel, ("127.0.0.1", 10000), b"q")  # forgotten first: asked again
    assert len(link.opened) == REFUSED_KEPT + 6


def test_an_idle_flow_closes_and_tells_the_jumpoint() -> None:
    table, link, clock = make(idle=60)
    tunnel = table.add_tunnel(53)
    table.from_client(tunnel, A, b"q")
    table.admitted(1)
    clock.advance(40)
    table.from_remote(1, b"r")  # traffic either way keeps it
    clock.advance(40)
    assert link.closed == [] and table.active == 1
    clock.advance(20)
    assert link.closed == [(1, "no datagram for 60s (udp_idle_timeout)", True)]
    assert table.active == 0 and tunnel.counters.flows == 0
    assert tunnel.counters.total_flows == 1
    table.from_client(tunnel, A, b"again")
    assert [f.flow_id for f in link.opened] == [1, 3]


def test_a_flow_the_jumpoint_closed_is_forgotten_without_telling_it() -> None:
    table, link, clock = make()
    tunnel = table.add_tunnel(53)
    table.from_client(tunnel, A, b"q")
    table.admitted(1)
    table.remote_closed(1, "no datagram for 60s (udp_idle_timeout)")
    assert link.closed == [(1, "no datagram for 60s (udp_idle_timeout)", False)]
    table.from_remote(1, b"late")  # a datagram in flight: dropped
    assert link.replies == []
    clock.advance(1000)
    assert len(link.closed) == 1  # its timer went with it
    table.remote_closed(1, "twice")


def test_close_all_closes_every_flow_and_drops_what_comes_later() -> None:
    table, link, clock = make()
    tunnel = table.add_tunnel(53)
    table.from_client(tunnel, A, b"q")
    table.from_client(tunnel, B, b"q")
    table.admitted(1)
    table.refused(3, "no")
    table.close_all("the session closed")
    assert link.closed == [(3, "no", False), (1, "the session closed", False)]
    table.from_client(tunnel, A, b"after")
    assert len(link.opened) == 2 and tunnel.counters.flows == 0
    clock.advance(1000)
    assert len(link.closed) == 2


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        UdpFlowTable(max_flows=0, idle_timeout=1, clock=Clock(), link=Link())
    with pytest.raises(ValueError):
        UdpFlowTable(max_flows=1, idle_timeout=0, clock=Clock(), link=Link())


class TableMachine(RuleBasedStateMachine):
    """Random clients, answers and time: bounds and accounting hold after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.table, self.link, self.clock = make(max_flows=3, idle=10)
        self.tunnels = [self.table.add_tunnel(53), self.table.add_tunnel(123)]
        self.from_clients = 0
        self.answered: set[int] = set()

    @rule(tunnel=st.integers(0, 1), port=st.integers(1, 6), size=st.integers(0, 70000))
    def client_sends(self, tunnel: int, port: int, size: int) -> None:
        self.from_clients += 1
        self.table.from_client(self.tunnels[tunnel], ("127.0.0.1", port), b"d" * size)

    def _waiting(self) -> list[ClientFlow]:
        return [
            f
            for f in self.link.opened
            if f.state is FlowState.OPENING and f.flow_id not in self.answered
        ]

    @precondition(lambda self: self._waiting())
    @rule(admit=st.booleans(), data=st.data())
    def jumpoint_answers(self, admit: bool, data: st.DataObject) -> None:
        flow = data.draw(st.sampled_from(self._waiting()))
        self.answered.add(flow.flow_id)
        if admit:
            self.table.admitted(flow.flow_id)
        else:
            self.table.refused(flow.flow_id, "no")

    @precondition(lambda self: self.link.opened)
    @rule(data=st.data(), size=st.integers(0, 100))
    def remote_sends(self, data: st.DataObject, size: int) -> None:
        flow = data.draw(st.sampled_from(self.link.opened))
        self.table.from_remote(flow.flow_id, b"r" * size)

    @precondition(lambda self: self.link.opened)
    @rule(data=st.data())
    def jumpoint_closes(self, data: st.DataObject) -> None:
        flow = data.draw(st.sampled_from(self.link.opened))
        self.table.remote_closed(flow.flow_id, "closed")

    @rule(seconds=st.floats(0, 15))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def channel_fills(self) -> None:
        self.link.accept = not self.link.accept

    @invariant()
    def bounded_and_accounted(self) -> None:
        table = self.table
        assert table.active <= table.max_flows
        assert len(table._refused) <= REFUSED_KEPT
        live = list(table._by_client.values())
        assert len({f.flow_id for f in live}) == len(live) == len(table._by_id)
        for flow in live:
            assert flow.state in (FlowState.OPENING, FlowState.OPEN)
            assert len(flow.pending) <= PENDING_DATAGRAMS
            assert flow.state is FlowState.OPENING or not flow.pending
        for tunnel in self.tunnels:
            mine = [f for f in live if f.tunnel is tunnel]
            assert tunnel.counters.flows == len(mine)
        pending = sum(len(f.pending) for f in live)
        sent = sum(t.counters.datagrams_to_remote for t in self.tunnels)
        drops = sum(t.counters.drops for t in self.tunnels)
        assert sent + drops + pending == self.from_clients  # every datagram is accounted for
        assert sent == len(self.link.sent)
        assert len(self.link.replies) == sum(t.counters.datagrams_from_remote for t in self.tunnels)
        # a flow id is never handed out twice
        ids = [f.flow_id for f in self.link.opened]
        assert len(ids) == len(set(ids))


TestTableMachine = TableMachine.TestCase
TestTableMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


# -- what jump open shows of a UDP tunnel ----------------------------------------------


def _udp_counters() -> list[dict[str, object]]:
    tunnel = Tunnel("127.0.0.1", None, "10.1.2.53", 53, local_port=5353, protocol="udp")
    tunnel.udp = UdpCounters(
        flows=2,
        total_flows=5,
        refused_flows=1,
        datagrams_to_remote=7,
        datagrams_from_remote=6,
        bytes_to_remote=300,
        bytes_from_remote=900,
        drops=3,
    )
    plain = Tunnel("127.0.0.1", None, "10.1.2.53", 22, local_port=2222)
    return [tunnel.counters(), plain.counters()]


def test_the_views_show_udp_pairs_and_their_figures() -> None:
    counters = _udp_counters()
    udp, tcp = counters
    assert udp["protocol"] == "udp" and "protocol" not in tcp
    assert udp["bytes_to_remote"] == 300 and udp["bytes_from_remote"] == 900
    assert (udp["udp_flows"], udp["total_udp_flows"], udp["udp_drops"]) == (2, 5, 3)
    assert "udp_flows" not in tcp
    out = io.StringIO()
    view = JsonView(out, lambda: 0.0)
    view.ready("dns", "s1", [udp, tcp])
    view.update(counters)
    view.closed("interrupted", "interrupted by the user", counters)
    ready, stats, closed = (json.loads(line) for line in out.getvalue().splitlines())
    assert ready["tunnels"][0]["protocol"] == "udp"
    for event in (stats, closed):
        assert event["udp_flows"] == 2 and event["total_udp_flows"] == 5
        assert event["datagrams_to_remote"] == 7 and event["datagrams_from_remote"] == 6
        assert event["refused_udp_flows"] == 1 and event["udp_drops"] == 3
    assert stats["tunnels"][0]["datagrams_to_remote"] == 7
    plain = io.StringIO()
    PlainView(plain).ready("dns", "s1", [udp, tcp])
    PlainView(plain).closed("interrupted", "bye", counters)
    lines = plain.getvalue().splitlines()
    assert lines[0] == "127.0.0.1:5353/udp -> 10.1.2.53:53"
    assert lines[1] == "127.0.0.1:2222 -> 10.1.2.53:22"
    assert "5 UDP flows" in lines[2]
    terminal = io.StringIO()
    TerminalView(terminal, lambda: 0.0).update(counters)
    row = terminal.getvalue().splitlines()[2]
    assert row.startswith("127.0.0.1:5353/udp -> 10.1.2.53:53")
    assert row.split()[4:6] == ["2", "5"]  # CONN and TOTAL count the flows


def test_a_session_without_udp_pairs_shows_no_udp_figures() -> None:
    plain = Tunnel("127.0.0.1", None, "h", 22, local_port=2222)
    out = io.StringIO()
    JsonView(out, lambda: 0.0).closed("expired", "done", [plain.counters()])
    assert "udp_flows" not in json.loads(out.getvalue())
