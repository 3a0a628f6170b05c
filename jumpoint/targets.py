"""Connecting streams to their targets on the Jumpoint's network.

IP literals are dialled directly with C{connectTCP} (no endpoint wrapper
between the socket and the bridge, no resolver round trip); host names go
through Twisted's L{HostnameEndpoint} (resolution, then every address,
happy-eyeballs style).  Nothing is logged per connection attempt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IConnector
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python.failure import Failure

from shared.addresses import ip_address

Connector = Callable[[str, int, Protocol], "Deferred[Any]"]


class _OneProtocol(Factory):
    """Hands out one already-built protocol; quiet in the logs."""

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self._protocol


class _DirectConnection(ClientFactory):
    """connectTCP for one protocol: the Deferred fires on connect or failure."""

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol
        self._connector: IConnector | None = None
        self.result: Deferred[Any] = Deferred(self._cancel)

    def _cancel(self, result: Deferred[Any]) -> None:
        if self._connector is not None:
            self._connector.stopConnecting()

    def startedConnecting(self, connector: IConnector) -> None:
        self._connector = connector

    def buildProtocol(self, addr: Any) -> Protocol:
        if not self.result.called:
            self.result.callback(self._protocol)
        return self._protocol

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        if not self.result.called:
            self.result.errback(reason)


def make_connector(reactor: Any, timeout: float) -> Connector:
    """A function connecting a protocol to a target, as L{JumpointCore} wants it."""

    def connect(host: str, port: int, protocol: Protocol) -> Deferred[Any]:
        try:
            address = ip_address(host.strip("[]"))
        except ValueError:
            endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
            attempt: Deferred[Any] = endpoint.connect(_OneProtocol(protocol))
            return attempt
        factory = _DirectConnection(protocol)
        reactor.connectTCP(str(address), port, factory, timeout=timeout)
        return factory.result

    return connect
