"""console.reconnect_attempt and the profile's addresses: the order members are dialled in,
the welcome's members stored in the profile, and what a resume answer means.

Channels and the session are small fakes (the resume is a sequence of control
requests); the profile is a real one in a temporary directory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from twisted.internet.defer import CancelledError, Deferred, fail, succeed

from console.profiles import Profile, checked_addresses, load_profile
from console.reconnect import Final
from console.reconnect_attempt import SessionResumer, resume_token
from shared.errors import AccessDenied, JumpError, JumpointUnreachable, SessionGone, SessionLost
from shared.protocol import control

TOKEN = "A" * 43


def write_profile(home: Path, **extra: Any) -> Profile:
    directory = home / "profiles" / "lab"
    directory.mkdir(parents=True)
    document = {
        "jumpoint": "lab",
        "host": "10.0.0.1",
        "port": 7443,
        "server_name": "jumpoint.lab",
        "user": "alice",
        **extra,
    }
    (directory / "profile.yaml").write_text(yaml.safe_dump(document))
    os.chmod(directory / "profile.yaml", 0o600)
    return load_profile("lab", home)


class FakeChannel:
    def __init__(self, address: str, answers: dict[str, Any], members: Any = None) -> None:
        self.address = address
        self.welcome_message = {"members": members} if members is not None else {}
        self.answers = answers
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.aborted = False

    def request(self, kind: str, **fields: Any) -> Deferred[dict[str, Any]]:
        self.sent.append((kind, fields))
        answer = self.answers.get(kind, {})
        return fail(answer) if isinstance(answer, BaseException) else succeed(answer)

    def _abort(self) -> None:
        self.aborted = True


class FakeSession:
    def __init__(self, channel: FakeChannel) -> None:
        self.channel = channel
        self.session_id = "c2edb885bfa110b4"
        self.result = {"session": self.session_id, "resume_token": TOKEN}

    def attach(self, channel: FakeChannel) -> None:
        self.channel = channel

    def bindings(self) -> list[dict[str, Any]]:
        return [{"local_address": "127.0.0.5", "local_port": 8080}]


def resumer(
    profile: Profile, dial: dict[str, FakeChannel | JumpError], last_good: str = "10.0.0.1:7443"
) -> tuple[SessionResumer, FakeSession, list[str]]:
    dialled: list[str] = []

    def connect_to(profile: Profile, member: tuple[str, int], timeout: float) -> Deferred[Any]:
        text = f"{member[0]}:{member[1]}"
        dialled.append(text)
        outcome = dial[text]
        return fail(outcome) if isinstance(outcome, JumpError) else succeed(outcome)

    session = FakeSession(FakeChannel(last_good, {}))
    session.channel.mux = None  # type: ignore[attr-defined]
    watched: list[Any] = []
    made = SessionResumer(
        None,
        profile,
        session,
        {"item": "web"},
        watched.append,
        connect_to,  # type: ignore[arg-type]
    )
    return made, session, dialled


def result_of(deferred: Deferred[Any]) -> Any:
    outcome: list[Any] = []
    deferred.addBoth(outcome.append)
    (value,) = outcome
    return value


RESUMED = {control.OPEN_SESSION: {"session": "c2edb885bfa110b4", "resumed": True, "reconnects": 1}}


def test_an_old_profile_dials_its_single_address(tmp_path: Path) -> None:
    profile = write_profile(tmp_path)
    assert profile.dial_list() == [("10.0.0.1", 7443)]


def test_the_last_good_member_first_then_the_next_ones_in_order(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, addresses=["10.0.0.1:7443", "10.0.0.2:7443", "10.0.0.3:7443"])
    down = JumpointUnreachable("refused")
    made, session, dialled = resumer(
        profile,
        {
            "10.0.0.2:7443": down,
            "10.0.0.3:7443": down,
            "10.0.0.1:7443": FakeChannel("10.0.0.1:7443", RESUMED),
        },
        last_good="10.0.0.2:7443",
    )
    assert result_of(made.attempt(1)) == "10.0.0.1:7443"
    assert dialled == ["10.0.0.2:7443", "10.0.0.3:7443", "10.0.0.1:7443"]
    assert made.last_good == "10.0.0.1:7443" and session.channel.address == "10.0.0.1:7443"


def test_a_resume_sends_the_token_and_the_bindings_again(tmp_path: Path) -> None:
    profile = write_profile(tmp_path)
    channel = FakeChannel("10.0.0.1:7443", RESUMED)
    made, session, _ = resumer(profile, {"10.0.0.1:7443": channel})
    assert result_of(made.attempt(1)) == "10.0.0.1:7443"
    (kind, fields), (bound, bindings) = channel.sent
    assert kind == control.OPEN_SESSION and fields["item"] == "web"
    assert fields["resume"] == {"session": "c2edb885bfa110b4", "token": TOKEN}
    assert bound == control.TUNNELS_BOUND and bindings["tunnels"] == session.bindings()


def test_every_member_down_fails_the_attempt_with_the_last_reason(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, addresses=["10.0.0.1:7443", "10.0.0.2:7443"])
    made, _, _ = resumer(
        profile,
        {"10.0.0.1:7443": JumpointUnreachable("one"), "10.0.0.2:7443": JumpointUnreachable("two")},
    )
    failure = result_of(made.attempt(1))
    assert isinstance(failure.value, JumpointUnreachable) and failure.value.message == "two"


@pytest.mark.parametrize(
    "answer", [AccessDenied("revoked", rule="revoked"), SessionGone("the session is gone")]
)
def test_a_decision_at_resume_is_final(tmp_path: Path, answer: JumpError) -> None:
    profile = write_profile(tmp_path)
    channel = FakeChannel("10.0.0.1:7443", {control.OPEN_SESSION: answer})
    made, session, _ = resumer(profile, {"10.0.0.1:7443": channel})
    failure = result_of(made.attempt(1))
    assert isinstance(failure.value, Final) and failure.value.error is answer
    assert channel.aborted and session.channel is not channel


def test_a_channel_lost_during_the_resume_is_worth_another_attempt(tmp_path: Path) -> None:
    profile = write_profile(tmp_path)
    channel = FakeChannel("10.0.0.1:7443", {control.OPEN_SESSION: SessionLost("lost again")})
    made, _, _ = resumer(profile, {"10.0.0.1:7443": channel})
    failure = result_of(made.attempt(1))
    assert isinstance(failure.value, SessionLost) and not isinstance(failure.value, Final)


def test_a_new_session_instead_of_a_resume_is_closed_and_final(tmp_path: Path) -> None:
    profile = write_profile(tmp_path)
    channel = FakeChannel("10.0.0.1:7443", {control.OPEN_SESSION: {"session": "other"}})
    made, _, _ = resumer(profile, {"10.0.0.1:7443": channel})
    failure = result_of(made.attempt(1))
    assert isinstance(failure.value, Final) and isinstance(failure.value.error, SessionGone)
    assert [kind for kind, _ in channel.sent] == [control.OPEN_SESSION, control.CLOSE_SESSION]


def test_the_welcome_members_replace_the_profile_addresses_atomically(tmp_path: Path) -> None:
    profile = write_profile(tmp_path)
    members = ["10.0.0.2:7443", "10.0.0.3:7443"]
    channel = FakeChannel("10.0.0.1:7443", RESUMED, members=members)
    made, _, _ = resumer(profile, {"10.0.0.1:7443": channel})
    result_of(made.attempt(1))
    stored = load_profile("lab", tmp_path)
    assert stored.addresses == tuple(members) and stored.address == "10.0.0.2:7443"
    assert stored.server_name == "jumpoint.lab"  # one name for every member
    mode = stat.S_IMODE((profile.directory / "profile.yaml").stat().st_mode)
    assert mode == 0o600
    assert not (profile.directory / "profile.yaml.tmp").exists()


@pytest.mark.parametrize("members", [[], "10.0.0.2:7443", ["no-port"], [7443], None])
def test_malformed_or_empty_members_change_nothing(tmp_path: Path, members: Any) -> None:
    profile = write_profile(tmp_path)
    channel = FakeChannel("10.0.0.1:7443", RESUMED, members=members)
    made, _, _ = resumer(profile, {"10.0.0.1:7443": channel})
    result_of(made.attempt(1))
    assert load_profile("lab", tmp_path).dial_list() == [("10.0.0.1", 7443)]


def test_a_damaged_addresses_list_is_a_profile_error(tmp_path: Path) -> None:
    with pytest.raises(JumpError, match="damaged"):
        write_profile(tmp_path, addresses=["nonsense"])


def test_addresses_are_checked_deduplicated_and_bounded() -> None:
    assert checked_addresses(["a:1", "a:1", "[::1]:2"]) == ("a:1", "[::1]:2")
    assert checked_addresses([f"h{i}:1" for i in range(100)]) is not None
    assert len(checked_addresses([f"h{i}:1" for i in range(100)]) or ()) == 32


def test_resume_token_is_read_only_when_it_is_a_sane_string() -> None:
    assert resume_token({"resume_token": TOKEN}) == TOKEN
    assert resume_token({}) is None
    assert resume_token({"resume_token": 5}) is None


def test_a_cancelled_attempt_dials_no_further_member(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, addresses=["10.0.0.1:7443", "10.0.0.2:7443"])
    dialled: list[str] = []
    pending: list[Deferred[Any]] = []

    def connect_to(profile: Profile, member: tuple[str, int], timeout: float) -> Deferred[Any]:
        dialled.append(f"{member[0]}:{member[1]}")
        pending.append(Deferred())
        return pending[-1]

    session = FakeSession(FakeChannel("10.0.0.1:7443", {}))
    session.channel.mux = None  # type: ignore[attr-defined]
    made = SessionResumer(None, profile, session, {}, lambda c: None, connect_to)  # type: ignore[arg-type]
    attempt = made.attempt(1)
    attempt.cancel()
    outcome = result_of(attempt)
    assert outcome.check(CancelledError)
    if pending and not pending[0].called:
        pending[0].errback(JumpointUnreachable("timed out"))
    assert dialled == ["10.0.0.1:7443"]
