"""The console's C{network} kind: items listed with their filter rules (not opened yet)."""

from __future__ import annotations

from typing import Any

import click

from console.kinds.base import ConsoleKind, Decorator, Submit
from shared.kinds.network import NAME


class NetworkKind(ConsoleKind):
    name = NAME

    def targets(self, entry: dict[str, Any]) -> str:
        return ", ".join(entry.get("filters", []))

    def detail_lines(self, entry: dict[str, Any]) -> list[tuple[str, str]]:
        return [("filter", rule) for rule in entry.get("filters", [])]

    def create_command(self, common: Decorator, submit: Submit) -> click.Command:
        @click.command(NAME)
        @click.argument("name")
        @click.option(
            "--filter",
            "filters",
            multiple=True,
            required=True,
            help=(
                "IP[,IP|CIDR][/PROTOCOL[/PORTS]] or RANGE[/PROTOCOL[/PORTS]]; IPv4, PROTOCOL an"
                " IANA keyword or number (repeatable, 1-50)."
            ),
        )
        @common
        def create_network(name: str, filters: tuple[str, ...], **options: Any) -> None:
            """A network tunnel item (filter rules)."""
            submit(name, options, filters=list(filters))

        return create_network


KIND = NetworkKind()
