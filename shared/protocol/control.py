"""Control messages: JSON documents carried in CONTROL frames on stream 0.

Every message is an object with a C{type}.  Requests from the console carry
an integer C{id}; the Jumpoint answers with C{result} or C{error} carrying the
same C{id}.  Messages the Jumpoint sends on its own (C{session_closed}) have
no C{id}.  OPEN frames carry a small JSON document too (L{StreamTarget}).

Each message is checked against one schema before use (tahoe-lafs style),
in two tiers.  The envelope (an object whose C{type} this side accepts and,
for a request, an integer C{id} in range) is framing: a message that breaks
it is a protocol violation that closes the connection.  Every other field is
checked for its type and its range (L{RANGES}: integers within bounds, numbers
finite and bounded, strings, lists and nested objects limited): a request
with a bad field is refused with an C{error} reply (L{InvalidRequest}, code
C{invalid_request}) and the connection stays.  Nothing after the check sees
an out-of-range value (10**400, 2**63, NaN), so no handler can overflow.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from shared import text
from shared.errors import InvalidRequest, ProtocolViolation, UsageError

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
SESSION_STATS = "session_stats"
REQUEST_ACCESS = "request_access"
LIST_REQUESTS = "list_requests"
DECIDE_REQUEST = "decide_request"
FLOW_OPEN = "flow_open"
CLOSE_FLOW = "close_flow"
FLOW_CLOSED = "flow_closed"
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
    SESSION_STATS,
    REQUEST_ACCESS,
    LIST_REQUESTS,
    DECIDE_REQUEST,
    FLOW_OPEN,
    CLOSE_FLOW,
}
JUMPOINT_MESSAGES = {WELCOME, RESULT, ERROR, SESSION_CLOSED, FLOW_CLOSED}

ITEM_CHANGES = (
    "tunnel_add",
    "tunnel_remove",
    "filter_add",
    "filter_remove",
    "move",
    "tag",
    "comments",
)

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
    SESSION_STATS: {"id": int},
    REQUEST_ACCESS: {"id": int, "item": str, "reason": str, "duration": _NUMBER},
    LIST_REQUESTS: {"id": int},
    DECIDE_REQUEST: {"id": int, "request": int, "approve": bool},
    FLOW_OPEN: {"id": int, "flow": int, "remote_port": int, "protocol": str},
    CLOSE_FLOW: {"id": int, "flow": int},
    FLOW_CLOSED: {"flow": int, "reason": str},
    RESULT: {"id": int},
    ERROR: {"id": int, "error": dict},
    SESSION_CLOSED: {"session": str, "code": str, "reason": str},
}

_OPTIONAL: dict[str, dict[str, Types]] = {
    WELCOME: {
        "groups": list,
        "keepalive_interval": _NUMBER,
        "keepalive_timeout": _NUMBER,
        "members": list,
    },
    LIST_ITEMS: {"search": str, "tag": str, "jump_group": str},
    OPEN_SESSION: {
        "ticket": str,
        "consent": bool,
        "local_address": str,
        "acl": list,
        "auto_close": _NUMBER,
        "idle_timeout": _NUMBER,
        "resume": dict,
    },
    CLOSE_SESSION: {"session": str},
    LIST_SESSIONS: {"all": bool},
    LIST_REQUESTS: {"all": bool},
    DECIDE_REQUEST: {"comment": str},
    FLOW_OPEN: {"client": str},
    CLOSE_FLOW: {"reason": str},
}


MAX_ID = 2**63 - 1
"""The largest request id and access request id (SQLite's INTEGER)."""
MAX_SECONDS = 100 * 366 * 86400
"""The largest magnitude of a duration in seconds (a century)."""
MAX_DEPTH = 8
"""Nesting of objects and lists inside an object field (create_item's item, error)."""
MAX_KEYS = 64


@dataclass(frozen=True)
class Integer:
    """An integer between C{low} and C{high}, both included."""

    low: int
    high: int

    def problem(self, value: Any) -> str | None:
        if not self.low <= value <= self.high:
            return f"must be an integer from {self.low} to {self.high}"
        return None


@dataclass(frozen=True)
class Number:
    """A finite number of magnitude at most C{bound} (JSON allows NaN and Infinity)."""

    bound: float

    def problem(self, value: Any) -> str | None:
        if isinstance(value, int):
            finite = -self.bound <= value <= self.bound
        else:
            finite = math.isfinite(value) and abs(value) <= self.bound
        return None if finite else f"must be a finite number of at most {self.bound:g}"


@dataclass(frozen=True)
class Entries:
    """A list whose entries are strings of at most C{max_length}, or objects of C{fields}."""

    max_length: int = 64
    fields: tuple[tuple[str, type, Integer | None], ...] = ()

    def problem(self, value: Any) -> str | None:
        for entry in value:
            if not self.fields:
                if not isinstance(entry, str) or len(entry) > self.max_length:
                    return f"entries must be strings of at most {self.max_length} characters"
                continue
            if not isinstance(entry, dict):
                return "entries must be objects"
            for name, kind, limits in self.fields:
                member = entry.get(name)
                if not isinstance(member, kind) or isinstance(member, bool):
                    return f"entries need {name!r}"
                if isinstance(member, str) and len(member) > self.max_length:
                    return f"entries: {name!r} is too long"
                if limits is not None and limits.problem(member) is not None:
                    return f"entries: {name!r} {limits.problem(member)}"
        return None


@dataclass(frozen=True)
class Bounded:
    """Any JSON object kept small: depth, keys, strings, lists and numbers bounded."""

    def problem(self, value: Any, depth: int = 0) -> str | None:
        if depth > MAX_DEPTH:
            return f"is nested deeper than {MAX_DEPTH} levels"
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, int):
            return None if -MAX_ID - 1 <= value <= MAX_ID else "holds an integer out of range"
        if isinstance(value, float):
            return None if math.isfinite(value) else "holds a number that is not finite"
        if isinstance(value, str):
            return None if len(value) <= MAX_STRING else "holds a string that is too long"
        if isinstance(value, list):
            if len(value) > MAX_LIST:
                return "holds a list that is too long"
            members = value
        else:  # a dict: JSON has nothing else
            if len(value) > MAX_KEYS:
                return "has too many keys"
            if any(len(key) > MAX_STRING for key in value):
                return "holds a key that is too long"
            members = list(value.values())
        for member in members:
            found = self.problem(member, depth + 1)
            if found is not None:
                return found
        return None


Range = Integer | Number | Entries | Bounded

RANGES: dict[str, Range] = {
    "id": Integer(0, MAX_ID),
    "flow": Integer(1, 2**31 - 1),
    "remote_port": Integer(1, 65535),
    "version": Integer(0, 65535),
    "request": Integer(0, MAX_ID),
    "duration": Number(MAX_SECONDS),
    "auto_close": Number(MAX_SECONDS),
    "idle_timeout": Number(MAX_SECONDS),
    "keepalive_interval": Number(MAX_SECONDS),
    "keepalive_timeout": Number(MAX_SECONDS),
    "acl": Entries(64),
    "groups": Entries(MAX_STRING),
    "members": Entries(300),
    "tunnels": Entries(64, (("local_address", str, None), ("local_port", int, Integer(0, 65535)))),
    "item": Bounded(),
    "error": Bounded(),
    "resume": Bounded(),
}
"""The range of a field, by name (the same name means the same thing in every message)."""


def _problem(name: str, value: Any, expected: Types) -> str | None:
    """What is wrong with one field's value, or C{None}."""
    wants_bool = expected is bool
    if not isinstance(value, expected) or (isinstance(value, bool) and not wants_bool):
        return "is missing or invalid"
    if isinstance(value, str) and len(value) > MAX_STRING:
        return "is too long"
    if isinstance(value, list) and len(value) > MAX_LIST:
        return "is too long"
    limits = RANGES.get(name)
    if limits is None or isinstance(value, bool):
        return None
    if isinstance(limits, Bounded):
        return limits.problem(value) if isinstance(value, dict) else None
    if isinstance(limits, Entries):
        return limits.problem(value) if isinstance(value, list) else None
    return limits.problem(value)


@dataclass(frozen=True)
class TextRule:
    """How a free-text field of a request is checked (L{check_text_fields})."""

    label: str
    max_length: int
    replace: bool = False
    """C{True}: unsafe characters are escaped instead of refused (a close never fails)."""


TEXT_FIELDS: dict[str, dict[str, TextRule]] = {
    REQUEST_ACCESS: {"reason": TextRule("--reason", 1000)},
    DECIDE_REQUEST: {"comment": TextRule("the comment", 1000)},
    OPEN_SESSION: {"ticket": TextRule("--ticket", 256)},
    CLOSE_SESSION: {"reason": TextRule("the close reason", 200, replace=True)},
    FLOW_OPEN: {"client": TextRule("the client address", 64, replace=True)},
    CLOSE_FLOW: {"reason": TextRule("the close reason", 200, replace=True)},
}
"""Free text that requests carry and others see (approvers, logs, a victim's terminal)."""


def check_text_fields(kind: str, message: dict[str, Any]) -> None:
    """Check a request's free text (L{TEXT_FIELDS}): a stated error on that request.

    Control characters, bidi controls and text over the limit are refused
    with L{UsageError}; a close reason is made printable and cut instead.
    """
    for name, rule in TEXT_FIELDS.get(kind, {}).items():
        value = message.get(name)
        if not isinstance(value, str):
            continue
        if rule.replace:
            message[name] = text.replace_unsafe(value, rule.max_length)
            continue
        problem = text.free_text_problem(value, rule.max_length)
        if problem is not None:
            raise UsageError(f"{rule.label} {problem}")


def check_envelope(message: dict[str, Any], allowed: set[str]) -> str:
    """The framing tier: a type this side accepts and, for a request, a valid C{id}.

    Returns the type; raises L{ProtocolViolation} (the connection closes).
    """
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in allowed:
        raise ProtocolViolation(f"unexpected control message type {kind!r}"[:200])
    if "id" in _FIELDS[kind]:
        problem = _problem("id", message.get("id"), int)
        if problem is not None:
            raise ProtocolViolation(f"control message {kind!r}: field 'id' {problem}")
    return kind


def check_fields(kind: str, message: dict[str, Any]) -> None:
    """The request tier: every field of a message whose envelope passed.

    Raises L{InvalidRequest} naming the field (answered with an C{error} reply).
    """
    for table, required in ((_FIELDS, True), (_OPTIONAL, False)):
        for name, expected in table.get(kind, {}).items():
            if name == "id" or (not required and message.get(name) is None):
                continue
            problem = _problem(name, message.get(name), expected)
            if problem is not None:
                raise InvalidRequest(f"control message {kind!r}: field {name!r} {problem}")


def check_message(message: dict[str, Any], allowed: set[str]) -> str:
    """Both tiers at once, every problem a L{ProtocolViolation} (messages without a reply)."""
    kind = check_envelope(message, allowed)
    try:
        check_fields(kind, message)
    except InvalidRequest as invalid:
        raise ProtocolViolation(invalid.message) from None
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
