"""A session's tunnels on the console: local listeners, connections and statistics.

Each tunnel pair gets one listener.  Every accepted connection becomes one
stream on the channel (L{TcpBridge}); the Jumpoint decides (and audits)
whether the session may carry it (C{max_connections}), and a connection it
refuses is closed, counted as refused and logged with the rule.  The console
only bounds the refusals in flight: beyond C{max_connections} plus
L{REFUSALS_IN_FLIGHT} open streams it closes a connection itself, with the
same rule.  L{TunnelSession} keeps the counters the live view and the
C{stats} events show.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger

from console.channel import ConsoleChannel
from console.kube_proxy import KubeClientConnection, KubeListenerFactory, listener_hosts
from console.kubeconfig import KubeSession
from console.listeners import Listen, bind
from console.local_ca import listener_certificate
from console.tds_client_leg import ClientLeg
from console.tds_proxy import TdsLocalConnection
from shared.addresses import PortSet
from shared.bridge import TcpBridge
from shared.errors import JumpError, LocalBindError, ProtocolViolation
from shared.pki import KeyPair
from shared.protocol.control import StreamTarget
from shared.protocol.frames import ErrorCode
from shared.protocol.mux import Stream

log = Logger()

REFUSALS_IN_FLIGHT = 32
"""Connections over the cap sent to the Jumpoint for its decision at the same time."""
CAP_RULE = "max_connections"

LocalLogin = TdsLocalConnection | KubeClientConnection
"""A local connection that has no stream yet (its login or first request is not complete)."""

FAILURE_CODES = {
    ErrorCode.REFUSED,
    ErrorCode.UNREACHABLE,
    ErrorCode.TIMED_OUT,
    ErrorCode.DENIED,
    ErrorCode.LIMIT,
}


class _Refused(Protocol):
    """Closes a local connection at once (over the connection limit)."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.abortConnection()  # type: ignore[attr-defined]


@dataclass
class Tunnel:
    """One local→remote pair of an open session, with its counters."""

    local_address: str
    requested_port: int | None
    remote_host: str
    remote_port: int
    local_port: int = 0
    allowed_ports: PortSet | None = None
    listening: IListeningPort | None = None
    status: str = "pending"
    bridges: set[TcpBridge] = field(default_factory=set)
    logins: set[LocalLogin] = field(default_factory=set)
    """Local connections still logging in: no stream yet, but a slot of the connection cap."""
    total_connections: int = 0
    refused_connections: int = 0
    login_timeouts: int = 0
    """Local connections closed because they did not complete their login in time."""
    failed_connections: int = 0
    closed_bytes_to_remote: int = 0
    closed_bytes_from_remote: int = 0
    last_error: str | None = None
    service: str | None = None
    """What the tunnel leads to beyond host and port (mssql: the login and database)."""
    remote_url: str | None = None
    """k8s: the cluster's URL; the listener is then HTTPS."""

    @property
    def local_url(self) -> str | None:
        if self.remote_url is None:
            return None
        host = f"[{self.local_address}]" if ":" in self.local_address else self.local_address
        return f"https://{host}:{self.local_port}"

    @property
    def binding(self) -> str:
        local = self.local_url or f"{self.local_address}:{self.local_port}"
        remote = self.remote_url or f"{self.remote_host}:{self.remote_port}"
        text = f"{local} -> {remote}"
        return f"{text} ({self.service})" if self.service else text

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "local_address": self.local_address,
            "local_port": self.local_port,
            "remote_host": self.remote_host,
            "remote_port": self.remote_port,
        }
        if self.remote_url is not None:
            out["local_url"] = self.local_url
            out["remote_url"] = self.remote_url
        if self.service:
            out["service"] = self.service
        return out

    def counters(self) -> dict[str, Any]:
        to_remote = self.closed_bytes_to_remote + sum(b.stream.bytes_sent for b in self.bridges)
        from_remote = self.closed_bytes_from_remote + sum(
            b.stream.bytes_received for b in self.bridges
        )
        return {
            **self.describe(),
            "status": self.status,
            "connections": len(self.bridges) + len(self.logins),
            "total_connections": self.total_connections,
            "refused_connections": self.refused_connections,
            "login_timeouts": self.login_timeouts,
            "failed_connections": self.failed_connections,
            "bytes_to_remote": to_remote,
            "bytes_from_remote": from_remote,
            "last_error": self.last_error,
        }

    def login_completed(self, connection: LocalLogin, bridge: TcpBridge) -> None:
        self.logins.discard(connection)
        self.bridges.add(bridge)

    def login_ended(self, connection: LocalLogin, *, timed_out: bool) -> None:
        self.logins.discard(connection)
        if timed_out:
            self.login_timeouts += 1

    def connection_closed(self, bridge: TcpBridge) -> None:
        self.bridges.discard(bridge)
        self.closed_bytes_to_remote += bridge.stream.bytes_sent
        self.closed_bytes_from_remote += bridge.stream.bytes_received
        if bridge.reset_code == ErrorCode.LIMIT:  # the Jumpoint's decision, audited there
            self.total_connections -= 1
            self.refused_connections += 1
            log.warn(
                "refused a local connection to {local}: {reason}",
                local=f"{self.local_address}:{self.local_port}",
                reason=bridge.close_reason,
            )
        elif bridge.reset_code in FAILURE_CODES:
            self.failed_connections += 1
            self.last_error = bridge.close_reason
            log.warn(
                "connection to {remote_host}:{remote_port} via {local} failed: {reason}",
                remote_host=self.remote_host,
                remote_port=self.remote_port,
                local=f"{self.local_address}:{self.local_port}",
                reason=bridge.close_reason,
            )


class TunnelFactory(ServerFactory):
    """Accepts local connections for one tunnel and opens a stream for each."""

    def __init__(self, session: TunnelSession, tunnel: Tunnel) -> None:
        self.session = session
        self.tunnel = tunnel
        self._certificate: KeyPair | None = None

    def _client_leg(self) -> ClientLeg:
        """A SQL Server leg with the listener's certificate (issued at the first connection)."""
        if self._certificate is None:
            self._certificate = listener_certificate(
                self.session.channel.profile, self.tunnel.local_address
            )
        return ClientLeg(self._certificate.certificate_pem, self._certificate.key_pem)

    def buildProtocol(self, addr: Any) -> Protocol:
        session, tunnel = self.session, self.tunnel
        mux = session.channel.mux
        if mux is None or mux.closing or session.closing:
            return _Refused()
        peer = str(getattr(addr, "host", ""))
        if not session.peer_allowed(peer):
            tunnel.refused_connections += 1
            log.warn(
                "refused a connection from {peer} to {local}: not in the session's acl ({acl})",
                peer=peer,
                local=f"{tunnel.local_address}:{tunnel.local_port}",
                acl=", ".join(str(n) for n in session.acl),
            )
            return _Refused()
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
            return _Refused()
        kube: KubeSession | None = None
        if session.item_type == "k8s":
            kube = session.kube
            if kube is None:
                tunnel.refused_connections += 1
                log.warn(
                    "refused a connection to {local}: the Kubernetes session is not ready",
                    local=f"{tunnel.local_address}:{tunnel.local_port}",
                )
                return _Refused()
        leg = None
        if session.item_type == "mssql":
            try:
                leg = self._client_leg()
            except (OSError, ValueError) as error:
                log.error(
                    "refused a connection to {local}: no TLS certificate for the listener: {error}",
                    local=f"{tunnel.local_address}:{tunnel.local_port}",
                    error=error,
                )
                return _Refused()
        target = StreamTarget(tunnel.remote_host, tunnel.remote_port).encode()
        local = f"{tunnel.local_address}:{tunnel.local_port}"

        def open_stream() -> Stream | None:
            """The stream (and so the Jumpoint's dial), once the client has logged in."""
            if mux.closing or session.closing:
                return None
            return mux.open_stream(target)

        if leg is not None:
            # The stream waits for the client's whole LOGIN7.
            connection = TdsLocalConnection(
                leg,
                open_stream,
                tunnel,
                clock=session.channel.clock,
                login_timeout=session.login_timeout,
                local=local,
            )
            tunnel.logins.add(connection)
            tunnel.total_connections += 1
            return connection
        if kube is not None:
            # The stream waits for a complete, authenticated head.
            kube_connection = KubeClientConnection(
                open_stream,
                kube,
                listener_hosts(tunnel.local_address, tunnel.local_port),
                on_opened=tunnel.login_completed,
                on_ended=lambda c, timed_out: tunnel.login_ended(c, timed_out=timed_out),
                on_closed=tunnel.connection_closed,
                clock=session.channel.clock,
                login_timeout=session.login_timeout,
                local=local,
            )
            tunnel.logins.add(kube_connection)
            tunnel.total_connections += 1
            return kube_connection
        bridge = TcpBridge(mux.open_stream(target), on_closed=tunnel.connection_closed)
        tunnel.bridges.add(bridge)
        tunnel.total_connections += 1
        return bridge


def _parse_tunnels(result: dict[str, Any]) -> list[Tunnel]:
    entries = result.get("tunnels")
    if not isinstance(entries, list) or not entries:
        raise ProtocolViolation("the Jumpoint sent a session without tunnels")
    tunnels = []
    for entry in entries:
        try:
            local_port = entry["local_port"]
            allowed = entry.get("allowed_local_ports")
            tunnels.append(
                Tunnel(
                    local_address=str(entry["local_address"]),
                    requested_port=None if local_port == "auto" else int(local_port),
                    remote_host=str(entry["remote_host"]),
                    remote_port=int(entry["remote_port"]),
                    allowed_ports=(
                        PortSet.parse(str(allowed).replace(" ", "").split(",")) if allowed else None
                    ),
                )
            )
        except (KeyError, TypeError, ValueError):
            raise ProtocolViolation("the Jumpoint sent a malformed tunnel") from None
    return tunnels


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
        self.tunnels = _parse_tunnels(result)
        self.closing = False
        self.result = result
        spec = result.get("item")
        self.item_type = str(spec.get("type", "")) if isinstance(spec, dict) else ""
        if self.item_type == "mssql" and isinstance(spec, dict):
            service = f"SQL Server as '{spec.get('username') or ''}'"
            if spec.get("database"):
                service += f", database '{spec['database']}'"
            for tunnel in self.tunnels:
                tunnel.service = service
        self.kube: KubeSession | None = None
        """k8s: the session's kubeconfig and listener certificate, set after binding."""
        self.namespace: str | None = None
        if self.item_type == "k8s" and isinstance(spec, dict):
            self.namespace = str(spec["namespace"]) if spec.get("namespace") else None
            service = "Kubernetes" + (f", namespace {self.namespace}" if self.namespace else "")
            for tunnel in self.tunnels:
                url = spec.get("url")
                tunnel.remote_url = (
                    str(url) if url else f"https://{tunnel.remote_host}:{tunnel.remote_port}"
                )
                tunnel.service = service
        try:
            self.acl = tuple(
                ipaddress.ip_network(str(n), strict=False) for n in result.get("acl") or ()
            )
        except ValueError:
            raise ProtocolViolation("the Jumpoint sent a malformed acl") from None

    def peer_allowed(self, peer: str) -> bool:
        """Loopback peers always; others only inside the session's acl."""
        try:
            address = ipaddress.ip_address(peer)
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

    def bind_all(self, listen: Listen, local_address: str | None = None) -> None:
        """Bind every tunnel's listener; on any failure unbind the others and raise."""
        try:
            for tunnel in self.tunnels:
                if local_address is not None:
                    tunnel.local_address = local_address
                result = self._bind(listen, tunnel)
                tunnel.listening = result.port
                tunnel.local_address = result.address
                tunnel.local_port = result.local_port
                tunnel.status = "listening"
        except JumpError:
            self.stop_listening()
            raise

    def set_kube(self, kube: KubeSession) -> None:
        """k8s: the session's certificate and token; connections are refused until then."""
        self.kube = kube

    def _bind(self, listen: Listen, tunnel: Tunnel) -> Any:
        factory: ServerFactory = TunnelFactory(self, tunnel)
        if self.item_type == "k8s":
            factory = KubeListenerFactory(factory, lambda: self.kube)
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
            tunnel.status = "closed"

    def abort_connections(self) -> None:
        for tunnel in self.tunnels:
            for bridge in list(tunnel.bridges):
                if bridge.transport is not None:
                    bridge.transport.abortConnection()  # type: ignore[attr-defined]
            for connection in list(tunnel.logins):
                connection.abort()

    def counters(self) -> list[dict[str, Any]]:
        return [t.counters() for t in self.tunnels]
