"""Session recording: every tunnelled TCP connection and UDP flow of a session, as a pcap file.

With recording on, the Jumpoint writes one classic pcap file per session
(C{<directory>/<session id>.pcap}, mode 0600).  Each tunnelled connection
becomes one synthetic TCP conversation in it: a three-way handshake when the
connection starts, one PSH|ACK segment (split to fit the IP length field) per
chunk of bytes that passed through the Jumpoint in either direction, with the
time it passed, and a FIN exchange or a RST at the end.  Sequence and
acknowledgement numbers, IPv4 header and TCP checksums are real, so
Wireshark and tshark ("Follow TCP Stream") show an ordinary conversation.
Each datagram of a UDP flow (L{FlowRecording}) is one UDP packet, with its
checksum, between the same two kinds of endpoint.

The recorder never stalls the tunnel:

* L{ConnectionRecording}'s methods run in the reactor thread.  They encode
  packets and append them to the recorder's in-memory queue, which holds at
  most C{buffer_limit} bytes (packets waiting for the disk plus the batch
  being written).  A packet that does not fit is dropped -- the call never
  blocks and the queue never grows past the limit -- and later packets keep
  their sequence numbers, so Wireshark shows "previous segment not captured"
  where data is missing.  The first drop is logged at once, later drops at
  most every L{DROP_WARNING_INTERVAL} seconds with the running total.
* A L{RecordingWriter} moves the queue to disk.  The recorder hands it one
  batch (everything queued) at a time and the next batch only when the
  writer reports the previous one written.  L{ThreadedWriter}, the default,
  does the file work in its own daemon thread and reports back with
  C{callFromThread}; L{SynchronousWriter} writes at once (for tests).
* A write error (disk full, permission denied) stops the recording of that
  session with one error log; the session itself goes on.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import secrets
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.logger import Logger

log = Logger()

PCAP_MAGIC = 0xA1B2C3D4
PCAP_VERSION = (2, 4)
SNAPLEN = 262144
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
"""Raw IP packets, no link header (network sessions' recordings)."""
DROP_WARNING_INTERVAL = 10.0

_PCAP_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER = struct.Struct("<IIII")
_ETHERNET = struct.Struct("!6s6sH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_IPPROTO_TCP = 6
_IPPROTO_UDP = 17
_MAX_IP_PACKET = 65535
_SEQ_MASK = 0xFFFFFFFF

_FIN, _SYN, _RST, _PSH, _ACK = 0x01, 0x02, 0x04, 0x08, 0x10
# NOP, window scale 14: with both SYNs carrying it Wireshark sees a 1 GiB
# window and does not flag long one-way transfers (which are never acked).
_SYN_OPTIONS = b"\x01\x03\x03\x0e"
_WINDOW = 0xFFFF
_CLIENT_MAC = bytes.fromhex("020000000001")
_SERVER_MAC = bytes.fromhex("020000000002")
_SESSION_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def pcap_file_header(link_type: int = LINKTYPE_ETHERNET) -> bytes:
    """The 24-byte classic pcap header: microsecond timestamps, frames of C{link_type}."""
    major, minor = PCAP_VERSION
    return _PCAP_HEADER.pack(PCAP_MAGIC, major, minor, 0, 0, SNAPLEN, link_type)


# -- files and writers ---------------------------------------------------------


class RecordingFile(Protocol):
    """The file operations a writer needs (a binary file opened for writing)."""

    def write(self, data: bytes, /) -> object: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


Opener = Callable[[Path], RecordingFile]


def create_recording_file(path: Path) -> RecordingFile:
    """Create C{path} (mode 0600, never an existing file) and its directory (0700).

    The file must not exist: session ids are random, so an existing file (or
    a symbolic link planted in its place) means something is wrong.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    flags |= getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(path, flags, 0o600)
    try:
        return os.fdopen(descriptor, "wb")
    except BaseException:
        os.close(descriptor)
        raise


class WriterSink(Protocol):
    """What a writer reports to its recorder, always in the reactor thread."""

    def batch_written(self) -> None:
        """The last batch given to L{RecordingWriter.write} is on disk (flushed to the OS)."""

    def write_failed(self, reason: str) -> None:
        """Opening or writing the file failed; the writer has stopped for good."""

    def writer_closed(self) -> None:
        """The file is closed after all batches were written."""


class RecordingWriter(Protocol):
    """Moves a recorder's packets to disk off the reactor thread.

    The recorder calls L{open} once, then L{write} with one batch at a time
    (the next only after C{batch_written}), then L{close}.  The writer ends
    with exactly one of C{writer_closed} or C{write_failed}.
    """

    def open(self, path: Path, sink: WriterSink) -> None:
        """Start: create C{path}; report to C{sink}."""

    def write(self, batch: list[bytes]) -> None:
        """Append C{batch} to the file; report C{sink.batch_written()} when done."""

    def close(self) -> None:
        """Close the file after the outstanding batch; report C{sink.writer_closed()}."""


def _describe(error: Exception) -> str:
    return str(error) or type(error).__name__


class SynchronousWriter:
    """Writes each batch at once, in the caller's thread (tests, tools)."""

    def __init__(self, *, opener: Opener = create_recording_file) -> None:
        self._opener = opener
        self._file: RecordingFile | None = None
        self._sink: WriterSink | None = None

    def open(self, path: Path, sink: WriterSink) -> None:
        self._sink = sink
        try:
            self._file = self._opener(path)
        except OSError as error:
            sink.write_failed(_describe(error))

    def write(self, batch: list[bytes]) -> None:
        assert self._sink is not None
        if self._file is None:
            return
        try:
            self._file.write(b"".join(batch))
            self._file.flush()
        except OSError as error:
            self._abandon()
            self._sink.write_failed(_describe(error))
            return
        self._sink.batch_written()

    def close(self) -> None:
        assert self._sink is not None
        file, self._file = self._file, None
        if file is None:
            return
        try:
            file.close()
        except OSError as error:
            self._sink.write_failed(_describe(error))
            return
        self._sink.writer_closed()

    def _abandon(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()


class ThreadedWriter:
    """Writes batches in a daemon thread of its own, one thread per recording.

    The thread is fed by a small bounded queue: the recorder hands over at
    most one batch (and then the close request) at a time, so the memory is
    bounded by the recorder's buffer, not here.  The thread reports back
    through C{reactor.callFromThread}.  A disk that stalls blocks only this
    thread; the recorder keeps queueing and then dropping packets meanwhile.
    A thread of its own (rather than the reactor's thread pool) keeps a
    stalled disk from starving the pool that Twisted also uses to resolve
    host names.
    """

    def __init__(
        self, reactor: IReactorFromThreads, *, opener: Opener = create_recording_file
    ) -> None:
        self._reactor = reactor
        self._opener = opener
        self._inbox: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=2)
        self._thread: threading.Thread | None = None

    def open(self, path: Path, sink: WriterSink) -> None:
        assert self._thread is None, "a ThreadedWriter writes one recording"
        self._thread = threading.Thread(
            target=self._run, args=(path, sink), name=f"recording {path.name}", daemon=True
        )
        self._thread.start()

    def write(self, batch: list[bytes]) -> None:
        self._inbox.put_nowait(batch)

    def close(self) -> None:
        self._inbox.put_nowait(None)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end (tests); whether it has ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self, path: Path, sink: WriterSink) -> None:
        report = self._reactor.callFromThread
        try:
            file = self._opener(path)
        except Exception as error:
            report(sink.write_failed, _describe(error))
            return
        try:
            while (batch := self._inbox.get()) is not None:
                file.write(b"".join(batch))
                file.flush()
                report(sink.batch_written)
        except Exception as error:
            with contextlib.suppress(Exception):
                file.close()
            report(sink.write_failed, _describe(error))
            return
        try:
            file.close()
        except Exception as error:
            report(sink.write_failed, _describe(error))
            return
        report(sink.writer_closed)


# -- the recorder --------------------------------------------------------------


class SessionRecorder:
    """The pcap recording of one session; see the module docstring.

    @ivar path: the pcap file.
    @ivar dropped_bytes: session bytes (TCP payload) left out because the buffer was full.
    @ivar dropped_packets: packets left out because the buffer was full.
    @ivar failed: whether recording stopped because of a file error.
    @ivar failure_reason: that error.
    """

    def __init__(
        self,
        directory: Path,
        session_id: str,
        clock: IReactorTime,
        *,
        buffer_limit: int = 8 * 1024 * 1024,
        writer: RecordingWriter | None = None,
        link_type: int = LINKTYPE_ETHERNET,
    ) -> None:
        if not _SESSION_ID.fullmatch(session_id):
            raise ValueError(f"session id {session_id!r} cannot name a file")
        if buffer_limit <= 0:
            raise ValueError("the recording buffer limit must be positive")
        if writer is None:
            threads = IReactorFromThreads(clock, None)
            if threads is None:
                raise TypeError("the default ThreadedWriter needs a clock that is the reactor")
            writer = ThreadedWriter(threads)
        self.session_id = session_id
        self.link_type = link_type
        self.path = directory / f"{session_id}.pcap"
        self.clock = clock
        self.buffer_limit = buffer_limit
        self.writer = writer
        self.dropped_bytes = 0
        self.dropped_packets = 0
        self.failed = False
        self.failure_reason: str | None = None
        self.closing = False
        self._queue: deque[bytes] = deque()
        self._queued = 0  # bytes in _queue
        self._in_flight: int | None = None  # bytes in the batch being written
        self._ended = False
        self._waiters: list[Deferred[None]] = []
        self._last_warning: float | None = None
        self._unreported_bytes = 0
        self._unreported_packets = 0
        self._report_call: IDelayedCall | None = None
        self._warned = False
        writer.open(self.path, self)
        if not self.failed:
            self._push(pcap_file_header(link_type))

    @property
    def buffered_bytes(self) -> int:
        """Bytes held in memory: queued packets and the batch being written."""
        return self._queued + (self._in_flight or 0)

    @property
    def recording(self) -> bool:
        """Whether packets are still accepted (not closed, not failed)."""
        return not (self.closing or self.failed)

    def connection(
        self, connection_id: int, client: tuple[str, int], server: tuple[str, int]
    ) -> ConnectionRecording:
        """Start the conversation of one tunnelled connection (writes its handshake).

        C{client} is the console side, C{server} the target; both hosts are IP
        literals.  If one is IPv6 the conversation is IPv6 (an IPv4 address is
        then written IPv4-mapped).
        """
        return ConnectionRecording(self, connection_id, client, server)

    def packet(self, data: bytes) -> None:
        """Record one whole raw IP packet as it passed (a C{LINKTYPE_RAW} recording)."""
        size = _RECORD_HEADER.size + len(data)
        if not self._admit(size, len(data)):
            return
        microseconds = round(self.clock.seconds() * 1_000_000)
        seconds, fraction = divmod(microseconds, 1_000_000)
        self._push(_RECORD_HEADER.pack(seconds, fraction, len(data), len(data)) + data)

    def flow(self, client: tuple[str, int], server: tuple[str, int]) -> FlowRecording:
        """Start recording one UDP flow (C{client}: the console side, C{server}: the target)."""
        return FlowRecording(self, client, server)

    def close(self) -> Deferred[None]:
        """Write what is queued and close the file.  Idempotent; never fails.

        The result fires once the file is closed (or recording has failed).
        Conversations still open stay open in the file.
        """
        if self._ended:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        if self.closing:
            return waiter
        self.closing = True
        if self._report_call is not None and self._report_call.active():
            self._report_call.cancel()
        self._report_call = None
        if self._unreported_packets:
            self._warn_dropped(self.clock.seconds())
        if self._in_flight is None:
            if self._queue:
                self._start_batch()
            else:
                self.writer.close()
        return waiter

    # -- the queue (used by ConnectionRecording) -------------------------

    def _admit(self, size: int, payload: int) -> bool:
        """Whether a packet of C{size} bytes fits in the buffer; count it as dropped if not."""
        if not self.recording:
            return False
        if self.buffered_bytes + size > self.buffer_limit:
            self._dropped(payload)
            return False
        if self._warned:
            self._warned = False
            log.info(
                "recording of session {session} resumed; {total} bytes dropped so far",
                session=self.session_id,
                total=self.dropped_bytes,
            )
        return True

    def _push(self, packet: bytes) -> None:
        self._queue.append(packet)
        self._queued += len(packet)
        if self._in_flight is None:
            self._start_batch()

    def _start_batch(self) -> None:
        batch = list(self._queue)
        self._queue.clear()
        self._in_flight, self._queued = self._queued, 0
        self.writer.write(batch)

    # -- drop warnings ---------------------------------------------------

    def _dropped(self, payload: int) -> None:
        self.dropped_bytes += payload
        self.dropped_packets += 1
        self._unreported_bytes += payload
        self._unreported_packets += 1
        now = self.clock.seconds()
        last = self._last_warning
        if last is None or now - last >= DROP_WARNING_INTERVAL:
            self._warn_dropped(now)
        elif self._report_call is None:
            delay = last + DROP_WARNING_INTERVAL - now
            self._report_call = self.clock.callLater(delay, self._report_dropped)

    def _report_dropped(self) -> None:
        self._report_call = None
        if self._unreported_packets:
            self._warn_dropped(self.clock.seconds())

    def _warn_dropped(self, now: float) -> None:
        if self._report_call is not None and self._report_call.active():
            self._report_call.cancel()
        self._report_call = None
        log.warn(
            "recording of session {session} dropped {dropped} bytes ({packets} packets): {reason}"
            " ({total} bytes dropped in total, recording {path} is incomplete)",
            session=self.session_id,
            dropped=self._unreported_bytes,
            packets=self._unreported_packets,
            total=self.dropped_bytes,
            reason=f"the recording buffer ({self.buffer_limit} bytes) is full,"
            " the disk does not keep up",
            path=str(self.path),
        )
        self._unreported_bytes = 0
        self._unreported_packets = 0
        self._last_warning = now
        self._warned = True

    # -- WriterSink ------------------------------------------------------

    def batch_written(self) -> None:
        """Called by the writer: the batch in flight is written."""
        self._in_flight = None
        if self.failed or self._ended:
            return
        if self._queue:
            self._start_batch()
        elif self.closing:
            self.writer.close()

    def write_failed(self, reason: str) -> None:
        """Called by the writer: the file could not be created or written."""
        if self.failed or self._ended:
            return
        self.failed = True
        self.failure_reason = reason
        self._queue.clear()
        self._queued = 0
        self._in_flight = None
        if self._report_call is not None and self._report_call.active():
            self._report_call.cancel()
        self._report_call = None
        log.error(
            "recording of session {session} stopped: cannot write {path}: {reason};"
            " the session goes on without recording",
            session=self.session_id,
            path=str(self.path),
            reason=reason,
        )
        self._end()

    def writer_closed(self) -> None:
        """Called by the writer: the file is closed."""
        self._end()

    def _end(self) -> None:
        self._ended = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)


# -- one conversation ----------------------------------------------------------


@dataclass
class _Side:
    """One end of a synthetic TCP conversation."""

    address: bytes
    port: int
    mac: bytes
    seq: int
    ip_id: int = 0
    fin_sent: bool = False


def _ip_pair(
    client: str, server: str
) -> tuple[IPv4Address, IPv4Address] | tuple[IPv6Address, IPv6Address]:
    def parse(host: str) -> IPv4Address | IPv6Address:
        address = ip_address(host.strip("[]"))
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            return address.ipv4_mapped
        return address

    def widen(address: IPv4Address | IPv6Address) -> IPv6Address:
        if isinstance(address, IPv6Address):
            return address
        return IPv6Address(b"\0" * 10 + b"\xff\xff" + address.packed)

    one, other = parse(client), parse(server)
    if isinstance(one, IPv4Address) and isinstance(other, IPv4Address):
        return one, other
    return widen(one), widen(other)


def _check_port(port: int) -> int:
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"{port} is not a TCP port")
    return port


def _ones_complement_sum(data: bytes) -> int:
    """The 16-bit one's complement sum of C{data}, modulo 0xFFFF (2**16 = 1 mod 0xFFFF)."""
    value = int.from_bytes(data, "big")
    if len(data) % 2:
        value <<= 8  # pad with a zero byte
    return value % 0xFFFF


def _checksum(total: int) -> int:
    """The Internet checksum from a sum modulo 0xFFFF of data that is not all zero."""
    return 0xFFFF - total if total else 0


class ConnectionRecording:
    """The synthetic TCP conversation of one tunnelled connection.

    All methods are cheap, never block and never raise for I/O reasons; after
    the conversation ended (or the recorder closed or failed) they do nothing.
    """

    def __init__(
        self,
        recorder: SessionRecorder,
        connection_id: int,
        client: tuple[str, int],
        server: tuple[str, int],
    ) -> None:
        client_ip, server_ip = _ip_pair(client[0], server[0])
        self.recorder = recorder
        self.connection_id = connection_id
        self.ipv6 = isinstance(client_ip, IPv6Address)
        self.client = _Side(
            client_ip.packed, _check_port(client[1]), _CLIENT_MAC, secrets.randbits(32)
        )
        self.server = _Side(
            server_ip.packed, _check_port(server[1]), _SERVER_MAC, secrets.randbits(32)
        )
        ip_header = _IPV6.size if self.ipv6 else _IPV4.size
        self._frame_overhead = _RECORD_HEADER.size + _ETHERNET.size + ip_header + _TCP.size
        self.max_segment = _MAX_IP_PACKET - ip_header - _TCP.size
        self.finished = False
        self._segment(self.client, self.server, _SYN, options=_SYN_OPTIONS)
        self._segment(self.server, self.client, _SYN | _ACK, options=_SYN_OPTIONS)
        self._segment(self.client, self.server, _ACK)

    def to_server(self, data: bytes) -> None:
        """C{data} went from the console to the target now."""
        self._data(self.client, self.server, data)

    def from_server(self, data: bytes) -> None:
        """C{data} went from the target to the console now."""
        self._data(self.server, self.client, data)

    def half_closed(self, by_client: bool) -> None:
        """One side sent FIN (the other side acknowledges it)."""
        if self.finished:
            return
        side, peer = (self.client, self.server) if by_client else (self.server, self.client)
        if side.fin_sent:
            return
        self._segment(side, peer, _FIN | _ACK)
        side.fin_sent = True
        self._segment(peer, side, _ACK)
        if peer.fin_sent:
            self.finished = True

    def closed(self, reset: bool = False, *, by_client: bool = True) -> None:
        """The connection ended: a FIN exchange, or a RST when C{reset}.

        C{by_client} says which side closes (or resets) first.
        """
        if self.finished:
            return
        self.finished = True
        first, second = (self.client, self.server) if by_client else (self.server, self.client)
        if reset:
            self._segment(first, second, _RST | _ACK)
            return
        pending = [side for side in (first, second) if not side.fin_sent]
        for side in pending:
            peer = self.server if side is self.client else self.client
            self._segment(side, peer, _FIN | _ACK)
            side.fin_sent = True
        if pending:
            last = pending[-1]
            peer = self.server if last is self.client else self.client
            self._segment(peer, last, _ACK)

    def _data(self, source: _Side, destination: _Side, data: bytes) -> None:
        if self.finished or source.fin_sent or not data:
            return
        step = self.max_segment
        for start in range(0, len(data), step):
            self._segment(source, destination, _PSH | _ACK, data[start : start + step])

    def _segment(
        self,
        source: _Side,
        destination: _Side,
        flags: int,
        payload: bytes = b"",
        options: bytes = b"",
    ) -> None:
        seq = source.seq
        source.seq = (seq + len(payload) + (1 if flags & (_SYN | _FIN) else 0)) & _SEQ_MASK
        ip_id = source.ip_id
        source.ip_id = (ip_id + 1) & 0xFFFF
        recorder = self.recorder
        if not recorder._admit(self._frame_overhead + len(options) + len(payload), len(payload)):
            return
        ack = destination.seq if flags & _ACK else 0
        tcp_length = _TCP.size + len(options) + len(payload)
        if self.ipv6:
            pseudo = source.address + destination.address + struct.pack("!II", tcp_length, 6)
        else:
            pseudo = source.address + destination.address + struct.pack("!HH", 6, tcp_length)
        offset = (_TCP.size + len(options)) // 4 << 4
        fields = [source.port, destination.port, seq, ack, offset, flags, _WINDOW, 0, 0]
        total = _ones_complement_sum(pseudo + _TCP.pack(*fields) + options)
        fields[7] = _checksum((total + _ones_complement_sum(payload)) % 0xFFFF)
        tcp_header = _TCP.pack(*fields) + options
        _push_frame(
            recorder, self.ipv6, source, destination, ip_id, _IPPROTO_TCP, tcp_header, payload
        )


def _push_frame(
    recorder: SessionRecorder,
    ipv6: bool,
    source: _Side,
    destination: _Side,
    ip_id: int,
    protocol: int,
    header: bytes,
    payload: bytes,
) -> None:
    """One Ethernet frame with an IP packet (C{protocol}: its L4 C{header} and C{payload})."""
    length = len(header) + len(payload)
    if ipv6:
        ip_header = _IPV6.pack(
            0x6000_0000, length, protocol, 64, source.address, destination.address
        )
        ethertype = _ETHERTYPE_IPV6
    else:
        ip_fields = [0x45, 0, _IPV4.size + length, ip_id, 0x4000, 64, protocol, 0]
        unsummed = _IPV4.pack(*ip_fields, source.address, destination.address)
        ip_fields[-1] = _checksum(_ones_complement_sum(unsummed))
        ip_header = _IPV4.pack(*ip_fields, source.address, destination.address)
        ethertype = _ETHERTYPE_IPV4
    frame_length = _ETHERNET.size + len(ip_header) + length
    microseconds = round(recorder.clock.seconds() * 1_000_000)
    seconds, fraction = divmod(microseconds, 1_000_000)
    record = b"".join(
        (
            _RECORD_HEADER.pack(seconds, fraction, frame_length, frame_length),
            _ETHERNET.pack(destination.mac, source.mac, ethertype),
            ip_header,
            header,
            payload,
        )
    )
    recorder._push(record)


class FlowRecording:
    """The UDP datagrams of one tunnelled UDP flow: one UDP packet per datagram.

    Like L{ConnectionRecording}, cheap, never blocking, never raising for I/O;
    a datagram that does not fit in the recorder's buffer is dropped and counted.
    """

    def __init__(
        self, recorder: SessionRecorder, client: tuple[str, int], server: tuple[str, int]
    ) -> None:
        client_ip, server_ip = _ip_pair(client[0], server[0])
        self.recorder = recorder
        self.ipv6 = isinstance(client_ip, IPv6Address)
        self.client = _Side(client_ip.packed, _check_port(client[1]), _CLIENT_MAC, 0)
        self.server = _Side(server_ip.packed, _check_port(server[1]), _SERVER_MAC, 0)
        ip_header = _IPV6.size if self.ipv6 else _IPV4.size
        self._frame_overhead = _RECORD_HEADER.size + _ETHERNET.size + ip_header + _UDP.size

    def to_server(self, data: bytes) -> None:
        """A datagram went from the console to the target now."""
        self._datagram(self.client, self.server, data)

    def from_server(self, data: bytes) -> None:
        """A datagram went from the target to the console now."""
        self._datagram(self.server, self.client, data)

    def _datagram(self, source: _Side, destination: _Side, payload: bytes) -> None:
        ip_id = source.ip_id
        source.ip_id = (ip_id + 1) & 0xFFFF
        recorder = self.recorder
        if len(payload) > _MAX_IP_PACKET - _IPV4.size - _UDP.size:
            return  # never relayed either (the relay's limit)
        if not recorder._admit(self._frame_overhead + len(payload), len(payload)):
            return
        length = _UDP.size + len(payload)
        if self.ipv6:
            pseudo = source.address + destination.address + struct.pack("!II", length, 17)
        else:
            pseudo = source.address + destination.address + struct.pack("!HH", 17, length)
        fields = [source.port, destination.port, length, 0]
        total = _ones_complement_sum(pseudo + _UDP.pack(*fields))
        fields[3] = _checksum((total + _ones_complement_sum(payload)) % 0xFFFF) or 0xFFFF
        header = _UDP.pack(*fields)
        _push_frame(recorder, self.ipv6, source, destination, ip_id, _IPPROTO_UDP, header, payload)
