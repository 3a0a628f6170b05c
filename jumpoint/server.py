"""The Jumpoint's side of the channel: the daemon's shared state and one console's connection.

L{JumpointCore} is the daemon's shared state (configuration, state
database, items, approvals, audit log, live channels); L{JumpointChannel} is
one console's connection.  After the TLS handshake the channel maps the
client certificate to an active user, closes the channel when the user is
revoked or the certificate expires, and ends the session with it.  A channel
lost without the console ending its session (L{DETACHING_CODES}) leaves the
session detached and resumable (L{jumpoint.detached_sessions}).  The
console's control requests are answered by L{jumpoint.handlers} (the
channel only checks the envelope and sends the reply), the streams it opens
are admitted, dialled and audited by L{jumpoint.streams}.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from jumpoint import kinds
from jumpoint.approvals import ApprovalStore
from jumpoint.audit import AuditLog, state_unavailable
from jumpoint.config import JumpointConfig
from jumpoint.credentials import CredentialStore
from jumpoint.db_thread import DatabaseWriter, InlineDatabase
from jumpoint.detached_sessions import DetachedSessions
from jumpoint.dialing import ConnectTarget, Resolve, no_resolver
from jumpoint.enroll_exchange import EnrollExchange, EnrollmentDesk
from jumpoint.handlers.dispatch import handle
from jumpoint.handshakes import PendingHandshakes
from jumpoint.item_store import Catalog, ItemStore
from jumpoint.kinds.base import KindService
from jumpoint.notify import Notifier
from jumpoint.policy import Grant
from jumpoint.session import Session
from jumpoint.session_lifecycle import RecorderFactory, session_ended
from jumpoint.state import StateDatabase, User, data_version, user_for_certificate
from jumpoint.store.change_notice import CERTIFICATES, USERS, Change
from jumpoint.store.connection import POSTGRESQL, Connection
from jumpoint.store.error_kinds import UNAVAILABLE, classify
from jumpoint.streams import admit_stream
from jumpoint.udp_flows import OpenUdp
from shared.enrollment import rfc3339
from shared.errors import InternalError, JumpError, ProtocolViolation
from shared.pki import KeyPair
from shared.protocol import control
from shared.protocol.channel import ChannelEvent, ChannelProtocol
from shared.protocol.enroll import ENROLL_ALPN
from shared.protocol.frames import PROTOCOL_VERSION, ErrorCode, describe_code
from shared.protocol.mux import MuxSettings, Stream
from shared.protocol.tls import peer_certificate_serial


def peer_certificate_expiry(transport: object) -> float | None:
    """When the peer's certificate of a TLS transport stops being valid (POSIX time)."""
    get = getattr(transport, "getPeerCertificate", None)
    certificate = get() if get is not None else None
    if certificate is None:
        return None
    return float(certificate.to_cryptography().not_valid_after_utc.timestamp())


log = Logger()

WAITING_CONTROLS = 8
"""Control messages a console may send while its certificate's user is being read."""
DETACHING_CODES = frozenset({ErrorCode.CANCEL, ErrorCode.KEEPALIVE_TIMEOUT, ErrorCode.RESTARTING})
"""The channel closes that keep its session resumable (detached): the transport was lost, the
link fell silent, or the Jumpoint restarts.  Any other close (the console's GOAWAY, its close
request, a protocol error) ends the session now."""

STREAMS_OVER_CAP = 64
"""Streams the mux accepts beyond the session cap, so that the session refuses and audits
them (C{max_connections}); only a console that ignores its refusals meets the mux's limit."""


@dataclass
class JumpointCore:
    """State shared by every channel of one running Jumpoint."""

    config: JumpointConfig
    database: StateDatabase
    clock: IReactorTime
    connect_target: ConnectTarget
    resolve: Resolve = no_resolver
    audit: AuditLog | None = None
    notifier: Notifier | None = None
    new_recorder: RecorderFactory | None = None
    open_udp: OpenUdp | None = None
    """Opens the UDP sockets of UDP flows (L{jumpoint.udp_flows.reactor_udp}; none: no UDP)."""
    channels: set[JumpointChannel] = field(default_factory=set)
    credentials: CredentialStore | None = None
    """The logins injected into mssql connections (built from the config when not given)."""
    ca: KeyPair | None = None
    """The CA that signs the certificates of consoles enrolling online (none: refused)."""
    ca_unavailable: str | None = None
    """Why L{ca} is missing, for the consoles that try to enroll."""
    enrollment: EnrollmentDesk = field(init=False)
    catalog: Catalog = field(init=False)
    approvals: ApprovalStore = field(init=False)
    handshakes: PendingHandshakes = field(init=False)
    """Consoles connected but not yet through their TLS handshake (capped)."""
    kind_services: dict[str, KindService] = field(init=False)
    """Each kind's state for the Jumpoint's life (the network tunnels' interface), by kind."""
    reader: DatabaseWriter | None = None
    """Runs the daemon's reads: inline on SQLite, on reader threads on PostgreSQL."""
    detached: DetachedSessions = field(init=False)
    """The sessions whose channel was lost, resumable for C{limits.reconnect_grace}."""
    recheck_session: Callable[[JumpointChannel, JumpointConfig], object] | None = None
    """Set by the reloader (L{jumpoint.reload_sessions}): decides again a session set up after
    a reload replaced the configuration it was decided with."""
    _data_version: int | None = None
    _checking_revocations: bool = False
    _recheck_pending: bool = False

    def __post_init__(self) -> None:
        if self.audit is None:
            self.audit = AuditLog(self.database, None, self.clock)
        if self.credentials is None:
            self.credentials = CredentialStore(self.config)
        if self.reader is None:
            self.reader = InlineDatabase(self.database.connection)
        self.catalog = Catalog(self.config.items, ItemStore(self.database), self.reader)
        self.approvals = ApprovalStore(self.database, self.reader)
        self.enrollment = EnrollmentDesk(
            self.ca, self.database, self.audit, self.clock, self.ca_unavailable, self.reader
        )
        self.kind_services = kinds.make_services(self.config, self.clock)
        self.detached = DetachedSessions(self)
        self.handshakes = PendingHandshakes(
            self.clock,
            self.config.max_pending_handshakes,
            self.config.max_pending_handshakes_per_address,
        )

    @property
    def resolves_names(self) -> bool:
        """Whether host names are resolved here (the daemon's resolver), so every address
        dialled is one that was checked; a core built without one (tests) dials names as
        given when there is no allow-list."""
        return self.resolve is not no_resolver

    @property
    def log_audit(self) -> AuditLog:
        assert self.audit is not None
        return self.audit

    def mux_settings(self) -> MuxSettings:
        limits = self.config.limits
        return MuxSettings(
            # room above the session's cap: the session refuses (and audits) the excess
            max_streams=limits.max_connections_per_session + STREAMS_OVER_CAP,
            keepalive_interval=limits.keepalive_interval,
            keepalive_timeout=limits.keepalive_timeout,
        )

    def apply_config(self, config: JumpointConfig) -> None:
        """Swap in a reloaded configuration (L{jumpoint.reload}): new sessions use it.

        What is built from it is rebuilt with it, in this one reactor turn: the
        catalog of items and the credentials.  What a reload cannot change keeps
        its running value in C{config} (L{jumpoint.config_diff.effective}).
        """
        self.config = config
        self.catalog = Catalog(config.items, self.catalog.store, self.reader)
        self.credentials = CredentialStore(config)

    def grant_for(self, user: User) -> Grant:
        return Grant.of(user.name, user.all_groups, self.config.groups)

    @property
    def background_reader(self) -> DatabaseWriter:
        """Where the revocation look-ups run: SQLite's database thread, PostgreSQL's readers."""
        assert self.reader is not None
        return self.reader if self.database.backend == POSTGRESQL else self.log_audit.writer

    def check_revocations(self) -> None:
        """SQLite: look at the data version (on the database thread); re-check if it moved."""
        last = self._data_version

        def polled(version: int) -> None:
            self._data_version = version
            if version != last:
                self.recheck_users()

        self.background_reader.submit(data_version).addCallbacks(polled, self._check_failed)

    def changed(self, change: Change | None) -> None:
        """The change feed's subscriber: a change of users or certificates re-checks them."""
        if change is None or change.table in (USERS, CERTIFICATES):
            self.recheck_users()

    def recheck_users(self) -> None:
        """Close the channels of users revoked since; refresh the others' groups.

        The look-ups run off the reactor thread, one check at a time; a
        change announced while one runs starts another when it is done.
        """
        if self._checking_revocations:
            self._recheck_pending = True
            return
        self._checking_revocations = True
        self._recheck_pending = False
        serials = {c.certificate_serial for c in self.channels if c.certificate_serial}

        def look_up(db: Connection) -> dict[str, tuple[User | None, str]]:
            return {serial: user_for_certificate(db, serial) for serial in serials}

        def checked(found: dict[str, tuple[User | None, str]]) -> None:
            self._checked()
            for channel in list(self.channels):
                if channel.certificate_serial not in found:
                    continue
                user, why = found[channel.certificate_serial]
                if user is None:
                    channel.revoke(why)
                else:
                    channel.user = user
                    channel.provisional = False

        self.background_reader.submit(look_up).addCallbacks(checked, self._check_failed)

    def _checked(self) -> None:
        self._checking_revocations = False
        if self._recheck_pending:
            self.recheck_users()

    def _check_failed(self, failure: Failure) -> None:
        log.warn("cannot check for revoked users: {error}", error=failure.getErrorMessage())
        self._checked()

    def sessions(self) -> list[Session]:
        return [c.session for c in self.channels if c.session is not None]

    def find_session(self, session_id: str) -> JumpointChannel | None:
        for channel in self.channels:
            if channel.session is not None and channel.session.session_id == session_id:
                return channel
        return None


class JumpointChannel(ChannelProtocol):
    """One console's connection to the Jumpoint."""

    is_client = False

    def __init__(self, core: JumpointCore) -> None:
        super().__init__(core.clock, core.mux_settings(), core.config.limits.handshake_timeout)
        self.core = core
        self.user: User | None = None
        self.certificate_serial: str | None = None
        self.session: Session | None = None
        self.opening = False
        self.peer = "?"
        self.peer_host = "0.0.0.0"
        self.close_reason: str | None = None
        self.enrollment: EnrollExchange | None = None
        """Set when the console came to enroll (ALPN C{jumpoint-enroll/1}), not for a channel."""
        self._expiry: IDelayedCall | None = None
        self._identifying = False
        """The certificate's user is being read (the console's messages wait meanwhile)."""
        self._waiting_controls: list[dict[str, Any]] = []
        self._lost = False
        self.provisional = False
        """Started while the state database was unreachable: every request is refused."""

    # -- lifecycle ---------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        assert self.transport is not None
        peer = self.transport.getPeer()
        self.peer_host = str(getattr(peer, "host", "0.0.0.0"))
        self.peer = f"{self.peer_host}:{getattr(peer, 'port', '?')}"
        self.core.handshakes.started(self, self.peer_host, self.transport.abortConnection)  # type: ignore[attr-defined]

    def handshakeCompleted(self) -> None:
        if getattr(self.transport, "negotiatedProtocol", None) == ENROLL_ALPN:
            # No certificate on this protocol: one enrollment exchange, still under the
            # handshake deadline and in the table of pending handshakes until it closes.
            assert self.transport is not None
            self.enrollment = EnrollExchange(self.core.enrollment, self.peer, self.transport)
            return
        super().handshakeCompleted()

    def dataReceived(self, data: bytes) -> None:
        if self.enrollment is not None:
            self.enrollment.data_received(data)
            return
        super().dataReceived(data)

    def handshake_done(self) -> None:
        self.core.handshakes.completed(self)

    def handshake_failed(self, peer: str, reason: str) -> None:
        if self.enrollment is not None:
            self.enrollment.connection_lost()
            self.core.handshakes.completed(self)
            if self.handshake_timed_out:
                log.warn("an enrollment from {peer} did not finish in time", peer=peer)
            return
        self.core.handshakes.failed(self, peer, reason, timed_out=self.handshake_timed_out)

    def channel_started(self) -> None:
        assert self.mux is not None
        identity = peer_certificate_serial(self.transport)
        if identity is None:
            # Defensive fallback: server_options requires a client certificate, so a
            # console without one fails the TLS handshake (alert "certificate required")
            # and never gets here (docs/protocol.md, "Connection without a client certificate").
            self.hello.fire(ChannelEvent.REFUSED)
            self.mux.go_away(ErrorCode.DENIED, "no client certificate")
            return
        serial, common_name = identity
        self.certificate_serial = serial
        self._identifying = True
        assert self.core.reader is not None  # read off the reactor thread on PostgreSQL
        self.core.reader.submit(lambda db: user_for_certificate(db, serial)).addCallbacks(
            self._identified,
            self._not_identified,
            callbackArgs=(serial, common_name),
            errbackArgs=(common_name,),
        )

    def _identified(self, found: tuple[User | None, str], serial: str, common_name: str) -> None:
        """The certificate's user is known: refuse the channel, or start it."""
        self._identifying = False
        waiting, self._waiting_controls = self._waiting_controls, []
        if self._lost or self.mux is None:
            return
        user, why = found
        if user is None:
            log.warn(
                "refused console {peer} ({name}, certificate {serial}): {reason}",
                peer=self.peer,
                name=common_name,
                serial=serial,
                reason=why,
            )
            self.core.log_audit.record(
                "console_refused", user=common_name, peer=self.peer, reason=why
            )
            self.hello.fire(ChannelEvent.REFUSED)
            self.mux.go_away(ErrorCode.REVOKED, why)
            return
        self.hello.fire(ChannelEvent.STARTED)
        self.user = user
        self.core.channels.add(self)
        log.info("console {peer} connected as user {user}", peer=self.peer, user=user.name)
        not_after = peer_certificate_expiry(self.transport)
        if not_after is not None:
            self._expiry = self.core.clock.callLater(
                max(0.0, not_after - self.core.clock.seconds()),
                self._certificate_expired,
                not_after,
            )
        for message in waiting:
            self.control_received(message)

    def _not_identified(self, failure: Failure, common_name: str) -> None:
        """The state database could not say who this is: fail closed.

        Unreachable (PostgreSQL down): the channel starts I{provisional},
        named by its certificate only, and refuses every request with
        C{state_unavailable} until the re-check after the database's return
        confirms the user (or revokes the channel).  Any other error: refused.
        """
        self._identifying = False
        waiting, self._waiting_controls = self._waiting_controls, []
        log.error(
            "console {peer}: cannot read the state database: {error}",
            peer=self.peer,
            error=failure.getErrorMessage(),
        )
        if self._lost or self.mux is None:
            return
        error = failure.value
        if error is None or classify(error) != UNAVAILABLE:
            self.hello.fire(ChannelEvent.REFUSED)
            self.mux.go_away(
                ErrorCode.INTERNAL_ERROR, "the Jumpoint cannot read its state database now"
            )
            return
        self.provisional = True
        self.hello.fire(ChannelEvent.STARTED)
        self.user = User(common_name, "", "", None, ())
        self.core.channels.add(self)
        for message in waiting:
            self.control_received(message)

    def _certificate_expired(self, not_after: float) -> None:
        """The console's certificate expired while its channel was open: end it."""
        self._expiry = None
        assert self.user is not None and self.mux is not None
        when = rfc3339(datetime.datetime.fromtimestamp(not_after, datetime.UTC))
        why = f"the console's certificate expired at {when}"
        log.warn("closing the channel of {user}: {reason}", user=self.user.name, reason=why)
        self.core.log_audit.record(
            "certificate_expired",
            user=self.user.name,
            session=self.session.session_id if self.session is not None else None,
            item=self.session.item.name if self.session is not None else None,
            serial=self.certificate_serial,
            not_after=when,
            peer=self.peer,
        )
        self.close_session("certificate_expired", why, ErrorCode.REVOKED)

    def mux_closing(self, code: int, reason: str, by_peer: bool) -> None:
        self.close_reason = reason if by_peer else f"{describe_code(code)}: {reason}"
        if code in DETACHING_CODES:
            self.detach_session(self.close_reason, describe_code(code))
        else:
            self.end_session(self.close_reason, "connection_closed")

    def detach_session(self, reason: str, code: str) -> None:
        """The channel is lost, not ended by the console: keep its session resumable."""
        session, self.session = self.session, None
        if session is None or session.closed:
            return
        self.core.detached.detach(session, reason, code)

    def channel_lost(self, reason: Failure) -> None:
        self._lost = True
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        self.core.channels.discard(self)
        self.detach_session("connection lost", "connection_lost")
        if self.user is not None:
            log.info(
                "console {peer} (user {user}) disconnected: {reason}",
                peer=self.peer,
                user=self.user.name,
                reason=self.close_reason or reason.getErrorMessage(),
            )

    def revoke(self, why: str) -> None:
        """The user was revoked: close the session and the connection."""
        log.warn(
            "closing the channel of {user}: {reason}", user=self.user and self.user.name, reason=why
        )
        self.close_session("revoked", why, ErrorCode.REVOKED)

    def close_session(
        self, code: str, reason: str, error: ErrorCode, rule: str | None = None
    ) -> None:
        """The Jumpoint ends the session: tell the console why, then drop the connection."""
        assert self.mux is not None
        if self.session is not None and not self.mux.closing:
            self.mux.send_control(
                {
                    "type": control.SESSION_CLOSED,
                    "session": self.session.session_id,
                    "code": code,
                    "reason": reason,
                }
            )
        self.end_session(reason, code, rule)
        self.mux.go_away(error, reason)

    def session_expired(self, session: Session, code: str, reason: str) -> None:
        log.info(
            "session {session} of user {user}: closing: {reason}",
            session=session.session_id,
            user=session.user,
            reason=reason,
        )
        self.close_session(code, reason, ErrorCode.SESSION_CLOSED)

    def end_session(self, reason: str, code: str = "closed", rule: str | None = None) -> None:
        session, self.session = self.session, None
        if session is None or session.closed:
            return
        session.closed = True
        session.close_reason = reason
        session.stop_timers()
        for bridge in list(session.active):
            bridge.abort(ErrorCode.SESSION_CLOSED, f"the session was closed: {reason}")
        for flow in list(session.flows.values()):
            flow.close(f"the session was closed: {reason}", tell_console=False)
        session_ended(self.core, session, reason, code, rule)

    # -- control requests ------------------------------------------------

    def control_received(self, message: dict[str, Any]) -> None:
        assert self.mux is not None
        if self._identifying:  # replayed once the user is known (a few: the console waits)
            if len(self._waiting_controls) >= WAITING_CONTROLS:
                self.mux.go_away(ErrorCode.PROTOCOL_ERROR, "too many messages before welcome")
                return
            self._waiting_controls.append(message)
            return
        if self.user is None:
            return
        try:
            kind = control.check_envelope(message, control.CONSOLE_MESSAGES)
            if kind != control.HELLO:
                self.peer_event(ChannelEvent.MESSAGE, f"{kind!r} before hello")
            else:
                control.check_message(message, {control.HELLO})  # no id: no error reply
                self._hello(message)
                return
        except ProtocolViolation as violation:
            log.warn("console {peer}: {reason}", peer=self.peer, reason=violation.message)
            self.mux.go_away(ErrorCode.PROTOCOL_ERROR, violation.message)
            return
        request_id = message["id"]
        try:
            control.check_fields(kind, message)  # a bad field refuses this request only
            if self.provisional:  # its user is not confirmed: fail closed
                self._refuse_provisional(kind, message)
            outcome = handle(self, kind, message)
        except JumpError as refusal:
            self._refused(kind, request_id, refusal)
            return
        except Exception:  # a bug: this request fails, the connection stays
            log.failure("request {request} failed", request=kind)
            self._refused(kind, request_id, InternalError("the Jumpoint failed the request"))
            return
        if isinstance(outcome, dict):
            self._reply(request_id, outcome)
            return
        finished = Deferred.fromCoroutine(outcome)

        def failed(failure: Failure) -> None:
            if isinstance(failure.value, JumpError):
                self._refused(kind, request_id, failure.value)
            else:
                log.failure("request {request} failed", failure, request=kind)
                self._refused(kind, request_id, InternalError("the Jumpoint failed the request"))

        finished.addCallbacks(lambda result: self._reply(request_id, result), failed)

    def _refuse_provisional(self, kind: str, message: dict[str, Any]) -> None:
        """Refuse (and record) a request of a channel whose user is not confirmed yet."""
        assert self.user is not None
        item = message.get("item")
        item = item if isinstance(item, str) else None
        audit = self.core.log_audit
        audit.refuse_if_unavailable(kind, self.user.name, item)  # records and raises ...
        refusal = state_unavailable()  # ... unless the audit log has not failed yet
        audit.record(
            "request_refused",
            user=self.user.name,
            item=item,
            action=kind,
            code=refusal.code,
            reason=refusal.message,
        )
        raise refusal

    def _reply(self, request_id: int, result: dict[str, Any]) -> None:
        if self.mux is not None and not self.mux.closing:
            self.mux.send_control({"type": control.RESULT, "id": request_id, **result})

    def _refused(self, kind: str, request_id: int, refusal: JumpError) -> None:
        assert self.user is not None
        log.warn(
            "refused {request} from user {user} ({peer}): {reason}",
            request=kind,
            user=self.user.name,
            peer=self.peer,
            reason=refusal.message,
        )
        if self.mux is not None and not self.mux.closing:
            self.mux.send_control(
                {"type": control.ERROR, "id": request_id, "error": refusal.to_json()}
            )

    def _hello(self, message: dict[str, Any]) -> None:
        assert self.mux is not None and self.user is not None
        if not self.hello.allows(ChannelEvent.HELLO):
            raise ProtocolViolation("second hello")
        if message["version"] != PROTOCOL_VERSION:
            raise ProtocolViolation(f"unsupported protocol version {message['version']}")
        self.hello.fire(ChannelEvent.HELLO)
        self.mux.send_control(
            {
                "type": control.WELCOME,
                "version": PROTOCOL_VERSION,
                "jumpoint": self.core.config.name,
                "user": self.user.name,
                "group": self.user.group,
                "groups": list(self.user.all_groups),
                "keepalive_interval": self.settings.keepalive_interval,
                "keepalive_timeout": self.settings.keepalive_timeout,
            }
        )
        self.mux.establish()
        self.mux.start_keepalive()

    # -- streams -----------------------------------------------------------

    def stream_requested(self, stream: Stream, payload: bytes) -> None:
        session = self.session
        if session is None:
            stream.reset(ErrorCode.DENIED, "no session is open on this connection")
            return
        groups = self.user.all_groups if self.user is not None else ()
        admit_stream(self.core, session, stream, payload, peer_host=self.peer_host, groups=groups)


class JumpointFactory(Factory):
    """Builds a L{JumpointChannel} for every accepted TLS connection."""

    def __init__(self, core: JumpointCore) -> None:
        self.core = core

    def buildProtocol(self, addr: Any) -> JumpointChannel:
        return JumpointChannel(self.core)
