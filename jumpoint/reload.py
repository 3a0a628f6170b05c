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
  (L{jumpoint.session_recheck}; the allow-list of an item's host after it,
  which needs DNS): those that no longer hold close with code
  C{config_changed} and the rule;
- C{CHECKING} --checked--> C{IDLE}: the outcome goes to the status file
  (L{jumpoint.reload_status}) and systemd hears C{READY=1}.

A reload requested while one runs is remembered (once) and starts when it ends.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.failure import Failure

from jumpoint import sd_notify
from jumpoint.config import JumpointConfig
from jumpoint.config_diff import ConfigDiff, diff, effective
from jumpoint.dialing import check_item_targets
from jumpoint.reload_status import ReloadStatus
from jumpoint.server import JumpointChannel, JumpointCore
from jumpoint.session_recheck import Closing, OpenSession, recheck
from shared.errors import AccessDenied, JumpError
from shared.lifecycle import Transitions
from shared.protocol.frames import ErrorCode

log = Logger()

CLOSE_CODE = "config_changed"

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


RELOAD_TRANSITIONS = Transitions(
    "reload",
    ReloadState,
    ReloadEvent,
    {
        ReloadState.IDLE: {ReloadEvent.REQUESTED: ReloadState.LOADING},
        ReloadState.LOADING: {
            ReloadEvent.LOAD_FAILED: ReloadState.IDLE,
            ReloadEvent.LOADED: ReloadState.CHECKING,
        },
        ReloadState.CHECKING: {ReloadEvent.CHECKED: ReloadState.IDLE},
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
        self.platform = platform
        self.lifecycle = RELOAD_TRANSITIONS.start(ReloadState.IDLE)
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
        loading.addCallbacks(self._loaded, self._failed)

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
        checked = self._recheck_sessions(old)

        def done(closed: int) -> None:
            self.lifecycle.fire(ReloadEvent.CHECKED)
            self._finish(ok=True, changes=changes, closed=closed)

        def broken(failure: Failure) -> None:
            log.failure("re-checking the open sessions failed", failure)
            done(0)

        return checked.addCallbacks(done, broken)

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

    # -- open sessions -----------------------------------------------------

    def _recheck_sessions(self, old: JumpointConfig) -> Deferred[int]:
        """Close the sessions the new configuration no longer allows; how many closed."""
        core = self.core
        now = core.clock.seconds()
        closed = 0
        survivors: list[JumpointChannel] = []
        for channel in list(core.channels):
            session, user = channel.session, channel.user
            if session is None or user is None or session.terms is None:
                continue
            if session.request is None:
                continue
            opened = OpenSession(
                user=user.name,
                groups=tuple(user.all_groups),
                item=session.item,
                request=session.request,
                terms=session.terms,
                bound_ports=session.bound_ports,
            )
            verdict = recheck(old, core.config, opened, now, core.approvals, self.platform)
            if verdict is not None:
                self._close(channel, verdict)
                closed += 1
            elif session.item.host:
                survivors.append(channel)
        if old.allowed_targets == core.config.allowed_targets or not survivors:
            done: Deferred[int] = Deferred()
            done.callback(closed)
            return done
        checks = [self._check_targets(channel) for channel in survivors]
        return DeferredList(checks, consumeErrors=True).addCallback(
            lambda results: closed + sum(1 for ok, value in results if ok and value)
        )

    def _check_targets(self, channel: JumpointChannel) -> Deferred[bool]:
        """The allow-list check of the session's item (DNS); whether it closed the session."""
        session = channel.session
        assert session is not None

        async def check() -> bool:
            try:
                await check_item_targets(self.core, session.item)
            except AccessDenied as denial:
                if channel.session is not session:
                    return False  # it ended meanwhile
                self._close(channel, Closing(denial.rule or "allowed_targets", denial.message))
                return True
            return False

        return Deferred.fromCoroutine(check())

    def _close(self, channel: JumpointChannel, verdict: Closing) -> None:
        session = channel.session
        assert session is not None
        reason = f"the configuration changed: {verdict.reason}"
        if f"(rule: {verdict.rule})" not in reason:
            reason = f"{reason} (rule: {verdict.rule})"
        log.info(
            "session {session} of user {user} on item {item}: closing at reload"
            " generation {generation}: {reason}",
            session=session.session_id,
            user=session.user,
            item=session.item.name,
            generation=self.generation,
            reason=reason,
        )
        channel.close_session(CLOSE_CODE, reason, ErrorCode.SESSION_CLOSED, verdict.rule)
