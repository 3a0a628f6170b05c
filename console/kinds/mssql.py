"""The console's C{mssql} kind, its light part: the TUNNELS column and `jump item create mssql`.

A session of the kind (the local SQL Server leg in front of each connection)
is L{console.kinds.mssql_session}.
"""

from __future__ import annotations

from typing import Any

import click

from console.kinds.base import ConsoleKind, Decorator, Submit, local_port_option
from shared.kinds.mssql import NAME


class MssqlKind(ConsoleKind):
    name = NAME

    def targets(self, entry: dict[str, Any]) -> str:
        return f"{entry.get('local_port', 'auto')}:{entry.get('port')}"

    def create_command(self, common: Decorator, submit: Submit) -> click.Command:
        @click.command(NAME)
        @click.argument("name")
        @click.option("--host", required=True, help="The SQL Server host.")
        @click.option("--port", type=int, help="Its port (default 1433).")
        @click.option("--username", required=True, help="The login the Jumpoint injects.")
        @click.option("--database", help="The database to log in to.")
        @click.option("--local-port", help="Local port (a number or auto; default auto).")
        @common
        def create_mssql(
            name: str,
            host: str,
            port: int | None,
            username: str,
            database: str | None,
            local_port: str | None,
            **options: Any,
        ) -> None:
            """A SQL Server item (the Jumpoint injects the credentials)."""
            submit(
                name,
                options,
                host=host,
                port=port,
                username=username,
                database=database,
                local_port=local_port_option(local_port),
            )

        return create_mssql


KIND = MssqlKind()
