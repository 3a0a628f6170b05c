"""The Jumpoint's per-packet decision for one network tunnel session: pass or drop, and why.

L{PacketFilter.outbound} decides on each packet from the console (to be
written to the TUN), L{PacketFilter.inbound} on each packet read from the TUN
for the session (to be sent to the console).  Both take the raw bytes and
the clock, and return a L{Verdict}; nothing here does I/O.

Outbound (console to remote), in this order, each denial naming its rule:

 1. C{network.malformed}: the packet does not parse (L{ip_packets.Reason}),
    or it carries IP options (source routing and the like: refused);
 2. C{network.spoofed_source}: the source is not the session's inner address;
 3. a later fragment passes only if its datagram's first fragment passed
    (L{jumpoint.network.fragments}), else C{network.fragment} (also for a TCP
    fragment at offset 8, which can only overwrite the TCP header: RFC 1858);
 4. a packet of a flow already open passes (its checks were made when the
    flow opened: the rules of a session do not change);
 5. an ICMP error passes only if it reports on a packet of a flow the remote
    sent, back to that packet's source; an ICMP reply or redirect, or an
    error no flow explains, is C{network.unsolicited};
 6. C{network.filter}: the destination, protocol and destination port match
    none of the item's filter rules (L{rule_match.FilterMatcher}), or the
    destination is the session's own address;
 7. C{allowed_targets}: the Jumpoint's own allow-list check, a callable
    C{(destination text, port or None) -> bool};
 8. C{tunnels_restricted.protocol}: the user's groups' protocol restriction,
    a callable C{(IP protocol number) -> bool};
 9. C{network.tcp_state}: a TCP segment that would open a flow but is not a
    bare SYN (a connection this session did not start here, or one whose
    flow expired);
 10. C{network.flow_limit}: the flow table is full.

Inbound (remote to console): only packets of a known flow in its reply
direction, ICMP errors whose embedded header is a packet of a known flow
the console sent, and later fragments of datagrams whose first fragment
passed reach the console; everything else is C{network.unsolicited}
(C{network.fragment} for fragments, C{network.malformed} for what does not
parse).  Inbound packets were written by the Jumpoint's kernel, which checked
their header checksum, so it is not checked again unless asked.

Allowed packets return the shared L{ALLOWED} verdict, so the pass path
allocates only the parsed header.  Denied ones carry the rule, a reason,
the protocol and the remote address, for L{jumpoint.network.denials}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from jumpoint.network.flow_table import FlowTable, flow_key
from jumpoint.network.fragments import FragmentMemory
from jumpoint.network.ip_packets import (
    DEFAULT_MAX_SIZE,
    HARD_MAX_SIZE,
    HEADER_SIZE,
    ICMP,
    ICMP_REPLIES,
    ICMP_REQUESTS,
    TCP,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Malformed,
    Packet,
    format_address,
    parse,
    parse_address,
)
from jumpoint.network.rule_match import FilterMatcher
from shared.addresses import FilterRule

MALFORMED = "network.malformed"
SPOOFED_SOURCE = "network.spoofed_source"
FILTER = "network.filter"
ALLOWED_TARGETS = "allowed_targets"
PROTOCOL = "tunnels_restricted.protocol"
TCP_STATE = "network.tcp_state"
FLOW_LIMIT = "network.flow_limit"
UNSOLICITED = "network.unsolicited"
FRAGMENT = "network.fragment"

RULES = (
    MALFORMED,
    SPOOFED_SOURCE,
    FRAGMENT,
    UNSOLICITED,
    FILTER,
    ALLOWED_TARGETS,
    PROTOCOL,
    TCP_STATE,
    FLOW_LIMIT,
)
"""Every rule a verdict can name."""

ICMP_REDIRECT = 5
_SYN_MASK = TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN

TargetCheck = Callable[[str, int | None], bool]
"""C{allowed_targets}: may the destination (dotted quad) at the port (or C{None}) be reached?"""
ProtocolCheck = Callable[[int], bool]
"""C{tunnels_restricted.protocol}: whether the IP protocol number is allowed."""


@dataclass(slots=True)
class Verdict:
    """Whether a packet passes; when not, the rule that dropped it and the details to audit.

    C{peer} is the remote address: the destination of an outbound packet, the
    source of an inbound one (C{None} if the packet was too broken to say).
    """

    allowed: bool
    rule: str | None = None
    reason: str | None = None
    protocol: int | None = None
    peer: int | None = None


ALLOWED = Verdict(True)
"""The verdict of every packet that passes (one shared object: treat as read-only)."""


class PacketFilter:
    """The stateful filter of one session; see the module docstring for the checks.

    @param inner_address: the session's inner address (dotted quad or integer).
    @param rules: the item's filter rules, or a L{FilterMatcher} built from them.
    @param allowed_targets_check: the Jumpoint's C{allowed_targets} check.
    @param protocol_allowed: the groups' C{tunnels_restricted.protocol} check.
    @param flow_table: the session's flows (its limit is C{network.flow_limit}).
    @param fragments: the memory of first fragments that passed (default: 1024 for 30 s).
    @param max_size: the largest packet either way (the tunnel MTU, at most 65535).
    @param verify_inbound_checksum: check the header checksum of inbound packets too.
    """

    def __init__(
        self,
        inner_address: str | int,
        rules: Iterable[FilterRule] | FilterMatcher,
        allowed_targets_check: TargetCheck,
        protocol_allowed: ProtocolCheck,
        flow_table: FlowTable,
        fragments: FragmentMemory | None = None,
        max_size: int = DEFAULT_MAX_SIZE,
        verify_inbound_checksum: bool = False,
    ) -> None:
        if not HEADER_SIZE <= max_size <= HARD_MAX_SIZE:
            raise ValueError(f"max_size must be from {HEADER_SIZE} to {HARD_MAX_SIZE}")
        self.inner = (
            inner_address if isinstance(inner_address, int) else parse_address(inner_address)
        )
        self.matcher = rules if isinstance(rules, FilterMatcher) else FilterMatcher(rules)
        self._allowed_target = allowed_targets_check
        self._protocol_allowed = protocol_allowed
        self.flows = flow_table
        self.fragments = fragments if fragments is not None else FragmentMemory()
        self.max_size = max_size
        self.verify_inbound_checksum = verify_inbound_checksum
        self.packets_out = 0
        self.bytes_out = 0
        self.denied_out = 0
        self.packets_in = 0
        self.bytes_in = 0
        self.denied_in = 0

    # console -> remote

    def _deny_out(self, rule: str, reason: str, protocol: int | None, peer: int | None) -> Verdict:
        self.denied_out += 1
        return Verdict(False, rule, reason, protocol, peer)

    def outbound(self, data: bytes | bytearray | memoryview, now: float) -> Verdict:
        """Decide on a packet from the console; L{ALLOWED} or a denial."""
        packet = parse(data, self.max_size)
        if isinstance(packet, Malformed):
            return self._deny_out(MALFORMED, packet.reason.value, packet.protocol, packet.dst)
        protocol = packet.protocol
        dst = packet.dst
        if packet.src != self.inner:
            return self._deny_out(
                SPOOFED_SOURCE, f"source {format_address(packet.src)}", protocol, dst
            )
        if packet.header_length != HEADER_SIZE:
            return self._deny_out(MALFORMED, "ip_options", protocol, dst)
        size = packet.total_length
        if packet.fragment_offset:
            return self._later_fragment(packet, False, now) or self._passed_out(size)
        if dst == self.inner:
            return self._deny_out(FILTER, "the session's own address", protocol, dst)
        if protocol == ICMP and packet.icmp_type not in ICMP_REQUESTS:
            return self._outbound_icmp(packet, now) or self._passed_out(size)
        key = flow_key(packet)
        assert key is not None  # a first fragment has its ports; an ICMP query its id
        flows = self.flows
        found = flows.find(key, now)
        flags = packet.tcp_flags
        if found is not None:
            flow, reply = found
            if reply:  # only possible for a packet to the inner address, refused above
                return self._deny_out(UNSOLICITED, "reply direction", protocol, dst)
            flow = flows.seen(flow, False, size, flags, now)
        else:
            port = packet.dport
            if not self.matcher.matches(dst, protocol, port):
                return self._deny_out(FILTER, "no filter rule matches", protocol, dst)
            if not self._allowed_target(format_address(dst), port):
                return self._deny_out(ALLOWED_TARGETS, "not in allowed_targets", protocol, dst)
            if not self._protocol_allowed(protocol):
                return self._deny_out(PROTOCOL, f"protocol {protocol}", protocol, dst)
            if protocol == TCP and (flags or 0) & _SYN_MASK != TCP_SYN:
                return self._deny_out(TCP_STATE, "not a SYN", protocol, dst)
            opened = flows.open(key, flags, now)
            if opened is None:
                return self._deny_out(FLOW_LIMIT, "flow table full", protocol, dst)
            flow = flows.seen(opened, False, size, flags, now)
        if packet.more_fragments:
            self.fragments.remember(
                (packet.src, dst, protocol, packet.identification), flow, False, now
            )
        self.packets_out += 1
        self.bytes_out += size
        return ALLOWED

    def _passed_out(self, size: int) -> Verdict:
        self.packets_out += 1
        self.bytes_out += size
        return ALLOWED

    def _outbound_icmp(self, packet: Packet, now: float) -> Verdict | None:
        """An outbound ICMP message that is not a query: only a related error passes."""
        embedded = packet.embedded
        kind = packet.icmp_type
        if embedded is None or kind == ICMP_REDIRECT:
            what = "reply" if kind in ICMP_REPLIES else f"type {kind}"
            return self._deny_out(UNSOLICITED, f"icmp {what}", ICMP, packet.dst)
        key = flow_key(embedded)
        found = self.flows.find(key, now) if key is not None else None
        if found is None or not found[1] or embedded.src != packet.dst:
            return self._deny_out(UNSOLICITED, "icmp error of no flow", ICMP, packet.dst)
        self.flows.count(found[0], False, packet.total_length)
        return None

    def _later_fragment(self, packet: Packet, reply: bool, now: float) -> Verdict | None:
        """A fragment at offset > 0: it passes (C{None}) only after its first fragment did."""
        protocol = packet.protocol
        peer = packet.src if reply else packet.dst
        deny = self._deny_in if reply else self._deny_out
        if protocol == TCP and packet.fragment_offset == 8:
            return deny(FRAGMENT, "overlaps the tcp header", protocol, peer)
        key = (packet.src, packet.dst, protocol, packet.identification)
        found = self.fragments.find(key, now)
        if found is None:
            return deny(FRAGMENT, "no first fragment passed", protocol, peer)
        self.flows.count(found[0], found[1], packet.total_length)
        return None

    # remote -> console

    def _deny_in(self, rule: str, reason: str, protocol: int | None, peer: int | None) -> Verdict:
        self.denied_in += 1
        return Verdict(False, rule, reason, protocol, peer)

    def _passed_in(self, size: int) -> Verdict:
        self.packets_in += 1
        self.bytes_in += size
        return ALLOWED

    def inbound(self, data: bytes | bytearray | memoryview, now: float) -> Verdict:
        """Decide on a packet for the console; L{ALLOWED} or a denial."""
        packet = parse(data, self.max_size, self.verify_inbound_checksum)
        if isinstance(packet, Malformed):
            return self._deny_in(MALFORMED, packet.reason.value, packet.protocol, None)
        protocol = packet.protocol
        src = packet.src
        if packet.dst != self.inner:
            return self._deny_in(UNSOLICITED, "not for the session", protocol, src)
        size = packet.total_length
        if packet.fragment_offset:
            return self._later_fragment(packet, True, now) or self._passed_in(size)
        if protocol == ICMP and packet.icmp_type not in ICMP_REPLIES:
            return self._inbound_icmp(packet, now) or self._passed_in(size)
        key = flow_key(packet)
        assert key is not None
        flows = self.flows
        found = flows.find(key, now)
        if found is None or not found[1]:
            return self._deny_in(UNSOLICITED, "no flow", protocol, src)
        flow = flows.seen(found[0], True, size, packet.tcp_flags, now)
        if packet.more_fragments:
            self.fragments.remember(
                (src, packet.dst, protocol, packet.identification), flow, True, now
            )
        self.packets_in += 1
        self.bytes_in += size
        return ALLOWED

    def _inbound_icmp(self, packet: Packet, now: float) -> Verdict | None:
        """An inbound ICMP message that is not a reply: only a related error passes."""
        embedded = packet.embedded
        kind = packet.icmp_type
        if embedded is None or kind == ICMP_REDIRECT:
            what = "request" if kind in ICMP_REQUESTS else f"type {kind}"
            return self._deny_in(UNSOLICITED, f"icmp {what}", ICMP, packet.src)
        key = flow_key(embedded)
        found = self.flows.find(key, now) if key is not None else None
        if found is None or found[1] or embedded.src != self.inner:
            return self._deny_in(UNSOLICITED, "icmp error of no flow", ICMP, packet.src)
        self.flows.count(found[0], True, packet.total_length)
        return None
