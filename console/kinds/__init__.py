"""The console's parts of each kind, registered by the item's C{type} (L{shared.kinds}).

One module per kind (L{console.kinds.tcp}, C{mssql}, C{kubernetes},
C{network}); each gives a L{ConsoleKind}: the listener of `jump open` and
what it sets up, the rendering in C{jump items}, C{jump item show} and the
live view, the C{jump item create KIND} command.  Adding a kind is its
module and one line in L{BUILT_IN}; nothing else in the console names a kind.

A session of a kind this console does not know (a newer Jumpoint) is carried
as plain TCP (L{for_session}): the Jumpoint sent a TCP target, and a kind
that needs more than a bridge is one this console cannot open anyway.
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
PLAIN = ConsoleKind()
"""The parts of a kind the console does not know: no rendering, plain TCP connections."""


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


def for_session(name: object) -> ConsoleKind:
    """The kind of a session `jump open` opened: L{PLAIN} when this console does not know it."""
    return get(name) or PLAIN


def registered() -> tuple[ConsoleKind, ...]:
    return tuple(_REGISTRY.values())


for _kind in BUILT_IN:
    register(_kind)
