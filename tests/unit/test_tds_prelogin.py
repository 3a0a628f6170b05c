"""PRELOGIN (shared/codecs/tds/prelogin.py): the spec sample, replies, checks, negotiation."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.codecs.tds import prelogin
from shared.codecs.tds.packets import PacketParser, PacketType, TdsError, encode_message
from shared.codecs.tds.prelogin import (
    Encryption,
    Outcome,
    client_prelogin,
    decode_prelogin,
    encode_prelogin,
    negotiate,
    outcome,
    server_prelogin_reply,
)

# MS-TDS 4.1, "PRELOGIN request": header, option table, option data.
SPEC_SAMPLE = bytes.fromhex(
    "12 01 00 2F 00 00 01 00"
    "00 00 1A 00 06"  # VERSION at 0x1A, 6 bytes
    "01 00 20 00 01"  # ENCRYPTION at 0x20, 1 byte
    "02 00 21 00 01"  # INSTOPT at 0x21, 1 byte
    "03 00 22 00 04"  # THREADID at 0x22, 4 bytes
    "04 00 26 00 01"  # MARS at 0x26, 1 byte
    "FF"
    "09 00 00 00 00 00"  # 9.0.0.0
    "01"  # ENCRYPT_ON
    "00"  # default instance
    "B8 0D 00 00"  # thread id
    "01"  # MARS on
)


def test_spec_sample_decodes_and_reencodes_identically() -> None:
    (packet,) = PacketParser().feed(SPEC_SAMPLE)
    assert packet.type == PacketType.PRELOGIN and packet.eom
    decoded = decode_prelogin(packet.payload)
    assert [token for token, _ in decoded.options] == [0, 1, 2, 3, 4]
    assert decoded.version == (9, 0, 0, 0)
    assert decoded.encryption is Encryption.ON
    assert not decoded.client_cert
    assert decoded.instance == ""
    assert decoded.get(prelogin.THREADID) == bytes.fromhex("B8 0D 00 00")
    assert decoded.mars is True
    assert encode_prelogin(decoded.options) == packet.payload
    assert encode_message(PacketType.PRELOGIN, decoded.encode()) == SPEC_SAMPLE


def test_server_reply_always_carries_mars_off() -> None:
    reply = decode_prelogin(server_prelogin_reply(Encryption.NOT_SUP))
    assert [token for token, _ in reply.options] == [
        prelogin.VERSION,
        prelogin.ENCRYPTION,
        prelogin.INSTOPT,
        prelogin.THREADID,
        prelogin.MARS,
    ]
    assert reply.version == (15, 0, 2000, 0)
    assert reply.get(prelogin.VERSION) == bytes.fromhex("0F 00 07 D0 00 00")
    assert reply.encryption is Encryption.NOT_SUP
    assert reply.get(prelogin.INSTOPT) == b"\0"
    assert reply.get(prelogin.THREADID) == b""
    assert reply.mars is False


def test_client_prelogin_for_the_upstream_leg() -> None:
    request = decode_prelogin(
        client_prelogin(Encryption.ON, (1, 2, 3, 4), instance="MSSQLServer", thread_id=7)
    )
    assert request.version == (1, 2, 3, 4)
    assert request.encryption is Encryption.ON
    assert request.instance == "MSSQLServer"
    assert request.get(prelogin.INSTOPT) == b"MSSQLServer\0"
    assert request.get(prelogin.THREADID) == bytes.fromhex("00 00 00 07")
    assert request.mars is False
    assert decode_prelogin(client_prelogin(Encryption.OFF)).get(prelogin.INSTOPT) == b"\0"


def test_client_certificate_bit_is_masked() -> None:
    payload = encode_prelogin([(prelogin.ENCRYPTION, b"\x83")])
    decoded = decode_prelogin(payload)
    assert decoded.encryption is Encryption.REQ
    assert decoded.client_cert


def test_missing_options_read_as_none() -> None:
    decoded = decode_prelogin(b"\xff")
    assert decoded.options == ()
    assert decoded.encryption is None and decoded.version is None
    assert decoded.mars is None and decoded.instance is None and not decoded.client_cert


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "no terminator"),
        (bytes.fromhex("00 00 06 00 06"), "no terminator"),
        (bytes.fromhex("00 00 06"), "truncated"),
        (bytes.fromhex("01 00 06 00 02 FF 00"), "beyond the payload"),
        (bytes.fromhex("01 00 00 00 01 FF 00"), "into the option table"),
        (bytes.fromhex("01 00 0B 00 01 01 00 0B 00 01 FF 00"), "twice"),
        (bytes.fromhex("00 00 06 00 04 FF 09 00 00 00"), "too short"),
        (bytes.fromhex("01 00 06 00 01 FF 08"), "unknown PRELOGIN encryption"),
        (bytes.fromhex("01 00 06 00 00 FF"), "too short"),
    ],
)
def test_malformed_prelogin_is_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(TdsError) as caught:
        decode_prelogin(payload)
    assert reason in caught.value.reason


@given(st.binary(max_size=80))
def test_random_bytes_decode_or_raise_tds_error(data: bytes) -> None:
    try:
        decoded = decode_prelogin(data)
    except TdsError:
        return
    for token, value in decoded.options:
        assert 0 <= token < 0xFF
        assert value in data
    _ = (decoded.encryption, decoded.version, decoded.mars, decoded.instance)


@given(
    st.lists(
        st.tuples(st.integers(min_value=0x08, max_value=0xFE), st.binary(max_size=40)),
        max_size=8,
        unique_by=lambda option: option[0],
    )
)
def test_encode_decode_round_trip(options: list[tuple[int, bytes]]) -> None:
    assert decode_prelogin(encode_prelogin(options)).options == tuple(options)


def test_terminator_is_not_an_option() -> None:
    with pytest.raises(ValueError):
        encode_prelogin([(0xFF, b"")])


NEGOTIATION = {
    # (client, server setting): reply
    (Encryption.OFF, Encryption.OFF): Encryption.OFF,
    (Encryption.OFF, Encryption.ON): Encryption.REQ,
    (Encryption.OFF, Encryption.NOT_SUP): Encryption.NOT_SUP,
    (Encryption.ON, Encryption.OFF): Encryption.ON,
    (Encryption.ON, Encryption.ON): Encryption.ON,
    (Encryption.ON, Encryption.NOT_SUP): Encryption.NOT_SUP,
    (Encryption.NOT_SUP, Encryption.OFF): Encryption.NOT_SUP,
    (Encryption.NOT_SUP, Encryption.ON): Encryption.REQ,
    (Encryption.NOT_SUP, Encryption.NOT_SUP): Encryption.NOT_SUP,
    (Encryption.REQ, Encryption.OFF): Encryption.ON,
    (Encryption.REQ, Encryption.ON): Encryption.ON,
    (Encryption.REQ, Encryption.NOT_SUP): Encryption.NOT_SUP,
}

OUTCOMES = {
    (Encryption.OFF, Encryption.OFF): Outcome.LOGIN_ONLY,
    (Encryption.OFF, Encryption.ON): Outcome.FULL,
    (Encryption.OFF, Encryption.NOT_SUP): Outcome.NONE,
    (Encryption.ON, Encryption.OFF): Outcome.FULL,
    (Encryption.ON, Encryption.ON): Outcome.FULL,
    (Encryption.ON, Encryption.NOT_SUP): Outcome.FAIL,
    (Encryption.NOT_SUP, Encryption.OFF): Outcome.NONE,
    (Encryption.NOT_SUP, Encryption.ON): Outcome.FAIL,
    (Encryption.NOT_SUP, Encryption.NOT_SUP): Outcome.NONE,
    (Encryption.REQ, Encryption.OFF): Outcome.FULL,
    (Encryption.REQ, Encryption.ON): Outcome.FULL,
    (Encryption.REQ, Encryption.NOT_SUP): Outcome.FAIL,
}


def test_negotiation_follows_the_specification_table() -> None:
    for (client, server), reply in NEGOTIATION.items():
        assert negotiate(client, server) is reply, (client, server)
        assert outcome(client, reply) is OUTCOMES[client, server], (client, server)
    # A server set to REQ behaves like one forcing encryption.
    for client in Encryption:
        assert negotiate(client, Encryption.REQ) is negotiate(client, Encryption.ON)


def test_outcome_of_replies_outside_the_table() -> None:
    assert outcome(Encryption.ON, Encryption.OFF) is Outcome.FAIL  # a downgrade
    assert outcome(Encryption.REQ, Encryption.OFF) is Outcome.FAIL
    assert outcome(Encryption.OFF, Encryption.ON) is Outcome.FULL
    assert {outcome(c, r) for c, r in itertools.product(Encryption, Encryption)} == set(Outcome)
