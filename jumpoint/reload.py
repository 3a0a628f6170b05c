"""Reloading the configuration in the running daemon (SIGHUP, `jumpoint reload`).

L{Reloader} is an explicit lifecycle (L{RELOAD_TRANSITIONS}):

- C{IDLE} --requested--> C{LOADING}: systemd hears C{RELOADING=1}; the file
  is read and checked off the reactor thread by the same loader as at start
  (L{jumpoint.config.load_config});
- C{LOADING} --load_failed--> C{IDLE}: the running configuration stays; the
  error (file, line, key) is logged, audited (C{config_reload_failed}) and
  written to the status file;
- C{LOADING} --loaded--> C{CHECKING}: the new configuration (its restart-only
  keys at their running values, L{jumpoint.config_diff}) is swapped in at
  once, in one reactor turn: every session opened from now on uses it.  The
  generation counts up; the changes are logged and audited
  (C{config_reloaded}); each restart-only key that changed is logged as
  needing a restart.  Then every open session is decided again
  (L{jumpoint.reload_sessions}): those that no longer hold close with code
  C{config_changed} and the rule;
- C{CHECKING} --checked--> C{IDLE}: the outcome goes to the status file
  (L{jumpoint.reload_status}) and systemd hears C{READY=1}.

A bug in any step (C{broken}) is logged with its traceback and reported as
a failed reload; the lifecycle returns to C{IDLE}, so the next reload runs.
A reload requested while one runs is remembered (once) and starts when it ends.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from jumpoint import sd_notify
from jumpoint.config import JumpointConfig
from jumpoint.config_diff import ConfigDiff, diff, effective
from jumpoint.reload_sessions import SessionRechecker
from jumpoint.reload_status import ReloadStatus
from jumpoint.server import JumpointCore
from shared.errors import JumpError
from shared.lifecycle import Transitions

log = Logger()

Load = Callable[[Path], "Deferred[JumpointConfig]"]
"""Reads and checks the configuration file (off the reactor thread in the daemon)."""


class ReloadState(enum.Enum):
    IDLE = "idle"
    LOADING = "loading"
    CHECKING = "checking"


class ReloadEvent(enum.Enum):
    REQUESTED = "requested"
    LOAD_FAILED = "load_failed"
    LOADED = "loaded"
    CHECKED = "checked"
    BROKEN = "broken"
    """A bug in the reload itself: logged, reported as failed, and the next reload may run."""


RELOAD_TRANSITIONS = Transitions(
    "reload",
    ReloadState,
    ReloadEvent,
    {
        ReloadState.IDLE: {ReloadEvent.REQUESTED: ReloadState.LOADING},
        ReloadState.LOADING: {
            ReloadEvent.LOAD_FAILED: ReloadState.IDLE,
            ReloadEvent.LOADED: ReloadState.CHECKING,
            ReloadEvent.BROKEN: ReloadState.IDLE,
        },
        ReloadState.CHECKING: {
            ReloadEvent.CHECKED: ReloadState.IDLE,
            ReloadEvent.BROKEN: ReloadState.IDLE,
        },
    },
)


class ServiceManager(Protocol):
    """Who hears of reloads: systemd (L{jumpoint.sd_notify}) in the daemon."""

    def reloading(self) -> object: ...

    def ready(self, status: str) -> object: ...


class Systemd:
    """L{ServiceManager} over C{$NOTIFY_SOCKET} (nothing is sent without it)."""

    def reloading(self) -> bool:
        return sd_notify.reloading()

    def ready(self, status: str) -> bool:
        return sd_notify.ready(status)


def serving_status(config: JumpointConfig, generation: int) -> str:
    return (
        f"serving {config.listen_host}:{config.listen_port}, configuration generation"
        f" {generation}, {len(config.items)} items"
    )


class Reloader:
    """The reload lifecycle of one daemon (see the module docstring)."""

    def __init__(
        self,
        core: JumpointCore,
        load: Load,
        status_file: Path | None = None,
        manager: ServiceManager | None = None,
        pid: int = 0,
        platform: str | None = None,
    ) -> None:
        self.core = core
        self.load = load
        self.status_file = status_file
        self.manager = manager
        self.pid = pid
        self.lifecycle = RELOAD_TRANSITIONS.start(ReloadState.IDLE)
        self.sessions = SessionRechecker(core, platform)
        core.recheck_session = self.sessions.recheck_late
        self.generation = 1
        self.attempt = 0
        self.again = False
        self.last: ReloadStatus = ReloadStatus(
            pid=pid, config=str(core.config.path), generation=1, summary="started"
        )

    def announce(self) -> None:
        """The daemon serves and handles SIGHUP: write the status file, tell systemd READY=1."""
        self._write(self.last)
        if self.manager is not None:
            self.manager.ready(serving_status(self.core.config, self.generation))

    @property
    def state(self) -> ReloadState:
        return self.lifecycle.state

    def request(self, source: str = "SIGHUP") -> None:
        """Start a reload (from the reactor: the SIGHUP handler calls this via callFromThread)."""
        if not self.lifecycle.allows(ReloadEvent.REQUESTED):
            self.again = True
            log.info("{source}: a reload is running; another one follows it", source=source)
            return
        self.lifecycle.fire(ReloadEvent.REQUESTED)
        self.attempt += 1
        path = self.core.config.path
        log.info("{source}: reloading the configuration from {path}", source=source, path=path)
        if self.manager is not None:
            self.manager.reloading()
        try:
            loading = self.load(path)
        except Exception:  # a loader that fails at once fails like one that fails later
            self._failed(Failure())
            return
        loading.addCallbacks(self._loaded, self._failed).addErrback(self._broken)

    # -- outcomes ----------------------------------------------------------

    def _failed(self, failure: Failure) -> None:
        self.lifecycle.fire(ReloadEvent.LOAD_FAILED)
        error = failure.value
        if isinstance(error, JumpError):
            message = error.message
        else:
            log.failure("reading the configuration failed", failure)
            message = f"{self.core.config.path}: cannot read it: {failure.getErrorMessage()}"
        log.error(
            "configuration reload failed; generation {generation} stays in force: {error}",
            generation=self.generation,
            error=message,
        )
        self.core.log_audit.record(
            "config_reload_failed",
            file=str(self.core.config.path),
            generation=self.generation,
            error=message,
        )
        self._finish(ok=False, error=message)

    def _loaded(self, loaded: JumpointConfig) -> Deferred[None]:
        self.lifecycle.fire(ReloadEvent.LOADED)
        old = self.core.config
        changes = diff(old, loaded)
        self.core.apply_config(effective(old, loaded))
        self.generation += 1
        log.info(
            "configuration reloaded: generation {generation}: {summary}",
            generation=self.generation,
            summary=changes.summary(),
        )
        for key in changes.restart_needed:
            log.warn(
                "{key} changed in {path}: it needs a restart; the running value is kept",
                key=key,
                path=old.path,
            )
        self.core.log_audit.record(
            "config_reloaded",
            file=str(old.path),
            generation=self.generation,
            summary=changes.summary(),
            changes=changes.to_json(),
            restart_needed=list(changes.restart_needed),
        )
        checked = self.sessions.recheck_all(old, self.generation)

        def done(closed: int) -> None:
            self.lifecycle.fire(ReloadEvent.CHECKED)
            self._finish(ok=True, changes=changes, closed=closed)

        def broken(failure: Failure) -> None:
            log.failure("re-checking the open sessions failed", failure)
            done(0)

        return checked.addCallbacks(done, broken)

    def _broken(self, failure: Failure) -> None:
        log.failure("the reload failed", failure)
        self.lifecycle.fire(ReloadEvent.BROKEN)
        self._finish(ok=False, error=f"internal error: {failure.getErrorMessage()}")

    def _finish(
        self,
        ok: bool,
        error: str | None = None,
        changes: ConfigDiff | None = None,
        closed: int = 0,
    ) -> None:
        config = self.core.config
        self.last = ReloadStatus(
            pid=self.pid,
            config=str(config.path),
            generation=self.generation,
            attempt=self.attempt,
            ok=ok,
            error=error,
            summary=changes.summary() if changes is not None else "",
            restart_needed=changes.restart_needed if changes is not None else (),
            closed_sessions=closed,
            changes=changes.to_json() if changes is not None else {},
        )
        self._write(self.last)
        if self.manager is not None:
            status = serving_status(config, self.generation)
            self.manager.ready(status if ok else f"{status}; the last reload failed: {error}")
        if self.again:
            self.again = False
            self.request("a reload requested meanwhile")

    def _write(self, status: ReloadStatus) -> None:
        if self.status_file is None:
            return
        try:
            status.write(self.status_file)
        except OSError as error:
            log.warn("cannot write {path}: {error}", path=self.status_file, error=error)
