"""Fuzz targets of the TDS codecs (shared/codecs/tds) and the console's SQL Server leg.

Each target feeds valid encodings, mutated ones and plain random bytes to one
decoder and requires that it either decodes or raises L{TdsError}, the
package's one error; nothing else may escape.  The incremental ones (the
packet parser, message reassembly and the console's L{ClientLeg}) are fed in
random chunkings and must reach the same result as when fed at once, holding
no more than one packet in their buffers.  Run long with C{scripts/fuzz.sh}.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from console.tds_client_leg import ClientLeg
from jumpoint.sql_audit import describe_rpc, describe_sql_batch, parse_rpc
from shared.codecs.tds import tokens
from shared.codecs.tds.login7 import (
    FEATURE_UTF8_SUPPORT,
    TDS74,
    Login7,
    decode_login7,
    encode_feature_ext,
    encode_login7,
)
from shared.codecs.tds.packets import (
    HEADER_SIZE,
    MessageAssembler,
    Packet,
    PacketParser,
    PacketType,
    TdsError,
    encode_message,
)
from shared.codecs.tds.prelogin import (
    Encryption,
    client_prelogin,
    decode_prelogin,
    server_prelogin_reply,
)
from shared.pki import KeyPair, create_ca, issue_server

T = TypeVar("T")

SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
"""No max_examples here: the "fuzz" profile of scripts/fuzz.sh sets it."""

MAX_PACKET = 4096


# -- strategies ------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid encoding with a few random edits: overwrites, cuts, insertions, a new length."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(0, 4))):
        edit = draw(st.sampled_from(["overwrite", "cut", "insert", "truncate"]))
        position = draw(st.integers(0, len(data)))
        if edit == "overwrite" and position < len(data):
            data[position] = draw(st.integers(0, 255))
        elif edit == "cut":
            del data[position : position + draw(st.integers(1, 8))]
        elif edit == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[position:]
    return bytes(data)


def inputs(valid: st.SearchStrategy[bytes], max_random: int = 512) -> st.SearchStrategy[bytes]:
    """Valid, mutated and random inputs of a decoder."""
    return st.one_of(valid, mutated(valid), st.binary(max_size=max_random))


def chunked(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    """C{data} cut at the (sorted, deduplicated) positions C{cuts}."""
    start = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        if cut > start:
            yield data[start:cut]
            start = cut
    if start < len(data):
        yield data[start:]


CUTS = st.lists(st.integers(0, 1 << 16), max_size=24)

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0xFFFF), max_size=24
)
U32 = st.integers(0, 0xFFFFFFFF)
I32 = st.integers(-(2**31), 2**31 - 1)


def decodes_or_tds_error(decode: Callable[[], T]) -> T | None:
    """Run C{decode}; a L{TdsError} is an answer, any other exception fails the target."""
    try:
        return decode()
    except TdsError as error:
        assert isinstance(error.reason, str) and error.reason
        return None


# -- packets and messages (incremental) --------------------------------------------


@st.composite
def packet_stream(draw: st.DrawFn) -> bytes:
    """Several packets (messages of random types split at random sizes), back to back."""
    out = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(list(PacketType)))
        payload = draw(st.binary(max_size=3000))
        size = draw(st.integers(HEADER_SIZE + 1, MAX_PACKET))
        out.append(encode_message(kind, payload, size))
    return b"".join(out)


def _parse_all(chunks: list[bytes]) -> tuple[list[Packet], bool, int]:
    parser = PacketParser(MAX_PACKET)
    packets: list[Packet] = []
    try:
        for chunk in chunks:
            packets += parser.feed(chunk)
            assert parser.buffered < MAX_PACKET  # never more than one partial packet
    except TdsError:
        return packets, True, parser.buffered
    return packets, False, parser.buffered


@SETTINGS
@given(data=inputs(packet_stream(), 4096), cuts=CUTS)
def test_fuzz_tds_packets(data: bytes, cuts: list[int]) -> None:
    whole, whole_failed, whole_left = _parse_all([data])
    pieces, pieces_failed, pieces_left = _parse_all(list(chunked(data, cuts)))
    assert whole_failed == pieces_failed
    if not whole_failed:
        assert pieces == whole and pieces_left == whole_left
        assert sum(HEADER_SIZE + len(p.payload) for p in whole) + whole_left == len(data)
    else:
        assert pieces[: len(whole)] == whole[: len(pieces)]
    assert all(len(p.payload) <= MAX_PACKET - HEADER_SIZE for p in whole + pieces)


@SETTINGS
@given(data=inputs(packet_stream(), 4096), cap=st.integers(0, 8192))
def test_fuzz_tds_message_assembly(data: bytes, cap: int) -> None:
    packets = decodes_or_tds_error(lambda: PacketParser(MAX_PACKET).feed(data)) or []
    assembler = MessageAssembler(cap)
    for packet in packets:
        message = decodes_or_tds_error(lambda p=packet: assembler.add(p))  # type: ignore[misc]
        if message is not None:
            assert len(message.payload) <= cap


# -- PRELOGIN ---------------------------------------------------------------------

PRELOGIN = st.one_of(
    st.builds(
        client_prelogin,
        st.sampled_from(list(Encryption)),
        st.tuples(*[st.integers(0, 255)] * 4),
        st.text(alphabet=st.characters(max_codepoint=0xFF, blacklist_characters="\0"), max_size=16),
        U32,
    ),
    st.builds(server_prelogin_reply, st.sampled_from(list(Encryption))),
)


def _read_prelogin(payload: bytes) -> None:
    prelogin = decode_prelogin(payload)
    _ = (prelogin.encryption, prelogin.client_cert, prelogin.version, prelogin.mars)
    _ = prelogin.instance
    assert decode_prelogin(prelogin.encode()) == prelogin


@SETTINGS
@given(payload=inputs(PRELOGIN))
def test_fuzz_tds_prelogin(payload: bytes) -> None:
    decodes_or_tds_error(lambda: _read_prelogin(payload))


# -- LOGIN7 -----------------------------------------------------------------------

LOGIN7 = st.builds(
    Login7,
    tds_version=st.sampled_from([TDS74, 0x72090002, 0x730B0003, 0x71000001]),
    packet_size=st.integers(512, 32767),
    client_pid=U32,
    option_flags1=st.integers(0, 255),
    option_flags2=st.integers(0, 255),
    type_flags=st.integers(0, 255),
    option_flags3=st.integers(0, 0xEF),
    client_timezone=st.integers(-720, 720),
    hostname=TEXT,
    username=TEXT,
    password=TEXT,
    appname=TEXT,
    servername=TEXT,
    feature_ext=st.one_of(
        st.none(), st.just(encode_feature_ext([(FEATURE_UTF8_SUPPORT, b"\x01")]))
    ),
    clt_int_name=TEXT,
    language=TEXT,
    database=TEXT,
    client_id=st.binary(min_size=6, max_size=6),
    sspi=st.binary(max_size=64),
    attach_db_file=TEXT,
    change_password=TEXT,
)


@SETTINGS
@given(login=LOGIN7)
def test_fuzz_tds_login7_round_trips(login: Login7) -> None:
    assert decode_login7(encode_login7(login)) == login


@SETTINGS
@given(payload=inputs(LOGIN7.map(encode_login7), 1024))
def test_fuzz_tds_login7(payload: bytes) -> None:
    login = decodes_or_tds_error(lambda: decode_login7(payload))
    if login is not None:
        _ = login.features if login.feature_ext is not None else ()


# -- SQL batch and RPC ------------------------------------------------------------

ALL_HEADERS = bytes.fromhex("16 00 00 00 12 00 00 00 02 00") + bytes(8) + bytes.fromhex("01000000")
COLLATION = bytes.fromhex("09 04 D0 00 34")


def _u16(value: int) -> bytes:
    return struct.pack("<H", value)


def _nvarchar(value: str) -> bytes:
    raw = value.encode("utf-16-le")
    return b"\x00\x00\xe7" + _u16(8000) + COLLATION + _u16(len(raw)) + raw


def _nvarchar_max(value: str) -> bytes:
    raw = value.encode("utf-16-le")
    plp = (struct.pack("<I", len(raw)) + raw if raw else b"") + bytes(4)
    return b"\x00\x00\xe7\xff\xff" + COLLATION + struct.pack("<Q", len(raw)) + plp


def _intn(value: int) -> bytes:
    return b"\x00\x00\x26\x04\x04" + struct.pack("<i", value)


@st.composite
def rpc_payload(draw: st.DrawFn) -> bytes:
    calls = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            name = draw(TEXT)
            head = _u16(len(name)) + name.encode("utf-16-le")
        else:
            head = b"\xff\xff" + _u16(draw(st.integers(0, 20)))
        params = draw(
            st.lists(
                st.one_of(
                    TEXT.map(_nvarchar),
                    TEXT.map(_nvarchar_max),
                    st.integers(-(2**31), 2**31 - 1).map(_intn),
                ),
                max_size=3,
            )
        )
        calls.append(head + _u16(0) + b"".join(params))
    headers = ALL_HEADERS if draw(st.booleans()) else b""
    return headers + b"\x80".join(calls)


BATCH = st.builds(
    lambda headers, text: headers + text.encode("utf-16-le"),
    st.sampled_from([ALL_HEADERS, b""]),
    TEXT,
)


@SETTINGS
@given(payload=inputs(rpc_payload()), max_text=st.integers(0, 64))
def test_fuzz_tds_rpc(payload: bytes, max_text: int) -> None:
    calls = decodes_or_tds_error(lambda: parse_rpc(payload, max_text))
    described = decodes_or_tds_error(lambda: describe_rpc(payload, max_text))
    assert (calls is None) == (described is None)


@SETTINGS
@given(payload=inputs(BATCH), max_text=st.integers(0, 64))
def test_fuzz_tds_sql_batch(payload: bytes, max_text: int) -> None:
    text = decodes_or_tds_error(lambda: describe_sql_batch(payload, max_text))
    assert text is None or isinstance(text, str)


# -- the login response ----------------------------------------------------------

RESPONSE_TOKEN = st.one_of(
    st.builds(lambda: tokens.loginack_token()),
    st.builds(tokens.error_token, I32, st.integers(0, 255), st.integers(0, 25), TEXT),
    st.builds(tokens.info_token, I32, st.integers(0, 255), st.integers(0, 9), TEXT),
    st.builds(tokens.envchange_database, TEXT, TEXT),
    st.builds(tokens.envchange_packet_size, st.integers(512, 32767), st.integers(512, 32767)),
    st.builds(
        tokens.routing_envchange,
        st.integers(1, 65535),
        st.from_regex(r"[a-z0-9.]{1,30}", fullmatch=True),
    ),
    st.builds(tokens.done_token, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), U32),
)
LOGIN_RESPONSE = st.lists(RESPONSE_TOKEN, min_size=1, max_size=6).map(b"".join)


def _read_response(payload: bytes) -> None:
    response = tokens.scan_login_response(payload)
    _ = (response.errors, response.routing, response.packet_size, response.sspi, response.done)
    if response.loginack is not None:
        tokens.decode_loginack(response.loginack)
    kept = response.without({(tokens.ENVCHANGE, tokens.ENV_ROUTING)})
    assert tokens.scan_login_response(kept).routing is None


@SETTINGS
@given(payload=inputs(LOGIN_RESPONSE))
def test_fuzz_tds_login_response(payload: bytes) -> None:
    decodes_or_tds_error(lambda: _read_response(payload))


# -- the console's leg, fed in random chunks ----------------------------------------


@functools.cache
def _listener() -> KeyPair:
    return issue_server(create_ca("fuzz"), "fuzz 127.0.0.6", ["127.0.0.6"])


def _feed_leg(chunks: list[bytes]) -> tuple[bytes, bytes, bool]:
    pair = _listener()
    leg = ClientLeg(pair.certificate_pem, pair.key_pem, max_login=8192)
    to_client, to_jumpoint, closed = bytearray(), bytearray(), False
    for chunk in chunks:
        out = leg.from_client(chunk)  # never raises: failures come back as out.close
        to_client += out.to_client
        to_jumpoint += out.to_jumpoint
        closed = closed or out.close is not None
    return bytes(to_client), bytes(to_jumpoint), closed


@st.composite
def client_bytes(draw: st.DrawFn) -> bytes:
    """What a client without TLS sends: PRELOGIN, LOGIN7, a batch (each perhaps mutated)."""
    prelogin = encode_message(PacketType.PRELOGIN, client_prelogin(Encryption.NOT_SUP))
    login = draw(LOGIN7.map(lambda lg: lg.__class__(**{**_fields(lg), "sspi": b""})))
    login = login.__class__(**{**_fields(login), "option_flags2": login.option_flags2 & 0x7F})
    parts = [
        prelogin,
        encode_message(PacketType.LOGIN7, encode_login7(login), draw(st.integers(512, 4096))),
        encode_message(PacketType.SQL_BATCH, draw(BATCH)),
    ]
    if draw(st.booleans()):
        index = draw(st.integers(0, len(parts) - 1))
        parts[index] = draw(mutated(st.just(parts[index])))
    return b"".join(parts)


def _fields(login: Login7) -> dict[str, Any]:
    return {name: getattr(login, name) for name in Login7.__dataclass_fields__}


@SETTINGS
@given(data=st.one_of(client_bytes(), st.binary(max_size=2048)), cuts=CUTS)
def test_fuzz_tds_client_leg_in_random_chunks(data: bytes, cuts: list[int]) -> None:
    whole = _feed_leg([data])
    pieces = _feed_leg(list(chunked(data, cuts)))
    assert pieces == whole  # without TLS the leg's output does not depend on the chunking
