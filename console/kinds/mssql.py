"""The console's C{mssql} kind: a local SQL Server leg in front of each connection.

A local connection starts as a L{TdsLocalConnection} (PRELOGIN and TLS with
the console, with a certificate issued for the listener at its first
connection); its stream opens only once the client's whole LOGIN7 is in.
The bindings name the login and the database the Jumpoint logs in with.
"""

from __future__ import annotations

from typing import Any

import click
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from console.kinds.base import (
    Accept,
    Acceptor,
    ConsoleKind,
    Decorator,
    SessionPart,
    Submit,
    local_port_option,
    refuse,
)
from console.local_ca import listener_certificate
from console.tds_client_leg import ClientLeg
from console.tds_proxy import TdsLocalConnection
from console.tunnel_counters import Tunnel
from shared.kinds.mssql import NAME
from shared.pki import KeyPair

log = Logger()


class _Listener:
    """One tunnel's SQL Server listener: its certificate, issued at the first connection."""

    def __init__(self) -> None:
        self._certificate: KeyPair | None = None

    def _client_leg(self, accept: Accept) -> ClientLeg:
        if self._certificate is None:
            self._certificate = listener_certificate(accept.profile, accept.tunnel.local_address)
        return ClientLeg(self._certificate.certificate_pem, self._certificate.key_pem)

    def accept(self, accept: Accept) -> Protocol:
        try:
            leg = self._client_leg(accept)
        except (OSError, ValueError) as error:
            log.error(
                "refused a connection to {local}: no TLS certificate for the listener: {error}",
                local=accept.local,
                error=error,
            )
            return refuse()
        # The stream waits for the client's whole LOGIN7.
        connection = TdsLocalConnection(
            leg,
            accept.open_stream,
            accept.tunnel,
            clock=accept.clock,
            login_timeout=accept.login_timeout,
            local=accept.local,
        )
        accept.tunnel.logins.add(connection)
        accept.tunnel.total_connections += 1
        return connection


class MssqlSession(SessionPart):
    def acceptor(self, tunnel: Tunnel) -> Acceptor:
        return _Listener().accept


class MssqlKind(ConsoleKind):
    name = NAME

    def targets(self, entry: dict[str, Any]) -> str:
        return f"{entry.get('local_port', 'auto')}:{entry.get('port')}"

    def open_session(self, spec: dict[str, Any], tunnels: list[Tunnel]) -> SessionPart:
        service = f"SQL Server as '{spec.get('username') or ''}'"
        if spec.get("database"):
            service += f", database '{spec['database']}'"
        for tunnel in tunnels:
            tunnel.service = service
        return MssqlSession()

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
