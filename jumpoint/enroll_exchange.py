"""The Jumpoint's side of C{jumpoint-enroll/1}: redeem a one-time token for a certificate.

L{EnrollmentDesk} takes every decision: it checks the signing request and the
token (L{jumpoint.enrollment_tokens}), signs the certificate and spends the
token in the transaction of its C{user_enrolled} audit row, and records every
refusal as C{enrollment_refused} with its rule.  L{EnrollExchange} is the
thin per-connection part: it collects one bounded request line, hands it to
the desk, writes the one answer line and closes.  The connection's TLS
handshake deadline (C{limits.handshake_timeout}) also bounds the exchange,
and it stays in the table of pending handshakes until it closes, so
enrollment attempts share the pre-authentication caps.
"""

from __future__ import annotations

import datetime
from typing import Any, Protocol

from cryptography import x509
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from jumpoint import enrollment_tokens as tokens
from jumpoint.audit import AuditLog
from jumpoint.db_thread import DatabaseWriter, InlineDatabase
from jumpoint.state import StateDatabase
from shared import pki
from shared.enrollment import rfc3339
from shared.errors import EnrollmentRefused, InternalError, InvalidRequest, JumpError
from shared.protocol.enroll import (
    EnrollRequest,
    LineBuffer,
    LineTooLong,
    encode_answer,
    parse_request,
)

log = Logger()

RULE_MALFORMED = "enrollment.request"


class _Transport(Protocol):
    def write(self, data: bytes) -> None: ...

    def loseConnection(self) -> None: ...


class EnrollmentDesk:
    """Redeems enrollment tokens for the daemon.

    @param ca: the CA that signs client certificates, or C{None} when this
        Jumpoint cannot read its CA key (then every request is refused with
        C{disabled}, saying why).
    """

    def __init__(
        self,
        ca: pki.KeyPair | None,
        database: StateDatabase,
        audit: AuditLog,
        clock: IReactorTime,
        disabled_because: str | None = None,
        reader: DatabaseWriter | None = None,
    ) -> None:
        self.ca = ca
        self.database = database
        self.reader: DatabaseWriter = reader or InlineDatabase(database.connection)
        """Where the token is first read (off the reactor thread on PostgreSQL)."""
        self.audit = audit
        self.clock = clock
        self.disabled_because = disabled_because or "it cannot read its CA key"

    def _now_text(self) -> str:
        return rfc3339(datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.UTC))

    def refused(self, error: JumpError, peer: str, user: str | None = None) -> dict[str, Any]:
        """Audit a refusal and build its answer."""
        rule = getattr(error, "rule", None)
        self.audit.record(
            "enrollment_refused", user=user, rule=rule, reason=error.message, peer=peer
        )
        log.warn(
            "refused an enrollment from {peer} (user {user}): {reason}",
            peer=peer,
            user=user,
            reason=error.message,
        )
        return {"ok": False, **error.to_json(), "server_time": self._now_text()}

    def redeem(self, request: EnrollRequest, peer: str) -> Deferred[dict[str, Any]]:
        """The answer to one request (never fails: refusals are answers too)."""
        now = self.clock.seconds()
        hashed = tokens.token_hash(request.token)

        def unreadable(failure: Failure) -> dict[str, Any]:  # locked or damaged file, DB away
            log.error("cannot read the enrollment tokens: {error}", error=failure.getErrorMessage())
            return self.refused(
                InternalError("the Jumpoint cannot read its state now; try again"), peer
            )

        read = self.reader.submit(lambda db: tokens.look_up(db, hashed))
        return read.addCallbacks(
            lambda token: self._redeem(request, peer, hashed, now, token), unreadable
        )

    def _redeem(
        self,
        request: EnrollRequest,
        peer: str,
        hashed: str,
        now: float,
        token: tokens.Token | None,
    ) -> Deferred[dict[str, Any]]:
        user = token.user if token is not None else None
        try:
            if self.ca is None:
                raise EnrollmentRefused(
                    f"this Jumpoint does not enroll consoles online: {self.disabled_because}",
                    hint="ask your Jumpoint administrator",
                    rule=tokens.RULE_DISABLED,
                )
            tokens.check(token, now)
            csr = pki.load_signing_request(request.csr)
        except EnrollmentRefused as refusal:
            return succeed(self.refused(refusal, peer, user))
        except pki.BadSigningRequest as error:
            bad = EnrollmentRefused(str(error), rule=tokens.RULE_REQUEST)
            return succeed(self.refused(bad, peer, user))
        ca = self.ca

        def sign(name: str, group: str, lifetime: datetime.timedelta) -> x509.Certificate:
            return pki.sign_client_request(ca, csr, name, group, lifetime)

        def issued_fields(issued: tokens.Issued) -> dict[str, Any]:
            return {
                "groups": list(issued.groups),
                "serial": issued.serial,
                "not_after": issued.not_after,
            }

        recorded = self.audit.record(
            "user_enrolled",
            user=user,
            durable=True,
            apply=lambda db: tokens.redeem(db, hashed, now, peer, sign),
            fields_from=issued_fields,
            peer=peer,
            client=request.client,
        )

        def answered(issued: tokens.Issued) -> dict[str, Any]:
            log.info(
                "enrolled user {user} from {peer} (certificate {serial})",
                user=issued.user,
                peer=peer,
                serial=issued.serial,
            )
            return {
                "ok": True,
                "user": issued.user,
                "groups": list(issued.groups),
                "certificate": pki.certificate_pem(issued.certificate).decode("ascii"),
                "serial": issued.serial,
                "not_after": issued.not_after,
                "server_time": self._now_text(),
            }

        def failed(failure: Failure) -> dict[str, Any]:
            error = failure.value
            if not isinstance(error, JumpError):
                log.failure("enrollment failed", failure)
                error = InternalError("the Jumpoint could not enroll this console; try again")
            return self.refused(error, peer, user)

        return recorded.addCallbacks(answered, failed)


class EnrollExchange:
    """One console's enrollment connection: a request line in, an answer line out."""

    READING, REDEEMING, DONE = "reading", "redeeming", "done"

    def __init__(self, desk: EnrollmentDesk, peer: str, transport: _Transport) -> None:
        self.desk = desk
        self.peer = peer
        self.transport = transport
        self.state = self.READING
        self._buffer = LineBuffer()

    def data_received(self, data: bytes) -> None:
        if self.state != self.READING:
            return  # one request per connection; anything after it is ignored
        try:
            line = self._buffer.feed(data)
            if line is None:
                return
            request = parse_request(line)
        except (LineTooLong, InvalidRequest) as error:
            message = str(error) if isinstance(error, LineTooLong) else error.message
            refusal = EnrollmentRefused(
                f"a malformed enrollment request: {message}", rule=RULE_MALFORMED
            )
            self._answer(self.desk.refused(refusal, self.peer))
            return
        self.state = self.REDEEMING
        self.desk.redeem(request, self.peer).addCallback(self._answer)

    def _answer(self, fields: dict[str, Any]) -> None:
        if self.state == self.DONE:
            return  # the console went away meanwhile
        self.state = self.DONE
        self.transport.write(encode_answer(fields))
        self.transport.loseConnection()

    def connection_lost(self) -> None:
        self.state = self.DONE
