"""One tunnel of an open session on the console: its binding and its counters.

A L{Tunnel} is one local→remote pair: where it listens, where it leads (and,
for people, to what service), the connections it carries (bridges with a
stream, and local connections still logging in) and the counters the live
view and the C{stats} events show.  Every kind's connections report to it
(the kinds' session parts, L{console.kinds.sessions}).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from console.udp_flow_table import UdpCounters
from shared.addresses import PortSet
from shared.bridge import TcpBridge
from shared.kinds.base import TCP, UDP
from shared.protocol.frames import ErrorCode

log = Logger()


class LocalLogin(Protocol):
    """A local connection that has no stream yet (its login or first request is not complete)."""

    def abort(self) -> None: ...


FAILURE_CODES = {
    ErrorCode.REFUSED,
    ErrorCode.UNREACHABLE,
    ErrorCode.TIMED_OUT,
    ErrorCode.DENIED,
    ErrorCode.LIMIT,
}


@dataclass
class Tunnel:
    """One local→remote pair of an open session, with its counters."""

    local_address: str
    requested_port: int | None
    remote_host: str
    remote_port: int
    local_port: int = 0
    allowed_ports: PortSet | None = None
    protocol: str = TCP
    """What the pair carries: C{tcp}, C{udp} or C{tcp-udp} (C{TUNNEL_PROTOCOLS})."""
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
    udp_listening: IListeningPort | None = None
    udp: UdpCounters | None = None
    """The UDP socket's figures (C{udp} and C{tcp-udp} pairs)."""

    @property
    def carries_tcp(self) -> bool:
        """A TCP listener (C{tcp} and C{tcp-udp} pairs)."""
        return TCP in self.carries

    @property
    def carries_udp(self) -> bool:
        """A UDP socket (C{udp} and C{tcp-udp} pairs), on the TCP listener's port for both."""
        return UDP in self.carries

    @property
    def carries(self) -> frozenset[str]:
        """The transport protocols of the pair: C{{tcp}}, C{{udp}} or both."""
        return frozenset(self.protocol.split("-"))

    @property
    def local_url(self) -> str | None:
        if self.remote_url is None:
            return None
        host = f"[{self.local_address}]" if ":" in self.local_address else self.local_address
        return f"https://{host}:{self.local_port}"

    @property
    def binding(self) -> str:
        local = self.local_url or f"{self.local_address}:{self.local_port}"
        if self.protocol != TCP:
            local += f"/{self.protocol}"
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
        if self.protocol != TCP:  # a plain TCP pair keeps the fields it always had
            out["protocol"] = self.protocol
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
        udp: dict[str, Any] = {}
        if self.udp is not None:
            udp = self.udp.as_dict()
            to_remote += self.udp.bytes_to_remote
            from_remote += self.udp.bytes_from_remote
        return {
            **self.describe(),
            **udp,
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
