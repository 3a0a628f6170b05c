"""The console's Kubernetes listener: local auth and Host check, then a raw relay."""

# twisted.internet.testing and twisted.test.iosim are not annotated.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import ssl
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.test import iosim

from console.kube_proxy import (
    REFUSAL_WAIT,
    KubeClientBridge,
    KubeListenerFactory,
    listener_hosts,
)
from console.kube_session import KubeSession
from shared.frames import Frame, FrameParser, FrameType
from shared.mux import Multiplexer, MuxSettings, Stream

ADDRESS = "127.0.0.5"
PORT = 4443
HOST = f"{ADDRESS}:{PORT}"


class Handler:
    def control_received(self, message: dict[str, Any]) -> None:
        pass

    def stream_requested(self, stream: Any, payload: bytes) -> None:
        pass

    def mux_closing(self, code: int, reason: str, by_peer: bool) -> None:
        pass


class Setup:
    def __init__(self, kube: KubeSession) -> None:
        self.kube = kube
        self.mux = Multiplexer(
            is_client=True, handler=Handler(), clock=Clock(), settings=MuxSettings()
        )
        self.wire = StringTransport()
        self.mux.make_connection(self.wire)
        self.mux.establish()
        self.stream: Stream = self.mux.open_stream(b"{}")
        self.wire.clear()
        self.clock = Clock()
        self.local = StringTransport()
        self.bridge = KubeClientBridge(
            self.stream, kube, listener_hosts(ADDRESS, PORT), clock=self.clock
        )
        self.bridge.makeConnection(self.local)

    def frames(self) -> list[Frame]:
        return [f for f in FrameParser(1 << 20).feed(self.wire.value()) if f.stream_id]

    def sent(self) -> bytes:
        return b"".join(f.payload for f in self.frames() if f.type is FrameType.DATA)

    def types(self) -> list[FrameType]:
        return [f.type for f in self.frames()]


@pytest.fixture
def kube(tmp_path: Path) -> KubeSession:
    return KubeSession.create(tmp_path, "s-1", "cluster", ADDRESS, PORT, "dev")


@pytest.fixture
def setup(kube: KubeSession) -> Setup:
    return Setup(kube)


def request(
    kube: KubeSession | None,
    method: str = "GET",
    target: str = "/api/v1/namespaces/dev/pods",
    host: str | None = HOST,
    extra: str = "",
    token: str | None = None,
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines.append("User-Agent: kubectl/v1.31.0")
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    elif kube is not None:
        lines.append(f"Authorization: Bearer {kube.token}")
    head = "\r\n".join(lines) + "\r\n" + extra + "\r\n"
    return head.encode("latin-1")


def status_of(response: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def test_an_authorized_request_goes_to_the_stream_byte_for_byte(setup: Setup) -> None:
    """Head and chunked body, fed in small pieces, arrive on the stream unchanged."""
    body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
    message = (
        request(
            setup.kube, "POST", extra="Transfer-Encoding: chunked\r\nX-Stream: a\r\nX-Stream: b\r\n"
        )
        + body
    )
    for index in range(0, len(message), 7):
        setup.bridge.dataReceived(message[index : index + 7])
    assert setup.sent() == message
    assert setup.local.value() == b""
    # the response comes back unchanged
    response = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}"
    setup.stream._data_received(response)
    assert setup.local.value() == response


def test_keep_alive_requests_are_each_checked_and_forwarded(setup: Setup) -> None:
    first = request(setup.kube, "PUT", extra="Content-Length: 4\r\n") + b"abcd"
    second = request(setup.kube, host=ADDRESS)
    setup.bridge.dataReceived(first)
    setup.stream._data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    setup.bridge.dataReceived(second)
    assert setup.sent() == first + second
    assert setup.bridge.forwarded == 2


def test_pipelined_requests_are_forwarded_in_order(setup: Setup) -> None:
    first = request(setup.kube, "POST", extra="Content-Length: 3\r\n") + b"xyz"
    second = request(setup.kube, target="/version")
    setup.bridge.dataReceived(first + second)
    assert setup.sent() == first + second


@pytest.mark.parametrize(
    ("token", "host"),
    [
        ("", HOST),  # an empty bearer
        ("wrong-token", HOST),
        (None, "127.0.0.1:4443"),
        (None, "evil.example:4443"),
        (None, "127.0.0.5:4444"),
    ],
)
def test_a_request_without_the_token_or_host_is_answered_locally(
    setup: Setup, token: str | None, host: str | None
) -> None:
    setup.bridge.dataReceived(request(setup.kube, host=host, token=token))
    code, status = status_of(setup.local.value())
    assert code == 401
    assert status["reason"] == "Unauthorized" and status["kind"] == "Status"
    assert FrameType.DATA not in setup.types()
    assert setup.types() == [FrameType.RESET]
    assert setup.local.disconnecting
    # whatever follows is dropped
    setup.bridge.dataReceived(request(setup.kube))
    assert FrameType.DATA not in setup.types()


def test_a_request_without_authorization_is_refused(kube: KubeSession) -> None:
    setup = Setup(kube)
    data = b"GET /api HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n"
    setup.bridge.dataReceived(data)
    assert status_of(setup.local.value())[0] == 401
    assert FrameType.DATA not in setup.types()
    assert kube.token.encode() not in setup.local.value()


def test_a_request_without_host_is_answered_locally(setup: Setup) -> None:
    setup.bridge.dataReceived(request(setup.kube, host=None))
    assert status_of(setup.local.value())[0] in (400, 401)
    assert FrameType.DATA not in setup.types()
    assert setup.local.disconnecting


def test_two_authorization_lines_are_refused(setup: Setup) -> None:
    data = request(setup.kube, extra=f"Authorization: Bearer {setup.kube.token}\r\n")
    setup.bridge.dataReceived(data)
    assert status_of(setup.local.value())[0] == 401
    assert FrameType.DATA not in setup.types()


def test_a_refused_second_request_is_answered_after_the_first_response(setup: Setup) -> None:
    first = request(setup.kube)
    setup.bridge.dataReceived(first)
    setup.bridge.dataReceived(request(setup.kube, token="stolen"))
    assert setup.sent() == first  # nothing of the second request
    fin = setup.frames()[-1]
    assert fin.type is FrameType.DATA and not fin.payload  # FIN: no more requests
    assert setup.local.value() == b""
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    setup.stream._data_received(response)
    setup.stream._fin_received()
    value = setup.local.value()
    assert value.startswith(response)
    assert status_of(value[len(response) :])[0] == 401
    assert setup.local.disconnecting


def test_a_held_refusal_is_written_after_the_wait(setup: Setup) -> None:
    setup.bridge.dataReceived(request(setup.kube))
    setup.bridge.dataReceived(request(setup.kube, host="localhost"))
    setup.clock.advance(REFUSAL_WAIT)
    assert status_of(setup.local.value())[0] == 401
    assert setup.types()[-1] is FrameType.RESET
    assert setup.local.disconnecting


def test_after_an_upgrade_bytes_pass_both_ways_unchanged(setup: Setup) -> None:
    upgrade = request(
        setup.kube,
        target="/api/v1/namespaces/dev/pods/p/exec?command=sh&stdin=true",
        extra=(
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n"
        ),
    )
    frames = b"\x82\x85\x00\x00\x00\x00\x00ls\r\n" + b"GET /no-token HTTP/1.1\r\n\r\n"
    setup.bridge.dataReceived(upgrade + frames[:5])
    setup.bridge.dataReceived(frames[5:])
    assert setup.sent() == upgrade + frames
    answer = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n\x82\x03\x01hi"
    )
    setup.stream._data_received(answer)
    assert setup.local.value() == answer


@pytest.mark.parametrize(
    "data",
    [
        b"NOT A REQUEST\r\n\r\n",
        b"GET /api HTTP/1.1\r\nbad header\r\n\r\n",
        b"GET http://x/api HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
def test_a_malformed_head_is_answered_400(setup: Setup, data: bytes) -> None:
    setup.bridge.dataReceived(data)
    code, status = status_of(setup.local.value())
    assert code == 400 and status["code"] == 400 and status["kind"] == "Status"
    assert FrameType.DATA not in setup.types()
    assert setup.local.disconnecting


def test_conflicting_framing_is_answered_400(setup: Setup) -> None:
    data = request(setup.kube, "POST", extra="Content-Length: 3\r\nTransfer-Encoding: chunked\r\n")
    setup.bridge.dataReceived(data)
    assert status_of(setup.local.value())[0] == 400
    assert FrameType.DATA not in setup.types()


def test_a_malformed_chunked_body_resets_the_stream(setup: Setup) -> None:
    head = request(setup.kube, "POST", extra="Transfer-Encoding: chunked\r\n")
    setup.bridge.dataReceived(head + b"zz\r\n")
    assert setup.sent() == head
    assert setup.types()[-1] is FrameType.RESET
    assert status_of(setup.local.value())[0] == 400


def test_the_end_of_the_stream_closes_the_connection(setup: Setup) -> None:
    setup.bridge.dataReceived(request(setup.kube))
    setup.stream._data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    setup.stream._fin_received()
    assert setup.local.disconnecting
    assert setup.stream.closed


class _Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class _Client(Protocol):
    def __init__(self) -> None:
        self.received = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"ping")

    def dataReceived(self, data: bytes) -> None:
        self.received += data


def test_the_listener_refuses_until_the_session_is_set(kube: KubeSession) -> None:
    holder: list[KubeSession] = []
    factory = KubeListenerFactory(Factory.forProtocol(_Echo), lambda: holder[0] if holder else None)
    refused = factory.buildProtocol(None)
    assert refused is not None
    transport = StringTransport()
    refused.makeConnection(transport)
    assert transport.disconnecting or getattr(transport, "aborting", False)
    holder.append(kube)
    server = factory.buildProtocol(None)
    assert isinstance(server, TLSMemoryBIOProtocol)


def test_the_listener_speaks_tls_with_alpn_http11_only(kube: KubeSession) -> None:
    clock = Clock()
    factory = KubeListenerFactory(Factory.forProtocol(_Echo), lambda: kube, clock=clock)
    client = _Client()
    options = ssl.optionsForClientTLS(
        "127.0.0.5",
        trustRoot=ssl.Certificate.loadPEM(kube.ca_pem),
        acceptableProtocols=[b"h2", b"http/1.1"],
    )
    client_factory = TLSMemoryBIOFactory(
        options, True, Factory.forProtocol(lambda: client), clock=clock
    )
    server_proto = factory.buildProtocol(None)
    client_proto = client_factory.buildProtocol(None)
    assert server_proto is not None and client_proto is not None
    _, _, pump = iosim.connectedServerAndClient(
        lambda: server_proto, lambda: client_proto, clock=clock
    )
    for _ in range(10):
        pump.flush()
    assert client.received == b"ping"
    assert client_proto.negotiatedProtocol == b"http/1.1"
