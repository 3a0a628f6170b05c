"""The streams of a session: admission, the bridge to the target, and its audit.

L{admit_stream} decides on a stream the console opened: the target must be
one of the session's item (its host and remote ports), the session must
have room under its connection cap, and the audit spool must have room (a
connection is a decision).  An admitted stream becomes a
L{StreamConnection}, which has the item's kind (L{jumpoint.kinds}) build
its bridge, checks the target against C{allowed_targets}
(L{jumpoint.dialing}), dials it when the kind says so, records it when the
session is recorded, and audits its opening and closing.  A refused stream
is audited (C{connection_denied}) and answered as its kind answers refusals
(a reset, or, for a SQL client, a clean login failure).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from jumpoint import kinds
from jumpoint.dialing import checked_address, classify_connect_failure
from jumpoint.recording_tap import RecordingTap
from jumpoint.session import Session
from jumpoint.upstream_context import UpstreamContext
from shared.bridge import TcpBridge
from shared.errors import AccessDenied, ProtocolViolation
from shared.protocol.control import StreamTarget
from shared.protocol.frames import ErrorCode
from shared.protocol.mux import Stream

log = Logger()

AUDIT_SPOOL_RULE = "audit_spool"
"""The rule that refuses a decision while the audit spool is full (see L{jumpoint.audit})."""


def admit_stream(
    core: UpstreamContext,
    session: Session,
    stream: Stream,
    payload: bytes,
    *,
    peer_host: str,
    groups: Sequence[str],
) -> None:
    """Refuse the stream the console opened, or start its connection (module docstring)."""
    try:
        target = StreamTarget.decode(payload)
    except ProtocolViolation as violation:
        stream.reset(ErrorCode.PROTOCOL_ERROR, violation.message)
        return
    refusal: tuple[ErrorCode, str, str] | None = None
    if not session.item.allows_target(target.host, target.port):
        refusal = (
            ErrorCode.DENIED,
            f"{target.host}:{target.port} is not a tunnel of item {session.item.name!r}"
            " (rule: item host and remote ports)",
            "item host and remote ports",
        )
    elif not session.has_room():
        refusal = (
            ErrorCode.LIMIT,
            f"the session already carries {session.max_connections} connections"
            " (rule: max_connections)",
            "max_connections",
        )
    elif not core.log_audit.accepting:
        # a connection is a decision: without room in the audit spool, none is taken
        audit = core.log_audit
        waiting = (
            "its spool file is full"
            if audit.spooler is not None and audit.spooler.full
            else f"{audit.spooled} events are waiting for the database"
        )
        reason = f"the Jumpoint cannot write its audit log ({waiting})"
        log.warn(
            "session {session}: refused stream {stream_id}: {reason} (rule: {rule})",
            session=session.session_id,
            stream_id=stream.stream_id,
            reason=reason,
            rule=AUDIT_SPOOL_RULE,
        )
        stream.reset(ErrorCode.INTERNAL_ERROR, f"{reason} (rule: {AUDIT_SPOOL_RULE})")
        return
    if refusal is not None:
        code, reason, rule = refusal
        refuse(core, session, stream, target, code, reason, rule)
        return
    StreamConnection(core, session, stream, target, peer_host=peer_host, groups=groups).start()


def refuse(
    core: UpstreamContext,
    session: Session,
    stream: Stream,
    target: StreamTarget,
    code: ErrorCode,
    reason: str,
    rule: str,
) -> None:
    """Refuse a stream by a rule: log, audit C{connection_denied}, reset (SQL: login failure)."""
    log.warn(
        "session {session}: refused stream {stream_id}: {reason}",
        session=session.session_id,
        stream_id=stream.stream_id,
        reason=reason,
    )
    core.log_audit.record(
        "connection_denied",
        **session.audit_fields(),
        rule=rule,
        stream=stream.stream_id,
        target=f"{target.host}:{target.port}",
        reason=reason,
    )
    kinds.kind_of(session.item).refuse(stream, code, reason)  # SQL: a clean login failure


class StreamConnection:
    """One stream of a session on its way to the target: check, dial, bridge, audit.

    Without an allow-list the target is dialled at once; with one, its host
    is resolved first and every address checked, and the connection goes to
    the first checked address (never to a fresh lookup).
    """

    def __init__(
        self,
        core: UpstreamContext,
        session: Session,
        stream: Stream,
        target: StreamTarget,
        *,
        peer_host: str,
        groups: Sequence[str] = (),
    ) -> None:
        self.core = core
        self.session = session
        self.stream = stream
        self.target = target
        self.peer_host = peer_host
        """The console's address (the client side of a recorded connection)."""
        self.address = target.host
        self.attempt: Deferred[Any] | None = None
        self.upstream = kinds.kind_of(session.item).open_upstream(
            stream, core, session, on_closed=self.closed, groups=groups
        )
        self.bridge: TcpBridge = self.upstream.bridge
        self.bridge.wait_for_connection()
        session.connection_started(self.bridge)

    def start(self) -> None:
        """Dial when the item's kind says so (mssql: once the LOGIN7 is in; or never)."""
        self.upstream.start(self._route)

    def _route(self) -> None:
        """Dial the target once it passed C{allowed_targets} and the built-in default."""
        Deferred.fromCoroutine(self._check_then_dial())

    async def _check_then_dial(self) -> None:
        target, session = self.target, self.session
        try:
            address, checked = await checked_address(self.core, target.host, target.port)
        except AccessDenied as denial:
            session.connection_finished(self.bridge)
            refuse(
                self.core,
                session,
                self.stream,
                target,
                ErrorCode.DENIED,
                denial.message,
                "allowed_targets",
            )
            self.bridge.connection_failed(ErrorCode.DENIED, denial.message)
            return
        except Exception as error:  # the resolver failed: that connection fails, not the session
            log.warn(
                "session {session}: cannot resolve {host}: {error}",
                session=session.session_id,
                host=target.host,
                error=error,
            )
            self.bridge.connection_failed(ErrorCode.UNREACHABLE, f"cannot resolve {target.host}")
            return
        if not checked:  # a core without a resolver: the connector resolves
            self.dial(address)
            return
        if self.stream.closed or session.closed:
            self.bridge.abort(ErrorCode.CANCEL, "the stream ended while its target was resolved")
            return
        self.dial(address)

    def dial(self, host: str) -> None:
        self.address = host
        session = self.session
        if session.recorder is not None:
            self.bridge.tap = RecordingTap(
                session.recorder,
                self.bridge,
                self.stream.stream_id,
                self.peer_host,
                self.target.port,
            )
        self.attempt = self.core.connect_target(host, self.target.port, self.upstream.protocol())
        self.attempt.addCallbacks(self.connected, self.failed)

    def _audit(self, event: str, **fields: Any) -> None:
        session = self.session
        self.core.log_audit.record(
            event,
            **session.audit_fields(),
            stream=self.stream.stream_id,
            target=f"{self.target.host}:{self.target.port}",
            **fields,
        )

    def connected(self, result: Any) -> Any:
        self._audit("connection_opened", address=self.address)
        return result

    def failed(self, failure: Failure) -> None:
        code, reason = classify_connect_failure(failure, self.target.host, self.target.port)
        log.warn(
            "session {session}: stream {stream_id}: {reason}",
            session=self.session.session_id,
            stream_id=self.stream.stream_id,
            reason=reason,
        )
        self.bridge.connection_failed(code, reason)

    def closed(self, bridge: TcpBridge) -> None:
        counted = self.session.connection_finished(bridge)
        if self.attempt is not None and not self.attempt.called:
            self.attempt.cancel()
        if counted is None:
            return
        sent, received = counted
        reason = bridge.close_reason or "closed"
        log.info(
            "session {session} user {user}: connection {stream_id} to {host}:{port} closed"
            " ({reason}); {sent} bytes to target, {received} bytes from target",
            session=self.session.session_id,
            user=self.session.user,
            stream_id=self.stream.stream_id,
            host=self.target.host,
            port=self.target.port,
            reason=reason,
            sent=sent,
            received=received,
        )
        self._audit(
            "connection_closed" if bridge.connected else "connection_failed",
            reason=reason,
            bytes_to_target=sent,
            bytes_from_target=received,
        )
