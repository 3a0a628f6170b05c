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
SHOW_ITEM = "show_item"
CREATE_ITEM = "create_item"
CHANGE_ITEM = "change_item"
DELETE_ITEM = "delete_item"
OPEN_SESSION = "open_session"
TUNNELS_BOUND = "tunnels_bound"
CLOSE_SESSION = "close_session"
LIST_SESSIONS = "list_sessions"
REQUEST_ACCESS = "request_access"
LIST_REQUESTS = "list_requests"
DECIDE_REQUEST = "decide_request"
RESULT = "result"
ERROR = "error"
SESSION_CLOSED = "session_closed"

CONSOLE_MESSAGES = {
    HELLO,
    LIST_ITEMS,
    SHOW_ITEM,
    CREATE_ITEM,
    CHANGE_ITEM,
    DELETE_ITEM,
    OPEN_SESSION,
    TUNNELS_BOUND,
    CLOSE_SESSION,
    LIST_SESSIONS,
    REQUEST_ACCESS,
    LIST_REQUESTS,
    DECIDE_REQUEST,
}
JUMPOINT_MESSAGES = {WELCOME, RESULT, ERROR, SESSION_CLOSED}

ITEM_CHANGES = ("tunnel_add", "tunnel_remove", "move", "tag", "comments")

MAX_STRING = 4096
MAX_LIST = 256

Types = type | tuple[type, ...]
_NUMBER = (int, float)

_FIELDS: dict[str, dict[str, Types]] = {
    HELLO: {"version": int, "client": str},
    WELCOME: {"version": int, "jumpoint": str, "user": str, "group": str},
    LIST_ITEMS: {"id": int},
    SHOW_ITEM: {"id": int, "item": str},
    CREATE_ITEM: {"id": int, "item": dict},
    CHANGE_ITEM: {"id": int, "item": str, "change": str, "value": str},
    DELETE_ITEM: {"id": int, "item": str},
    OPEN_SESSION: {"id": int, "item": str},
    TUNNELS_BOUND: {"id": int, "tunnels": list},
    CLOSE_SESSION: {"id": int, "reason": str},
    LIST_SESSIONS: {"id": int},
    REQUEST_ACCESS: {"id": int, "item": str, "reason": str, "duration": _NUMBER},
    LIST_REQUESTS: {"id": int},
    DECIDE_REQUEST: {"id": int, "request": int, "approve": bool},
    RESULT: {"id": int},
    ERROR: {"id": int, "error": dict},
    SESSION_CLOSED: {"session": str, "code": str, "reason": str},
}

_OPTIONAL: dict[str, dict[str, Types]] = {
    WELCOME: {"groups": list, "keepalive_interval": _NUMBER, "keepalive_timeout": _NUMBER},
    LIST_ITEMS: {"search": str, "tag": str, "jump_group": str},
    OPEN_SESSION: {
        "ticket": str,
        "consent": bool,
        "local_address": str,
        "acl": list,
        "auto_close": _NUMBER,
        "idle_timeout": _NUMBER,
    },
    CLOSE_SESSION: {"session": str},
    LIST_SESSIONS: {"all": bool},
    LIST_REQUESTS: {"all": bool},
    DECIDE_REQUEST: {"comment": str},
}


def _check_value(kind: str, name: str, value: Any, expected: Types) -> None:
    wants_bool = expected is bool
    if not isinstance(value, expected) or (isinstance(value, bool) and not wants_bool):
        raise ProtocolViolation(f"control message {kind!r}: field {name!r} is missing or invalid")
    if isinstance(value, str) and len(value) > MAX_STRING:
        raise ProtocolViolation(f"control message {kind!r}: field {name!r} is too long")
    if isinstance(value, list):
        if len(value) > MAX_LIST:
            raise ProtocolViolation(f"control message {kind!r}: field {name!r} is too long")
        if name == "acl" and not all(isinstance(v, str) and len(v) <= 64 for v in value):
            raise ProtocolViolation(f"control message {kind!r}: field {name!r} is invalid")


def check_message(message: dict[str, Any], allowed: set[str]) -> str:
    """Validate a decoded control message; return its type or raise L{ProtocolViolation}."""
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in allowed:
        raise ProtocolViolation(f"unexpected control message type {kind!r}"[:200])
    for name, expected in _FIELDS[kind].items():
        _check_value(kind, name, message.get(name), expected)
    for name, expected in _OPTIONAL.get(kind, {}).items():
        if message.get(name) is not None:
            _check_value(kind, name, message[name], expected)
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
