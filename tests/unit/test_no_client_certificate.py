"""What a console without a client certificate sees (docs/protocol.md, "Connection
without a client certificate").

TLS 1.3: the console finishes its handshake before the Jumpoint checks its
certificate; the Jumpoint's handshake fails, it sends the alert "certificate
required" and no frame, and its channel code (which would answer GOAWAY DENIED)
never runs.  A certificate from another CA: the alert "unknown ca".
"""

from __future__ import annotations

from twisted.internet import ssl
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.test.iosim import connectedServerAndClient
from zope.interface import implementer

from shared import pki
from shared.protocol.frames import ALPN_PROTOCOL
from shared.protocol.tls import (
    client_options,
    describe_tls_failure,
    server_options,
    wrap_client,
    wrap_server,
)


@implementer(IHandshakeListener)
class Endpoint(Protocol):
    """Records the handshake, what arrives and how the connection ended."""

    def __init__(self) -> None:
        self.handshake_completed = False
        self.received = b""
        self.lost: Failure | None = None

    def handshakeCompleted(self) -> None:
        self.handshake_completed = True
        assert self.transport is not None
        self.transport.write(b"hello")  # as the console's hello, as soon as TLS is up

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = reason


def test_no_certificate_the_console_finishes_the_jumpoint_alerts_certificate_required() -> None:
    ca = pki.create_ca("unit")
    keys = pki.issue_server(ca, "unit", ["127.0.0.1"])
    jumpoint, console = Endpoint(), Endpoint()
    server = wrap_server(
        server_options(ca.certificate_pem, keys.certificate_pem, keys.key_pem, enrollment=True),
        Factory.forProtocol(lambda: jumpoint),
    )
    no_certificate = ssl.optionsForClientTLS(
        "127.0.0.1",
        trustRoot=ssl.Certificate.loadPEM(ca.certificate_pem),
        acceptableProtocols=[ALPN_PROTOCOL],
        extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_3},
    )
    client = wrap_client(no_certificate, Factory.forProtocol(lambda: console))
    _, _, pump = connectedServerAndClient(
        lambda: server.buildProtocol(None), lambda: client.buildProtocol(None)
    )
    pump.flush()
    assert console.handshake_completed  # TLS 1.3: the console's side is done first
    assert not jumpoint.handshake_completed  # so the channel code never runs: no GOAWAY
    assert console.received == b""  # not a single frame from the Jumpoint
    assert jumpoint.received == b""  # the console's hello is never read
    assert console.lost is not None and jumpoint.lost is not None
    assert "certificate required" in str(console.lost.value)
    assert "peer did not return a certificate" in str(jumpoint.lost.value)
    assert describe_tls_failure(console.lost) == (
        "jumpoint",
        "this console sent no certificate (tlsv13 alert certificate required)",
    )


def test_a_certificate_of_another_ca_fails_the_handshake_with_unknown_ca() -> None:
    ca = pki.create_ca("unit")
    other = pki.create_ca("other")
    keys = pki.issue_server(ca, "unit", ["127.0.0.1"])
    foreign = pki.issue_client(other, "alice", "default")
    jumpoint, console = Endpoint(), Endpoint()
    server = wrap_server(
        server_options(ca.certificate_pem, keys.certificate_pem, keys.key_pem),
        Factory.forProtocol(lambda: jumpoint),
    )
    client = wrap_client(
        client_options("127.0.0.1", ca.certificate_pem, foreign.certificate_pem, foreign.key_pem),
        Factory.forProtocol(lambda: console),
    )
    _, _, pump = connectedServerAndClient(
        lambda: server.buildProtocol(None), lambda: client.buildProtocol(None)
    )
    pump.flush()
    assert console.handshake_completed and not jumpoint.handshake_completed
    assert console.received == b"" and jumpoint.received == b""
    assert console.lost is not None and jumpoint.lost is not None
    assert "unknown ca" in str(console.lost.value)
    assert "certificate verify failed" in str(jumpoint.lost.value)
