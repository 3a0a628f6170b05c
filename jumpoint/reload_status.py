"""How `jumpoint reload` reaches the daemon: SIGHUP to the lock's holder, the outcome in a file.

The daemon keeps a small status file next to its instance lock
(C{state.db.lock} → C{state.db.reload}, mode 0600, replaced atomically): its
pid, its configuration file, the reload generation running, and the outcome
of the last attempt (C{attempt} counts them).  L{request_reload} (the
command) reads the attempt count, sends SIGHUP to the pid of the lock file
(the same handler as a plain C{kill -HUP}) and polls the file until a later
attempt is written: the outcome of a reload that started after its signal.
Unix only (the Windows service has no reload).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jumpoint.config import config_file, load_config
from jumpoint.instance_lock import lock_path
from shared.errors import ConfigError, JumpError, JumpointUnreachable, UsageError
from shared.files import write_private

MAX_STATUS_BYTES = 64 * 1024
RELOAD_WAIT = 60.0
"""Seconds `jumpoint reload` waits for the daemon's outcome by default."""


class ReloadTimedOut(JumpError):
    code = "reload_timed_out"


def status_path(state_database: Path) -> Path:
    lock = lock_path(state_database)
    return lock.with_name(lock.name.removesuffix(".lock") + ".reload")


@dataclass(frozen=True)
class ReloadStatus:
    """The daemon's record of its configuration and its last reload."""

    pid: int
    config: str
    generation: int
    attempt: int = 0
    ok: bool = True
    error: str | None = None
    summary: str = ""
    restart_needed: tuple[str, ...] = ()
    closed_sessions: int = 0
    changes: dict[str, Any] = field(default_factory=dict)

    def write(self, path: Path) -> None:
        write_private(path, json.dumps(asdict(self), sort_keys=True).encode() + b"\n")

    @classmethod
    def read(cls, path: Path) -> ReloadStatus | None:
        try:
            with path.open("rb") as handle:
                data = json.loads(handle.read(MAX_STATUS_BYTES))
            data["restart_needed"] = tuple(data.get("restart_needed") or ())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None


def locate(path: str | None) -> tuple[Path, Path, ConfigError | None]:
    """The configuration file, the state database its Jumpoint runs on, and the file's error.

    An invalid file still names its state database when its YAML can be read
    (else C{state.db} beside it, the default), so that the running daemon is
    asked anyway: it logs the error and keeps its configuration.
    """
    config_path = config_file(path)
    try:
        return config_path, load_config(config_path).state_database, None
    except ConfigError as error:
        problem = error
    named = "state.db"
    try:
        document = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        if isinstance(document, dict):
            state = document.get("state")
            for value in (
                state.get("path") if isinstance(state, dict) else None,
                document.get("state_database"),
            ):
                if isinstance(value, str) and value:
                    named = value
                    break
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        pass
    candidate = Path(os.path.expanduser(named))
    return (
        config_path,
        candidate if candidate.is_absolute() else config_path.parent / candidate,
        problem,
    )


def _holder_pid(state_database: Path) -> int | None:
    try:
        text = lock_path(state_database).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def request_reload(
    config_path: Path,
    state_database: Path,
    wait: float = RELOAD_WAIT,
    poll: Callable[[], None] = lambda: time.sleep(0.05),
) -> ReloadStatus:
    """Ask the daemon running on C{state_database} to reload; its outcome (synchronous)."""
    if sys.platform == "win32":
        raise UsageError(
            "the Windows service cannot reload its configuration",
            hint="restart the service: python -m jumpoint.windows_service restart",
        )
    path = status_path(state_database)
    before = ReloadStatus.read(path)
    pid = _holder_pid(state_database)
    if pid is None or before is None or before.pid != pid or not _alive(pid):
        raise JumpointUnreachable(
            f"no Jumpoint is running on the state database {state_database}",
            hint="start it with `jumpoint serve`; a stopped Jumpoint reads its file when it starts",
        )
    if os.path.realpath(before.config) != os.path.realpath(config_path):
        raise UsageError(
            f"the Jumpoint running on {state_database} (process {pid}) was started with"
            f" {before.config}, not {config_path}",
            hint=f"edit {before.config} and run `jumpoint reload --config {before.config}`",
        )
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + wait
    while True:
        now = ReloadStatus.read(path)
        if now is not None and now.pid == pid and now.attempt > before.attempt:
            return now
        if time.monotonic() > deadline:
            raise ReloadTimedOut(
                f"the Jumpoint (process {pid}) did not report a reload within {wait:g}s",
                hint="see its log; a reload may still be running",
            )
        poll()


def outcome_lines(status: ReloadStatus) -> list[str]:
    """What `jumpoint reload` prints for a successful reload."""
    lines = [f"{status.config}: reloaded: generation {status.generation}: {status.summary}"]
    if status.restart_needed:
        lines.append(
            f"needs a restart (the running values are kept): {', '.join(status.restart_needed)}"
        )
    if status.closed_sessions:
        lines.append(
            f"closed {status.closed_sessions} open sessions whose terms no longer hold"
            " (code config_changed)"
        )
    return lines


def failed(status: ReloadStatus) -> ConfigError:
    """The error `jumpoint reload` exits with when the daemon refused the file."""
    return ConfigError(
        status.error or f"{status.config}: the reload failed",
        hint=f"the Jumpoint keeps serving generation {status.generation} of its configuration",
    )
