"""Control messages: JSON documents carried in CONTROL frames on stream 0.

Every message is an object with a C{type}.  Requests from the console carry
an integer C{id}; the Jumpoint answers with C{result} or C{error} carrying the
same C{id}.  Messages the Jumpoint sends on its own (C{session_closed}) have
no C{id}.  OPEN frames carry a small JSON document too (L{StreamTarget}).

Each message is checked against a schema before use (tahoe-lafs style):
unknown types, missing fields, wrong types and oversize strings are a
protocol violation that closes the connection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shared.errors import ProtocolViolation

# Message types (docs/protocol.md, table "Control messages").
HELLO = "hello"
WELCOME = "welcome"
LIST_ITEMS = "list_items"
OPEN_SESSION = "open_session"
CLOSE_SESSION = "close_session"
RESULT = "result"
ERROR = "error"
SESSION_CLOSED = "session_closed"

CONSOLE_MESSAGES = {HELLO, LIST_ITEMS, OPEN_SESSION, CLOSE_SESSION}
JUMPOINT_MESSAGES = {WELCOME, RESULT, ERROR, SESSION_CLOSED}

MAX_STRING = 4096

_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    HELLO: {"version": int, "client": str},
    WELCOME: {"version": int, "jumpoint": str, "user": str, "group": str},
    LIST_ITEMS: {"id": int},
    OPEN_SESSION: {"id": int, "item": str},
    CLOSE_SESSION: {"id": int, "reason": str},
    RESULT: {"id": int},
    ERROR: {"id": int, "error": dict},
    SESSION_CLOSED: {"session": str, "code": str, "reason": str},
}


def check_message(message: dict[str, Any], allowed: set[str]) -> str:
    """Validate a decoded control message; return its type or raise L{ProtocolViolation}."""
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in allowed:
        raise ProtocolViolation(f"unexpected control message type {kind!r}"[:200])
    for name, expected in _FIELDS[kind].items():
        value = message.get(name)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ProtocolViolation(
                f"control message {kind!r}: field {name!r} is missing or invalid"
            )
        if isinstance(value, str) and len(value) > MAX_STRING:
            raise ProtocolViolation(f"control message {kind!r}: field {name!r} is too long")
    return kind


@dataclass(frozen=True)
class StreamTarget:
    """The payload of an OPEN frame: where the Jumpoint should connect the stream."""

    host: str
    port: int

    def encode(self) -> bytes:
        return json.dumps({"host": self.host, "port": self.port}, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, payload: bytes) -> StreamTarget:
        """Parse an OPEN payload; raises L{ProtocolViolation} for anything malformed."""
        try:
            data = json.loads(payload)
        except (ValueError, RecursionError):
            raise ProtocolViolation("OPEN payload is not JSON") from None
        if not isinstance(data, dict):
            raise ProtocolViolation("OPEN payload is not an object")
        host, port = data.get("host"), data.get("port")
        if not isinstance(host, str) or not 0 < len(host) <= 255:
            raise ProtocolViolation("OPEN payload has an invalid host")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ProtocolViolation("OPEN payload has an invalid port")
        return cls(host, port)
