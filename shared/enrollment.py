"""The enrollment file: everything a console needs to reach one Jumpoint as one user.

Written by C{jumpoint user add} (mode 0600) and read by C{jump enroll}.  It
holds the Jumpoint's name and address, the name the console checks the
Jumpoint's certificate against, the CA certificate, and the user's client
certificate and private key, all PEM.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from shared import schema
from shared.errors import EnrollmentError
from shared.schema import Field, Where

KIND = "jump-enrollment"
VERSION = 1


@dataclass(frozen=True)
class Enrollment:
    jumpoint_name: str
    host: str
    port: int
    server_name: str
    user: str
    ca_certificate: str
    certificate: str
    private_key: str

    def to_yaml(self) -> str:
        document = {
            "kind": KIND,
            "version": VERSION,
            "jumpoint": {
                "name": self.jumpoint_name,
                "address": f"{self.host}:{self.port}"
                if ":" not in self.host
                else f"[{self.host}]:{self.port}",
                "server_name": self.server_name,
            },
            "user": self.user,
            "ca_certificate": self.ca_certificate,
            "certificate": self.certificate,
            "private_key": self.private_key,
        }
        header = (
            "# jump enrollment file: keep it secret (it holds a private key).\n"
            "# Import it with: jump enroll THIS_FILE\n"
        )
        return header + yaml.safe_dump(document, sort_keys=False, width=1000)


def _pem(kind: str) -> schema.Checker[str]:
    check = schema.string(1, 64 * 1024)

    def checker(node: yaml.Node, where: Where) -> str:
        value = check(node, where)
        if f"-----BEGIN {kind}" not in value:
            raise where.error(node, f"expected a PEM {kind.lower()}")
        return value

    return checker


_JUMPOINT_FIELDS = {
    "name": Field(schema.string(1, 128), required=True),
    "address": Field(schema.host_port, required=True),
    "server_name": Field(schema.host, required=True),
}

_FIELDS = {
    "kind": Field(schema.choice(KIND), required=True),
    "version": Field(schema.integer(VERSION, VERSION), required=True),
    "jumpoint": Field(lambda n, w: schema.mapping(n, w, _JUMPOINT_FIELDS), required=True),
    "user": Field(schema.string(1, 128), required=True),
    "ca_certificate": Field(_pem("CERTIFICATE"), required=True),
    "certificate": Field(_pem("CERTIFICATE"), required=True),
    "private_key": Field(_pem("PRIVATE KEY"), required=True),
}


def parse_enrollment(text: str, filename: str) -> Enrollment:
    """Check an enrollment file; raises L{EnrollmentError} naming file, line and key."""
    try:
        values = schema.mapping(schema.compose(text, filename), Where(filename, ""), _FIELDS)
    except Exception as error:
        message = getattr(error, "message", str(error))
        raise EnrollmentError(
            message, hint="ask your Jumpoint administrator for a new enrollment file"
        ) from None
    host, port = values["jumpoint"]["address"]
    enrollment = Enrollment(
        jumpoint_name=values["jumpoint"]["name"],
        host=host,
        port=port,
        server_name=values["jumpoint"]["server_name"],
        user=values["user"],
        ca_certificate=values["ca_certificate"],
        certificate=values["certificate"],
        private_key=values["private_key"],
    )
    _check_keys(enrollment, filename)
    return enrollment


def _check_keys(enrollment: Enrollment, filename: str) -> None:
    try:
        x509.load_pem_x509_certificate(enrollment.ca_certificate.encode())
        certificate = x509.load_pem_x509_certificate(enrollment.certificate.encode())
        key = serialization.load_pem_private_key(enrollment.private_key.encode(), password=None)
    except ValueError as error:
        raise EnrollmentError(f"{filename}: unreadable certificate or key: {error}") from None
    public = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    derived = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if public != derived:
        raise EnrollmentError(f"{filename}: the private key does not match the certificate")


def read_enrollment(path: Path) -> Enrollment:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise EnrollmentError(f"cannot read enrollment file {path}: {error}") from None
    return parse_enrollment(text, str(path))
