"""Untrusted text through the real channel: what the Jumpoint refuses, replaces and stores.

Real consoles against a real L{JumpointCore} over in-memory TLS (the world of
L{tests.unit.test_session_rules}): names and free text with control or bidi
characters are a stated error on that request (the connection stays up, nothing
is stored); a close reason is made printable before anyone sees it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.errors import ConfigError, UsageError
from shared.protocol import control
from tests.unit.test_session_rules import World, keys, names, new_world, world

__all__ = ["keys", "new_world", "world"]  # fixtures used by the tests below

CLEAR = "\x1b[2J"
OSC8 = "\x1b]8;;https://evil.example/\x1b\\click me\x1b]8;;\x1b\\"
FORGED = "db\n   99 approved  root           everything"
RLO = "invoice\u202etxt.exe"


def _item(**fields: Any) -> dict[str, Any]:
    return {
        "name": "labweb",
        "type": "tcp",
        "host": "10.1.9.9",
        "jump_group": "lab",
        "tunnels": [{"local_port": "auto", "remote_port": 80}],
        **fields,
    }


def test_items_with_unsafe_names_tags_or_comments_are_refused(world: World) -> None:
    alice = world.connect("alice")
    for fields in (
        {"name": "labweb" + CLEAR},
        {"name": FORGED},
        {"jump_group": "lab" + RLO},
        {"tag": OSC8},
        {"comments": FORGED},
    ):
        error = alice.refused(control.CREATE_ITEM, item=_item(**fields))
        assert isinstance(error, ConfigError), fields
        assert "\x1b" not in error.message and "\n" not in error.message
    assert "labweb" not in names(alice.ask(control.LIST_ITEMS))
    assert world.audit("item_created") == []
    # the connection is still up: a good item is created on it
    alice.ask(control.CREATE_ITEM, item=_item(comments="the lab's web server ✓"))
    for change, value in (("tag", CLEAR), ("comments", FORGED), ("move", "lab\u202e")):
        error = alice.refused(control.CHANGE_ITEM, item="labweb", change=change, value=value)
        assert isinstance(error, ConfigError), change
    shown = alice.ask(control.SHOW_ITEM, item="labweb")["item"]
    assert shown["tag"] is None and shown["comments"] == "the lab's web server ✓"
    assert shown["jump_group"] == "lab"


def test_request_reasons_comments_and_tickets_with_control_characters_are_refused(
    world: World,
) -> None:
    alice = world.connect("alice")
    carol = world.connect("carol")
    for reason in (FORGED, CLEAR, OSC8, RLO):
        error = alice.refused(control.REQUEST_ACCESS, item="guarded", reason=reason, duration=60)
        assert isinstance(error, UsageError)
        assert error.message.startswith("--reason must be one line of text")
    long = alice.refused(control.REQUEST_ACCESS, item="guarded", reason="x" * 1001, duration=60)
    assert long.message == "--reason must be at most 1000 characters long"
    assert carol.ask(control.LIST_REQUESTS)["requests"] == []
    assert world.audit("approval_requested") == []

    request_id = alice.ask(control.REQUEST_ACCESS, item="guarded", reason="CHG-42 ✓", duration=60)[
        "request"
    ]["id"]
    error = carol.refused(
        control.DECIDE_REQUEST, request=request_id, approve=True, comment="ok" + CLEAR
    )
    assert isinstance(error, UsageError)
    assert error.message.startswith("the comment must be one line of text")
    (pending,) = carol.ask(control.LIST_REQUESTS)["requests"]
    assert pending["status"] == "pending" and pending["reason"] == "CHG-42 ✓"

    error = alice.refused(control.OPEN_SESSION, item="ticketed", ticket="INC-42\n99 approved")
    assert isinstance(error, UsageError) and error.message.startswith("--ticket must be one line")
    assert world.core.sessions() == []


def test_a_close_reason_reaches_the_victim_and_the_audit_escaped(world: World) -> None:
    bob = world.connect("bob")
    dave = world.connect("dave")
    session = bob.open("web")["session"]
    reason = f"{CLEAR}{FORGED}{OSC8}{RLO}"
    assert dave.ask(control.CLOSE_SESSION, session=session, reason=reason)["session"] == session
    world.flush()
    assert bob.closed_code() == "closed_by_other"
    shown = bob.closed_text()
    assert "\x1b" not in shown and "\n" not in shown and "\u202e" not in shown
    assert shown.startswith("closed by dave: \\x1b[2Jdb\\n   99 approved")
    (row,) = world.audit("session_terminated")
    assert row.detail["reason"].startswith("\\x1b[2Jdb\\n")
    (closed,) = world.audit("session_closed")
    assert "\x1b" not in closed.detail["reason"]


@pytest.mark.parametrize("reason", [CLEAR, FORGED + RLO])
def test_closing_the_own_session_with_an_unsafe_reason_still_closes_it(
    world: World, reason: str
) -> None:
    alice = world.connect("alice")
    opened = alice.open("web")
    assert alice.ask(control.CLOSE_SESSION, reason=reason)["session"] == opened["session"]
    assert world.core.sessions() == []
    (row,) = world.audit("session_closed")
    assert "\x1b" not in row.detail["reason"] and "\n" not in row.detail["reason"]


def test_an_item_stored_before_the_checks_is_listed_and_deleted(world: World) -> None:
    """A row an older Jumpoint wrote, with a name today's rules refuse."""
    spec = _item(name="old" + CLEAR, comments=FORGED)
    with world.core.database.transaction() as db:
        db.execute(
            "INSERT INTO items (name, type, jump_group, spec, created_by, created_at,"
            " updated_at) VALUES (?, 'tcp', 'lab', ?, 'alice', 0, 0)",
            (spec["name"], json.dumps(spec)),
        )
    alice = world.connect("alice")
    assert "old" + CLEAR in names(alice.ask(control.LIST_ITEMS))
    error = alice.refused(control.CHANGE_ITEM, item="old" + CLEAR, change="tag", value="t")
    assert isinstance(error, ConfigError) and "without control characters" in error.message
    assert alice.ask(control.DELETE_ITEM, item="old" + CLEAR)["item"] == "old" + CLEAR
    assert "old" + CLEAR not in names(alice.ask(control.LIST_ITEMS))
