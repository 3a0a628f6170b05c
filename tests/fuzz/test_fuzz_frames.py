"""Fuzz target of the channel's frame codec (shared/protocol/frames.py).

Valid frame streams, mutated ones and plain random bytes are fed to a
L{FrameParser} in random chunkings.  The parser must either return frames or
raise L{FrameError} (nothing else may escape); fed in pieces it must return
exactly what it returns when fed at once, fail exactly when that fails, and
never buffer more than one frame header plus the largest payload it accepts.
Every frame it returns re-encodes to the bytes it came from.  Run long with
C{scripts/fuzz.sh}.
"""

from __future__ import annotations

from collections.abc import Iterator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.protocol import frames
from shared.protocol.frames import (
    HEADER_SIZE,
    MAX_PAYLOAD,
    MAX_PAYLOAD_BEFORE_HELLO,
    Flag,
    Frame,
    FrameError,
    FrameParser,
    FrameType,
    encode_frame,
)

LIMITS = st.sampled_from([MAX_PAYLOAD_BEFORE_HELLO, MAX_PAYLOAD, 64])


@st.composite
def valid_frame(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(list(FrameType)))
    flags = draw(st.sampled_from([0, Flag.FIN, Flag.ACK, 0xFF]))
    on_control = kind in (FrameType.PING, FrameType.GOAWAY, FrameType.CONTROL)
    stream_id = 0 if on_control else draw(st.integers(1, frames.MAX_STREAM_ID))
    if kind is FrameType.PING:
        payload = draw(st.binary(min_size=8, max_size=8))
    elif kind is FrameType.WINDOW_UPDATE:
        payload = draw(st.binary(min_size=4, max_size=4))
    elif kind in (FrameType.RESET, FrameType.GOAWAY):
        code = draw(st.integers(0, 2**32 - 1))
        payload = frames.encode_reason(code, draw(st.text(max_size=40)))
    else:
        payload = draw(st.binary(max_size=300))
    return encode_frame(kind, flags, stream_id, payload)


@st.composite
def inputs(draw: st.DrawFn) -> bytes:
    """A valid frame stream, then perhaps mutated (flipped, cut, spliced) or replaced."""
    stream = b"".join(draw(st.lists(valid_frame(), max_size=8)))
    choice = draw(st.integers(0, 4))
    if choice == 0 or not stream:
        return stream if choice == 0 else draw(st.binary(max_size=2048))
    data = bytearray(stream)
    if choice == 1:
        for _ in range(draw(st.integers(1, 4))):
            position = draw(st.integers(0, len(data) - 1))
            data[position] = draw(st.integers(0, 255))
    elif choice == 2:
        return bytes(data[: draw(st.integers(0, len(data)))])
    elif choice == 3:
        position = draw(st.integers(0, len(data)))
        data[position:position] = draw(st.binary(min_size=1, max_size=64))
    else:
        return draw(st.binary(max_size=2048))
    return bytes(data)


CUTS = st.lists(st.integers(0, 4096), max_size=20)


def chunked(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    start = 0
    for cut in sorted({c for c in cuts if 0 < c < len(data)}):
        yield data[start:cut]
        start = cut
    yield data[start:]


def _parse(chunks: list[bytes], limit: int) -> tuple[list[Frame], FrameError | None, int]:
    parser = FrameParser(limit)
    out: list[Frame] = []
    try:
        for chunk in chunks:
            out += parser.feed(chunk)
            assert parser.buffered <= HEADER_SIZE + limit, "the parser buffered beyond a frame"
    except FrameError as error:
        return out, error, parser.buffered
    return out, None, parser.buffered


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(data=inputs(), cuts=CUTS, limit=LIMITS)
def test_fuzz_frames(data: bytes, cuts: list[int], limit: int) -> None:
    whole, whole_error, whole_left = _parse([data], limit)
    pieces, pieces_error, pieces_left = _parse(list(chunked(data, cuts)), limit)
    assert (whole_error is None) == (pieces_error is None)
    if whole_error is None:
        assert pieces == whole
        assert pieces_left == whole_left
        consumed = sum(HEADER_SIZE + len(f.payload) for f in whole)
        assert consumed + whole_left == len(data)
        assert (
            b"".join(encode_frame(f.type, f.flags, f.stream_id, f.payload) for f in whole)
            == data[:consumed]
        )
    else:
        assert pieces_error is not None
        assert pieces_error.code == whole_error.code
        assert pieces[: len(whole)] == whole[: len(pieces)]
    for frame in whole + pieces:
        frames.validate(frame)  # what the parser returns obeys the per-type rules


@given(payload=st.binary(max_size=2048))
def test_fuzz_frame_reason_decoding(payload: bytes) -> None:
    try:
        code, reason = frames.decode_reason(payload)
    except FrameError:
        assert len(payload) < 4
        return
    assert 0 <= code < 2**32 and isinstance(reason, str)
    encoded = frames.encode_reason(code, reason)
    assert len(encoded) <= 4 + frames.MAX_REASON_BYTES + 3
