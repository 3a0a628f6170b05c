"""Connecting streams to their targets on the Jumpoint's network.

IP literals are dialled directly; host names go through Twisted's
L{HostnameEndpoint} (resolution, then every address, happy-eyeballs style).
The connecting factory is quiet: no log line per connection attempt.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol

Connector = Callable[[str, int, Protocol], "Deferred[Any]"]


class _OneProtocol(Factory):
    """Hands out one already-built protocol; quiet in the logs."""

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self._protocol


def target_endpoint(reactor: Any, host: str, port: int, timeout: float) -> IStreamClientEndpoint:
    """The endpoint that reaches C{host}:C{port}."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return HostnameEndpoint(reactor, host, port, timeout=timeout)
    if address.version == 4:
        return TCP4ClientEndpoint(reactor, str(address), port, timeout=timeout)
    return TCP6ClientEndpoint(reactor, str(address), port, timeout=timeout)


def make_connector(reactor: Any, timeout: float) -> Connector:
    """A function connecting a protocol to a target, as L{JumpointCore} wants it."""

    def connect(host: str, port: int, protocol: Protocol) -> Deferred[Any]:
        attempt: Deferred[Any] = target_endpoint(reactor, host, port, timeout).connect(
            _OneProtocol(protocol)
        )
        return attempt

    return connect
