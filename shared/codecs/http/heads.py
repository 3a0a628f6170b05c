"""HTTP/1.1 heads of the Kubernetes legs: parsed by h11, checked, rewritten.

h11 (sans-IO, strict) parses and writes every message of both legs (see
L{shared.codecs.http.relay}); this module holds what sits around it:

  - L{RequestHead} and L{ResponseHead}: a head as the relay's handlers see it,
    header order and repeats kept as separate lines (kubernetes#95733: merged
    C{X-Stream-Protocol-Version} lines break exec), original header names;
  - L{check_request_head}: what h11 accepts but a proxy must not (more than
    L{MAX_HEADERS} lines: 431; more than one C{Host}, C{Content-Length} with
    C{Transfer-Encoding}, C{Transfer-Encoding} in HTTP/1.0: 400); h11 itself
    refuses heads over L{MAX_HEAD} bytes (431), bad request lines, obsolete
    framing, bad names or values, conflicting lengths, codings other than
    C{chunked} (400 or 501);
  - L{rewrite_headers}: drop headers by name or prefix, append others;
  - L{Forward} and L{Answer}: a handler's decision on one request, and
    L{error_answer}, a local answer carrying a Kubernetes C{Status}.

Errors in a message are L{HttpError} with the status to answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import h11

MAX_HEAD = 64 * 1024
"""Largest request or response head (h11's C{max_incomplete_event_size})."""

MAX_HEADERS = 200
"""Most header lines in one head."""

_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class HttpError(Exception):
    """The bytes are not an acceptable HTTP/1.1 message.

    @ivar status: the HTTP status to answer with (502 for a bad response).
    @ivar reason: a readable reason for the logs.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


Headers = tuple[tuple[str, str], ...]


def _get_all(headers: Headers, name: str) -> tuple[str, ...]:
    wanted = name.lower()
    return tuple(value for key, value in headers if key.lower() == wanted)


def _tokens(headers: Headers, name: str) -> tuple[str, ...]:
    """The comma-separated tokens of all lines of a header, lowercased."""
    return tuple(
        token.strip().lower()
        for value in _get_all(headers, name)
        for token in value.split(",")
        if token.strip()
    )


def decode_headers(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    return tuple((name.decode("ascii"), value.decode("latin-1")) for name, value in raw)


class _HeadFields:
    """Header helpers shared by request and response heads."""

    headers: Headers

    def get(self, name: str) -> str | None:
        """The first value of a header (case-insensitive name), or None."""
        values = _get_all(self.headers, name)
        return values[0] if values else None

    def get_all(self, name: str) -> tuple[str, ...]:
        """Every value of a header, one per line, in order."""
        return _get_all(self.headers, name)

    def connection_tokens(self) -> tuple[str, ...]:
        """The lowercased tokens of every C{Connection} line."""
        return _tokens(self.headers, "connection")


@dataclass(frozen=True, slots=True)
class RequestHead(_HeadFields):
    """A request line and its header lines, in order, repeats kept."""

    method: str
    target: str
    version: str
    headers: Headers

    @property
    def path(self) -> str:
        """The path of the target as a URL parser reads it (logs only; never for policy)."""
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        """The query of the target (blank values kept)."""
        return parse_qs(urlsplit(self.target).query, keep_blank_values=True)

    @property
    def is_upgrade(self) -> bool:
        """C{Connection} lists C{upgrade} and an C{Upgrade} header is present."""
        return "upgrade" in self.connection_tokens() and bool(self.get("upgrade"))


@dataclass(frozen=True, slots=True)
class ResponseHead(_HeadFields):
    """A status line and its header lines, in order, repeats kept."""

    status: int
    reason: str
    version: str
    headers: Headers


def request_head(event: h11.Request) -> RequestHead:
    """The L{RequestHead} of an h11 request event (original header names)."""
    return RequestHead(
        method=event.method.decode("ascii"),
        target=event.target.decode("ascii"),
        version="HTTP/" + event.http_version.decode("ascii"),
        headers=decode_headers(event.headers.raw_items()),
    )


def head_size(headers: Headers) -> int:
    """The encoded size of header lines (name, colon, space, value, CRLF each)."""
    return sum(len(name) + len(value) + 4 for name, value in headers)


def _check_values(headers: Headers, status: int) -> None:
    # h11 accepts any byte but NUL, CR and LF in a value; the next hop may read them otherwise
    for name, value in headers:
        for char in value:
            if (ord(char) < 0x20 and char != "\t") or ord(char) == 0x7F:
                raise HttpError(status, f"control character in the value of header {name[:40]!r}")


def check_request_head(head: RequestHead) -> None:
    """What h11 accepts but a proxy must not; raises L{HttpError}."""
    _check_values(head.headers, 400)
    if len(head.headers) > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} header lines")
    if head_size(head.headers) + len(head.method) + len(head.target) > MAX_HEAD:
        # h11 bounds an incomplete head only; a whole one can arrive in a single read
        raise HttpError(431, f"head larger than {MAX_HEAD} bytes")
    if len(head.get_all("host")) > 1:
        raise HttpError(400, "more than one Host header")
    has_te = bool(head.get_all("transfer-encoding"))
    if has_te and head.get_all("content-length"):
        raise HttpError(400, "both Content-Length and Transfer-Encoding")
    if has_te and head.version == "HTTP/1.0":
        raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")


def check_response_head(headers: Headers) -> None:
    """What h11 accepts in a response but a proxy must not relay; raises L{HttpError}(502)."""
    _check_values(headers, 502)
    if len(headers) > MAX_HEADERS:
        raise HttpError(502, f"more than {MAX_HEADERS} header lines in the response")
    if head_size(headers) > MAX_HEAD:
        raise HttpError(502, f"response head larger than {MAX_HEAD} bytes")
    if _get_all(headers, "transfer-encoding") and _get_all(headers, "content-length"):
        raise HttpError(502, "both Content-Length and Transfer-Encoding in the response")


def _matches(name: str, patterns: Sequence[str]) -> bool:
    lowered = name.lower()
    for pattern in patterns:
        if pattern.endswith("*"):
            if lowered.startswith(pattern[:-1]):
                return True
        elif lowered == pattern:
            return True
    return False


def _check_field(name: str, value: str) -> None:
    if not name or not set(name.encode("latin-1", "replace")) <= _TCHAR:
        raise ValueError(f"invalid header name {name!r}")
    for char in value:
        if (ord(char) < 0x20 and char != "\t") or ord(char) == 0x7F or ord(char) > 0xFF:
            raise ValueError(f"invalid character in the value of header {name!r}")


def rewrite_headers(
    head: RequestHead, *, remove: Iterable[str], add: Sequence[tuple[str, str]] = ()
) -> RequestHead:
    """A copy of C{head} without the C{remove}d headers, with C{add} appended.

    C{remove} holds case-insensitive names, or prefixes ending in C{*}
    (C{Impersonate-*}).  The other headers keep their order and repeats; the
    added ones come last, in the given order.  Raises C{ValueError} for an
    added header that cannot be encoded safely.
    """
    patterns = [pattern.lower() for pattern in remove]
    for name, value in add:
        _check_field(name, value)
    kept = tuple((name, value) for name, value in head.headers if not _matches(name, patterns))
    return RequestHead(
        method=head.method, target=head.target, version=head.version, headers=kept + tuple(add)
    )


@dataclass(frozen=True, slots=True)
class Forward:
    """Send this head (rewritten as the handler wants) upstream, then the body."""

    head: RequestHead


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer the request here; its body is read and dropped.

    @ivar close: close the connection after the answer.
    """

    status: int
    headers: Headers
    body: bytes
    close: bool = False


def h11_headers(headers: Headers) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


def status_phrase(status: int) -> str:
    """The reason phrase of a status (C{Error} for one not listed)."""
    try:
        return HTTPStatus(status).phrase or "Error"
    except ValueError:
        return "Error"


def error_answer(
    status: int,
    message: str,
    *,
    close: bool = False,
    reason: str | None = None,
    extra: Headers = (),
) -> Answer:
    """A local L{Answer} carrying a Kubernetes C{Status} object."""
    import json

    phrase = status_phrase(status)
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or phrase.replace(" ", ""),
        "code": status,
    }
    return Answer(
        status=status,
        headers=(
            ("Content-Type", "application/json"),
            ("Cache-Control", "no-cache, private"),
            ("X-Content-Type-Options", "nosniff"),
            *extra,
        ),
        body=json.dumps(body, separators=(",", ":")).encode("utf-8"),
        close=close,
    )


__all__ = [
    "MAX_HEAD",
    "MAX_HEADERS",
    "Answer",
    "Forward",
    "HttpError",
    "RequestHead",
    "ResponseHead",
    "check_request_head",
    "check_response_head",
    "decode_headers",
    "error_answer",
    "h11_headers",
    "request_head",
    "rewrite_headers",
    "status_phrase",
]
