"""PRELOGIN: the option table both peers exchange first, and the encryption negotiation.

The payload of a PRELOGIN message (packet type 0x12 from the client, 0x04
from the server; MS-TDS 2.2.6.5) starts with a table of options::

    token (u8) | offset (u16, big endian) | length (u16, big endian)   ... 0xFF

Offsets count from the start of the payload and point into the data that
follows the table.  L{decode_prelogin} checks every entry, L{encode_prelogin}
lays the data out in table order, so a decoded message re-encodes to the
same bytes when its data was laid out that way.

L{negotiate} is the server side of the encryption table (what the proxy
replies for a client's request) and L{outcome} the client side (what a client
does on a reply).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from shared.codecs.tds.packets import TdsError

VERSION = 0x00
ENCRYPTION = 0x01
INSTOPT = 0x02
THREADID = 0x03
MARS = 0x04
TRACEID = 0x05
FEDAUTHREQUIRED = 0x06
NONCEOPT = 0x07
TERMINATOR = 0xFF

CLIENT_CERT = 0x80
"""Bit of the ENCRYPTION byte: the client authenticates with a certificate."""

_ENTRY = struct.Struct(">BHH")
_VERSION = struct.Struct(">BBHH")
_MIN_LENGTH = {VERSION: _VERSION.size, ENCRYPTION: 1, MARS: 1}

DEFAULT_SERVER_VERSION = (15, 0, 2000, 0)
"""SQL Server 2019 RTM, the version the proxy announces (major, minor, build, subbuild)."""

DEFAULT_CLIENT_VERSION = (1, 0, 0, 0)


class Encryption(enum.IntEnum):
    """Values of the ENCRYPTION option, without the L{CLIENT_CERT} bit."""

    OFF = 0
    ON = 1
    NOT_SUP = 2
    REQ = 3


_ENCRYPTION_VALUES = frozenset(int(value) for value in Encryption)


class Outcome(enum.Enum):
    """What a client does after the PRELOGIN reply."""

    NONE = "none"
    """No TLS at all."""
    LOGIN_ONLY = "login_only"
    """TLS for the LOGIN7 message only, then clear text (both sides sent OFF)."""
    FULL = "full"
    """TLS for the whole connection."""
    FAIL = "fail"
    """The client (or server) gives up: the two settings are incompatible."""


@dataclass(frozen=True, slots=True)
class PreLogin:
    """A decoded PRELOGIN payload: C{(token, data)} pairs in table order."""

    options: tuple[tuple[int, bytes], ...]

    def get(self, token: int) -> bytes | None:
        """The data of option C{token}, or C{None} when absent."""
        for key, data in self.options:
            if key == token:
                return data
        return None

    @property
    def encryption(self) -> Encryption | None:
        data = self.get(ENCRYPTION)
        return None if data is None else Encryption(data[0] & ~CLIENT_CERT)

    @property
    def client_cert(self) -> bool:
        data = self.get(ENCRYPTION)
        return data is not None and bool(data[0] & CLIENT_CERT)

    @property
    def version(self) -> tuple[int, int, int, int] | None:
        """(major, minor, build, subbuild) of the VERSION option."""
        data = self.get(VERSION)
        if data is None:
            return None
        major, minor, build, subbuild = _VERSION.unpack_from(data)
        return (major, minor, build, subbuild)

    @property
    def mars(self) -> bool | None:
        data = self.get(MARS)
        return None if data is None else data[0] != 0

    @property
    def instance(self) -> str | None:
        """The INSTOPT instance name, up to its NUL (Latin-1), or C{None} when absent."""
        data = self.get(INSTOPT)
        if data is None:
            return None
        return data.split(b"\0", 1)[0].decode("latin-1")

    def encode(self) -> bytes:
        return encode_prelogin(self.options)


def decode_prelogin(payload: bytes) -> PreLogin:
    """Decode and check a PRELOGIN payload; raises L{TdsError}.

    The table must end with 0xFF inside the payload, each option's data must
    lie after the table and inside the payload, no token may appear twice,
    VERSION needs 6 bytes, ENCRYPTION and MARS one, and ENCRYPTION must be
    one of the four known values (the L{CLIENT_CERT} bit aside).
    """
    entries: list[tuple[int, int, int]] = []
    position = 0
    while True:
        if position >= len(payload):
            raise TdsError("PRELOGIN option table has no terminator")
        token = payload[position]
        if token == TERMINATOR:
            position += 1
            break
        if position + _ENTRY.size > len(payload):
            raise TdsError("PRELOGIN option table is truncated")
        entries.append(_ENTRY.unpack_from(payload, position))
        position += _ENTRY.size
    table_end = position
    seen: set[int] = set()
    options: list[tuple[int, bytes]] = []
    for token, offset, length in entries:
        if token in seen:
            raise TdsError(f"PRELOGIN option 0x{token:02x} appears twice")
        seen.add(token)
        if length and offset < table_end:
            raise TdsError(f"PRELOGIN option 0x{token:02x} points into the option table")
        if offset + length > len(payload):
            raise TdsError(f"PRELOGIN option 0x{token:02x} extends beyond the payload")
        if length < _MIN_LENGTH.get(token, 0):
            raise TdsError(f"PRELOGIN option 0x{token:02x} is too short ({length} bytes)")
        data = payload[offset : offset + length]
        if token == ENCRYPTION and data[0] & ~CLIENT_CERT not in _ENCRYPTION_VALUES:
            raise TdsError(f"unknown PRELOGIN encryption value 0x{data[0]:02x}")
        options.append((token, data))
    return PreLogin(tuple(options))


def encode_prelogin(options: Sequence[tuple[int, bytes]]) -> bytes:
    """A PRELOGIN payload with the options' data in the given order.

    Raises C{ValueError} for the terminator token or data that does not fit.
    """
    table_size = _ENTRY.size * len(options) + 1
    table: list[bytes] = []
    data: list[bytes] = []
    offset = table_size
    for token, value in options:
        if not 0 <= token < TERMINATOR:
            raise ValueError(f"invalid PRELOGIN option token {token}")
        if offset + len(value) > 0xFFFF:
            raise ValueError("PRELOGIN options do not fit in 64 KiB")
        table.append(_ENTRY.pack(token, offset, len(value)))
        data.append(value)
        offset += len(value)
    return b"".join(table) + bytes([TERMINATOR]) + b"".join(data)


def _version_bytes(version: tuple[int, int, int, int]) -> bytes:
    major, minor, build, subbuild = version
    return _VERSION.pack(major, minor, build, subbuild)


def server_prelogin_reply(
    encryption: Encryption, version: tuple[int, int, int, int] = DEFAULT_SERVER_VERSION
) -> bytes:
    """The proxy's PRELOGIN reply payload (send it as a type-0x04 message).

    VERSION, ENCRYPTION, INSTOPT C{00}, THREADID (empty) and MARS C{00}:
    MARS is always present because FreeTDS drops to TDS 7.1 without it, and
    off because pytds would switch to SMP framing on MARS=1.
    """
    return encode_prelogin(
        [
            (VERSION, _version_bytes(version)),
            (ENCRYPTION, bytes([encryption])),
            (INSTOPT, b"\0"),
            (THREADID, b""),
            (MARS, b"\0"),
        ]
    )


def client_prelogin(
    encryption: Encryption,
    version: tuple[int, int, int, int] = DEFAULT_CLIENT_VERSION,
    instance: str = "",
    thread_id: int = 0,
) -> bytes:
    """The Jumpoint's PRELOGIN request payload (send it as a type-0x12 message).

    VERSION (the driver's), ENCRYPTION, INSTOPT (C{instance} and a NUL; the
    default instance is a lone NUL, use C{"MSSQLServer"} to ask for it by
    name), THREADID (4 bytes) and MARS 0.
    """
    return encode_prelogin(
        [
            (VERSION, _version_bytes(version)),
            (ENCRYPTION, bytes([encryption])),
            (INSTOPT, instance.encode("latin-1") + b"\0"),
            (THREADID, struct.pack(">I", thread_id & 0xFFFFFFFF)),
            (MARS, b"\0"),
        ]
    )


def negotiate(client: Encryption, server: Encryption) -> Encryption:
    """The ENCRYPTION value a server configured with C{server} replies to C{client}.

    C{server} is the server's setting: OFF (TLS available, not forced), ON
    (forced) or NOT_SUP; REQ counts as ON.  The MS-TDS table:

      client \\ server   OFF       ON        NOT_SUP
      OFF                OFF       REQ       NOT_SUP
      ON                 ON        ON        NOT_SUP
      NOT_SUP            NOT_SUP   REQ       NOT_SUP
      REQ                ON        ON        NOT_SUP

    Feed the reply and the client's value to L{outcome} to learn what follows.
    """
    if server is Encryption.NOT_SUP:
        return Encryption.NOT_SUP
    forced = server in (Encryption.ON, Encryption.REQ)
    if client is Encryption.OFF:
        return Encryption.REQ if forced else Encryption.OFF
    if client is Encryption.NOT_SUP:
        return Encryption.REQ if forced else Encryption.NOT_SUP
    return Encryption.ON


def outcome(client_sent: Encryption, reply: Encryption) -> Outcome:
    """What happens after a client that sent C{client_sent} receives C{reply}.

    Reply ON or REQ: the whole connection is encrypted (FAIL for a client
    that cannot do TLS).  NOT_SUP: no TLS (FAIL for a client that asked for
    encryption).  OFF: LOGIN7 only inside TLS for a client that sent OFF, no
    TLS for one that sent NOT_SUP, FAIL for one that asked ON or REQ (a reply
    outside the table that would downgrade it).
    """
    asked = client_sent in (Encryption.ON, Encryption.REQ)
    if reply in (Encryption.ON, Encryption.REQ):
        return Outcome.FAIL if client_sent is Encryption.NOT_SUP else Outcome.FULL
    if reply is Encryption.NOT_SUP:
        return Outcome.FAIL if asked else Outcome.NONE
    if client_sent is Encryption.OFF:
        return Outcome.LOGIN_ONLY
    return Outcome.NONE if client_sent is Encryption.NOT_SUP else Outcome.FAIL
