"""A session of the C{network} kind: a TUN interface whose IP packets ride the session's flow.

The session's reply carries C{network} (L{console.network_terms}: the inner
address, the routes, the MTU and the datagram flow); it is checked when the
part is made.  When `jump open` has the session, L{NetworkSession.opened}
gets the interface with L{console.network_client.acquire_tun} in a thread
of the reactor's pool (it may wait up to its timeout for
`jump network-service`, and the channel's keepalives must go on meanwhile),
opens the flow on its side and puts the descriptor on the reactor
(L{console.tun_link.TunLink}): each packet read from the interface is one
DATAGRAM frame on the flow, and each one that arrives on the flow is
written into the interface (dropped and counted when the device's queue is
full).  No tunnel is bound: the kind's sessions carry none.

The interface, its address and its routes are shown on stderr and in the
JSON C{ready} event; its packets (counted here) and the Jumpoint's flows,
denials and drops (L{console.link_figures}, polled with C{session_stats})
in the live view and the C{stats} and C{closed} events
(L{NetworkSession.counters}); a command run with C{-- CMD} gets them as
C{JUMP_NETWORK_*} variables.  The session ends as every session does, and
also when the descriptor fails or the Jumpoint closes the flow
(L{NetworkSession.watch}); at the end the interface is removed once
(L{NetworkSession.remove}: the lines say what went).  If `jump open` is
killed, the kernel removes a TUN it made itself with its last descriptor
(routes and all), and the service removes one it made when its caller's
connection ends.  The kind's light part is L{console.kinds.network}.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

from console.channel import ConsoleChannel
from console.kinds.session_part import SessionContext, SessionKind, SessionPart
from console.link_figures import LinkFigures, session_stats_request
from console.network_client import AcquiredTun, acquire_tun
from console.network_terms import NetworkTerms, parse_network_terms
from console.tun_link import TunCounters, TunLink
from console.tunnel_counters import Tunnel
from shared.errors import JumpError, ProtocolViolation, SessionLost
from shared.kinds.network import NAME
from shared.protocol.datagrams import Flow, FlowRefused

Acquire = Callable[[IPv4Address, Sequence[IPv4Network], int], AcquiredTun]
"""Gets the interface: address, routes, MTU (L{acquire_tun}; blocking)."""
RunBlocking = Callable[..., "Deferred[AcquiredTun]"]
"""Runs a blocking call off the reactor (L{deferToThread})."""


class NetworkSetupFailed(JumpError):
    """Getting the interface failed for a reason that was not already a L{JumpError}."""

    code = "network_setup"


class NetworkSession(SessionPart):
    """One network session's interface and packets (module docstring)."""

    reconnects = False
    """Its interface and datagram source are bound to the first channel: a loss ends it."""

    def __init__(
        self,
        terms: NetworkTerms,
        channel: ConsoleChannel,
        acquire: Acquire,
        run_blocking: RunBlocking,
        reactor: Any = None,
    ) -> None:
        self.terms = terms
        self.channel = channel
        self._acquire = acquire
        self._run_blocking = run_blocking
        self._reactor = reactor
        self.tun: AcquiredTun | None = None
        self.flow: Flow | None = None
        self.link: TunLink | None = None
        self._end: Callable[[JumpError], None] | None = None
        self._ended: JumpError | None = None
        """Why the data path ended before L{watch} (told when it is called)."""
        self._removed = False
        self._previous_flow_closed: Callable[[int, str], None] | None = None
        self.figures = LinkFigures(session_stats_request(channel), channel.clock)
        """What the Jumpoint decided of the packets (flows, denials, drops), polled."""

    # -- set-up --------------------------------------------------------

    def opened(
        self, item: str, session_id: str, tunnels: list[Tunnel], notify: Callable[[list[str]], None]
    ) -> Deferred[None]:
        """Get the interface off the reactor, then start the packets both ways."""
        terms = self.terms
        acquired = self._run_blocking(self._acquire, terms.address, terms.routes, terms.mtu)
        attached: Deferred[None] = acquired.addCallback(self._attach, notify)
        return attached.addErrback(_as_jump_error)

    def _attach(self, tun: AcquiredTun, notify: Callable[[list[str]], None]) -> None:
        self.tun = tun  # from now on remove() takes it away, whatever happens next
        os.set_blocking(tun.fd, False)
        mux = self.channel.mux
        if mux is None or mux.closing:
            raise SessionLost("the connection to the Jumpoint closed while the interface was made")
        try:
            self.flow = mux.datagrams.open_flow(self.terms.flow, self)
        except FlowRefused as error:
            raise ProtocolViolation(
                f"the session's packet flow cannot be opened: {error}"
            ) from None
        self.link = TunLink(
            tun.fd, tun.mtu, self.flow.send, self._link_lost, self._reactor, mux.datagrams
        )
        self._previous_flow_closed = self.channel.on_flow_closed
        self.channel.on_flow_closed = self._flow_closed
        mux.datagrams.add_source(self.link)  # paused while the channel's queue is full
        self.link.start()
        how = (
            "made here: this process holds CAP_NET_ADMIN"
            if tun.method == "direct"
            else "made by jump network-service"
        )
        notify(
            [
                f"network interface {tun.interface}: address {tun.address}/32,"
                f" MTU {tun.mtu} ({how})",
                f"routes into {tun.interface}: " + ", ".join(str(r) for r in tun.routes),
            ]
        )

    # -- packets from the Jumpoint, the data path's end ------------------

    def datagram_received(self, payload: bytes) -> None:
        """A packet from the Jumpoint on the flow: into the interface (or dropped)."""
        if self.link is not None:
            self.link.write_packet(payload)

    def watch(self, end: Callable[[JumpError], None]) -> None:
        self._end = end
        if self._ended is not None:
            end(self._ended)

    def _stop(self, error: JumpError) -> None:
        if self._ended is not None or self._removed:
            return
        self._ended = error
        if self._end is not None:
            self._end(error)

    def _link_lost(self, why: str) -> None:
        interface = self.tun.interface if self.tun is not None else "?"
        self._stop(SessionLost(f"the network interface {interface} failed: {why}"))

    def _flow_closed(self, flow_id: int, reason: str) -> None:
        if flow_id != self.terms.flow:
            if self._previous_flow_closed is not None:
                self._previous_flow_closed(flow_id, reason)
            return
        self._stop(SessionLost(f"the Jumpoint closed the session's packet flow: {reason}"))

    # -- what jump open shows, and the end -------------------------------

    def tun_counters(self) -> TunCounters | None:
        """The interface's packets so far (C{None} before the interface exists)."""
        return self.link.counters() if self.link is not None else None

    def counters(self) -> dict[str, int] | None:
        """The interface's packets, and the Jumpoint's flows, denials and drops (polled)."""
        if self.link is None:
            return None
        mux = self.channel.mux
        running = not self._removed and mux is not None and not mux.closing
        self.figures.poll(running and not self.channel.lost.called)
        return {**self.link.counters().as_dict(), **self.figures.latest()}

    def counters_label(self) -> str:
        tun = self.tun
        if tun is None:
            return ""
        return f"{tun.interface} -> " + ", ".join(str(route) for route in tun.routes)

    def details(self) -> dict[str, Any]:
        tun = self.tun
        if tun is None:
            return {}
        return {
            "interface": tun.interface,
            "address": str(tun.address),
            "gateway": str(self.terms.gateway),
            "routes": [str(route) for route in tun.routes],
            "mtu": tun.mtu,
            "method": tun.method,
        }

    def environment(self) -> dict[str, str]:
        tun = self.tun
        if tun is None:
            return {}
        return {
            "JUMP_NETWORK_INTERFACE": tun.interface,
            "JUMP_NETWORK_ADDRESS": str(tun.address),
            "JUMP_NETWORK_ROUTES": " ".join(str(route) for route in tun.routes),
        }

    def remove(self) -> list[str] | None:
        """Stop the packets, close the flow, remove the interface (once)."""
        tun = self.tun
        if tun is None:
            return None
        if self._removed:
            return []
        self._removed = True
        if self.link is not None:
            self.link.stop()  # off the reactor before the descriptor closes
            mux = self.channel.mux
            if mux is not None:
                mux.datagrams.remove_source(self.link)
        if self.flow is not None:
            self.flow.close()
        if self.channel.on_flow_closed == self._flow_closed:
            self.channel.on_flow_closed = self._previous_flow_closed
        try:
            removed = tun.cleanup()
        except (JumpError, OSError) as error:
            message = error.message if isinstance(error, JumpError) else str(error)
            return [f"could not remove interface {tun.interface}: {message}"]
        if removed is None:
            return [
                f"interface {tun.interface}: the network service removes it (it did not confirm)"
            ]
        return [removed.describe()]


def _as_jump_error(failure: Failure) -> Failure:
    """A failure of the interface's set-up as a L{JumpError} (its message, no traceback)."""
    if failure.check(JumpError):
        return failure
    value = failure.value
    detail = (value.strerror if isinstance(value, OSError) else None) or str(value)
    return Failure(NetworkSetupFailed(f"could not create the network interface: {detail}"))


class NetworkSessionKind(SessionKind):
    """The network kind's sessions: no tunnels, one TUN interface each."""

    has_tunnels = False

    def __init__(
        self,
        name: str = NAME,
        *,
        acquire: Acquire | None = None,
        run_blocking: RunBlocking | None = None,
        reactor: Any = None,
    ) -> None:
        super().__init__(name)
        self.acquire: Acquire = acquire or acquire_tun
        self.run_blocking: RunBlocking = run_blocking or deferToThread
        self.reactor = reactor

    def open_session(self, context: SessionContext) -> SessionPart:
        terms = parse_network_terms(context.reply.get("network"))
        return NetworkSession(terms, context.channel, self.acquire, self.run_blocking, self.reactor)


KIND = NetworkSessionKind()
