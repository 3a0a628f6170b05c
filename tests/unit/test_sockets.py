"""Writing to sockets at once: L{write_now}, the per-event L{WriteBatch}, whole-frame TLS."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.test.iosim import connectedServerAndClient

from shared import pki
from shared.bridge import TcpBridge
from shared.protocol import frames
from shared.protocol.frames import Flag, FrameType
from shared.protocol.mux import Multiplexer, MuxSettings
from shared.protocol.sockets import WriteBatch, write_now
from shared.protocol.tls import (
    ChannelTLSProtocol,
    client_options,
    server_options,
    wrap_client,
    wrap_server,
)


class IdleTcp:
    """The attributes of a Twisted TCP connection that L{write_now} looks at."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.connected = True
        self.disconnecting = False
        self._writeDisconnecting = False
        self._tempDataBuffer: list[bytes] = []
        self.offset = 0
        self.dataBuffer = b""
        self.buffered: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.buffered.append(data)
        self._tempDataBuffer.append(data)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair()
    left.setblocking(False)
    right.setblocking(False)
    yield left, right
    left.close()
    right.close()


def test_write_now_sends_to_an_idle_socket_directly(pair: Any) -> None:
    left, right = pair
    tcp = IdleTcp(left)
    write_now(tcp, b"hello")
    assert right.recv(100) == b"hello"
    assert tcp.buffered == []


def test_write_now_buffers_what_the_kernel_does_not_take_and_keeps_order(pair: Any) -> None:
    left, right = pair
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    tcp = IdleTcp(left)
    payload = bytes(range(256)) * 4096  # 1 MiB: more than the socket holds
    write_now(tcp, payload)
    assert len(tcp.buffered) == 1 and 0 < len(tcp.buffered[0]) < len(payload)
    write_now(tcp, b"after")  # Twisted's buffer is not empty: no overtaking
    assert tcp.buffered[1] == b"after"
    received = b""
    while True:
        try:
            chunk = right.recv(1 << 20)
        except BlockingIOError:
            break
        received += chunk
    assert payload.startswith(received)
    assert received + tcp.buffered[0] == payload


def test_write_now_never_bypasses_a_wrapper_such_as_tls(pair: Any) -> None:
    """A TLS transport forwards attribute lookups to the TCP connection under it."""
    from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

    left, right = pair
    tcp = IdleTcp(left)
    wrapper = ProtocolWrapper(WrappingFactory(Factory()), Protocol())
    wrapper.makeConnection(tcp)  # type: ignore[arg-type]
    assert wrapper.socket is left  # the attribute is forwarded...
    written: list[bytes] = []
    wrapper.write = written.append  # type: ignore[method-assign]
    write_now(wrapper, b"must be encrypted by the wrapper")
    assert written == [b"must be encrypted by the wrapper"]  # ...but the wrapper writes
    with pytest.raises(BlockingIOError):
        right.recv(100)


def test_write_now_leaves_other_transports_to_twisted() -> None:
    transport = StringTransport()
    write_now(transport, b"data")
    assert transport.value() == b"data"


def test_a_batch_sends_one_write_per_socket_when_the_event_ends() -> None:
    batch = WriteBatch()
    first, second = StringTransport(), StringTransport()
    batch.open = True
    for chunk in (b"a", b"b", b"c"):
        batch.write(first, chunk)
    batch.write(second, b"x")
    assert first.value() == b"" and second.value() == b""
    batch.flush(second)
    assert second.value() == b"x"
    batch.open = False
    batch.flush_all()
    assert first.value() == b"abc"
    assert second.value() == b"x"


class Quiet:
    def control_received(self, message: dict[str, Any]) -> None:
        pass

    def stream_requested(self, stream: Any, payload: bytes) -> None:
        pass

    def mux_closing(self, code: int, reason: str, by_peer: bool) -> None:
        pass


class CountingTransport(StringTransport):
    """A local socket that counts writes and records the half-close."""

    writes = 0
    write_closed_after: bytes | None = None

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)

    def loseWriteConnection(self) -> None:
        self.write_closed_after = self.value()


def test_frames_of_one_read_reach_the_socket_in_one_write_before_the_fin() -> None:
    mux = Multiplexer(is_client=True, handler=Quiet(), clock=Clock(), settings=MuxSettings())
    mux.make_connection(StringTransport())
    mux.establish()
    stream = mux.open_stream(b"{}")
    local = CountingTransport()
    TcpBridge(stream).makeConnection(local)
    wire = b"".join(
        frames.encode_frame(FrameType.DATA, 0, stream.stream_id, bytes([n]) * 1000)
        for n in range(5)
    ) + frames.encode_frame(FrameType.DATA, Flag.FIN, stream.stream_id, b"")
    mux.data_received(wire)
    expected = b"".join(bytes([n]) * 1000 for n in range(5))
    assert local.value() == expected
    assert local.writes == 1
    assert local.write_closed_after == expected


class Sink(Protocol):
    def __init__(self) -> None:
        self.received = bytearray()

    def dataReceived(self, data: bytes) -> None:
        self.received += data


def test_the_channel_tls_sends_a_whole_frame_in_one_transport_write() -> None:
    ca = pki.create_ca("unit")
    server_keys = pki.issue_server(ca, "unit", ["127.0.0.1"])
    client_keys = pki.issue_client(ca, "alice", "default")
    sink = Sink()
    sender = Protocol()
    server = wrap_server(
        server_options(ca.certificate_pem, server_keys.certificate_pem, server_keys.key_pem),
        Factory.forProtocol(lambda: sink),
    ).buildProtocol(None)
    client = wrap_client(
        client_options(
            "127.0.0.1", ca.certificate_pem, client_keys.certificate_pem, client_keys.key_pem
        ),
        Factory.forProtocol(lambda: sender),
    ).buildProtocol(None)
    assert isinstance(client, ChannelTLSProtocol)
    _, _, pump = connectedServerAndClient(lambda: server, lambda: client)
    pump.flush()
    writes: list[int] = []
    tcp = client.transport
    assert tcp is not None
    original = tcp.write

    def counting(data: bytes) -> None:
        writes.append(len(data))
        original(data)

    tcp.write = counting  # type: ignore[method-assign]
    payload = bytes(range(256)) * 1024  # 256 KiB: sixteen TLS records
    assert sender.transport is not None
    sender.transport.write(payload)
    assert len(writes) == 1 and writes[0] > len(payload)
    pump.flush()
    assert bytes(sink.received) == payload


def test_channel_sockets_get_tcp_user_timeout_and_keepalive() -> None:
    # Issue 9, point 11: the kernel drops a dead channel too (not only the mux's keepalive).
    from shared.protocol.sockets import set_dead_link_timeouts

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        set_dead_link_timeouts(sock, 15.0, 45.0)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 45_000
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 15
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 15
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3


def test_a_real_channel_socket_is_tuned() -> None:
    from twisted.internet.tcp import Server

    from shared.protocol.sockets import tune_transport

    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        with client, accepted:

            class Fake(Server):
                """A Twisted TCP server connection around an accepted socket."""

                def __init__(self, sock: socket.socket) -> None:
                    self.socket = sock
                    self.bufferSize = 65536

                def getHandle(self) -> socket.socket:
                    return self.socket

                def setTcpNoDelay(self, enabled: bool) -> None:
                    pass

                def setTcpKeepAlive(self, enabled: bool) -> None:
                    self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(enabled))

            tune_transport(Fake(accepted), 5.0, 20.0)
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 20_000
            assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
