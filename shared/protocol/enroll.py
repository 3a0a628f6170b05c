"""The enrollment exchange C{jumpoint-enroll/1}: one request line, one answer line.

A console without a certificate connects to the Jumpoint's listener over TLS
1.3 with the ALPN name L{ENROLL_ALPN} (the Jumpoint asks for no client
certificate on this protocol only), checks the Jumpoint's certificate against
the CA and server name of its enrollment file, and sends one JSON object and
a newline: the one-time token and a certificate signing request for a key it
made.  The Jumpoint answers with one JSON object and a newline, the
certificate or the refusal, and closes the connection.  Both lines are at
most L{MAX_LINE} bytes; the fields are in docs/protocol.md.

Both sides use L{LineBuffer} (bounded) and the codecs here.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

from shared.enrollment import is_token, rfc3339
from shared.errors import InvalidRequest, ProtocolViolation

ENROLL_ALPN = b"jumpoint-enroll/1"
MAX_LINE = 16 * 1024
MAX_CSR = 8 * 1024
MAX_CERTIFICATE = 8 * 1024


class LineTooLong(ValueError):
    """More than L{MAX_LINE} bytes came without a newline."""


class LineBuffer:
    """Collects bytes until the first newline, holding at most C{limit} bytes."""

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self._data = bytearray()
        self.line: bytes | None = None

    def feed(self, data: bytes) -> bytes | None:
        """The line (without its newline) once complete; raises L{LineTooLong}."""
        if self.line is not None:
            return self.line
        self._data += data
        end = self._data.find(b"\n")
        if end < 0:
            if len(self._data) > self.limit:
                raise LineTooLong(f"no newline within {self.limit} bytes")
            return None
        if end > self.limit:
            raise LineTooLong(f"no newline within {self.limit} bytes")
        self.line = bytes(self._data[:end])
        self._data.clear()
        return self.line


@dataclass(frozen=True)
class EnrollRequest:
    token: str
    csr: bytes
    client: str


def encode_request(token: str, csr_pem: bytes, client: str) -> bytes:
    message = {
        "token": token,
        "csr": csr_pem.decode("ascii"),
        "client": client,
        "client_time": rfc3339(datetime.datetime.now(datetime.UTC)),
    }
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def _object(line: bytes, error: type[InvalidRequest | ProtocolViolation]) -> dict[str, Any]:
    try:
        message = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise error("the enrollment message is not JSON") from None
    if not isinstance(message, dict):
        raise error("the enrollment message is not a JSON object")
    return message


def parse_request(line: bytes) -> EnrollRequest:
    """The console's request; raises L{InvalidRequest} naming the bad field (never the token)."""
    message = _object(line, InvalidRequest)
    token = message.get("token")
    if not is_token(token):
        raise InvalidRequest("token: expected 43 characters of A-Z, a-z, 0-9, _ and -")
    assert isinstance(token, str)
    csr = message.get("csr")
    if not isinstance(csr, str) or not 0 < len(csr) <= MAX_CSR or not csr.isascii():
        raise InvalidRequest(f"csr: expected a PEM certificate request of at most {MAX_CSR} bytes")
    client = message.get("client", "")
    if not isinstance(client, str) or len(client) > 128:
        raise InvalidRequest("client: expected a string of at most 128 characters")
    return EnrollRequest(token, csr.encode("ascii"), client)


def encode_answer(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


@dataclass(frozen=True)
class Certificate:
    """The Jumpoint's answer to a redeemed token."""

    user: str
    groups: tuple[str, ...]
    certificate: bytes
    serial: str
    not_after: str
    server_time: str


def parse_answer(line: bytes) -> Certificate | dict[str, str]:
    """The Jumpoint's answer: the certificate, or the refusal's C{code}, C{message}, C{rule}.

    Raises L{ProtocolViolation} for an answer that is neither.
    """
    message = _object(line, ProtocolViolation)
    if message.get("ok") is True:
        certificate = message.get("certificate")
        user = message.get("user")
        groups = message.get("groups")
        if (
            not isinstance(certificate, str)
            or not 0 < len(certificate) <= MAX_CERTIFICATE
            or not certificate.isascii()
            or not isinstance(user, str)
            or not isinstance(groups, list)
            or not all(isinstance(group, str) for group in groups)
        ):
            raise ProtocolViolation("the Jumpoint's enrollment answer is malformed")
        return Certificate(
            user=user[:256],
            groups=tuple(group[:256] for group in groups[:64]),
            certificate=certificate.encode("ascii"),
            serial=str(message.get("serial", ""))[:64],
            not_after=str(message.get("not_after", ""))[:64],
            server_time=str(message.get("server_time", ""))[:64],
        )
    if message.get("ok") is False:
        refusal = {
            key: str(message[key])[:2000]
            for key in ("code", "message", "rule", "hint", "server_time")
            if isinstance(message.get(key), str)
        }
        refusal.setdefault("code", "error")
        refusal.setdefault("message", "the Jumpoint refused the enrollment")
        return refusal
    raise ProtocolViolation("the Jumpoint's enrollment answer is malformed")
