"""A hostile console against the real Jumpoint channel, in memory (standing battery, issue 9).

The console is enrolled (a real user certificate, real TLS 1.3 over
L{twisted.test.iosim}) and completes the hello exchange; then it writes raw
frames of its own making: every framing and stream violation, floods while
it does not read (PING, OPEN, control requests), credit overruns, and huge
integers and malformed JSON in every control message.  Throughout, a second,
well-behaved console on the same Jumpoint keeps working, the Jumpoint logs no
unhandled error, and what the Jumpoint buffers for the hostile console stays
under its cap.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, globalLogPublisher
from twisted.test.iosim import IOPump, connectedServerAndClient

from console.channel import ConsoleChannel
from console.profiles import Profile
from jumpoint.config import parse_config
from jumpoint.server import JumpointChannel, JumpointCore, JumpointFactory
from jumpoint.state import StateDatabase
from shared import pki
from shared.protocol import control, frames
from shared.protocol.control import StreamTarget
from shared.protocol.frames import ErrorCode, Flag, Frame, FrameParser, FrameType, encode_frame
from shared.protocol.mux import MuxSettings
from shared.protocol.tls import client_options, server_options, wrap_client, wrap_server
from tests.unit.test_channel_tls import CONFIG, Pki, RecordingApp, Targets, result_of


@pytest.fixture(scope="module")
def keys() -> Pki:
    ca = pki.create_ca("unit")
    return Pki(
        ca, pki.issue_server(ca, "unit", ["127.0.0.1"]), pki.issue_client(ca, "alice", "default")
    )


@pytest.fixture
def errors() -> Iterator[list[LogEvent]]:
    """Every error-level or failure event logged while the test runs."""
    seen: list[LogEvent] = []

    def observe(event: LogEvent) -> None:
        if event.get("log_failure") is not None or event.get("log_level") in (
            LogLevel.error,
            LogLevel.critical,
        ):
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


class Jumpoint:
    """One in-memory Jumpoint that consoles connect to."""

    def __init__(self, tmp_path: Path, keys: Pki) -> None:
        self.clock = Clock()
        self.keys = keys
        self.tmp_path = tmp_path
        config = parse_config(CONFIG, tmp_path / "jumpoint.yaml")
        database = StateDatabase(tmp_path / "state.db")
        database.add_user("alice", "default", keys.alice.serial, "2099-01-01")
        self.targets = Targets()
        self.core = JumpointCore(
            config=config, database=database, clock=self.clock, connect_target=self.targets
        )
        self.server_factory = wrap_server(
            server_options(
                keys.ca.certificate_pem, keys.server.certificate_pem, keys.server.key_pem
            ),
            JumpointFactory(self.core),
        )

    def connect(self) -> tuple[ConsoleChannel, IOPump, JumpointChannel]:
        profile = Profile("unit", self.tmp_path, "unit", "127.0.0.1", 7443, "127.0.0.1", "alice")
        console = ConsoleChannel(self.clock, profile)
        client_factory = wrap_client(
            client_options(
                "127.0.0.1",
                self.keys.ca.certificate_pem,
                self.keys.alice.certificate_pem,
                self.keys.alice.key_pem,
            ),
            Factory.forProtocol(lambda: console),
        )
        before = set(self.core.channels)
        _, _, pump = connectedServerAndClient(
            lambda: self.server_factory.buildProtocol(None),
            lambda: client_factory.buildProtocol(None),
            clock=self.clock,
        )
        pump.flush()
        result_of(console.welcome)
        (channel,) = set(self.core.channels) - before
        return console, pump, channel

    def check_well_behaved_console(self) -> None:
        """A fresh console opens a session and carries bytes through a stream."""
        console, pump, _ = self.connect()
        opening = console.request(control.OPEN_SESSION, item="web")
        pump.flush()
        assert result_of(opening)["tunnels"]
        assert console.mux is not None
        stream = console.mux.open_stream(StreamTarget("10.1.2.3", 80).encode())
        app = RecordingApp()
        stream.attach(app)
        stream.write(b"ping")
        pump.flush()
        target = self.targets.connect(len(self.targets.requests) - 1)
        assert target.value() == b"ping"
        console.close()
        pump.flush()


@dataclass
class Hostile:
    """A console that writes raw frames and reads what comes back by itself."""

    console: ConsoleChannel
    pump: IOPump
    channel: JumpointChannel
    parser: FrameParser
    unread: int = 0

    @classmethod
    def connect(cls, jumpoint: Jumpoint, session: bool = True) -> Hostile:
        console, pump, channel = jumpoint.connect()
        if session:
            opening = console.request(control.OPEN_SESSION, item="web")
            pump.flush()
            result_of(opening)
        assert console.mux is not None
        parser = FrameParser(2**32 - 1)
        console.mux.data_received = parser.feed  # type: ignore[method-assign]
        return cls(console, pump, channel, parser)

    def send(self, data: bytes) -> None:
        assert self.console.transport is not None
        self.console.transport.write(data)

    def exchange(self, data: bytes) -> list[Frame]:
        """Send C{data}, let both sides run, and return the frames the Jumpoint sent back."""
        self.send(data)
        received: list[Frame] = []
        self.console.mux.data_received = lambda chunk: received.extend(  # type: ignore[union-attr,method-assign]
            self.parser.feed(chunk)
        )
        self.pump.flush()
        return received

    def send_without_reading(self, data: bytes) -> int:
        """Deliver C{data} to the Jumpoint and read nothing back.

        Returns how many bytes the Jumpoint has written towards this console
        since it stopped reading (what would pile up in the Jumpoint's buffers).
        """
        assert self.console.transport is not None
        self.console.transport.write(data)
        outgoing = self.pump.clientIO.getOutBuffer()
        if outgoing:
            self.pump.server.dataReceived(outgoing)
        self.unread += len(self.pump.serverIO.getOutBuffer() or b"")
        return self.unread

    @property
    def closed(self) -> bool:
        mux = self.channel.mux
        return mux is not None and mux.closing


def goaway(frames_back: list[Frame]) -> int | None:
    for frame in frames_back:
        if frame.type is FrameType.GOAWAY:
            return frames.decode_reason(frame.payload)[0]
    return None


def resets(frames_back: list[Frame]) -> dict[int, int]:
    return {
        f.stream_id: frames.decode_reason(f.payload)[0]
        for f in frames_back
        if f.type is FrameType.RESET
    }


def control_frame(message: Any) -> bytes:
    raw = message if isinstance(message, bytes) else json.dumps(message).encode()
    return encode_frame(FrameType.CONTROL, 0, 0, raw)


@pytest.fixture
def jumpoint(tmp_path: Path, keys: Pki) -> Jumpoint:
    return Jumpoint(tmp_path, keys)


# -- framing violations: the connection is dropped with a stated reason ---------------

TARGET = StreamTarget("10.1.2.3", 80).encode()
FRAMING_VIOLATIONS = {
    "unknown frame type": (struct.pack("!BBII", 0x42, 0, 0, 0), ErrorCode.PROTOCOL_ERROR),
    "frame over the limit": (
        struct.pack("!BBII", FrameType.DATA, 0, 1, frames.MAX_PAYLOAD + 1),
        ErrorCode.FRAME_SIZE_ERROR,
    ),
    "huge length field": (b"\x00\x00\x00\x00\x00\x01\xff\xff\xff\xff", ErrorCode.FRAME_SIZE_ERROR),
    "stream id over 2**31": (
        struct.pack("!BBII", FrameType.DATA, 0, 2**31, 0),
        ErrorCode.PROTOCOL_ERROR,
    ),
    "short PING": (encode_frame(FrameType.PING, 0, 0, b"short"), ErrorCode.FRAME_SIZE_ERROR),
    "PING on a stream": (encode_frame(FrameType.PING, 0, 1, b"12345678"), ErrorCode.PROTOCOL_ERROR),
    "DATA on stream 0": (encode_frame(FrameType.DATA, 0, 0, b"x"), ErrorCode.PROTOCOL_ERROR),
    "CONTROL on a stream": (
        encode_frame(FrameType.CONTROL, 0, 3, b"{}"),
        ErrorCode.PROTOCOL_ERROR,
    ),
    "short RESET": (encode_frame(FrameType.RESET, 0, 1, b"\0"), ErrorCode.FRAME_SIZE_ERROR),
    "short GOAWAY": (encode_frame(FrameType.GOAWAY, 0, 0, b"\0"), ErrorCode.FRAME_SIZE_ERROR),
    "WINDOW_UPDATE of 3 bytes": (
        encode_frame(FrameType.WINDOW_UPDATE, 0, 1, b"\0\0\1"),
        ErrorCode.FRAME_SIZE_ERROR,
    ),
    "OPEN with an even id": (encode_frame(FrameType.OPEN, 0, 2, TARGET), ErrorCode.PROTOCOL_ERROR),
    "OPEN ids not increasing": (
        encode_frame(FrameType.OPEN, 0, 5, TARGET) + encode_frame(FrameType.OPEN, 0, 3, TARGET),
        ErrorCode.PROTOCOL_ERROR,
    ),
    "OPEN payload over the limit": (
        encode_frame(FrameType.OPEN, 0, 1, b" " * (frames.MAX_CONTROL_PAYLOAD + 1)),
        ErrorCode.FRAME_SIZE_ERROR,
    ),
    "DATA for a stream never opened": (
        encode_frame(FrameType.DATA, 0, 99, b"x"),
        ErrorCode.PROTOCOL_ERROR,
    ),
    "WINDOW_UPDATE for a stream never opened": (
        frames.encode_window_update(99, 10),
        ErrorCode.PROTOCOL_ERROR,
    ),
    "RESET for a stream never opened": (
        encode_frame(FrameType.RESET, 0, 99, frames.encode_reason(0, "x")),
        ErrorCode.PROTOCOL_ERROR,
    ),
    "CONTROL that is not JSON": (control_frame(b"{not json"), ErrorCode.PROTOCOL_ERROR),
    "CONTROL that is not UTF-8": (control_frame(b"\xff\xfe"), ErrorCode.PROTOCOL_ERROR),
    "CONTROL that is a list": (control_frame(["list"]), ErrorCode.PROTOCOL_ERROR),
    "CONTROL without a type": (control_frame({"id": 1}), ErrorCode.PROTOCOL_ERROR),
    "CONTROL of an unknown type": (
        control_frame({"type": "format_disk", "id": 1}),
        ErrorCode.PROTOCOL_ERROR,
    ),
    "CONTROL nested 60 000 deep": (control_frame(b"[" * 60_000), ErrorCode.PROTOCOL_ERROR),
    "a second hello": (
        control_frame({"type": "hello", "version": 1, "client": "jump"}),
        ErrorCode.PROTOCOL_ERROR,
    ),
    "a reply from the console": (
        control_frame({"type": "result", "id": 1}),
        ErrorCode.PROTOCOL_ERROR,
    ),
}


@pytest.mark.parametrize("case", sorted(FRAMING_VIOLATIONS))
def test_framing_violations_drop_the_connection(
    jumpoint: Jumpoint, case: str, errors: list[LogEvent]
) -> None:
    data, code = FRAMING_VIOLATIONS[case]
    hostile = Hostile.connect(jumpoint)
    back = hostile.exchange(data)
    assert goaway(back) == code, back
    assert hostile.closed
    assert hostile.channel not in jumpoint.core.channels
    assert jumpoint.core.sessions() == []  # its session ended with it
    assert errors == []
    jumpoint.check_well_behaved_console()


# -- stream violations: that stream is reset, the connection stays ---------------------


def _open(hostile: Hostile, stream_id: int = 1) -> None:
    hostile.exchange(encode_frame(FrameType.OPEN, 0, stream_id, TARGET))
    assert hostile.channel.core.sessions()[0].total_connections >= 1  # waits for its target


STREAM_VIOLATIONS = {
    "DATA beyond the credit window": (
        encode_frame(FrameType.DATA, 0, 1, b"x" * 65536) * 4
        + encode_frame(FrameType.DATA, 0, 1, b"x"),
        ErrorCode.FLOW_CONTROL_ERROR,
    ),
    "WINDOW_UPDATE of 0": (frames.encode_window_update(1, 0), ErrorCode.FLOW_CONTROL_ERROR),
    "WINDOW_UPDATE overflowing 2**31": (
        frames.encode_window_update(1, 2**31 - 1),
        ErrorCode.FLOW_CONTROL_ERROR,
    ),
    "DATA after FIN": (
        encode_frame(FrameType.DATA, Flag.FIN, 1, b"") + encode_frame(FrameType.DATA, 0, 1, b"x"),
        ErrorCode.PROTOCOL_ERROR,
    ),
}


@pytest.mark.parametrize("case", sorted(STREAM_VIOLATIONS))
def test_stream_violations_reset_only_that_stream(
    jumpoint: Jumpoint, case: str, errors: list[LogEvent]
) -> None:
    data, code = STREAM_VIOLATIONS[case]
    hostile = Hostile.connect(jumpoint)
    _open(hostile)
    back = hostile.exchange(data)
    assert resets(back) == {1: code}, back
    assert not hostile.closed and goaway(back) is None
    # The connection goes on: another stream opens.
    back = hostile.exchange(encode_frame(FrameType.OPEN, 0, 3, TARGET))
    assert resets(back) == {} and not hostile.closed
    assert errors == []
    jumpoint.check_well_behaved_console()


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"[]",
        b'{"host": 1, "port": 80}',
        b'{"host": "h", "port": 1e400}',
        b'{"host": "h", "port": 99999999999999999999999}',
        b"\xff",
    ],
)
def test_malformed_open_payloads_reset_the_stream(
    jumpoint: Jumpoint, payload: bytes, errors: list[LogEvent]
) -> None:
    hostile = Hostile.connect(jumpoint)
    back = hostile.exchange(encode_frame(FrameType.OPEN, 0, 1, payload))
    assert resets(back) == {1: ErrorCode.PROTOCOL_ERROR}
    assert not hostile.closed
    assert errors == []


# -- control messages: huge integers and malformed fields are errors on that request ---

HUGE = [10**400, 2**63, -(2**63) - 1, 1e308 * 10, "NaN"]


def _bad_requests() -> Iterator[tuple[str, dict[str, Any]]]:
    base: dict[str, dict[str, Any]] = {
        control.LIST_ITEMS: {},
        control.SHOW_ITEM: {"item": "web"},
        control.CREATE_ITEM: {"item": {"name": "x", "type": "tcp"}},
        control.CHANGE_ITEM: {"item": "web", "change": "tag", "value": "x"},
        control.DELETE_ITEM: {"item": "web"},
        control.OPEN_SESSION: {"item": "web"},
        control.TUNNELS_BOUND: {"tunnels": []},
        control.CLOSE_SESSION: {"reason": "x"},
        control.LIST_SESSIONS: {},
        control.REQUEST_ACCESS: {"item": "web", "reason": "x", "duration": 60},
        control.LIST_REQUESTS: {},
        control.DECIDE_REQUEST: {"request": 1, "approve": True},
    }
    numeric = {
        control.OPEN_SESSION: ["auto_close", "idle_timeout"],
        control.REQUEST_ACCESS: ["duration"],
        control.DECIDE_REQUEST: ["request"],
    }
    for kind, fields in base.items():
        for name in numeric.get(kind, []):
            for value in HUGE:
                yield (
                    f"{kind}.{name}={str(value)[:12]}",
                    {"type": kind, "id": 7, **fields, name: value},
                )
        for name in fields:
            for value in (
                [1, 2],
                {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}},
                True,
                "x" * 5000,
            ):
                yield (
                    f"{kind}.{name}={type(value).__name__}",
                    {"type": kind, "id": 7, **fields, name: value},
                )


BAD_REQUESTS = dict(_bad_requests())


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_fields_are_an_error_reply_never_a_dropped_connection(
    jumpoint: Jumpoint, case: str, errors: list[LogEvent]
) -> None:
    message = BAD_REQUESTS[case]
    hostile = Hostile.connect(jumpoint)
    raw = json.dumps(message).encode().replace(b'"NaN"', b"NaN")
    back = hostile.exchange(control_frame(raw))
    assert not hostile.closed, f"{case}: the connection was dropped"
    replies = [json.loads(f.payload) for f in back if f.type is FrameType.CONTROL]
    assert [r["type"] for r in replies if r.get("id") == 7] in (["error"], ["result"]), replies
    assert errors == [], [e.get("log_format") for e in errors]


@pytest.mark.parametrize("request_id", [10**400, 2**63, -1, 1.5, "1", None])
def test_a_bad_request_id_is_framing(jumpoint: Jumpoint, request_id: Any) -> None:
    # Without a usable id no error reply can name the request: the connection goes.
    hostile = Hostile.connect(jumpoint)
    back = hostile.exchange(control_frame({"type": "list_items", "id": request_id}))
    assert goaway(back) == ErrorCode.PROTOCOL_ERROR
    jumpoint.check_well_behaved_console()


# -- floods while not reading: bounded, then dropped -----------------------------------


TLS_BOUND = 3 * MuxSettings().control_buffer_cap


def _flood(jumpoint: Jumpoint, unit: bytes, count: int, session: bool = True) -> Hostile:
    hostile = Hostile.connect(jumpoint, session=session)
    mux = hostile.channel.mux
    assert mux is not None
    mux.pauseProducing()  # the console does not read: the Jumpoint's TCP buffer is full
    sent = 0
    batch = max(1, 64 * 1024 // len(unit))
    while sent < count and not hostile.closed:
        unread = hostile.send_without_reading(unit * min(batch, count - sent))
        sent += batch
        # The cap bounds what the mux writes; TLS adds a record (22 bytes) per frame,
        # so an 18-byte PING ACK costs 40 bytes of ciphertext.
        assert unread <= TLS_BOUND
    return hostile


def _open_frames(count: int) -> Iterator[bytes]:
    for index in range(count):
        yield encode_frame(FrameType.OPEN, 0, 2 * index + 1, TARGET)


@pytest.mark.parametrize(
    ("case", "unit", "count", "session"),
    [
        ("PING", encode_frame(FrameType.PING, 0, 0, b"12345678"), 200_000, True),
        ("list_items", control_frame({"type": "list_items", "id": 1}), 100_000, True),
        (
            "show_item unknown",
            control_frame({"type": "show_item", "id": 1, "item": "n"}),
            50_000,
            True,
        ),
    ],
)
def test_floods_while_not_reading_are_bounded_and_dropped(
    jumpoint: Jumpoint, case: str, unit: bytes, count: int, session: bool, errors: list[LogEvent]
) -> None:
    hostile = _flood(jumpoint, unit, count, session)
    assert hostile.closed, f"{case}: the flood did not close the connection"
    assert hostile.channel.mux is not None
    assert hostile.channel.mux.bytes_while_paused <= MuxSettings().control_buffer_cap
    assert hostile.pump.serverIO.disconnecting  # aborted, not waiting for the console
    hostile.pump.flush()
    assert hostile.channel not in jumpoint.core.channels
    assert errors == []
    jumpoint.check_well_behaved_console()


@pytest.mark.parametrize("session", [False, True])
def test_an_open_flood_while_not_reading_is_bounded_and_dropped(
    jumpoint: Jumpoint, session: bool, errors: list[LogEvent]
) -> None:
    hostile = Hostile.connect(jumpoint, session=session)
    mux = hostile.channel.mux
    assert mux is not None
    mux.pauseProducing()
    opens = _open_frames(120_000)
    while not hostile.closed:
        chunk = b"".join(next(opens) for _ in range(2000))
        unread = hostile.send_without_reading(chunk)
        assert mux.bytes_while_paused <= MuxSettings().control_buffer_cap
        assert unread <= TLS_BOUND
    assert len(mux.streams) == 0
    assert errors == []
    jumpoint.check_well_behaved_console()
