"""The C{network:} section of jumpoint.yaml: the inner address pool, the interface, egress.

Network tunnels carry IPv4 packets of a console's TUN interface to the
Jumpoint, which checks each one and writes it to its own TUN interface
(C{interface}); with C{egress: masquerade} the kernel forwards them and an
nftables masquerade rule gives them the Jumpoint's address on the way out, so
the remote network needs no route back to the console pool and no DHCP.

Every console session gets one address of C{pool} (a /32); the Jumpoint's
interface holds the pool's first address.  Defaults: C{100.64.0.0/16} (a /16
of the shared address space of RFC 6598), C{jpt0}, C{masquerade}, an MTU of
1400, at most 4096 flows per session.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import yaml

from shared import schema
from shared.schema import Field, Where

SHARED_ADDRESS_SPACE = IPv4Network("100.64.0.0/10")
"""RFC 6598: where the default pool comes from."""

DEFAULT_POOL = IPv4Network("100.64.0.0/16")
DEFAULT_INTERFACE = "jpt0"
DEFAULT_MTU = 1400
DEFAULT_FLOW_LIMIT = 4096
EGRESS_MODES = ("masquerade",)

INTERFACE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,14}$")
"""A Linux interface name (at most 15 bytes), no dots, slashes or spaces."""

_SMALLEST_POOL = 29
"""A pool must hold the Jumpoint's address and a few sessions: /29 or larger."""


@dataclass(frozen=True)
class NetworkSettings:
    """The checked C{network:} section (module docstring)."""

    pool: IPv4Network = DEFAULT_POOL
    interface: str = DEFAULT_INTERFACE
    egress: str = "masquerade"
    mtu: int = DEFAULT_MTU
    flow_limit: int = DEFAULT_FLOW_LIMIT

    @property
    def gateway(self) -> IPv4Address:
        """The Jumpoint's own address on its interface: the pool's first."""
        return self.pool.network_address + 1


def _pool(node: yaml.Node, where: Where) -> IPv4Network:
    text = schema.string(1, 64)(node, where)
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as error:
        raise where.error(node, f"not an IPv4 network in CIDR form: {error}") from None
    if not isinstance(network, IPv4Network):
        raise where.error(node, "network tunnels are IPv4 only: expected an IPv4 network")
    if network.prefixlen > _SMALLEST_POOL:
        raise where.error(node, f"the pool must be a /{_SMALLEST_POOL} or larger")
    if not network.is_private and not network.subnet_of(SHARED_ADDRESS_SPACE):
        raise where.error(
            node,
            "the pool must be private or shared address space (RFC 1918, RFC 6598"
            " 100.64.0.0/10, 198.18.0.0/15), never public addresses",
        )
    if network.is_loopback or network.is_link_local or network.is_multicast:
        raise where.error(node, "the pool may not be loopback, link-local or multicast")
    return network


def _interface(node: yaml.Node, where: Where) -> str:
    name = schema.string(1, 15)(node, where)
    if not INTERFACE_NAME.match(name):
        raise where.error(
            node, "an interface name: a letter, then up to 14 letters, digits, '_' or '-'"
        )
    return name


FIELDS = {
    "pool": Field(_pool, default=DEFAULT_POOL),
    "interface": Field(_interface, default=DEFAULT_INTERFACE),
    "egress": Field(schema.choice(*EGRESS_MODES), default="masquerade"),
    "mtu": Field(schema.integer(576, 9000), default=DEFAULT_MTU),
    "flow_limit": Field(schema.integer(1, 1_000_000), default=DEFAULT_FLOW_LIMIT),
}


def network_settings(node: yaml.Node, where: Where) -> NetworkSettings:
    """Check the C{network:} section (an empty one: every default)."""
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
        return NetworkSettings()
    values: dict[str, Any] = schema.mapping(node, where, FIELDS)
    return NetworkSettings(**values)
