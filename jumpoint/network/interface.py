"""The Jumpoint's TUN interface: created, addressed and brought up; gone with its descriptor.

One interface (C{network.interface}, default C{jpt0}) serves every network
session: it holds the pool's first address with the pool's prefix, so that
the kernel routes the replies for every session's inner address into it.
The device is not persistent: it disappears when the Jumpoint closes its
descriptor, however the Jumpoint ends.  IPv6 is switched off on it (network
tunnels are IPv4 only, and an interface with IPv6 sends router
solicitations of its own).

Netlink through pyroute2 (no C{ip} commands to parse); the descriptor comes
from L{twisted.pair.tuntap.TuntapPort}, which opens C{/dev/net/tun} with
C{IFF_TUN | IFF_NO_PI}.
"""

from __future__ import annotations

from pathlib import Path

from jumpoint.network.settings import NetworkSettings


class InterfaceError(Exception):
    """The interface could not be set up; the message says what and why."""


def configure(settings: NetworkSettings, proc_sys: Path = Path("/proc/sys")) -> None:
    """Address, MTU, IPv6 off and up, for the interface the TUN descriptor created."""
    from pyroute2 import IPRoute

    name = settings.interface
    disable_ipv6 = proc_sys / "net" / "ipv6" / "conf" / name / "disable_ipv6"
    try:
        if disable_ipv6.exists():
            disable_ipv6.write_text("1\n", encoding="ascii")
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=name)
            if not found:
                raise InterfaceError(f"the TUN interface {name!r} does not exist")
            index = found[0]
            ipr.link("set", index=index, mtu=settings.mtu)
            ipr.addr(
                "replace",
                index=index,
                address=str(settings.gateway),
                prefixlen=settings.pool.prefixlen,
            )
            ipr.link("set", index=index, state="up")
    except InterfaceError:
        raise
    except Exception as error:
        raise InterfaceError(f"cannot configure the TUN interface {name!r}: {error}") from None
