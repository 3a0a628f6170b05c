"""The console's Kubernetes listener: no stream before an authenticated head, then an h11 relay."""

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
    DEFAULT_LOGIN_TIMEOUT,
    KubeClientConnection,
    KubeListenerFactory,
    listener_hosts,
)
from console.kubeconfig import SessionKubeconfig
from shared.bridge import TcpBridge
from shared.protocol.frames import Frame, FrameParser, FrameType
from shared.protocol.mux import Multiplexer, MuxSettings, Stream

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
    def __init__(self, kube: SessionKubeconfig, login_timeout: float | None = None) -> None:
        self.kube = kube
        self.mux = Multiplexer(
            is_client=True, handler=Handler(), clock=Clock(), settings=MuxSettings()
        )
        self.wire = StringTransport()
        self.mux.make_connection(self.wire)
        self.mux.establish()
        self.wire.clear()
        self.clock = Clock()
        self.local = StringTransport()
        self.streams: list[Stream] = []
        self.opened: list[TcpBridge] = []
        self.ended: list[bool] = []
        self.closed: list[TcpBridge] = []
        self.bridge = KubeClientConnection(
            self.open_stream,
            kube,
            listener_hosts(ADDRESS, PORT),
            on_opened=lambda c, b: self.opened.append(b),
            on_ended=lambda c, timed_out: self.ended.append(timed_out),
            on_closed=self.closed.append,
            clock=self.clock,
            login_timeout=login_timeout,
        )
        self.bridge.makeConnection(self.local)

    def open_stream(self) -> Stream:
        stream = self.mux.open_stream(b"{}")
        self.streams.append(stream)
        return stream

    @property
    def stream(self) -> Stream:
        (stream,) = self.streams
        return stream

    def frames(self) -> list[Frame]:
        return [f for f in FrameParser(1 << 20).feed(self.wire.value()) if f.stream_id]

    def sent(self) -> bytes:
        return b"".join(f.payload for f in self.frames() if f.type is FrameType.DATA)

    def types(self) -> list[FrameType]:
        return [f.type for f in self.frames()]


@pytest.fixture
def kube(tmp_path: Path) -> SessionKubeconfig:
    return SessionKubeconfig.create(tmp_path, "s-1", "cluster", ADDRESS, PORT, "dev")


@pytest.fixture
def setup(kube: SessionKubeconfig) -> Setup:
    return Setup(kube)


def request(
    kube: SessionKubeconfig | None,
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


def without_token(data: bytes, kube: SessionKubeconfig) -> bytes:
    """The request as the console forwards it: h11's encoding, the session token removed."""
    return data.replace(f"Authorization: Bearer {kube.token}\r\n".encode(), b"")


def status_of(response: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def test_no_stream_before_a_complete_authenticated_head(setup: Setup) -> None:
    data = request(setup.kube)
    for index in range(len(data) - 1):
        setup.bridge.dataReceived(data[index : index + 1])
    assert setup.streams == [] and setup.wire.value() == b""  # the Jumpoint dials nothing
    setup.bridge.dataReceived(data[-1:])
    assert len(setup.streams) == 1 and len(setup.opened) == 1
    assert setup.sent() == without_token(data, setup.kube)
    assert setup.kube.token.encode() not in setup.wire.value()


def test_idle_local_connections_open_no_stream_and_time_out(kube: SessionKubeconfig) -> None:
    setups = [Setup(kube) for _ in range(20)]
    for s in setups:
        s.bridge.dataReceived(b"GET /api HTTP/1.1\r\nHost: " + HOST.encode())  # never finished
    assert all(s.streams == [] for s in setups)
    for s in setups:
        s.clock.advance(DEFAULT_LOGIN_TIMEOUT - 0.1)
        assert not s.local.disconnecting and s.ended == []
        s.clock.advance(0.2)
        assert s.ended == [True]  # counted as a login timeout
        assert getattr(s.local, "aborting", False) or s.local.disconnecting
        assert s.streams == []


def test_the_session_terms_login_timeout_applies(kube: SessionKubeconfig) -> None:
    s = Setup(kube, login_timeout=5.0)
    s.clock.advance(5.0)
    assert s.ended == [True]


def test_an_authenticated_connection_does_not_time_out(setup: Setup) -> None:
    setup.bridge.dataReceived(request(setup.kube))
    setup.clock.advance(DEFAULT_LOGIN_TIMEOUT * 3)
    assert setup.ended == [] and not setup.local.disconnecting


def test_a_connection_closed_before_its_first_request_is_not_a_timeout(setup: Setup) -> None:
    setup.bridge.connectionLost()
    assert setup.ended == [False]
    setup.clock.advance(DEFAULT_LOGIN_TIMEOUT)
    assert setup.ended == [False]


def test_an_authorized_request_goes_to_the_stream_reframed(setup: Setup) -> None:
    """Head and chunked body, fed in small pieces: h11 reframes them, order and repeats kept."""
    body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
    message = (
        request(
            setup.kube, "POST", extra="Transfer-Encoding: chunked\r\nX-Stream: a\r\nX-Stream: b\r\n"
        )
        + body
    )
    for index in range(0, len(message), 7):
        setup.bridge.dataReceived(message[index : index + 7])
    sent = setup.sent()
    head, _, sent_body = sent.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"POST /api/v1/namespaces/dev/pods HTTP/1.1",
        b"Host: " + HOST.encode(),
        b"User-Agent: kubectl/v1.31.0",
        b"Transfer-Encoding: chunked",
        b"X-Stream: a",
        b"X-Stream: b",
    ]
    assert sent_body.endswith(b"0\r\nX-Trailer: 1\r\n\r\n")
    assert b"".join(sent_body.split(b"\r\n")[1:-4:2]) == b"hello world"
    assert setup.local.value() == b""
    response = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}"
    setup.stream._data_received(response)
    assert setup.local.value() == response


def test_keep_alive_requests_are_each_checked_and_forwarded(setup: Setup) -> None:
    first = request(setup.kube, "PUT", extra="Content-Length: 4\r\n") + b"abcd"
    second = request(setup.kube, host=ADDRESS)
    setup.bridge.dataReceived(first)
    setup.stream._data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    setup.bridge.dataReceived(second)
    assert setup.sent() == without_token(first + second, setup.kube)
    assert setup.bridge.relay.requests == 2


def test_pipelined_requests_go_one_at_a_time(setup: Setup) -> None:
    first = request(setup.kube, "POST", extra="Content-Length: 3\r\n") + b"xyz"
    second = request(setup.kube, target="/version")
    setup.bridge.dataReceived(first + second)
    assert setup.sent() == without_token(first, setup.kube)
    setup.stream._data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert setup.sent() == without_token(first + second, setup.kube)


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
    assert setup.streams == [] and setup.wire.value() == b""  # no stream, no dial
    assert setup.local.disconnecting
    # whatever follows is dropped
    setup.bridge.dataReceived(request(setup.kube))
    assert setup.streams == []


def test_a_request_without_authorization_is_refused(kube: SessionKubeconfig) -> None:
    setup = Setup(kube)
    data = b"GET /api HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n"
    setup.bridge.dataReceived(data)
    assert status_of(setup.local.value())[0] == 401
    assert setup.streams == []
    assert kube.token.encode() not in setup.local.value()


def test_a_request_without_host_is_answered_locally(setup: Setup) -> None:
    setup.bridge.dataReceived(request(setup.kube, host=None))
    assert status_of(setup.local.value())[0] in (400, 401)
    assert setup.streams == []
    assert setup.local.disconnecting


def test_two_authorization_lines_are_refused(setup: Setup) -> None:
    data = request(setup.kube, extra=f"Authorization: Bearer {setup.kube.token}\r\n")
    setup.bridge.dataReceived(data)
    assert status_of(setup.local.value())[0] == 401
    assert setup.streams == []


def test_a_refused_second_request_is_answered_after_the_first_response(setup: Setup) -> None:
    first = request(setup.kube)
    setup.bridge.dataReceived(first)
    setup.bridge.dataReceived(request(setup.kube, token="stolen"))
    assert setup.sent() == without_token(first, setup.kube)  # nothing of the second request
    assert setup.local.value() == b""
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    setup.stream._data_received(response)
    value = setup.local.value()
    assert value.startswith(response)
    assert status_of(value[len(response) :])[0] == 401
    assert setup.local.disconnecting
    fin = setup.frames()[-1]
    assert fin.type is FrameType.DATA and not fin.payload  # FIN: no more requests


def _upgrade(kube: SessionKubeconfig) -> bytes:
    return request(
        kube,
        target="/api/v1/namespaces/dev/pods/p/exec?command=sh&stdin=true",
        extra=(
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n"
        ),
    )


SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n"
)


def test_after_a_101_bytes_pass_both_ways_unchanged(setup: Setup) -> None:
    upgrade = _upgrade(setup.kube)
    frames = b"\x82\x85\x00\x00\x00\x00\x00ls\r\n" + b"GET /no-token HTTP/1.1\r\n\r\n"
    setup.bridge.dataReceived(upgrade + frames[:5])
    setup.bridge.dataReceived(frames[5:])
    assert setup.sent() == without_token(upgrade, setup.kube)  # frames wait for the answer
    setup.stream._data_received(SWITCH + b"\x82\x03\x01hi")  # output in the same read
    assert setup.local.value() == SWITCH + b"\x82\x03\x01hi"
    assert setup.sent() == without_token(upgrade, setup.kube) + frames
    setup.bridge.dataReceived(b"raw")
    assert setup.sent().endswith(b"raw")


def test_a_refused_upgrade_keeps_checking_requests(setup: Setup) -> None:
    """kubectl falls back to SPDY on the same connection: the next head is checked again."""
    setup.bridge.dataReceived(_upgrade(setup.kube) + request(setup.kube, token="stolen"))
    setup.stream._data_received(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\n{}")
    value = setup.local.value()
    assert value.startswith(b"HTTP/1.1 403 Forbidden")
    assert b"401 Unauthorized" in value
    assert setup.sent() == without_token(_upgrade(setup.kube), setup.kube)


@pytest.mark.parametrize(
    "data",
    [
        b"NOT A REQUEST\r\n\r\n",
        b"GET /api HTTP/1.1\r\nbad header\r\n\r\n",
        b"GET /api HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
    ],
)
def test_a_malformed_head_is_answered_locally(setup: Setup, data: bytes) -> None:
    setup.bridge.dataReceived(data)
    code, status = status_of(setup.local.value())
    assert code in (400, 431) and status["code"] == code and status["kind"] == "Status"
    assert (code == 431) == (len(data) > 65536)
    assert setup.streams == []
    assert setup.local.disconnecting


def test_conflicting_framing_is_answered_400(setup: Setup) -> None:
    data = request(setup.kube, "POST", extra="Content-Length: 3\r\nTransfer-Encoding: chunked\r\n")
    setup.bridge.dataReceived(data)
    assert status_of(setup.local.value())[0] == 400
    assert setup.streams == []


def test_a_malformed_chunked_body_resets_the_stream(setup: Setup) -> None:
    head = request(setup.kube, "POST", extra="Transfer-Encoding: chunked\r\n")
    setup.bridge.dataReceived(head + b"zz\r\n")
    assert setup.sent() == without_token(head, setup.kube)
    assert setup.types()[-1] is FrameType.RESET


def test_the_end_of_the_stream_closes_the_connection(setup: Setup) -> None:
    setup.bridge.dataReceived(request(setup.kube))
    setup.stream._data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    setup.stream._fin_received()
    assert setup.local.disconnecting
    setup.bridge.connectionLost()
    assert setup.stream.closed
    assert setup.closed == setup.opened


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


def test_the_listener_refuses_until_the_session_is_set(kube: SessionKubeconfig) -> None:
    holder: list[SessionKubeconfig] = []
    factory = KubeListenerFactory(Factory.forProtocol(_Echo), lambda: holder[0] if holder else None)
    refused = factory.buildProtocol(None)
    assert refused is not None
    transport = StringTransport()
    refused.makeConnection(transport)
    assert transport.disconnecting or getattr(transport, "aborting", False)
    holder.append(kube)
    server = factory.buildProtocol(None)
    assert isinstance(server, TLSMemoryBIOProtocol)


def test_the_listener_speaks_tls_with_alpn_http11_only(kube: SessionKubeconfig) -> None:
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
