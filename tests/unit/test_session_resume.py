"""Session resume on the Jumpoint, through the real channel (in memory, fake clock).

A channel lost without the console ending its session leaves the session
detached; a new channel resumes it with its token (after the policy is
decided again), or it is closed with C{link_lost} when its grace runs out.
The consoles here speak the wire directly (L{console.channel.ConsoleChannel}
requests): the console's reconnect loop is not what is tested.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.logger import LogEvent, formatEvent, globalLogPublisher

from jumpoint.server import JumpointChannel
from shared.errors import SESSION_GONE_MESSAGE, AccessDenied, JumpError, SessionGone
from shared.protocol import control
from shared.protocol.frames import ErrorCode
from tests.unit.test_session_rules import CONFIG, Console, World, keys, new_world, outcome

__all__ = ["keys", "new_world"]  # the fixtures, used by name

GRACE_CONFIG = CONFIG.replace(
    "groups:\n",
    "limits: {reconnect_grace: 1h, keepalive_interval: 5s, keepalive_timeout: 15s}\ngroups:\n",
    1,
)


@pytest.fixture
def world(new_world: Callable[..., World]) -> World:
    return new_world(config=GRACE_CONFIG)


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """The text of every log event while the test runs."""
    lines: list[str] = []

    def observe(event: LogEvent) -> None:
        lines.append(formatEvent(event) or "")
        lines.append(repr(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def jumpoint_side(world: World, session_id: str) -> JumpointChannel:
    for channel in world.core.channels:
        if channel.session is not None and channel.session.session_id == session_id:
            return channel
    raise AssertionError(f"no channel holds session {session_id}")


def lose_link(world: World, session_id: str) -> None:
    """The channel's TCP connection goes away without a GOAWAY (a reset, a dead peer)."""
    channel = jumpoint_side(world, session_id)
    assert channel.transport is not None
    channel.transport.abortConnection()  # type: ignore[attr-defined]
    world.flush()


def resume(console: Console, opened: dict[str, Any], item: str, **fields: Any) -> dict[str, Any]:
    token = fields.pop("token", opened["resume_token"])
    return console.open(item, resume={"session": opened["session"], "token": token}, **fields)


def refused_resume(console: Console, opened: dict[str, Any], item: str, **fields: Any) -> JumpError:
    with pytest.raises(JumpError) as caught:
        resume(console, opened, item, **fields)
    return caught.value


def row(world: World, session_id: str) -> dict[str, Any]:
    world.core.log_audit.flush()
    cursor = world.core.database.connection.execute(
        "SELECT * FROM sessions WHERE id = ?", (session_id,)
    )
    names = [d[0] for d in cursor.description]
    return dict(zip(names, cursor.fetchone(), strict=True))


def test_open_gives_a_resume_token_whose_hash_only_is_stored(world: World) -> None:
    opened = world.connect("alice").open("web")
    token = opened["resume_token"]
    assert len(token) == 43 and "=" not in token  # 32 bytes, base64url without padding
    assert opened["reconnect_grace"] == 3600
    stored = row(world, opened["session"])
    assert stored["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(stored)


def test_a_lost_channel_detaches_and_a_resume_takes_the_session_back(world: World) -> None:
    first = world.connect("alice")
    opened = first.open("web")
    session_id = opened["session"]
    first.stream("10.1.2.3", 80)
    world.targets.connect()
    world.flush()
    lose_link(world, session_id)
    (detached,) = world.audit("session_detached")
    assert detached.session == session_id
    assert detached.detail["code"] == "cancel" and detached.detail["connections_reset"] == 1
    assert world.audit("session_closed") == []
    assert row(world, session_id)["detached_at"] is not None

    second = world.connect("alice")
    resumed = resume(second, opened, "web")
    assert resumed["resumed"] is True and resumed["reconnects"] == 1
    assert resumed["session"] == session_id and resumed["resume_token"] == opened["resume_token"]
    assert resumed["tunnels"] == opened["tunnels"]
    (reconnected,) = world.audit("session_reconnected")
    assert reconnected.session == session_id and reconnected.detail["reconnects"] == 1
    assert reconnected.detail["peer"]
    stored = row(world, session_id)
    assert stored["reconnects"] == 1 and stored["detached_at"] is None
    assert stored["closed_at"] is None

    # the resumed session carries new connections, then the console ends it on purpose
    second.stream("10.1.2.3", 80)
    assert len(world.targets.requests) == 2
    second.ask(control.CLOSE_SESSION, reason="done")
    world.flush()
    assert len(world.audit("session_opened")) == 1
    (closed,) = world.audit("session_closed")
    assert closed.session == session_id and closed.detail["code"] == "closed_by_user"
    assert closed.detail["connections"] == 2
    assert world.audit("session_detached") == [detached]


def test_a_second_resume_counts_its_reconnects(world: World) -> None:
    opened = world.connect("alice").open("web")
    for attempt in (1, 2):
        lose_link(world, opened["session"])
        assert resume(world.connect("alice"), opened, "web")["reconnects"] == attempt
    assert row(world, opened["session"])["reconnects"] == 2


def test_a_goaway_from_the_console_ends_the_session_now(world: World) -> None:
    console = world.connect("alice")
    opened = console.open("web")
    assert console.channel.mux is not None
    console.channel.mux.go_away(ErrorCode.NO_ERROR, "bye")
    world.flush()
    (closed,) = world.audit("session_closed")
    assert closed.detail["code"] == "connection_closed"
    assert world.audit("session_detached") == []
    error = refused_resume(world.connect("alice"), opened, "web")
    assert isinstance(error, SessionGone)


def test_restarting_goaway_keeps_the_session_resumable(world: World) -> None:
    console = world.connect("alice")
    opened = console.open("web")
    channel = jumpoint_side(world, opened["session"])
    assert channel.mux is not None
    channel.mux.go_away(ErrorCode.RESTARTING, "restarting")
    world.flush()
    (detached,) = world.audit("session_detached")
    assert detached.detail["code"] == "restarting"
    assert resume(world.connect("alice"), opened, "web")["resumed"] is True


def test_a_keepalive_timeout_aborts_the_channel_and_detaches(world: World) -> None:
    console = world.connect("alice")
    opened = console.open("web")
    channel = jumpoint_side(world, opened["session"])
    aborted: list[bool] = []
    assert channel.transport is not None
    real_abort = channel.transport.abortConnection  # type: ignore[attr-defined]

    def abort() -> None:
        aborted.append(True)
        real_abort()

    channel.transport.abortConnection = abort  # type: ignore[attr-defined]
    world.clock.advance(16)  # nothing moves: the console is silent
    world.clock.advance(16)
    assert aborted  # aborted at once: no polite close on a dead link (cluster.md 2.2)
    world.flush()
    (detached,) = world.audit("session_detached")
    assert detached.detail["code"] == "keepalive_timeout"


def test_the_grace_runs_out_link_lost(world: World) -> None:
    opened = world.connect("alice").open("web")
    lose_link(world, opened["session"])
    world.clock.advance(3599)
    assert world.audit("session_closed") == []
    world.clock.advance(2)
    (closed,) = world.audit("session_closed")
    assert closed.detail["code"] == "link_lost"
    assert row(world, opened["session"])["close_reason"] == closed.detail["reason"]
    error = refused_resume(world.connect("alice"), opened, "web")
    assert isinstance(error, SessionGone)


def test_every_resume_that_cannot_be_is_session_gone_with_one_message(world: World) -> None:
    alice = world.connect("alice")
    opened = alice.open("web")
    lose_link(world, opened["session"])
    attempts = [
        refused_resume(world.connect("alice"), opened, "web", token="A" * 43),
        refused_resume(world.connect("bob"), opened, "web"),  # the right token, another user
        refused_resume(world.connect("alice"), opened, "auto"),  # another item
        refused_resume(world.connect("alice"), {**opened, "session": "0123456789abcdef"}, "web"),
    ]
    for error in attempts:
        assert isinstance(error, SessionGone) and error.code == "session_gone"
        assert error.message == SESSION_GONE_MESSAGE
    # none of them took the session: the owner still can
    assert resume(world.connect("alice"), opened, "web")["reconnects"] == 1


def test_a_closed_session_is_gone(world: World) -> None:
    console = world.connect("alice")
    opened = console.open("web")
    console.ask(control.CLOSE_SESSION, reason="done")
    error = refused_resume(world.connect("alice"), opened, "web")
    assert isinstance(error, SessionGone)


def test_a_user_revoked_while_detached_is_denied_and_the_session_closed(world: World) -> None:
    opened = world.connect("alice").open("web")
    lose_link(world, opened["session"])
    console = world.connect("alice")  # connected before the revocation is noticed
    world.core.database.revoke_user("alice")
    error = refused_resume(console, opened, "web")
    assert isinstance(error, AccessDenied) and error.rule == "users.revoked"
    (denied,) = world.audit("session_denied")
    assert denied.rule == "users.revoked" and denied.session == opened["session"]
    (closed,) = world.audit("session_closed")
    assert closed.rule == "users.revoked" and closed.detail["code"] == "denied"
    assert row(world, opened["session"])["closed_at"] is not None


def test_a_schedule_that_ended_while_detached_denies_the_resume(world: World) -> None:
    opened = world.connect("alice").open("office")  # thu 00:00-00:10 UTC, strict; now 00:00
    world.advance(60)  # keepalives flowing
    lose_link(world, opened["session"])
    world.clock.advance(700)  # 00:12:40
    error = refused_resume(world.connect("alice"), opened, "office")
    assert isinstance(error, AccessDenied) and error.rule == "jump_policies.office.schedule"
    (closed,) = world.audit("session_closed")
    assert closed.rule == "jump_policies.office.schedule"
    assert len(world.audit("session_opened")) == 1


def test_a_resume_while_the_old_channel_looks_alive_takes_it_over(world: World) -> None:
    old = world.connect("alice")
    opened = old.open("web")
    resumed = resume(world.connect("alice"), opened, "web")
    assert resumed["reconnects"] == 1
    assert outcome(old.channel.lost).code  # the old channel was dropped
    assert jumpoint_side(world, opened["session"]).session is not None
    assert len(world.audit("session_opened")) == 1
    assert world.audit("session_closed") == []


def test_the_lifetime_still_counts_from_the_first_open(world: World) -> None:
    opened = world.connect("alice").open("short")  # auto_close 5m
    world.advance(100)
    lose_link(world, opened["session"])
    world.clock.advance(100)
    resumed = resume(world.connect("alice"), opened, "short")
    assert resumed["closes_at"] == pytest.approx(opened["closes_at"])


def test_the_token_is_never_logged_or_audited(world: World, logged: list[str]) -> None:
    opened = world.connect("alice").open("web")
    token = opened["resume_token"]
    lose_link(world, opened["session"])
    refused_resume(world.connect("alice"), opened, "web", token=token[:-1] + "x")
    resume(world.connect("alice"), opened, "web")
    world.core.log_audit.flush()
    audit_rows = world.core.database.connection.execute("SELECT * FROM audit").fetchall()
    sessions = world.core.database.connection.execute("SELECT * FROM sessions").fetchall()
    assert len(audit_rows) > 4 and logged
    for text in (repr(audit_rows), repr(sessions), "\n".join(logged)):
        assert token not in text
        assert token[:-1] not in text


def test_an_admin_closes_a_detached_session(world: World) -> None:
    opened = world.connect("alice").open("web")
    lose_link(world, opened["session"])
    denied = world.connect("bob").refused(
        control.CLOSE_SESSION, session=opened["session"], reason="no"
    )
    assert isinstance(denied, AccessDenied)
    world.connect("dave").ask(control.CLOSE_SESSION, session=opened["session"], reason="audit")
    (closed,) = world.audit("session_closed")
    assert closed.detail["code"] == "closed_by_other"
    assert isinstance(refused_resume(world.connect("alice"), opened, "web"), SessionGone)
