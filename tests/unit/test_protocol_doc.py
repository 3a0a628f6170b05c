"""docs/protocol.md must agree with the code it specifies.

The tables of the protocol document are parsed and compared with the enums
and constants of shared/protocol/frames.py, the defaults of shared.protocol.mux.MuxSettings and
the schema of shared/protocol/control.py.  Each check is a function returning a list of
problems, so the tests at the end can show that a drift on either side (the
document or the code) is caught.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from shared.lifecycle import Transitions
from shared.protocol import control, frames
from shared.protocol.datagrams import DropReason
from shared.protocol.frames import ErrorCode, FrameType
from shared.protocol.mux import (
    STREAM_TRANSITIONS,
    Multiplexer,
    MuxSettings,
    StreamEvent,
    StreamState,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

Table = list[dict[str, str]]


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def parse_table(text: str, heading: str, columns: list[str]) -> Table:
    """The rows of the first table under C{## heading}, which must have C{columns}."""
    lines = text.splitlines()
    try:
        start = lines.index(f"## {heading}")
    except ValueError:
        raise AssertionError(f"docs/protocol.md has no section '## {heading}'") from None
    table: list[str] = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if line.lstrip().startswith("|"):
            table.append(line)
        elif table:
            break
    assert len(table) >= 2, f"section {heading!r} has no table"
    header = _cells(table[0])
    assert header == columns, f"table {heading!r} has columns {header}, expected {columns}"
    assert all(re.fullmatch(r":?-+:?", cell) for cell in _cells(table[1])), table[1]
    rows = []
    for line in table[2:]:
        cells = _cells(line)
        assert len(cells) == len(columns), f"table {heading!r}: malformed row {line!r}"
        rows.append(dict(zip(columns, cells, strict=True)))
    return rows


def _unquote(cell: str) -> str:
    return cell.strip().strip("`").strip()


def _parse_number(cell: str) -> int | float:
    text = _unquote(cell)
    if re.fullmatch(r"0[xX][0-9a-fA-F]+|\d+", text):
        return int(text, 0) if text.lower().startswith("0x") else int(text)
    if re.fullmatch(r"\d+\.\d+", text):
        return float(text)
    raise AssertionError(f"not a number: {cell!r}")


def _duplicates(names: list[str]) -> list[str]:
    return [
        f"{name} is listed more than once" for name in sorted(set(names)) if names.count(name) > 1
    ]


# -- checks ------------------------------------------------------------------


def check_enum_table(
    text: str, heading: str, columns: list[str], members: Mapping[str, int]
) -> list[str]:
    rows = parse_table(text, heading, columns)
    names = [_unquote(row["Name"]) for row in rows]
    problems = _duplicates(names)
    documented = {_unquote(row["Name"]): _parse_number(row["Value"]) for row in rows}
    for name, value in members.items():
        if name not in documented:
            problems.append(f"{heading}: {name} missing from the document")
        elif documented[name] != int(value):
            problems.append(
                f"{heading}: {name} is {documented[name]} in the document, {int(value)} in the code"
            )
    for name in documented.keys() - members.keys():
        problems.append(f"{heading}: {name} is documented but not in the code")
    values = list(documented.values())
    problems += [f"{heading}: value {v} used twice" for v in set(values) if values.count(v) > 1]
    return problems


def _enum_members(cls: type[enum.Enum]) -> dict[str, int]:
    # __members__ includes NONE = 0 of an IntFlag, which iteration skips.
    return {name: int(member.value) for name, member in cls.__members__.items()}


FRAME_COLUMNS = ["Name", "Value", "Stream", "Payload"]
CODE_COLUMNS = ["Name", "Value", "Meaning"]

REQUIRED_LIMITS = {
    "MAX_PAYLOAD_BEFORE_HELLO",
    "MAX_PAYLOAD",
    "MAX_DATA_CHUNK",
    "MAX_CONTROL_PAYLOAD",
}


def expected_limits(settings: MuxSettings | None = None) -> dict[str, int | float]:
    """The MuxSettings fields, with their values in C{settings} (default: the defaults)."""
    defaults = settings if settings is not None else MuxSettings()
    return {f.name: getattr(defaults, f.name) for f in dataclasses.fields(MuxSettings)}


def _constant(name: str) -> int | float | None:
    for module in (frames, control):
        value = getattr(module, name, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
    return None


def check_limits(text: str, settings: MuxSettings | None = None) -> list[str]:
    rows = parse_table(text, "Limits", ["Limit", "Value"])
    problems: list[str] = []
    names = []
    documented: dict[str, int | float] = {}
    for row in rows:
        match = re.fullmatch(r"`(\w+)`", row["Limit"])
        if match is None:
            problems.append(f"Limits: {row['Limit']!r} is not a `python_identifier`")
            continue
        names.append(match.group(1))
        documented[match.group(1)] = _parse_number(row["Value"])
    problems += _duplicates(names)
    code = expected_limits(settings)
    for name, value in documented.items():
        expected = code[name] if name in code else _constant(name)
        if expected is None:
            problems.append(f"Limits: {name} is neither a MuxSettings field nor a constant")
        elif type(expected) is not type(value) or expected != value:
            problems.append(
                f"Limits: {name} is {value!r} in the document, {expected!r} in the code"
            )
    for name in sorted((code.keys() | REQUIRED_LIMITS) - documented.keys()):
        problems.append(f"Limits: {name} missing from the document")
    return problems


JSON_TYPES = {
    int: "integer",
    str: "string",
    dict: "object",
    list: "array",
    float: "number",
    bool: "boolean",
}
DIRECTIONS = {"console → jumpoint": "console", "jumpoint → console": "jumpoint"}


def _json_type(t: object) -> str:
    if isinstance(t, type):
        return JSON_TYPES.get(t, repr(t))
    if t == (int, float):
        return "number"
    return repr(t)


def _field_cell(kind: str, column: str, cell: str, problems: list[str]) -> dict[str, str]:
    if cell in ("", "—"):
        return {}
    pairs = re.findall(r"`(\w+)`\s*\((\w+)\)", cell)
    documented = dict(pairs)
    if len(pairs) != len(documented):
        problems.append(f"{kind}: a field is listed twice in {column}")
    leftover = re.sub(r"`\w+`\s*\(\w+\)", "", cell).replace(",", "").strip()
    if leftover:
        problems.append(f"{kind}: unparsed text in {column}: {leftover!r}")
    return documented


def check_control_messages(
    text: str,
    fields: Mapping[str, Mapping[str, object]],
    console: set[str],
    jumpoint: set[str],
    optional: Mapping[str, Mapping[str, object]] | None = None,
) -> list[str]:
    rows = parse_table(text, "Control messages", ["Type", "Direction", "Fields", "Optional fields"])
    optional = optional or {}
    problems: list[str] = []
    kinds = []
    for row in rows:
        match = re.fullmatch(r"`(\w+)`", row["Type"])
        if match is None:
            problems.append(f"Control messages: bad type cell {row['Type']!r}")
            continue
        kind = match.group(1)
        kinds.append(kind)
        direction = DIRECTIONS.get(row["Direction"])
        if direction is None:
            problems.append(f"{kind}: unknown direction {row['Direction']!r}")
        elif direction == "console" and kind not in console:
            problems.append(f"{kind}: documented console → jumpoint, not in CONSOLE_MESSAGES")
        elif direction == "jumpoint" and kind not in jumpoint:
            problems.append(f"{kind}: documented jumpoint → console, not in JUMPOINT_MESSAGES")
        if kind not in fields:
            problems.append(f"{kind}: documented but not in control._FIELDS")
            continue
        for column, table in (("Fields", fields), ("Optional fields", optional)):
            documented = _field_cell(kind, column, row[column], problems)
            expected = {name: _json_type(t) for name, t in table.get(kind, {}).items()}
            if documented != expected:
                problems.append(
                    f"{kind}: {column} {documented} in the document, {expected} in the code"
                )
    problems += _duplicates(kinds)
    for kind in sorted(fields.keys() - set(kinds)):
        problems.append(f"Control messages: {kind} missing from the document")
    for kind in sorted((console | jumpoint) - fields.keys()):
        problems.append(f"Control messages: {kind} has a direction but no _FIELDS entry")
    both = console & jumpoint
    problems += [f"{kind} is in both directions" for kind in sorted(both)]
    return problems


# -- the document agrees with the code ----------------------------------------


def test_frame_types_table() -> None:
    members = _enum_members(frames.FrameType)
    assert check_enum_table(doc_text(), "Frame types", FRAME_COLUMNS, members) == []


def test_frame_types_table_stream_column() -> None:
    rows = parse_table(doc_text(), "Frame types", FRAME_COLUMNS)
    streams = {_unquote(row["Name"]): row["Stream"] for row in rows}
    # The Stream column states where validate() allows each type.
    for kind, (_, control_only, data_only) in frames._RULES.items():
        expected = "0" if control_only else "≠ 0" if data_only else "any"
        assert streams[kind.name] == expected, kind


def test_flags_table() -> None:
    members = _enum_members(frames.Flag)
    assert "NONE" in members
    assert check_enum_table(doc_text(), "Flags", CODE_COLUMNS, members) == []


def test_error_codes_table() -> None:
    members = _enum_members(frames.ErrorCode)
    assert check_enum_table(doc_text(), "Error codes", CODE_COLUMNS, members) == []


def test_limits_table() -> None:
    assert check_limits(doc_text()) == []


def test_limits_table_lists_every_mux_setting() -> None:
    rows = parse_table(doc_text(), "Limits", ["Limit", "Value"])
    listed = {_unquote(row["Limit"]) for row in rows}
    assert {f.name for f in dataclasses.fields(MuxSettings)} <= listed
    assert listed >= REQUIRED_LIMITS


def test_control_messages_table() -> None:
    problems = check_control_messages(
        doc_text(),
        control._FIELDS,
        control.CONSOLE_MESSAGES,
        control.JUMPOINT_MESSAGES,
        control._OPTIONAL,
    )
    assert problems == []


def test_header_layout_and_alpn() -> None:
    text = doc_text()
    assert f"`{frames.HEADER.format}`" in text
    assert frames.HEADER_SIZE == 10
    assert "10-byte header (`HEADER_SIZE`)" in text
    assert f"**`{frames.ALPN_PROTOCOL.decode()}`**" in text
    assert f"`PROTOCOL_VERSION = {frames.PROTOCOL_VERSION}`" in text
    assert frames.ALPN_PROTOCOL.decode().endswith(f"/{frames.PROTOCOL_VERSION}")


def test_required_sections() -> None:
    headings = set(re.findall(r"^## (.+)$", doc_text(), flags=re.MULTILINE))
    for heading in [
        "Overview",
        "Frame layout",
        "Frame types",
        "Flags",
        "Error codes",
        "Limits",
        "Hello exchange",
        "Control messages",
        "Flow control",
        "Half-close",
        "RESET",
        "PING and keepalive",
        "GOAWAY and closing",
        "Errors",
        "Stream limit",
        "Datagrams",
    ]:
        assert heading in headings, heading


def section(text: str, heading: str) -> str:
    """The body of C{## heading}, up to the next second-level heading."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_the_datagrams_section_names_every_drop_reason_and_the_frame_type() -> None:
    body = section(doc_text(), "Datagrams")
    for reason in DropReason:
        assert f"`{reason.value}`" in body, reason
    assert f"type 0x{int(FrameType.DATAGRAM):x}" in body
    for limit in ("max_flows", "datagram_queue_limit", "datagram_queue_length"):
        assert f"`{limit}`" in body, limit


# -- the checks catch drift on either side -------------------------------------


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("| DATA | 0x0 |", "| DATA | 0x7 |"),
        ("| CONTROL | 0x6 | 0 |", "| CONTROLS | 0x6 | 0 |"),
        ("| GOAWAY | 0x5 |", "| PONG | 0x8 | 0 | x |\n| GOAWAY | 0x5 |"),
    ],
)
def test_frame_types_drift_in_doc_is_caught(old: str, new: str) -> None:
    text = _replace_once(doc_text(), old, new)
    members = _enum_members(frames.FrameType)
    assert check_enum_table(text, "Frame types", FRAME_COLUMNS, members) != []


def test_enum_drift_in_code_is_caught() -> None:
    text = doc_text()
    extra = {**_enum_members(frames.FrameType), "PRIORITY": 7}
    assert check_enum_table(text, "Frame types", FRAME_COLUMNS, extra) != []
    renumbered = {**_enum_members(frames.ErrorCode), "SHUTDOWN": 15}
    assert check_enum_table(text, "Error codes", CODE_COLUMNS, renumbered) != []
    fewer = {k: v for k, v in _enum_members(frames.Flag).items() if k != "ACK"}
    assert check_enum_table(text, "Flags", CODE_COLUMNS, fewer) != []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("| ACK | 0x2 |", "| ACK | 0x4 |"),
        ("| NONE | 0x0 | No flag set. |\n", ""),
        ("| LIMIT | 9 |", "| LIMITED | 9 |"),
        ("| SHUTDOWN | 14 |", "| SHUTDOWN | 0xF |"),
    ],
)
def test_flag_and_code_drift_in_doc_is_caught(old: str, new: str) -> None:
    text = _replace_once(doc_text(), old, new)
    problems = check_enum_table(text, "Flags", CODE_COLUMNS, _enum_members(frames.Flag))
    problems += check_enum_table(text, "Error codes", CODE_COLUMNS, _enum_members(frames.ErrorCode))
    assert problems != []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("| `MAX_PAYLOAD` | `262144` |", "| `MAX_PAYLOAD` | `262145` |"),
        ("| `keepalive_timeout` | `45.0` |", "| `keepalive_timeout` | `45` |"),
        ("| `max_streams` | `256` |\n", ""),
        ("| `MAX_DATA_CHUNK` | `65536` |\n", ""),
        ("| `default_rtt` | `0.05` |", "| `default_rtt` | `0.05` |\n| `mystery` | `1` |"),
    ],
)
def test_limits_drift_in_doc_is_caught(old: str, new: str) -> None:
    text = _replace_once(doc_text(), old, new)
    assert check_limits(text) != []


def test_limits_drift_in_code_is_caught() -> None:
    changed = dataclasses.replace(MuxSettings(), initial_window=128 * 1024)
    assert check_limits(doc_text(), changed) != []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("`version` (integer), `client` (string)", "`version` (integer)"),
        (
            "`id` (integer), `item` (string) | `ticket`",
            "`id` (integer), `item` (integer) | `ticket`",
        ),
        ("| `result` | jumpoint → console |", "| `result` | console → jumpoint |"),
        ("| `show_item` | console → jumpoint | `id` (integer), `item` (string) | — |\n", ""),
        ("`all` (boolean) |\n| `request_access`", "`all` (integer) |\n| `request_access`"),
    ],
)
def test_control_drift_in_doc_is_caught(old: str, new: str) -> None:
    text = _replace_once(doc_text(), old, new)
    problems = check_control_messages(
        text,
        control._FIELDS,
        control.CONSOLE_MESSAGES,
        control.JUMPOINT_MESSAGES,
        control._OPTIONAL,
    )
    assert problems != []


def test_control_drift_in_code_is_caught() -> None:
    text = doc_text()
    more_fields: dict[str, Mapping[str, object]] = {
        **control._FIELDS,
        "close_session": {"id": int, "session": str},
    }
    assert (
        check_control_messages(
            text, more_fields, control.CONSOLE_MESSAGES, control.JUMPOINT_MESSAGES
        )
        != []
    )
    new_type: dict[str, Mapping[str, object]] = {**control._FIELDS, "ping": {"id": int}}
    assert (
        check_control_messages(
            text, new_type, control.CONSOLE_MESSAGES | {"ping"}, control.JUMPOINT_MESSAGES
        )
        != []
    )
    moved = control.CONSOLE_MESSAGES - {"hello"}
    assert (
        check_control_messages(text, control._FIELDS, moved, control.JUMPOINT_MESSAGES | {"hello"})
        != []
    )


# -- the stream lifecycle and what the document says the code does not do -------------------

STREAM_EVENT_COLUMNS = {
    "application ends": StreamEvent.END_WRITE,
    "own FIN sent": StreamEvent.FIN_SENT,
    "peer FIN": StreamEvent.FIN_RECEIVED,
    "peer DATA": StreamEvent.DATA_RECEIVED,
    "RESET": StreamEvent.RESET,
}


def check_stream_states(
    text: str, transitions: Transitions[StreamState, StreamEvent] = STREAM_TRANSITIONS
) -> list[str]:
    """The table under "## Streams" must be the stream's transition table, cell by cell."""
    rows = parse_table(text, "Streams", ["State", *STREAM_EVENT_COLUMNS])
    problems = []
    states = {state.value: state for state in StreamState}
    seen = [row["State"] for row in rows]
    if sorted(seen) != sorted(states):
        problems.append(f"stream states in the document {seen}, in the code {list(states)}")
    for row in rows:
        state = states.get(row["State"])
        if state is None:
            continue
        for column, event in STREAM_EVENT_COLUMNS.items():
            target = transitions.target(state, event)
            expected = "—" if target is None else target.value
            if row[column] != expected:
                problems.append(
                    f"{state.value} / {column}: document {row[column]!r}, code {expected!r}"
                )
    return problems


def test_stream_states_table() -> None:
    assert check_stream_states(doc_text()) == []


def test_stream_states_drift_is_caught() -> None:
    text = doc_text()
    assert (
        check_stream_states(text.replace("| closing | — | closed |", "| closing | — | open |"))
        != []
    )
    table = {
        state: {
            event: target
            for event in StreamEvent
            if (target := STREAM_TRANSITIONS.target(state, event)) is not None
        }
        for state in StreamState
    }
    table[StreamState.HALF_CLOSED_REMOTE][StreamEvent.DATA_RECEIVED] = (
        StreamState.HALF_CLOSED_REMOTE
    )
    drifted = Transitions("stream", StreamState, StreamEvent, table)
    assert check_stream_states(text, drifted) != []


SOURCES = Path(__file__).resolve().parents[2]

STALE_CLAIMS = [
    "not sent by the current implementation",
    "does not check it",
    "does not detect this",
    "A RESET for a\nstream the receiver does not know is ignored",
    "a RESET is ignored",
    "detected once the whole frame has arrived",
]


@pytest.mark.parametrize("claim", STALE_CLAIMS)
def test_the_document_does_not_deny_what_the_code_does(claim: str) -> None:
    """Each of these sentences was in the document while the code did the opposite:
    SESSION_CLOSED is sent, MAX_STREAM_ID and DATA after FIN are checked, a RESET
    for a stream never opened is a PROTOCOL_ERROR, the frame type is checked from
    the header alone."""
    assert claim not in doc_text()


def _code_uses(name: str) -> bool:
    pattern = re.compile(rf"ErrorCode\.{name}\b")
    for folder in ("jumpoint", "console", "shared"):
        for path in (SOURCES / folder).rglob("*.py"):
            if pattern.search(path.read_text(encoding="utf-8")):
                return True
    return False


def test_codes_the_document_calls_unused_are_unused() -> None:
    rows = parse_table(doc_text(), "Error codes", ["Name", "Value", "Meaning"])
    for row in rows:
        unused = "not sent" in row["Meaning"] or row["Meaning"].startswith("Reserved")
        assert _code_uses(row["Name"]) is not unused, row


def test_stream_ids_above_the_ceiling_are_a_framing_error() -> None:
    header = frames.HEADER.pack(FrameType.DATA, 0, frames.MAX_STREAM_ID + 2, 1)  # no payload yet
    with pytest.raises(frames.FrameError) as raised:
        frames.FrameParser().feed(header)
    assert raised.value.code == ErrorCode.PROTOCOL_ERROR


def test_a_reset_before_the_hello_is_a_framing_error() -> None:
    """Before the hello no stream exists, so a RESET names one never opened."""

    class Handler:
        closing: tuple[int, str] | None = None

        def control_received(self, message: dict[str, object]) -> None:
            pass

        def stream_requested(self, stream: object, payload: bytes) -> None:
            pass

        def mux_closing(self, code: int, reason: str, by_peer: bool) -> None:
            self.closing = (code, reason)

    handler = Handler()
    mux = Multiplexer(is_client=False, handler=handler, clock=Clock())
    mux.make_connection(StringTransport())
    mux.data_received(
        frames.encode_frame(FrameType.RESET, 0, 1, frames.encode_reason(ErrorCode.CANCEL, "x"))
    )
    assert handler.closing is not None and handler.closing[0] == ErrorCode.PROTOCOL_ERROR
