"""The C{network} kind on the Jumpoint: a session's IPv4 packets through the packet filter.

A network item carries no streams: when a session opens, the kind sets up
its data path (L{jumpoint.network.tunnel_service.NetworkService.open_link}): an
inner address from the pool, the session's stateful filter built from the
item's filter rules, and one datagram flow on the channel; the session's
reply carries the address, the routes, the MTU and the flow
(C{network}); C{jump item filter} adds and removes its rules.  Linux
Jumpoints only.  The protocol restriction of the groups is judged per packet
(L{jumpoint.network.tunnel_service.protocol_check}), not when
the session opens.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from jumpoint.config import JumpointConfig
from jumpoint.dialing import own_endpoints
from jumpoint.kinds.base import JumpointKind, SessionStart
from jumpoint.kinds.tcp import open_upstream as tcp_upstream
from jumpoint.network import host_checks
from jumpoint.network.session_link import NetworkSessionLink
from jumpoint.network.tunnel_service import NetworkService
from jumpoint.recording import LINKTYPE_RAW
from shared.addresses import EgressGuard
from shared.kinds.network import KIND as SHARED


def host_problems(config: JumpointConfig) -> list[str]:
    """Linux, CAP_NET_ADMIN, nft and forwarding (L{jumpoint.network.host_checks})."""
    return host_checks.problems(config.network)


def make_service(config: JumpointConfig, clock: IReactorTime) -> NetworkService:
    """The shared TUN interface and the address pool (the interface opens at the first session)."""
    return NetworkService(config.network, clock)


def start_session(start: SessionStart) -> NetworkSessionLink:
    config = start.config
    service = start.service
    assert isinstance(service, NetworkService)
    return service.open_link(
        start.session.session_id,
        list(start.session.item.filters),
        datagrams=start.datagrams,
        restrictions=start.restrictions,
        guard=EgressGuard.of(config.allowed_targets, own_endpoints(config)),
        record=start.record,
        recorder=start.recorder,
    )


KIND = JumpointKind(
    shared=SHARED,
    open_upstream=tcp_upstream,  # never reached: a network item has no tunnels to open
    platforms=("linux",),
    platform_refusal="network tunnels need a Linux Jumpoint",
    has_filters=True,
    protocol=None,
    host_problems=host_problems,
    start_session=start_session,
    make_service=make_service,
    recording_link_type=LINKTYPE_RAW,
    audit_events=("network_denied", "network_flow_closed", "network_flow_opened"),
)
