"""What the data path assumes of Twisted: the TLS write path, and TCP's write buffer.

L{ChannelTLSProtocol} overrides C{write} of Twisted's L{TLSMemoryBIOProtocol}
to encrypt a whole frame in one C{SSL_write} and send it at once.  It used to
override private members (C{_write}, C{_flushSendBIO}) and call others
(C{_bufferedWrite}, C{_tlsShutdownFinished}, C{_tlsConnection},
C{_lostTLSConnection}); a Twisted release that changed them would have broken
the data path silently.  These tests fail if the class starts to depend on
Twisted's private members again, if the public interfaces it relies on change
(C{write}, C{getHandle}, C{disconnecting}), or if its behaviour does: one
C{SSL_write} and one transport write per frame, bytes intact and in order,
writes Twisted holds back never overtaken, errors reported by Twisted.

The other assumption is L{write_now}'s (shared/protocol/sockets.py): it reads
the write-buffer state of Twisted's TCP connection, private attributes of
C{FileDescriptor}; the last tests check them on a real C{tcp.Connection}.
setup.cfg pins Twisted to the range these tests pass on.
"""

from __future__ import annotations

import ast
import inspect
import socket
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from OpenSSL import SSL
from twisted.internet import tcp
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump, connectedServerAndClient

from shared import pki
from shared.protocol.sockets import write_now
from shared.protocol.tls import (
    ChannelTLSProtocol,
    client_options,
    server_options,
    wrap_client,
    wrap_server,
)


class Sink(Protocol):
    """Collects what arrives, and how the connection ended."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = reason


class Channel:
    """A console-side ChannelTLSProtocol and a Jumpoint-side one, over in-memory TCP."""

    def __init__(self, *, handshake: bool = True) -> None:
        ca = pki.create_ca("unit")
        server_keys = pki.issue_server(ca, "unit", ["127.0.0.1"])
        client_keys = pki.issue_client(ca, "alice", "default")
        self.peer = Sink()
        self.app = Sink()
        self.server = wrap_server(
            server_options(ca.certificate_pem, server_keys.certificate_pem, server_keys.key_pem),
            Factory.forProtocol(lambda: self.peer),
        ).buildProtocol(None)
        self.client = wrap_client(
            client_options(
                "127.0.0.1", ca.certificate_pem, client_keys.certificate_pem, client_keys.key_pem
            ),
            Factory.forProtocol(lambda: self.app),
        ).buildProtocol(None)
        assert isinstance(self.client, ChannelTLSProtocol)
        self.pump: IOPump
        _, _, self.pump = connectedServerAndClient(
            lambda: self.server, lambda: self.client, greet=handshake
        )
        self.connection = self.client.getHandle()
        assert isinstance(self.connection, SSL.Connection)
        self.ssl_writes: list[int] = []
        self.tcp_writes: list[int] = []
        real_send = self.connection.send

        def counting_send(data: Any, flags: int = 0) -> int:
            self.ssl_writes.append(len(data))
            return real_send(data, flags)

        self.connection.send = counting_send  # type: ignore[method-assign]
        tcp = self.client.transport
        assert tcp is not None
        real_write = tcp.write

        def counting_write(data: bytes) -> None:
            self.tcp_writes.append(len(data))
            real_write(data)

        tcp.write = counting_write  # type: ignore[method-assign]

    def write(self, data: bytes) -> None:
        """What the multiplexer does: write to the TLS transport of the channel protocol."""
        assert self.app.transport is not None
        self.app.transport.write(data)


def _twisted_class() -> set[str]:
    """The attributes Twisted's TLS protocol and its base classes define."""
    return {name for cls in TLSMemoryBIOProtocol.__mro__ for name in vars(cls)}


def _twisted_names() -> set[str]:
    """Those, and the instance attributes of a live, connected TLSMemoryBIOProtocol."""
    ca = pki.create_ca("unit")
    keys = pki.issue_server(ca, "unit", ["127.0.0.1"])
    options = server_options(ca.certificate_pem, keys.certificate_pem, keys.key_pem)
    server = TLSMemoryBIOFactory(options, False, Factory.forProtocol(Sink)).buildProtocol(None)
    client = TLSMemoryBIOFactory(
        client_options("127.0.0.1", ca.certificate_pem, *_client_pems(ca)),
        True,
        Factory.forProtocol(Sink),
    ).buildProtocol(None)
    _, _, pump = connectedServerAndClient(lambda: server, lambda: client)
    pump.flush()
    assert client.getHandle() is not None  # connected: the instance has its TLS state
    return _twisted_class() | set(vars(server)) | set(vars(client))


def _client_pems(ca: pki.KeyPair) -> tuple[bytes, bytes]:
    client = pki.issue_client(ca, "alice", "default")
    return client.certificate_pem, client.key_pem


# -- no private Twisted member is overridden or used ----------------------------------


def test_only_public_members_of_twisted_are_overridden() -> None:
    ours = {name for name in vars(ChannelTLSProtocol) if not name.startswith("__")}  # no dunders
    overridden = ours & _twisted_class()
    assert overridden == {"write"}, f"overrides Twisted's {sorted(overridden - {'write'})}"
    own_private = {name for name in ours - overridden if name.startswith("_")}
    assert own_private, "the test no longer sees the class's own members"
    clashes = own_private & _twisted_names()
    assert not clashes, f"private names that Twisted's TLSMemoryBIOProtocol also has: {clashes}"


def test_no_private_twisted_attribute_is_read_or_called() -> None:
    tree = ast.parse(textwrap.dedent(inspect.getsource(ChannelTLSProtocol)))
    ours = set(vars(ChannelTLSProtocol))
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    }
    assert "getHandle" in used and "transport" in used  # the scan sees the method bodies
    private = {name for name in used if name.startswith("_") and name not in ours}
    assert not private, f"reads Twisted's private {sorted(private)}"


def test_the_public_twisted_interfaces_used_are_as_expected() -> None:
    parameters = list(inspect.signature(TLSMemoryBIOProtocol.write).parameters)
    assert len(parameters) == 2 and parameters[0] == "self"  # write(self, data)
    assert list(inspect.signature(TLSMemoryBIOProtocol.getHandle).parameters) == ["self"]
    channel = Channel()
    assert isinstance(channel.client.getHandle(), SSL.Connection)
    assert channel.client.disconnecting is False or channel.client.disconnecting == 0
    assert isinstance(channel.connection.get_peer_finished(), bytes)


# -- behaviour --------------------------------------------------------------------------


def test_a_frame_is_one_ssl_write_and_one_socket_write_and_reaches_the_peer() -> None:
    channel = Channel()
    frame = bytes(range(256)) * 64  # 16 KiB: one TLS record
    channel.write(frame)
    assert channel.ssl_writes == [len(frame)]
    assert len(channel.tcp_writes) == 1 and channel.tcp_writes[0] > len(frame)
    channel.pump.flush()
    assert bytes(channel.peer.received) == frame


def test_a_large_frame_is_handed_to_openssl_whole_and_leaves_in_one_socket_write() -> None:
    """pyOpenSSL enables partial writes: OpenSSL takes one 16 KiB record per SSL_write.

    Each call is offered the whole rest of the frame (Twisted's own write slices
    it in 16 KiB pieces and writes each record to the transport on its own).
    """
    channel = Channel()
    frame = bytes(range(256)) * 256  # 64 KiB, the largest DATA chunk: four TLS records
    channel.write(frame)
    assert channel.ssl_writes == [65536, 49152, 32768, 16384]
    assert len(channel.tcp_writes) == 1 and channel.tcp_writes[0] > len(frame)
    channel.pump.flush()
    assert bytes(channel.peer.received) == frame


def test_frames_arrive_in_order_one_socket_write_each() -> None:
    channel = Channel()
    frames = [bytes([n]) * (1 + n * 1000) for n in range(20)]
    for frame in frames:
        channel.write(frame)
    assert len(channel.tcp_writes) == len(frames)
    assert channel.ssl_writes[:17] == [len(frame) for frame in frames[:17]]  # <= 16 KiB: one
    channel.pump.flush()
    assert bytes(channel.peer.received) == b"".join(frames)


def test_a_write_before_the_handshake_is_twisteds_and_nothing_overtakes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    twisted_writes: list[int] = []
    twisted_write = TLSMemoryBIOProtocol.write

    def counting(self: TLSMemoryBIOProtocol, data: bytes) -> None:
        twisted_writes.append(len(data))
        twisted_write(self, data)

    monkeypatch.setattr(TLSMemoryBIOProtocol, "write", counting)
    channel = Channel(handshake=False)
    channel.write(b"early")  # Twisted holds it until the handshake is done
    assert twisted_writes == [5]
    channel.pump.flush()
    channel.write(b"late")
    assert twisted_writes == [5, 4]  # from then on every write is Twisted's
    channel.pump.flush()
    assert bytes(channel.peer.received) == b"earlylate"


def test_after_openssl_wants_to_read_every_write_is_twisteds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    channel = Channel()
    channel.write(b"first ")
    real_send = channel.connection.send
    refused: list[int] = []

    def want_read_once(data: Any, flags: int = 0) -> int:
        if not refused:
            refused.append(len(data))
            raise SSL.WantReadError()
        return real_send(data, flags)

    channel.connection.send = want_read_once  # type: ignore[method-assign]
    twisted_writes: list[bytes] = []
    twisted_write = TLSMemoryBIOProtocol.write

    def counting(self: TLSMemoryBIOProtocol, data: bytes) -> None:
        twisted_writes.append(bytes(data))
        twisted_write(self, data)

    monkeypatch.setattr(TLSMemoryBIOProtocol, "write", counting)
    channel.write(b"second ")
    channel.write(b"third")
    assert refused == [7]
    assert twisted_writes == [b"second ", b"third"]
    channel.pump.flush()
    assert bytes(channel.peer.received) == b"first second third"


def test_an_openssl_error_is_reported_by_twisted() -> None:
    channel = Channel()

    def broken(data: Any, flags: int = 0) -> int:
        raise SSL.Error([("SSL routines", "", "unit test failure")])

    channel.connection.send = broken  # type: ignore[method-assign]
    channel.write(b"lost")
    channel.pump.flush()
    assert channel.app.lost is not None
    assert "unit test failure" in str(channel.app.lost.value)
    assert bytes(channel.peer.received) == b""


def test_writes_after_lose_connection_are_dropped_as_twisted_drops_them() -> None:
    channel = Channel()
    channel.write(b"before")
    assert channel.app.transport is not None
    channel.app.transport.loseConnection()
    channel.write(b"after")
    channel.pump.flush()
    assert bytes(channel.peer.received) == b"before"
    assert channel.app.lost is not None and channel.peer.lost is not None


# -- write_now reads the write buffer of Twisted's TCP connection ----------------------
#
# shared/protocol/sockets.py writes to the socket of an idle Twisted TCP connection
# itself; it decides "idle" from FileDescriptor's own attributes (connected,
# disconnecting, _writeDisconnecting, _tempDataBuffer, offset, dataBuffer). These
# tests use a real twisted.internet.tcp.Connection, so a Twisted release that renames
# or reuses them fails here instead of reordering or losing bytes on the data path.


@pytest.fixture
def tcp_pair() -> Iterator[tuple[tcp.Connection, socket.socket]]:
    left, right = socket.socketpair()
    left.setblocking(False)
    right.setblocking(False)
    connection = tcp.Connection(left, Protocol(), reactor=MemoryReactor())
    connection.connected = True
    yield connection, right
    left.close()
    right.close()


def _received(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def test_twisted_tcp_has_the_buffer_attributes_write_now_reads(tcp_pair: Any) -> None:
    connection, _ = tcp_pair
    state = {name: getattr(connection, name) for name in _TCP_STATE}
    assert state == {
        "socket": connection.socket,
        "connected": True,
        "disconnecting": 0,
        "_writeDisconnecting": False,
        "_tempDataBuffer": [],
        "offset": 0,
        "dataBuffer": b"",
    }
    assert "socket" in vars(connection)  # its own attribute, not one forwarded by a wrapper


_TCP_STATE = (
    "socket",
    "connected",
    "disconnecting",
    "_writeDisconnecting",
    "_tempDataBuffer",
    "offset",
    "dataBuffer",
)


def test_write_now_goes_straight_to_an_idle_twisted_socket(tcp_pair: Any) -> None:
    connection, peer = tcp_pair
    write_now(connection, b"direct")
    assert _received(peer) == b"direct"  # no doWrite needed: the kernel has it
    assert not connection._tempDataBuffer


def test_write_now_queues_behind_twisteds_buffer_and_keeps_order(tcp_pair: Any) -> None:
    connection, peer = tcp_pair
    connection.write(b"queued ")  # Twisted's buffer: sent on the reactor's next doWrite
    write_now(connection, b"after")
    assert _received(peer) == b""  # write_now did not overtake the buffered bytes
    connection.doWrite()
    assert _received(peer) == b"queued after"
    write_now(connection, b" direct again")  # the buffer is empty again
    assert _received(peer) == b" direct again"


def test_write_now_leaves_a_half_closing_twisted_socket_to_twisted(tcp_pair: Any) -> None:
    connection, peer = tcp_pair
    connection.loseWriteConnection()  # the buffer is empty; the FIN goes on doWrite
    assert not connection._tempDataBuffer and connection.offset == len(connection.dataBuffer)
    write_now(connection, b"queued or dropped, never direct")
    assert _received(peer) == b""
