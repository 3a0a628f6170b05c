"""The foreground launcher behind `jumpoint serve` (and the systemd unit).

Starts logging, builds the service with L{makeService}, starts it (a listen
error is reported before the reactor runs) and runs the reactor until SIGINT
or SIGTERM, when the service stops cleanly: sessions are told the Jumpoint is
shutting down, then connections close.

The daemon never dies silently on a signal: SIGINT and SIGTERM log a stop
line naming the signal; SIGHUP (there is no reload yet) and every other
signal that would end the process and that Python can catch (SIGQUIT,
SIGUSR1, SIGUSR2, SIGALRM, ...) are logged and ignored; and a fatal signal
Python cannot handle (SIGSEGV, SIGABRT, ...) writes the stack of every
thread to standard error (faulthandler).  Only SIGKILL ends it unlogged.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from jumpoint.config import JumpointConfig
from jumpoint.logs import start_logging
from jumpoint.service import makeService
from shared.errors import ConfigError
from shared.startup_heap import freeze_startup_heap

log = Logger()

STOP_SIGNALS = ("SIGINT", "SIGTERM")
IGNORED_SIGNALS = (
    "SIGHUP",
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


def install_signal_logging(call_from_thread: Callable[..., Any]) -> None:
    """Log every catchable signal (see the module docstring); run once the reactor runs.

    The stop signals keep Twisted's handlers (which stop the reactor) and log
    first; the log lines are written from the reactor, not the handler.
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


def _ignored(signum: int) -> None:
    name = signal.Signals(signum).name
    if name == "SIGHUP":
        log.warn("received SIGHUP: reloading the configuration is not supported yet; ignored")
    else:
        log.warn("received {signal}: ignored", signal=name)


def run_foreground(config: JumpointConfig, log_format: str) -> None:
    """Run the Jumpoint until the reactor stops (signals stop it cleanly)."""
    from twisted.internet import reactor

    faulthandler.enable()
    service = makeService(config, reactor)
    try:
        service.startService()
    except CannotListenError as error:
        raise ConfigError(
            f"{config.path}: jumpoint.listen: cannot listen on"
            f" {config.listen_host}:{config.listen_port}: {error.socketError}",
            hint="is another Jumpoint running? change jumpoint.listen",
        ) from None
    start_logging(log_format, sys.stdout)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    # after Twisted's own handlers (installed when the reactor starts)
    reactor.callWhenRunning(install_signal_logging, reactor.callFromThread)  # type: ignore[attr-defined]
    # what startup built lives as long as the daemon: full GC collections skip it
    reactor.callWhenRunning(freeze_startup_heap)
    reactor.run()
    log.info("Jumpoint {name} stopped", name=config.name)
