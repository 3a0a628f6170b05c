"""The C{network} member of a network session's reply, checked at the console's boundary.

A network session's C{open_session} result carries C{network: {address,
gateway, routes, mtu, flow}} (docs/protocol.md): the console's inner IPv4
address, the Jumpoint's own address on its interface, the IPv4 networks to
route into the console's TUN interface, the MTU, and the datagram flow that
carries the packets.  L{parse_network_terms} checks every member with the
same rules the network service applies to a request
(L{console.network_requests}) and turns anything malformed into a
L{ProtocolViolation}: a Jumpoint never makes the console route what it may
not (the default route, loopback, multicast) or size its buffers from an
unchecked number.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from console.network_requests import check_address, check_mtu, check_routes
from shared.errors import InvalidRequest, ProtocolViolation
from shared.protocol.frames import MAX_FLOW_ID


@dataclass(frozen=True)
class NetworkTerms:
    """The checked C{network} member of a session's reply."""

    address: IPv4Address
    gateway: IPv4Address
    routes: tuple[IPv4Network, ...]
    mtu: int
    flow: int

    def to_json(self) -> dict[str, Any]:
        return {
            "address": str(self.address),
            "gateway": str(self.gateway),
            "routes": [str(route) for route in self.routes],
            "mtu": self.mtu,
            "flow": self.flow,
        }


def _flow(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_FLOW_ID:
        raise InvalidRequest(f"flow: an integer from 1 to {MAX_FLOW_ID} is needed")
    return value


def _gateway(value: object) -> IPv4Address:
    """The gateway: checked as an inner address, the error naming C{gateway}."""
    try:
        return check_address(value)
    except InvalidRequest as error:
        raise InvalidRequest("gateway" + error.message.removeprefix("address")) from None


def parse_network_terms(value: object) -> NetworkTerms:
    """The reply's C{network} member, checked; L{ProtocolViolation} if it is malformed."""
    try:
        if not isinstance(value, dict):
            raise InvalidRequest("an object is needed")
        terms = NetworkTerms(
            address=check_address(value.get("address")),
            gateway=_gateway(value.get("gateway")),
            routes=check_routes(value.get("routes")),
            mtu=check_mtu(value.get("mtu")),
            flow=_flow(value.get("flow")),
        )
    except InvalidRequest as error:
        raise ProtocolViolation(
            f"the Jumpoint sent a malformed network member: {error.message}"
        ) from None
    if terms.gateway == terms.address:
        raise ProtocolViolation(
            "the Jumpoint sent a malformed network member: the gateway is the console's address"
        )
    return terms
