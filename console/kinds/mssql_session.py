"""A session of the C{mssql} kind: a local SQL Server leg in front of each connection.

A local connection starts as a L{TdsLocalConnection} (PRELOGIN and TLS with
the console, with a certificate issued for the listener at its first
connection); its stream opens only once the client's whole LOGIN7 is in.
The bindings name the login and the database the Jumpoint logs in with.
The kind's light part is L{console.kinds.mssql}.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from console.kinds.session_part import (
    Accept,
    Acceptor,
    SessionContext,
    SessionKind,
    SessionPart,
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


class MssqlSessionKind(SessionKind):
    def open_session(self, context: SessionContext) -> SessionPart:
        spec = context.spec
        service = f"SQL Server as '{spec.get('username') or ''}'"
        if spec.get("database"):
            service += f", database '{spec['database']}'"
        for tunnel in context.tunnels:
            tunnel.service = service
        return MssqlSession()


KIND = MssqlSessionKind(NAME)
