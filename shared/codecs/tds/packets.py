"""TDS packets and messages: the 8-byte header, an incremental parser, reassembly, splitting.

Every TDS exchange is a sequence of packets (MS-TDS 2.2.3)::

    type (u8) | status (u8) | length (u16, big endian, header included)
    | spid (u16, big endian) | packet id (u8) | window (u8) | payload

A I{message} is the concatenation of the payloads of consecutive packets of
one type up to the packet whose status has the EOM bit.  L{PacketParser} is
fed bytes in arbitrary chunks and returns whole packets; it refuses a length
outside C{8..max_packet} before buffering the body, so a peer cannot make it
hold more than one packet.  L{MessageAssembler} joins packets into messages
with its own cap, and L{encode_message} splits a message into packets.

L{TdsError} is the one exception of the whole C{shared.codecs.tds} package: the
bytes are not valid TDS (or exceed a limit), C{reason} says why.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

HEADER = struct.Struct(">BBHHBB")
HEADER_SIZE = HEADER.size  # 8

DEFAULT_PACKET_SIZE = 4096
"""Packet size of every connection until the login response changes it (LOGIN7 included)."""

MAX_PACKET_SIZE = 32767
"""Largest packet size a server grants (ENVCHANGE type 4 is at most 32767)."""

_LARGEST_LENGTH = 0xFFFF
"""The length field is 16 bits: no packet can be longer than this."""


class TdsError(Exception):
    """The bytes are not valid TDS, or exceed a limit: drop the connection.

    @ivar reason: what was wrong, in one sentence (safe to log, never contains
        payload bytes).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PacketType(enum.IntEnum):
    """Packet types (MS-TDS 2.2.3.1.1)."""

    SQL_BATCH = 0x01
    PRE_TDS7_LOGIN = 0x02
    RPC = 0x03
    TABULAR = 0x04
    ATTENTION = 0x06
    BULK_LOAD = 0x07
    FEDAUTH_TOKEN = 0x08
    TRANSACTION_MANAGER = 0x0E
    LOGIN7 = 0x10
    SSPI = 0x11
    PRELOGIN = 0x12


class Status(enum.IntFlag):
    """Packet status bits (MS-TDS 2.2.3.1.2)."""

    EOM = 0x01
    IGNORE = 0x02
    RESET_CONNECTION = 0x08
    RESET_CONNECTION_SKIP_TRAN = 0x10


_RESET_BITS = Status.RESET_CONNECTION | Status.RESET_CONNECTION_SKIP_TRAN


@dataclass(frozen=True, slots=True)
class Packet:
    """One packet.  C{type} is an int: unknown types are the caller's decision."""

    type: int
    status: int
    spid: int
    packet_id: int
    window: int
    payload: bytes

    @property
    def eom(self) -> bool:
        """Whether this is the last packet of its message (the EOM bit, whatever the others)."""
        return bool(self.status & Status.EOM)

    def encode(self) -> bytes:
        """The packet as bytes; raises C{ValueError} if a field does not fit."""
        length = HEADER_SIZE + len(self.payload)
        if length > _LARGEST_LENGTH:
            raise ValueError(f"a TDS packet cannot hold {len(self.payload)} payload bytes")
        try:
            header = HEADER.pack(
                self.type, self.status, length, self.spid, self.packet_id, self.window
            )
        except struct.error as error:
            raise ValueError(f"packet header field out of range: {error}") from None
        return header + self.payload


class PacketParser:
    """Incremental packet parser with an explicit size limit.

    L{feed} returns every packet completed by the new bytes.  A header whose
    length is below 8 or above C{max_packet} raises L{TdsError} as soon as
    the header is complete, before any of its body is buffered.

    Switching a connection away from TDS framing (the raw TLS records that
    follow a TDS 7.x handshake, or TLS first in TDS 8.0) is the caller's
    business: L{take_buffered} hands over the bytes not consumed yet.
    """

    def __init__(self, max_packet: int = MAX_PACKET_SIZE) -> None:
        if not HEADER_SIZE <= max_packet <= _LARGEST_LENGTH:
            raise ValueError(f"max_packet must be between {HEADER_SIZE} and {_LARGEST_LENGTH}")
        self.max_packet = max_packet
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """How many bytes are waiting for the rest of their packet."""
        return len(self._buffer)

    def take_buffered(self) -> bytes:
        """Return the bytes not yet part of a packet and empty the buffer."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def feed(self, data: bytes) -> list[Packet]:
        """Add C{data}; return the packets now complete, in order.  Raises L{TdsError}."""
        buffer = self._buffer
        buffer += data
        packets: list[Packet] = []
        offset = 0
        end = len(buffer)
        while end - offset >= HEADER_SIZE:
            kind, status, length, spid, packet_id, window = HEADER.unpack_from(buffer, offset)
            if length < HEADER_SIZE:
                raise TdsError(f"packet length {length} is shorter than the 8-byte header")
            if length > self.max_packet:
                raise TdsError(
                    f"packet of {length} bytes exceeds the limit of {self.max_packet} bytes"
                )
            if end - offset < length:
                break
            payload = bytes(buffer[offset + HEADER_SIZE : offset + length])
            packets.append(Packet(kind, status, spid, packet_id, window, payload))
            offset += length
        del buffer[:offset]
        return packets


@dataclass(frozen=True, slots=True)
class Message:
    """A reassembled message: the type and status of its first packet, all payloads joined."""

    type: int
    status: int
    payload: bytes


class MessageAssembler:
    """Joins packets into messages, refusing any message longer than C{max_message} bytes."""

    def __init__(self, max_message: int) -> None:
        if max_message < 0:
            raise ValueError("max_message must not be negative")
        self.max_message = max_message
        self._type: int | None = None
        self._status = 0
        self._parts: list[bytes] = []
        self._size = 0

    @property
    def in_progress(self) -> bool:
        """Whether packets of an unfinished message are held."""
        return self._type is not None

    def add(self, packet: Packet) -> Message | None:
        """Add the next packet; return the message it completes, or C{None}.

        Raises L{TdsError} when the packet's type differs from the message in
        progress, or the message would exceed C{max_message} bytes.
        """
        if self._type is None:
            self._type = packet.type
            self._status = packet.status
        elif packet.type != self._type:
            raise TdsError(
                f"packet of type 0x{packet.type:02x} inside a message of type 0x{self._type:02x}"
            )
        self._size += len(packet.payload)
        if self._size > self.max_message:
            raise TdsError(
                f"message of type 0x{self._type:02x} exceeds the limit of {self.max_message} bytes"
            )
        self._parts.append(packet.payload)
        if not packet.eom:
            return None
        message = Message(self._type, self._status, b"".join(self._parts))
        self._type = None
        self._status = 0
        self._parts = []
        self._size = 0
        return message


def encode_message(
    type: int,
    payload: bytes,
    packet_size: int = DEFAULT_PACKET_SIZE,
    status: int = 0,
    spid: int = 0,
    first_packet_id: int = 1,
) -> bytes:
    """Split a message into packets of at most C{packet_size} bytes (header included).

    The last packet has EOM; packet ids count up from C{first_packet_id}
    modulo 256.  Of C{status}, the RESETCONNECTION bits go on the first packet
    only, IGNORE on the last only (MS-TDS 2.2.3.1.2), any other bit on every
    packet.  An empty payload gives one header-only packet (attention).
    Raises C{ValueError} for a packet size outside C{9..65535} or a header
    field out of range.
    """
    if not HEADER_SIZE < packet_size <= _LARGEST_LENGTH:
        raise ValueError(f"packet size {packet_size} is outside {HEADER_SIZE + 1}..65535")
    chunk = packet_size - HEADER_SIZE
    common = status & ~(Status.EOM | Status.IGNORE | _RESET_BITS)
    starts = range(0, len(payload), chunk) if payload else range(1)
    last = len(starts) - 1
    out: list[bytes] = []
    for index, start in enumerate(starts):
        bits = common
        if index == 0:
            bits |= status & _RESET_BITS
        if index == last:
            bits |= Status.EOM | (status & Status.IGNORE)
        body = payload[start : start + chunk]
        packet_id = (first_packet_id + index) % 256
        try:
            out.append(HEADER.pack(type, bits, HEADER_SIZE + len(body), spid, packet_id, 0))
        except struct.error as error:
            raise ValueError(f"packet header field out of range: {error}") from None
        out.append(body)
    return b"".join(out)
