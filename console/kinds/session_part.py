"""A kind's part of a session `jump open` opened: its listener, what serves a connection.

A L{SessionKind} is registered by the item's C{type} in
L{console.kinds.sessions}; it makes the kind's part of each session
(L{SessionKind.open_session}, from a L{SessionContext}: the item, the
tunnels, the Jumpoint's whole reply and the channel): a L{SessionPart}, and
names what the bindings and the live view show of each tunnel (its
C{service}, its C{remote_url}).  A kind whose sessions carry no tunnels (a
network item's packets) says so (L{SessionKind.has_tunnels}).

A L{SessionPart} decides what the tunnels' listeners do with a local
connection (L{SessionPart.acceptor}: by default a plain L{TcpBridge} on a
new stream), may wrap the listener's factory (TLS), sets up what the session
needs once its listeners are bound (a kubeconfig, a TUN interface: perhaps
off the reactor, L{SessionPart.opened} may return a L{Deferred}), may end
the session itself (L{SessionPart.watch}: its own data path ended), and says
what C{jump open} shows, sets in a command's environment and removes at the
end, and what its own data path carried (L{SessionPart.counters}: the live
view and the C{stats} events show it).
The defaults are those of a plain TCP tunnel: nothing beyond the bridges.

This is the heavy half of a kind (it reaches the bridges, the proxies, TLS):
only the session registry imports it, and only `jump open` imports that
(L{console.kinds.sessions}); the light half is L{console.kinds.base}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, ServerFactory

from console.channel import ConsoleChannel
from console.tunnel_counters import Tunnel
from shared.bridge import TcpBridge
from shared.errors import JumpError
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

    reconnects = True
    """Whether the session can move to a new channel after a loss (`jump open` reconnects).

    Connections are served per accepted connection (on the channel of the
    moment), so tunnels can; a part bound to its first channel (a network
    session's interface and datagram source) says no: a loss then ends it.
    """

    def listener(self, factory: ServerFactory) -> ServerFactory:
        """The factory a tunnel's port is bound with (C{factory} accepts the connections)."""
        return factory

    def acceptor(self, tunnel: Tunnel) -> Acceptor:
        """How C{tunnel}'s listener serves a local connection the session's rules let in."""
        return accept_plain

    def opened(
        self, item: str, session_id: str, tunnels: list[Tunnel], notify: Callable[[list[str]], None]
    ) -> Deferred[None] | None:
        """`jump open`: the listeners are bound; set up what the session needs.

        C{notify} shows lines to the user (stderr); raises L{JumpError}, or
        returns a L{Deferred} (work done off the reactor) that fails with one.
        """
        return None

    def watch(self, end: Callable[[JumpError], None]) -> None:
        """The session runs: call C{end} if the kind's own data path ends it (default: never)."""

    def details(self) -> dict[str, Any]:
        """Fields the kind adds to the JSON C{ready} event."""
        return {}

    def counters(self) -> dict[str, int] | None:
        """What the kind's own data path carried so far (C{None}: it has none).

        A network session's interface: C{packets_out}, C{bytes_out},
        C{packets_in}, C{bytes_in}, its drops and the Jumpoint's flows and
        denials (docs/console-guide.md, "JSON events": C{link}).
        C{bytes_out} and C{bytes_in} count in the session's bytes to and
        from the remote side.  Called on the reactor at every live view
        tick: cheap, never waiting (it may start one bounded request).
        """
        return None

    def counters_label(self) -> str:
        """The live view's name of that data path (a row of its table: the interface)."""
        return ""

    def shell_lines(self) -> list[str]:
        """Lines for people once the session is ready (C{export KUBECONFIG=...})."""
        return []

    def environment(self) -> dict[str, str]:
        """Variables the kind sets for the command run with C{jump open ... -- CMD}."""
        return {}

    def remove(self) -> list[str] | None:
        """Undo what L{opened} set up, once: what was removed (C{None}: nothing to undo)."""
        return None


@dataclass(frozen=True)
class SessionContext:
    """What a kind sees of a session `jump open` opened, to make its part.

    @ivar spec: the item's JSON (the reply's C{item}; C{{}} when it sent none).
    @ivar tunnels: the session's tunnels, parsed from the reply.
    @ivar reply: the Jumpoint's whole C{open_session} result (a kind
        validates the members that are its own, such as C{network}).
    @ivar channel: the session's channel (its multiplexer's datagram flows,
        its clock, C{on_flow_closed}).
    """

    spec: dict[str, Any]
    tunnels: list[Tunnel]
    reply: dict[str, Any]
    channel: ConsoleChannel


class SessionKind:
    """What `jump open` does for one kind; the defaults are those of a plain TCP tunnel."""

    has_tunnels = True
    """Whether the kind's sessions carry tunnels (a reply without any is then malformed)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def open_session(self, context: SessionContext) -> SessionPart:
        """The kind's part of a session C{jump open} opened.

        It may set each tunnel's C{service} and C{remote_url}, which the
        bindings and the live view show; a reply member of the kind that is
        malformed raises L{shared.errors.ProtocolViolation}.
        """
        return SessionPart()
