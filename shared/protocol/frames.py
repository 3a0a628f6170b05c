"""The frame codec of the Jumpoint channel: a sans-IO encoder and parser.

Every frame is a 10-byte header followed by a payload::

    type (u8) | flags (u8) | stream id (u32, big endian) | length (u32, big endian)

The tables in docs/protocol.md list the same constants; a test checks them
against the enums below.  L{FrameParser} is fed bytes in arbitrary chunks and
returns whole frames; it refuses any frame longer than its current limit
before buffering it, so a peer cannot make it hold more than one frame.

DATAGRAM frames use the stream id field for a *flow id*, which names a flow
of unreliable datagrams (L{shared.protocol.datagrams}), not a stream.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

ALPN_PROTOCOL = b"jumpoint/1"
"""The ALPN name of the protocol; the suffix is the protocol version."""

PROTOCOL_VERSION = 1

HEADER = struct.Struct("!BBII")
HEADER_SIZE = HEADER.size

MAX_PAYLOAD_BEFORE_HELLO = 16 * 1024
"""Largest frame payload accepted before the hello exchange completes."""

MAX_PAYLOAD = 256 * 1024
"""Largest frame payload accepted once the channel is established."""

MAX_DATA_CHUNK = 64 * 1024
"""Largest DATA payload a sender produces."""

MAX_CONTROL_PAYLOAD = 64 * 1024
"""Largest CONTROL or OPEN payload (a JSON document)."""

MAX_DATAGRAM_PAYLOAD = 65535
"""Largest DATAGRAM payload (one IP packet or UDP datagram), sent or accepted."""

MAX_STREAM_ID = 2**31 - 1
CONTROL_STREAM = 0
MAX_FLOW_ID = MAX_STREAM_ID
"""Flow ids share the header field, and its ceiling, with stream ids; 0 is no flow."""


class FrameType(enum.IntEnum):
    """Frame types (docs/protocol.md, table "Frame types")."""

    DATA = 0x0
    OPEN = 0x1
    WINDOW_UPDATE = 0x2
    RESET = 0x3
    PING = 0x4
    GOAWAY = 0x5
    CONTROL = 0x6
    DATAGRAM = 0x7


class Flag(enum.IntFlag):
    """Frame flags (docs/protocol.md, table "Flags")."""

    NONE = 0x0
    FIN = 0x1
    ACK = 0x2


class ErrorCode(enum.IntEnum):
    """Reason codes carried by RESET and GOAWAY (docs/protocol.md, table "Error codes")."""

    NO_ERROR = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2
    FLOW_CONTROL_ERROR = 3
    FRAME_SIZE_ERROR = 4
    REFUSED = 5
    UNREACHABLE = 6
    TIMED_OUT = 7
    DENIED = 8
    LIMIT = 9
    CANCEL = 10
    REVOKED = 11
    KEEPALIVE_TIMEOUT = 12
    SESSION_CLOSED = 13
    SHUTDOWN = 14
    RESTARTING = 15


def describe_code(code: int) -> str:
    """A readable name for a possibly unknown error code."""
    try:
        return ErrorCode(code).name.lower()
    except ValueError:
        return f"code {code}"


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame."""

    type: FrameType
    flags: int
    stream_id: int
    payload: bytes


class FrameError(Exception):
    """The byte stream is not a valid sequence of frames: drop the connection.

    @ivar code: the L{ErrorCode} to send in the GOAWAY that closes the connection.
    """

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# Per-type payload rules: (exact length or None, must be on the control stream,
# must be on a data stream).
_RULES: dict[FrameType, tuple[int | None, bool, bool]] = {
    FrameType.DATA: (None, False, True),
    FrameType.OPEN: (None, False, True),
    FrameType.WINDOW_UPDATE: (4, False, True),
    FrameType.RESET: (None, False, True),
    FrameType.PING: (8, True, False),
    FrameType.GOAWAY: (None, True, False),
    FrameType.CONTROL: (None, True, False),
    FrameType.DATAGRAM: (None, False, True),
}


_FRAME_TYPES: dict[int, FrameType] = {int(member): member for member in FrameType}
"""Each type's wire value to its member: a dict lookup per frame, not an enum call."""


def _id_name(frame_type: FrameType) -> str:
    """What the header's id field names for C{frame_type}: a flow or a stream."""
    return "flow" if frame_type is FrameType.DATAGRAM else "stream"


def encode_header(frame_type: FrameType, flags: int, stream_id: int, length: int) -> bytes:
    """The 10-byte header of a frame."""
    return HEADER.pack(frame_type, flags, stream_id, length)


def encode_frame(frame_type: FrameType, flags: int, stream_id: int, payload: bytes) -> bytes:
    """One whole frame as bytes."""
    return HEADER.pack(frame_type, flags, stream_id, len(payload)) + payload


def encode_datagram(flow_id: int, payload: bytes) -> bytes:
    """One DATAGRAM frame; raises C{ValueError} for an id or a size the receiver refuses."""
    if not 0 < flow_id <= MAX_FLOW_ID:
        raise ValueError(f"flow id {flow_id} out of range")
    if len(payload) > MAX_DATAGRAM_PAYLOAD:
        raise ValueError(f"datagram of {len(payload)} bytes exceeds {MAX_DATAGRAM_PAYLOAD}")
    return HEADER.pack(FrameType.DATAGRAM, 0, flow_id, len(payload)) + payload


def encode_window_update(stream_id: int, increment: int) -> bytes:
    return encode_frame(FrameType.WINDOW_UPDATE, 0, stream_id, struct.pack("!I", increment))


_CODE = struct.Struct("!I")
MAX_REASON_BYTES = 1024


def encode_reason(code: int, reason: str) -> bytes:
    """The payload of RESET and GOAWAY: a u32 code and a UTF-8 reason (truncated)."""
    raw = reason.encode("utf-8")[:MAX_REASON_BYTES].decode("utf-8", "ignore").encode("utf-8")
    return _CODE.pack(code) + raw


def decode_reason(payload: bytes) -> tuple[int, str]:
    """Decode a RESET or GOAWAY payload; raises L{FrameError} when it is too short."""
    if len(payload) < _CODE.size:
        raise FrameError(ErrorCode.FRAME_SIZE_ERROR, "reason payload shorter than 4 bytes")
    (code,) = _CODE.unpack_from(payload)
    return code, payload[_CODE.size :].decode("utf-8", errors="replace")


def decode_window_increment(payload: bytes) -> int:
    (increment,) = _CODE.unpack(payload)
    return int(increment)


def validate(frame: Frame) -> None:
    """Check the per-type rules of a decoded frame; raises L{FrameError}."""
    exact, control_only, data_only = _RULES[frame.type]
    if exact is not None and len(frame.payload) != exact:
        raise FrameError(
            ErrorCode.FRAME_SIZE_ERROR,
            f"{frame.type.name} frame with a {len(frame.payload)}-byte payload (expected {exact})",
        )
    if control_only and frame.stream_id != CONTROL_STREAM:
        raise FrameError(
            ErrorCode.PROTOCOL_ERROR, f"{frame.type.name} frame on stream {frame.stream_id}"
        )
    if data_only and frame.stream_id == CONTROL_STREAM:
        raise FrameError(
            ErrorCode.PROTOCOL_ERROR, f"{frame.type.name} frame on {_id_name(frame.type)} 0"
        )
    if frame.type in (FrameType.RESET, FrameType.GOAWAY) and len(frame.payload) < 4:
        raise FrameError(ErrorCode.FRAME_SIZE_ERROR, f"{frame.type.name} frame too short")
    if frame.type in (FrameType.OPEN, FrameType.CONTROL) and (
        len(frame.payload) > MAX_CONTROL_PAYLOAD
    ):
        raise FrameError(ErrorCode.FRAME_SIZE_ERROR, f"{frame.type.name} payload too large")
    if frame.type is FrameType.DATAGRAM and len(frame.payload) > MAX_DATAGRAM_PAYLOAD:
        raise FrameError(
            ErrorCode.FRAME_SIZE_ERROR,
            f"DATAGRAM payload of {len(frame.payload)} bytes exceeds {MAX_DATAGRAM_PAYLOAD}",
        )


class FrameParser:
    """Incremental frame parser with an explicit size limit.

    Feed it with L{feed}; it returns the complete frames found so far.  The
    limit starts at L{MAX_PAYLOAD_BEFORE_HELLO} and is raised with
    L{raise_limit} once the peer has been accepted.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD_BEFORE_HELLO) -> None:
        self._buffer = bytearray()
        self._max_payload = max_payload

    @property
    def buffered(self) -> int:
        """How many bytes are waiting for the rest of their frame."""
        return len(self._buffer)

    def raise_limit(self, max_payload: int = MAX_PAYLOAD) -> None:
        self._max_payload = max_payload

    def feed(self, data: bytes) -> list[Frame]:
        """Add C{data} and return every frame now complete; raises L{FrameError}."""
        buffer = self._buffer
        frames: list[Frame] = []
        if not buffer:
            offset = self._parse(data, frames)
            if offset < len(data):
                buffer += memoryview(data)[offset:]
            return frames
        buffer += data
        with memoryview(buffer) as view:  # released before the bytearray shrinks
            offset = self._parse(view, frames)
        del buffer[:offset]
        return frames

    def _parse(self, view: bytes | memoryview, frames: list[Frame]) -> int:
        """Append the complete frames in C{view} to C{frames}; the offset after the last."""
        offset = 0
        end = len(view)
        unpack_from = HEADER.unpack_from
        max_payload = self._max_payload
        types = _FRAME_TYPES
        while end - offset >= HEADER_SIZE:
            type_value, flags, stream_id, length = unpack_from(view, offset)
            if length > max_payload:
                raise FrameError(
                    ErrorCode.FRAME_SIZE_ERROR,
                    f"frame of {length} bytes exceeds the limit of {max_payload}",
                )
            frame_type = types.get(type_value)
            if frame_type is None:
                raise FrameError(ErrorCode.PROTOCOL_ERROR, f"unknown frame type 0x{type_value:02x}")
            if stream_id > MAX_STREAM_ID:
                raise FrameError(
                    ErrorCode.PROTOCOL_ERROR,
                    f"{_id_name(frame_type)} id {stream_id} out of range",
                )
            if end - offset - HEADER_SIZE < length:
                break
            start = offset + HEADER_SIZE
            offset = start + length
            frame = Frame(frame_type, flags, stream_id, bytes(view[start:offset]))
            if (
                frame_type is not FrameType.DATAGRAM
                or not stream_id
                or length > MAX_DATAGRAM_PAYLOAD
            ):
                validate(frame)  # a DATAGRAM on a flow, within its size, passes every rule
            frames.append(frame)
        return offset
