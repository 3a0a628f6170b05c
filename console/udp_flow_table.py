"""The console's UDP tunnels, sans-IO: one flow per local client address, relayed whole.

A UDP tunnel pair (C{udp}, or C{tcp-udp} beside its TCP listener) has one
UDP socket on the console.  Each client address and port that sends to it
is one **flow**: the first datagram opens it (a flow id from the channel,
L{FlowLink.open}: the Jumpoint decides with C{flow_open}), later ones are
relayed on the channel's datagram flow with their boundaries kept, and the
Jumpoint's datagrams go back to that client's address.  L{UdpFlowTable}
keeps the flows of a session and their counters; the Twisted side
(L{console.udp_tunnels}) only moves bytes.

Everything is bounded:

* at most C{max_flows} flows are opening or open at once (the session's
  C{max_udp_flows}); a datagram of a new client beyond that is dropped,
  counted (C{refused_flows}) and logged (at most once per
  L{REFUSAL_LOG_INTERVAL});
* while a flow waits for the Jumpoint's answer, at most L{PENDING_DATAGRAMS}
  of its datagrams wait; more are dropped and counted;
* a flow the Jumpoint refused stays refused (its datagrams dropped and
  counted, nothing asked again) for C{idle_timeout} seconds, and at most
  L{REFUSED_KEPT} refused clients are remembered;
* a datagram longer than L{MAX_UDP_PAYLOAD} is dropped.

A flow closes after C{idle_timeout} seconds without a datagram either way
(the Jumpoint is told with C{close_flow}), when the Jumpoint closes it
(C{flow_closed}), or with the session.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from shared.lifecycle import Lifecycle, Transitions

log = Logger()

MAX_UDP_PAYLOAD = 65507
"""The largest UDP payload over IPv4 (65535 - 20 - 8)."""
PENDING_DATAGRAMS = 16
"""Datagrams of one flow kept while the Jumpoint decides on it."""
REFUSED_KEPT = 64
"""Refused clients remembered (so that their datagrams do not ask again)."""
REFUSAL_LOG_INTERVAL = 10.0
"""Seconds between two log lines about flows refused for the cap."""

Client = tuple[str, int]
"""A local client's address and port."""


class FlowState(enum.Enum):
    OPENING = "opening"
    """The Jumpoint has not answered C{flow_open} yet."""
    OPEN = "open"
    REFUSED = "refused"
    """The Jumpoint refused it: datagrams are dropped until the entry expires."""
    CLOSED = "closed"


class FlowEvent(enum.Enum):
    ADMITTED = enum.auto()
    REFUSED = enum.auto()
    CLOSE = enum.auto()


FLOW_TRANSITIONS: Transitions[FlowState, FlowEvent] = Transitions(
    "console udp flow",
    FlowState,
    FlowEvent,
    {
        FlowState.OPENING: {
            FlowEvent.ADMITTED: FlowState.OPEN,
            FlowEvent.REFUSED: FlowState.REFUSED,
            FlowEvent.CLOSE: FlowState.CLOSED,
        },
        FlowState.OPEN: {FlowEvent.CLOSE: FlowState.CLOSED},
        FlowState.REFUSED: {FlowEvent.CLOSE: FlowState.CLOSED},
        FlowState.CLOSED: {},
    },
)


@dataclass
class UdpCounters:
    """The figures of one UDP tunnel (its flows, open and closed), for the live view."""

    flows: int = 0
    total_flows: int = 0
    refused_flows: int = 0
    """Flows not opened: over the cap here, or refused by the Jumpoint."""
    datagrams_to_remote: int = 0
    datagrams_from_remote: int = 0
    bytes_to_remote: int = 0
    bytes_from_remote: int = 0
    drops: int = 0
    """Datagrams dropped on the console (cap, refused flow, waiting queue full, too large,
    the channel's datagram queue full)."""
    last_error: str | None = None

    def as_dict(self) -> dict[str, int]:
        return {
            "udp_flows": self.flows,
            "total_udp_flows": self.total_flows,
            "refused_udp_flows": self.refused_flows,
            "datagrams_to_remote": self.datagrams_to_remote,
            "datagrams_from_remote": self.datagrams_from_remote,
            "udp_drops": self.drops,
        }


@dataclass
class UdpTunnel:
    """One UDP socket's part of the table: where its flows lead and its counters."""

    index: int
    remote_port: int
    counters: UdpCounters = field(default_factory=UdpCounters)


@dataclass
class ClientFlow:
    """One local client's flow through a tunnel."""

    tunnel: UdpTunnel
    client: Client
    flow_id: int
    last_activity: float
    pending: deque[bytes] = field(default_factory=deque)
    timer: IDelayedCall | None = None
    lifecycle: Lifecycle[FlowState, FlowEvent] = field(
        default_factory=lambda: FLOW_TRANSITIONS.start(FlowState.OPENING)
    )

    @property
    def state(self) -> FlowState:
        return self.lifecycle.state

    @property
    def client_text(self) -> str:
        host, port = self.client
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class FlowLink(Protocol):
    """What the table asks of the channel and of the tunnels' sockets."""

    def next_flow_id(self) -> int:
        """A new flow id of the console's parity (raises when the channel has none left)."""

    def open(self, flow: ClientFlow) -> None:
        """Register the flow's datagrams and send C{flow_open}; the answer comes back as
        L{UdpFlowTable.admitted} or L{UdpFlowTable.refused}."""

    def send(self, flow_id: int, payload: bytes) -> bool:
        """One datagram on the channel's flow; C{False}: dropped (counted by the channel)."""

    def close(self, flow: ClientFlow, reason: str, *, tell_jumpoint: bool) -> None:
        """Forget the channel's flow; C{tell_jumpoint}: send C{close_flow}."""

    def reply(self, flow: ClientFlow, payload: bytes) -> None:
        """One datagram from the remote end to the flow's client (its tunnel's socket)."""


class UdpFlowTable:
    """The UDP flows of one session on the console (module docstring)."""

    def __init__(
        self, *, max_flows: int, idle_timeout: float, clock: IReactorTime, link: FlowLink
    ) -> None:
        if max_flows < 1 or idle_timeout <= 0:
            raise ValueError("max_flows and idle_timeout must be positive")
        self.max_flows = max_flows
        self.idle_timeout = idle_timeout
        self.clock = clock
        self.link = link
        self.tunnels: list[UdpTunnel] = []
        self._by_client: dict[tuple[int, Client], ClientFlow] = {}
        """Flows opening or open, by tunnel and client."""
        self._by_id: dict[int, ClientFlow] = {}
        self._refused: OrderedDict[tuple[int, Client], ClientFlow] = OrderedDict()
        self._cap_refusals = 0
        self._last_refusal_log: float | None = None
        self.closed = False

    def add_tunnel(self, remote_port: int) -> UdpTunnel:
        tunnel = UdpTunnel(len(self.tunnels), remote_port)
        self.tunnels.append(tunnel)
        return tunnel

    @property
    def active(self) -> int:
        """Flows opening or open."""
        return len(self._by_client)

    def flow(self, flow_id: int) -> ClientFlow | None:
        return self._by_id.get(flow_id)

    # -- datagrams -------------------------------------------------------

    def from_client(self, tunnel: UdpTunnel, client: Client, payload: bytes) -> None:
        """A datagram from a local client to C{tunnel}'s socket."""
        counters = tunnel.counters
        if self.closed:
            counters.drops += 1
            return
        if len(payload) > MAX_UDP_PAYLOAD:
            counters.drops += 1
            return
        key = (tunnel.index, client)
        now = self.clock.seconds()
        refused = self._refused.get(key)
        if refused is not None:
            if now - refused.last_activity < self.idle_timeout:
                counters.drops += 1
                return
            self._forget_refused(key)
        flow = self._by_client.get(key)
        if flow is None:
            flow = self._new_flow(tunnel, client, now)
            if flow is None:
                counters.drops += 1
                return
        if flow.state is FlowState.OPENING:
            if len(flow.pending) >= PENDING_DATAGRAMS:
                counters.drops += 1
                return
            flow.pending.append(payload)
            return
        self._send(flow, payload, now)

    def _send(self, flow: ClientFlow, payload: bytes, now: float) -> None:
        counters = flow.tunnel.counters
        flow.last_activity = now
        if self.link.send(flow.flow_id, payload):
            counters.datagrams_to_remote += 1
            counters.bytes_to_remote += len(payload)
        else:
            counters.drops += 1

    def from_remote(self, flow_id: int, payload: bytes) -> None:
        """A datagram of flow C{flow_id} from the Jumpoint: to the flow's client."""
        flow = self._by_id.get(flow_id)
        if flow is None or flow.state is not FlowState.OPEN:
            return
        counters = flow.tunnel.counters
        flow.last_activity = self.clock.seconds()
        counters.datagrams_from_remote += 1
        counters.bytes_from_remote += len(payload)
        self.link.reply(flow, payload)

    # -- the flows' lives ------------------------------------------------

    def _new_flow(self, tunnel: UdpTunnel, client: Client, now: float) -> ClientFlow | None:
        if self.active >= self.max_flows:
            tunnel.counters.refused_flows += 1
            self._cap_refusals += 1
            if (
                self._last_refusal_log is None
                or now - self._last_refusal_log >= REFUSAL_LOG_INTERVAL
            ):
                log.warn(
                    "refused {count} new UDP flow(s) (the latest from {client} to remote port"
                    " {port}): the session already carries {limit} UDP flows (rule:"
                    " max_udp_flows)",
                    count=self._cap_refusals,
                    client=f"{client[0]}:{client[1]}",
                    port=tunnel.remote_port,
                    limit=self.max_flows,
                )
                self._last_refusal_log = now
                self._cap_refusals = 0
            return None
        try:
            flow_id = self.link.next_flow_id()
        except Exception as error:
            tunnel.counters.last_error = str(error)
            return None
        flow = ClientFlow(tunnel, client, flow_id, now)
        self._by_client[(tunnel.index, client)] = flow
        self._by_id[flow_id] = flow
        tunnel.counters.flows += 1
        tunnel.counters.total_flows += 1
        flow.timer = self.clock.callLater(self.idle_timeout, self._idle_check, flow)
        self.link.open(flow)
        return flow

    def admitted(self, flow_id: int) -> None:
        """The Jumpoint opened the flow: its waiting datagrams go out, in order."""
        flow = self._by_id.get(flow_id)
        if flow is None or flow.state is not FlowState.OPENING:
            return
        flow.lifecycle.fire(FlowEvent.ADMITTED)
        now = self.clock.seconds()
        pending, flow.pending = flow.pending, deque()
        for payload in pending:
            self._send(flow, payload, now)

    def refused(self, flow_id: int, reason: str) -> None:
        """The Jumpoint refused the flow: its datagrams are dropped, the client is held off."""
        flow = self._by_id.get(flow_id)
        if flow is None or flow.state is not FlowState.OPENING:
            return
        flow.lifecycle.fire(FlowEvent.REFUSED)
        counters = flow.tunnel.counters
        counters.drops += len(flow.pending)
        counters.refused_flows += 1
        counters.total_flows -= 1
        counters.flows -= 1
        counters.last_error = reason
        flow.pending.clear()
        self._cancel_timer(flow)
        del self._by_id[flow_id]
        key = (flow.tunnel.index, flow.client)
        del self._by_client[key]
        self.link.close(flow, reason, tell_jumpoint=False)
        log.warn(
            "refused a UDP flow from {client} to remote port {port}: {reason}",
            client=flow.client_text,
            port=flow.tunnel.remote_port,
            reason=reason,
        )
        flow.last_activity = self.clock.seconds()
        self._refused[key] = flow
        while len(self._refused) > REFUSED_KEPT:
            self._refused.popitem(last=False)

    def remote_closed(self, flow_id: int, reason: str) -> None:
        """The Jumpoint closed the flow (C{flow_closed})."""
        flow = self._by_id.get(flow_id)
        if flow is not None:
            log.info(
                "the Jumpoint closed the UDP flow from {client}: {reason}",
                client=flow.client_text,
                reason=reason,
            )
            self._close(flow, reason, tell_jumpoint=False)

    def _idle_check(self, flow: ClientFlow) -> None:
        flow.timer = None
        if flow.state not in (FlowState.OPENING, FlowState.OPEN):
            return
        idle_for = self.clock.seconds() - flow.last_activity
        if idle_for >= self.idle_timeout:
            self._close(flow, f"no datagram for {self.idle_timeout:g}s (udp_idle_timeout)", True)
            return
        flow.timer = self.clock.callLater(self.idle_timeout - idle_for, self._idle_check, flow)

    def _close(self, flow: ClientFlow, reason: str, tell_jumpoint: bool) -> None:
        if flow.state is FlowState.CLOSED:
            return
        was_active = flow.state in (FlowState.OPENING, FlowState.OPEN)
        flow.lifecycle.fire(FlowEvent.CLOSE)
        self._cancel_timer(flow)
        counters = flow.tunnel.counters
        counters.drops += len(flow.pending)
        flow.pending.clear()
        if was_active:
            counters.flows -= 1
            self._by_id.pop(flow.flow_id, None)
            self._by_client.pop((flow.tunnel.index, flow.client), None)
            self.link.close(flow, reason, tell_jumpoint=tell_jumpoint)

    def _forget_refused(self, key: tuple[int, Client]) -> None:
        flow = self._refused.pop(key)
        flow.lifecycle.fire(FlowEvent.CLOSE)

    def _cancel_timer(self, flow: ClientFlow) -> None:
        if flow.timer is not None and flow.timer.active():
            flow.timer.cancel()
        flow.timer = None

    def drop_flows(self, reason: str) -> int:
        """The channel is lost: every flow closes, the table stays open; returns how many."""
        flows = list(self._by_client.values())
        for flow in flows:
            self._close(flow, reason, False)
        return len(flows)

    def close_all(self, reason: str, *, tell_jumpoint: bool = False) -> None:
        """The session ends: every flow closes (the Jumpoint closes its own with the session)."""
        self.closed = True
        for flow in list(self._by_client.values()):
            self._close(flow, reason, tell_jumpoint)
        for key in list(self._refused):
            self._forget_refused(key)
