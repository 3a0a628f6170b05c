"""A conntrack-like table of the flows a console opened, with Linux's default timeouts (no I/O).

A flow is keyed by its 5-tuple in the direction the console opened it,
C{(protocol, src, sport, dst, dport)}; the table indexes it under its reply
tuple too, so that a packet's tuple finds the flow and says which way it
goes.  Port-less protocols have C{0} for both ports.  An ICMP query (echo,
timestamp, information, address mask) has, in place of both ports, its
identifier and its request type (C{request_type << 16 | identifier}): the
reply, whose type differs, maps to the same flow.  ICMP errors never open
flows; the filter relates them to one through their embedded header.

States and timeouts follow nf_conntrack's defaults, as documented in the
kernel's Documentation/networking/nf_conntrack-sysctl.rst
(docs.kernel.org/networking/nf_conntrack-sysctl.html):

=====================================  =======  ===========================================
sysctl (net.netfilter.)                default  state here
=====================================  =======  ===========================================
nf_conntrack_tcp_timeout_syn_sent          120  L{FlowState.SYN_SENT}
nf_conntrack_tcp_timeout_syn_recv           60  L{FlowState.SYN_RECV}
nf_conntrack_tcp_timeout_established    432000  L{FlowState.ESTABLISHED} (5 days)
nf_conntrack_tcp_timeout_fin_wait          120  L{FlowState.FIN_WAIT}
nf_conntrack_tcp_timeout_close_wait         60  L{FlowState.CLOSE_WAIT}
nf_conntrack_tcp_timeout_last_ack           30  L{FlowState.LAST_ACK}
nf_conntrack_tcp_timeout_time_wait         120  L{FlowState.TIME_WAIT}
nf_conntrack_tcp_timeout_close              10  L{FlowState.CLOSE}
nf_conntrack_udp_timeout                    30  L{FlowState.UDP_UNREPLIED}, C{UDP_REPLIED}
nf_conntrack_udp_timeout_stream            120  L{FlowState.UDP_STREAM}
nf_conntrack_icmp_timeout                   30  L{FlowState.ICMP}
nf_conntrack_generic_timeout               600  L{FlowState.GENERIC}
=====================================  =======  ===========================================

The UDP stream timeout applies, as in the kernel since 2018 (commits
"udp: only extend timeout to stream mode after 2s" and 294304e4, "set stream
timeout to 2 minutes"), once a reply has been seen and a packet comes at
least 2 s after the flow opened.  UDP-Lite is tracked as UDP; DCCP, SCTP and
every other protocol as generic flows (with their ports in the key when
they have ports).  TCP follows SYN, FIN and RST both ways
(L{TCP_TRANSITIONS}, without the kernel's sequence-window checks); a SYN the
console sends on a flow in TIME_WAIT or CLOSE closes it and opens a new one,
as the kernel does.

The table is bounded (C{flow_limit}): a new flow beyond the limit is refused
(L{FlowTable.open} returns C{None}; the filter names the rule
C{network.flow_limit}) once the expired flows are gone.  Expired flows are
closed lazily, when a packet looks one up, and by L{FlowTable.expire}, which
costs O(expired): each flow sits in one insertion-ordered bucket per timeout
value, moved to the bucket's end by each packet, so every bucket is in
expiry order and a sweep stops at its first live flow.

The clock is injected: each call takes C{now} (seconds, any epoch); a
C{now} earlier than one already seen counts as that one, so expiry order
holds whatever the caller's clock does.  Every flow opened is closed exactly
once (by timeout, reuse, or L{FlowTable.close_all} at the session's end), and
the C{on_event} callback gets a L{FlowEvent} for each opening and closing,
with packets and bytes both ways and the duration: the rows
C{network_flow_opened} and C{network_flow_closed} of the audit.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

from jumpoint.network.ip_packets import (
    ICMP,
    ICMP_REPLIES,
    ICMP_REQUESTS,
    PORT_PROTOCOLS,
    TCP,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    UDP,
    UDPLITE,
    Embedded,
    Packet,
    format_address,
)
from shared.lifecycle import Transitions

Key: TypeAlias = tuple[int, int, int, int, int]
"""C{(protocol, src, sport, dst, dport)}; see the module docstring for ICMP and port-less ones."""

DEFAULT_FLOW_LIMIT = 4096
UDP_STREAM_AFTER = 2.0
"""Seconds after opening from which a replied UDP flow counts as a stream."""

OPENED = "network_flow_opened"
CLOSED = "network_flow_closed"


class FlowState(enum.Enum):
    """A flow's state: TCP's as in conntrack, then one family per other protocol class."""

    SYN_SENT = "SYN_SENT"
    SYN_RECV = "SYN_RECV"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT = "FIN_WAIT"
    CLOSE_WAIT = "CLOSE_WAIT"
    LAST_ACK = "LAST_ACK"
    TIME_WAIT = "TIME_WAIT"
    CLOSE = "CLOSE"
    UDP_UNREPLIED = "UDP_UNREPLIED"
    UDP_REPLIED = "UDP_REPLIED"
    UDP_STREAM = "UDP_STREAM"
    ICMP = "ICMP"
    GENERIC = "GENERIC"


class TcpEvent(enum.Enum):
    """What a TCP segment means for the flow, from its flags, its direction and the FINs seen."""

    SYN_ORIG = enum.auto()
    SYN_REPLY = enum.auto()
    SYNACK_ORIG = enum.auto()
    SYNACK_REPLY = enum.auto()
    ACK_ORIG = enum.auto()
    ACK_REPLY = enum.auto()
    FIN_FIRST = enum.auto()
    """The first FIN of the connection, either way."""
    FIN_AGAIN = enum.auto()
    """A FIN from a side that already sent one (a retransmission)."""
    FIN_SECOND = enum.auto()
    """The FIN of the other side."""
    ACK_OF_FIN = enum.auto()
    """A segment without FIN from the side that has not sent one, after the first FIN."""
    ACK_LAST = enum.auto()
    """A segment without FIN after both FINs: the last ACK."""
    RST = enum.auto()


_S = FlowState
_E = TcpEvent
TCP_TRANSITIONS: Transitions[FlowState, TcpEvent] = Transitions(
    "tcp flow",
    FlowState,
    TcpEvent,
    {
        _S.SYN_SENT: {
            _E.SYN_ORIG: _S.SYN_SENT,
            _E.SYNACK_REPLY: _S.SYN_RECV,
            _E.SYN_REPLY: _S.SYN_RECV,  # simultaneous open
            _E.RST: _S.CLOSE,
        },
        _S.SYN_RECV: {
            _E.SYNACK_REPLY: _S.SYN_RECV,
            _E.SYNACK_ORIG: _S.SYN_RECV,
            _E.ACK_ORIG: _S.ESTABLISHED,
            _E.FIN_FIRST: _S.FIN_WAIT,
            _E.RST: _S.CLOSE,
        },
        _S.ESTABLISHED: {_E.FIN_FIRST: _S.FIN_WAIT, _E.RST: _S.CLOSE},
        _S.FIN_WAIT: {
            _E.ACK_OF_FIN: _S.CLOSE_WAIT,
            _E.FIN_SECOND: _S.LAST_ACK,
            _E.RST: _S.CLOSE,
        },
        _S.CLOSE_WAIT: {_E.FIN_SECOND: _S.LAST_ACK, _E.RST: _S.CLOSE},
        _S.LAST_ACK: {_E.ACK_LAST: _S.TIME_WAIT, _E.RST: _S.CLOSE},
        _S.TIME_WAIT: {_E.SYN_ORIG: _S.SYN_SENT, _E.RST: _S.CLOSE},  # SYN: a new connection
        _S.CLOSE: {_E.SYN_ORIG: _S.SYN_SENT},  # a new connection
    },
)
"""TCP's states and moves; an event a state does not list leaves the state as it is."""

_REUSABLE = frozenset({id(FlowState.TIME_WAIT), id(FlowState.CLOSE)})
_ORIG_FIN = 1
_REPLY_FIN = 2


def tcp_event(flags: int, reply: bool, fins: int) -> TcpEvent:
    """The L{TcpEvent} of a segment with C{flags}, going C{reply} way, after the FINs C{fins}."""
    if flags & TCP_RST:
        return TcpEvent.RST
    if flags & TCP_SYN:
        if flags & TCP_ACK:
            return TcpEvent.SYNACK_REPLY if reply else TcpEvent.SYNACK_ORIG
        return TcpEvent.SYN_REPLY if reply else TcpEvent.SYN_ORIG
    side = _REPLY_FIN if reply else _ORIG_FIN
    if flags & TCP_FIN:
        if not fins:
            return TcpEvent.FIN_FIRST
        return TcpEvent.FIN_AGAIN if fins & side else TcpEvent.FIN_SECOND
    if fins == _ORIG_FIN | _REPLY_FIN:
        return TcpEvent.ACK_LAST
    if fins and not fins & side:
        return TcpEvent.ACK_OF_FIN
    return TcpEvent.ACK_REPLY if reply else TcpEvent.ACK_ORIG


@dataclass(frozen=True)
class Timeouts:
    """Seconds of inactivity before a flow in each state closes (nf_conntrack's defaults)."""

    tcp_syn_sent: float = 120
    tcp_syn_recv: float = 60
    tcp_established: float = 432000
    tcp_fin_wait: float = 120
    tcp_close_wait: float = 60
    tcp_last_ack: float = 30
    tcp_time_wait: float = 120
    tcp_close: float = 10
    udp: float = 30
    udp_stream: float = 120
    icmp: float = 30
    generic: float = 600

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"timeout {name} must be positive, not {value!r}")

    def by_state(self) -> dict[FlowState, float]:
        return {
            FlowState.SYN_SENT: self.tcp_syn_sent,
            FlowState.SYN_RECV: self.tcp_syn_recv,
            FlowState.ESTABLISHED: self.tcp_established,
            FlowState.FIN_WAIT: self.tcp_fin_wait,
            FlowState.CLOSE_WAIT: self.tcp_close_wait,
            FlowState.LAST_ACK: self.tcp_last_ack,
            FlowState.TIME_WAIT: self.tcp_time_wait,
            FlowState.CLOSE: self.tcp_close,
            FlowState.UDP_UNREPLIED: self.udp,
            FlowState.UDP_REPLIED: self.udp,
            FlowState.UDP_STREAM: self.udp_stream,
            FlowState.ICMP: self.icmp,
            FlowState.GENERIC: self.generic,
        }


def flow_key(header: Packet | Embedded) -> Key | None:
    """The 5-tuple of a packet (or of an ICMP error's embedded header), as it travels.

    C{None} when it has none: a later fragment or an embedded header without
    ports, an ICMP error, or an ICMP type other than a query or its reply.
    """
    protocol = header.protocol
    if protocol in PORT_PROTOCOLS:
        sport = header.sport
        dport = header.dport
        if sport is None or dport is None:
            return None
        return (protocol, header.src, sport, header.dst, dport)
    if protocol == ICMP:
        identifier = header.icmp_id
        if identifier is None:
            return None
        kind = header.icmp_type
        request = kind if kind in ICMP_REQUESTS else ICMP_REPLIES.get(kind or 0, 0)
        port = request << 16 | identifier
        return (ICMP, header.src, port, header.dst, port)
    return (protocol, header.src, 0, header.dst, 0)


def reply_key(key: Key) -> Key:
    """The tuple of the same flow seen the other way."""
    protocol, src, sport, dst, dport = key
    return (protocol, dst, dport, src, sport)


class Flow:
    """One tracked flow: its tuples, state, timer and counters (the table changes it)."""

    __slots__ = (
        "bucket",
        "bytes_in",
        "bytes_out",
        "closed",
        "expires",
        "fins",
        "flow_id",
        "key",
        "last_seen",
        "opened_at",
        "packets_in",
        "packets_out",
        "replied",
        "reply_key",
        "state",
        "timeout",
    )

    def __init__(self, flow_id: int, key: Key, state: FlowState, now: float) -> None:
        self.flow_id = flow_id
        self.key = key
        self.reply_key = reply_key(key)
        self.state = state
        self.opened_at = now
        self.last_seen = now
        self.expires = now
        self.timeout = 0.0
        self.bucket: OrderedDict[Key, Flow] | None = None
        self.packets_out = 0
        self.bytes_out = 0
        self.packets_in = 0
        self.bytes_in = 0
        self.replied = False
        self.fins = 0
        self.closed = False

    @property
    def protocol(self) -> int:
        return self.key[0]

    def __repr__(self) -> str:
        protocol, src, sport, dst, dport = self.key
        return (
            f"<Flow {protocol} {format_address(src)}:{sport} -> {format_address(dst)}:{dport}"
            f" {self.state.name}>"
        )


@dataclass(frozen=True)
class FlowEvent:
    """A flow opened or closed: the audit row C{network_flow_opened} / C{network_flow_closed}.

    C{sport}/C{dport} are set for protocols with ports, C{icmp_id} for ICMP
    queries.  C{duration} is the time from the first packet to the last;
    C{closed_at} is when the flow ended (its expiry, for a timeout).
    """

    event: str
    flow_id: int
    """Numbers the flows of a table from 1: an opening and its closing share it."""
    protocol: int
    src: str
    dst: str
    sport: int | None
    dport: int | None
    icmp_id: int | None
    state: str
    packets_out: int
    bytes_out: int
    packets_in: int
    bytes_in: int
    opened_at: float
    duration: float
    closed_at: float | None = None
    reason: str | None = None
    """Why it closed: C{timeout}, C{reused} (a new TCP connection on the tuple) or the caller's."""

    def audit_details(self) -> dict[str, Any]:
        """The fields of the audit row, without the event name."""
        details = {
            "flow_id": self.flow_id,
            "protocol": self.protocol,
            "src": self.src,
            "dst": self.dst,
            "sport": self.sport,
            "dport": self.dport,
            "icmp_id": self.icmp_id,
            "state": self.state,
            "packets_out": self.packets_out,
            "bytes_out": self.bytes_out,
            "packets_in": self.packets_in,
            "bytes_in": self.bytes_in,
            "duration": round(self.duration, 3),
        }
        if self.reason is not None:
            details["reason"] = self.reason
        return {name: value for name, value in details.items() if value is not None}


def _event(name: str, flow: Flow, closed_at: float | None, reason: str | None) -> FlowEvent:
    protocol, src, sport, dst, dport = flow.key
    has_ports = protocol in PORT_PROTOCOLS
    return FlowEvent(
        name,
        flow.flow_id,
        protocol,
        format_address(src),
        format_address(dst),
        sport if has_ports else None,
        dport if has_ports else None,
        sport & 0xFFFF if protocol == ICMP else None,
        flow.state.value,
        flow.packets_out,
        flow.bytes_out,
        flow.packets_in,
        flow.bytes_in,
        flow.opened_at,
        flow.last_seen - flow.opened_at,
        closed_at,
        reason,
    )


def _initial_state(protocol: int, tcp_flags: int | None) -> FlowState:
    if protocol == TCP:
        flags = tcp_flags or 0
        bare_syn = flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN
        return FlowState.SYN_SENT if bare_syn else FlowState.ESTABLISHED  # a pick-up
    if protocol in (UDP, UDPLITE):
        return FlowState.UDP_UNREPLIED
    if protocol == ICMP:
        return FlowState.ICMP
    return FlowState.GENERIC


class FlowTable:
    """The flows of one session, bounded by C{flow_limit}; see the module docstring."""

    def __init__(
        self,
        flow_limit: int = DEFAULT_FLOW_LIMIT,
        on_event: Callable[[FlowEvent], None] | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        if flow_limit < 1:
            raise ValueError(f"flow_limit must be at least 1, not {flow_limit}")
        self.flow_limit = flow_limit
        self._on_event = on_event
        by_state = (timeouts or Timeouts()).by_state()
        self._timeout = {id(state): seconds for state, seconds in by_state.items()}
        self._buckets: dict[float, OrderedDict[Key, Flow]] = {
            seconds: OrderedDict() for seconds in by_state.values()
        }
        self._index: dict[Key, tuple[Flow, bool]] = {}
        self._count = 0
        self._now = float("-inf")
        self.opened = 0
        self.closed = 0
        self.refused = 0

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Flow]:
        """The open flows (expired ones too, until a lookup or a sweep closes them)."""
        for bucket in self._buckets.values():
            yield from list(bucket.values())

    def _clock(self, now: float) -> float:
        if now < self._now:
            return self._now
        self._now = now
        return now

    def find(self, key: Key, now: float) -> tuple[Flow, bool] | None:
        """The live flow C{key} belongs to and whether C{key} is its reply direction."""
        found = self._index.get(key)
        if found is None:
            return None
        expires = found[0].expires
        if expires <= now or expires <= self._now:  # (the clock never goes back)
            self._close(found[0], expires, "timeout")
            return None
        return found

    def open(self, key: Key, tcp_flags: int | None, now: float) -> Flow | None:
        """Open a flow for C{key} (whose first packet the caller then passes to L{seen}).

        C{None} if the table is full of live flows.  C{key} must not belong
        to a live flow already (look it up with L{find} first).
        """
        now = self._clock(now)
        if self._count >= self.flow_limit:
            self.expire(now)
            if self._count >= self.flow_limit:
                self.refused += 1
                return None
        flow = Flow(self.opened + 1, key, _initial_state(key[0], tcp_flags), now)
        self._index[flow.reply_key] = (flow, True)
        self._index[key] = (flow, False)  # wins when both tuples are the same
        self._count += 1
        self.opened += 1
        self._schedule(flow, now)
        if self._on_event is not None:
            self._on_event(_event(OPENED, flow, None, None))
        return flow

    def _schedule(self, flow: Flow, now: float) -> None:
        """Restart the flow's timer for its state, at the end of that timeout's bucket."""
        timeout = self._timeout[id(flow.state)]
        bucket = flow.bucket
        if timeout != flow.timeout or bucket is None:
            if bucket is not None:
                del bucket[flow.key]
            bucket = self._buckets[timeout]
            bucket[flow.key] = flow
            flow.bucket = bucket
            flow.timeout = timeout
        else:
            bucket.move_to_end(flow.key)
        flow.expires = now + timeout

    def seen(self, flow: Flow, reply: bool, length: int, tcp_flags: int | None, now: float) -> Flow:
        """Count a packet of C{flow} going C{reply} way, move its state, restart its timer.

        Returns the flow the packet belongs to: a new one when a SYN starts a
        new TCP connection on the tuple of one in TIME_WAIT or CLOSE.
        """
        if now < self._now:  # inlined _clock: this runs per packet
            now = self._now
        else:
            self._now = now
        state = flow.state
        if tcp_flags is not None:
            event = tcp_event(tcp_flags, reply, flow.fins)
            target = TCP_TRANSITIONS.target(state, event)
            if target is not None and target is not state:
                if event is TcpEvent.SYN_ORIG and id(state) in _REUSABLE:
                    key = flow.key
                    self._close(flow, now, "reused")
                    new = self.open(key, tcp_flags, now)
                    assert new is not None  # the closed flow freed a place
                    flow = new
                else:
                    flow.state = target
            if tcp_flags & TCP_FIN and not tcp_flags & TCP_RST:
                flow.fins |= _REPLY_FIN if reply else _ORIG_FIN
        elif state is FlowState.UDP_UNREPLIED:
            if reply:
                flow.state = FlowState.UDP_REPLIED
        elif state is FlowState.UDP_REPLIED and now - flow.opened_at >= UDP_STREAM_AFTER:
            flow.state = FlowState.UDP_STREAM
        if reply:
            flow.packets_in += 1
            flow.bytes_in += length
            flow.replied = True
        else:
            flow.packets_out += 1
            flow.bytes_out += length
        flow.last_seen = now
        bucket = flow.bucket
        if bucket is not None and flow.timeout == self._timeout[id(flow.state)]:
            bucket.move_to_end(flow.key)  # the common case of _schedule, inlined
            flow.expires = now + flow.timeout
        else:
            self._schedule(flow, now)
        return flow

    def count(self, flow: Flow, reply: bool, length: int) -> None:
        """Count a packet that belongs to C{flow} without touching its state or timer.

        For later fragments and related ICMP errors; nothing happens for a
        flow that has closed meanwhile.
        """
        if flow.closed:
            return
        if reply:
            flow.packets_in += 1
            flow.bytes_in += length
        else:
            flow.packets_out += 1
            flow.bytes_out += length

    def expire(self, now: float) -> int:
        """Close every flow whose timer ran out by C{now}; the number closed."""
        now = self._clock(now)
        closed = 0
        for bucket in self._buckets.values():
            while bucket:
                flow = bucket[next(iter(bucket))]
                if flow.expires > now:
                    break
                self._close(flow, flow.expires, "timeout")
                closed += 1
        return closed

    def close_all(self, now: float, reason: str = "session_end") -> int:
        """Close every flow (the session ends); the number closed."""
        now = self._clock(now)
        closed = 0
        for flow in list(self):
            expired = flow.expires <= now
            self._close(flow, flow.expires if expired else now, "timeout" if expired else reason)
            closed += 1
        return closed

    def _close(self, flow: Flow, closed_at: float, reason: str) -> None:
        flow.closed = True
        if flow.bucket is not None:
            del flow.bucket[flow.key]
            flow.bucket = None
        del self._index[flow.key]
        self._index.pop(flow.reply_key, None)
        self._count -= 1
        self.closed += 1
        if self._on_event is not None:
            self._on_event(_event(CLOSED, flow, closed_at, reason))
