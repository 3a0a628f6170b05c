"""Socket tuning shared by the channel and the bridges."""

from __future__ import annotations

READ_SIZE = 256 * 1024
"""Bytes read per system call (Twisted's default is 64 KiB); also the write
buffer size above which Twisted pauses a transport's producer."""


def tune_transport(transport: object) -> None:
    """Read and buffer in larger chunks on a TCP transport (or the TCP under TLS)."""
    for candidate in (transport, getattr(transport, "transport", None)):
        if (
            candidate is not None
            and hasattr(candidate, "bufferSize")
            and hasattr(candidate, "socket")
        ):
            candidate.bufferSize = READ_SIZE
