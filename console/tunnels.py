"""A session's tunnels on the console: local listeners, connections and statistics.

Each tunnel pair gets one listener.  Every accepted connection becomes one
stream on the channel; what serves it on the console (a plain L{TcpBridge},
or a SQL Server or Kubernetes leg that logs in first) and what the listener
is (TLS or not) are the item's kind's (its session part, registered in
L{console.kinds.sessions}: the session's L{SessionPart}).  The Jumpoint
decides (and audits) whether the session may carry it (C{max_connections}), and a connection it
refuses is closed, counted as refused and logged with the rule.  The console
only bounds the refusals in flight: beyond C{max_connections} plus
L{REFUSALS_IN_FLIGHT} open streams it closes a connection itself, with the
same rule.  L{TunnelSession} keeps the counters the live view and the
C{stats} events show.

A pair that carries UDP (C{udp}, or C{tcp-udp} beside its TCP listener on
the same port) gets a UDP socket instead (L{console.udp_tunnels}): each
local client address is one flow of the session's L{UdpFlowTable}, opened
by the Jumpoint's decision (C{flow_open}) and closed after the session's
C{udp_idle_timeout}.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol, Protocol, ServerFactory
from twisted.logger import Logger

from console.channel import ConsoleChannel
from console.held_connections import HeldConnections
from console.kinds import sessions
from console.kinds.session_part import Accept, SessionContext, SessionPart, refuse
from console.listeners import Listen, bind
from console.tunnel_counters import Tunnel
from console.udp_flow_table import UdpFlowTable
from console.udp_tunnels import ChannelFlowLink, UdpListener
from shared.addresses import PortSet, ip_address
from shared.errors import JumpError, LocalBindError, ProtocolViolation
from shared.kinds.base import TCP, TUNNEL_PROTOCOLS
from shared.protocol.control import StreamTarget
from shared.protocol.mux import Stream

log = Logger()

UDP_IDLE_TIMEOUT = 60.0
"""Seconds without a datagram that close a UDP flow, unless the Jumpoint says otherwise."""
MAX_UDP_FLOWS = 64
"""UDP flows a session carries at once, unless the Jumpoint says otherwise."""
MAX_PACKET = 65535
"""The read size of a UDP tunnel's socket (Twisted reads 8192 bytes by default)."""

ListenUdp = Callable[[int, DatagramProtocol, str], IListeningPort]
"""Binds a UDP socket: port (0: any), protocol, address."""

REFUSALS_IN_FLIGHT = 32
"""Connections over the cap sent to the Jumpoint for its decision at the same time."""
CAP_RULE = "max_connections"


class TunnelFactory(ServerFactory):
    """Accepts local connections for one tunnel and opens a stream for each.

    The session's rules (acl, the bound on refusals in flight) apply to every
    kind; what then serves the connection is the kind's (L{SessionPart.acceptor}).
    """

    def __init__(self, session: TunnelSession, tunnel: Tunnel) -> None:
        self.session = session
        self.tunnel = tunnel
        self.acceptor = session.part.acceptor(tunnel)
        self._target: tuple[tuple[str, int], bytes] | None = None

    def _encoded_target(self) -> bytes:
        """The OPEN payload of the tunnel's streams (JSON, encoded once per target)."""
        key = (self.tunnel.remote_host, self.tunnel.remote_port)
        if self._target is None or self._target[0] != key:
            self._target = (key, StreamTarget(*key).encode())
        return self._target[1]

    def buildProtocol(self, addr: Any) -> Protocol:
        session = self.session
        if session.closing:
            return refuse()
        held = session.held
        if held is not None and session.peer_allowed(str(getattr(addr, "host", ""))):
            # reconnecting: the connection waits for the new channel
            return held.hold(lambda: self._admit(addr))
        return self._admit(addr) or refuse()

    def _admit(self, addr: Any) -> Protocol | None:
        """The connection's protocol on the current channel (C{None}: refused)."""
        session, tunnel = self.session, self.tunnel
        mux = session.channel.mux
        if mux is None or mux.closing or session.closing:
            return None
        peer = str(getattr(addr, "host", ""))
        if not session.peer_allowed(peer):
            tunnel.refused_connections += 1
            log.warn(
                "refused a connection from {peer} to {local}: not in the session's acl ({acl})",
                peer=peer,
                local=f"{tunnel.local_address}:{tunnel.local_port}",
                acl=", ".join(str(n) for n in session.acl),
            )
            return None
        if session.current_connections() >= session.max_connections + REFUSALS_IN_FLIGHT:
            # the Jumpoint refuses these anyway; the console bounds what waits for it
            tunnel.refused_connections += 1
            log.warn(
                "refused a local connection to {local}: the session already carries"
                " {limit} connections (rule: {rule})",
                local=f"{tunnel.local_address}:{tunnel.local_port}",
                limit=session.max_connections,
                rule=CAP_RULE,
            )
            return None
        target = self._encoded_target()

        def open_stream() -> Stream | None:
            """The stream (and so the Jumpoint's dial), once the client has logged in."""
            if mux.closing or session.closing:
                return None
            return mux.open_stream(target)

        return self.acceptor(
            Accept(
                tunnel=tunnel,
                mux=mux,
                target=target,
                open_stream=open_stream,
                clock=session.channel.clock,
                login_timeout=session.login_timeout,
                local=f"{tunnel.local_address}:{tunnel.local_port}",
                profile=session.channel.profile,
            )
        )


def _parse_tunnels(result: dict[str, Any], required: bool) -> list[Tunnel]:
    """The reply's tunnels: at least one when the kind carries tunnels, else none."""
    entries = result.get("tunnels")
    if not required:
        if entries not in (None, []):
            raise ProtocolViolation("the Jumpoint sent tunnels for a session that carries none")
        return []
    if not isinstance(entries, list) or not entries:
        raise ProtocolViolation("the Jumpoint sent a session without tunnels")
    tunnels = []
    for entry in entries:
        try:
            local_port = entry["local_port"]
            allowed = entry.get("allowed_local_ports")
            protocol = entry.get("protocol") or TCP
            if protocol not in TUNNEL_PROTOCOLS:
                raise ValueError(protocol)
            tunnels.append(
                Tunnel(
                    local_address=str(entry["local_address"]),
                    requested_port=None if local_port == "auto" else int(local_port),
                    remote_host=str(entry["remote_host"]),
                    remote_port=int(entry["remote_port"]),
                    allowed_ports=(
                        PortSet.parse(str(allowed).replace(" ", "").split(",")) if allowed else None
                    ),
                    protocol=protocol,
                )
            )
        except (KeyError, TypeError, ValueError):
            raise ProtocolViolation("the Jumpoint sent a malformed tunnel") from None
    return tunnels


def _positive(result: dict[str, Any], key: str, default: float, high: float) -> float:
    """A positive number of the session's terms (C{default} when the Jumpoint sent none)."""
    value = result.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= high:
        raise ProtocolViolation(f"the Jumpoint sent a malformed {key}")
    return float(value)


def _login_timeout(result: dict[str, Any]) -> float | None:
    value = result.get("login_timeout")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e6:
        raise ProtocolViolation("the Jumpoint sent a malformed login_timeout")
    return float(value)


class TunnelSession:
    """The console's view of one open session."""

    def __init__(self, channel: ConsoleChannel, item: str, result: dict[str, Any]) -> None:
        self.channel = channel
        self.item = item
        self.session_id = str(result.get("session", "?"))
        self.max_connections = int(result.get("max_connections", 256))
        self.login_timeout = _login_timeout(result)
        """mssql, k8s: seconds a local connection has to finish its login (C{None}: no limit)."""
        self.closing = False
        self.held: HeldConnections | None = None
        """While reconnecting: where new local connections wait (L{console.held_connections})."""
        self.result = result
        spec = result.get("item")
        spec = spec if isinstance(spec, dict) else {}
        self.kind = sessions.for_session(spec.get("type"))
        self.tunnels = _parse_tunnels(result, self.kind.has_tunnels)
        self.part: SessionPart = self.kind.open_session(
            SessionContext(spec=spec, tunnels=self.tunnels, reply=result, channel=channel)
        )
        """The kind's part of the session (its listener, what `jump open` sets up)."""
        try:
            self.acl = tuple(
                ipaddress.ip_network(str(n), strict=False) for n in result.get("acl") or ()
            )
        except ValueError:
            raise ProtocolViolation("the Jumpoint sent a malformed acl") from None
        self.udp_idle_timeout = _positive(result, "udp_idle_timeout", UDP_IDLE_TIMEOUT, 7 * 86400)
        self.max_udp_flows = int(_positive(result, "max_udp_flows", MAX_UDP_FLOWS, 65536))
        self.udp: UdpFlowTable | None = None
        """The session's UDP flows (when a tunnel carries UDP)."""
        self.udp_link: ChannelFlowLink | None = None
        if any(t.carries_udp for t in self.tunnels):
            self.udp_link = ChannelFlowLink(channel)
            self.udp = UdpFlowTable(
                max_flows=self.max_udp_flows,
                idle_timeout=self.udp_idle_timeout,
                clock=channel.clock,
                link=self.udp_link,
            )
            self.udp_link.table = self.udp
            channel.on_flow_closed = self.udp.remote_closed

    def attach(self, channel: ConsoleChannel) -> None:
        """Carry the session on a new channel (after a reconnect): new connections use it."""
        self.channel = channel
        if self.udp_link is not None and self.udp is not None:
            self.udp_link.channel = channel
            channel.on_flow_closed = self.udp.remote_closed

    def connection_lost(self) -> tuple[int, int]:
        """The channel is gone: reset what it carried; returns (connections, UDP flows) reset."""
        mux = self.channel.mux
        streams = mux.streams_at_close if mux is not None else 0
        logins = sum(len(t.logins) for t in self.tunnels)
        self.abort_connections()
        flows = self.udp.drop_flows("the connection to the Jumpoint was lost") if self.udp else 0
        return streams + logins, flows

    def peer_allowed(self, peer: str) -> bool:
        """Loopback peers always; others only inside the session's acl."""
        try:
            address = ip_address(peer)
        except ValueError:
            return False
        if address.is_loopback:
            return True
        mapped = getattr(address, "ipv4_mapped", None)
        if mapped is not None:
            address = mapped
        return any(address in network for network in self.acl)

    def bindings(self) -> list[dict[str, Any]]:
        return [
            {"local_address": t.local_address, "local_port": t.local_port} for t in self.tunnels
        ]

    def details(self) -> dict[str, Any]:
        """The session's terms for the JSON C{ready} event."""
        keys = (
            "closes_at",
            "closes_because",
            "idle_timeout",
            "recording",
            "max_connections",
            "login_timeout",
        )
        out = {key: self.result.get(key) for key in keys if key in self.result}
        if self.udp is not None:
            out["udp_idle_timeout"] = self.udp_idle_timeout
            out["max_udp_flows"] = self.max_udp_flows
        if self.acl:
            out["acl"] = [str(n) for n in self.acl]
        return out

    def terms_lines(self) -> list[str]:
        """What the user should know about the session's terms, one sentence each."""
        lines = []
        result = self.result
        if result.get("recording"):
            lines.append("this session is recorded")
        closes_at = result.get("closes_at")
        if isinstance(closes_at, int | float):
            import time

            lines.append(
                "the Jumpoint will close the session at"
                f" {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(closes_at))}:"
                f" {result.get('closes_because') or 'its time ran out'}"
            )
        idle = result.get("idle_timeout")
        if isinstance(idle, int | float):
            lines.append(f"idle timeout: {idle:g}s without traffic closes the session")
        if self.acl:
            lines.append("listeners accept loopback and " + ", ".join(str(n) for n in self.acl))
        return lines

    def current_connections(self) -> int:
        return sum(len(t.bridges) + len(t.logins) for t in self.tunnels)

    def bind_all(
        self,
        listen: Listen,
        local_address: str | None = None,
        listen_udp: ListenUdp | None = None,
    ) -> None:
        """Bind every tunnel's listener; on any failure unbind the others and raise.

        A C{tcp-udp} pair binds its UDP socket on the TCP listener's port.
        """
        try:
            for tunnel in self.tunnels:
                if local_address is not None:
                    tunnel.local_address = local_address
                if tunnel.carries_tcp:
                    result = self._bind(listen, tunnel)
                    tunnel.listening = result.port
                    tunnel.local_address = result.address
                    tunnel.local_port = result.local_port
                if tunnel.carries_udp:
                    if listen_udp is None:
                        raise LocalBindError("this console cannot bind UDP sockets")
                    self._bind_udp(listen_udp, tunnel, tunnel.carries_tcp)
                tunnel.status = "listening"
        except JumpError:
            self.stop_listening()
            raise

    def _bind_udp(self, listen_udp: ListenUdp, tunnel: Tunnel, beside_tcp: bool) -> None:
        """The UDP socket of C{tunnel}: on the TCP listener's port, or as its own binding."""
        assert self.udp is not None and self.udp_link is not None
        udp_tunnel = self.udp.add_tunnel(tunnel.remote_port)
        listener = UdpListener(self.udp, udp_tunnel, self.peer_allowed)

        def listen(port: int, factory: ServerFactory, address: str) -> IListeningPort:
            return listen_udp(port, listener, address)

        if beside_tcp:
            result = bind(
                listen,
                tunnel.local_address,
                tunnel.local_port,
                ServerFactory(),
                allow_fallback=False,
                allow_any_address=bool(self.acl),
            )
        else:
            result = self._bind(listen, tunnel)
            tunnel.local_address = result.address
            tunnel.local_port = result.local_port
        tunnel.udp_listening = result.port
        tunnel.udp = udp_tunnel.counters
        self.udp_link.listeners[udp_tunnel.index] = listener

    def _bind(self, listen: Listen, tunnel: Tunnel) -> Any:
        factory = self.part.listener(TunnelFactory(self, tunnel))
        off_loopback = bool(self.acl)
        if tunnel.requested_port is not None or tunnel.allowed_ports is None:
            return bind(
                listen,
                tunnel.local_address,
                tunnel.requested_port,
                factory,
                allow_any_address=off_loopback,
            )
        # "auto" inside the local ports the user's groups allow: the first free one
        tried = 0
        for port in tunnel.allowed_ports.iter_ports_in_order():
            if port < 1024 or any(t.local_port == port for t in self.tunnels):
                continue
            tried += 1
            try:
                return bind(
                    listen,
                    tunnel.local_address,
                    port,
                    factory,
                    allow_any_address=off_loopback,
                    allow_fallback=False,
                )
            except LocalBindError as error:
                if "in use" not in error.message or tried >= 1000:
                    raise
        raise LocalBindError(
            f"no free local port on {tunnel.local_address} among the ports your groups allow"
            f" ({tunnel.allowed_ports.describe()})",
            hint="close what listens there, or open the item on another 127.x.y.z address",
        )

    def stop_listening(self) -> None:
        for tunnel in self.tunnels:
            if tunnel.listening is not None:
                tunnel.listening.stopListening()
                tunnel.listening = None
            if tunnel.udp_listening is not None:
                tunnel.udp_listening.stopListening()
                tunnel.udp_listening = None
            tunnel.status = "closed"
        if self.udp is not None:
            self.udp.close_all("the session closed")  # the Jumpoint closes its flows with it

    def abort_connections(self) -> None:
        for tunnel in self.tunnels:
            for bridge in list(tunnel.bridges):
                if bridge.transport is not None:
                    bridge.transport.abortConnection()  # type: ignore[attr-defined]
            for connection in list(tunnel.logins):
                connection.abort()

    def counters(self) -> list[dict[str, Any]]:
        return [t.counters() for t in self.tunnels]
