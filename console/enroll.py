"""C{jump enroll}: redeem an enrollment file's one-time token for a certificate.

The console makes its private key here (it never leaves this machine),
connects to the Jumpoint named in the file over TLS 1.3 with the ALPN name
C{jumpoint-enroll/1}, checks the Jumpoint's certificate against the file's
CA and server name, sends the token and a signing request, and stores the
certificate it gets as a profile (L{console.profiles.save_profile}).  The
Jumpoint decides and audits (L{jumpoint.enroll_exchange}); a refusal is an
L{EnrollmentRefused} with its rule.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IDelayedCall, IHandshakeListener, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from console import __version__
from console.channel import CONNECT_TIMEOUT, connect_failure
from console.profiles import Profile, check_profile_name, save_profile
from shared import pki
from shared.enrollment import Enrollment, rfc3339
from shared.errors import (
    CertificateRejected,
    EnrollmentRefused,
    JumpError,
    JumpointUnreachable,
    ProtocolViolation,
    error_from_json,
)
from shared.protocol.enroll import (
    ENROLL_ALPN,
    Certificate,
    LineBuffer,
    LineTooLong,
    encode_request,
    parse_answer,
)
from shared.protocol.tls import describe_tls_failure, enroll_client_options, wrap_client

EXCHANGE_TIMEOUT = 30.0
"""Seconds from the TCP connection to the Jumpoint's answer."""

CLOCK_SKEW_WARNING = 120.0
"""Seconds between the two clocks past which C{jump enroll} warns."""


@implementer(IHandshakeListener)
class EnrollClient(Protocol):
    """One enrollment exchange: the request line out once TLS is up, the answer line in."""

    def __init__(self, clock: IReactorTime, address: str, request: bytes) -> None:
        self.clock = clock
        self.address = address
        self.request = request
        self.answer: Deferred[Certificate] = Deferred()
        self._buffer = LineBuffer()
        self._timer: IDelayedCall | None = None
        self._timed_out = False
        self._handshake_done = False
        self._error: JumpError | None = None

    def connectionMade(self) -> None:
        self._timer = self.clock.callLater(EXCHANGE_TIMEOUT, self._time_out)

    def _time_out(self) -> None:
        self._timer = None
        self._timed_out = True
        self._abort()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def handshakeCompleted(self) -> None:
        self._handshake_done = True
        assert self.transport is not None
        if getattr(self.transport, "negotiatedProtocol", None) != ENROLL_ALPN:
            self._error = ProtocolViolation(
                f"the Jumpoint at {self.address} does not offer online enrollment",
                hint="it may run an older version: ask your administrator",
            )
            self._abort()
            return
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        if self.answer.called or self._error is not None:
            return
        try:
            line = self._buffer.feed(data)
            if line is None:
                return
            answer = parse_answer(line)
        except (LineTooLong, ProtocolViolation) as error:
            self._error = (
                error
                if isinstance(error, ProtocolViolation)
                else ProtocolViolation("the Jumpoint's enrollment answer is too long")
            )
            self._abort()
            return
        if isinstance(answer, Certificate):
            self._finish(answer)
        else:
            self._error = _refusal(answer)
            self._abort()

    def _finish(self, result: Certificate | Failure) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.answer.called:
            return
        if isinstance(result, Certificate):
            self.answer.callback(result)
        else:
            self.answer.errback(result)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.answer.called:
            return
        self._finish(Failure(self._error or self._explain(reason)))

    def _explain(self, reason: Failure) -> JumpError:
        if self._timed_out:
            return JumpointUnreachable(
                f"the Jumpoint at {self.address} did not answer the enrollment within"
                f" {EXCHANGE_TIMEOUT:g}s"
            )
        tls = describe_tls_failure(reason, transport=self.transport)
        if tls is not None and not self._handshake_done:
            side, why = tls
            if side == "console":
                return CertificateRejected(
                    f"this console rejected the Jumpoint's certificate: {why}",
                    hint=f"is {self.address} the Jumpoint that wrote this enrollment file?",
                )
            return ProtocolViolation(
                f"the Jumpoint at {self.address} refused the enrollment connection: {why}",
                hint="it may run an older version without online enrollment",
            )
        return JumpointUnreachable(
            f"the Jumpoint at {self.address} closed the connection without an answer:"
            f" {reason.getErrorMessage()}"
        )


def _refusal(fields: dict[str, str]) -> JumpError:
    if fields.get("code") == EnrollmentRefused.code:
        return EnrollmentRefused(fields["message"], fields.get("hint"), fields.get("rule"))
    return error_from_json(fields)


@dataclass(frozen=True)
class Enrolled:
    profile: Profile
    serial: str
    not_after: str
    groups: tuple[str, ...]
    skew: float | None
    """Seconds the Jumpoint's clock is ahead of this machine's (None: not known)."""
    server_time: str


def _check_certificate(answer: Certificate, enrollment: Enrollment, key_pem: bytes) -> None:
    """The certificate is for our key, signed by the file's CA: else nothing is stored."""
    try:
        certificate = x509.load_pem_x509_certificate(answer.certificate)
        ca = x509.load_pem_x509_certificate(enrollment.ca_certificate.encode("ascii"))
        key = serialization.load_pem_private_key(key_pem, password=None)
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError) as error:
        raise ProtocolViolation(
            f"the Jumpoint sent a certificate this console cannot accept: {error}"
        ) from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if certificate.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise ProtocolViolation("the Jumpoint sent a certificate for another key")


def _skew(server_time: str, now: datetime.datetime) -> float | None:
    try:
        server = datetime.datetime.fromisoformat(server_time.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (server - now).total_seconds() if server.tzinfo is not None else None


async def enroll(reactor: Any, enrollment: Enrollment, profile_name: str | None) -> Enrolled:
    """Redeem C{enrollment}'s token and store the profile; raises L{JumpError}s."""
    check_profile_name(profile_name or enrollment.jumpoint_name)  # before the token is spent
    key_pem, csr_pem = pki.new_key_and_request(enrollment.user)
    request = encode_request(enrollment.token, csr_pem, f"jump {__version__}")
    options = enroll_client_options(enrollment.server_name, enrollment.ca_certificate.encode())
    client = EnrollClient(reactor, enrollment.address, request)
    factory = Factory.forProtocol(lambda: client)
    factory.noisy = False
    endpoint = HostnameEndpoint(reactor, enrollment.host, enrollment.port, timeout=CONNECT_TIMEOUT)
    try:
        await endpoint.connect(wrap_client(options, factory))
    except Exception:
        raise connect_failure(
            Failure(),
            enrollment.address,
            enrollment.host,
            "check the address in the enrollment file and that `jumpoint serve` runs there",
        ) from None
    answer = await client.answer
    _check_certificate(answer, enrollment, key_pem)
    profile = save_profile(enrollment, answer.certificate, key_pem, profile_name)
    return Enrolled(
        profile=profile,
        serial=answer.serial,
        not_after=answer.not_after,
        groups=answer.groups,
        skew=_skew(answer.server_time, datetime.datetime.now(datetime.UTC)),
        server_time=answer.server_time,
    )


def skew_warning(enrolled: Enrolled) -> str | None:
    """A sentence about the clocks when they are far apart (certificates depend on them)."""
    if enrolled.skew is None or abs(enrolled.skew) < CLOCK_SKEW_WARNING:
        return None
    here = rfc3339(datetime.datetime.now(datetime.UTC))
    return (
        f"the Jumpoint's clock says {enrolled.server_time}, this machine's clock says {here}:"
        " certificates may seem expired or not yet valid; set this machine's clock"
    )
