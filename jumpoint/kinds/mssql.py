"""The C{mssql} kind on the Jumpoint: SQL Server behind the TDS legs (L{jumpoint.tds_upstream}).

The Jumpoint logs in with the item's credential once the console's whole
LOGIN7 is in, and audits the logins, batches and RPCs; a refused stream gets
a clean login failure instead of a bare reset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twisted.internet.protocol import Protocol

from jumpoint.kinds.base import Dial, JumpointKind
from jumpoint.session import Session
from jumpoint.tds_upstream import TdsUpstreamHandler, refuse_stream
from jumpoint.upstream_context import UpstreamContext
from shared.bridge import TcpBridge
from shared.kinds.mssql import KIND as SHARED
from shared.protocol.frames import ErrorCode
from shared.protocol.mux import Stream


@dataclass(frozen=True)
class MssqlUpstream:
    """An mssql connection: refused without a credential, dialled once the LOGIN7 is in."""

    handler: TdsUpstreamHandler

    @property
    def bridge(self) -> TcpBridge:
        return self.handler.bridge

    def start(self, dial: Dial) -> None:
        if self.handler.refused_before_dial():
            return  # mssql without a credential: the client got its login failure
        # The SQL Server is dialled only once the console's whole LOGIN7 is in.
        self.handler.when_login_arrived(dial)

    def protocol(self) -> Protocol:
        return self.handler.bridge


def open_upstream(
    stream: Stream,
    core: UpstreamContext,
    session: Session,
    *,
    on_closed: Callable[[TcpBridge], None],
    groups: Sequence[str],
) -> MssqlUpstream:
    return MssqlUpstream(TdsUpstreamHandler(stream, core, session, on_closed=on_closed))


def refuse(stream: Stream, code: ErrorCode, reason: str) -> None:
    """The SQL client gets a clean login failure (the code is for a reset, unused)."""
    refuse_stream(stream, reason)


KIND = JumpointKind(
    shared=SHARED,
    open_upstream=open_upstream,
    refuse=refuse,
    audit_events=(
        "sql_batch",
        "sql_login",
        "sql_login_failed",
        "sql_malformed",
        "sql_message_too_large",
        "sql_routed",
        "sql_rpc",
    ),
)
