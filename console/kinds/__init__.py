"""The console's parts of each kind, registered by the item's C{type} (L{shared.kinds}).

Each kind has two halves on the console, in separate modules so that the
CLI loads only the light one.  Its light part, registered here, is one module
per kind (L{console.kinds.tcp}, C{mssql}, C{kubernetes}, C{network}), each
giving a L{ConsoleKind}: the rendering in C{jump items}, C{jump item show}
and the C{jump item create KIND} command.  Its session part, what `jump open`
sets up (the listener and what serves a connection), is registered in
L{console.kinds.sessions}, which only `jump open` imports.  Adding a kind
is its module(s) and one line in each L{BUILT_IN}; nothing else in the
console names a kind.
"""

from __future__ import annotations

from console.kinds import kubernetes, mssql, network, tcp
from console.kinds.base import ConsoleKind

BUILT_IN: tuple[ConsoleKind, ...] = (
    tcp.KIND,
    mssql.KIND,
    kubernetes.KIND,
    network.KIND,
)
"""The console's kinds, one line each (the same names as L{shared.kinds.BUILT_IN})."""

_REGISTRY: dict[str, ConsoleKind] = {}


def register(kind: ConsoleKind) -> None:
    """Add a kind's console parts; its name must be new."""
    if kind.name in _REGISTRY:
        raise ValueError(f"the kind {kind.name!r} is already registered")
    _REGISTRY[kind.name] = kind


def unregister(name: str) -> None:
    del _REGISTRY[name]


def get(name: object) -> ConsoleKind | None:
    """The registered kind called C{name} (an item's C{type}), or C{None}."""
    return _REGISTRY.get(name) if isinstance(name, str) else None


def registered() -> tuple[ConsoleKind, ...]:
    return tuple(_REGISTRY.values())


for _kind in BUILT_IN:
    register(_kind)
