"""Tests of session recording (jumpoint/recording.py).

Most tests are synchronous: a L{Clock} for time and the L{SynchronousWriter}
(or a stalled wrapper of it) for the disk; a small pcap reader below parses
the file back and checks every checksum.  The L{ThreadedWriter} tests run its
real thread and poll its reports with a deadline.  The tshark tests open the
recordings with the real tshark (Debian package C{tshark}); they fail, not
skip, when it is missing.
"""

from __future__ import annotations

import errno
import itertools
import os
import queue
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogPublisher
from zope.interface import implementer

from jumpoint.recording import (
    DROP_WARNING_INTERVAL,
    ConnectionRecording,
    RecordingFile,
    SessionRecorder,
    SynchronousWriter,
    ThreadedWriter,
    WriterSink,
    create_recording_file,
)

START = 1_700_000_000.0
CLIENT = ("192.0.2.10", 40001)
SERVER = ("198.51.100.7", 5432)
SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10


# -- a small pcap reader ---------------------------------------------------------


@dataclass
class Packet:
    time: float
    ipv6: bool
    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    options: bytes
    payload: bytes
    ip_length: int  # the whole IP packet


def internet_checksum_ok(data: bytes) -> bool:
    """Whether the one's complement sum of C{data} (checksum included) is all ones."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def read_pcap(path: Path) -> tuple[tuple[int, ...], list[Packet]]:
    data = path.read_bytes()
    header = struct.unpack("<IHHiIII", data[:24])
    packets: list[Packet] = []
    offset = 24
    while offset < len(data):
        seconds, micros, included, original = struct.unpack("<IIII", data[offset : offset + 16])
        assert included == original
        frame = data[offset + 16 : offset + 16 + included]
        assert len(frame) == included
        offset += 16 + included
        packets.append(parse_frame(seconds + micros / 1e6, frame))
    return header, packets


def parse_frame(when: float, frame: bytes) -> Packet:
    (ethertype,) = struct.unpack("!H", frame[12:14])
    ip = frame[14:]
    if ethertype == 0x0800:
        assert ip[0] == 0x45
        (total_length,) = struct.unpack("!H", ip[2:4])
        assert ip[9] == 6
        assert internet_checksum_ok(ip[:20]), "bad IPv4 header checksum"
        src, dst = ip_address(ip[12:16]), ip_address(ip[16:20])
        segment = ip[20:total_length]
        pseudo = ip[12:20] + struct.pack("!HH", 6, len(segment))
        ipv6 = False
    else:
        assert ethertype == 0x86DD
        assert ip[0] >> 4 == 6
        (payload_length,) = struct.unpack("!H", ip[4:6])
        assert ip[6] == 6
        total_length = 40 + payload_length
        src, dst = ip_address(ip[8:24]), ip_address(ip[24:40])
        segment = ip[40:total_length]
        pseudo = ip[8:40] + struct.pack("!II", len(segment), 6)
        ipv6 = True
    assert len(ip) == total_length, "frame longer than its IP packet"
    assert internet_checksum_ok(pseudo + segment), "bad TCP checksum"
    sport, dport, seq, ack, offset, flags, window = struct.unpack("!HHIIBBH", segment[:16])
    header_length = (offset >> 4) * 4
    return Packet(
        when,
        ipv6,
        str(src),
        str(dst),
        sport,
        dport,
        seq,
        ack,
        flags,
        window,
        segment[20:header_length],
        segment[header_length:],
        total_length,
    )


# -- fakes and helpers -----------------------------------------------------------


class StalledWriter:
    """A L{SynchronousWriter} whose disk can be stalled: batches wait until L{release}."""

    def __init__(self) -> None:
        self.inner = SynchronousWriter()
        self.stalled = False
        self.held: list[bytes] | None = None

    def open(self, path: Path, sink: WriterSink) -> None:
        self.inner.open(path, sink)

    def write(self, batch: list[bytes]) -> None:
        assert self.held is None, "the recorder handed over a second batch"
        if self.stalled:
            self.held = batch
        else:
            self.inner.write(batch)

    def close(self) -> None:
        assert self.held is None
        self.inner.close()

    def release(self) -> None:
        self.stalled = False
        batch, self.held = self.held, None
        if batch is not None:
            self.inner.write(batch)


class BrokenFile:
    """A file that fails with ENOSPC once C{broken} is set."""

    def __init__(self, path: Path) -> None:
        self.real = create_recording_file(path)
        self.broken = False
        self.closed = False

    def write(self, data: bytes, /) -> object:
        if self.broken:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.real.write(data)

    def flush(self) -> None:
        self.real.flush()

    def close(self) -> None:
        self.closed = True
        self.real.close()


@implementer(IReactorFromThreads)
class ThreadCalls:
    """Collects C{callFromThread} calls; the test runs them, polling with a deadline."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.Queue()

    def callFromThread(self, callable: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        assert not kwargs
        self.calls.put((callable, args))

    def run_until(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("the writer thread did not report in time")
            try:
                callable, args = self.calls.get(timeout=remaining)
            except queue.Empty:
                continue
            callable(*args)


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(START)
    return clock


@implementer(ILogObserver)
class Collector:
    """Keeps the log events of jumpoint.recording."""

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        if event.get("log_namespace") == "jumpoint.recording":
            self.events.append(event)


@pytest.fixture
def logged() -> Iterator[list[LogEvent]]:
    collector = Collector()
    globalLogPublisher.addObserver(collector)
    yield collector.events
    globalLogPublisher.removeObserver(collector)


def of_level(events: list[LogEvent], level: LogLevel) -> list[str]:
    return [str(formatEvent(event)) for event in events if event["log_level"] is level]


def recorder(tmp_path: Path, clock: Clock, writer: Any = None, **kwargs: Any) -> SessionRecorder:
    return SessionRecorder(
        tmp_path / "recordings",
        "0123abcd",
        clock,
        writer=writer if writer is not None else SynchronousWriter(),
        **kwargs,
    )


def data_packets(packets: list[Packet]) -> list[Packet]:
    return [packet for packet in packets if packet.payload]


# -- the file ----------------------------------------------------------------------


def test_pcap_header_file_mode_and_path(tmp_path: Path, clock: Clock) -> None:
    rec = recorder(tmp_path, clock)
    assert rec.path == tmp_path / "recordings" / "0123abcd.pcap"
    rec.connection(1, CLIENT, SERVER)
    done: list[None] = []
    rec.close().addCallback(done.append)
    assert done == [None]
    header, packets = read_pcap(rec.path)
    assert header == (0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
    assert rec.path.read_bytes()[:4] == b"\xd4\xc3\xb2\xa1"
    assert len(packets) == 3
    if os.name != "nt":
        assert rec.path.stat().st_mode & 0o777 == 0o600
        assert rec.path.parent.stat().st_mode & 0o777 == 0o700
    # close is idempotent
    again: list[None] = []
    rec.close().addCallback(again.append)
    assert again == [None]
    assert not rec.failed


def test_existing_file_is_not_overwritten(
    tmp_path: Path, clock: Clock, logged: list[LogEvent]
) -> None:
    (tmp_path / "recordings").mkdir()
    (tmp_path / "recordings" / "0123abcd.pcap").write_bytes(b"keep")
    rec = recorder(tmp_path, clock)
    assert rec.failed
    assert (tmp_path / "recordings" / "0123abcd.pcap").read_bytes() == b"keep"
    assert len(of_level(logged, LogLevel.error)) == 1


def test_session_id_must_be_a_file_name(tmp_path: Path, clock: Clock) -> None:
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(ValueError):
            SessionRecorder(tmp_path, bad, clock, writer=SynchronousWriter())


def test_default_writer_needs_a_reactor(tmp_path: Path, clock: Clock) -> None:
    with pytest.raises(TypeError):
        SessionRecorder(tmp_path, "s1", clock)


# -- the conversation --------------------------------------------------------------


def test_handshake_then_data_with_continuing_sequence_numbers(tmp_path: Path, clock: Clock) -> None:
    rec = recorder(tmp_path, clock)
    conn = rec.connection(7, CLIENT, SERVER)
    clock.advance(0.5)
    conn.to_server(b"hello")
    clock.advance(0.25)
    conn.from_server(b"world!")
    conn.from_server(b"again")
    clock.advance(0.000001)
    conn.to_server(b"\x00\xff" * 3)
    rec.close()

    _, packets = read_pcap(rec.path)
    syn, syn_ack, ack, *data = packets
    c_isn, s_isn = syn.seq, syn_ack.seq
    assert (syn.src, syn.sport, syn.dst, syn.dport) == ("192.0.2.10", 40001, "198.51.100.7", 5432)
    assert syn.flags == SYN and syn.ack == 0
    assert syn_ack.flags == SYN | ACK and syn_ack.ack == (c_isn + 1) & 0xFFFFFFFF
    assert (syn_ack.src, syn_ack.sport) == ("198.51.100.7", 5432)
    assert ack.flags == ACK and ack.seq == c_isn + 1 and ack.ack == s_isn + 1
    assert syn.options == syn_ack.options == b"\x01\x03\x03\x0e"  # window scale

    def rel(packet: Packet) -> tuple[str, int, int, bytes, float]:
        to_server = packet.src == "192.0.2.10"
        mine, theirs = (c_isn, s_isn) if to_server else (s_isn, c_isn)
        return (
            "c" if to_server else "s",
            (packet.seq - mine) & 0xFFFFFFFF,
            (packet.ack - theirs) & 0xFFFFFFFF,
            packet.payload,
            round(packet.time - START, 6),
        )

    assert [rel(packet) for packet in data] == [
        ("c", 1, 1, b"hello", 0.5),
        ("s", 1, 6, b"world!", 0.75),
        ("s", 7, 6, b"again", 0.75),
        ("c", 6, 12, b"\x00\xff" * 3, 0.750001),
    ]
    assert all(packet.flags == PSH | ACK for packet in data)
    assert syn.time == START


def test_large_payload_is_split_into_ip_packets_of_at_most_65535_bytes(
    tmp_path: Path, clock: Clock
) -> None:
    rec = recorder(tmp_path, clock)
    conn4 = rec.connection(1, CLIENT, SERVER)
    conn6 = rec.connection(2, ("2001:db8::10", 40002), ("2001:db8::20", 22))
    big = os.urandom(200_000)
    conn4.from_server(big)
    conn6.to_server(big)
    rec.close()
    _, packets = read_pcap(rec.path)
    for ipv6 in (False, True):
        segments = [packet for packet in data_packets(packets) if packet.ipv6 is ipv6]
        assert len(segments) == 4
        assert b"".join(packet.payload for packet in segments) == big
        assert max(packet.ip_length for packet in segments) == 65535
        for first, second in itertools.pairwise(segments):
            assert second.seq == (first.seq + len(first.payload)) & 0xFFFFFFFF
            assert second.ack == first.ack


def test_fin_exchange(tmp_path: Path, clock: Clock) -> None:
    rec = recorder(tmp_path, clock)
    conn = rec.connection(1, CLIENT, SERVER)
    conn.to_server(b"abc")
    conn.closed()
    conn.closed()  # idempotent
    conn.to_server(b"ignored after close")
    rec.close()
    _, packets = read_pcap(rec.path)
    c_isn, s_isn = packets[0].seq, packets[1].seq
    fin1, fin2, last = packets[-3:]
    assert len(packets) == 7
    assert fin1.flags == FIN | ACK and fin1.seq == c_isn + 4 and fin1.ack == s_isn + 1
    assert fin2.flags == FIN | ACK and fin2.seq == s_isn + 1 and fin2.ack == c_isn + 5
    assert last.flags == ACK and last.seq == c_isn + 5 and last.ack == s_isn + 2
    assert conn.finished


def test_half_close_then_close_by_server(tmp_path: Path, clock: Clock) -> None:
    rec = recorder(tmp_path, clock)
    conn = rec.connection(1, CLIENT, SERVER)
    conn.half_closed(by_client=True)
    conn.to_server(b"not after FIN")
    conn.from_server(b"still talking")
    assert not conn.finished
    conn.closed(by_client=False)
    rec.close()
    _, packets = read_pcap(rec.path)
    c_isn, s_isn = packets[0].seq, packets[1].seq
    fin, fin_ack, data, server_fin, final_ack = packets[3:]
    assert (fin.src, fin.flags, fin.seq) == (CLIENT[0], FIN | ACK, c_isn + 1)
    assert (fin_ack.src, fin_ack.flags, fin_ack.ack) == (SERVER[0], ACK, c_isn + 2)
    assert data.payload == b"still talking" and data.ack == c_isn + 2
    assert (server_fin.src, server_fin.flags, server_fin.seq) == (SERVER[0], FIN | ACK, s_isn + 14)
    assert (final_ack.src, final_ack.flags, final_ack.ack) == (CLIENT[0], ACK, s_isn + 15)


def test_both_half_closes_finish_the_conversation(tmp_path: Path, clock: Clock) -> None:
    rec = recorder(tmp_path, clock)
    conn = rec.connection(1, CLIENT, SERVER)
    conn.half_closed(by_client=False)
    conn.half_closed(by_client=False)  # once only
    conn.half_closed(by_client=True)
    assert conn.finished
    conn.closed()
    rec.close()
    _, packets = read_pcap(rec.path)
    assert [packet.flags for packet in packets[3:]] == [FIN | ACK, ACK, FIN | ACK, ACK]


def test_reset(tmp_path: Path, clock: Clock) -> None:
    rec = recorder(tmp_path, clock)
    conn = rec.connection(1, CLIENT, SERVER)
    conn.from_server(b"xy")
    conn.closed(reset=True, by_client=False)
    conn.closed()
    rec.close()
    _, packets = read_pcap(rec.path)
    rst = packets[-1]
    assert len(packets) == 5
    assert rst.flags == RST | ACK and rst.src == SERVER[0] and rst.seq == packets[1].seq + 3


def test_address_families(tmp_path: Path, clock: Clock) -> None:
    rec = recorder(tmp_path, clock)
    rec.connection(1, ("::ffff:192.0.2.1", 1), ("192.0.2.2", 2))  # mapped: IPv4
    rec.connection(2, ("192.0.2.1", 3), ("2001:db8::2", 4))  # mixed: IPv6, mapped client
    rec.connection(3, ("[2001:db8::1]", 5), ("2001:db8::2", 6))
    with pytest.raises(ValueError):
        rec.connection(4, ("db1.internal", 7), SERVER)
    with pytest.raises(ValueError):
        rec.connection(5, CLIENT, ("192.0.2.2", 70000))
    rec.close()
    _, packets = read_pcap(rec.path)
    first = {packet.sport: packet for packet in packets if packet.flags == SYN}
    assert (first[1].ipv6, first[1].src, first[1].dst) == (False, "192.0.2.1", "192.0.2.2")
    assert (first[3].ipv6, first[3].dst) == (True, "2001:db8::2")
    assert ip_address(first[3].src) == ip_address("::ffff:192.0.2.1")
    assert (first[5].ipv6, first[5].src) == (True, "2001:db8::1")


# -- the bounded buffer ------------------------------------------------------------


def test_stalled_disk_drops_with_bounded_memory_and_rate_limited_warnings(
    tmp_path: Path, clock: Clock, logged: list[LogEvent]
) -> None:
    writer = StalledWriter()
    limit = 4000
    rec = recorder(tmp_path, clock, writer, buffer_limit=limit)
    conn = rec.connection(1, CLIENT, SERVER)
    writer.stalled = True
    packet_size = 16 + 14 + 20 + 20 + 100

    sent = 0
    for _ in range(60):
        conn.to_server(bytes([sent % 256]) * 100)
        sent += 1
        assert rec.buffered_bytes <= limit
    # one packet in flight, the rest queued: as many as fit
    kept = limit // packet_size
    assert rec.buffered_bytes == kept * packet_size
    assert rec.dropped_packets == 60 - kept
    assert rec.dropped_bytes == (60 - kept) * 100
    warnings = of_level(logged, LogLevel.warn)
    assert len(warnings) == 1
    assert "recording of session 0123abcd dropped 100 bytes (1 packets)" in warnings[0]
    assert "buffer (4000 bytes) is full" in warnings[0]

    clock.advance(DROP_WARNING_INTERVAL / 2)
    conn.from_server(b"s" * 100)  # dropped, not logged yet
    sent_from_server = 1
    assert len(of_level(logged, LogLevel.warn)) == 1
    clock.advance(DROP_WARNING_INTERVAL / 2)  # the pending report
    warnings = of_level(logged, LogLevel.warn)
    assert len(warnings) == 2
    # everything dropped since the first warning, in one line
    assert f"dropped {(60 - kept - 1) * 100 + 100} bytes" in warnings[1]
    assert f"({rec.dropped_bytes} bytes dropped in total" in warnings[1]
    clock.advance(DROP_WARNING_INTERVAL)
    assert len(of_level(logged, LogLevel.warn)) == 2  # nothing new was dropped

    conn.to_server(b"z" * 100)  # long after the last warning: logged at once
    sent += 1
    assert len(of_level(logged, LogLevel.warn)) == 3
    assert rec.buffered_bytes <= limit

    # the disk catches up: recording resumes, with the later sequence numbers
    writer.release()
    assert rec.buffered_bytes == 0
    assert not of_level(logged, LogLevel.info)
    conn.to_server(b"after the stall")
    assert rec.buffered_bytes == 0
    info = of_level(logged, LogLevel.info)
    assert len(info) == 1 and "resumed" in info[0]
    assert str(rec.dropped_bytes) in info[0]
    conn.from_server(b"answer")
    rec.close()
    assert len(of_level(logged, LogLevel.warn)) == 3

    _, packets = read_pcap(rec.path)
    c_isn, s_isn = packets[0].seq, packets[1].seq
    to_server = [p for p in data_packets(packets) if p.src == CLIENT[0]]
    assert [p.payload for p in to_server[:kept]] == [bytes([i]) * 100 for i in range(kept)]
    assert [(p.seq - c_isn) for p in to_server[:kept]] == [1 + 100 * i for i in range(kept)]
    after = to_server[-1]
    assert after.payload == b"after the stall"
    assert after.seq == c_isn + 1 + 100 * sent
    assert after.ack == s_isn + 1 + 100 * sent_from_server
    answer = data_packets(packets)[-1]
    assert answer.payload == b"answer" and answer.seq == s_isn + 1 + 100 * sent_from_server
    recorded = sum(len(p.payload) for p in data_packets(packets))
    total = 100 * (sent + sent_from_server) + len(b"after the stall") + len(b"answer")
    assert rec.dropped_bytes == total - recorded


def test_drops_while_closing_are_reported_at_close(
    tmp_path: Path, clock: Clock, logged: list[LogEvent]
) -> None:
    writer = StalledWriter()
    rec = recorder(tmp_path, clock, writer, buffer_limit=1000)
    conn = rec.connection(1, CLIENT, SERVER)
    writer.stalled = True
    conn.to_server(b"a" * 500)
    conn.to_server(b"b" * 500)  # dropped, logged
    conn.to_server(b"c" * 300)  # fits next to the batch in flight
    conn.to_server(b"d" * 450)  # dropped, pending report
    assert len(of_level(logged, LogLevel.warn)) == 1
    done: list[None] = []
    rec.close().addCallback(done.append)
    warnings = of_level(logged, LogLevel.warn)
    assert len(warnings) == 2 and "dropped 450 bytes" in warnings[1]
    assert not clock.getDelayedCalls()
    assert done == []  # waits for the disk
    conn.to_server(b"e")  # after close: ignored, not counted
    assert rec.dropped_bytes == 950
    writer.release()
    assert done == [None]
    _, packets = read_pcap(rec.path)
    assert [p.payload for p in data_packets(packets)] == [b"a" * 500, b"c" * 300]


def test_write_error_stops_recording_without_raising(
    tmp_path: Path, clock: Clock, logged: list[LogEvent]
) -> None:
    files: list[BrokenFile] = []

    def opener(path: Path) -> RecordingFile:
        files.append(BrokenFile(path))
        return files[-1]

    rec = recorder(tmp_path, clock, SynchronousWriter(opener=opener))
    conn = rec.connection(1, CLIENT, SERVER)
    conn.to_server(b"before")
    files[0].broken = True
    conn.from_server(b"fails")
    assert rec.failed
    assert rec.failure_reason is not None and "No space left" in rec.failure_reason
    assert files[0].closed
    errors = of_level(logged, LogLevel.error)
    assert len(errors) == 1
    assert "recording of session 0123abcd stopped" in errors[0]
    assert "the session goes on" in errors[0]
    for _ in range(3):
        conn.to_server(b"more")
        conn.from_server(b"more")
    conn.closed()
    rec.connection(2, CLIENT, SERVER).to_server(b"new")
    assert rec.buffered_bytes == 0 and rec.dropped_bytes == 0
    assert len(logged) == 1
    done: list[None] = []
    rec.close().addCallback(done.append)
    assert done == [None]
    _, packets = read_pcap(rec.path)
    assert [p.payload for p in data_packets(packets)] == [b"before"]


def test_directory_that_cannot_be_created(
    tmp_path: Path, clock: Clock, logged: list[LogEvent]
) -> None:
    (tmp_path / "recordings").write_bytes(b"a file, not a directory")
    rec = recorder(tmp_path, clock)
    conn = rec.connection(1, CLIENT, SERVER)
    conn.to_server(b"data")
    assert rec.failed
    assert len(of_level(logged, LogLevel.error)) == 1
    done: list[None] = []
    rec.close().addCallback(done.append)
    assert done == [None]


# -- the threaded writer -----------------------------------------------------------


def test_threaded_writer_writes_in_its_thread(tmp_path: Path, clock: Clock) -> None:
    calls = ThreadCalls()
    writer = ThreadedWriter(calls)
    rec = recorder(tmp_path, clock, writer)
    conn = rec.connection(1, CLIENT, SERVER)
    for index in range(50):
        conn.to_server(b"request %d\n" % index)
        conn.from_server(b"reply %d\n" % index)
    conn.closed()
    done: list[None] = []
    rec.close().addCallback(done.append)
    calls.run_until(lambda: bool(done))
    assert writer.join(timeout=30)
    assert not rec.failed and rec.buffered_bytes == 0
    _, packets = read_pcap(rec.path)
    assert len(packets) == 3 + 100 + 3
    assert data_packets(packets)[-1].payload == b"reply 49\n"


def test_threaded_writer_stalled_disk_never_blocks_the_caller(
    tmp_path: Path, clock: Clock, logged: list[LogEvent]
) -> None:
    gate = threading.Event()
    writing = threading.Event()

    class GatedFile:
        def __init__(self, path: Path) -> None:
            self.real = create_recording_file(path)

        def write(self, data: bytes, /) -> object:
            writing.set()
            assert gate.wait(timeout=60)
            return self.real.write(data)

        def flush(self) -> None:
            self.real.flush()

        def close(self) -> None:
            self.real.close()

    calls = ThreadCalls()
    limit = 64 * 1024
    rec = recorder(tmp_path, clock, ThreadedWriter(calls, opener=GatedFile), buffer_limit=limit)
    conn = rec.connection(1, CLIENT, SERVER)
    assert writing.wait(timeout=30)  # the thread is stuck writing the first batch
    chunk = os.urandom(1000)
    for _ in range(200):
        conn.to_server(chunk)
        assert rec.buffered_bytes <= limit
    assert rec.dropped_bytes > 0
    assert len(of_level(logged, LogLevel.warn)) == 1
    gate.set()
    calls.run_until(lambda: rec.buffered_bytes == 0)
    conn.to_server(b"after the stall")
    done: list[None] = []
    rec.close().addCallback(done.append)
    calls.run_until(lambda: bool(done))
    _, packets = read_pcap(rec.path)
    payloads = [p.payload for p in data_packets(packets)]
    assert payloads[-1] == b"after the stall"
    assert len(chunk) * (len(payloads) - 1) + rec.dropped_bytes == 200 * len(chunk)


def test_threaded_writer_error(tmp_path: Path, clock: Clock, logged: list[LogEvent]) -> None:
    files: list[BrokenFile] = []

    def opener(path: Path) -> RecordingFile:
        files.append(BrokenFile(path))
        files[-1].broken = True
        return files[-1]

    calls = ThreadCalls()
    rec = recorder(tmp_path, clock, ThreadedWriter(calls, opener=opener))
    conn = rec.connection(1, CLIENT, SERVER)
    calls.run_until(lambda: rec.failed)
    conn.to_server(b"ignored")
    assert len(of_level(logged, LogLevel.error)) == 1
    assert files[0].closed
    done: list[None] = []
    rec.close().addCallback(done.append)
    assert done == [None]


# -- tshark ------------------------------------------------------------------------


def tshark(path: Path, *arguments: str) -> str:
    program = shutil.which("tshark")
    if program is None:
        pytest.fail("tshark is not installed (Debian/Ubuntu package: tshark)")
    result = subprocess.run(
        [program, "-n", "-r", str(path), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def follow(path: Path, mode: str, stream: int) -> tuple[list[str], list[str]]:
    """The node lines and the body lines of tshark's "follow" output."""
    lines = tshark(path, "-qz", f"follow,tcp,{mode},{stream}").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Node 1:"))
    end = len(lines) - 1 - lines[::-1].index("=" * 67)
    nodes = [line for line in lines[: start + 1] if line.startswith("Node ")]
    return nodes, lines[start + 1 : end]


def follow_raw(path: Path, stream: int) -> tuple[list[str], list[tuple[str, bytes]]]:
    """Both directions' bytes in order, consecutive chunks of one direction merged."""
    nodes, body = follow(path, "raw", stream)
    chunks: list[tuple[str, bytes]] = []
    for line in body:
        direction = "s" if line.startswith("\t") else "c"
        data = bytes.fromhex(line.strip())
        if chunks and chunks[-1][0] == direction:
            chunks[-1] = (direction, chunks[-1][1] + data)
        else:
            chunks.append((direction, data))
    return nodes, chunks


def record(conn: ConnectionRecording, clock: Clock, chunks: list[tuple[str, bytes]]) -> None:
    for direction, data in chunks:
        clock.advance(0.01)
        if direction == "c":
            conn.to_server(data)
        else:
            conn.from_server(data)


def merged(chunks: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for direction, data in chunks:
        if out and out[-1][0] == direction:
            out[-1] = (direction, out[-1][1] + data)
        else:
            out.append((direction, data))
    return out


def test_tshark_follows_both_directions_exactly(tmp_path: Path, clock: Clock) -> None:
    exchanges = [
        ("c", b"SSH-2.0-OpenSSH_9.2\r\n"),
        ("s", b"SSH-2.0-OpenSSH_9.6\r\n"),
        ("c", bytes(range(256))),
        ("c", b"\x00\x00\x00\x00\r\n\x1e"),
        ("s", os.urandom(70_000)),  # larger than 64 KiB: two segments
        ("c", os.urandom(150_000)),
        ("s", b"\xff" * 3),
        ("c", b"bye"),
    ]
    second = [("c", b"GET /second HTTP/1.0\r\n\r\n"), ("s", b"HTTP/1.0 204 No Content\r\n\r\n")]
    rec = recorder(tmp_path, clock)
    conn = rec.connection(1, CLIENT, SERVER)
    record(conn, clock, exchanges)
    other = rec.connection(2, ("192.0.2.10", 40002), ("198.51.100.8", 80))
    record(other, clock, second)
    other.closed()
    conn.closed()
    rec.close()

    nodes, chunks = follow_raw(rec.path, 0)
    assert nodes == ["Node 0: 192.0.2.10:40001", "Node 1: 198.51.100.7:5432"]
    assert chunks == merged(exchanges)
    nodes, chunks = follow_raw(rec.path, 1)
    assert nodes == ["Node 0: 192.0.2.10:40002", "Node 1: 198.51.100.8:80"]
    assert chunks == second

    # an ordinary conversation: checksums valid, nothing for TCP analysis to flag
    checked = tshark(
        rec.path,
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "ip.check_checksum:TRUE",
        "-T",
        "fields",
        "-e",
        "ip.checksum.status",
        "-e",
        "tcp.checksum.status",
    ).split("\n")
    _, packets = read_pcap(rec.path)
    assert checked[:-1] == ["1\t1"] * len(packets)
    assert tshark(rec.path, "-Y", "tcp.analysis.flags") == ""
    streams = tshark(rec.path, "-Y", "tcp.flags.syn == 1", "-T", "fields", "-e", "tcp.stream")
    assert streams.split() == ["0", "0", "1", "1"]


def test_tshark_ascii_follow_shows_text(tmp_path: Path, clock: Clock) -> None:
    rec = recorder(tmp_path, clock)
    conn = rec.connection(1, CLIENT, SERVER)
    record(
        conn,
        clock,
        [("c", b"SELECT name FROM users;\n"), ("s", b"name\n-----\nalice\nbob\n(2 rows)\n")],
    )
    conn.closed()
    rec.close()
    _, body = follow(rec.path, "ascii", 0)
    assert body == [
        "24",
        "SELECT name FROM users;",
        "",
        "\t30",
        "name",
        "-----",
        "alice",
        "bob",
        "(2 rows)",
        "",
    ]


def test_tshark_ipv6_conversation(tmp_path: Path, clock: Clock) -> None:
    rec = recorder(tmp_path, clock)
    conn = rec.connection(1, ("2001:db8::10", 40001), ("2001:db8:1::7", 22))
    exchanges = [("c", b"ping"), ("s", os.urandom(66_000)), ("c", b"\x00\x01")]
    record(conn, clock, exchanges)
    conn.half_closed(by_client=True)
    conn.closed(by_client=False)
    rec.close()
    nodes, chunks = follow_raw(rec.path, 0)
    assert nodes == ["Node 0: [2001:db8::10]:40001", "Node 1: [2001:db8:1::7]:22"]
    assert chunks == exchanges
    status = tshark(
        rec.path,
        "-o",
        "tcp.check_checksum:TRUE",
        "-T",
        "fields",
        "-e",
        "ipv6.src",
        "-e",
        "tcp.checksum.status",
    ).split("\n")[:-1]
    assert len(status) == len(read_pcap(rec.path)[1]) and all(s.endswith("\t1") for s in status)
    assert tshark(rec.path, "-Y", "tcp.analysis.flags") == ""


def test_tshark_sees_the_gap_of_dropped_data(tmp_path: Path, clock: Clock) -> None:
    writer = StalledWriter()
    rec = recorder(tmp_path, clock, writer, buffer_limit=1000)
    conn = rec.connection(1, CLIENT, SERVER)
    conn.to_server(b"first\n")
    writer.stalled = True
    conn.to_server(b"x" * 900)  # held by the stalled disk
    conn.to_server(b"y" * 900)  # does not fit next to it: dropped
    writer.release()
    conn.to_server(b"last\n")
    conn.closed()
    rec.close()
    assert rec.dropped_bytes == 900
    # tshark marks the gap in the followed stream
    _, body = follow(rec.path, "raw", 0)
    lines = [bytes.fromhex(line) for line in body]
    assert lines[:2] == [b"first\n", b"x" * 900] and lines[-1] == b"last\n"
    assert len(lines) == 4 and b"900 bytes missing" in lines[2]  # tshark 4.0's marker
    lost = tshark(rec.path, "-Y", "tcp.analysis.lost_segment", "-T", "fields", "-e", "tcp.payload")
    assert bytes.fromhex(lost.strip()) == b"last\n"
