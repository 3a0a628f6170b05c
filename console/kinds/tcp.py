"""The console's C{tcp} kind: plain tunnels, shown as their C{LOCAL:REMOTE} pairs."""

from __future__ import annotations

from typing import Any

import click

from console.kinds.base import ConsoleKind, Decorator, Submit
from shared.errors import UsageError
from shared.kinds.tcp import NAME, parse_tunnel_text


class TcpKind(ConsoleKind):
    """Every connection a plain bridge (the defaults of L{ConsoleKind})."""

    name = NAME

    def targets(self, entry: dict[str, Any]) -> str:
        return ", ".join(
            f"{t.get('local_port')}:{t.get('remote_port')}" for t in entry.get("tunnels", [])
        )

    def detail_lines(self, entry: dict[str, Any]) -> list[tuple[str, str]]:
        return [("tunnels", self.targets(entry))]

    def create_command(self, common: Decorator, submit: Submit) -> click.Command:
        @click.command(NAME)
        @click.argument("name")
        @click.option(
            "--host", required=True, help="The target host (name or IP), seen from the Jumpoint."
        )
        @click.option(
            "--tunnel",
            "tunnels",
            multiple=True,
            required=True,
            help="LOCAL:REMOTE port pair; LOCAL may be auto (repeatable).",
        )
        @common
        def create_tcp(name: str, host: str, tunnels: tuple[str, ...], **options: Any) -> None:
            """A TCP tunnel item: several local→remote port pairs to one host."""
            pairs = []
            for text in tunnels:
                try:
                    pairs.append(parse_tunnel_text(text))
                except ValueError as error:
                    raise UsageError(f"--tunnel: {error}") from None
            submit(name, options, host=host, tunnels=pairs)

        return create_tcp


KIND = TcpKind()
