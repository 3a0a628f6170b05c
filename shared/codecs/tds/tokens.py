"""Server-to-client tokens: the builders the proxy needs and a scanner of login responses.

A server reply (packet type 0x04) is a stream of tokens, each a kind byte
and a kind-specific body (MS-TDS 2.2.7).  The builders here produce the
tokens a proxy writes itself (a clean login failure, a fake login
acknowledgement, ENVCHANGE notifications, DONE).  L{scan_login_response}
splits a whole LOGIN7 response into its tokens and checks the ones it
interprets, so the Jumpoint can look at the outcome (LOGINACK, errors, a
routing redirect, the packet size, an SSPI challenge) and forward the
response with some tokens removed (L{LoginResponse.without}).

Only TDS 7.2+ layouts are produced and understood (DONE with an 8-byte row
count, ERROR with a 4-byte line number; a 2-byte line number is accepted).
Builders raise C{ValueError} for values that do not fit their fields.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from shared.codecs.tds._reader import Reader
from shared.codecs.tds.packets import TdsError

# Token kinds
ERROR = 0xAA
INFO = 0xAB
LOGINACK = 0xAD
FEATUREEXTACK = 0xAE
ENVCHANGE = 0xE3
SESSIONSTATE = 0xE4
SSPI = 0xED
FEDAUTHINFO = 0xEE
DONE = 0xFD
DONEPROC = 0xFE
DONEINPROC = 0xFF

# ENVCHANGE types
ENV_DATABASE = 1
ENV_LANGUAGE = 2
ENV_CHARSET = 3
ENV_PACKET_SIZE = 4
ENV_COLLATION = 7
ENV_BEGIN_TRAN = 8
ENV_COMMIT_TRAN = 9
ENV_ROLLBACK_TRAN = 10
ENV_MIRROR_PARTNER = 13
ENV_RESET_ACK = 18
ENV_ROUTING = 20

# DONE status bits
DONE_FINAL = 0x00
DONE_MORE = 0x01
DONE_ERROR = 0x02
DONE_INXACT = 0x04
DONE_COUNT = 0x10
DONE_ATTN = 0x20
DONE_SRVERROR = 0x100

LOGIN_FAILED = 18456
"""The error number SQL Server uses for every failed login."""

SECURITY_SEVERITY = 14

_USHORT_LEN = frozenset({ERROR, INFO, LOGINACK, ENVCHANGE, SSPI})
_DWORD_LEN = frozenset({SESSIONSTATE, FEDAUTHINFO})
_DONE_KINDS = frozenset({DONE, DONEPROC, DONEINPROC})
_DONE = struct.Struct("<BHHQ")
_LENGTH = struct.Struct("<BH")


def _utf16(text: str) -> bytes:
    try:
        return text.encode("utf-16-le")
    except UnicodeEncodeError:
        raise ValueError("text is not encodable as UTF-16") from None


def b_varchar(text: str) -> bytes:
    """A string with a one-byte length in UTF-16 code units."""
    raw = _utf16(text)
    if len(raw) // 2 > 0xFF:
        raise ValueError(f"string of {len(raw) // 2} UTF-16 units does not fit a B_VARCHAR")
    return bytes([len(raw) // 2]) + raw


def us_varchar(text: str) -> bytes:
    """A string with a two-byte length in UTF-16 code units."""
    raw = _utf16(text)
    if len(raw) // 2 > 0xFFFF:
        raise ValueError(f"string of {len(raw) // 2} UTF-16 units does not fit a US_VARCHAR")
    return struct.pack("<H", len(raw) // 2) + raw


def b_varbyte(data: bytes) -> bytes:
    """Bytes with a one-byte length."""
    if len(data) > 0xFF:
        raise ValueError(f"{len(data)} bytes do not fit a B_VARBYTE")
    return bytes([len(data)]) + data


def _token(kind: int, body: bytes) -> bytes:
    if len(body) > 0xFFFF:
        raise ValueError(f"token 0x{kind:02x} body of {len(body)} bytes exceeds 65535")
    return _LENGTH.pack(kind, len(body)) + body


def _message_token(
    kind: int,
    number: int,
    state: int,
    severity: int,
    message: str,
    server: str,
    procedure: str,
    line: int,
) -> bytes:
    try:
        head = struct.pack("<iBB", number, state, severity)
        tail = struct.pack("<i", line)
    except struct.error as error:
        raise ValueError(f"token field out of range: {error}") from None
    body = head + us_varchar(message) + b_varchar(server) + b_varchar(procedure) + tail
    return _token(kind, body)


def error_token(
    number: int,
    state: int,
    severity: int,
    message: str,
    server: str = "",
    procedure: str = "",
    line: int = 0,
) -> bytes:
    """An ERROR token (0xAA): number, state, class (severity), text, server, procedure, line."""
    return _message_token(ERROR, number, state, severity, message, server, procedure, line)


def info_token(
    number: int,
    state: int,
    severity: int,
    message: str,
    server: str = "",
    procedure: str = "",
    line: int = 0,
) -> bytes:
    """An INFO token (0xAB), the same layout as L{error_token}."""
    return _message_token(INFO, number, state, severity, message, server, procedure, line)


def loginack_token(
    tds_version: int = 0x74000004,
    program: str = "Microsoft SQL Server",
    version: tuple[int, int, int, int] = (15, 0, 20, 0),
) -> bytes:
    """A LOGINACK token (0xAD) with interface 1 (T-SQL).

    C{tds_version} is the same integer as in LOGIN7 but goes on the wire
    big-endian (7.4 is C{74 00 00 04}).  C{version} is the four ProgVersion
    bytes as sent: major, minor, build high byte, build low byte.
    """
    if len(version) != 4 or not all(0 <= part <= 0xFF for part in version):
        raise ValueError("LOGINACK version must be four bytes")
    try:
        interface_version = struct.pack(">BI", 1, tds_version)
    except struct.error as error:
        raise ValueError(f"LOGINACK TDS version out of range: {error}") from None
    return _token(LOGINACK, interface_version + b_varchar(program) + bytes(version))


def done_token(status: int = 0, curcmd: int = 0, rowcount: int = 0, kind: int = DONE) -> bytes:
    """A DONE (0xFD), DONEPROC (0xFE) or DONEINPROC (0xFF) token."""
    if kind not in _DONE_KINDS:
        raise ValueError(f"0x{kind:02x} is not a DONE token kind")
    try:
        return _DONE.pack(kind, status, curcmd, rowcount)
    except struct.error as error:
        raise ValueError(f"DONE field out of range: {error}") from None


def envchange_token(kind: int, new: bytes, old: bytes) -> bytes:
    """An ENVCHANGE token (0xE3) of type C{kind}.

    C{new} and C{old} are the values as they go on the wire, length prefix
    included (L{b_varchar} for the string types, L{b_varbyte} for collation
    and transactions).
    """
    if not 0 <= kind <= 0xFF:
        raise ValueError(f"invalid ENVCHANGE type {kind}")
    return _token(ENVCHANGE, bytes([kind]) + new + old)


def envchange_database(new: str, old: str) -> bytes:
    return envchange_token(ENV_DATABASE, b_varchar(new), b_varchar(old))


def envchange_packet_size(new: int, old: int) -> bytes:
    """ENVCHANGE type 4: the packet sizes as decimal text (C{"4096"})."""
    return envchange_token(ENV_PACKET_SIZE, b_varchar(str(new)), b_varchar(str(old)))


def routing_envchange(port: int, server: str) -> bytes:
    """ENVCHANGE type 20 (routing, TDS 7.4): protocol TCP, C{port}, alternate C{server}."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"invalid port {port}")
    value = struct.pack("<BH", 0, port) + us_varchar(server)
    return envchange_token(ENV_ROUTING, struct.pack("<H", len(value)) + value, b"\0\0")


def login_failed(message: str, server: str = "") -> bytes:
    """The payload of a type-0x04 message refusing a login.

    ERROR 18456 (state 1, class 14) with C{message} as its whole text (the
    caller writes the safe sentence, e.g. "Login failed for user 'x'.")
    followed by DONE with the error bit.  Send it with EOM, then close.
    """
    return error_token(LOGIN_FAILED, 1, SECURITY_SEVERITY, message, server) + done_token(DONE_ERROR)


@dataclass(frozen=True, slots=True)
class Token:
    """One token of a server reply.

    @ivar kind: the token byte.
    @ivar subtype: the ENVCHANGE type, C{None} for the other kinds.
    @ivar raw: the whole token, kind byte included.
    """

    kind: int
    subtype: int | None
    raw: bytes


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """The fields of an ERROR (or INFO) token."""

    number: int
    state: int
    severity: int
    message: str


@dataclass(frozen=True, slots=True)
class LoginAck:
    """The fields of a LOGINACK token (C{tds_version} read big-endian)."""

    interface: int
    tds_version: int
    program: str
    version: tuple[int, int, int, int]


def decode_message_token(token: Token) -> ErrorInfo:
    """Decode an ERROR or INFO token; raises L{TdsError}."""
    reader = Reader(token.raw, "ERROR token", 3)
    number = reader.i32()
    state = reader.u8()
    severity = reader.u8()
    message = reader.us_varchar()
    reader.b_varchar()
    reader.b_varchar()
    if reader.remaining not in (2, 4):
        raise TdsError("ERROR token has a malformed line number")
    return ErrorInfo(number, state, severity, message)


def decode_loginack(token: Token) -> LoginAck:
    """Decode a LOGINACK token; raises L{TdsError}."""
    reader = Reader(token.raw, "LOGINACK token", 3)
    interface = reader.u8()
    tds_version = int.from_bytes(reader.take(4), "big")
    program = reader.b_varchar()
    major, minor, high, low = reader.take(4)
    if reader.remaining:
        raise TdsError("LOGINACK token has trailing bytes")
    return LoginAck(interface, tds_version, program, (major, minor, high, low))


def _decode_routing(token: Token) -> tuple[str, int]:
    reader = Reader(token.raw, "routing ENVCHANGE", 4)
    size = reader.u16()
    value = Reader(reader.take(size), "routing ENVCHANGE value")
    protocol = value.u8()
    if protocol != 0:
        raise TdsError(f"routing ENVCHANGE with unknown protocol {protocol}")
    port = value.u16()
    server = value.us_varchar()
    if value.remaining:
        raise TdsError("routing ENVCHANGE value has trailing bytes")
    reader.take(2)  # old value: an empty USHORT-length value
    if reader.remaining:
        raise TdsError("routing ENVCHANGE has trailing bytes")
    return server, port


def _decode_packet_size(token: Token) -> int:
    reader = Reader(token.raw, "packet size ENVCHANGE", 4)
    text = reader.b_varchar()
    if not (text.isascii() and text.isdigit()) or len(text) > 6:
        raise TdsError("packet size ENVCHANGE does not hold a decimal number")
    return int(text)


def _skip_featureextack(reader: Reader) -> None:
    while True:
        feature = reader.u8()
        if feature == 0xFF:
            return
        reader.skip(reader.u32())


@dataclass(frozen=True, slots=True)
class LoginResponse:
    """The tokens of a LOGIN7 (or SSPI) response, in order."""

    tokens: tuple[Token, ...]

    @property
    def loginack(self) -> Token | None:
        """The LOGINACK token; without one, the login failed (or needs another SSPI leg)."""
        return next((token for token in self.tokens if token.kind == LOGINACK), None)

    @property
    def errors(self) -> tuple[ErrorInfo, ...]:
        """The ERROR tokens (INFO excluded)."""
        return tuple(decode_message_token(token) for token in self.tokens if token.kind == ERROR)

    @property
    def routing(self) -> tuple[str, int] | None:
        """(server, port) of the last ENVCHANGE type 20, if any."""
        found = None
        for token in self.tokens:
            if token.kind == ENVCHANGE and token.subtype == ENV_ROUTING:
                found = _decode_routing(token)
        return found

    @property
    def packet_size(self) -> int | None:
        """The new value of the last ENVCHANGE type 4, if any."""
        found = None
        for token in self.tokens:
            if token.kind == ENVCHANGE and token.subtype == ENV_PACKET_SIZE:
                found = _decode_packet_size(token)
        return found

    @property
    def sspi(self) -> bytes | None:
        """The data of the first SSPI token (the server's next security blob), if any."""
        for token in self.tokens:
            if token.kind == SSPI:
                return token.raw[3:]
        return None

    @property
    def done(self) -> bool:
        """Whether the stream ends with a final DONE (0xFD without the MORE bit)."""
        if not self.tokens or self.tokens[-1].kind != DONE:
            return False
        (status,) = struct.unpack_from("<H", self.tokens[-1].raw, 1)
        return not status & DONE_MORE

    def without(self, kinds: set[tuple[int, int | None]]) -> bytes:
        """The payload again, minus every token whose C{(kind, subtype)} is in C{kinds}.

        C{{(0xE3, 20), (0xE3, 13)}} drops routing and mirroring-partner
        notifications; C{(0xAB, None)} drops every INFO token.  The other
        tokens keep their bytes.
        """
        return b"".join(
            token.raw for token in self.tokens if (token.kind, token.subtype) not in kinds
        )


def scan_login_response(payload: bytes) -> LoginResponse:
    """Split a login response into tokens and check those L{LoginResponse} reads.

    Known kinds: ERROR, INFO, LOGINACK, ENVCHANGE, SSPI (USHORT length),
    SESSIONSTATE and FEDAUTHINFO (DWORD length), FEATUREEXTACK and the DONE
    family.  Any other kind, a truncated token, or a malformed ERROR,
    LOGINACK, packet-size or routing ENVCHANGE raises L{TdsError}.
    """
    tokens: list[Token] = []
    reader = Reader(payload, "login response")
    while reader.remaining:
        start = reader.position
        kind = reader.u8()
        subtype: int | None = None
        if kind in _USHORT_LEN:
            size = reader.u16()
            body = Reader(reader.take(size), f"token 0x{kind:02x}")
            if kind == ENVCHANGE:
                subtype = body.u8()
        elif kind in _DWORD_LEN:
            reader.skip(reader.u32())
        elif kind == FEATUREEXTACK:
            _skip_featureextack(reader)
        elif kind in _DONE_KINDS:
            reader.skip(_DONE.size - 1)
        else:
            raise TdsError(f"unexpected token 0x{kind:02x} in a login response")
        token = Token(kind, subtype, payload[start : reader.position])
        if kind in (ERROR, INFO):
            decode_message_token(token)
        elif kind == LOGINACK:
            decode_loginack(token)
        elif subtype == ENV_ROUTING:
            _decode_routing(token)
        elif subtype == ENV_PACKET_SIZE:
            _decode_packet_size(token)
        tokens.append(token)
    return LoginResponse(tuple(tokens))
