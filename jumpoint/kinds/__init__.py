"""The registry of the kinds of item this Jumpoint knows, keyed by the item C{type}.

Each kind is a module of this package providing a L{JumpointKind}
(L{jumpoint.kinds.base}); registering it is one line below.  The rest of the
Jumpoint asks the registry (L{kind_of}, L{check_openable}, L{tunnel_kinds})
and never branches on an item's type, so adding a kind means adding its
modules and one registration line.
"""

from __future__ import annotations

from jumpoint.config import JumpointConfig
from jumpoint.kinds import kubernetes, mssql, network, tcp
from jumpoint.kinds.base import JumpointKind
from shared.errors import NotSupported
from shared.items import Item

BUILT_IN: tuple[JumpointKind, ...] = (
    tcp.KIND,
    mssql.KIND,
    kubernetes.KIND,
    network.KIND,
)
"""The Jumpoint's kinds, one line each (the same names as L{shared.kinds.BUILT_IN})."""

_KINDS: dict[str, JumpointKind] = {}


def register(kind: JumpointKind) -> None:
    """Add a kind; a second kind of the same name is a programming error."""
    if kind.name in _KINDS:
        raise ValueError(f"kind {kind.name!r} is registered twice")
    _KINDS[kind.name] = kind


def unregister(name: str) -> None:
    """Remove a kind (tests that registered one of their own)."""
    del _KINDS[name]


def registered() -> tuple[JumpointKind, ...]:
    """Every registered kind, in registration order."""
    return tuple(_KINDS.values())


def get(name: str) -> JumpointKind | None:
    """The kind of that C{type}, or C{None} when this Jumpoint has none."""
    return _KINDS.get(name)


def host_problems(config: JumpointConfig) -> list[str]:
    """What keeps this host from opening the items of C{config}, kind by kind (check-config)."""
    found: list[str] = []
    used = {item.type for item in config.items}
    for kind in _KINDS.values():
        if kind.name in used and kind.host_problems is not None:
            found.extend(f"{kind.name} items: {problem}" for problem in kind.host_problems(config))
    return found


def kind_of(item: Item) -> JumpointKind:
    """The kind of an item this Jumpoint can open (L{check_openable} passed)."""
    kind = _KINDS.get(item.type)
    if kind is None:
        raise NotSupported(
            f"item {item.name!r} is a {item.type} item; this Jumpoint has no such kind"
        )
    return kind


def _listed(names: list[str]) -> str:
    """C{a, b and c}."""
    if len(names) < 2:
        return "".join(names)
    return f"{', '.join(names[:-1])} and {names[-1]}"


def check_openable(item: Item, platform: str) -> JumpointKind:
    """The item's kind, or L{NotSupported} when this Jumpoint cannot open it (on C{platform})."""
    kind = _KINDS.get(item.type)
    if kind is None or not kind.openable:
        openable = _listed([k.name for k in _KINDS.values() if k.openable])
        raise NotSupported(
            f"item {item.name!r} is a {item.type} item; this Jumpoint cannot open {item.type}"
            " items yet",
            hint=f"only {openable} items can be opened for now",
        )
    if not kind.runs_on(platform):
        raise NotSupported(kind.platform_refusal)
    return kind


def tunnel_kinds() -> str:
    """The kinds whose tunnels C{jump item tunnel} may change, as text (C{tcp})."""
    return _listed([k.name for k in _KINDS.values() if k.has_tunnels])


for _kind in BUILT_IN:
    register(_kind)
