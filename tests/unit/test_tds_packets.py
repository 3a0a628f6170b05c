"""The TDS packet layer (shared/codecs/tds/packets.py): header, parser, reassembly, splitting."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.codecs.tds.packets import (
    DEFAULT_PACKET_SIZE,
    HEADER_SIZE,
    MAX_PACKET_SIZE,
    Message,
    MessageAssembler,
    Packet,
    PacketParser,
    PacketType,
    Status,
    TdsError,
    encode_message,
)


def assemble(data: bytes, max_message: int = 1 << 20) -> list[Message]:
    parser = PacketParser()
    assembler = MessageAssembler(max_message)
    messages = []
    for packet in parser.feed(data):
        message = assembler.add(packet)
        if message is not None:
            messages.append(message)
    assert parser.buffered == 0
    return messages


def test_constants_match_the_specification() -> None:
    assert HEADER_SIZE == 8
    assert DEFAULT_PACKET_SIZE == 4096
    assert MAX_PACKET_SIZE == 32767
    assert {t.name: int(t) for t in PacketType} == {
        "SQL_BATCH": 0x01,
        "PRE_TDS7_LOGIN": 0x02,
        "RPC": 0x03,
        "TABULAR": 0x04,
        "ATTENTION": 0x06,
        "BULK_LOAD": 0x07,
        "FEDAUTH_TOKEN": 0x08,
        "TRANSACTION_MANAGER": 0x0E,
        "LOGIN7": 0x10,
        "SSPI": 0x11,
        "PRELOGIN": 0x12,
    }
    assert {s.name: int(s) for s in Status} == {
        "EOM": 0x01,
        "IGNORE": 0x02,
        "RESET_CONNECTION": 0x08,
        "RESET_CONNECTION_SKIP_TRAN": 0x10,
    }


def test_packet_header_layout_is_big_endian() -> None:
    packet = Packet(0x12, 0x01, 0x0102, 7, 0, b"abc")
    assert packet.encode() == bytes.fromhex("12 01 00 0b 01 02 07 00") + b"abc"
    assert packet.eom
    assert not Packet(0x01, 0x04, 0, 1, 0, b"").eom
    assert Packet(0x01, 0x05, 0, 1, 0, b"").eom


def test_parser_reads_the_prelogin_spec_sample_header() -> None:
    data = bytes.fromhex("12 01 00 2F 00 00 01 00") + bytes(0x2F - 8)
    (packet,) = PacketParser().feed(data)
    assert (packet.type, packet.status, packet.spid, packet.packet_id, packet.window) == (
        0x12,
        0x01,
        0,
        1,
        0,
    )
    assert len(packet.payload) == 0x2F - 8


def test_unknown_packet_types_are_returned_to_the_caller() -> None:
    (packet,) = PacketParser().feed(Packet(0x53, 0x01, 0, 0, 0, b"x").encode())
    assert packet.type == 0x53


def test_oversized_packet_is_refused_before_its_body_arrives() -> None:
    parser = PacketParser(max_packet=4096)
    with pytest.raises(TdsError) as caught:
        parser.feed(bytes.fromhex("01 01 10 01 00 00 01 00"))  # 4097 bytes announced
    assert "4097" in caught.value.reason


def test_packet_shorter_than_its_header_is_refused() -> None:
    with pytest.raises(TdsError, match="shorter than the 8-byte header"):
        PacketParser().feed(bytes.fromhex("01 01 00 07 00 00 01 00"))


def test_parser_buffers_partial_packets_and_hands_over_the_rest() -> None:
    parser = PacketParser()
    wire = encode_message(PacketType.SQL_BATCH, b"hello")
    assert parser.feed(wire[:5]) == []
    assert parser.buffered == 5
    (packet,) = parser.feed(wire[5:] + b"\x16\x03")
    assert packet.payload == b"hello"
    assert parser.take_buffered() == b"\x16\x03"
    assert parser.buffered == 0


def test_empty_message_is_one_header_only_packet_with_eom() -> None:
    wire = encode_message(PacketType.ATTENTION, b"")
    assert wire == bytes.fromhex("06 01 00 08 00 00 01 00")
    (message,) = assemble(wire)
    assert message == Message(0x06, 0x01, b"")


def test_split_respects_packet_size_including_header() -> None:
    payload = bytes(range(256)) * 40  # 10240 bytes
    wire = encode_message(PacketType.LOGIN7, payload, packet_size=4096)
    packets = PacketParser().feed(wire)
    assert [len(p.payload) + HEADER_SIZE for p in packets] == [4096, 4096, 10240 - 2 * 4088 + 8]
    assert [p.eom for p in packets] == [False, False, True]
    assert [p.packet_id for p in packets] == [1, 2, 3]
    assert b"".join(p.payload for p in packets) == payload


def test_packet_ids_wrap_modulo_256() -> None:
    wire = encode_message(PacketType.SQL_BATCH, bytes(300), packet_size=108, first_packet_id=255)
    ids = [p.packet_id for p in PacketParser().feed(wire)]
    assert ids == [255, 0, 1]


def test_status_bits_go_on_the_right_packets() -> None:
    status = Status.RESET_CONNECTION | Status.IGNORE | 0x04
    wire = encode_message(PacketType.SQL_BATCH, bytes(25), packet_size=18, status=status, spid=9)
    packets = PacketParser().feed(wire)
    assert [p.status for p in packets] == [0x0C, 0x04, 0x07]
    assert {p.spid for p in packets} == {9}


def test_assembler_tests_the_eom_bit_not_the_whole_status() -> None:
    # Azure Data Studio marks non-final packets with status 0x04.
    wire = Packet(0x01, 0x04, 0, 1, 0, b"ab").encode() + Packet(0x01, 0x05, 0, 2, 0, b"cd").encode()
    assert assemble(wire) == [Message(0x01, 0x04, b"abcd")]


def test_type_change_inside_a_message_is_refused() -> None:
    assembler = MessageAssembler(1000)
    assert assembler.add(Packet(0x01, 0x00, 0, 1, 0, b"ab")) is None
    assert assembler.in_progress
    with pytest.raises(TdsError, match="inside a message"):
        assembler.add(Packet(0x03, 0x01, 0, 2, 0, b"cd"))


def test_message_cap_is_enforced() -> None:
    assembler = MessageAssembler(10)
    assert assembler.add(Packet(0x01, 0x00, 0, 1, 0, bytes(6))) is None
    with pytest.raises(TdsError, match="exceeds the limit of 10"):
        assembler.add(Packet(0x01, 0x01, 0, 2, 0, bytes(5)))
    exact = MessageAssembler(10)
    assert exact.add(Packet(0x01, 0x01, 0, 1, 0, bytes(10))) == Message(1, 1, bytes(10))


def test_invalid_packet_sizes_are_programming_errors() -> None:
    with pytest.raises(ValueError):
        encode_message(PacketType.SQL_BATCH, b"x", packet_size=8)
    with pytest.raises(ValueError):
        Packet(1, 1, 0, 0, 0, bytes(70000)).encode()


messages_strategy = st.lists(
    st.tuples(
        st.sampled_from([int(t) for t in PacketType] + [0x53]),
        st.binary(max_size=700),
        st.sampled_from([0, Status.RESET_CONNECTION, Status.IGNORE]),
    ),
    min_size=1,
    max_size=6,
)


@given(
    messages=messages_strategy,
    packet_size=st.integers(min_value=9, max_value=600),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=20),
)
def test_messages_survive_arbitrary_chunking(
    messages: list[tuple[int, bytes, int]], packet_size: int, cuts: list[int]
) -> None:
    wire = b"".join(
        encode_message(kind, payload, packet_size=packet_size, status=status)
        for kind, payload, status in messages
    )
    points = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
    parser = PacketParser()
    assembler = MessageAssembler(1 << 16)
    out: list[Message] = []
    for start, end in itertools.pairwise(points):
        for packet in parser.feed(wire[start:end]):
            assert len(packet.payload) + HEADER_SIZE <= packet_size
            message = assembler.add(packet)
            if message is not None:
                out.append(message)
    assert parser.buffered == 0 and not assembler.in_progress
    assert [(m.type, m.payload) for m in out] == [(k, p) for k, p, _ in messages]
    # The first packet's status, minus EOM/IGNORE unless the message is one packet.
    for message, (_, payload, status) in zip(out, messages, strict=True):
        if status == Status.RESET_CONNECTION:
            assert message.status & Status.RESET_CONNECTION
        if len(payload) <= packet_size - HEADER_SIZE:
            assert message.status & Status.EOM
