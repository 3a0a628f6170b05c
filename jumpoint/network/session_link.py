"""One network session's packets: console datagrams ⇄ the session's filter ⇄ the shared TUN.

A network session has one datagram flow on its channel (its id in the
session's reply, L{NetworkSessionLink.reply_fields}).  Each datagram from
the console is one IPv4 packet: the session's L{PacketFilter} decides on it
(L{PacketFilter.outbound}) and a packet that passes is written to the TUN
(L{NetworkHub.write}).  Each packet the hub reads for the session's inner
address goes through L{PacketFilter.inbound} and, if it passes, back on the
flow.  Nothing blocks: a full channel queue or TUN queue drops the packet
and counts it.

Audit: every flow the filter opens and closes is one row
(C{network_flow_opened} / C{network_flow_closed}, with packets and bytes
both ways and its duration); denied packets are summarised per rule, peer
and protocol (C{network_denied}, at most one row per key and window, with
the count: L{jumpoint.network.denials}).  A timer each second expires idle
flows and writes the summaries that are due; at the end every open flow is
closed and the last summaries written, before the session's own row.

A recorded session's pcap (C{LINKTYPE_RAW}) holds every packet that passed,
both ways, as it passed the Jumpoint (never blocking: the recorder's bounded
queue drops and counts).
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from jumpoint.network.denials import DenialSummariser
from jumpoint.network.flow_table import CLOSED, OPENED, FlowEvent
from jumpoint.network.hub import NetworkHub
from jumpoint.network.packet_filter import PacketFilter
from jumpoint.recording import SessionRecorder
from shared.protocol.datagrams import Datagrams, Flow

TICK = 1.0
"""Seconds between the expiry sweeps and summary checks."""

FLOW_EVENTS = {OPENED: "network_flow_opened", CLOSED: "network_flow_closed"}
"""The audit event of each flow table event."""

Record = Callable[..., object]
"""Records one audit row: C{record(event, **fields)} (the session's fields already in)."""


class NetworkSessionLink:
    """The packets of one network session (module docstring)."""

    def __init__(
        self,
        *,
        address: IPv4Address,
        routes: list[str],
        mtu: int,
        hub: NetworkHub,
        packet_filter: PacketFilter,
        clock: IReactorTime,
        record: Record,
        denials: DenialSummariser | None = None,
        on_closed: Callable[[], object] | None = None,
        recorder: SessionRecorder | None = None,
    ) -> None:
        self.address = address
        self.routes = routes
        self.mtu = mtu
        self.hub = hub
        self.filter = packet_filter
        self.clock = clock
        self.record = record
        self.denials = denials if denials is not None else DenialSummariser()
        self.flow: Flow | None = None
        self.closed = False
        self.channel_drops = 0
        """Packets that passed the filter but found the channel's queue full."""
        self.tun_drops = 0
        """Packets that passed the filter but found the TUN's queue full."""
        self._timer: IDelayedCall | None = None
        self._holding: Datagrams | None = None
        """The channel's datagrams whose writes this session holds (the hub's read turn)."""
        self._on_closed = on_closed
        self.recorder = recorder
        """The session's recording (raw IP): every packet that passed, both ways."""

    def flow_event(self, event: FlowEvent) -> None:
        """The flow table's events (its C{on_event}): one audit row each."""
        self.record(FLOW_EVENTS[event.event], **event.audit_details())

    def start(self, flow: Flow) -> None:
        """Carry packets on C{flow} from now on (the hub routes our address here)."""
        self.flow = flow
        self.hub.attach(self.address, self)
        self._timer = self.clock.callLater(TICK, self._tick)

    def reply_fields(self) -> dict[str, Any]:
        """What the console needs to set up its end (the session reply's C{network})."""
        assert self.flow is not None
        return {
            "network": {
                "address": str(self.address),
                "gateway": str(self.hub.settings.gateway),
                "routes": self.routes,
                "mtu": self.mtu,
                "flow": self.flow.flow_id,
            }
        }

    # -- packets ---------------------------------------------------------------

    def datagram_received(self, payload: bytes) -> None:
        """A packet from the console."""
        if self.closed:
            return
        now = self.clock.seconds()
        verdict = self.filter.outbound(payload, now)
        if verdict.allowed:
            if self.recorder is not None:
                self.recorder.packet(payload)
            if not self.hub.write(payload):
                self.tun_drops += 1
            return
        assert verdict.rule is not None
        self.denials.record(now, verdict.rule, verdict.peer, verdict.protocol, verdict.reason)

    def from_tun(self, packet: bytes) -> None:
        """A packet from the remote network for the session's address."""
        flow = self.flow
        if self.closed or flow is None:
            return
        now = self.clock.seconds()
        verdict = self.filter.inbound(packet, now)
        if verdict.allowed:
            if self.recorder is not None:
                self.recorder.packet(packet)
            if not flow.send(packet):
                self.channel_drops += 1
            return
        assert verdict.rule is not None
        self.denials.record(now, verdict.rule, verdict.peer, verdict.protocol, verdict.reason)

    def hold_writes(self) -> None:
        """The hub's read turn: hold the channel's writes (one TLS write for the burst)."""
        if self.flow is not None and self._holding is None:
            self._holding = self.flow.table
            self._holding.hold_writes()

    def release_writes(self) -> None:
        """The hub's read turn is over: what was held is written out."""
        holding, self._holding = self._holding, None
        if holding is not None:
            holding.release_writes()

    # -- time and the end -----------------------------------------------------------

    def _tick(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = self.clock.seconds()
        self.filter.flows.expire(now)
        for summary in self.denials.due(now):
            self.record("network_denied", **summary.audit_details())
        self._timer = self.clock.callLater(TICK, self._tick)

    def totals(self) -> tuple[int, int]:
        """Bytes to and from the remote network so far (the session's totals)."""
        return self.filter.bytes_out, self.filter.bytes_in

    def stats(self) -> dict[str, int]:
        """The figures of C{stats} and the live view."""
        packet_filter = self.filter
        return {
            "flows": len(packet_filter.flows),
            "total_flows": packet_filter.flows.opened,
            "packets_out": packet_filter.packets_out,
            "bytes_out": packet_filter.bytes_out,
            "packets_in": packet_filter.packets_in,
            "bytes_in": packet_filter.bytes_in,
            "denied_out": packet_filter.denied_out,
            "denied_in": packet_filter.denied_in,
            "channel_drops": self.channel_drops,
            "tun_drops": self.tun_drops,
        }

    def close(self, reason: str) -> None:
        """End: every open flow closed and audited, the last summaries written, routes gone."""
        if self.closed:
            return
        self.closed = True
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        now = self.clock.seconds()
        self.hub.detach(self.address)
        self.filter.flows.close_all(now, "session_end")
        for summary in self.denials.flush(now):
            self.record("network_denied", **summary.audit_details())
        if self.flow is not None:
            self.flow.close()
        if self._on_closed is not None:
            self._on_closed()
