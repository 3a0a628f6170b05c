"""TLS settings of the channel: TLS 1.3 only, mutual certificates, ALPN.

The Jumpoint requires a client certificate signed by its own CA; the console
checks the Jumpoint's certificate against the CA from its enrollment and the
address in its profile (service-identity, via Twisted's C{optionsForClientTLS}).
L{describe_tls_failure} turns OpenSSL's terse errors into a sentence saying
which side rejected which certificate, and why.

OpenSSL reports every refusal of the Jumpoint's certificate as "certificate
verify failed".  To tell a wrong clock from a foreign CA, L{chain_time_problem}
verifies the certificates the Jumpoint sent once more, with OpenSSL and the
trust store of the failed connection, and keeps only the two time errors
(C{X509_V_ERR_CERT_NOT_YET_VALID}, C{X509_V_ERR_CERT_HAS_EXPIRED}).  It is not
done in a verify callback: Twisted's C{ClientTLSOptions} checks the server name
in the verify callback it sets on each connection, and a second
C{set_verify} would replace that check.  The handshake itself is untouched.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IProtocolFactory
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from shared.protocol.enroll import ENROLL_ALPN
from shared.protocol.frames import ALPN_PROTOCOL
from shared.protocol.sockets import write_now

_RECORD_OVERHEAD = 64
"""Upper bound of the bytes TLS 1.3 adds to one record (header, tag, content type)."""

_RECORD_SIZE = 16 * 1024


class ChannelTLSProtocol(TLSMemoryBIOProtocol):
    """Twisted's TLS protocol, encrypting each frame whole and sending it at once.

    Twisted hands OpenSSL 16 KiB slices, writes each record to the TCP
    transport on its own and so queues them in its buffer until the reactor's
    next turn.  The multiplexer writes whole frames, so here a frame is handed
    to OpenSSL whole: one C{SSL_write} for a frame of up to 16 KiB, one per
    record beyond (pyOpenSSL enables partial writes), each offered the rest of
    the frame without a copy; the memory BIO takes every record, which are
    read out of it in one piece and written straight to the socket while its
    buffer is empty (L{write_now}); whatever the kernel does not take goes
    through Twisted's buffer and its producer backpressure as before.
    Handshake, shutdown and errors stay Twisted's.

    Only public interfaces are used: this class overrides C{write} (ITransport)
    and reaches the OpenSSL connection through C{getHandle()} (ISystemHandle);
    no private member of L{TLSMemoryBIOProtocol} is overridden or read (checked
    by tests/unit/test_twisted_contract.py).  Every write it does not do itself
    goes to Twisted's own C{write}: while Twisted may hold a write back (before
    the handshake, when OpenSSL wants to read first), while the connection is
    closing, and on any OpenSSL error, which Twisted then reports.  From the
    first such write on, every later one goes to Twisted as well, so nothing
    overtakes what Twisted has buffered.
    """

    _direct_writes = True
    """Whether L{write} may still encrypt and send by itself (set off for good on
    the first write handed to Twisted)."""

    _handshake_seen = False
    """Whether L{write} has seen the handshake finished (the peer's Finished message)."""

    def write(self, data: bytes) -> None:
        connection = self.getHandle()  # type: ignore[no-untyped-call]
        if (
            not self._direct_writes
            or self.disconnecting
            or not isinstance(connection, SSL.Connection)
            or not (self._handshake_seen or self._handshake_finished(connection))
        ):
            self._direct_writes = False
            super().write(data)  # type: ignore[no-untyped-call]
            return
        sent = 0
        view = memoryview(data)
        try:
            while sent < len(data):
                sent += connection.send(view[sent:] if sent else data)
        except SSL.Error:  # WantReadError included: Twisted buffers, or reports the error
            self._direct_writes = False
        if sent:
            records = -(-sent // _RECORD_SIZE)
            self._send_bio(connection, sent + records * _RECORD_OVERHEAD)
        if sent < len(data):
            super().write(data[sent:])  # type: ignore[no-untyped-call]

    def _handshake_finished(self, connection: SSL.Connection) -> bool:
        self._handshake_seen = connection.get_peer_finished() is not None
        return self._handshake_seen

    def _send_bio(self, connection: SSL.Connection, size: int) -> None:
        """Move everything OpenSSL has encrypted to the TCP transport.

        A memory BIO's read returns what it holds, up to C{size}: a shorter chunk
        means it is empty, so the common case costs one read and no WantReadError.
        """
        chunks = []
        while True:
            try:
                chunk = connection.bio_read(size)
            except SSL.WantReadError:
                break
            chunks.append(chunk)
            if len(chunk) < size:
                break
        if chunks:
            write_now(self.transport, chunks[0] if len(chunks) == 1 else b"".join(chunks))


class ChannelTLSFactory(TLSMemoryBIOFactory):
    """TLS for the channel, writing each frame at once (L{ChannelTLSProtocol}).

    Twisted's default TLS transport also holds small writes until the next
    reactor iteration; the multiplexer already writes whole frames, so
    writing them at once gives lower latency.
    """

    protocol = ChannelTLSProtocol


def wrap_server(options: ssl.CertificateOptions, factory: IProtocolFactory) -> ChannelTLSFactory:
    return ChannelTLSFactory(options, False, factory)


def wrap_client(options: Any, factory: IProtocolFactory) -> ChannelTLSFactory:
    return ChannelTLSFactory(options, True, factory)


def server_options(
    ca_certificate_pem: bytes,
    certificate_pem: bytes,
    key_pem: bytes,
    *,
    enrollment: bool = False,
) -> ssl.CertificateOptions:
    """Context factory for the Jumpoint's listener.

    Every connection must present a client certificate signed by the CA,
    except, with C{enrollment}, one that asks for the enrollment protocol
    (ALPN C{jumpoint-enroll/1}) and offers no channel protocol: the ALPN
    choice is made while the ClientHello is read, before the Jumpoint would
    ask for a certificate, so for that connection alone it asks for none.
    """
    certificate = ssl.PrivateCertificate.loadPEM(certificate_pem + b"\n" + key_pem)
    ca = ssl.Certificate.loadPEM(ca_certificate_pem)
    protocols = [ALPN_PROTOCOL, ENROLL_ALPN] if enrollment else [ALPN_PROTOCOL]
    options = ssl.CertificateOptions(
        privateKey=certificate.privateKey.original,
        certificate=certificate.original,
        trustRoot=ca,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_3,
        acceptableProtocols=protocols,
    )

    def select(connection: SSL.Connection, offered: list[bytes]) -> Any:
        if ALPN_PROTOCOL in offered:
            return ALPN_PROTOCOL
        if enrollment and ENROLL_ALPN in offered:
            connection.set_verify(SSL.VERIFY_NONE)
            return ENROLL_ALPN
        return SSL.NO_OVERLAPPING_PROTOCOLS

    options.getContext().set_alpn_select_callback(select)
    return options


def enroll_client_options(server_name: str, ca_certificate_pem: bytes) -> Any:
    """Connection creator for C{jump enroll}: no client certificate, the enrollment ALPN."""
    return ssl.optionsForClientTLS(
        server_name,
        trustRoot=ssl.Certificate.loadPEM(ca_certificate_pem),
        acceptableProtocols=[ENROLL_ALPN],
        extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_3},
    )


def client_options(
    server_name: str, ca_certificate_pem: bytes, certificate_pem: bytes, key_pem: bytes
) -> IOpenSSLClientConnectionCreator:
    """Connection creator for the console: verifies the Jumpoint as C{server_name}."""
    client = ssl.PrivateCertificate.loadPEM(certificate_pem + b"\n" + key_pem)
    ca = ssl.Certificate.loadPEM(ca_certificate_pem)
    return ssl.optionsForClientTLS(
        server_name,
        trustRoot=ca,
        clientCertificate=client,
        acceptableProtocols=[ALPN_PROTOCOL],
        extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_3},
    )


CONSOLE_EXPIRED = "this console's certificate has expired"

_PEER_ALERTS = {
    "certificate required": "this console sent no certificate",
    "unknown ca": "this console's certificate was not issued by the Jumpoint's CA",
    "bad certificate": "this console's certificate was refused",
    "certificate unknown": "this console's certificate was refused",
    "certificate revoked": "this console's certificate has been revoked",
    "certificate expired": CONSOLE_EXPIRED,
    "protocol version": "the Jumpoint requires TLS 1.3",
    "no application protocol": "the Jumpoint speaks another protocol version",
}


X509_V_ERR_CERT_NOT_YET_VALID = 9
X509_V_ERR_CERT_HAS_EXPIRED = 10


@dataclass(frozen=True)
class CertificateTimeProblem:
    """OpenSSL refused a certificate of the Jumpoint's chain because of the time.

    @ivar expired: C{True} for C{X509_V_ERR_CERT_HAS_EXPIRED}, C{False} for
        C{X509_V_ERR_CERT_NOT_YET_VALID}.
    @ivar depth: 0 for the Jumpoint's own certificate, more for a CA certificate.
    @ivar now: this machine's clock when the chain was checked.
    """

    expired: bool
    depth: int
    not_before: datetime.datetime
    not_after: datetime.datetime
    now: datetime.datetime


def rfc3339(moment: datetime.datetime) -> str:
    """C{2026-12-02T15:04:05Z}: UTC, whole seconds."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def chain_time_problem(transport: object) -> CertificateTimeProblem | None:
    """Why OpenSSL refused the peer's certificates on C{transport}, if it is the time.

    C{transport} is the TLS transport (L{TLSMemoryBIOProtocol}) while the
    connection is being lost, so that its OpenSSL connection still exists.
    The certificates the peer sent are verified again against the trust store
    of that connection; C{None} unless OpenSSL's first error is "not yet
    valid" or "expired" (an unknown CA, for one, is reported before the time).
    """
    get_handle = getattr(transport, "getHandle", None)
    connection = get_handle() if callable(get_handle) else None
    if not isinstance(connection, SSL.Connection):
        return None
    chain = connection.get_peer_cert_chain()
    store = connection.get_context().get_cert_store()
    if not chain or store is None:
        return None
    now = _now()
    try:
        crypto.X509StoreContext(store, chain[0], chain[1:]).verify_certificate()
    except crypto.Error:
        return None
    except crypto.X509StoreContextError as error:
        details = list(error.errors)  # [errno, depth, OpenSSL's text]
        if len(details) < 2 or not isinstance(details[1], int) or error.certificate is None:
            return None
        errno, depth = details[0], details[1]
        if errno not in (X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED):
            return None  # an unknown CA, a bad signature, ...: not the clock
        failing = error.certificate.to_cryptography()
        return CertificateTimeProblem(
            expired=errno == X509_V_ERR_CERT_HAS_EXPIRED,
            depth=depth,
            not_before=failing.not_valid_before_utc,
            not_after=failing.not_valid_after_utc,
            now=now,
        )
    return None


def _describe_time_problem(problem: CertificateTimeProblem) -> str:
    whose = "the Jumpoint's certificate" if problem.depth == 0 else "the CA certificate"
    clock = f"this machine's clock says {rfc3339(problem.now)}"
    if problem.expired:
        return f"{whose} has expired: valid until {rfc3339(problem.not_after)}, {clock}"
    return (
        f"{whose} is not yet valid: valid from {rfc3339(problem.not_before)}, {clock}"
        " (check this machine's clock)"
    )


def _describe_console_expiry(certificate_pem: bytes | None) -> str | None:
    if certificate_pem is None:
        return None
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem)
    except ValueError:
        return None
    return (
        f"{CONSOLE_EXPIRED}: valid until {rfc3339(certificate.not_valid_after_utc)}"
        f" (from the profile's client.pem), this machine's clock says {rfc3339(_now())}"
    )


def _openssl_reasons(error: BaseException) -> list[str]:
    reasons: list[str] = []
    if isinstance(error, SSL.Error) and error.args and isinstance(error.args[0], list):
        for entry in error.args[0]:
            if isinstance(entry, tuple) and entry:
                reasons.append(str(entry[-1]))
    if not reasons:
        reasons.append(str(error))
    return reasons


def describe_tls_failure(
    failure: Failure | BaseException,
    *,
    transport: object = None,
    client_certificate_pem: bytes | None = None,
) -> tuple[str, str] | None:
    """Explain a TLS failure seen by the console: (C{"console"|"jumpoint"}, reason).

    Returns C{None} when the failure is not a TLS certificate problem.  With
    the connection's C{transport} (see L{chain_time_problem}), a Jumpoint
    certificate refused because of the time is said to have expired or to be
    not yet valid, with its dates and this machine's clock; with the console's
    own certificate (C{client_certificate_pem}, the profile's C{client.pem}),
    the Jumpoint's "certificate expired" alert says until when it was valid.
    """
    error = failure.value if isinstance(failure, Failure) else failure
    name = type(error).__name__
    if name == "VerificationError":
        wanted = []
        for mismatch in getattr(error, "errors", []):
            identity = getattr(mismatch, "mismatched_id", None)
            value = getattr(identity, "hostname", None) or getattr(identity, "ip", None)
            if isinstance(value, bytes):
                value = value.decode("ascii", "replace")
            if value is not None:
                wanted.append(str(value))
        names = ", ".join(wanted) or "the profile's address"
        return "console", f"the Jumpoint's certificate is not valid for {names}"
    if not isinstance(error, SSL.Error):
        return None
    for reason in _openssl_reasons(error):
        lowered = reason.lower()
        if "certificate verify failed" in lowered:
            problem = chain_time_problem(transport) if transport is not None else None
            if problem is not None:
                return "console", _describe_time_problem(problem)
            return "console", "the Jumpoint's certificate was not issued by the CA in this profile"
        for alert, text in _PEER_ALERTS.items():
            if alert in lowered:
                if text == CONSOLE_EXPIRED:
                    expiry = _describe_console_expiry(client_certificate_pem)
                    if expiry is not None:
                        return "jumpoint", expiry
                return "jumpoint", f"{text} ({reason})"
    return "console", f"TLS failure: {'; '.join(_openssl_reasons(error))}"


def peer_certificate_serial(transport: object) -> tuple[str, str] | None:
    """Serial (hex) and common name of the peer certificate of a TLS transport."""
    get = getattr(transport, "getPeerCertificate", None)
    if get is None:
        return None
    certificate = get()
    if certificate is None:
        return None
    cryptography_certificate = certificate.to_cryptography()
    from cryptography.x509.oid import NameOID

    names = cryptography_certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else ""
    return format(cryptography_certificate.serial_number, "x"), common_name
