"""Untrusted text: the escape at output (L{shared.text.printable}) and the checks at the boundary.

The escape is tested as a pure function with hypothesis, then where it is
used: the console's tables and messages, the live views, the errors on
stderr and the Jumpoint's text log (raw bytes: no ESC, no newline inside a
row, no bidi control).  The checks: names, free text and user names as pure
functions, then through jumpoint.yaml, the item schema and C{jumpoint user add}.
"""

from __future__ import annotations

import io
import json
import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from twisted.logger import LogLevel, globalLogPublisher

from console.output import print_item, print_items, print_requests, print_sessions, say
from console.view import JsonView, PlainView, TerminalView
from jumpoint.cli import cli as jumpoint_cli
from jumpoint.config import parse_config
from jumpoint.logs import TextLogObserver, format_event, make_observer
from shared import text
from shared.errors import ConfigError, SessionLost, UsageError, render_error
from shared.items import item_from_data
from shared.protocol import control

CLEAR = "\x1b[2J"
OSC8 = "\x1b]8;;https://evil.example/\x1b\\click me\x1b]8;;\x1b\\"
FORGED = "db\n   99 approved  root           everything"
RLO = "invoice\u202etxt.exe"
HOSTILE = [CLEAR, OSC8, FORGED, RLO, "tab\there", "nul\x00", "del\x7f", "c1\x9b31m", "ls\u2028"]

_ESCAPE = re.compile(r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|U([0-9a-f]{8})|([nrt]))")
_SHORT = {"n": "\n", "r": "\r", "t": "\t"}


def unescape(shown: str) -> str:
    """The inverse of L{text.printable} for text without backslashes."""

    def one(match: re.Match[str]) -> str:
        code = match.group(1) or match.group(2) or match.group(3)
        return chr(int(code, 16)) if code else _SHORT[match.group(4)]

    return _ESCAPE.sub(one, shown)


def assert_safe(shown: str) -> None:
    """Nothing a terminal acts on: no control, format (bidi), separator or unassigned char."""
    bad = [c for c in shown if unicodedata.category(c) in text.UNSAFE_CATEGORIES]
    assert bad == [], f"unsafe characters {bad!r} in {shown!r}"
    assert not set(shown) & text.BIDI_CONTROLS


# -- printable: the one escape --------------------------------------------------


@given(st.text())
def test_the_escaped_form_holds_no_control_or_bidi_character(value: str) -> None:
    assert_safe(text.printable(value))


@given(st.text())
def test_printable_characters_are_kept_and_the_rest_round_trips(value: str) -> None:
    shown = text.printable(value)
    kept = [c for c in value if not text.is_unsafe(c)]
    assert [c for c in shown if c in kept] == [c for c in shown if c in set(kept)]
    if "\\" not in value:
        assert unescape(shown) == value
    assert text.printable(shown) == shown  # escaping twice changes nothing


@given(st.text(st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))))
def test_printable_text_is_shown_unchanged(value: str) -> None:
    assert text.printable(value) == value


@given(st.text())
def test_json_output_escapes_everything_printable_does(value: str) -> None:
    """JSON output stays JSON: json.dumps (ensure_ascii) writes only printable ASCII."""
    encoded = json.dumps({"reason": value})
    assert all(" " <= c <= "~" for c in encoded)
    assert json.loads(encoded)["reason"] == value


def test_the_escapes_are_visible() -> None:
    assert text.printable(CLEAR) == "\\x1b[2J"
    assert text.printable(FORGED) == "db\\n   99 approved  root           everything"
    assert text.printable(RLO) == "invoice\\u202etxt.exe"
    assert text.printable("\x9b") == "\\x9b"
    assert text.printable("a\U000e0001") == "a\\U000e0001"
    assert text.printable("C:\\dir\u00a0ok é 山田 ✓") == "C:\\dir\u00a0ok é 山田 ✓"
    assert text.printable_lines("one\x1b\ntwo") == "one\\x1b\ntwo"


# -- the console's output layer ------------------------------------------------------


def _captured(capsysbinary: pytest.CaptureFixture[bytes]) -> tuple[bytes, bytes]:
    captured = capsysbinary.readouterr()
    return captured.out, captured.err


def _assert_raw_safe(raw: bytes) -> None:
    assert b"\x1b" not in raw and b"\x9b" not in raw and b"\x00" not in raw
    assert "\u202e".encode() not in raw and "\u2028".encode() not in raw
    assert_safe(raw.decode().replace("\n", ""))


def test_item_tables_escape_names_tags_and_comments(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    hostile = {
        "name": FORGED,
        "type": "tcp",
        "host": "10.0.0.1",
        "tunnels": [{"local_port": "auto", "remote_port": 22}],
        "jump_group": RLO,
        "tag": CLEAR,
        "comments": OSC8,
        "created_by": "mallory",
    }
    plain = dict(hostile, name="plain", jump_group="g", tag="t", comments=None)
    print_items([hostile, plain], False)
    out, _ = _captured(capsysbinary)
    _assert_raw_safe(out)
    lines = out.decode().splitlines()
    assert len(lines) == 3  # the header and one line per item: no forged row
    assert lines[1].startswith("db\\n   99 approved")
    assert "\\x1b[2J" in lines[1] and "invoice\\u202etxt.exe" in lines[1]
    print_item(hostile, False)
    out, _ = _captured(capsysbinary)
    _assert_raw_safe(out)
    assert "comments:        \\x1b]8;;https://evil.example/\\x1b\\click me" in out.decode()


def test_request_and_session_tables_keep_one_row_per_entry(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    request = {
        "id": 7,
        "status": "pending",
        "user": "alice",
        "item": "db",
        "duration": 600,
        "reason": "x\n   99 approved  root           everything" + CLEAR,
    }
    print_requests([request], False)
    out, _ = _captured(capsysbinary)
    _assert_raw_safe(out)
    rows = out.decode().splitlines()
    assert len(rows) == 2 and "99 approved" in rows[1] and rows[1].lstrip().startswith("7 ")
    session = {"session": "s1", "user": RLO, "item": CLEAR, "age": 5, "connections": 1}
    print_sessions([session], False, 0)
    out, _ = _captured(capsysbinary)
    _assert_raw_safe(out)
    assert len(out.decode().splitlines()) == 2


def test_columns_line_up_after_escaping(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    entries = [
        {"name": "a\x1bb", "type": "tcp", "host": "h", "jump_group": "g", "tunnels": []},
        {"name": "abcdefg", "type": "tcp", "host": "h", "jump_group": "g", "tunnels": []},
    ]
    print_items(entries, False)
    out, _ = _captured(capsysbinary)
    first, second = out.decode().splitlines()[1:]
    assert first.index(" tcp ") == second.index(" tcp ")


def test_say_and_the_json_listings(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    say(f"approved request 3: {FORGED} may open {CLEAR!s}")
    say(RLO, err=True)
    out, err = _captured(capsysbinary)
    _assert_raw_safe(out + err)
    assert out.count(b"\n") == 1 and err.count(b"\n") == 1
    print_items([{"name": CLEAR + RLO, "type": "tcp"}], True)
    out, _ = _captured(capsysbinary)
    assert all(32 <= b < 127 for b in out.rstrip(b"\n"))
    assert json.loads(out)[0]["name"] == CLEAR + RLO  # JSON keeps the value itself


def test_errors_on_stderr_are_escaped() -> None:
    error = SessionLost(f"the Jumpoint closed the session: closed by bob: {FORGED}", hint=CLEAR)
    shown = render_error("jump", error)
    assert shown.splitlines() == [
        "jump: error: the Jumpoint closed the session: closed by bob:"
        " db\\n   99 approved  root           everything",
        "jump: hint: \\x1b[2J",
    ]


# -- the live views --------------------------------------------------------------------

TUNNEL = {
    "local_address": "127.0.0.1",
    "local_port": 8080,
    "remote_host": "web" + CLEAR,
    "remote_port": 80,
    "service": OSC8,
    "status": "open",
    "connections": 0,
    "total_connections": 0,
    "bytes_to_remote": 0,
    "bytes_from_remote": 0,
}


def test_the_plain_view_escapes_item_notes_and_reasons() -> None:
    out = io.StringIO()
    view = PlainView(out)
    view.ready(FORGED, "s1", [TUNNEL])
    view.note(RLO)
    view.closed("closed_by_other", f"closed by bob: {FORGED}{CLEAR}", [TUNNEL])
    shown = out.getvalue()
    _assert_raw_safe(shown.encode())
    assert len(shown.splitlines()) == 3
    assert "closed by bob: db\\n   99 approved" in shown


def test_the_terminal_view_writes_only_its_own_escape_sequences() -> None:
    out = io.StringIO()
    clock = iter(range(100))
    view = TerminalView(out, lambda: next(clock))
    view.ready(FORGED, "s1", [TUNNEL])
    view.note(OSC8)
    view.update([TUNNEL])
    view.update([TUNNEL])
    view.closed("closed", CLEAR + RLO, [TUNNEL])
    own = re.compile(r"\x1b\[\d+F\x1b\[J")  # the redraw: cursor up N lines, clear below
    shown = own.sub("", out.getvalue())
    _assert_raw_safe(shown.encode())
    assert (
        "item db\\n   99 approved" in shown
        and "session closed: \\x1b[2Jinvoice\\u202etxt.exe" in shown
    )


def test_the_json_view_stays_json() -> None:
    out = io.StringIO()
    view = JsonView(out, lambda: 0)
    view.ready(FORGED, "s1", [TUNNEL])
    view.closed("closed", CLEAR, [TUNNEL])
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and all(32 <= ord(c) < 127 for line in lines for c in line)
    assert json.loads(lines[1])["reason"] == CLEAR


# -- the Jumpoint's text log ---------------------------------------------------------


def _event(**fields: Any) -> dict[str, Any]:
    return {
        "log_format": "session {session} closed: {reason}",
        "log_level": LogLevel.info,
        "log_namespace": "jumpoint.handlers",
        "log_time": 1_700_000_000.0,
        **fields,
    }


def test_the_text_log_writes_one_escaped_line_per_event() -> None:
    output = io.StringIO()
    observer = TextLogObserver(output)
    observer(_event(session="s1", reason=f"closed by bob: {FORGED}{OSC8}{RLO}"))
    raw = output.getvalue()
    _assert_raw_safe(raw.encode())
    assert raw.count("\n") == 1
    assert raw.rstrip("\n").endswith(
        "session s1 closed: closed by bob: db\\n   99 approved  root           everything"
        "\\x1b]8;;https://evil.example/\\x1b\\click me\\x1b]8;;\\x1b\\invoice\\u202etxt.exe"
    )


def test_a_traceback_keeps_its_lines_each_escaped() -> None:
    from twisted.python.failure import Failure

    try:
        raise ValueError(f"bad {CLEAR}")
    except ValueError:
        failure = Failure()
    output = io.StringIO()
    TextLogObserver(output)(_event(session="s", reason="r", log_failure=failure))
    raw = output.getvalue()
    assert "\x1b" not in raw and "ValueError: bad \\x1b[2J" in raw
    assert raw.count("\n") > 2  # the traceback's own lines
    assert "\x1b" not in format_event(_event(session="s", reason=CLEAR))


def test_the_json_log_escapes_as_json() -> None:
    output = io.StringIO()
    observer = make_observer("json", output)
    observer(_event(session="s1", reason=FORGED + CLEAR + RLO))
    raw = output.getvalue()
    assert raw.count("\n") == 1 and all(32 <= ord(c) < 127 for c in raw.rstrip("\n"))
    assert json.loads(raw)["reason"] == FORGED + CLEAR + RLO


def test_the_daemon_log_goes_through_the_escape() -> None:
    """A real twisted.logger call with a hostile field, through the configured observer."""
    from twisted.logger import Logger

    output = io.StringIO()
    observer = make_observer("text", output)
    globalLogPublisher.addObserver(observer)
    try:
        Logger(namespace="test").warn("refused {request}: {reason}", request="x", reason=FORGED)
    finally:
        globalLogPublisher.removeObserver(observer)
    assert output.getvalue().count("\n") == 1 and "db\\n   99 approved" in output.getvalue()


# -- names at the boundary --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("web" + CLEAR, "must be printable: U+001B (escape) at position 4"),
        (FORGED, "must be printable: U+000A (line feed) at position 3"),
        (RLO, "must be printable: U+202E (right-to-left override) at position 8"),
        ("zero\u200bwidth", "must be printable: U+200B (zero width space) at position 5"),
        (" web", "must not begin or end with a blank"),
        ("ﬁle", "is not in Unicode NFKC form (write 'file')"),
        ("\uff57\uff45\uff42", "is not in Unicode NFKC form (write 'web')"),
        ("", "must be 1 to 128 characters long"),
        ("x" * 129, "must be 1 to 128 characters long"),
    ],
)
def test_names_that_are_refused(value: str, problem: str) -> None:
    assert text.name_problem(value) == problem


@pytest.mark.parametrize("value", ["web", "web server", "prod-*", "café", "山田", "db.internal"])
def test_names_that_are_accepted(value: str) -> None:
    assert text.name_problem(value) is None


@given(st.text(min_size=1, max_size=40))
def test_an_accepted_name_is_printable_and_normalised(value: str) -> None:
    if text.name_problem(value) is None:
        assert text.printable(value) == value
        assert unicodedata.normalize("NFKC", value) == value


def _tcp(**fields: Any) -> dict[str, Any]:
    return {
        "name": "web",
        "type": "tcp",
        "host": "10.0.0.1",
        "tunnels": [{"local_port": "auto", "remote_port": 80}],
        **fields,
    }


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "web" + CLEAR, "item: name: 'web\\x1b[2J' must be printable"),
        ("jump_group", RLO, "item: jump_group: 'invoice\\u202etxt.exe' must be printable"),
        ("tag", OSC8, "item: tag: '\\x1b]8;;https://evil.example/"),
        (
            "tag",
            "\uff50\uff52\uff4f\uff44",
            "item: tag: '\uff50\uff52\uff4f\uff44' is not in Unicode NFKC form (write 'prod')",
        ),
        ("comments", FORGED, "item: comments: must be one line of text without control"),
        ("comments", "x" * 4097, "item: comments: must be 0 to 4096 characters long"),
        ("jump_policy", "p\x00", "item: jump_policy: 'p\\x00' must be printable"),
    ],
)
def test_the_item_schema_refuses_unsafe_text(field: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        item_from_data(_tcp(**{field: value}), "console")
    assert caught.value.message.startswith(message)


def test_the_item_schema_accepts_unicode_text() -> None:
    item = item_from_data(_tcp(name="café", tag="生产", comments="owner: José ✓ 👨‍👩‍👧"), "console")
    assert (item.name, item.tag) == ("café", "生产")


CONFIG = """
jumpoint: {name: unit, listen: "127.0.0.1:7443", addresses: ["127.0.0.1"]}
items:
  - name: web
    type: tcp
    host: 10.0.0.1
    tunnels: [{local_port: auto, remote_port: 80}]
"""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('    tag: "\\e[2J"\n', "jumpoint.yaml:8: items[0].tag: '\\x1b[2J' must be printable"),
        (
            "    comments: |\n      two\n      lines\n",
            "jumpoint.yaml:8: items[0].comments: must be one line of text",
        ),
        ('    jump_group: "\\u202e"\n', "jumpoint.yaml:8: items[0].jump_group: '\\u202e' must be"),
    ],
)
def test_jumpoint_yaml_refuses_unsafe_item_text(extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(CONFIG + extra, Path("jumpoint.yaml"))
    assert caught.value.message.startswith(message)


def test_jumpoint_yaml_refuses_unsafe_group_patterns_and_approvers() -> None:
    groups = 'groups:\n  default:\n    jump_groups: ["web\\e"]\n'
    with pytest.raises(ConfigError, match="jump_groups\\[0\\]: 'web\\\\x1b' must be printable"):
        parse_config(CONFIG + groups, Path("jumpoint.yaml"))


# -- free text in requests --------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE)
def test_free_text_with_control_or_bidi_characters_is_refused(value: str) -> None:
    problem = text.free_text_problem(value, 1000)
    assert problem is not None and problem.startswith("must be one line of text")


def test_free_text_limits_and_accepted_text() -> None:
    assert text.free_text_problem("CHG-42: rotate the keys, 10 min ✓ émoji 👨‍👩‍👧", 100) is None
    assert text.free_text_problem("x" * 11, 10) == "must be at most 10 characters long"
    assert text.free_text_problem("\ud800", 10) is not None  # a lone surrogate from JSON


@pytest.mark.parametrize(
    ("kind", "field", "label"),
    [
        (control.REQUEST_ACCESS, "reason", "--reason"),
        (control.DECIDE_REQUEST, "comment", "the comment"),
        (control.OPEN_SESSION, "ticket", "--ticket"),
    ],
)
def test_request_fields_with_control_characters_are_refused(
    kind: str, field: str, label: str
) -> None:
    for value in HOSTILE:
        with pytest.raises(UsageError) as caught:
            control.check_text_fields(kind, {"type": kind, "id": 1, field: value})
        assert caught.value.message.startswith(f"{label} must be one line of text")
    message = {"type": kind, "id": 1, field: "INC-42 fine"}
    control.check_text_fields(kind, message)
    assert message[field] == "INC-42 fine"


def test_a_close_reason_is_made_printable_and_cut() -> None:
    message = {"type": control.CLOSE_SESSION, "id": 1, "reason": FORGED + CLEAR + "x" * 300}
    control.check_text_fields(control.CLOSE_SESSION, message)
    assert message["reason"].startswith("db\\n   99 approved  root           everything\\x1b[2J")
    assert len(message["reason"]) == 200
    assert_safe(message["reason"])


# -- user names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (
            "\u0430lice",
            "mixes the scripts Cyrillic and Latin (U+0430 (cyrillic small letter a) at"
            " position 1); a user name is written in one script",
        ),
        ("p\u0430ypal", "mixes the scripts Cyrillic and Latin (U+0430"),
        ("adm\u0456n", "mixes the scripts Cyrillic and Latin (U+0456"),
        ("abc\u03b1", "mixes the scripts Greek and Latin (U+03B1"),
        ("\uff41\uff4c\uff49\uff43\uff45", "is not in Unicode NFKC form (write 'alice')"),
        ("alice" + CLEAR, "U+001B (escape) at position 6 is not a letter"),
        ("bob\u202e", "U+202E (right-to-left override) at position 4 is not a letter"),
        ("a b", "U+0020 (space) at position 2 is not a letter"),
        ("", "must be 1 to 128 characters long"),
    ],
)
def test_user_names_that_are_refused(value: str, problem: str) -> None:
    found = text.user_name_problem(value)
    assert found is not None and found.startswith(problem)


@pytest.mark.parametrize(
    "value",
    ["alice", "alice.smith@corp", "j_doe-2", "иван", "José", "山田たろう", "김철수", "Ωμέγα"],
)
def test_user_names_that_are_accepted(value: str) -> None:
    assert text.user_name_problem(value) is None


def test_jumpoint_user_add_refuses_a_confusable_name(tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(
        jumpoint_cli,
        ["init", "--dir", str(tmp_path / "jp"), "--name", "lab", "--listen", "127.0.0.1:7443"],
    )
    assert made.exit_code == 0, made.output
    out = tmp_path / "alice.enroll"
    result = runner.invoke(
        jumpoint_cli,
        ["user", "add", "\u0430lice", "--group", "default", "--out", str(out)],
        env={"JUMPOINT_CONFIG": str(tmp_path / "jp" / "jumpoint.yaml")},
    )
    assert isinstance(result.exception, UsageError)
    assert "mixes the scripts Cyrillic and Latin" in result.exception.message
    assert not out.exists()
    listed = runner.invoke(
        jumpoint_cli,
        ["user", "list", "--json"],
        env={"JUMPOINT_CONFIG": str(tmp_path / "jp" / "jumpoint.yaml")},
    )
    assert json.loads(listed.output) == []


def test_jump_open_notes_on_stderr_are_escaped(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    from console.open_command import _stderr_lines

    _stderr_lines([f"removed {CLEAR}{FORGED}", RLO])
    _, err = _captured(capsysbinary)
    _assert_raw_safe(err)
    assert err.decode().splitlines() == [
        "jump: removed \\x1b[2Jdb\\n   99 approved  root           everything",
        "jump: invoice\\u202etxt.exe",
    ]
