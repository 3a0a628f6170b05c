"""The kinds' session parts, registered by the item's C{type}: what `jump open` does per kind.

Each kind has two halves on the console.  Its light part
(L{console.kinds.base}, registered in L{console.kinds}) is what the CLI
needs to build its commands and render items; its session part
(L{console.kinds.session_part}: the listener, what serves a connection, a
kubeconfig), registered here, reaches the bridges, the SQL Server and
Kubernetes proxies and TLS.  Nothing is loaded lazily here: this registry
imports every kind's session module at its top, and only L{console.tunnels}
imports this registry; L{console.tunnels} is reached only through
L{console.open_command}, which the launcher L{console.cli} imports when
`jump open` runs (the launchers' one lazy mechanism, see
C{tests/unit/test_architecture.py}).  So C{jump --help}, C{jump items} and
the item commands never import a session's machinery
(C{tests/unit/test_startup.py} checks it).

Adding a kind is its light module with one line in L{console.kinds.BUILT_IN},
and one line in L{BUILT_IN} here: its C{<kind>_session} module's part, or a
plain L{SessionKind} when its sessions are plain TCP.  A session of a kind this console does not
know (a newer Jumpoint) is carried as plain TCP (L{for_session}): the
Jumpoint sent a TCP target, and a kind that needs more than a bridge is one
this console cannot open anyway.
"""

from __future__ import annotations

from console.kinds import kubernetes_session, mssql_session, network_session
from console.kinds.session_part import SessionKind
from shared.kinds import tcp

BUILT_IN: tuple[SessionKind, ...] = (
    SessionKind(tcp.NAME),
    mssql_session.KIND,
    kubernetes_session.KIND,
    network_session.KIND,
)
"""The kinds' session parts, one line each (the names of L{console.kinds.BUILT_IN})."""

_REGISTRY: dict[str, SessionKind] = {}
PLAIN = SessionKind("")
"""The session part of a kind the console does not know: plain TCP connections."""


def register(kind: SessionKind) -> None:
    """Add a kind's session part; its name must be new."""
    if kind.name in _REGISTRY:
        raise ValueError(f"the session part of {kind.name!r} is already registered")
    _REGISTRY[kind.name] = kind


def unregister(name: str) -> None:
    del _REGISTRY[name]


def get(name: object) -> SessionKind | None:
    """The registered session part of the kind called C{name} (an item's C{type}), or C{None}."""
    return _REGISTRY.get(name) if isinstance(name, str) else None


def for_session(name: object) -> SessionKind:
    """The session part of a session `jump open` opened: L{PLAIN} for a kind it does not know."""
    return get(name) or PLAIN


def registered() -> tuple[SessionKind, ...]:
    return tuple(_REGISTRY.values())


for _kind in BUILT_IN:
    register(_kind)
