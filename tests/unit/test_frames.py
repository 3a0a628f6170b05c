"""Property tests of the frame codec (shared/protocol/frames.py) and the control schema."""

from __future__ import annotations

import contextlib
import itertools
import json
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shared.errors import ProtocolViolation
from shared.protocol import control, frames
from shared.protocol.frames import (
    HEADER_SIZE,
    MAX_CONTROL_PAYLOAD,
    MAX_DATAGRAM_PAYLOAD,
    MAX_PAYLOAD,
    MAX_PAYLOAD_BEFORE_HELLO,
    MAX_REASON_BYTES,
    ErrorCode,
    Frame,
    FrameError,
    FrameParser,
    FrameType,
    encode_frame,
)

U32 = 2**32 - 1
KNOWN_TYPES = {int(t) for t in FrameType}

# -- strategies --------------------------------------------------------------

data_stream_ids = st.integers(min_value=1, max_value=frames.MAX_STREAM_ID)
flag_bits = st.integers(min_value=0, max_value=255)


def _payload(min_size: int = 0, max_size: int = 64) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=min_size, max_size=max_size)


def _frame(
    kind: FrameType, stream: st.SearchStrategy[int], payload: st.SearchStrategy[bytes]
) -> st.SearchStrategy[Frame]:
    return st.builds(Frame, st.just(kind), flag_bits, stream, payload)


def valid_frames(max_payload: int = 64) -> st.SearchStrategy[Frame]:
    """Any frame that validate() accepts, with small payloads."""
    return st.one_of(
        _frame(FrameType.DATA, data_stream_ids, _payload(0, max_payload)),
        _frame(FrameType.OPEN, data_stream_ids, _payload(0, max_payload)),
        _frame(FrameType.WINDOW_UPDATE, data_stream_ids, _payload(4, 4)),
        _frame(FrameType.RESET, data_stream_ids, _payload(4, max_payload + 4)),
        _frame(FrameType.PING, st.just(0), _payload(8, 8)),
        _frame(FrameType.GOAWAY, st.just(0), _payload(4, max_payload + 4)),
        _frame(FrameType.CONTROL, st.just(0), _payload(0, max_payload)),
        _frame(FrameType.DATAGRAM, data_stream_ids, _payload(0, max_payload)),
    )


def encode(frame: Frame) -> bytes:
    return encode_frame(frame.type, frame.flags, frame.stream_id, frame.payload)


def feed_all(parser: FrameParser, chunks: list[bytes]) -> list[Frame]:
    out: list[Frame] = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out


def chunked(blob: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(blob)) for c in cuts})
    bounds = [0, *points, len(blob)]
    return [blob[a:b] for a, b in itertools.pairwise(bounds)]


@contextlib.contextmanager
def raises_frame_error(code: ErrorCode) -> Iterator[None]:
    with pytest.raises(FrameError) as info:
        yield
    assert info.value.code == code, info.value


# -- round trips --------------------------------------------------------------


@given(valid_frames(max_payload=2048))
def test_single_frame_round_trip(frame: Frame) -> None:
    frames.validate(frame)
    blob = encode(frame)
    assert len(blob) == HEADER_SIZE + len(frame.payload)
    assert blob[:HEADER_SIZE] == frames.encode_header(
        frame.type, frame.flags, frame.stream_id, len(frame.payload)
    )
    parser = FrameParser()
    assert parser.feed(blob) == [frame]
    assert parser.buffered == 0


@given(st.lists(valid_frames(max_payload=24), max_size=6))
def test_split_at_every_byte_position(sequence: list[Frame]) -> None:
    blob = b"".join(encode(f) for f in sequence)
    for position in range(len(blob) + 1):
        parser = FrameParser()
        first = parser.feed(blob[:position])
        # The first part yields exactly the frames that ended in it.
        assert first == sequence[: len(first)]
        assert len(blob[:position]) - sum(len(encode(f)) for f in first) == parser.buffered
        rest = parser.feed(blob[position:])
        assert first + rest == sequence
        assert parser.buffered == 0


@given(
    st.lists(valid_frames(max_payload=300), max_size=8),
    st.lists(st.integers(min_value=0, max_value=4000), max_size=30),
)
def test_random_chunkings(sequence: list[Frame], cuts: list[int]) -> None:
    blob = b"".join(encode(f) for f in sequence)
    parser = FrameParser()
    assert feed_all(parser, chunked(blob, cuts)) == sequence
    assert parser.buffered == 0


@given(st.lists(valid_frames(max_payload=16), min_size=1, max_size=4))
def test_byte_by_byte(sequence: list[Frame]) -> None:
    blob = b"".join(encode(f) for f in sequence)
    parser = FrameParser()
    assert feed_all(parser, [blob[i : i + 1] for i in range(len(blob))]) == sequence


@given(valid_frames(max_payload=64), st.integers(min_value=1, max_value=200))
def test_incomplete_frame_is_held_back(frame: Frame, missing: int) -> None:
    blob = encode(frame)
    missing = min(missing, len(blob))
    parser = FrameParser()
    assert parser.feed(blob[:-missing]) == []
    assert parser.buffered == len(blob) - missing
    assert parser.feed(blob[-missing:]) == [frame]


def test_large_frames_after_raise_limit() -> None:
    payload = bytes(range(256)) * (MAX_PAYLOAD // 256)
    blob = encode_frame(FrameType.DATA, frames.Flag.FIN, 7, payload)
    parser = FrameParser()
    parser.raise_limit()
    out = feed_all(parser, [blob[:5], blob[5:100_000], blob[100_000:]])
    assert out == [Frame(FrameType.DATA, frames.Flag.FIN, 7, payload)]


# -- size limits --------------------------------------------------------------


@given(
    st.integers(min_value=0, max_value=255),
    flag_bits,
    st.integers(min_value=0, max_value=U32),
    st.integers(min_value=MAX_PAYLOAD_BEFORE_HELLO + 1, max_value=U32),
    st.lists(valid_frames(max_payload=16), max_size=3),
)
def test_oversize_rejected_from_the_header_alone(
    type_value: int, flags: int, stream_id: int, length: int, before: list[Frame]
) -> None:
    header = struct.pack("!BBII", type_value, flags, stream_id, length)
    parser = FrameParser()
    # Valid frames first, then only the header: no payload byte is needed to refuse it.
    with raises_frame_error(ErrorCode.FRAME_SIZE_ERROR):
        parser.feed(b"".join(encode(f) for f in before) + header)


@given(st.integers(min_value=MAX_PAYLOAD + 1, max_value=U32))
def test_oversize_rejected_after_raise_limit(length: int) -> None:
    parser = FrameParser()
    parser.raise_limit()
    with raises_frame_error(ErrorCode.FRAME_SIZE_ERROR):
        parser.feed(frames.encode_header(FrameType.DATA, 0, 1, length))


@given(st.integers(min_value=0, max_value=HEADER_SIZE - 1))
def test_oversize_header_split_raises_once_complete(cut: int) -> None:
    header = frames.encode_header(FrameType.DATA, 0, 1, MAX_PAYLOAD_BEFORE_HELLO + 1)
    parser = FrameParser()
    assert parser.feed(header[:cut]) == []
    with raises_frame_error(ErrorCode.FRAME_SIZE_ERROR):
        parser.feed(header[cut:])


def test_limit_is_inclusive() -> None:
    parser = FrameParser()
    header = frames.encode_header(FrameType.DATA, 0, 1, MAX_PAYLOAD_BEFORE_HELLO)
    assert parser.feed(header) == []
    assert parser.buffered == HEADER_SIZE
    out = parser.feed(b"x" * MAX_PAYLOAD_BEFORE_HELLO)
    assert out == [Frame(FrameType.DATA, 0, 1, b"x" * MAX_PAYLOAD_BEFORE_HELLO)]


@given(st.integers(min_value=1, max_value=MAX_PAYLOAD))
def test_raise_limit(limit: int) -> None:
    parser = FrameParser()
    parser.raise_limit(limit)
    assert parser.feed(frames.encode_header(FrameType.DATA, 0, 1, limit)) == []
    assert parser.buffered == HEADER_SIZE
    parser = FrameParser()
    parser.raise_limit(limit)
    with raises_frame_error(ErrorCode.FRAME_SIZE_ERROR):
        parser.feed(frames.encode_header(FrameType.DATA, 0, 1, limit + 1))


def test_raise_limit_default_and_applies_to_buffered_header() -> None:
    parser = FrameParser()
    header = frames.encode_header(FrameType.DATA, 0, 1, MAX_PAYLOAD_BEFORE_HELLO + 1)
    parser.feed(header[:4])
    parser.raise_limit()
    assert parser.feed(header[4:]) == []
    payload = b"y" * (MAX_PAYLOAD_BEFORE_HELLO + 1)
    assert parser.feed(payload) == [Frame(FrameType.DATA, 0, 1, payload)]
    assert parser.feed(frames.encode_header(FrameType.DATA, 0, 1, MAX_PAYLOAD)) == []
    with raises_frame_error(ErrorCode.FRAME_SIZE_ERROR):
        FrameParser(MAX_PAYLOAD).feed(frames.encode_header(FrameType.DATA, 0, 1, MAX_PAYLOAD + 1))


# -- unknown types and per-type rules -------------------------------------------


@given(
    st.integers(min_value=0, max_value=255).filter(lambda t: t not in KNOWN_TYPES),
    flag_bits,
    st.integers(min_value=0, max_value=U32),
    _payload(0, 64),
)
def test_unknown_type_is_protocol_error(
    type_value: int, flags: int, stream_id: int, payload: bytes
) -> None:
    blob = struct.pack("!BBII", type_value, flags, stream_id, len(payload)) + payload
    with raises_frame_error(ErrorCode.PROTOCOL_ERROR):
        FrameParser().feed(blob)


def _check(frame: Frame, code: ErrorCode) -> None:
    with raises_frame_error(code):
        frames.validate(frame)
    parser = FrameParser(MAX_PAYLOAD)
    with raises_frame_error(code):
        parser.feed(encode(frame))


@given(
    _payload(0, 40).filter(lambda p: len(p) != 8), st.integers(0, frames.MAX_STREAM_ID), flag_bits
)
def test_ping_must_be_8_bytes(payload: bytes, stream_id: int, flags: int) -> None:
    _check(Frame(FrameType.PING, flags, stream_id, payload), ErrorCode.FRAME_SIZE_ERROR)


@given(_payload(8, 8), data_stream_ids, flag_bits)
def test_ping_must_be_on_stream_0(payload: bytes, stream_id: int, flags: int) -> None:
    _check(Frame(FrameType.PING, flags, stream_id, payload), ErrorCode.PROTOCOL_ERROR)


@given(_payload(0, 40).filter(lambda p: len(p) != 4), st.integers(0, frames.MAX_STREAM_ID))
def test_window_update_must_be_4_bytes(payload: bytes, stream_id: int) -> None:
    _check(Frame(FrameType.WINDOW_UPDATE, 0, stream_id, payload), ErrorCode.FRAME_SIZE_ERROR)


@given(_payload(4, 4))
def test_window_update_must_not_be_on_stream_0(payload: bytes) -> None:
    _check(Frame(FrameType.WINDOW_UPDATE, 0, 0, payload), ErrorCode.PROTOCOL_ERROR)


@given(
    st.sampled_from([FrameType.DATA, FrameType.OPEN, FrameType.RESET]),
    _payload(4, 40),
    flag_bits,
)
def test_stream_frames_must_not_be_on_stream_0(kind: FrameType, payload: bytes, flags: int) -> None:
    _check(Frame(kind, flags, 0, payload), ErrorCode.PROTOCOL_ERROR)


@given(st.sampled_from([FrameType.GOAWAY, FrameType.CONTROL]), data_stream_ids, _payload(4, 40))
def test_control_frames_must_be_on_stream_0(
    kind: FrameType, stream_id: int, payload: bytes
) -> None:
    _check(Frame(kind, 0, stream_id, payload), ErrorCode.PROTOCOL_ERROR)


@given(_payload(0, 3))
def test_reset_and_goaway_need_a_code(payload: bytes) -> None:
    _check(Frame(FrameType.RESET, 0, 1, payload), ErrorCode.FRAME_SIZE_ERROR)
    _check(Frame(FrameType.GOAWAY, 0, 0, payload), ErrorCode.FRAME_SIZE_ERROR)


@pytest.mark.parametrize(("kind", "stream_id"), [(FrameType.OPEN, 1), (FrameType.CONTROL, 0)])
def test_open_and_control_payload_limit(kind: FrameType, stream_id: int) -> None:
    frames.validate(Frame(kind, 0, stream_id, b"a" * MAX_CONTROL_PAYLOAD))
    _check(Frame(kind, 0, stream_id, b"a" * (MAX_CONTROL_PAYLOAD + 1)), ErrorCode.FRAME_SIZE_ERROR)


def test_data_and_reset_may_exceed_control_payload_limit() -> None:
    frames.validate(Frame(FrameType.DATA, 0, 1, b"a" * (MAX_CONTROL_PAYLOAD + 1)))
    frames.validate(Frame(FrameType.RESET, 0, 1, b"a" * (MAX_CONTROL_PAYLOAD + 1)))


# -- datagrams ---------------------------------------------------------------------


@given(data_stream_ids, _payload(0, 2048))
def test_datagram_round_trip(flow_id: int, payload: bytes) -> None:
    blob = frames.encode_datagram(flow_id, payload)
    assert blob == encode_frame(FrameType.DATAGRAM, 0, flow_id, payload)
    assert FrameParser(MAX_PAYLOAD).feed(blob) == [Frame(FrameType.DATAGRAM, 0, flow_id, payload)]


def test_datagram_of_the_largest_size_round_trips() -> None:
    payload = bytes(range(256)) * (MAX_DATAGRAM_PAYLOAD // 256) + b"x" * (
        MAX_DATAGRAM_PAYLOAD % 256
    )
    assert len(payload) == MAX_DATAGRAM_PAYLOAD
    (frame,) = FrameParser(MAX_PAYLOAD).feed(frames.encode_datagram(7, payload))
    assert (frame.stream_id, frame.payload) == (7, payload)


def test_datagram_type_value_and_limit_fit_the_frame_limit() -> None:
    assert int(FrameType.DATAGRAM) == 0x7
    assert MAX_DATAGRAM_PAYLOAD == 65535
    assert MAX_DATAGRAM_PAYLOAD <= MAX_PAYLOAD
    assert frames.MAX_FLOW_ID == frames.MAX_STREAM_ID


@given(_payload(0, 40), flag_bits)
def test_datagram_for_flow_0_is_a_protocol_error(payload: bytes, flags: int) -> None:
    _check(Frame(FrameType.DATAGRAM, flags, 0, payload), ErrorCode.PROTOCOL_ERROR)
    with pytest.raises(FrameError, match="DATAGRAM frame on flow 0"):
        frames.validate(Frame(FrameType.DATAGRAM, flags, 0, payload))


@given(st.integers(min_value=MAX_DATAGRAM_PAYLOAD + 1, max_value=MAX_DATAGRAM_PAYLOAD + 300))
def test_datagram_longer_than_its_limit_is_a_frame_size_error(size: int) -> None:
    _check(Frame(FrameType.DATAGRAM, 0, 1, b"d" * size), ErrorCode.FRAME_SIZE_ERROR)
    with pytest.raises(FrameError, match=f"DATAGRAM payload of {size} bytes exceeds 65535"):
        frames.validate(Frame(FrameType.DATAGRAM, 0, 1, b"d" * size))


def test_datagram_before_the_hello_is_bound_by_the_early_frame_limit() -> None:
    blob = frames.encode_datagram(1, b"d" * (MAX_PAYLOAD_BEFORE_HELLO + 1))
    with raises_frame_error(ErrorCode.FRAME_SIZE_ERROR):
        FrameParser().feed(blob[:HEADER_SIZE])


@given(st.integers(min_value=frames.MAX_STREAM_ID + 1, max_value=U32))
def test_flow_id_out_of_range_is_named_a_flow_id(flow_id: int) -> None:
    header = struct.pack("!BBII", FrameType.DATAGRAM, 0, flow_id, 0)
    with pytest.raises(FrameError, match=f"flow id {flow_id} out of range") as raised:
        FrameParser().feed(header)
    assert raised.value.code == ErrorCode.PROTOCOL_ERROR


@pytest.mark.parametrize(
    ("flow_id", "size", "message"),
    [
        (0, 1, "flow id 0 out of range"),
        (-1, 1, "flow id -1 out of range"),
        (frames.MAX_FLOW_ID + 1, 1, "out of range"),
        (1, MAX_DATAGRAM_PAYLOAD + 1, "datagram of 65536 bytes exceeds 65535"),
    ],
)
def test_encode_datagram_refuses_what_a_receiver_refuses(
    flow_id: int, size: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        frames.encode_datagram(flow_id, b"d" * size)


# -- reasons and window increments -----------------------------------------------


@given(st.integers(min_value=0, max_value=U32), st.text(max_size=300))
def test_reason_round_trip(code: int, reason: str) -> None:
    assume(len(reason.encode()) <= MAX_REASON_BYTES)
    payload = frames.encode_reason(code, reason)
    assert frames.decode_reason(payload) == (code, reason)


@given(st.integers(min_value=0, max_value=U32), st.text(min_size=200, max_size=1500))
def test_reason_truncated_to_max_bytes(code: int, reason: str) -> None:
    raw = reason.encode()
    payload = frames.encode_reason(code, reason)
    assert len(payload) <= 4 + min(len(raw), MAX_REASON_BYTES)
    assert len(payload) > 4 + min(len(raw), MAX_REASON_BYTES) - 4  # at most one character cut
    decoded_code, decoded = frames.decode_reason(payload)
    assert decoded_code == code
    # Truncation never cuts a character in half: the text is a clean prefix.
    assert reason.startswith(decoded)
    assert "\ufffd" not in decoded or "\ufffd" in reason


@given(
    st.sampled_from(sorted(KNOWN_TYPES)),
    st.integers(min_value=frames.MAX_STREAM_ID + 1, max_value=U32),
)
def test_stream_id_out_of_range_rejected_from_the_header(type_value: int, stream_id: int) -> None:
    header = struct.pack("!BBII", type_value, 0, stream_id, 8)
    with raises_frame_error(ErrorCode.PROTOCOL_ERROR):
        FrameParser().feed(header)


def test_reason_truncation_exact() -> None:
    payload = frames.encode_reason(ErrorCode.LIMIT, "é" * 600)  # 2 bytes each
    assert frames.decode_reason(payload) == (ErrorCode.LIMIT, "é" * 512)


@given(_payload(0, 3))
def test_decode_reason_too_short(payload: bytes) -> None:
    with raises_frame_error(ErrorCode.FRAME_SIZE_ERROR):
        frames.decode_reason(payload)


@given(st.integers(min_value=0, max_value=U32), _payload(0, 64))
def test_decode_reason_never_fails_on_bad_utf8(code: int, raw: bytes) -> None:
    decoded_code, reason = frames.decode_reason(struct.pack("!I", code) + raw)
    assert decoded_code == code
    assert isinstance(reason, str)


@given(data_stream_ids, st.integers(min_value=0, max_value=U32))
def test_window_update_round_trip(stream_id: int, increment: int) -> None:
    (frame,) = FrameParser().feed(frames.encode_window_update(stream_id, increment))
    assert (frame.type, frame.stream_id) == (FrameType.WINDOW_UPDATE, stream_id)
    assert frames.decode_window_increment(frame.payload) == increment


def test_describe_code() -> None:
    assert frames.describe_code(ErrorCode.FLOW_CONTROL_ERROR) == "flow_control_error"
    assert frames.describe_code(9) == "limit"
    assert frames.describe_code(4242) == "code 4242"


# -- StreamTarget (OPEN payloads) --------------------------------------------------

hosts = st.text(min_size=1, max_size=255)
ports = st.integers(min_value=1, max_value=65535)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(hosts, ports)
def test_stream_target_round_trip(host: str, port: int) -> None:
    target = control.StreamTarget(host, port)
    payload = target.encode()
    assert json.loads(payload) == {"host": host, "port": port}
    assert control.StreamTarget.decode(payload) == target


def _valid_target(host: object, port: object) -> bool:
    return isinstance(host, str) and 0 < len(host) <= 255 and type(port) is int and 0 < port < 65536


@given(st.one_of(hosts, json_values), st.one_of(ports, json_values))
def test_stream_target_accepts_exactly_valid_objects(host: Any, port: Any) -> None:
    payload = json.dumps({"host": host, "port": port}).encode()
    if _valid_target(host, port):
        assert control.StreamTarget.decode(payload) == control.StreamTarget(host, port)
    else:
        with pytest.raises(ProtocolViolation):
            control.StreamTarget.decode(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00",
        b'{"host": "a", "port": 22',
        b"[]",
        b'"host"',
        b"22",
        b"null",
        b'{"port": 22}',
        b'{"host": "db", "port": "22"}',
        b'{"host": "db", "port": true}',
        b'{"host": "db", "port": 22.0}',
        b'{"host": "db", "port": 0}',
        b'{"host": "db", "port": 65536}',
        b'{"host": "db", "port": -1}',
        b'{"host": "", "port": 22}',
        b'{"host": 5, "port": 22}',
        b'{"host": null, "port": 22}',
        b'{"host": "' + b"h" * 256 + b'", "port": 22}',
    ],
)
def test_stream_target_rejects(payload: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        control.StreamTarget.decode(payload)


def test_stream_target_limits_inclusive() -> None:
    assert control.StreamTarget.decode(b'{"host": "' + b"h" * 255 + b'", "port": 65535}').port
    assert control.StreamTarget.decode(b'{"host": "h", "port": 1, "extra": []}').host == "h"


@given(st.binary(max_size=80))
def test_stream_target_arbitrary_bytes(payload: bytes) -> None:
    try:
        target = control.StreamTarget.decode(payload)
    except ProtocolViolation:
        return
    assert _valid_target(target.host, target.port)


def test_stream_target_deeply_nested_json() -> None:
    # json.loads raises RecursionError, not ValueError, on deeply nested input.
    with pytest.raises(ProtocolViolation):
        control.StreamTarget.decode(b"[" * 50_000)


# -- control.check_message -------------------------------------------------------

_SAMPLES: dict[type, Any] = {
    int: 7,
    str: "text",
    dict: {"code": "x", "message": "y"},
    bool: True,
    list: [],
}
_WRONG: list[Any] = [None, True, False, 1, 1.5, "s", [], {}, [1]]


def sample_message(kind: str) -> dict[str, Any]:
    message: dict[str, Any] = {"type": kind}
    for name, expected in control._FIELDS[kind].items():
        first = expected if isinstance(expected, type) else expected[0]
        message[name] = _SAMPLES[first]
    return message


def _direction(kind: str) -> set[str]:
    return (
        control.CONSOLE_MESSAGES
        if kind in control.CONSOLE_MESSAGES
        else (control.JUMPOINT_MESSAGES)
    )


ALL_KINDS = sorted(control._FIELDS)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_check_message_accepts_valid(kind: str) -> None:
    message = sample_message(kind)
    assert control.check_message(message, _direction(kind)) == kind
    message["extra"] = {"anything": [1, 2]}
    assert control.check_message(message, _direction(kind)) == kind


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_check_message_rejects_wrong_direction(kind: str) -> None:
    other = (
        control.JUMPOINT_MESSAGES
        if kind in control.CONSOLE_MESSAGES
        else (control.CONSOLE_MESSAGES)
    )
    with pytest.raises(ProtocolViolation):
        control.check_message(sample_message(kind), other)


@given(st.sampled_from(ALL_KINDS), st.data())
def test_check_message_rejects_missing_or_mistyped_field(kind: str, data: st.DataObject) -> None:
    message = sample_message(kind)
    name = data.draw(st.sampled_from(sorted(control._FIELDS[kind])))
    expected = control._FIELDS[kind][name]
    replacement = data.draw(st.sampled_from(["<missing>", *_WRONG]))
    if replacement == "<missing>":
        del message[name]
    else:
        still_valid = isinstance(replacement, expected) and (
            expected is bool or not isinstance(replacement, bool)
        )
        assume(not still_valid)
        message[name] = replacement
    with pytest.raises(ProtocolViolation):
        control.check_message(message, _direction(kind))


@pytest.mark.parametrize("kind", [k for k in ALL_KINDS if str in control._FIELDS[k].values()])
def test_check_message_string_length(kind: str) -> None:
    name = next(n for n, t in control._FIELDS[kind].items() if t is str)
    message = sample_message(kind)
    message[name] = "x" * control.MAX_STRING
    assert control.check_message(message, _direction(kind)) == kind
    message[name] = "x" * (control.MAX_STRING + 1)
    with pytest.raises(ProtocolViolation):
        control.check_message(message, _direction(kind))


@pytest.mark.parametrize("kind", [None, 1, "", "HELLO", "nonsense", "result"])
def test_check_message_rejects_unknown_type(kind: object) -> None:
    message = {**sample_message("hello"), "type": kind}
    with pytest.raises(ProtocolViolation):
        control.check_message(message, control.CONSOLE_MESSAGES)


def test_check_message_rejects_missing_type() -> None:
    message = sample_message("hello")
    del message["type"]
    with pytest.raises(ProtocolViolation):
        control.check_message(message, control.CONSOLE_MESSAGES)


@pytest.mark.parametrize("kind", [["hello"], {"hello": 1}])
def test_check_message_rejects_unhashable_type(kind: object) -> None:
    with pytest.raises(ProtocolViolation):
        control.check_message({"type": kind}, control.CONSOLE_MESSAGES)


def test_directions_are_disjoint_and_cover_fields() -> None:
    assert not control.CONSOLE_MESSAGES & control.JUMPOINT_MESSAGES
    assert set(control._FIELDS) == control.CONSOLE_MESSAGES | control.JUMPOINT_MESSAGES
