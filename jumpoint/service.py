"""makeService: the one place that builds a running Jumpoint from its configuration.

The launchers (the C{jumpoint serve} command, the systemd unit, the Windows
service) only load the configuration, call L{makeService} and start it.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.logger import Logger

from jumpoint.server import JumpointCore, JumpointFactory
from jumpoint.state import StateDatabase
from jumpoint.targets import make_connector
from shared.config import JumpointConfig
from shared.errors import ConfigError
from shared.frames import ErrorCode
from shared.tls import server_options, wrap_server

log = Logger()


class JumpointService(MultiService):
    """The running daemon: the TLS listener and the revocation poller."""

    def __init__(self, core: JumpointCore, listener: StreamServerEndpointService) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.core = core
        self.listener = listener
        listener.setServiceParent(self)
        poller = TimerService(core.config.limits.revocation_poll_interval, core.check_revocations)
        poller.clock = core.clock
        poller.setServiceParent(self)

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        config = self.core.config
        log.info(
            "Jumpoint {name} listening on {host}:{port} with {items} items",
            name=config.name,
            host=config.listen_host,
            port=config.listen_port,
            items=len(config.items),
        )

    def stopService(self) -> Deferred[None]:
        for channel in list(self.core.channels):
            if channel.mux is not None:
                channel.mux.go_away(ErrorCode.SHUTDOWN, "the Jumpoint is shutting down")
        result: Deferred[None] = super().stopService()  # type: ignore[no-untyped-call]
        self.core.database.close()
        return result


def makeService(config: JumpointConfig, reactor: Any = None) -> IService:
    """Build the Jumpoint service for C{config} (the reactor is injectable for tests)."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor

    core = JumpointCore(
        config=config,
        database=StateDatabase(config.state_database),
        clock=reactor,
        connect_target=make_connector(reactor, config.limits.connect_timeout),
    )
    try:
        options = server_options(
            config.ca_certificate.read_bytes(),
            config.server_certificate.read_bytes(),
            config.server_key.read_bytes(),
        )
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"{config.path}: tls: cannot load the certificates and key: {error}"
        ) from None
    endpoint_class = TCP6ServerEndpoint if ":" in config.listen_host else TCP4ServerEndpoint
    endpoint = endpoint_class(
        reactor, config.listen_port, backlog=511, interface=config.listen_host
    )
    listener = StreamServerEndpointService(endpoint, wrap_server(options, JumpointFactory(core)))
    listener._raiseSynchronously = True
    return JumpointService(core, listener)
