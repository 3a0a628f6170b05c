"""The Twisted side of the Jumpoint's SQL Server leg: a stream bridge that runs a L{ServerLeg}.

L{TdsUpstreamHandler} replaces the plain L{TcpBridge} for the streams of mssql
items.  It feeds the console's bytes (the stream) and the server's bytes
(the TCP connection) through the sans-IO L{ServerLeg} and acts on what it
returns: bytes to write on either side, audit events, a reroute, a close.

Ending a connection:

  - during the login the console always gets a clean login failure (ERROR
    18456 and DONE) before the stream is half-closed (FIN), whatever went
    wrong: no credential, a refused target, the server unreachable, TLS,
    the server's refusal, the server closing the connection.  It is written
    only once the console's LOGIN7 has arrived (the client reads a login
    response only after sending its login), so a refusal known early waits;
  - after the login, a leg error (malformed client packet, TLS error) resets
    the stream with the reason; the server closing its connection ends the
    stream in order, as the plain bridge does.

The server is dialled only once the console's whole LOGIN7 is in
(L{TdsUpstreamHandler.when_login_arrived}), and a login that has not completed
within the session's C{login_timeout} (counted from the stream's OPEN) ends
the stream: with a login failure when the LOGIN7 is in (the server is slow),
with a reset C{TIMED_OUT} when it never came; both are audited
(C{sql_login_failed}).

A routing ENVCHANGE in the login response is followed only to a target the
item allows (its own host and port, or one of its C{allowed_routes}: rule
C{allowed_routes}) and the Jumpoint's C{allowed_targets} allow, when there
are any (rule C{allowed_targets}); otherwise the client gets a clean 18456
naming the rule and the refusal is audited (C{sql_login_failed} with the
rule).  To follow it the bridge drops the server connection (not the stream),
dials the new target with a fresh leg and replays the console's LOGIN7 there
(C{sql_routed}); at most L{MAX_REROUTES} times.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from jumpoint.credentials import Credential, CredentialUnavailable, credential_for
from jumpoint.dialing import checked_address, classify_connect_failure
from jumpoint.tds_server_leg import (
    AuditEvent,
    LegOutput,
    ServerLeg,
    TlsContextFactory,
    login_refusal,
    refusal_message,
)
from shared.bridge import PlainRelay, TcpBridge
from shared.codecs.tds.packets import MAX_PACKET_SIZE, PacketParser, TdsError
from shared.codecs.tds.tls_in_tds import client_context
from shared.errors import AccessDenied
from shared.protocol.frames import ErrorCode
from shared.protocol.mux import Stream
from shared.schema import format_duration

if TYPE_CHECKING:
    from collections.abc import Callable

    from jumpoint.session import Session
    from jumpoint.upstream_context import UpstreamContext

MAX_REROUTES = 3
"""How many routing redirects one login may follow."""

log = Logger()


def refuse_stream(stream: Stream, reason: str) -> None:
    """Refuse a stream of an mssql item before it has a bridge (a refusal at admission).

    Once it has one, a refusal goes through its handler (L{TdsUpstreamHandler.refuse},
    or C{connection_failed} for C{allowed_targets}).
    """
    if not stream.closed:
        refuse_login(stream, reason)


def refuse_login(stream: Stream, reason: str) -> None:
    """Refuse a stream of an mssql item with a clean login failure instead of a bare reset.

    The 18456 message goes out once the console's LOGIN7 is in, then the
    stream is half-closed; whatever else the console sends is dropped.
    C{reason} must be safe to show.
    """
    _Refused(stream, refusal_message(reason))


class _LoginWatch:
    """Sees the console's first bytes until the end of its LOGIN7 message (a packet with EOM).

    The client reads a login response only after sending its LOGIN7, and the
    console holds back (or drops) stream bytes that come earlier, so every
    refusal waits for this.
    """

    def __init__(self) -> None:
        self._parser: PacketParser | None = PacketParser(MAX_PACKET_SIZE)
        self.arrived = False

    def feed(self, data: bytes) -> bool:
        """Take console bytes; return whether the LOGIN7 is complete (now or before)."""
        parser = self._parser
        if parser is None:
            return self.arrived
        try:
            packets = parser.feed(data)
        except TdsError:
            packets = None  # not TDS: answer at once, the leg says what was wrong
        if packets is None or any(packet.eom for packet in packets):
            self.arrived = True
            self._parser = None
        return self.arrived


class _Refused:
    """The application of a stream refused before it had a bridge: answers the LOGIN7, ends."""

    def __init__(self, stream: Stream, message: bytes) -> None:
        self.stream = stream
        self.message: bytes | None = message
        self.watch = _LoginWatch()
        stream.attach(self)

    def _answer(self) -> None:
        message, self.message = self.message, None
        if message is not None:
            self.stream.write(message)
        self.stream.end_write()

    def stream_data(self, data: bytes) -> None:
        if self.message is not None and self.watch.feed(data):
            self._answer()

    def stream_ended(self) -> None:
        self._answer()

    def stream_reset(self, code: int, reason: str) -> None:
        self.message = None

    def pause_sending(self) -> None:
        pass

    def resume_sending(self) -> None:
        pass


class TdsUpstreamHandler(PlainRelay):
    """The bridge of one stream of an mssql item (see module docstring).

    The credential is looked up when the bridge is made; when there is none,
    L{refused_before_dial} refuses the login without dialling the server.
    """

    def __init__(
        self,
        stream: Stream,
        core: UpstreamContext,
        session: Session,
        on_closed: Callable[[TcpBridge], None] | None = None,
        *,
        tls_context_factory: TlsContextFactory = client_context,
    ) -> None:
        self.bridge = TcpBridge(stream, on_closed, self)
        self.core = core
        self.session = session
        self.item = session.item
        self.port = self.item.port or 1433
        self._context_factory = tls_context_factory
        self.credential: Credential | None = None
        self._credential_error: str | None = None
        try:
            self.credential = credential_for(core.credentials, self.item)
        except CredentialUnavailable as error:
            self._credential_error = error.message
        self.server_host = self.item.host
        self.leg: ServerLeg | None = None
        if self.credential is not None:
            self.leg = self._new_leg(self.server_host)
        self.reroutes = 0
        self.routed_from = self.server_host
        """The server that sent the latest routing answer (for the audit)."""
        self._route: tuple[str, int] | None = None
        self._route_attempt: Deferred[Any] | None = None
        self._closing = False
        self._server_live = False
        self._held_for_server: list[bytes] = []
        self._watch = _LoginWatch()
        self._held_refusal: bytes | None = None
        self._on_login: Callable[[], None] | None = None
        self._untapped: list[bytes] | None = []
        """Console bytes that came before the dial set the recording tap (the LOGIN7)."""
        self.login_timeout = session.terms.login_timeout if session.terms is not None else None
        self._login_timer: IDelayedCall | None = None
        if self.login_timeout is not None:
            self._login_timer = core.clock.callLater(self.login_timeout, self._login_timed_out)

    def _new_leg(self, host: str) -> ServerLeg:
        assert self.credential is not None
        return ServerLeg(
            self.item,
            self.credential,
            server_name=host,
            tls_context_factory=self._context_factory,
            now=self.core.clock.seconds,
        )

    # -- before the dial ---------------------------------------------------

    def when_login_arrived(self, dial: Callable[[], None]) -> None:
        """Call C{dial} once the console's whole LOGIN7 is in (at once if it is already)."""
        if self._watch.arrived:
            if not (self.bridge.half_close.finished or self._closing):
                dial()
            return
        self._on_login = dial

    def _login_timed_out(self) -> None:
        self._login_timer = None
        leg = self.leg
        if self.bridge.half_close.finished or self._closing or (leg is not None and leg.login_done):
            return
        assert self.login_timeout is not None
        reason = (
            f"the login did not complete within {format_duration(self.login_timeout)}"
            " (login_timeout)"
        )
        log.warn(
            "session {session}: stream {stream_id}: {reason}",
            session=self.session.session_id,
            stream_id=self.bridge.stream.stream_id,
            reason=reason,
        )
        if self._watch.arrived and self._held_refusal is None:
            # The console's LOGIN7 is in: its client waits for a login response.
            self._apply(leg.fail(reason) if leg is not None else login_refusal(reason))
            return
        self._on_login = None
        self._record(AuditEvent("sql_login_failed", {"reason": reason, "server": self.server_host}))
        self._close(reason, fin=False, code=ErrorCode.TIMED_OUT)

    def refused_before_dial(self) -> bool:
        """Refuse the login now when there is no credential (18456, audit); True if refused."""
        if self.leg is not None:
            return False
        reason = self._credential_error or "the Jumpoint has no credential for this item"
        self._apply(login_refusal(reason, server=self.server_host))
        return True

    def refuse(self, reason: str) -> None:
        """A policy refusal (e.g. C{allowed_targets}): 18456 with C{reason}, audit, close."""
        if self.bridge.half_close.finished or self._closing:
            return
        self._apply(login_refusal(reason, server=self.server_host))

    def connection_failed(self, bridge: TcpBridge, code: ErrorCode, reason: str) -> None:
        """The server could not be reached: the console's client gets 18456, not a reset."""
        if self.bridge.half_close.finished or self._closing:
            return
        out = (
            self.leg.fail(f"the Jumpoint cannot reach the server: {reason}")
            if self.leg is not None
            else login_refusal(reason, server=self.server_host)
        )
        self._apply(out)

    # -- the server connection -----------------------------------------

    def connected(self, bridge: TcpBridge) -> None:
        untapped, self._untapped = self._untapped, None
        if self.bridge.half_close.finished:
            return
        if untapped and self.bridge.tap is not None:
            for chunk in untapped:  # the recording starts with the console's LOGIN7
                self.bridge.tap.to_socket(chunk)
        self._server_live = True
        assert self.leg is not None
        self._apply(self.leg.start_output())
        held, self._held_for_server = self._held_for_server, []
        if held and self._server_live and self.bridge.transport is not None:
            self.bridge.stream.write_to_socket(self.bridge.transport, b"".join(held))

    def socket_data(self, bridge: TcpBridge, data: bytes) -> None:
        if (
            self._route is not None
            or self._closing
            or self.bridge.half_close.finished
            or self.leg is None
        ):
            return
        self._apply(self.leg.from_server(data))

    def socket_ended(self, bridge: TcpBridge) -> None:
        if self._route is not None or self._closing or self.bridge.half_close.finished:
            return
        if self.leg is not None and not self.leg.login_done:
            self._apply(self.leg.fail("the server closed the connection during the login"))
            return
        self.bridge.end_stream()

    def socket_lost(self, bridge: TcpBridge, reason: Failure) -> None:
        self._server_live = False
        if self._route is not None and not self.bridge.half_close.finished and not self._closing:
            if self.bridge.stream.closed:
                self.bridge.finish()
                return
            self.bridge.forget_socket()
            self.bridge.half_close.reconnect()
            self._dial_route()
            return
        if self._closing or self.bridge.half_close.finished or self.bridge.stream.closed:
            self.bridge.forget_socket()
            self._finish_when_answered()
            return
        if self.leg is not None and not self.leg.login_done:
            self.bridge.forget_socket()
            text = reason.getErrorMessage()
            self._apply(self.leg.fail(f"the server connection was lost during the login: {text}"))
            return
        self.bridge.close_after_socket(reason)

    # -- the stream (console) side ---------------------------------------

    def stream_data(self, bridge: TcpBridge, data: bytes) -> None:
        if self.bridge.half_close.finished:
            return
        login_in = self._watch.feed(data)
        if self._held_refusal is not None:
            if login_in:
                self._answer_login()
            return
        if self._closing or self.leg is None:
            return
        if self.bridge.tap is not None:
            self.bridge.tap.to_socket(data)
        elif self._untapped is not None:  # bounded by the stream's window until the dial
            self._untapped.append(data)
        self._apply(self.leg.from_console(data))
        dial = self._on_login
        if login_in and dial is not None:
            self._on_login = None
            if not (self._closing or self.bridge.half_close.finished):
                dial()

    def stream_ended(self, bridge: TcpBridge) -> None:
        if self._held_refusal is not None:
            self._held_refusal = None  # the console gave up: nobody waits for the answer
            self.bridge.stream.end_write()
            self._finish_when_answered()
            return
        if self._closing or self.bridge.half_close.finished:
            return
        leg = self.leg
        if leg is None or not leg.login_done or not self._server_live:
            self._close("the console ended the stream during the login", fin=True)
            return
        alert = leg.shutdown()
        if alert and self.bridge.transport is not None:
            self.bridge.stream.write_to_socket(self.bridge.transport, alert)
        self.bridge.end_socket_write()

    def stream_reset(self, bridge: TcpBridge, code: int, reason: str) -> None:
        self._held_refusal = None
        if not self._server_live:
            self.bridge.forget_socket()
        self.bridge.abort_socket(code, reason)

    def abort(self, bridge: TcpBridge, code: ErrorCode, reason: str) -> None:
        self._held_refusal = None
        if not self._server_live:
            self.bridge.forget_socket()
        self.bridge.abort_both(code, reason)

    # -- acting on the leg's output ----------------------------------------

    def _apply(self, out: LegOutput) -> None:
        for event in out.audit:
            self._record(event)
        if self.leg is not None and self.leg.login_done:
            self._cancel_login_timer()
        refusal = (
            out.close is not None
            and bool(out.to_console)
            and not (self.leg is not None and self.leg.login_done)
            and not self._watch.arrived
        )
        if refusal:
            self._held_refusal = out.to_console  # answered when the console's LOGIN7 is in
        elif out.to_console:
            self._to_console(out.to_console)
        if out.to_server:
            if self._server_live and self.bridge.transport is not None:
                self.bridge.stream.write_to_socket(self.bridge.transport, out.to_server)
            else:
                self._held_for_server.append(out.to_server)
        if out.close is not None:
            logged_in = self.leg is not None and self.leg.login_done
            self._close(out.close, fin=bool(out.to_console) or not logged_in)
        elif out.reconnect is not None:
            self._reroute(*out.reconnect)

    def _to_console(self, data: bytes) -> None:
        if self.bridge.tap is not None:
            self.bridge.tap.from_socket(data)
        self.bridge.stream.write(data)

    def _answer_login(self) -> None:
        """Write the held refusal now that the console's LOGIN7 is in, then FIN."""
        held, self._held_refusal = self._held_refusal, None
        if held is not None:
            self._to_console(held)
        self.bridge.stream.end_write()
        self._finish_when_answered()

    def _finish_when_answered(self) -> None:
        """Finish once the server side is gone and no refusal waits for the console."""
        if self._held_refusal is None and not self._server_live:
            self.bridge.finish()

    def _record(self, event: AuditEvent) -> None:
        self.core.log_audit.record(
            event.kind,
            **self.session.audit_fields(),
            stream=self.bridge.stream.stream_id,
            **event.fields,
        )

    def _close(self, reason: str, *, fin: bool, code: ErrorCode = ErrorCode.PROTOCOL_ERROR) -> None:
        """End both sides: FIN after what was written (or a reset), close the server side."""
        if self._closing or self.bridge.half_close.finished:
            return
        self._closing = True
        self._on_login = None
        self._cancel_login_timer()
        self.bridge.close_reason = reason
        if fin:
            if self._held_refusal is None:
                self.bridge.stream.end_write()
        else:
            self._held_refusal = None
            self.bridge.reset_code = code
            self.bridge.stream.reset(code, reason)
        attempt, self._route_attempt = self._route_attempt, None
        if attempt is not None and not attempt.called:
            attempt.cancel()
        transport = self.bridge.transport
        if self._server_live and transport is not None:
            self.bridge.stream.flush_socket(transport)
            transport.unregisterProducer()  # type: ignore[attr-defined]
            transport.loseConnection()
        else:
            self.bridge.forget_socket()
            self._finish_when_answered()

    # -- routing ----------------------------------------------------------

    def _reroute(self, host: str, port: int) -> None:
        leg = self.leg
        assert leg is not None
        if self.reroutes >= MAX_REROUTES:
            self._apply(
                login_refusal(
                    f"the server redirected the login more than {MAX_REROUTES} times",
                    server=host,
                )
            )
            return
        if not self.item.allows_route(host, port):
            allowed = ", ".join(self.item.allowed_routes) or "none"
            self._refuse_route(
                host,
                port,
                AccessDenied(
                    f"the server redirected the login to {host}:{port}, which item"
                    f" {self.item.name!r} does not allow (its own host and port, and its"
                    f" allowed_routes: {allowed})",
                    rule="allowed_routes",
                ),
            )
            return
        self.reroutes += 1
        self._route = (host, port)
        transport = self.bridge.transport
        if self._server_live and transport is not None:
            self.bridge.stream.flush_socket(transport)
            transport.unregisterProducer()  # type: ignore[attr-defined]
            transport.loseConnection()  # connectionLost dials the new server
        else:
            self._dial_route()

    def _dial_route(self) -> None:
        route, self._route = self._route, None
        assert route is not None and self.leg is not None
        host, port = route
        replay = self.leg.console_login
        self.routed_from = self.server_host
        self.server_host, self.port = host, port
        self.leg = self._new_leg(host)
        if replay:
            self._apply(self.leg.from_console(replay))
        log.info(
            "session {session}: stream {stream_id}: the server routed the login to {host}:{port}",
            session=self.session.session_id,
            stream_id=self.bridge.stream.stream_id,
            host=host,
            port=port,
        )
        Deferred.fromCoroutine(self._check_then_connect(host, port))

    async def _check_then_connect(self, host: str, port: int) -> None:
        """allowed_targets and its built-in default (loopback, link-local, the Jumpoint's
        own listener only when listed), also without an allow-list."""
        try:
            # unchecked only with a core without a resolver (tests)
            address, _ = await checked_address(self.core, host, port)
        except AccessDenied as denial:
            self._refuse_route(host, port, denial)
            return
        except Exception:
            self.refuse(f"the server redirected the login to {host}, which cannot be resolved")
            return
        self._follow(host, port, address)

    def _follow(self, host: str, port: int, address: str) -> None:
        """The route passed every check: audit it and dial C{address}."""
        if self.bridge.half_close.finished or self._closing:
            return
        self._record(AuditEvent("sql_routed", {"server": self.routed_from, "to": f"{host}:{port}"}))
        self._connect(address, port)

    def _refuse_route(self, host: str, port: int, denial: AccessDenied) -> None:
        """A route a rule refuses: 18456 naming the rule, audited with it, never dialled."""
        log.warn(
            "session {session}: stream {stream_id}: refused the server's route to"
            " {host}:{port}: {reason}",
            session=self.session.session_id,
            stream_id=self.bridge.stream.stream_id,
            host=host,
            port=port,
            reason=denial.message,
        )
        if self.bridge.half_close.finished or self._closing:
            return
        self._apply(
            login_refusal(
                denial.message,
                rule=denial.rule,
                server=self.routed_from,
                to=f"{host}:{port}",
            )
        )

    def _connect(self, address: str, port: int) -> None:
        if self.bridge.half_close.finished or self._closing:
            return
        attempt = self.core.connect_target(address, port, self.bridge)
        self._route_attempt = attempt

        def failed(failure: Failure) -> None:
            if self.bridge.half_close.finished or self._closing or self.leg is None:
                return
            _, reason = classify_connect_failure(failure, address, port)
            self._apply(self.leg.fail(f"the Jumpoint cannot reach the routed server: {reason}"))

        attempt.addErrback(failed)

    def _cancel_login_timer(self) -> None:
        timer, self._login_timer = self._login_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def ended(self, bridge: TcpBridge) -> None:
        self._on_login = None
        self._untapped = None
        self._cancel_login_timer()
        attempt, self._route_attempt = self._route_attempt, None
        if attempt is not None and not attempt.called:
            attempt.cancel()
