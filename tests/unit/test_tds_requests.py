"""Audit views of client requests (jumpoint/sql_audit.py): SQL batches and RPCs."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jumpoint.sql_audit import RpcCall, describe_rpc, describe_sql_batch, parse_rpc
from shared.codecs.tds.packets import (
    MessageAssembler,
    PacketParser,
    PacketType,
    TdsError,
    encode_message,
)

# ALL_HEADERS as every client sends it: a transaction descriptor header.
ALL_HEADERS = (
    bytes.fromhex("16 00 00 00 12 00 00 00 02 00")
    + bytes(7)
    + b"\x01"
    + bytes.fromhex("01 00 00 00")
)
COLLATION = bytes.fromhex("09 04 D0 00 34")


def u16(value: int) -> bytes:
    return struct.pack("<H", value)


def u32(value: int) -> bytes:
    return struct.pack("<I", value)


def text(value: str) -> bytes:
    return value.encode("utf-16-le")


def param_name(name: str) -> bytes:
    return bytes([len(name)]) + text(name)


def nvarchar(value: str, name: str = "") -> bytes:
    raw = text(value)
    return param_name(name) + b"\x00\xe7" + u16(8000) + COLLATION + u16(len(raw)) + raw


def nvarchar_max(value: str, chunks: int = 3) -> bytes:
    raw = text(value)
    size = -(-len(raw) // chunks) or 1
    body = b"".join(
        u32(len(raw[i : i + size])) + raw[i : i + size] for i in range(0, len(raw), size)
    )
    return (
        param_name("")
        + b"\x00\xe7\xff\xff"
        + COLLATION
        + struct.pack("<Q", len(raw))
        + body
        + u32(0)
    )


def ntext(value: str) -> bytes:
    raw = text(value)
    return param_name("") + b"\x00\x63" + u32(len(raw)) + COLLATION + u32(len(raw)) + raw


def intn(value: int, name: str = "") -> bytes:
    return param_name(name) + b"\x00\x26\x04\x04" + struct.pack("<i", value)


def null_intn(name: str = "") -> bytes:
    return param_name(name) + b"\x01\x26\x04\x00"


def rpc_by_name(name: str) -> bytes:
    return u16(len(name)) + text(name) + u16(0)


def rpc_by_id(proc_id: int) -> bytes:
    return b"\xff\xff" + u16(proc_id) + u16(0)


def test_sql_batch_with_all_headers() -> None:
    assert describe_sql_batch(ALL_HEADERS + text("SELECT 1")) == "SELECT 1"


def test_sql_batch_without_all_headers() -> None:
    assert describe_sql_batch(text("SELECT name FROM sys.databases")) == (
        "SELECT name FROM sys.databases"
    )
    assert describe_sql_batch(b"") == ""
    # A DWORD that looks like a length but whose inner headers do not parse is text.
    assert describe_sql_batch(text("\x0c\x00") + text("abcdef")) == "\x0c\x00abcdef"


def test_sql_batch_reassembled_from_several_packets() -> None:
    query = "SELECT '" + "x" * 5000 + "'"
    wire = encode_message(PacketType.SQL_BATCH, ALL_HEADERS + text(query), packet_size=512)
    assembler = MessageAssembler(1 << 20)
    messages = [m for m in map(assembler.add, PacketParser().feed(wire)) if m is not None]
    assert describe_sql_batch(messages[0].payload) == query


def test_sql_batch_truncation_and_odd_length() -> None:
    assert describe_sql_batch(ALL_HEADERS + text("abcdef"), max_text=3) == "abc"
    with pytest.raises(TdsError, match="odd number"):
        describe_sql_batch(ALL_HEADERS + b"a")
    assert describe_sql_batch(text("ab") + b"\x00\xd8") == "ab\ufffd"


def test_rpc_by_name() -> None:
    payload = ALL_HEADERS + rpc_by_name("dbo.get_users") + intn(5, "@id")
    assert describe_rpc(payload) == ["dbo.get_users"]
    assert parse_rpc(payload) == [RpcCall("dbo.get_users", None, None, True)]


def test_rpc_by_proc_id_10_with_its_statement() -> None:
    payload = (
        ALL_HEADERS
        + rpc_by_id(10)
        + nvarchar("SELECT * FROM t WHERE id = @p0")
        + nvarchar("@p0 int")
        + intn(42, "@p0")
    )
    assert describe_rpc(payload) == ["sp_executesql: SELECT * FROM t WHERE id = @p0"]
    (call,) = parse_rpc(payload)
    assert (call.name, call.proc_id, call.complete) == ("sp_executesql", 10, True)


def test_sp_executesql_by_name_with_ntext_and_plp_statements() -> None:
    by_name = ALL_HEADERS + rpc_by_name("sp_executesql") + ntext("SELECT 2")
    assert describe_rpc(by_name) == ["sp_executesql: SELECT 2"]
    long_query = "SELECT " + ", ".join(str(i) for i in range(2000))
    plp = ALL_HEADERS + rpc_by_id(10) + nvarchar_max(long_query) + intn(1)
    assert describe_rpc(plp) == [f"sp_executesql: {long_query}"]
    assert describe_rpc(plp, max_text=6) == ["sp_executesql: SELECT"]


def test_multiple_rpcs_in_one_message() -> None:
    payload = (
        ALL_HEADERS
        + rpc_by_id(13)  # sp_prepexec: @handle OUTPUT, @params, @stmt
        + null_intn("@handle")
        + nvarchar("@P1 int")
        + nvarchar("SELECT * FROM t WHERE a = @P1")
        + intn(7)
        + b"\xff"
        + rpc_by_name("audit_me")
        + nvarchar_max("text")
        + b"\x80"
        + rpc_by_id(15)
        + intn(1)
    )
    assert describe_rpc(payload) == [
        "sp_prepexec: SELECT * FROM t WHERE a = @P1",
        "audit_me",
        "sp_unprepare",
    ]


def test_rpc_without_all_headers_and_without_parameters() -> None:
    assert describe_rpc(rpc_by_id(12) + intn(3)) == ["sp_execute"]
    assert describe_rpc(rpc_by_name("sp_who")) == ["sp_who"]
    assert describe_rpc(rpc_by_id(99)) == ["proc 99"]


def test_unknown_parameter_type_stops_with_the_names_found() -> None:
    udt = param_name("@geo") + b"\x00\xf0" + bytes(20)
    payload = ALL_HEADERS + rpc_by_name("first") + udt + b"\x80" + rpc_by_name("second")
    assert parse_rpc(payload) == [RpcCall("first", None, None, False)]
    assert describe_rpc(payload) == ["first"]


def test_other_parameter_types_are_skipped() -> None:
    params = b"".join(
        [
            param_name("") + b"\x00\x38" + u32(1),  # INT
            param_name("") + b"\x00\x7f" + bytes(8),  # BIGINT
            param_name("") + b"\x00\x6a\x11\x26\x02\x05\x01" + bytes(4),  # DECIMALN(38,2)
            param_name("") + b"\x00\x28\x03" + bytes(3),  # DATE
            param_name("") + b"\x00\x2a\x07\x08" + bytes(8),  # DATETIME2(7)
            param_name("") + b"\x00\xa5\x40\x1f\x03\x00abc",  # VARBINARY(8000)
            param_name("") + b"\x00\xa7\x40\x1f" + COLLATION + b"\xff\xff",  # VARCHAR NULL
            param_name("") + b"\x00\x24\x10\x10" + bytes(16),  # UNIQUEIDENTIFIER
            param_name("") + b"\x00\xf1\x00" + struct.pack("<Q", 2**64 - 1),  # XML NULL
            param_name("") + b"\x00\x22" + u32(100) + u32(2) + b"zz",  # IMAGE
        ]
    )
    payload = ALL_HEADERS + rpc_by_name("many") + params + b"\xff" + rpc_by_id(9)
    assert parse_rpc(payload) == [
        RpcCall("many", None, None, True),
        RpcCall("sp_cursorclose", 9, None, True),
    ]


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        ALL_HEADERS + b"\x05\x00" + text("ab"),
        ALL_HEADERS + b"\xff\xff\x0a",
        ALL_HEADERS + rpc_by_id(10) + nvarchar("SELECT 1")[:-2],
        ALL_HEADERS + rpc_by_id(10) + param_name("") + b"\x00\x38\x01",
        ALL_HEADERS + rpc_by_id(10) + nvarchar_max("abc")[:-4],
    ],
)
def test_truncated_rpc_raises_tds_error(payload: bytes) -> None:
    with pytest.raises(TdsError):
        describe_rpc(payload)


@given(st.binary(max_size=120))
def test_random_rpc_bytes_parse_or_raise_tds_error(data: bytes) -> None:
    try:
        calls = parse_rpc(ALL_HEADERS + data)
    except TdsError:
        return
    assert calls


@given(st.binary(max_size=120))
def test_random_batch_bytes_decode_or_raise_tds_error(data: bytes) -> None:
    try:
        assert isinstance(describe_sql_batch(data), str)
    except TdsError as error:
        assert "odd number" in error.reason
