"""Create and remove a session's TUN interface on Linux (needs CAP_NET_ADMIN).

Used in two places with the same code: by `jump network-service` (run as
root, for callers in its group) and by L{console.network_client} in-process
when the console itself holds CAP_NET_ADMIN.

L{create_tun} opens C{/dev/net/tun} and makes a new, non-persistent TUN
device with the TUNSETIFF ioctl (C{IFF_TUN | IFF_NO_PI}, and
C{IFF_TUN_EXCL} so that an existing device of that name is never attached
to), disables IPv6 on it, then sets its MTU, gives it the inner address as
a /32, brings it up and adds one route per network, all over netlink with
pyroute2 (no C{ip} command).  A non-persistent TUN lives while a descriptor
of it is open: if anything fails half-way, closing the descriptor removes
the device and every route on it.  Before anything is made, a route that
overlaps a network this machine is attached to is refused.  L{remove_tun} deletes the link (the
kernel drops its address and routes with it) and closes the descriptor,
and says what it removed.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from console.network_requests import AUTO_NAME, OpenRequest, attached_clash
from shared.errors import InvalidRequest, JumpError, NotSupported

if sys.platform == "linux":
    import fcntl

    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

TUN_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA
"""_IOW('T', 202, int) on x86, arm and most others (0x800454CA on parisc, powerpc, sparc)."""
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_TUN_EXCL = 0x8000
"""Fail with EBUSY rather than attach to a device of that name that exists already."""
CAP_NET_ADMIN = 12
RT_SCOPE_LINK = 253
RTPROT_KERNEL = 2
RTPROT_STATIC = 4
MAIN_TABLE = 254


class NetworkSetupError(JumpError):
    """The interface could not be created or configured (the message says which step)."""

    code = "network_setup"


@dataclass
class TunDevice:
    """A TUN interface made by L{create_tun}; C{fd} is open until L{remove_tun}."""

    fd: int
    interface: str
    index: int
    address: IPv4Address
    routes: tuple[IPv4Network, ...]
    mtu: int
    ipv6_disabled: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "interface": self.interface,
            "index": self.index,
            "address": f"{self.address}/32",
            "routes": [str(route) for route in self.routes],
            "mtu": self.mtu,
            "ipv6": "disabled" if self.ipv6_disabled else "unavailable",
        }


@dataclass(frozen=True)
class Removed:
    """What L{remove_tun} removed: the interface, with its address and routes."""

    interface: str
    address: str
    routes: tuple[str, ...]
    already_gone: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "interface": self.interface,
            "address": self.address,
            "routes": list(self.routes),
            "already_gone": self.already_gone,
        }

    def describe(self) -> str:
        routes = ", ".join(self.routes) or "no routes"
        verb = "was already gone" if self.already_gone else "removed"
        return f"interface {self.interface} ({self.address}; routes {routes}) {verb}"


def ensure_linux() -> None:
    """L{NotSupported} unless this is Linux (the only platform with TUN support here)."""
    if sys.platform != "linux":
        raise NotSupported(
            f"network tunnels need a Linux console (this is {sys.platform})",
            "open a tcp item's port tunnels instead, or use a Linux machine",
        )


def has_net_admin(status: str | None = None) -> bool:
    """Whether this process holds CAP_NET_ADMIN (its effective set in /proc/self/status)."""
    if status is None:
        try:
            status = Path("/proc/self/status").read_text(encoding="utf-8")
        except OSError:
            return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    return False


def _privilege(step: str) -> NetworkSetupError:
    return NetworkSetupError(
        f"{step}: operation not permitted (CAP_NET_ADMIN is needed)",
        "run `jump network-service` as root (contrib/jump-network-service.service) and join its"
        " group, or run jump as root",
    )


def _open_device(name: str) -> tuple[int, str]:
    try:
        fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetworkSetupError(
            f"no {TUN_DEVICE} on this system", "load the tun module: modprobe tun"
        ) from None
    except PermissionError:
        raise _privilege(f"opening {TUN_DEVICE}") from None
    try:
        request = struct.pack("16sH", name.encode("ascii"), IFF_TUN | IFF_NO_PI | IFF_TUN_EXCL)
        answer = fcntl.ioctl(fd, TUNSETIFF, request)
    except OSError as error:
        os.close(fd)
        if error.errno == errno.EPERM:
            raise _privilege("creating a TUN interface") from None
        if error.errno == errno.EBUSY:
            raise NetworkSetupError(
                f"interface {name} exists already", "ask for another name, or for none"
            ) from None
        raise NetworkSetupError(f"creating a TUN interface: {error.strerror}") from None
    made = struct.unpack("16sH", answer[:18])[0].rstrip(b"\0").decode("ascii")
    return fd, made


def _disable_ipv6(interface: str) -> bool:
    """Turn IPv6 off on the interface (before it is up: no link-local address, no solicitations)."""
    path = Path("/proc/sys/net/ipv6/conf") / interface / "disable_ipv6"
    if not path.parent.is_dir():
        return False  # no IPv6 in this kernel or namespace: nothing to disable
    path.write_text("1\n", encoding="utf-8")
    return True


def _netlink_step(step: str, error: NetlinkError) -> NetworkSetupError:
    code = error.code
    if code == errno.EPERM:
        return _privilege(step)
    if code == errno.EEXIST:
        return NetworkSetupError(f"{step}: it exists already (another interface has it)")
    return NetworkSetupError(f"{step}: {os.strerror(code) if code else error}")


def attached_networks(netlink: Any) -> list[tuple[IPv4Network, str]]:
    """The networks this machine's interfaces are on: the kernel's link routes (main table)."""
    names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in netlink.get_links()}
    found = []
    for route in netlink.get_routes(family=socket.AF_INET, table=MAIN_TABLE):
        destination = route.get_attr("RTA_DST")
        if (
            destination is None
            or route["scope"] != RT_SCOPE_LINK
            or route["proto"] != RTPROT_KERNEL
        ):
            continue
        name = str(names.get(route.get_attr("RTA_OIF"), "?"))
        found.append((IPv4Network(f"{destination}/{route['dst_len']}", strict=False), name))
    return found


def create_tun(request: OpenRequest) -> TunDevice:
    """Create and configure the interface C{request} asks for (see the module docstring).

    A route that overlaps a network this machine is attached to is refused
    first (L{attached_clash}); nothing is created then.
    """
    ensure_linux()
    step = "reading this machine's networks"
    try:
        with IPRoute() as netlink:
            clash = attached_clash(request.routes, attached_networks(netlink))
    except NetlinkError as error:
        raise _netlink_step(step, error) from None
    if clash is not None:
        raise InvalidRequest(clash)
    fd, interface = _open_device(request.name or AUTO_NAME)
    try:
        step = f"disabling IPv6 on {interface}"
        ipv6_disabled = _disable_ipv6(interface)
        with IPRoute() as netlink:
            step = f"looking up {interface}"
            index = int(netlink.link_lookup(ifname=interface)[0])
            step = f"setting the MTU of {interface} to {request.mtu}"
            netlink.link("set", index=index, mtu=request.mtu)
            step = f"giving {interface} the address {request.address}/32"
            netlink.addr("add", index=index, address=str(request.address), prefixlen=32)
            step = f"bringing {interface} up"
            netlink.link("set", index=index, state="up")
            for route in request.routes:
                step = f"adding the route {route} via {interface}"
                netlink.route(
                    "add",
                    dst=str(route),
                    oif=index,
                    scope=RT_SCOPE_LINK,
                    proto=RTPROT_STATIC,
                )
    except BaseException as error:
        os.close(fd)  # a non-persistent TUN goes with its last descriptor, routes and all
        if isinstance(error, NetlinkError):
            raise _netlink_step(step, error) from None
        if isinstance(error, IndexError):
            raise NetworkSetupError(f"{step}: the new interface vanished") from None
        if isinstance(error, OSError):
            raise NetworkSetupError(f"{step}: {error.strerror or error}") from None
        raise
    return TunDevice(
        fd=fd,
        interface=interface,
        index=index,
        address=request.address,
        routes=request.routes,
        mtu=request.mtu,
        ipv6_disabled=ipv6_disabled,
    )


def interface_routes(netlink: Any, index: int) -> list[str]:
    """The IPv4 routes of the main table that go out of interface C{index}."""
    found = []
    for route in netlink.get_routes(family=socket.AF_INET, table=MAIN_TABLE, oif=index):
        destination = route.get_attr("RTA_DST")
        if destination is not None:
            found.append(f"{destination}/{route['dst_len']}")
    return found


def remove_tun(device: TunDevice) -> Removed:
    """Delete C{device}'s link (address and routes go with it) and close its descriptor."""
    address = f"{device.address}/32"
    try:
        with IPRoute() as netlink:
            links = netlink.get_links(device.index)
            name = links[0].get_attr("IFLA_IFNAME") if links else None
            if name != device.interface:
                return Removed(device.interface, address, (), already_gone=True)
            routes = tuple(interface_routes(netlink, device.index))
            netlink.link("del", index=device.index)
            return Removed(device.interface, address, routes)
    except NetlinkError as error:
        if error.code == errno.ENODEV:
            return Removed(device.interface, address, (), already_gone=True)
        raise _netlink_step(f"removing {device.interface}", error) from None
    finally:
        os.close(device.fd)
