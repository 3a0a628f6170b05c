"""Network sessions on the Jumpoint: the shared TUN hub, the address pool, one link per session.

L{NetworkService.open_link} is what the network kind does when a session of
one of its items opens: it starts the hub if it is not running (the first
network session; L{AccessDenied} with rule C{network.unavailable} when this
host cannot), takes an inner address from the pool (rule
C{network.pool_exhausted}), builds the session's packet filter from the
item's rules, the Jumpoint's C{allowed_targets} and the groups'
C{tunnels_restricted.protocol}, opens the session's datagram flow on its
channel, and returns the L{NetworkSessionLink}.

Per packet, C{allowed_targets} is judged as for a TCP target
(L{shared.addresses.EgressGuard}: loopback, link-local and the Jumpoint's own
listener only when listed explicitly), with port 0 for protocols without
ports; C{tunnels_restricted.protocol} allows TCP packets when it names
C{tcp}, UDP packets when it names C{udp} (C{tcp-udp}: both), and other
protocols (ICMP, GRE, ...) only when it restricts nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from ipaddress import IPv4Network

from twisted.internet.interfaces import IReactorFDSet, IReactorTime

from jumpoint.network.address_pool import AddressPool
from jumpoint.network.flow_table import FlowTable
from jumpoint.network.hub import UNAVAILABLE, NetworkHub
from jumpoint.network.ip_packets import TCP, UDP, format_address
from jumpoint.network.packet_filter import PacketFilter
from jumpoint.network.rule_match import CompiledRule
from jumpoint.network.session_link import NetworkSessionLink, Record
from jumpoint.network.settings import NetworkSettings
from jumpoint.policy import Restrictions
from jumpoint.recording import SessionRecorder
from shared.addresses import EgressGuard, FilterRule
from shared.errors import AccessDenied
from shared.protocol.datagrams import Datagrams


def routes_of(rules: Iterable[FilterRule]) -> list[str]:
    """The console's routes for the item: every rule's addresses, in as few CIDRs as cover them."""
    networks: list[IPv4Network] = []
    for rule in rules:
        for first, last in CompiledRule.of(rule).addresses:
            networks.extend(
                ipaddress.summarize_address_range(
                    ipaddress.IPv4Address(first), ipaddress.IPv4Address(last)
                )
            )
    return [str(network) for network in ipaddress.collapse_addresses(networks)]


def protocol_check(restrictions: Restrictions) -> Callable[[int], bool]:
    """C{tunnels_restricted.protocol} per packet (module docstring)."""
    tcp = restrictions.allows_protocol("tcp")
    udp = restrictions.allows_protocol("udp")
    others = restrictions.protocol is None

    def allowed(number: int) -> bool:
        if number == TCP:
            return tcp
        if number == UDP:
            return udp
        return others

    return allowed


def target_check(guard: EgressGuard, pool: IPv4Network) -> Callable[[str, int | None], bool]:
    """C{allowed_targets} per new flow (module docstring); never an address of the pool.

    The pool holds the Jumpoint's own tunnel address and the other sessions'
    inner addresses: a console never reaches them through its tunnel.
    """
    first, last = int(pool.network_address), int(pool.broadcast_address)

    def allowed(address: str, port: int | None) -> bool:
        if first <= int(ipaddress.IPv4Address(address)) <= last:
            return False
        return guard.check(port or 0, [address], {}).allowed

    return allowed


class NetworkService:
    """The Jumpoint's network sessions (module docstring)."""

    def __init__(
        self, settings: NetworkSettings, reactor: IReactorTime, hub: NetworkHub | None = None
    ) -> None:
        self.settings = settings
        self.clock = reactor
        self.pool = AddressPool(settings.pool)
        self.hub = hub
        """Made at the first network session (L{open_link})."""

    def open_link(
        self,
        session_id: str,
        rules: Iterable[FilterRule],
        *,
        datagrams: Datagrams,
        restrictions: Restrictions,
        guard: EgressGuard,
        record: Record,
        recorder: SessionRecorder | None = None,
    ) -> NetworkSessionLink:
        """Set up one session's packets (module docstring); L{AccessDenied} if it cannot be."""
        rules = tuple(rules)
        hub = self._started_hub()
        address = self.pool.allocate(session_id)
        try:
            events: list[NetworkSessionLink] = []
            flows = FlowTable(
                self.settings.flow_limit, on_event=lambda event: events[0].flow_event(event)
            )
            packet_filter = PacketFilter(
                int(address),
                rules,
                target_check(guard, self.settings.pool),
                protocol_check(restrictions),
                flows,
                max_size=self.settings.mtu,
            )
            link = NetworkSessionLink(
                address=address,
                routes=routes_of(rules),
                mtu=self.settings.mtu,
                hub=hub,
                packet_filter=packet_filter,
                clock=self.clock,
                record=record,
                on_closed=lambda: self.pool.release(session_id),
                recorder=recorder,
            )
            events.append(link)
            link.start(datagrams.open_flow(datagrams.next_flow_id(), link))
        except BaseException:
            self.pool.release(session_id)
            raise
        return link

    def _started_hub(self) -> NetworkHub:
        hub = self.hub
        if hub is None:
            fd_set = IReactorFDSet(self.clock, None)
            if fd_set is None:
                raise AccessDenied(
                    "this Jumpoint runs without a reactor that watches descriptors",
                    rule=UNAVAILABLE,
                )
            hub = self.hub = NetworkHub(self.settings, fd_set)
        hub.start()
        return hub

    def stop(self) -> list[str]:
        """The Jumpoint stops: the interface and egress go; what was removed."""
        return self.hub.stop() if self.hub is not None else []


__all__ = ["NetworkService", "format_address", "protocol_check", "routes_of", "target_check"]
