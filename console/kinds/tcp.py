"""The console's C{tcp} kind: plain tunnels, shown as their C{LOCAL:REMOTE[/PROTOCOL]} pairs."""

from __future__ import annotations

from typing import Any

import click

from console.kinds.base import ConsoleKind, Decorator, Submit
from shared.errors import UsageError
from shared.kinds.tcp import NAME, parse_tunnel_text


def _pair(tunnel: dict[str, Any]) -> str:
    """C{LOCAL:REMOTE}, with C{/udp} or C{/tcp-udp} for a pair that is not plain TCP."""
    protocol = tunnel.get("protocol", "tcp")
    suffix = "" if protocol == "tcp" else f"/{protocol}"
    return f"{tunnel.get('local_port')}:{tunnel.get('remote_port')}{suffix}"


class TcpKind(ConsoleKind):
    """Every connection a plain bridge (the defaults of L{ConsoleKind})."""

    name = NAME

    def targets(self, entry: dict[str, Any]) -> str:
        return ", ".join(_pair(t) for t in entry.get("tunnels", []) if isinstance(t, dict))

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
            help=(
                "LOCAL:REMOTE[/PROTOCOL] port pair; LOCAL may be auto, PROTOCOL is tcp"
                " (default), udp or tcp-udp (repeatable)."
            ),
        )
        @common
        def create_tcp(name: str, host: str, tunnels: tuple[str, ...], **options: Any) -> None:
            """A tunnel item: several local→remote port pairs (TCP, UDP or both) to one host."""
            pairs = []
            for text in tunnels:
                try:
                    pairs.append(parse_tunnel_text(text))
                except ValueError as error:
                    raise UsageError(f"--tunnel: {error}") from None
            submit(name, options, host=host, tunnels=pairs)

        return create_tcp


KIND = TcpKind()
