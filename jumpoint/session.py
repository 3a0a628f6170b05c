"""A tunnel session on the Jumpoint: one user, one item, many connections.

The session counts its connections (current and total, capped by the
session's connection limit) and bytes, and logs every connection's end with
its target and byte counts.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from twisted.logger import Logger

from shared.bridge import TcpBridge
from shared.items import TcpItem

log = Logger()


def new_session_id() -> str:
    return secrets.token_hex(8)


@dataclass
class Session:
    """The Jumpoint's record of one open session."""

    session_id: str
    user: str
    item: TcpItem
    max_connections: int
    opened_at: float
    active: set[TcpBridge] = field(default_factory=set)
    total_connections: int = 0
    bytes_to_target: int = 0
    bytes_from_target: int = 0
    closed: bool = False

    def has_room(self) -> bool:
        return len(self.active) < self.max_connections

    def connection_started(self, bridge: TcpBridge) -> None:
        self.active.add(bridge)
        self.total_connections += 1

    def totals(self) -> tuple[int, int]:
        """Bytes to and from the targets so far, open connections included."""
        to_target = self.bytes_to_target + sum(_to_target(b) for b in self.active)
        from_target = self.bytes_from_target + sum(b.stream.bytes_sent for b in self.active)
        return to_target, from_target

    def connection_closed(self, bridge: TcpBridge, host: str, port: int) -> None:
        if bridge not in self.active:
            return
        self.active.discard(bridge)
        stream = bridge.stream
        self.bytes_to_target += _to_target(bridge)
        self.bytes_from_target += stream.bytes_sent
        log.info(
            "session {session} user {user}: connection {stream_id} to {host}:{port} closed"
            " ({reason}); {sent} bytes to target, {received} bytes from target",
            session=self.session_id,
            user=self.user,
            stream_id=stream.stream_id,
            host=host,
            port=port,
            reason=bridge.close_reason or "closed",
            sent=_to_target(bridge),
            received=stream.bytes_sent,
        )


def _to_target(bridge: TcpBridge) -> int:
    """Bytes delivered to the target (none if it never connected)."""
    return bridge.stream.bytes_received if bridge.connected else 0
