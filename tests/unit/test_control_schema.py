"""The control schema at the boundary: extreme values in every field of every message.

Huge JSON integers (10**400, 2**63), NaN and Infinity, deep nesting and wrong
types in any field of any control message either pass the schema with a
value the handlers can use, or are refused: a bad field of a request is an
C{error} reply with a code on that request, and the connection stays; only a
broken envelope (no type, a bad C{id}) closes it.  The channel tests drive a
real L{JumpointCore} through the real console channel (in-memory TLS).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import ILogObserver, LogEvent, LogLevel, globalLogPublisher
from zope.interface import provider

from shared import pki
from shared.errors import InvalidRequest, JumpError, ProtocolViolation
from shared.protocol import control
from shared.protocol.frames import ErrorCode
from tests.unit.test_session_rules import USERS, Keys, World, make_world, outcome

HUGE = [
    10**400,
    -(10**400),
    2**63,
    2**63 - 1,
    -(2**63) - 1,
    2**64,
    1e308,
    -1e308,
    float("inf"),
    float("-inf"),
    float("nan"),
    0,
    -1,
    True,
    False,
    None,
    "",
    "x" * 5000,
    [],
    {},
    [[[[[[[[[[[]]]]]]]]]]],
    {"a": 10**400},
    [10**400],
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
extremes = st.sampled_from(HUGE) | st.integers() | json_values

ITEM_SPEC: dict[str, Any] = {
    "name": "fuzzed",
    "type": "tcp",
    "host": "10.1.2.3",
    "jump_group": "lab",
    "tunnels": [{"local_port": "auto", "remote_port": 22}],
}

VALID: dict[str, dict[str, Any]] = {
    control.LIST_ITEMS: {"search": "w", "tag": "frontend", "jump_group": "lab"},
    control.SHOW_ITEM: {"item": "web"},
    control.CREATE_ITEM: {"item": ITEM_SPEC},
    control.CHANGE_ITEM: {"item": "web", "change": "tag", "value": "x"},
    control.DELETE_ITEM: {"item": "fuzzed"},
    control.OPEN_SESSION: {
        "item": "web",
        "ticket": "INC-1",
        "consent": True,
        "local_address": "127.0.0.5",
        "acl": ["127.0.0.0/8"],
        "auto_close": 60,
        "idle_timeout": 30,
    },
    control.TUNNELS_BOUND: {"tunnels": [{"local_address": "127.0.0.5", "local_port": 20000}]},
    control.CLOSE_SESSION: {"reason": "done", "session": "0" * 16},
    control.LIST_SESSIONS: {"all": False},
    control.SESSION_STATS: {},
    control.REQUEST_ACCESS: {"item": "guarded", "reason": "fix", "duration": 60},
    control.LIST_REQUESTS: {"all": True},
    control.DECIDE_REQUEST: {"request": 1, "approve": True, "comment": "ok"},
    control.FLOW_OPEN: {"flow": 1, "remote_port": 53, "protocol": "udp", "client": "127.0.0.1:1"},
    control.CLOSE_FLOW: {"flow": 1, "reason": "idle"},
}
REQUESTS = sorted(VALID)


def fields_of(kind: str) -> list[str]:
    names = [*control._FIELDS[kind], *control._OPTIONAL.get(kind, {})]
    return [name for name in names if name != "id"]


@st.composite
def hostile_request(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A request of any type with some of its fields (or the item's keys) made extreme."""
    kind = draw(st.sampled_from(REQUESTS))
    fields = {name: value for name, value in VALID[kind].items()}
    names = fields_of(kind)
    if not names:  # session_stats: nothing but its id
        return kind, fields
    for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names))):
        fields[name] = draw(extremes)
    if kind == control.CREATE_ITEM and draw(st.booleans()):
        spec = dict(ITEM_SPEC)
        key = draw(st.sampled_from([*ITEM_SPEC, "local_port", "login_timeout", "tag"]))
        spec[key] = draw(extremes)
        fields["item"] = spec
    return kind, fields


def test_every_request_type_has_a_valid_sample() -> None:
    assert set(VALID) == control.CONSOLE_MESSAGES - {control.HELLO}
    for kind, fields in VALID.items():
        message = {"type": kind, "id": 1, **fields}
        assert control.check_envelope(message, control.CONSOLE_MESSAGES) == kind
        control.check_fields(kind, message)


def _in_range(name: str, value: Any) -> bool:
    """What a handler may rely on for a field that passed the schema."""
    limits = control.RANGES.get(name)
    if isinstance(limits, control.Integer):
        return isinstance(value, int) and -(2**63) <= value < 2**63
    if isinstance(limits, control.Number):
        return math.isfinite(float(value))  # no OverflowError, no NaN
    return True


@given(hostile_request())
def test_the_schema_refuses_or_passes_a_usable_value(request: tuple[str, dict[str, Any]]) -> None:
    kind, fields = request
    message = {"type": kind, "id": 7, **fields}
    assert control.check_envelope(message, control.CONSOLE_MESSAGES) == kind
    try:
        control.check_fields(kind, message)
    except InvalidRequest as invalid:
        assert invalid.code == "invalid_request" and kind in invalid.message
        return
    for name, value in fields.items():
        assert value is None or _in_range(name, value), (name, value)


@pytest.mark.parametrize("value", [10**400, 2**63, -1, 1.5, "7", None, True, float("nan")])
def test_a_bad_id_is_a_framing_error(value: object) -> None:
    message = {"type": control.LIST_ITEMS, "id": value}
    with pytest.raises(ProtocolViolation, match="'id'"):
        control.check_envelope(message, control.CONSOLE_MESSAGES)


@given(st.sampled_from(sorted(control.JUMPOINT_MESSAGES)), st.data())
def test_the_console_checks_the_jumpoints_messages_too(kind: str, data: st.DataObject) -> None:
    """Messages without a reply: any bad field is a violation, nothing else escapes."""
    message: dict[str, Any] = {"type": kind}
    for name in [*control._FIELDS[kind], *control._OPTIONAL.get(kind, {})]:
        message[name] = data.draw(extremes)
    try:
        assert control.check_message(message, control.JUMPOINT_MESSAGES) == kind
    except ProtocolViolation:
        return
    for name, value in message.items():
        assert value is None or _in_range(name, value), (name, value)


# -- through the real channel ----------------------------------------------------


@pytest.fixture(scope="module")
def keys() -> Keys:
    ca = pki.create_ca("unit")
    return Keys(
        ca,
        pki.issue_server(ca, "unit", ["127.0.0.1"]),
        {name: pki.issue_client(ca, name, groups[0]) for name, groups in USERS.items()},
    )


@pytest.fixture(scope="module")
def shared_world(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[World]:
    built = make_world(Path(tmp_path_factory.mktemp("control")), keys)
    yield built
    built.core.database.close()


@pytest.fixture
def failures() -> Iterator[list[LogEvent]]:
    """Every critical log event (a traceback) logged while the test runs."""
    seen: list[LogEvent] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        if event.get("log_level") is LogLevel.critical or "log_failure" in event:
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(hostile_request())
def test_a_hostile_request_gets_one_answer_and_the_connection_stays(
    shared_world: World, failures: list[LogEvent], request: tuple[str, dict[str, Any]]
) -> None:
    world = shared_world
    if not world.consoles or world.consoles[-1].channel.mux is None:
        world.connect("alice")
    alice = world.consoles[-1]
    assert alice.channel.mux is not None and not alice.channel.mux.closing
    kind, fields = request
    answer = alice.send(kind, **fields)
    try:
        outcome(answer)
    except JumpError as refusal:
        assert refusal.code and refusal.code != "internal", refusal.message
    assert not alice.channel.mux.closing, f"{kind} {fields!r} closed the connection"
    assert failures == []
    if world.core.sessions():  # start the next example without a session
        alice.ask(control.CLOSE_SESSION, reason="next example")
    if world.core.catalog.get("fuzzed") is not None:
        world.connect("dave").ask(control.DELETE_ITEM, item="fuzzed")


@pytest.mark.parametrize(
    ("kind", "fields", "name"),
    [
        (control.OPEN_SESSION, {"item": "web", "auto_close": 10**400}, "auto_close"),
        (control.OPEN_SESSION, {"item": "web", "idle_timeout": 10**400}, "idle_timeout"),
        (
            control.REQUEST_ACCESS,
            {"item": "guarded", "reason": "r", "duration": 10**400},
            "duration",
        ),
        (control.DECIDE_REQUEST, {"request": 2**63, "approve": True}, "request"),
        (
            control.TUNNELS_BOUND,
            {"tunnels": [{"local_address": "x", "local_port": 2**70}]},
            "tunnels",
        ),
        (
            control.CREATE_ITEM,
            {"item": {**ITEM_SPEC, "tunnels": [{"remote_port": 10**400}]}},
            "item",
        ),
    ],
)
def test_the_issues_huge_integers_are_stated_errors(
    shared_world: World, kind: str, fields: dict[str, Any], name: str
) -> None:
    """auto_close, idle_timeout, duration = 10**400, request >= 2**63: an error reply."""
    alice = shared_world.connect("alice")
    refusal = alice.refused(kind, **fields)
    assert refusal.code == "invalid_request" and f"'{name}'" in refusal.message
    assert alice.channel.mux is not None and not alice.channel.mux.closing
    assert alice.ask(control.LIST_ITEMS)["items"]  # the same connection still serves


def test_a_broken_envelope_closes_the_connection(shared_world: World) -> None:
    alice = shared_world.connect("alice")
    assert alice.channel.mux is not None
    alice.channel.mux.send_control({"type": control.LIST_ITEMS, "id": 2**64})
    shared_world.flush()
    assert alice.channel.mux.closing
    assert alice.channel._goaway is not None
    code, reason = alice.channel._goaway
    assert code == ErrorCode.PROTOCOL_ERROR and "'id'" in reason


def test_the_ranges_table_of_the_protocol_documents_every_range() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    section = text.split("Ranges (`shared.protocol.control.RANGES`", 1)[1].split("\n\n", 2)[1]
    documented = set()
    for line in section.splitlines()[2:]:
        documented |= set(re.findall(r"`(\w+)`", line.split("|")[1].split("(")[0]))
    assert documented == set(control.RANGES)
