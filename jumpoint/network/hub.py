"""The Jumpoint's one TUN interface, shared by every network session, and who gets which packet.

The hub opens the TUN device (L{twisted.pair.tuntap.TuntapPort}, C{IFF_TUN |
IFF_NO_PI}) the first time a network session starts, configures it
(L{jumpoint.network.interface}) and installs egress (L{jumpoint.network.egress}).
Every session registers its inner address; a packet read from the interface
goes to the session whose address is its destination (a dict lookup on the
four destination bytes), a packet no session owns is dropped and counted.
While one reactor turn reads the interface (a burst, L{NetworkHub.begin_burst}
and L{NetworkHub.end_burst}), each session that got a packet holds its
channel's writes, so its packets of the burst leave in one TLS write.
Packets the sessions pass the other way are written to the device; a write
the kernel refuses (its queue is full: C{EAGAIN}, C{ENOBUFS}) drops that
packet and counts it, it never blocks or queues.

At stop the device is closed (the interface disappears with it) and egress
is removed; L{NetworkHub.stop} says what was removed.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorFDSet
from twisted.logger import Logger
from twisted.pair.raw import IRawPacketProtocol
from twisted.pair.tuntap import TuntapPort
from zope.interface import implementer

from jumpoint.network import interface
from jumpoint.network.egress import Egress
from jumpoint.network.ip_packets import HARD_MAX_SIZE
from jumpoint.network.settings import NetworkSettings
from shared.errors import AccessDenied

log = Logger()

UNAVAILABLE = "network.unavailable"
"""The rule of a network session this Jumpoint cannot serve (no TUN, no egress)."""

_DROPPED_WRITE = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.ENOMEM})


class TunLink(Protocol):
    """A session as the hub sees it: where its inbound packets go."""

    def from_tun(self, packet: bytes) -> None:
        """A packet read from the interface whose destination is the session's address."""

    def hold_writes(self) -> None:
        """A burst of L{from_tun} starts: hold the channel's writes."""

    def release_writes(self) -> None:
        """The burst is over: write out what was held."""


@implementer(IRawPacketProtocol)
class _TunReader:
    """The TUN port's protocol: every packet read goes to the hub."""

    def __init__(self, hub: NetworkHub) -> None:
        self.hub = hub
        self.transport: Any = None

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def addProto(self, num: int, proto: object) -> None:
        raise NotImplementedError("the TUN reader carries raw IPv4 only")

    def datagramReceived(
        self,
        data: bytes,
        partial: int = 0,
        dest: object = None,
        source: object = None,
        protocol: object = None,
    ) -> None:
        self.hub.from_tun(data)

    def doStop(self) -> None:
        pass


class BurstTuntapPort(TuntapPort):
    """Twisted's TUN port, telling the hub where each read turn starts and ends."""

    def __init__(self, hub: NetworkHub, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._hub = hub

    def doRead(self) -> None:
        hub = self._hub
        hub.begin_burst()
        try:
            super().doRead()  # type: ignore[no-untyped-call]
        finally:
            hub.end_burst()


class NetworkHub:
    """The shared TUN interface (module docstring).

    @param open_port: makes the TUN port (tests pass one over
        L{twisted.pair.testing.MemoryIOSystem}).
    @param configure: sets the interface's address, MTU and state.
    """

    def __init__(
        self,
        settings: NetworkSettings,
        reactor: IReactorFDSet,
        *,
        egress: Egress | None = None,
        open_port: Callable[[bytes, _TunReader], TuntapPort] | None = None,
        configure: Callable[[NetworkSettings], None] = interface.configure,
    ) -> None:
        self.settings = settings
        self._reactor = reactor
        self._egress = egress if egress is not None else Egress(settings)
        self._open_port = open_port if open_port is not None else self._real_port
        self._configure = configure
        self._port: TuntapPort | None = None
        self._links: dict[bytes, TunLink] = {}
        self.unowned = 0
        """Packets read from the interface for no session's address."""
        self.write_drops = 0
        """Packets the kernel would not take (its queue was full)."""
        self.written = 0
        self._burst: dict[int, TunLink] | None = None
        """While a read turn runs: the links that got a packet in it (holding writes)."""

    @property
    def running(self) -> bool:
        return self._port is not None

    def _real_port(self, name: bytes, reader: _TunReader) -> TuntapPort:
        return BurstTuntapPort(
            self, name, reader, maxPacketSize=HARD_MAX_SIZE, reactor=self._reactor
        )

    def start(self) -> None:
        """Open and configure the interface and install egress, once; L{AccessDenied} if not."""
        if self._port is not None:
            return
        name = self.settings.interface
        try:
            port = self._open_port(name.encode("ascii"), _TunReader(self))
            port.startListening()
        except Exception as error:
            raise AccessDenied(
                f"this Jumpoint cannot open its network interface {name!r}: {error}",
                rule=UNAVAILABLE,
            ) from None
        self._port = port
        try:
            self._configure(self.settings)
            self._egress.install()
        except Exception as error:
            self.stop()
            raise AccessDenied(
                f"this Jumpoint cannot set up network egress on {name!r}: {error}",
                rule=UNAVAILABLE,
            ) from None
        log.info(
            "network interface {interface} up ({address}/{prefix}), egress {egress}",
            interface=name,
            address=str(self.settings.gateway),
            prefix=self.settings.pool.prefixlen,
            egress=self.settings.egress,
        )

    def attach(self, address: IPv4Address, link: TunLink) -> None:
        """Send the packets for C{address} to C{link} from now on."""
        self._links[address.packed] = link

    def detach(self, address: IPv4Address) -> None:
        self._links.pop(address.packed, None)

    def from_tun(self, packet: bytes) -> None:
        link = self._links.get(packet[16:20]) if len(packet) >= 20 else None
        if link is None:
            self.unowned += 1
            return
        burst = self._burst
        if burst is not None and id(link) not in burst:
            link.hold_writes()
            burst[id(link)] = link
        link.from_tun(packet)

    def begin_burst(self) -> None:
        """A read turn starts: the sessions that get packets hold their writes until its end."""
        if self._burst is None:
            self._burst = {}

    def end_burst(self) -> None:
        """The read turn is over: every session that held its writes writes them out."""
        burst, self._burst = self._burst, None
        for link in (burst or {}).values():
            link.release_writes()

    def write(self, packet: bytes) -> bool:
        """Write a packet a session passed; False (counted) when the kernel's queue is full."""
        port = self._port
        if port is None:
            self.write_drops += 1
            return False
        try:
            port.write(packet)
        except OSError as error:
            if error.errno not in _DROPPED_WRITE:
                log.warn(
                    "network interface {interface}: a write failed: {error}",
                    interface=self.settings.interface,
                    error=str(error),
                )
            self.write_drops += 1
            return False
        self.written += 1
        return True

    def stop(self) -> list[str]:
        """Close the interface and remove egress; what was removed."""
        removed: list[str] = []
        port, self._port = self._port, None
        if port is not None:
            port.stopListening()
            removed.append(f"network interface {self.settings.interface}")
        self._links.clear()
        removed.extend(self._egress.remove())
        return removed
