"""The reload lifecycle (L{jumpoint.reload.Reloader}) on a real core and real consoles.

The consoles and the Jumpoint are those of L{tests.unit.test_session_rules}
(in-memory TLS, a fake clock); the loader is a Deferred the test fires, so
every state of the lifecycle can be looked at.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred

from jumpoint.config import JumpointConfig, parse_config
from jumpoint.reload import RELOAD_TRANSITIONS, Reloader, ReloadEvent, ReloadState
from jumpoint.reload_status import ReloadStatus
from shared.errors import ConfigError
from shared.lifecycle import IllegalTransition
from tests.unit.test_session_rules import CONFIG, Keys, World, make_world
from tests.unit.test_session_rules import keys as keys


class Manager:
    def __init__(self) -> None:
        self.heard: list[str] = []

    def reloading(self) -> None:
        self.heard.append("RELOADING")

    def ready(self, status: str) -> None:
        self.heard.append(f"READY {status}")


class Loads:
    """The loader: each call is a Deferred the test fires with a text or an error."""

    def __init__(self) -> None:
        self.pending: list[tuple[Path, Deferred[JumpointConfig]]] = []

    def __call__(self, path: Path) -> Deferred[JumpointConfig]:
        loading: Deferred[JumpointConfig] = Deferred()
        self.pending.append((path, loading))
        return loading

    def give(self, text: str) -> None:
        path, loading = self.pending.pop(0)
        try:
            loading.callback(parse_config(text, path))
        except ConfigError as error:
            loading.errback(error)


@pytest.fixture
def world(tmp_path: Path, keys: Keys) -> Iterator[World]:
    built = make_world(tmp_path, keys)
    yield built
    built.core.database.close()


def reloader(world: World, loads: Loads, manager: Manager) -> Reloader:
    made = Reloader(world.core, loads, world.tmp_path / "state.db.reload", manager, pid=1234)
    made.announce()
    return made


def test_a_reload_adding_an_item_keeps_the_open_session(world: World) -> None:
    loads, manager = Loads(), Manager()
    reload = reloader(world, loads, manager)
    alice = world.connect("alice")
    alice.open("web")
    reload.request()
    assert reload.state is ReloadState.LOADING and manager.heard[-1] == "RELOADING"
    added = "  - {name: new, type: tcp, host: 10.1.2.99, tunnels: [{local_port: auto, remote_port: 22}]}\n"
    loads.give(CONFIG + added)
    world.flush()
    assert reload.state is ReloadState.IDLE and reload.generation == 2
    assert alice.closed_code() is None
    assert world.core.catalog.get("new") is not None
    bob = world.connect("bob")
    assert bob.open("new")["item"]["name"] == "new"
    status = ReloadStatus.read(world.tmp_path / "state.db.reload")
    assert status is not None and status.ok and status.attempt == 1 and status.generation == 2
    assert status.summary == "items +new"
    assert stat.S_IMODE((world.tmp_path / "state.db.reload").stat().st_mode) == 0o600
    assert manager.heard[-1].startswith("READY ") and "generation 2" in manager.heard[-1]
    [row] = world.audit("config_reloaded")
    assert row.detail["generation"] == 2 and row.detail["changes"]["items"]["added"] == ["new"]


def test_a_session_whose_terms_narrowed_closes_with_config_changed_and_the_rule(
    world: World,
) -> None:
    loads, manager = Loads(), Manager()
    reload = reloader(world, loads, manager)
    alice = world.connect("alice")
    opened = alice.open("idle")
    bob = world.connect("bob")
    bob.open("web")
    reload.request()
    loads.give(CONFIG.replace("idle: {idle_timeout: 60s}", "idle: {idle_timeout: 30s}"))
    world.flush()
    assert alice.closed_code() == "config_changed"
    assert "rule: session_policies.idle.idle_timeout" in alice.closed_text()
    assert bob.closed_code() is None
    [row] = world.audit("session_closed")
    assert row.session == opened["session"] and row.rule == "session_policies.idle.idle_timeout"
    assert row.detail["code"] == "config_changed"
    status = ReloadStatus.read(world.tmp_path / "state.db.reload")
    assert status is not None and status.closed_sessions == 1


def test_a_broken_file_keeps_the_running_configuration(world: World) -> None:
    loads, manager = Loads(), Manager()
    reload = reloader(world, loads, manager)
    running = world.core.config
    alice = world.connect("alice")
    alice.open("web")
    reload.request()
    loads.give(CONFIG + "bogus: 1\n")
    world.flush()
    assert reload.state is ReloadState.IDLE and reload.generation == 1
    assert world.core.config is running and alice.closed_code() is None
    status = ReloadStatus.read(world.tmp_path / "state.db.reload")
    assert status is not None and not status.ok and status.attempt == 1
    assert status.error is not None and "jumpoint.yaml:" in status.error and "bogus" in status.error
    assert "the last reload failed" in manager.heard[-1]
    [row] = world.audit("config_reload_failed")
    assert row.detail["generation"] == 1 and "bogus" in row.detail["error"]


def test_a_reload_requested_while_one_runs_follows_it_once(world: World) -> None:
    loads, manager = Loads(), Manager()
    reload = reloader(world, loads, manager)
    reload.request()
    reload.request()
    reload.request()
    assert len(loads.pending) == 1 and reload.again
    loads.give(CONFIG)
    assert reload.state is ReloadState.LOADING and len(loads.pending) == 1
    loads.give(CONFIG)
    assert reload.state is ReloadState.IDLE and reload.attempt == 2 and reload.generation == 3
    assert manager.heard.count("RELOADING") == 2


def test_a_loader_that_fails_at_once_is_a_failed_reload(world: World) -> None:
    def broken(path: Path) -> Deferred[JumpointConfig]:
        raise OSError("disk on fire")

    reload = Reloader(world.core, broken, None, Manager())
    reload.request()
    assert reload.state is ReloadState.IDLE and reload.last.ok is False
    assert reload.last.error is not None and "disk on fire" in reload.last.error


def test_a_bug_while_applying_is_reported_and_the_next_reload_runs(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads, manager = Loads(), Manager()
    reload = reloader(world, loads, manager)

    def broken(old: object, new: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("jumpoint.reload.diff", broken)
    reload.request()
    loads.give(CONFIG)
    assert reload.state is ReloadState.IDLE and reload.last.ok is False
    assert reload.last.error == "internal error: a bug"
    monkeypatch.undo()
    reload.request()
    loads.give(CONFIG)
    assert reload.last.ok and reload.generation == 2


def test_the_transition_table_allows_only_the_designed_moves() -> None:
    allowed = {
        (ReloadState.IDLE, ReloadEvent.REQUESTED): ReloadState.LOADING,
        (ReloadState.LOADING, ReloadEvent.LOAD_FAILED): ReloadState.IDLE,
        (ReloadState.LOADING, ReloadEvent.LOADED): ReloadState.CHECKING,
        (ReloadState.CHECKING, ReloadEvent.CHECKED): ReloadState.IDLE,
        (ReloadState.LOADING, ReloadEvent.BROKEN): ReloadState.IDLE,
        (ReloadState.CHECKING, ReloadEvent.BROKEN): ReloadState.IDLE,
    }
    for state in ReloadState:
        for event in ReloadEvent:
            lifecycle = RELOAD_TRANSITIONS.start(state)
            if (state, event) in allowed:
                assert lifecycle.fire(event) is allowed[state, event]
            else:
                with pytest.raises(IllegalTransition):
                    lifecycle.fire(event)


def test_a_session_decided_before_a_reload_and_set_up_after_it_is_decided_again(
    tmp_path: Path,
    keys: Keys,
) -> None:
    lookups: list[Deferred[list[str]]] = []

    def resolve(host: str) -> Deferred[list[str]]:
        lookups.append(Deferred())
        return lookups[-1]

    world = make_world(tmp_path, keys, resolve=resolve)
    try:
        loads = Loads()
        reload = reloader(world, loads, Manager())
        alice = world.connect("alice")
        opening = alice.send("open_session", item="idle")
        assert len(lookups) == 1  # decided under generation 1, waiting for its lookup
        reload.request()
        loads.give(CONFIG.replace("idle: {idle_timeout: 60s}", "idle: {idle_timeout: 30s}"))
        assert reload.generation == 2
        lookups[0].callback(["10.1.2.4"])
        world.flush()
        assert alice.closed_code() == "config_changed"
        assert "session_policies.idle.idle_timeout" in alice.closed_text()
        opening.addErrback(lambda failure: None)  # the channel closed with the session
    finally:
        world.core.database.close()
