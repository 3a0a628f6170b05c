"""A sans-IO HTTP/1.1 head parser, header rewriting and a chunked-body decoder.

The Jumpoint reads kubectl's request heads from the tunnel, rewrites their
headers (strips the client's C{Authorization} and C{Impersonate-*}, adds the
cluster credential) and re-encodes them for the cluster; it reads the
cluster's response head for the status (101 detection, audit) and relays
bodies without buffering them.

Rules:

  - L{RequestHeadParser} and L{ResponseHeadParser} are fed bytes in arbitrary
    chunks and return the head once it is complete; C{rest()} holds the bytes
    after it (body, or the upgraded protocol after a 101).  Header order and
    repeated headers are kept as separate lines (kubernetes/kubernetes#95733:
    merged C{X-Stream-Protocol-Version} lines break exec).
  - Line ends are CRLF; a bare LF is tolerated as a line end in a head (RFC
    9112 section 2.2) because the head is always re-encoded with CRLF before
    it goes anywhere; a bare CR is refused.  Obsolete line folding,
    whitespace before the colon, missing or repeated C{Host} (HTTP/1.1),
    invalid or conflicting C{Content-Length}, any C{Transfer-Encoding} other
    than C{chunked}, and C{Content-Length} together with C{chunked} are
    refused.
  - L{ChunkedDecoder} is strict (CRLF only, hex sizes, no whitespace): the
    Jumpoint relays the chunked bytes unchanged, so it must never accept a
    framing the cluster could read differently.

Errors are L{HttpError} with the status to answer (400, 414, 431, 501, 505
for requests; 502 for everything wrong in a response) and a reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

MAX_HEAD = 64 * 1024
MAX_HEADERS = 200
MAX_LINE = 16 * 1024
"""Longest request line or header line (bearer tokens can be several KiB)."""

MAX_CHUNK_LINE = 4096
"""Longest chunk-size line (size and extensions)."""

MAX_TRAILERS = 16 * 1024
"""Largest trailer section of a chunked body."""

MAX_LEADING_EMPTY_LINES = 8
"""Empty lines tolerated before a request line (RFC 9112 section 2.2)."""

_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")
_VERSIONS = ("HTTP/1.1", "HTTP/1.0")


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


def _get(headers: Headers, name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None


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


def _framing(headers: Headers, status: int) -> tuple[int | None, bool]:
    """(Content-Length, chunked) of a message; raises L{HttpError}."""
    lengths = _get_all(headers, "content-length")
    length: int | None = None
    for value in lengths:
        if not value or len(value) > 18 or not value.isascii() or not value.isdigit():
            raise HttpError(status, f"invalid Content-Length {value[:40]!r}")
        if length is not None and int(value) != length:
            raise HttpError(status, "conflicting Content-Length headers")
        length = int(value)
    codings = _tokens(headers, "transfer-encoding")
    if _get_all(headers, "transfer-encoding") and not codings:
        raise HttpError(status, "empty Transfer-Encoding")
    chunked = False
    if codings:
        if codings != ("chunked",):
            raise HttpError(
                501 if status == 400 else status,
                f"unsupported Transfer-Encoding {', '.join(codings)[:80]!r}",
            )
        chunked = True
        if length is not None:
            raise HttpError(status, "both Content-Length and Transfer-Encoding: chunked")
    return length, chunked


class _HeadFields:
    """Header helpers shared by request and response heads."""

    headers: Headers
    version: str

    def get(self, name: str) -> str | None:
        """The first value of a header (case-insensitive name), or None."""
        return _get(self.headers, name)

    def get_all(self, name: str) -> tuple[str, ...]:
        """Every value of a header, one per line, in order."""
        return _get_all(self.headers, name)

    def connection_tokens(self) -> tuple[str, ...]:
        """The lowercased tokens of every C{Connection} line."""
        return _tokens(self.headers, "connection")

    @property
    def keep_alive(self) -> bool:
        """Whether the connection stays open after this message."""
        tokens = self.connection_tokens()
        if "close" in tokens:
            return False
        return self.version == "HTTP/1.1" or "keep-alive" in tokens


@dataclass(frozen=True, slots=True)
class RequestHead(_HeadFields):
    """A request line and its header lines, in order, repeats kept."""

    method: str
    target: str
    version: str
    headers: Headers

    @property
    def path(self) -> str:
        """The path of the target, still percent-encoded."""
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        """The query of the target (blank values kept)."""
        return parse_qs(urlsplit(self.target).query, keep_blank_values=True)

    @property
    def is_upgrade(self) -> bool:
        """C{Connection} lists C{upgrade} and an C{Upgrade} header is present."""
        return "upgrade" in self.connection_tokens() and bool(self.get("upgrade"))

    @property
    def content_length(self) -> int | None:
        return _framing(self.headers, 400)[0]

    @property
    def chunked(self) -> bool:
        return _framing(self.headers, 400)[1]

    @property
    def has_body(self) -> bool:
        """Whether a body follows the head (chunked or a non-zero length)."""
        length, chunked = _framing(self.headers, 400)
        return chunked or bool(length)


@dataclass(frozen=True, slots=True)
class ResponseHead(_HeadFields):
    """A status line and its header lines, in order, repeats kept."""

    status: int
    reason: str
    version: str
    headers: Headers

    @property
    def content_length(self) -> int | None:
        return _framing(self.headers, 502)[0]

    @property
    def chunked(self) -> bool:
        return _framing(self.headers, 502)[1]

    @property
    def is_switching(self) -> bool:
        """A 101 Switching Protocols answer: the bytes after it are the new protocol."""
        return self.status == 101

    def body_kind(self, request_method: str) -> str:
        """How the body of this response ends (RFC 9112 section 6.3).

        C{"none"}, C{"length"} (read L{content_length} bytes), C{"chunked"}
        (use a L{ChunkedDecoder}) or C{"close"} (until the connection closes).
        A 101 answer has no body: what follows is the upgraded protocol.
        """
        if request_method == "HEAD" or self.status < 200 or self.status in (204, 304):
            return "none"
        length, chunked = _framing(self.headers, 502)
        if chunked:
            return "chunked"
        if length is not None:
            return "length" if length else "none"
        return "close"


class _HeadParser:
    """Finds the end of a head, splits it into lines and checks the header fields."""

    _error_status = 400

    def __init__(self, max_head: int, max_headers: int, max_line: int) -> None:
        self._buffer = bytearray()
        self._scanned = 0
        self._max_head = max_head
        self._max_headers = max_headers
        self._max_line = max_line
        self._rest: bytes | None = None
        self._skip_leading = False

    @property
    def done(self) -> bool:
        """Whether the head is complete."""
        return self._rest is not None

    def rest(self) -> bytes:
        """The bytes fed after the end of the head (empty before it is complete)."""
        return self._rest if self._rest is not None else b""

    def _feed_lines(self, data: bytes) -> list[bytes] | None:
        if self._rest is not None:
            raise RuntimeError("the head is already complete; read rest() instead")
        self._buffer += data
        if self._skip_leading:
            self._strip_leading()
        end = -1
        start = max(0, self._scanned - 2)
        while True:
            index = self._buffer.find(b"\n", start)
            if index == -1:
                break
            nxt = self._buffer[index + 1 : index + 3]
            if nxt[:1] == b"\n":
                end = index + 2
                break
            if nxt == b"\r\n":
                end = index + 3
                break
            if len(nxt) < 2 and nxt != b"\n":
                break  # not enough bytes yet to tell
            start = index + 1
        if end == -1:
            self._scanned = len(self._buffer)
            if len(self._buffer) > self._max_head:
                raise HttpError(431, f"head larger than {self._max_head} bytes")
            self._check_partial_line()
            return None
        if end > self._max_head:
            raise HttpError(431, f"head larger than {self._max_head} bytes")
        head = bytes(self._buffer[:end])
        self._rest = bytes(self._buffer[end:])
        self._buffer.clear()
        lines = head.split(b"\n")[:-2]  # the head ends with the empty line
        result: list[bytes] = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if b"\r" in line:
                raise HttpError(self._error_status, "bare CR in head")
            if len(line) > self._max_line:
                raise HttpError(431 if result else 414, "line too long")
            result.append(line)
        return result

    def _strip_leading(self) -> None:
        count = 0
        while count <= MAX_LEADING_EMPTY_LINES:
            if self._buffer.startswith(b"\r\n"):
                del self._buffer[:2]
            elif self._buffer.startswith(b"\n"):
                del self._buffer[:1]
            else:
                break
            count += 1
        if count > MAX_LEADING_EMPTY_LINES:
            raise HttpError(400, "too many empty lines before the request line")
        if self._buffer and self._buffer != b"\r":
            self._skip_leading = False

    def _check_partial_line(self) -> None:
        last = self._buffer.rfind(b"\n")
        if len(self._buffer) - last - 1 > self._max_line + 1:
            raise HttpError(431 if last != -1 else 414, "line too long")

    def _headers(self, lines: list[bytes]) -> Headers:
        if len(lines) > self._max_headers:
            raise HttpError(431, f"more than {self._max_headers} header lines")
        status = self._error_status
        headers = []
        for line in lines:
            if line[:1] in (b" ", b"\t"):
                raise HttpError(status, "obsolete line folding")
            name, colon, value = line.partition(b":")
            if not colon:
                raise HttpError(status, "header line without a colon")
            if not name or not set(name) <= _TCHAR:
                raise HttpError(status, f"invalid header name {name[:40]!r}")
            value = value.strip(b" \t")
            for byte in value:
                if (byte < 0x20 and byte != 0x09) or byte == 0x7F:
                    raise HttpError(status, "control character in header value")
            headers.append((name.decode("ascii"), value.decode("latin-1")))
        return tuple(headers)


class RequestHeadParser(_HeadParser):
    """Incremental parser of one request head (feed, then read L{rest})."""

    def __init__(
        self, max_head: int = MAX_HEAD, max_headers: int = MAX_HEADERS, max_line: int = MAX_LINE
    ) -> None:
        super().__init__(max_head, max_headers, max_line)
        self._skip_leading = True

    def feed(self, data: bytes) -> RequestHead | None:
        """Add bytes; the head once complete, else None; raises L{HttpError}."""
        lines = self._feed_lines(data)
        if lines is None:
            return None
        if not lines:
            raise HttpError(400, "empty request head")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise HttpError(400, "malformed request line")
        method, target, version = parts
        if not method or not set(method) <= _TCHAR:
            raise HttpError(400, "invalid method")
        if not target or any(byte < 0x21 or byte > 0x7E for byte in target):
            raise HttpError(400, "invalid request target")
        if not (target.startswith(b"/") or (target == b"*" and method == b"OPTIONS")):
            raise HttpError(400, "request target is not in origin form")
        version_text = version.decode("ascii", "replace")
        if version_text not in _VERSIONS:
            if version_text.startswith("HTTP/"):
                raise HttpError(505, f"unsupported version {version_text[:20]!r}")
            raise HttpError(400, "malformed request line")
        head = RequestHead(
            method=method.decode("ascii"),
            target=target.decode("ascii"),
            version=version_text,
            headers=self._headers(lines[1:]),
        )
        hosts = head.get_all("host")
        if len(hosts) > 1:
            raise HttpError(400, "more than one Host header")
        if head.version == "HTTP/1.1" and not hosts:
            raise HttpError(400, "no Host header")
        if head.version == "HTTP/1.0" and head.get_all("transfer-encoding"):
            raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
        _framing(head.headers, 400)
        return head


class ResponseHeadParser(_HeadParser):
    """Incremental parser of one response head; errors carry status 502.

    An interim 1xx other than 101 (e.g. 100 Continue) is returned like any
    head: parse the next head from L{rest} with a new parser.
    """

    _error_status = 502

    def __init__(
        self, max_head: int = MAX_HEAD, max_headers: int = MAX_HEADERS, max_line: int = MAX_LINE
    ) -> None:
        super().__init__(max_head, max_headers, max_line)

    def feed(self, data: bytes) -> ResponseHead | None:
        """Add bytes; the head once complete, else None; raises L{HttpError}."""
        try:
            lines = self._feed_lines(data)
        except HttpError as error:
            raise HttpError(502, error.reason) from None
        if lines is None:
            return None
        if not lines:
            raise HttpError(502, "empty response head")
        version, _, rest = lines[0].partition(b" ")
        code, _, reason = rest.partition(b" ")
        version_text = version.decode("ascii", "replace")
        if version_text not in _VERSIONS:
            raise HttpError(502, "malformed status line")
        if len(code) != 3 or not code.isdigit() or not 100 <= int(code) <= 599:
            raise HttpError(502, "malformed status code")
        if any((byte < 0x20 and byte != 0x09) or byte == 0x7F for byte in reason):
            raise HttpError(502, "control character in reason phrase")
        try:
            headers = self._headers(lines[1:])
        except HttpError as error:
            raise HttpError(502, error.reason) from None
        head = ResponseHead(
            status=int(code),
            reason=reason.decode("latin-1"),
            version=version_text,
            headers=headers,
        )
        _framing(head.headers, 502)
        return head


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
    head: RequestHead, *, remove: Iterable[str], add: Sequence[tuple[str, str]]
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
        method=head.method,
        target=head.target,
        version=head.version,
        headers=kept + tuple(add),
    )


def encode_head(head: RequestHead) -> bytes:
    """The head as bytes, CRLF line ends, one line per header (repeats kept)."""
    if not head.method or not set(head.method.encode("latin-1", "replace")) <= _TCHAR:
        raise ValueError(f"invalid method {head.method!r}")
    if not head.target or any(not 0x21 <= ord(c) <= 0x7E for c in head.target):
        raise ValueError("invalid request target")
    if head.version not in _VERSIONS:
        raise ValueError(f"invalid version {head.version!r}")
    lines = [f"{head.method} {head.target} {head.version}"]
    for name, value in head.headers:
        _check_field(name, value)
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class ChunkedDecoder:
    """Strict incremental decoder of a chunked body (RFC 9112 section 7.1).

    L{feed} returns the data pieces found so far (never buffering chunk data);
    L{done} tells when the terminating chunk and trailers have been read and
    L{rest} holds the bytes after the body.  L{data_bytes} counts the decoded
    body and L{wire_bytes} the chunked bytes consumed.  Chunk extensions are
    accepted and ignored; trailers are kept in L{trailers} (raw lines) up to
    L{MAX_TRAILERS} bytes.  Raises L{HttpError} (status 400 by default, pass
    502 when decoding a response).
    """

    def __init__(
        self,
        max_line: int = MAX_CHUNK_LINE,
        max_trailers: int = MAX_TRAILERS,
        error_status: int = 400,
    ) -> None:
        self._max_line = max_line
        self._max_trailers = max_trailers
        self._status = error_status
        self._state = "size"
        self._line = bytearray()
        self._remaining = 0
        self._trailer_bytes = 0
        self._rest = bytearray()
        self.trailers: list[bytes] = []
        self.data_bytes = 0
        self.wire_bytes = 0

    @property
    def done(self) -> bool:
        return self._state == "done"

    def rest(self) -> bytes:
        """Bytes fed after the end of the body."""
        return bytes(self._rest)

    def _fail(self, reason: str) -> HttpError:
        self._state = "error"
        return HttpError(self._status, reason)

    def _take_line(self, data: memoryview, limit: int) -> tuple[bytes | None, int]:
        """A CRLF-terminated line (without CRLF) and the bytes consumed."""
        index = bytes(data[: limit + 2 - len(self._line)]).find(b"\n")
        if index == -1:
            self._line += data[: limit + 2]
            if len(self._line) > limit + 1:
                raise self._fail("chunked line too long")
            return None, len(data)
        self._line += data[: index + 1]
        line = bytes(self._line)
        self._line.clear()
        if len(line) < 2 or line[-2:] != b"\r\n":
            raise self._fail("chunked line not ended by CRLF")
        line = line[:-2]
        if b"\r" in line:
            raise self._fail("bare CR in chunked framing")
        if len(line) > limit:
            raise self._fail("chunked line too long")
        return line, index + 1

    def _parse_size(self, line: bytes) -> int:
        size, _, extensions = line.partition(b";")
        if not size or len(size) > 16 or not set(size) <= _HEXDIGITS:
            raise self._fail(f"invalid chunk size {line[:40]!r}")
        if extensions and any(b <= 0x20 or b == 0x7F for b in extensions):
            raise self._fail("invalid chunk extension")
        return int(size, 16)

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; the body data found in them, in order."""
        if self._state == "error":
            raise HttpError(self._status, "chunked body already failed")
        if self._state == "done":
            self._rest += data
            return []
        view = memoryview(data)
        pieces: list[bytes] = []
        position = 0
        while position < len(view) and self._state != "done":
            chunk = view[position:]
            if self._state == "size":
                line, used = self._take_line(chunk, self._max_line)
                position += used
                if line is None:
                    continue
                self._remaining = self._parse_size(line)
                self._state = "data" if self._remaining else "trailer"
            elif self._state == "data":
                used = min(self._remaining, len(chunk))
                pieces.append(bytes(chunk[:used]))
                self._remaining -= used
                self.data_bytes += used
                position += used
                if not self._remaining:
                    self._state = "data_end"
            elif self._state == "data_end":
                line, used = self._take_line(chunk, 0)
                position += used
                if line is not None:
                    self._state = "size"
            else:  # trailer
                limit = self._max_trailers - self._trailer_bytes
                line, used = self._take_line(chunk, max(limit, 0))
                position += used
                self._trailer_bytes += used
                if self._trailer_bytes > self._max_trailers:
                    raise self._fail("trailers too large")
                if line is None:
                    continue
                if not line:
                    self._state = "done"
                else:
                    if line[:1] in (b" ", b"\t") or b":" not in line:
                        raise self._fail("malformed trailer line")
                    self.trailers.append(line)
        self.wire_bytes += position
        if self._state == "done":
            self._rest += view[position:]
        return pieces
