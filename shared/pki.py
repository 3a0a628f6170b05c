"""Certificates for both sides: the Jumpoint's CA, server and client certificates, local CAs.

Built on the C{cryptography} package (EC P-256 keys, SHA-256 signatures).
The CA signs one server certificate, whose subject alternative names are the
Jumpoint's addresses (DNS names and IP addresses), and one client certificate
per enrolled user (common name = user name, extended key usage clientAuth).
Private keys are written with mode 0600 by L{shared.files.write_private}.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes as CertificatePublicKey,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.files import write_private

CA_LIFETIME = datetime.timedelta(days=3650)
SERVER_LIFETIME = datetime.timedelta(days=825)
CLIENT_LIFETIME = datetime.timedelta(days=365)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    certificate_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.certificate_pem)

    @property
    def serial(self) -> str:
        return format(self.certificate.serial_number, "x")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _serial() -> int:
    return secrets.randbits(126) | (1 << 125)


def create_ca(jumpoint_name: str) -> KeyPair:
    """A self-signed CA for one Jumpoint."""
    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{jumpoint_name} Jumpoint CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "jumpoint"),
        ]
    )
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _general_name(address: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(address))
    except ValueError:
        return x509.DNSName(address)


def _leaf(
    ca: KeyPair,
    common_name: str,
    usage: x509.ObjectIdentifier,
    lifetime: datetime.timedelta,
    alt_names: list[x509.GeneralName],
    organizational_unit: str | None = None,
) -> KeyPair:
    key = _new_key()
    certificate = _sign_leaf(
        ca, key.public_key(), common_name, usage, lifetime, alt_names, organizational_unit
    )
    return KeyPair(certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _sign_leaf(
    ca: KeyPair,
    public_key: CertificatePublicKey,
    common_name: str,
    usage: x509.ObjectIdentifier,
    lifetime: datetime.timedelta,
    alt_names: list[x509.GeneralName],
    organizational_unit: str | None,
) -> x509.Certificate:
    ca_certificate = ca.certificate
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organizational_unit:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, organizational_unit))
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attributes))
        .issuer_name(ca_certificate.subject)
        .public_key(public_key)
        .serial_number(_serial())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + lifetime, ca_certificate.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def issue_server(ca: KeyPair, jumpoint_name: str, addresses: list[str]) -> KeyPair:
    """The Jumpoint's server certificate, valid for every address in C{addresses}."""
    return _leaf(
        ca,
        jumpoint_name,
        ExtendedKeyUsageOID.SERVER_AUTH,
        SERVER_LIFETIME,
        [_general_name(a) for a in addresses],
    )


def issue_client(
    ca: KeyPair, user: str, group: str, lifetime: datetime.timedelta = CLIENT_LIFETIME
) -> KeyPair:
    """A client certificate for C{user} (common name) in C{group} (organizational unit)."""
    return _leaf(ca, user, ExtendedKeyUsageOID.CLIENT_AUTH, lifetime, [], group)


MAX_CSR_BYTES = 8 * 1024
"""The largest certificate signing request (PEM) the Jumpoint reads."""


class BadSigningRequest(ValueError):
    """A certificate signing request the Jumpoint does not sign (the message says why)."""


def new_key_and_request(user: str) -> tuple[bytes, bytes]:
    """A new private key (PEM, PKCS#8) and a signing request for it, made on this machine.

    The request's subject is only informative: the Jumpoint names the
    certificate after the user its enrollment token belongs to.
    """
    key = _new_key()
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user)]))
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), request.public_bytes(serialization.Encoding.PEM)


def load_signing_request(pem: bytes) -> x509.CertificateSigningRequest:
    """Parse and check a signing request: size, signature, and an EC P-256/P-384 key.

    Raises L{BadSigningRequest} with a sentence saying what is wrong.
    """
    if len(pem) > MAX_CSR_BYTES:
        raise BadSigningRequest(f"the signing request is over {MAX_CSR_BYTES} bytes")
    try:
        request = x509.load_pem_x509_csr(pem)
    except ValueError:
        raise BadSigningRequest("the signing request is not a PEM certificate request") from None
    try:
        valid = request.is_signature_valid
        key = request.public_key()
    except (ValueError, TypeError, x509.UnsupportedGeneralNameType):
        raise BadSigningRequest("the signing request cannot be read") from None
    if not valid:
        raise BadSigningRequest("the signing request's signature is not valid")
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _CURVES:
        raise BadSigningRequest("the signing request's key is not an EC P-256 or P-384 key")
    return request


_CURVES = {"secp256r1", "secp384r1"}


def sign_client_request(
    ca: KeyPair,
    request: x509.CertificateSigningRequest,
    user: str,
    group: str,
    lifetime: datetime.timedelta = CLIENT_LIFETIME,
) -> x509.Certificate:
    """A client certificate for the key of a checked signing request (L{load_signing_request}).

    The subject is the Jumpoint's choice (C{user}, C{group}), never the request's.
    """
    key = request.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return _sign_leaf(ca, key, user, ExtendedKeyUsageOID.CLIENT_AUTH, lifetime, [], group)


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def load_pair(certificate_path: Path, key_path: Path) -> KeyPair:
    return KeyPair(certificate_path.read_bytes(), key_path.read_bytes())


__all__ = [
    "BadSigningRequest",
    "KeyPair",
    "certificate_pem",
    "create_ca",
    "issue_client",
    "issue_server",
    "load_pair",
    "load_signing_request",
    "new_key_and_request",
    "sign_client_request",
    "write_private",
]
