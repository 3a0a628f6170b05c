"""TLS settings of the channel: TLS 1.3 only, mutual certificates, ALPN.

The Jumpoint requires a client certificate signed by its own CA; the console
checks the Jumpoint's certificate against the CA from its enrollment and the
address in its profile (service-identity, via Twisted's C{optionsForClientTLS}).
L{describe_tls_failure} turns OpenSSL's terse errors into a sentence saying
which side rejected which certificate, and why.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IProtocolFactory
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from shared.enroll_protocol import ENROLL_ALPN
from shared.frames import ALPN_PROTOCOL
from shared.sockets import write_now

_RECORD_OVERHEAD = 64
"""Upper bound of the bytes TLS 1.3 adds to one record (header, tag, content type)."""

_RECORD_SIZE = 16 * 1024


class ChannelTLSProtocol(TLSMemoryBIOProtocol):
    """Twisted's TLS protocol, encrypting each frame in one call and sending it at once.

    Twisted hands OpenSSL 16 KiB at a time and queues every record in the TCP
    transport's buffer until the reactor's next turn.  The multiplexer writes
    whole frames, so here a frame is encrypted in one C{SSL_write} (the memory
    BIO takes every record), read out of the BIO in one piece and written
    straight to the socket while its buffer is empty (L{write_now}); whatever
    the kernel does not take goes through Twisted's buffer and its producer
    backpressure as before.  Handshake, shutdown and errors stay Twisted's.
    """

    def _write(self, data: bytes) -> None:
        if self._lostTLSConnection:
            return
        sent = 0
        while sent < len(data):
            try:
                sent += self._tlsConnection.send(data[sent:] if sent else data)
            except SSL.WantReadError:
                self._bufferedWrite(data[sent:])  # type: ignore[no-untyped-call]
                break
            except SSL.Error:
                self._tlsShutdownFinished(Failure())  # type: ignore[no-untyped-call]
                break
        if sent:
            records = -(-sent // _RECORD_SIZE)
            self._send_bio(sent + records * _RECORD_OVERHEAD)

    def _flushSendBIO(self) -> None:
        self._send_bio(2**15)

    def _send_bio(self, size: int) -> None:
        """Move everything OpenSSL has encrypted to the TCP transport."""
        chunks = []
        while True:
            try:
                chunks.append(self._tlsConnection.bio_read(size))
            except SSL.WantReadError:
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


_PEER_ALERTS = {
    "certificate required": "this console sent no certificate",
    "unknown ca": "this console's certificate was not issued by the Jumpoint's CA",
    "bad certificate": "this console's certificate was refused",
    "certificate unknown": "this console's certificate was refused",
    "certificate revoked": "this console's certificate has been revoked",
    "certificate expired": "this console's certificate has expired",
    "protocol version": "the Jumpoint requires TLS 1.3",
    "no application protocol": "the Jumpoint speaks another protocol version",
}


def _openssl_reasons(error: BaseException) -> list[str]:
    reasons: list[str] = []
    if isinstance(error, SSL.Error) and error.args and isinstance(error.args[0], list):
        for entry in error.args[0]:
            if isinstance(entry, tuple) and entry:
                reasons.append(str(entry[-1]))
    if not reasons:
        reasons.append(str(error))
    return reasons


def describe_tls_failure(failure: Failure | BaseException) -> tuple[str, str] | None:
    """Explain a TLS failure seen by the console: (C{"console"|"jumpoint"}, reason).

    Returns C{None} when the failure is not a TLS certificate problem.
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
            return "console", "the Jumpoint's certificate was not issued by the CA in this profile"
        for alert, text in _PEER_ALERTS.items():
            if alert in lowered:
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
