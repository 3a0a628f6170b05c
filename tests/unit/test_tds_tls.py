"""TLS inside TDS (shared/codecs/tds/tls_in_tds.py): handshakes in memory for TDS 7.x and TDS 8.0."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

from shared.codecs.tds.login7 import Login7, decode_login7, encode_login7
from shared.codecs.tds.packets import (
    MessageAssembler,
    PacketParser,
    PacketType,
    TdsError,
    encode_message,
)
from shared.codecs.tds.tls_in_tds import (
    ALPN_TDS8,
    TlsEngine,
    check_server_identity,
    client_context,
    server_context,
    wrap_handshake,
)
from shared.pki import KeyPair, create_ca, issue_server


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    return create_ca("tds-test")


@pytest.fixture(scope="module")
def server_pair(ca: KeyPair) -> KeyPair:
    return issue_server(ca, "sql.example", ["127.0.0.1", "sql.example"])


class Unwrapper:
    """One direction of a TDS 7.x handshake: PRELOGIN packets in, TLS bytes out."""

    def __init__(self) -> None:
        self.parser = PacketParser()
        self.assembler = MessageAssembler(64 * 1024)

    def unwrap(self, wire: bytes) -> bytes:
        out = []
        for packet in self.parser.feed(wire):
            assert packet.type == PacketType.PRELOGIN
            message = self.assembler.add(packet)
            if message is not None:
                out.append(message.payload)
        return b"".join(out)


def tds7_handshake(client: TlsEngine, server: TlsEngine, packet_size: int = 4096) -> int:
    """Run the handshake in PRELOGIN packets; return the number of flights."""
    to_server, to_client = Unwrapper(), Unwrapper()
    client.start()
    wire = wrap_handshake(client.pending_output(), packet_size)
    flights = 0
    while wire:
        flights += 1
        assert flights < 10
        was_done = server.handshake_done
        assert server.receive(to_server.unwrap(wire)) == b""
        output = server.pending_output()
        back = wrap_handshake(output, packet_size) if not was_done else output
        was_done = client.handshake_done
        assert client.receive(to_client.unwrap(back)) == b""
        output = client.pending_output()
        wire = wrap_handshake(output, packet_size) if not was_done else output
    return flights


def test_tds7_handshake_in_prelogin_packets_then_raw_records(
    ca: KeyPair, server_pair: KeyPair
) -> None:
    server = TlsEngine(
        server_context(server_pair.certificate_pem, server_pair.key_pem, tds8=False), True
    )
    client = TlsEngine(client_context(ca.certificate_pem, tds8=False, verify=True), False)
    tds7_handshake(client, server)
    assert client.handshake_done and server.handshake_done
    assert client.protocol_version() == server.protocol_version() == "TLSv1.2"
    assert client.alpn() is None
    check_server_identity(client.connection, "127.0.0.1")
    check_server_identity(client, "sql.example")
    certificate = client.peer_certificate()
    assert certificate is not None
    assert certificate.public_bytes(Encoding.PEM) == server_pair.certificate_pem
    # After the handshake: whole TDS packets as TLS application data, no wrapping.
    login = Login7(hostname="client", username="placeholder", password="not-a-secret")
    packets = encode_message(PacketType.LOGIN7, encode_login7(login))
    client.send(packets)
    records = client.pending_output()
    assert records[:1] == b"\x17"  # a TLS application-data record, not a TDS header
    assert "placeholder".encode("utf-16-le") not in records
    plain = server.receive(records)
    (packet,) = PacketParser().feed(plain)
    assert decode_login7(packet.payload) == login
    server.send(b"reply")
    assert client.receive(server.pending_output()) == b"reply"


def test_tds7_handshake_with_small_packets(ca: KeyPair, server_pair: KeyPair) -> None:
    server = TlsEngine(
        server_context(server_pair.certificate_pem, server_pair.key_pem, tds8=False), True
    )
    client = TlsEngine(client_context(ca.certificate_pem, tds8=False, verify=True), False)
    tds7_handshake(client, server, packet_size=512)
    assert client.handshake_done and server.handshake_done


def test_tds7_context_refuses_tls13_only_peer(ca: KeyPair, server_pair: KeyPair) -> None:
    server = TlsEngine(
        server_context(server_pair.certificate_pem, server_pair.key_pem, tds8=False), True
    )
    context = client_context(ca.certificate_pem, tds8=True, verify=True)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    client = TlsEngine(context, False)
    client.start()
    with pytest.raises(TdsError, match="TLS handshake failed"):
        server.receive(client.pending_output())


def raw_handshake(client: TlsEngine, server: TlsEngine) -> None:
    client.start()
    data = client.pending_output()
    for _ in range(10):
        if not data:
            break
        server.receive(data)
        client.receive(server.pending_output())
        data = client.pending_output()


def test_tds8_handshake_negotiates_tls13_and_alpn(ca: KeyPair, server_pair: KeyPair) -> None:
    server = TlsEngine(
        server_context(server_pair.certificate_pem, server_pair.key_pem, tds8=True), True
    )
    client = TlsEngine(
        client_context(ca.certificate_pem, tds8=True, verify=True), False, b"sql.example"
    )
    raw_handshake(client, server)
    assert client.handshake_done and server.handshake_done
    assert client.protocol_version() == "TLSv1.3"
    assert client.alpn() == server.alpn() == ALPN_TDS8 == b"tds/8.0"
    assert server.connection.get_servername() == b"sql.example"
    check_server_identity(client, "sql.example")
    # PRELOGIN runs inside the tunnel.
    client.send(encode_message(PacketType.PRELOGIN, b"\xff"))
    (packet,) = PacketParser().feed(server.receive(client.pending_output()))
    assert packet.type == PacketType.PRELOGIN and packet.payload == b"\xff"


def test_tds8_server_without_alpn_from_client(ca: KeyPair, server_pair: KeyPair) -> None:
    server = TlsEngine(
        server_context(server_pair.certificate_pem, server_pair.key_pem, tds8=True), True
    )
    context = client_context(ca.certificate_pem, tds8=True, verify=True)
    context.set_alpn_protos([b"h2"])
    client = TlsEngine(context, False)
    raw_handshake(client, server)
    assert client.handshake_done and client.alpn() is None


def test_identity_check_fails_for_another_name(ca: KeyPair, server_pair: KeyPair) -> None:
    server = TlsEngine(
        server_context(server_pair.certificate_pem, server_pair.key_pem, tds8=True), True
    )
    client = TlsEngine(client_context(ca.certificate_pem, tds8=True, verify=True), False)
    raw_handshake(client, server)
    with pytest.raises(TdsError, match="not valid for 127.0.0.2"):
        check_server_identity(client, "127.0.0.2")
    with pytest.raises(TdsError, match="not valid for other.example"):
        check_server_identity(client.connection, "other.example")


def test_untrusted_certificate_fails_the_handshake(server_pair: KeyPair) -> None:
    other_ca = create_ca("someone-else")
    server = TlsEngine(
        server_context(server_pair.certificate_pem, server_pair.key_pem, tds8=False), True
    )
    client = TlsEngine(client_context(other_ca.certificate_pem, tds8=False, verify=True), False)
    with pytest.raises(TdsError, match="certificate verify failed"):
        tds7_handshake(client, server)


def test_unverified_client_accepts_any_certificate(server_pair: KeyPair) -> None:
    server = TlsEngine(
        server_context(server_pair.certificate_pem, server_pair.key_pem, tds8=False), True
    )
    client = TlsEngine(client_context(None, tds8=False, verify=False), False)
    tds7_handshake(client, server)
    assert client.handshake_done


def test_login_only_session_is_dropped_without_close_notify(
    ca: KeyPair, server_pair: KeyPair
) -> None:
    server = TlsEngine(
        server_context(server_pair.certificate_pem, server_pair.key_pem, tds8=False), True
    )
    client = TlsEngine(client_context(ca.certificate_pem, tds8=False, verify=True), False)
    tds7_handshake(client, server)
    client.send(encode_message(PacketType.LOGIN7, b"login"))
    assert PacketParser().feed(server.receive(client.pending_output()))[0].payload == b"login"
    assert server.pending_output() == b""  # nothing owed: the session can just be dropped
    client.close()
    server.receive(client.pending_output())
    assert server.closed


def test_send_before_handshake_and_bad_key(ca: KeyPair, server_pair: KeyPair) -> None:
    client = TlsEngine(client_context(ca.certificate_pem, tds8=False, verify=True), False)
    with pytest.raises(TdsError, match="before the handshake"):
        client.send(b"x")
    other = issue_server(ca, "other", ["127.0.0.1"])
    with pytest.raises(TdsError, match="does not fit its key"):
        server_context(server_pair.certificate_pem, other.key_pem, tds8=False)
    with pytest.raises(TdsError, match="cannot read the certificates"):
        server_context(b"", server_pair.key_pem, tds8=False)
    with pytest.raises(TdsError, match="cannot read the server key"):
        server_context(server_pair.certificate_pem, b"junk", tds8=False)


def test_wrap_handshake_is_a_prelogin_message() -> None:
    assert wrap_handshake(b"") == b""
    wire = wrap_handshake(bytes(5000), 4096)
    packets = PacketParser().feed(wire)
    assert [p.type for p in packets] == [0x12, 0x12]
    assert [p.eom for p in packets] == [False, True]
