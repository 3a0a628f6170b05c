"""Server tokens (shared/codecs/tds/tokens.py): builders and the login-response scanner."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.codecs.tds import tokens as t
from shared.codecs.tds.packets import TdsError
from shared.codecs.tds.tokens import (
    ErrorInfo,
    Token,
    b_varbyte,
    b_varchar,
    decode_loginack,
    done_token,
    envchange_database,
    envchange_packet_size,
    envchange_token,
    error_token,
    info_token,
    login_failed,
    loginack_token,
    routing_envchange,
    scan_login_response,
)


def test_error_token_layout() -> None:
    raw = error_token(18456, 1, 14, "Login failed for user 'x'.", "proxy", "proc", 7)
    assert raw[0] == 0xAA
    (length,) = struct.unpack_from("<H", raw, 1)
    assert length == len(raw) - 3
    assert struct.unpack_from("<iBB", raw, 3) == (18456, 1, 14)
    (chars,) = struct.unpack_from("<H", raw, 9)
    assert raw[11 : 11 + 2 * chars].decode("utf-16-le") == "Login failed for user 'x'."
    assert raw[-4:] == struct.pack("<i", 7)
    (token,) = scan_login_response(raw).tokens
    assert token == Token(0xAA, None, raw)


def test_login_failed_is_error_then_done_with_error_bit() -> None:
    payload = login_failed("Login failed for user 'alice'.", server="jumpoint")
    response = scan_login_response(payload)
    assert [token.kind for token in response.tokens] == [0xAA, 0xFD]
    assert response.errors == (ErrorInfo(18456, 1, 14, "Login failed for user 'alice'."),)
    assert response.loginack is None
    assert response.done
    assert response.tokens[1].raw == bytes.fromhex("FD 02 00 00 00") + bytes(8)


def test_info_tokens_are_not_errors() -> None:
    payload = info_token(5701, 2, 0, "Changed database context to 'master'.") + done_token()
    response = scan_login_response(payload)
    assert response.tokens[0].kind == 0xAB
    assert response.errors == ()


def test_loginack_carries_the_tds_version_big_endian() -> None:
    raw = loginack_token()
    assert raw[:4] == bytes([0xAD]) + struct.pack("<H", len(raw) - 3) + b"\x01"
    assert raw[4:8] == bytes.fromhex("74 00 00 04")
    assert raw[8] == len("Microsoft SQL Server")
    assert raw[-4:] == bytes([15, 0, 20, 0])
    response = scan_login_response(raw + done_token())
    assert response.loginack is not None and response.loginack.raw == raw
    ack = decode_loginack(response.loginack)
    assert (ack.interface, ack.tds_version, ack.program, ack.version) == (
        1,
        0x74000004,
        "Microsoft SQL Server",
        (15, 0, 20, 0),
    )
    assert loginack_token(0x72090002)[4:8] == bytes.fromhex("72 09 00 02")


def test_envchange_packet_size() -> None:
    raw = envchange_packet_size(4096, 4096)
    assert raw == bytes([0xE3]) + struct.pack("<H", 19) + b"\x04" + b_varchar("4096") * 2
    response = scan_login_response(raw)
    assert response.tokens[0].subtype == t.ENV_PACKET_SIZE
    assert response.packet_size == 4096
    assert not response.done


def test_envchange_database_and_generic() -> None:
    raw = envchange_database("master", "")
    assert raw[3] == 1 and raw[4:] == b_varchar("master") + b"\0"
    collation = envchange_token(t.ENV_COLLATION, b_varbyte(bytes.fromhex("09 04 D0 00 34")), b"\0")
    (token,) = scan_login_response(collation).tokens
    assert (token.kind, token.subtype) == (0xE3, 7)


def test_routing_envchange() -> None:
    raw = routing_envchange(1433, "replica.internal")
    assert raw[3] == 20
    (value_length,) = struct.unpack_from("<H", raw, 4)
    assert value_length == 1 + 2 + 2 + 2 * len("replica.internal")
    assert raw[6] == 0 and struct.unpack_from("<H", raw, 7) == (1433,)
    assert raw[-2:] == b"\0\0"
    response = scan_login_response(loginack_token() + raw + done_token())
    assert response.routing == ("replica.internal", 1433)


def teleport_like_response() -> bytes:
    return b"".join(
        [
            envchange_database("master", ""),
            envchange_token(t.ENV_COLLATION, b_varbyte(bytes.fromhex("09 04 D0 00 34")), b"\0"),
            info_token(5701, 2, 0, "Changed database context to 'master'.", "sql1", "", 1),
            envchange_token(t.ENV_LANGUAGE, b_varchar("us_english"), b_varchar("")),
            loginack_token(0x74000004, "Microsoft SQL Server", (15, 0, 0x0F, 0xE9)),
            bytes.fromhex("AE 0A 01 00 00 00 01 FF"),  # FEATUREEXTACK: UTF8_SUPPORT = 1
            envchange_packet_size(8000, 4096),
            routing_envchange(11433, "10.0.0.5"),
            envchange_token(t.ENV_MIRROR_PARTNER, b_varchar("mirror"), b_varchar("")),
            done_token(),
        ]
    )


def test_without_drops_tokens_and_keeps_the_rest_byte_identical() -> None:
    payload = teleport_like_response()
    response = scan_login_response(payload)
    assert [(token.kind, token.subtype) for token in response.tokens] == [
        (0xE3, 1),
        (0xE3, 7),
        (0xAB, None),
        (0xE3, 2),
        (0xAD, None),
        (0xAE, None),
        (0xE3, 4),
        (0xE3, 20),
        (0xE3, 13),
        (0xFD, None),
    ]
    assert b"".join(token.raw for token in response.tokens) == payload
    assert response.without(set()) == payload
    routing = routing_envchange(11433, "10.0.0.5")
    stripped = response.without({(0xE3, 20)})
    assert stripped == payload.replace(routing, b"")
    rescanned = scan_login_response(stripped)
    assert rescanned.routing is None
    assert rescanned.packet_size == 8000 and rescanned.done
    both = scan_login_response(response.without({(0xE3, 20), (0xE3, 13)}))
    assert len(both.tokens) == 8
    assert scan_login_response(response.without({(0xAB, None)})).tokens[2].kind == 0xE3


def test_sspi_challenge_without_done() -> None:
    blob = b"NTLMSSP\0\x02\x00\x00\x00" + bytes(40)
    raw = bytes([0xED]) + struct.pack("<H", len(blob)) + blob
    response = scan_login_response(raw)
    assert response.sspi == blob
    assert not response.done and response.loginack is None


def test_done_variants() -> None:
    assert done_token(0x10, 0xC1, 1) == bytes.fromhex("FD 10 00 C1 00 01 00 00 00 00 00 00 00")
    assert done_token(kind=0xFE)[0] == 0xFE
    more = scan_login_response(done_token(t.DONE_MORE))
    assert not more.done
    assert not scan_login_response(done_token(kind=t.DONEINPROC)).done
    with pytest.raises(ValueError):
        done_token(kind=0xAA)


def test_session_state_and_fedauth_info_have_dword_lengths() -> None:
    payload = bytes([0xE4]) + struct.pack("<I", 3) + b"abc" + done_token()
    assert [token.kind for token in scan_login_response(payload).tokens] == [0xE4, 0xFD]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (bytes.fromhex("81 01 00"), "unexpected token 0x81"),
        (bytes.fromhex("AA 10 00 01"), "truncated"),
        (bytes.fromhex("FD 00 00"), "truncated"),
        (bytes.fromhex("AE 0A 05 00 00 00 01"), "truncated"),
        (bytes.fromhex("AE 0A 01 00 00 00 01"), "truncated"),
        (bytes.fromhex("E3 00 00"), "truncated"),
        (bytes.fromhex("AA 04 00 01 02 03 04"), "truncated"),
        (bytes.fromhex("E3 03 00 04 01 41"), "truncated"),
        (bytes([0xE3, 0x05, 0x00, 0x04, 0x01]) + "x".encode("utf-16-le") + b"\0", "decimal"),
        (bytes.fromhex("E3 06 00 14 05 00 00 99 05"), "truncated"),
        (bytes.fromhex("E3 06 00 14 01 00 07 00 00"), "unknown protocol 7"),
    ],
)
def test_malformed_responses_raise_tds_error(payload: bytes, reason: str) -> None:
    with pytest.raises(TdsError) as caught:
        scan_login_response(payload)
    assert reason in caught.value.reason


@given(st.binary(max_size=60))
def test_random_bytes_scan_or_raise_tds_error(data: bytes) -> None:
    try:
        response = scan_login_response(data)
    except TdsError:
        return
    assert b"".join(token.raw for token in response.tokens) == data
    _ = (response.errors, response.routing, response.packet_size, response.sspi, response.done)


@given(
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.integers(0, 255),
    st.integers(0, 255),
    st.text(max_size=300),
    st.text(max_size=100),
)
def test_error_builder_round_trips(
    number: int, state: int, severity: int, message: str, server: str
) -> None:
    message = message.encode("utf-16-le", "ignore").decode("utf-16-le")
    response = scan_login_response(error_token(number, state, severity, message, server[:100]))
    assert response.errors == (ErrorInfo(number, state, severity, message),)


def test_builders_refuse_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError):
        b_varchar("x" * 256)
    with pytest.raises(ValueError):
        error_token(1, 1, 1, "x" * 40000)
    with pytest.raises(ValueError):
        routing_envchange(70000, "x")
    with pytest.raises(ValueError):
        loginack_token(version=(1, 2, 3, 300))
