"""What a kind of item is on the Jumpoint: the one seam every kind plugs into.

A L{JumpointKind} is the Jumpoint's part of one kind of item (C{tcp},
C{mssql}, C{k8s}, C{network}); it holds the kind's shared part
(L{shared.kinds}: the name, the schema, whether its connections log in) and
says:

  - how a connection of its sessions reaches the target (C{open_upstream}:
    an L{Upstream}, the bridge and when and how it dials) and how a refused
    stream is answered (C{refuse});
  - whether this Jumpoint can open it (C{openable}, C{platforms});
  - its policy: the tunnel protocol C{tunnels_restricted.protocol} is checked
    against, whether C{login_timeout} applies (the shared C{logs_in}), whether
    C{jump item tunnel} may change its tunnels;
  - the audit events only its connections record.

The kinds are registered in L{jumpoint.kinds}; the rest of the Jumpoint asks
the registry and never branches on an item's type.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.protocol import Protocol as TwistedProtocol

from jumpoint.config import JumpointConfig
from jumpoint.session import Session
from jumpoint.upstream_context import UpstreamContext
from shared.bridge import TcpBridge
from shared.kinds.base import Kind
from shared.protocol.frames import ErrorCode
from shared.protocol.mux import Stream

Dial = Callable[[], None]
"""Checks the target against C{allowed_targets} and dials it (L{jumpoint.streams})."""


class Upstream(Protocol):
    """One connection of a session on its way to the target, as its kind builds it."""

    @property
    def bridge(self) -> TcpBridge:
        """The bridge between the stream and the target (counted by the session, audited)."""
        ...

    def start(self, dial: Dial) -> None:
        """Call C{dial} when the connection should go out (or never: refused before the dial)."""
        ...

    def protocol(self) -> TwistedProtocol:
        """What the connector connects to the target (the bridge, or the bridge inside TLS)."""
        ...


class UpstreamFactory(Protocol):
    """Builds the L{Upstream} of one admitted stream of a session."""

    def __call__(
        self,
        stream: Stream,
        core: UpstreamContext,
        session: Session,
        *,
        on_closed: Callable[[TcpBridge], None],
        groups: Sequence[str],
    ) -> Upstream: ...


Refuse = Callable[[Stream, ErrorCode, str], None]
"""Answers a stream the rules refused (C{code}, C{reason}: safe to show)."""


def reset_stream(stream: Stream, code: ErrorCode, reason: str) -> None:
    """The plain refusal: RESET the stream with the code and the reason."""
    stream.reset(code, reason)


@dataclass(frozen=True)
class JumpointKind:
    """One kind of item on the Jumpoint (module docstring)."""

    shared: Kind
    """The kind's shared part (L{shared.kinds}): its name, schema, and whether it logs in."""
    open_upstream: UpstreamFactory
    refuse: Refuse = reset_stream
    openable: bool = True
    """Whether this Jumpoint can open items of the kind at all."""
    platforms: tuple[str, ...] = ()
    """C{sys.platform} prefixes the kind can be opened on; empty: every platform."""
    platform_refusal: str = ""
    """Why it cannot be opened elsewhere (the L{shared.errors.NotSupported} message)."""
    protocol: str = "tcp"
    """The tunnel protocol its connections use (checked against C{tunnels_restricted.protocol})."""
    has_tunnels: bool = False
    """Whether C{jump item tunnel} may add and remove its tunnels."""
    audit_events: tuple[str, ...] = ()
    """The audit events only its connections record (beyond C{connection_*})."""
    host_problems: Callable[[JumpointConfig], list[str]] | None = None
    """What keeps this host from opening items of the kind (C{jumpoint check-config})."""

    @property
    def name(self) -> str:
        """The item C{type} (L{shared.items.KINDS}), the shared kind's."""
        return self.shared.name

    @property
    def logs_in(self) -> bool:
        """Whether its connections log in first, so that C{login_timeout} applies (shared)."""
        return self.shared.logs_in

    def runs_on(self, platform: str) -> bool:
        """Whether the kind can be opened on C{platform} (a C{sys.platform} value)."""
        return not self.platforms or platform.startswith(self.platforms)
