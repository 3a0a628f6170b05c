"""The foreground launcher behind `jumpoint serve` (and the systemd unit).

Starts logging, builds the service with L{makeService}, starts it (a listen
error is reported before the reactor runs) and runs the reactor until SIGINT
or SIGTERM, when the service stops cleanly: sessions are told the Jumpoint is
shutting down, then connections close.
"""

from __future__ import annotations

import sys

from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from jumpoint.service import makeService
from shared.config import JumpointConfig
from shared.errors import ConfigError
from shared.logs import start_logging

log = Logger()


def run_foreground(config: JumpointConfig, log_format: str) -> None:
    """Run the Jumpoint until the reactor stops (signals stop it cleanly)."""
    from twisted.internet import reactor

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
    reactor.run()
    log.info("Jumpoint {name} stopped", name=config.name)
