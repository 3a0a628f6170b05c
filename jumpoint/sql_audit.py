"""What the Jumpoint audits from client requests: SQL batch text and RPC procedure names.

Both read a whole reassembled message (never a single packet: ALL_HEADERS
is only at the start of the first one).  Since TDS 7.2 both kinds start
with ALL_HEADERS (MS-TDS 2.2.5.3): a DWORD total length that counts itself,
then headers of C{DWORD length, USHORT type, data}.  It is skipped when the
first DWORD is a plausible total whose headers parse exactly; otherwise the
message is taken to have none (TDS 7.1 clients).

A SQL batch (2.2.6.7) is the UTF-16LE text.  An RPC request (2.2.6.6) is a
procedure name (or the id of a well-known procedure), option flags, and
parameters (name, status, TYPE_INFO, value); further calls in the same
message follow a batch-flag byte.  L{parse_rpc} reads the parameters it
knows how to skip and, for the procedures that take a statement
(sp_executesql, sp_prepare, sp_prepexec, sp_cursoropen, ...), decodes that
statement; at the first parameter it cannot read (a UDT, a table-valued or
encrypted parameter) it stops and returns the calls found so far.  Only
truncated or inconsistent framing raises L{TdsError}.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from shared.codecs.tds._reader import Reader
from shared.codecs.tds.packets import TdsError

MAX_TEXT = 65536
"""Default number of UTF-16 code units of SQL text kept for the audit."""

PROCEDURES = {
    1: "sp_cursor",
    2: "sp_cursoropen",
    3: "sp_cursorprepare",
    4: "sp_cursorexecute",
    5: "sp_cursorprepexec",
    6: "sp_cursorunprepare",
    7: "sp_cursorfetch",
    8: "sp_cursoroption",
    9: "sp_cursorclose",
    10: "sp_executesql",
    11: "sp_prepare",
    12: "sp_execute",
    13: "sp_prepexec",
    14: "sp_prepexecrpc",
    15: "sp_unprepare",
}
"""Procedure names of the ProcIDs a client can send instead of a name."""

STATEMENT_PARAMETER = {
    "sp_executesql": 0,
    "sp_cursoropen": 1,
    "sp_cursorprepare": 2,
    "sp_prepare": 2,
    "sp_prepexec": 2,
    "sp_cursorprepexec": 3,
}
"""Position of the SQL statement among the parameters of these procedures."""

_HEADER_TYPES = frozenset({1, 2, 3})
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_BATCH_FLAGS = frozenset({0x80, 0xFE, 0xFF})
_PROC_ID = 0xFFFF
_PARAM_ENCRYPTED = 0x08
_PLP_NULL = 0xFFFFFFFFFFFFFFFF

# Types whose value has a fixed size and no length in TYPE_INFO.
_FIXED = {
    0x1F: 0,  # NULL
    0x30: 1,  # TINYINT
    0x32: 1,  # BIT
    0x34: 2,  # SMALLINT
    0x38: 4,  # INT
    0x3A: 4,  # SMALLDATETIME
    0x3B: 4,  # REAL
    0x3C: 8,  # MONEY
    0x3D: 8,  # DATETIME
    0x3E: 8,  # FLOAT
    0x7A: 4,  # SMALLMONEY
    0x7F: 8,  # BIGINT
}
# One-byte maximum length in TYPE_INFO, one-byte length before the value.
_BYTELEN = frozenset(
    {
        0x24,  # UNIQUEIDENTIFIER
        0x26,  # INTN
        0x68,  # BITN
        0x6D,  # FLTN
        0x6E,  # MONEYN
        0x6F,  # DATETIMN
        0x25,  # VARBINARY (legacy)
        0x2D,  # BINARY (legacy)
        0x27,  # VARCHAR (legacy)
        0x2F,  # CHAR (legacy)
    }
)
_DECIMAL = frozenset({0x6A, 0x6C})  # DECIMALN, NUMERICN: length, precision, scale
_SCALED = frozenset({0x29, 0x2A, 0x2B})  # TIME, DATETIME2, DATETIMEOFFSET: scale
_DATE = 0x28
_USHORTLEN = frozenset({0xA5, 0xAD})  # VARBINARY, BINARY
_USHORTLEN_COLLATED = frozenset({0xA7, 0xAF, 0xE7, 0xEF})  # VARCHAR, CHAR, NVARCHAR, NCHAR
_LONGLEN = frozenset({0x22, 0x62})  # IMAGE, SQL_VARIANT
_LONGLEN_COLLATED = frozenset({0x23, 0x63})  # TEXT, NTEXT
_XML = 0xF1
_UNICODE = frozenset({0xE7, 0xEF, 0x63})  # NVARCHAR, NCHAR, NTEXT
_COLLATION_SIZE = 5


def _all_headers_size(payload: bytes) -> int:
    """The size of the leading ALL_HEADERS, or 0 when the message does not start with one."""
    if len(payload) < 4:
        return 0
    total: int = _U32.unpack_from(payload)[0]
    if not 4 <= total <= len(payload):
        return 0
    position = 4
    while position < total:
        if total - position < 6:
            return 0
        (size,) = _U32.unpack_from(payload, position)
        (kind,) = _U16.unpack_from(payload, position + 4)
        if size < 6 or size > total - position or kind not in _HEADER_TYPES:
            return 0
        position += size
    return total


def _decode_text(raw: bytes, max_text: int) -> str:
    return raw[: 2 * max_text].decode("utf-16-le", errors="replace")


def describe_sql_batch(payload: bytes, max_text: int = MAX_TEXT) -> str:
    """The text of a SQL batch message, at most C{max_text} UTF-16 code units.

    Invalid UTF-16 becomes U+FFFD; an odd number of text bytes raises L{TdsError}.
    """
    start = _all_headers_size(payload)
    if (len(payload) - start) % 2:
        raise TdsError("SQL batch text has an odd number of bytes")
    return _decode_text(payload[start:], max_text)


@dataclass(frozen=True, slots=True)
class RpcCall:
    """One call of an RPC request.

    @ivar name: the procedure name as sent, or the name of C{proc_id}
        (C{"proc 99"} for an unknown id).
    @ivar proc_id: the ProcID when the client sent one instead of a name.
    @ivar statement: the SQL text of a statement-taking procedure (see
        L{STATEMENT_PARAMETER}) when that parameter could be read.
    @ivar complete: whether every parameter of this call was read.
    """

    name: str
    proc_id: int | None
    statement: str | None
    complete: bool


def _read_plp(reader: Reader, keep: int) -> bytes | None:
    """Read a PLP value; return its first C{keep} bytes (C{None} for NULL)."""
    if reader.u64() == _PLP_NULL:
        return None
    kept: list[bytes] = []
    budget = keep
    while True:
        size = reader.u32()
        if size == 0:
            return b"".join(kept)
        if budget > 0:
            part = reader.take(size)
            kept.append(part[:budget])
            budget -= len(part)
        else:
            reader.skip(size)


def _read_value(reader: Reader, kind: int, keep: int) -> tuple[bool, bytes | None]:
    """Skip the TYPE_INFO and value of one parameter of type C{kind}.

    Returns C{(known, data)}: C{known} is false for a type this module cannot
    skip (the reader is then left in an unknown place); C{data} holds the
    first C{keep} bytes of the value (C{None} for NULL).
    """
    if kind in _FIXED:
        return True, reader.take(_FIXED[kind])[:keep]
    if kind in _BYTELEN or kind in _DECIMAL or kind in _SCALED or kind == _DATE:
        if kind != _DATE:
            reader.u8()
        if kind in _DECIMAL:
            reader.skip(2)
        size = reader.u8()
        return True, reader.take(size)[:keep]
    if kind in _USHORTLEN or kind in _USHORTLEN_COLLATED:
        maximum = reader.u16()
        if kind in _USHORTLEN_COLLATED:
            reader.skip(_COLLATION_SIZE)
        if maximum == 0xFFFF:
            return True, _read_plp(reader, keep)
        size = reader.u16()
        if size == 0xFFFF:
            return True, None
        return True, reader.take(size)[:keep]
    if kind in _LONGLEN or kind in _LONGLEN_COLLATED:
        reader.u32()
        if kind in _LONGLEN_COLLATED:
            reader.skip(_COLLATION_SIZE)
        size = reader.u32()
        if size == 0xFFFFFFFF:
            return True, None
        return True, reader.take(size)[:keep]
    if kind == _XML:
        if reader.u8():
            reader.b_varchar()
            reader.b_varchar()
            reader.us_varchar()
        return True, _read_plp(reader, keep)
    return False, None


def _read_call(reader: Reader, max_text: int) -> tuple[RpcCall, bool]:
    """Read one call; return it and whether the reader stands after its last parameter."""
    name_length = reader.u16()
    proc_id: int | None = None
    if name_length == _PROC_ID:
        proc_id = reader.u16()
        name = PROCEDURES.get(proc_id, f"proc {proc_id}")
    else:
        name = reader.utf16(name_length)
    reader.u16()  # option flags
    index = STATEMENT_PARAMETER.get(name.rsplit(".", 1)[-1].strip("[]").lower())
    statement: str | None = None
    position = 0
    while reader.remaining and reader.peek() not in _BATCH_FLAGS:
        reader.b_varchar()  # parameter name
        status = reader.u8()
        if status & _PARAM_ENCRYPTED:
            return RpcCall(name, proc_id, statement, False), False
        kind = reader.u8()
        wanted = position == index and kind in _UNICODE
        known, data = _read_value(reader, kind, 2 * max_text if wanted else 0)
        if not known:
            return RpcCall(name, proc_id, statement, False), False
        if wanted and data is not None:
            statement = _decode_text(data, max_text)
        position += 1
    return RpcCall(name, proc_id, statement, True), True


def parse_rpc(payload: bytes, max_text: int = MAX_TEXT) -> list[RpcCall]:
    """The calls of an RPC request message, in order; raises L{TdsError} for broken framing."""
    reader = Reader(payload, "RPC request", _all_headers_size(payload))
    calls: list[RpcCall] = []
    while reader.remaining:
        if calls:
            reader.u8()  # batch flag
            if not reader.remaining:
                break
        call, readable = _read_call(reader, max_text)
        calls.append(call)
        if not readable:
            break
    if not calls:
        raise TdsError("RPC request holds no call")
    return calls


def describe_rpc(payload: bytes, max_text: int = MAX_TEXT) -> list[str]:
    """One line per call: the procedure name, and C{": "} and the statement when there is one."""
    return [
        call.name if call.statement is None else f"{call.name}: {call.statement}"
        for call in parse_rpc(payload, max_text)
    ]
