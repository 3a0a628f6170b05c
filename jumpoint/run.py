"""The foreground launcher behind `jumpoint serve` (and the systemd unit).

Starts logging, builds the service with L{makeService}, starts it (a listen
error is reported before the reactor runs) and runs the reactor until SIGINT
or SIGTERM, when the service stops cleanly: sessions are told the Jumpoint is
shutting down, then connections close.

SIGHUP reloads the configuration (L{jumpoint.reload}); its handler, set
once the reactor runs (after Twisted's own), only schedules the reload on the
reactor.  Under systemd (C{Type=notify}) the daemon says C{READY=1} once it
serves and handles SIGHUP, C{RELOADING=1}/C{READY=1} around each reload and
C{STOPPING=1} when it starts to stop (L{jumpoint.sd_notify}).

The daemon never dies silently on a signal: SIGINT and SIGTERM log a stop
line naming the signal; every other signal that would end the process and
that Python can catch (SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, ...) is logged
and ignored; and a fatal signal Python cannot handle (SIGSEGV, SIGABRT, ...)
writes the stack of every thread to standard error (faulthandler).  Only
SIGKILL ends it unlogged.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from jumpoint import sd_notify
from jumpoint.config import JumpointConfig, load_config
from jumpoint.logs import start_logging
from jumpoint.reload import Reloader, Systemd
from jumpoint.reload_status import status_path
from jumpoint.service import JumpointService, makeService
from shared.errors import ConfigError
from shared.startup_heap import freeze_startup_heap

log = Logger()

STOP_SIGNALS = ("SIGINT", "SIGTERM")
IGNORED_SIGNALS = (
    "SIGQUIT",
    "SIGUSR1",
    "SIGUSR2",
    "SIGALRM",
    "SIGVTALRM",
    "SIGPROF",
    "SIGPOLL",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGPWR",
    "SIGSTKFLT",
    "SIGTRAP",
    "SIGSYS",
)
"""Signals whose default action ends the process; the daemon logs and ignores them."""


def install_signal_logging(
    call_from_thread: Callable[..., Any], on_hangup: Callable[[str], None] | None = None
) -> None:
    """Log every catchable signal (see the module docstring); run once the reactor runs.

    The stop signals keep Twisted's handlers (which stop the reactor) and log
    first; the log lines are written from the reactor, not the handler.
    SIGHUP calls C{on_hangup} on the reactor (logged and ignored without one).
    """
    for name in STOP_SIGNALS:
        number = getattr(signal, name, None)
        if number is None:
            continue
        previous = signal.getsignal(number)

        def stop(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            call_from_thread(
                log.info, "received {signal}: stopping", signal=signal.Signals(signum).name
            )
            if callable(previous):
                previous(signum, frame)

        signal.signal(number, stop)
    for name in IGNORED_SIGNALS:
        number = getattr(signal, name, None)
        if number is None:
            continue
        signal.signal(number, lambda signum, frame: call_from_thread(_ignored, signum))
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is None:
        return
    if on_hangup is None:
        signal.signal(hangup, lambda signum, frame: call_from_thread(_ignored, signum))
    else:
        signal.signal(hangup, lambda signum, frame: call_from_thread(on_hangup, "SIGHUP"))


def _ignored(signum: int) -> None:
    log.warn("received {signal}: ignored", signal=signal.Signals(signum).name)


AUDIT_STATUS = {
    "ok": "serving; the state database takes writes again",
    "failing": "the state database is busy: audit events wait",
    "unavailable": "the state database is unavailable: new sessions are refused",
}
"""The systemd status line of each state of the audit log (L{jumpoint.audit.AuditLog.state})."""


def _audit_status(state: str, counters: str) -> None:
    sd_notify.status(f"{AUDIT_STATUS.get(state, state)} ({counters})")


def _reloader(service: JumpointService, reactor: Any) -> Reloader:
    config = service.core.config

    def load(path: Path) -> Deferred[JumpointConfig]:
        loaded: Deferred[JumpointConfig] = deferToThreadPool(
            reactor, reactor.getThreadPool(), load_config, path
        )
        return loaded

    return Reloader(
        service.core,
        load,
        status_file=status_path(config.state_database),
        manager=Systemd(),
        pid=os.getpid(),
    )


def run_foreground(config: JumpointConfig, log_format: str) -> None:
    """Run the Jumpoint until the reactor stops (signals stop it cleanly)."""
    from twisted.internet import reactor

    faulthandler.enable()
    service = makeService(config, reactor)
    assert isinstance(service, JumpointService)
    reloader = _reloader(service, reactor)
    service.core.log_audit.on_state_change = _audit_status
    try:
        service.startService()
    except CannotListenError as error:
        raise ConfigError(
            f"{config.path}: jumpoint.listen: cannot listen on"
            f" {config.listen_host}:{config.listen_port}: {error.socketError}",
            hint="is another Jumpoint running? change jumpoint.listen",
        ) from None
    start_logging(log_format, sys.stdout)
    reactor.addSystemEventTrigger("before", "shutdown", sd_notify.stopping)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    # after Twisted's own handlers (installed when the reactor starts)
    reactor.callWhenRunning(install_signal_logging, reactor.callFromThread, reloader.request)  # type: ignore[attr-defined]
    reactor.callWhenRunning(reloader.announce)  # READY=1: serving, SIGHUP handled
    # what startup built lives as long as the daemon: full GC collections skip it
    reactor.callWhenRunning(freeze_startup_heap)
    reactor.run()
    log.info("Jumpoint {name} stopped", name=config.name)
