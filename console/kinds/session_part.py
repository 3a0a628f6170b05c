"""A kind's part of a session `jump open` opened: its listener, what serves a connection.

A L{SessionKind} is registered by the item's C{type} in
L{console.kinds.sessions}; it makes the kind's part of each session
(L{SessionKind.open_session}): a L{SessionPart}, and names what the
bindings and the live view show of each tunnel (its C{service}, its
C{remote_url}).

A L{SessionPart} decides what the tunnels' listeners do with a local
connection (L{SessionPart.acceptor}: by default a plain L{TcpBridge} on a
new stream), may wrap the listener's factory (TLS), sets up what the session
needs once its listeners are bound (a kubeconfig), and says what
C{jump open} shows, sets in a command's environment and removes at the end.
The defaults are those of a plain TCP tunnel: nothing beyond the bridges.

This is the heavy half of a kind (it reaches the bridges, the proxies, TLS):
only the session registry imports it, and only `jump open` imports that
(L{console.kinds.sessions}); the light half is L{console.kinds.base}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.protocol import Protocol, ServerFactory

from console.tunnel_counters import Tunnel
from shared.bridge import TcpBridge
from shared.protocol.mux import Multiplexer, Stream


class _Refused(Protocol):
    """Closes a local connection at once."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.abortConnection()  # type: ignore[attr-defined]


def refuse() -> Protocol:
    """The protocol of a local connection refused on the console: closed at once."""
    return _Refused()


@dataclass(frozen=True)
class Accept:
    """One local connection a tunnel's listener accepted, with what serving it needs.

    @ivar target: the stream's target (an encoded L{StreamTarget}).
    @ivar open_stream: opens the stream now (C{None}: the session is closing);
        a kind whose connection logs in first calls it once the login is in.
    @ivar local: the listener's C{address:port}, for logs.
    @ivar profile: the console profile (for the listener's certificate).
    """

    tunnel: Tunnel
    mux: Multiplexer
    target: bytes
    open_stream: Callable[[], Stream | None]
    clock: Any
    login_timeout: float | None
    local: str
    profile: Any


Acceptor = Callable[[Accept], Protocol]
"""A tunnel's way to serve one accepted local connection (one per listener)."""


def accept_plain(accept: Accept) -> Protocol:
    """A plain TCP bridge on a new stream, counted by the tunnel at once."""
    tunnel = accept.tunnel
    bridge = TcpBridge(accept.mux.open_stream(accept.target), on_closed=tunnel.connection_closed)
    tunnel.bridges.add(bridge)
    tunnel.total_connections += 1
    return bridge


class SessionPart:
    """A kind's part of one open session; the defaults carry each connection as plain TCP."""

    def listener(self, factory: ServerFactory) -> ServerFactory:
        """The factory a tunnel's port is bound with (C{factory} accepts the connections)."""
        return factory

    def acceptor(self, tunnel: Tunnel) -> Acceptor:
        """How C{tunnel}'s listener serves a local connection the session's rules let in."""
        return accept_plain

    def opened(
        self, item: str, session_id: str, tunnels: list[Tunnel], notify: Callable[[list[str]], None]
    ) -> None:
        """`jump open`: the listeners are bound; set up what the session needs.

        C{notify} shows lines to the user (stderr); raises L{JumpError}.
        """

    def details(self) -> dict[str, Any]:
        """Fields the kind adds to the JSON C{ready} event."""
        return {}

    def shell_lines(self) -> list[str]:
        """Lines for people once the session is ready (C{export KUBECONFIG=...})."""
        return []

    def environment(self) -> dict[str, str]:
        """Variables the kind sets for the command run with C{jump open ... -- CMD}."""
        return {}

    def remove(self) -> list[str] | None:
        """Undo what L{opened} set up, once: what was removed (C{None}: nothing to undo)."""
        return None


class SessionKind:
    """What `jump open` does for one kind; the defaults are those of a plain TCP tunnel."""

    def __init__(self, name: str) -> None:
        self.name = name

    def open_session(self, spec: dict[str, Any], tunnels: list[Tunnel]) -> SessionPart:
        """The kind's part of a session C{jump open} opened (C{spec}: the item's JSON).

        It may set each tunnel's C{service} and C{remote_url}, which the
        bindings and the live view show.
        """
        return SessionPart()
