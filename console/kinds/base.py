"""The console's interface of a kind, its light part: names, fields, rendering, its command.

A L{ConsoleKind} is registered by the item's C{type} in L{console.kinds}.
It renders an item of the kind in C{jump items} (L{ConsoleKind.targets})
and C{jump item show} (L{ConsoleKind.detail_lines}) and may add its
C{jump item create KIND} command (L{ConsoleKind.create_command}).  It is
all the CLI needs to build its commands and render items, so it imports
nothing of a session: what a kind does in a session `jump open` opened (its
listener, what serves a connection, a kubeconfig) is its session part
(L{console.kinds.session_part}, registered in L{console.kinds.sessions}),
which only `jump open` loads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import Protocol as Interface

import click

from shared.errors import UsageError


class Submit(Interface):
    """Sends a new item: its name, the common options, and the kind's fields."""

    def __call__(self, name: str, options: dict[str, Any], /, **fields: Any) -> None: ...


Decorator = Callable[[Any], Any]


class ConsoleKind:
    """What the CLI knows of one kind; the defaults are those of a plain TCP tunnel."""

    name = ""

    def targets(self, entry: dict[str, Any]) -> str:
        """The TUNNELS column of C{jump items} for an item of the kind (its JSON)."""
        return ""

    def detail_lines(self, entry: dict[str, Any]) -> list[tuple[str, str]]:
        """C{jump item show}: lines (label, text) after the common fields."""
        return []

    def create_command(self, common: Decorator, submit: Submit) -> click.Command | None:
        """The C{jump item create KIND} command; C{common} adds the options every kind has."""
        return None


def local_port_option(text: str | None) -> Any:
    """C{--local-port}: a number or C{auto} (C{None}: not given)."""
    if text is None or text == "auto":
        return text
    if not text.isdigit():
        raise UsageError(f"--local-port: {text!r} is not a port number or 'auto'")
    return int(text)
