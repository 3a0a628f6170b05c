"""The enrollment file: a one-time token and what a console needs to redeem it.

Written by C{jumpoint user add} (mode 0600) and read by C{jump enroll}.  It
holds the Jumpoint's name and addresses (C{addresses}: every member's, in
order; C{address} is the first, and a file with only C{address} loads), the
name the console checks every member's certificate against, the CA
certificate (PEM), the user's name, and a single-use token that expires at
C{expires_at}.  It holds no private key: C{jump enroll} makes the key on the
engineer's machine and gets its certificate from the Jumpoint over TLS (the
exchange C{jumpoint-enroll/1}, L{shared.protocol.enroll}), so the key never
leaves that machine.

Version 1 files (a certificate and a private key made on the Jumpoint) are
refused with a sentence saying so.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509

from shared import schema
from shared.errors import EnrollmentError
from shared.schema import Field, Where

KIND = "jump-enrollment"
VERSION = 2
TOKEN_PATTERN = r"^[A-Za-z0-9_-]{43}$"
"""A token: 32 random bytes, base64url without padding (C{secrets.token_urlsafe(32)})."""
_TOKEN = re.compile(TOKEN_PATTERN)
_ASK_AGAIN = "ask your Jumpoint administrator for a new enrollment file"


def is_token(value: object) -> bool:
    return isinstance(value, str) and _TOKEN.match(value) is not None


def rfc3339(moment: datetime.datetime) -> str:
    """A time as RFC 3339 UTC with C{Z}, to the second."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Enrollment:
    jumpoint_name: str
    host: str
    port: int
    server_name: str
    user: str
    ca_certificate: str
    token: str
    expires_at: datetime.datetime
    addresses: tuple[str, ...] = ()
    """Every member's C{HOST:PORT}, in order (empty: only C{host}:C{port})."""

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def to_yaml(self) -> str:
        document = {
            "kind": KIND,
            "version": VERSION,
            "jumpoint": {
                "name": self.jumpoint_name,
                "address": self.address,
                **({"addresses": list(self.addresses)} if self.addresses else {}),
                "server_name": self.server_name,
            },
            "user": self.user,
            "token": self.token,
            "expires_at": rfc3339(self.expires_at),
            "ca_certificate": self.ca_certificate,
        }
        header = (
            "# jump enrollment file: keep it secret until it is used (it holds a one-time token).\n"
            f"# Redeem it before {rfc3339(self.expires_at)} with: jump enroll THIS_FILE\n"
        )
        return header + yaml.safe_dump(document, sort_keys=False, width=1000)


def _pem_certificate(node: yaml.Node, where: Where) -> str:
    value = schema.string(1, 64 * 1024)(node, where)
    if "-----BEGIN CERTIFICATE" not in value:
        raise where.error(node, "expected a PEM certificate")
    return value


def _timestamp(node: yaml.Node, where: Where) -> datetime.datetime:
    value = schema.string(1, 64)(node, where)
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise where.error(node, "expected a time like 2026-12-03T15:00:00Z") from None
    if moment.tzinfo is None:
        raise where.error(node, "expected a time with its zone, like 2026-12-03T15:00:00Z")
    return moment


def _token(node: yaml.Node, where: Where) -> str:
    value = schema.string(1, 256)(node, where)
    if not is_token(value):  # never quoted: it is a secret
        raise where.error(node, "expected a token of 43 characters (A-Z, a-z, 0-9, _ and -)")
    return value


_JUMPOINT_FIELDS = {
    "name": Field(schema.string(1, 128), required=True),
    "address": Field(schema.host_port),
    "addresses": Field(schema.list_of(schema.host_port, 1, 32)),
    "server_name": Field(schema.host, required=True),
}

_FIELDS = {
    "kind": Field(schema.choice(KIND), required=True),
    "version": Field(schema.integer(VERSION, VERSION), required=True),
    "jumpoint": Field(lambda n, w: schema.mapping(n, w, _JUMPOINT_FIELDS), required=True),
    "user": Field(schema.string(1, 128), required=True),
    "token": Field(_token, required=True),
    "expires_at": Field(_timestamp, required=True),
    "ca_certificate": Field(_pem_certificate, required=True),
}


def _version_1(text: str) -> bool:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(document, dict) and document.get("version") == 1


def parse_enrollment(text: str, filename: str) -> Enrollment:
    """Check an enrollment file; raises L{EnrollmentError} naming file, line and key."""
    if _version_1(text):
        raise EnrollmentError(
            f"{filename} is an enrollment file of version 1 (a private key made on the"
            " Jumpoint), which this console no longer accepts",
            hint=_ASK_AGAIN + " (`jumpoint user add` writes version 2: a one-time token)",
        )
    try:
        values = schema.mapping(schema.compose(text, filename), Where(filename, ""), _FIELDS)
    except Exception as error:
        message = getattr(error, "message", str(error))
        raise EnrollmentError(message, hint=_ASK_AGAIN) from None
    jumpoint = values["jumpoint"]
    listed: list[tuple[str, int]] = jumpoint.get("addresses") or []
    if jumpoint.get("address") is None and not listed:
        raise EnrollmentError(
            f"{filename}: jumpoint: needs address or addresses (HOST:PORT)", hint=_ASK_AGAIN
        )
    host, port = listed[0] if listed else jumpoint["address"]
    addresses = tuple(dict.fromkeys(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in listed))
    enrollment = Enrollment(
        jumpoint_name=values["jumpoint"]["name"],
        host=host,
        port=port,
        server_name=values["jumpoint"]["server_name"],
        user=values["user"],
        ca_certificate=values["ca_certificate"],
        token=values["token"],
        expires_at=values["expires_at"],
        addresses=addresses,
    )
    try:
        x509.load_pem_x509_certificate(enrollment.ca_certificate.encode())
    except ValueError as error:
        raise EnrollmentError(f"{filename}: unreadable CA certificate: {error}") from None
    return enrollment


def read_enrollment(path: Path) -> Enrollment:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise EnrollmentError(f"cannot read enrollment file {path}: {error}") from None
    return parse_enrollment(text, str(path))
