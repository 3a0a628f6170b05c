"""How `jumpoint reload` finds the daemon and reads its outcome (L{jumpoint.reload_status})."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from jumpoint.reload_status import (
    ReloadStatus,
    failed,
    locate,
    outcome_lines,
    request_reload,
    status_path,
)
from shared.errors import ConfigError, JumpointUnreachable, UsageError


def test_the_status_file_sits_next_to_the_lock_mode_0600_and_reads_back(tmp_path: Path) -> None:
    path = status_path(tmp_path / "state.db")
    assert path == tmp_path / "state.db.reload"
    written = ReloadStatus(
        pid=7, config="/etc/j.yaml", generation=3, attempt=2, restart_needed=("jumpoint.listen",)
    )
    written.write(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ReloadStatus.read(path) == written
    path.write_text("{not json")
    assert ReloadStatus.read(path) is None


def test_an_invalid_file_still_names_its_state_database(tmp_path: Path) -> None:
    config = tmp_path / "jumpoint.yaml"
    config.write_text("state_database: data/other.db\nlimits: {keepalive_interval: lots}\n")
    path, database, problem = locate(str(config))
    assert path == config and database == tmp_path / "data" / "other.db"
    assert isinstance(problem, ConfigError)
    config.write_text("state: {backend: sqlite, path: /srv/j/state.db}\nbogus: 1\n")
    assert locate(str(config))[1] == Path("/srv/j/state.db")
    config.write_text("jumpoint: [unclosed\n")
    assert locate(str(config))[1] == tmp_path / "state.db"  # the default


def test_no_daemon_running_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(JumpointUnreachable):
        request_reload(tmp_path / "jumpoint.yaml", tmp_path / "state.db", wait=1)


def test_a_daemon_started_with_another_file_is_not_reloaded_with_this_one(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    (tmp_path / "state.db.lock").write_text(f"{os.getpid()}\n")
    ReloadStatus(pid=os.getpid(), config=str(tmp_path / "a.yaml"), generation=1).write(
        status_path(database)
    )
    with pytest.raises(UsageError, match="was started with"):
        request_reload(tmp_path / "b.yaml", database, wait=1)


def test_the_outcome_is_printed_and_a_failure_is_a_config_error() -> None:
    done = ReloadStatus(
        pid=1,
        config="/etc/j.yaml",
        generation=4,
        summary="items +db",
        restart_needed=("tls.server_key",),
        closed_sessions=2,
    )
    lines = outcome_lines(done)
    assert lines[0] == "/etc/j.yaml: reloaded: generation 4: items +db"
    assert "tls.server_key" in lines[1] and "closed 2" in lines[2]
    error = failed(
        ReloadStatus(pid=1, config="/etc/j.yaml", generation=4, ok=False, error="x:3: k: bad")
    )
    assert error.message == "x:3: k: bad" and error.exit_code == 3
