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

from shared.frames import ALPN_PROTOCOL


class ChannelTLSFactory(TLSMemoryBIOFactory):
    """TLS for the channel, writing each frame at once.

    Twisted's default TLS transport holds small writes until the next reactor
    iteration and copies large ones twice; the multiplexer already writes
    whole frames, so the plain L{TLSMemoryBIOProtocol} gives lower latency.
    """

    protocol = TLSMemoryBIOProtocol


def wrap_server(options: ssl.CertificateOptions, factory: IProtocolFactory) -> ChannelTLSFactory:
    return ChannelTLSFactory(options, False, factory)


def wrap_client(options: Any, factory: IProtocolFactory) -> ChannelTLSFactory:
    return ChannelTLSFactory(options, True, factory)


def server_options(
    ca_certificate_pem: bytes, certificate_pem: bytes, key_pem: bytes
) -> ssl.CertificateOptions:
    """Context factory for the Jumpoint's listener."""
    certificate = ssl.PrivateCertificate.loadPEM(certificate_pem + b"\n" + key_pem)
    ca = ssl.Certificate.loadPEM(ca_certificate_pem)
    return ssl.CertificateOptions(
        privateKey=certificate.privateKey.original,
        certificate=certificate.original,
        trustRoot=ca,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_3,
        acceptableProtocols=[ALPN_PROTOCOL],
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
