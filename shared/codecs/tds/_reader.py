"""A bounds-checked little-endian reader over a bytes object (private to C{shared.codecs.tds})."""

from __future__ import annotations

import struct

from shared.codecs.tds.packets import TdsError

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")


class Reader:
    """Reads fields from C{data[position:end]}; running out raises L{TdsError} naming C{what}."""

    def __init__(self, data: bytes, what: str, position: int = 0, end: int | None = None) -> None:
        self.data = data
        self.what = what
        self.position = position
        self.end = len(data) if end is None else end

    @property
    def remaining(self) -> int:
        return self.end - self.position

    def take(self, size: int) -> bytes:
        if size < 0 or size > self.end - self.position:
            raise TdsError(f"{self.what} is truncated")
        start = self.position
        self.position += size
        return self.data[start : self.position]

    def skip(self, size: int) -> None:
        if size < 0 or size > self.end - self.position:
            raise TdsError(f"{self.what} is truncated")
        self.position += size

    def _unpack(self, layout: struct.Struct) -> int:
        if layout.size > self.end - self.position:
            raise TdsError(f"{self.what} is truncated")
        (value,) = layout.unpack_from(self.data, self.position)
        self.position += layout.size
        return int(value)

    def u8(self) -> int:
        if self.position >= self.end:
            raise TdsError(f"{self.what} is truncated")
        value = self.data[self.position]
        self.position += 1
        return value

    def peek(self) -> int:
        if self.position >= self.end:
            raise TdsError(f"{self.what} is truncated")
        return self.data[self.position]

    def u16(self) -> int:
        return self._unpack(_U16)

    def u32(self) -> int:
        return self._unpack(_U32)

    def i32(self) -> int:
        return self._unpack(_I32)

    def u64(self) -> int:
        return self._unpack(_U64)

    def utf16(self, chars: int) -> str:
        raw = self.take(2 * chars)
        try:
            return raw.decode("utf-16-le")
        except UnicodeDecodeError:
            raise TdsError(f"{self.what} holds invalid UTF-16") from None

    def b_varchar(self) -> str:
        """A string with a one-byte count of UTF-16 code units."""
        return self.utf16(self.u8())

    def us_varchar(self) -> str:
        """A string with a two-byte count of UTF-16 code units."""
        return self.utf16(self.u16())
