"""The console's SQL Server leg (L{ClientLeg}) against a real TLS client, and its Twisted bridge.

No sockets: the client is a L{TlsEngine} on memory BIOs that trusts a local
CA, the bytes are handed over by hand, in whatever chunks a test chooses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from console.tds_client_leg import (
    STRICT_PRELOGIN_REPLY,
    WINDOWS_AUTH_REFUSED,
    ClientLeg,
    LegOutput,
)
from console.tds_proxy import TdsClientHandler, TdsLocalConnection
from shared.bridge import TcpBridge
from shared.codecs.tds.login7 import (
    FEATURE_FEDAUTH,
    FEATURE_UTF8_SUPPORT,
    OPT2_INT_SECURITY,
    OPT3_CHANGE_PASSWORD,
    OPT3_USER_INSTANCE,
    TDS74,
    Login7,
    decode_login7,
    encode_feature_ext,
    encode_login7,
    obfuscate_password,
)
from shared.codecs.tds.packets import (
    Message,
    MessageAssembler,
    Packet,
    PacketParser,
    PacketType,
    encode_message,
)
from shared.codecs.tds.prelogin import Encryption, client_prelogin, decode_prelogin
from shared.codecs.tds.tls_in_tds import ALPN_TDS8, TlsEngine, client_context, wrap_handshake
from shared.codecs.tds.tokens import (
    done_token,
    envchange_packet_size,
    loginack_token,
    scan_login_response,
)
from shared.pki import KeyPair, create_ca, issue_server
from shared.protocol.frames import FrameParser, FrameType
from shared.protocol.mux import Multiplexer, MuxSettings, Stream

PASSWORD = "Pl@ceholder-Pa55word"
SECRET_FORMS = (
    PASSWORD.encode("utf-16-le"),
    obfuscate_password(PASSWORD),
    PASSWORD.encode("utf-8"),
)
LOGIN_RESPONSE = encode_message(
    PacketType.TABULAR,
    loginack_token() + envchange_packet_size(4096, 4096) + done_token(),
)
BATCH = encode_message(PacketType.SQL_BATCH, "SELECT 1".encode("utf-16-le"))
ATTENTION = encode_message(PacketType.ATTENTION, b"")


# -- fixtures and helpers ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pki:
    ca: KeyPair
    listener: KeyPair


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = create_ca("test console")
    return Pki(ca, issue_server(ca, "jump 127.0.0.6", ["127.0.0.6", "localhost"]))


def make_leg(pki: Pki, **options: Any) -> ClientLeg:
    return ClientLeg(pki.listener.certificate_pem, pki.listener.key_pem, **options)


def client_login(**changes: Any) -> Login7:
    """A LOGIN7 like the ones real clients send, with a password to strip."""
    login = Login7(
        tds_version=TDS74,
        packet_size=8192,
        client_prog_ver=0x07000000,
        client_pid=4242,
        connection_id=0,
        option_flags1=0xE0,
        option_flags2=0x03,
        type_flags=0x20,
        option_flags3=0x08,
        client_timezone=-60,
        client_lcid=0x0409,
        hostname="laptop-17",
        username="anyone",
        password=PASSWORD,
        appname="pymssql=2.4.6",
        servername="127.0.0.6",
        feature_ext=encode_feature_ext([(FEATURE_UTF8_SUPPORT, b"\x01")]),
        clt_int_name="DB-Library",
        language="us_english",
        database="sales",
        client_id=bytes.fromhex("0a1b2c3d4e5f"),
    )
    return dataclasses.replace(login, **changes)


def big_login() -> Login7:
    """A LOGIN7 of more than one 4096-byte packet."""
    return client_login(hostname="h" * 1500, language="l" * 1200)


def expected_at_jumpoint(login: Login7) -> Login7:
    """The client's login minus its credentials, every other field kept."""
    return dataclasses.replace(login, username="", password="")


def messages(data: bytes, max_message: int = 1 << 20) -> list[Message]:
    assembler = MessageAssembler(max_message)
    found = []
    for packet in PacketParser().feed(data):
        message = assembler.add(packet)
        if message is not None:
            found.append(message)
    assert not assembler.in_progress
    return found


def packets(data: bytes) -> list[Packet]:
    parser = PacketParser()
    found = parser.feed(data)
    assert parser.buffered == 0
    return found


def chunks(data: bytes, sizes: Iterable[int]) -> Iterator[bytes]:
    """C{data} cut at the given sizes (cycled), the rest in one piece."""
    position = 0
    for size in sizes:
        if position >= len(data):
            return
        yield data[position : position + size]
        position += size
    if position < len(data):
        yield data[position:]


class Client:
    """A SQL Server client's side of one connection, driving a L{ClientLeg}."""

    def __init__(self, leg: ClientLeg, pki: Pki) -> None:
        self.leg = leg
        self.pki = pki
        self.engine: TlsEngine | None = None
        self.to_jumpoint = bytearray()
        self.closes: list[str] = []

    def send(self, data: bytes, sizes: Iterable[int] | None = None) -> bytes:
        """Feed C{data} (in chunks of C{sizes}, else at once); return what came back."""
        back = bytearray()
        for piece in [data] if sizes is None else chunks(data, sizes):
            out = self.leg.from_client(piece)
            assert isinstance(out, LegOutput)
            back += out.to_client
            self.to_jumpoint += out.to_jumpoint
            if out.close is not None:
                self.closes.append(out.close)
        return bytes(back)

    def prelogin(self, encryption: Encryption) -> Any:
        reply = self.send(encode_message(PacketType.PRELOGIN, client_prelogin(encryption)))
        (message,) = messages(reply)
        assert message.type == PacketType.TABULAR
        return decode_prelogin(message.payload)

    def tds7_handshake(self) -> None:
        """The TDS 7.x handshake: every flight inside PRELOGIN packets, both ways."""
        engine = TlsEngine(
            client_context(self.pki.ca.certificate_pem, tds8=False, verify=True), server_side=False
        )
        self.engine = engine
        engine.start()
        flight = engine.pending_output()
        while not engine.handshake_done:
            assert flight, "the client has nothing to send but the handshake is not done"
            reply = self.send(wrap_handshake(flight))
            found = messages(reply)
            assert [m.type for m in found] == [PacketType.PRELOGIN]
            assert engine.receive(found[0].payload) == b""
            flight = engine.pending_output()
        assert flight == b""

    def strict_handshake(self) -> None:
        """TDS 8.0: TLS first, raw records."""
        engine = TlsEngine(
            client_context(self.pki.ca.certificate_pem, tds8=True, verify=True),
            server_side=False,
            server_name=b"localhost",
        )
        self.engine = engine
        engine.start()
        flight = engine.pending_output()
        while flight:
            engine.receive(self.send(flight))
            flight = engine.pending_output()
        assert engine.handshake_done

    def send_tls(self, plain: bytes, sizes: Iterable[int] | None = None) -> bytes:
        """Encrypt C{plain}, feed the records; return the decrypted reply."""
        assert self.engine is not None
        self.engine.send(plain)
        back = self.send(self.engine.pending_output(), sizes)
        return self.engine.receive(back) if back else b""

    def decrypt(self, records: bytes) -> bytes:
        assert self.engine is not None
        return self.engine.receive(records)


def login_message(login: Login7) -> bytes:
    return encode_message(PacketType.LOGIN7, encode_login7(login), 4096)


def login_at_jumpoint(data: bytes) -> tuple[Login7, bytes]:
    """The LOGIN7 at the front of what the Jumpoint got (checked), and the bytes after it."""
    parser = PacketParser()
    assembler = MessageAssembler(1 << 20)
    found = parser.feed(data)
    consumed = 0
    for index, packet in enumerate(found):
        assert packet.type == PacketType.LOGIN7
        consumed += 8 + len(packet.payload)
        assert 8 + len(packet.payload) <= 4096
        assert packet.packet_id == index + 1
        message = assembler.add(packet)
        if message is not None:
            return decode_login7(message.payload), data[consumed:]
    raise AssertionError("no whole LOGIN7 reached the Jumpoint")


def assert_no_secret(data: bytes | str) -> None:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    for form in SECRET_FORMS:
        assert form not in raw


ASKED = {"none": Encryption.NOT_SUP, "login-only": Encryption.OFF, "full": Encryption.ON}


def connect(pki: Pki, mode: str, **options: Any) -> Client:
    """A client that has done PRELOGIN and the handshake of C{mode}, ready to send LOGIN7."""
    client = Client(make_leg(pki, **options), pki)
    if mode == "strict":
        client.strict_handshake()
        client.send_tls(encode_message(PacketType.PRELOGIN, client_prelogin(Encryption.NOT_SUP)))
    else:
        client.prelogin(ASKED[mode])
        if mode != "none":
            client.tds7_handshake()
    return client


def send_login(client: Client, data: bytes, sizes: Iterable[int] | None = None) -> bytes:
    """Send LOGIN7 bytes as the mode wants; return the answer as TDS bytes (decrypted)."""
    mode = client.leg.mode
    if mode == "none":
        return client.send(data, sizes)
    if mode == "login-only":
        # Encrypted, but the answer (like the server's login response) comes in clear.
        assert client.engine is not None
        client.engine.send(data)
        return client.send(client.engine.pending_output(), sizes)
    return client.send_tls(data, sizes)


def tls_login(pki: Pki, mode: str, login: Login7 | None = None) -> Client:
    """A client logged in (LOGIN7 sent) in C{mode}: none, login-only, full or strict."""
    client = connect(pki, mode)
    assert send_login(client, login_message(login or client_login())) == b""
    assert client.closes == []
    assert client.leg.mode == mode and client.leg.logged_in
    return client


# -- PRELOGIN negotiation ------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "reply", "mode"),
    [
        (Encryption.OFF, Encryption.OFF, "login-only"),
        (Encryption.ON, Encryption.ON, "full"),
        (Encryption.REQ, Encryption.ON, "full"),
        (Encryption.NOT_SUP, Encryption.NOT_SUP, "none"),
    ],
)
def test_prelogin_reply_follows_the_table_and_always_has_mars_off(
    pki: Pki, asked: Encryption, reply: Encryption, mode: str
) -> None:
    client = Client(make_leg(pki), pki)
    answer = client.prelogin(asked)
    assert answer.encryption is reply
    assert answer.mars is False  # present, and off
    assert answer.version is not None
    assert client.leg.mode == mode and client.leg.client_encryption is asked
    assert client.to_jumpoint == b"" and client.closes == []


def test_prelogin_split_over_packets_and_bytes(pki: Pki) -> None:
    payload = client_prelogin(Encryption.NOT_SUP)
    data = encode_message(PacketType.PRELOGIN, payload, packet_size=8 + 7)
    client = Client(make_leg(pki), pki)
    (message,) = messages(client.send(data, [1] * len(data)))
    assert decode_prelogin(message.payload).encryption is Encryption.NOT_SUP


# -- the four modes ---------------------------------------------------------


def test_no_encryption_login7_in_clear(pki: Pki) -> None:
    client = tls_login(pki, "none")
    login, rest = login_at_jumpoint(bytes(client.to_jumpoint))
    assert login == expected_at_jumpoint(client_login()) and rest == b""
    assert client.leg.tls_version is None
    assert client.leg.from_jumpoint(LOGIN_RESPONSE) == LOGIN_RESPONSE
    client.to_jumpoint.clear()
    assert client.send(BATCH) == b"" and client.to_jumpoint == BATCH


def test_login_only_handshake_in_prelogin_packets_then_clear(pki: Pki) -> None:
    client = tls_login(pki, "login-only")
    assert client.leg.tls_version == "TLSv1.2"
    login, rest = login_at_jumpoint(bytes(client.to_jumpoint))
    assert login == expected_at_jumpoint(client_login()) and rest == b""
    # The TLS session is gone: the login response and everything after are in clear.
    assert client.leg.from_jumpoint(LOGIN_RESPONSE) == LOGIN_RESPONSE
    client.to_jumpoint.clear()
    assert client.send(BATCH + ATTENTION) == b""
    assert client.to_jumpoint == BATCH + ATTENTION and client.closes == []


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sizes=st.lists(st.integers(min_value=1, max_value=900), min_size=1, max_size=30))
def test_login_only_freetds_encrypts_only_the_first_login7_packet(
    pki: Pki, sizes: list[int]
) -> None:
    login = big_login()
    client = Client(make_leg(pki), pki)
    client.prelogin(Encryption.OFF)
    client.tds7_handshake()
    first, *others = packets(login_message(login))
    assert others, "the LOGIN7 must need several packets"
    assert client.engine is not None
    client.engine.send(first.encode())
    records = client.engine.pending_output()
    clear = b"".join(p.encode() for p in others)
    client.send(records + clear + BATCH, sizes)
    assert client.closes == []
    found, rest = login_at_jumpoint(bytes(client.to_jumpoint))
    assert found == expected_at_jumpoint(login)
    assert rest == BATCH


def test_full_tls_everything_after_the_handshake_is_encrypted(pki: Pki) -> None:
    client = tls_login(pki, "full")
    assert client.leg.tls_version == "TLSv1.2"
    login, rest = login_at_jumpoint(bytes(client.to_jumpoint))
    assert login == expected_at_jumpoint(client_login()) and rest == b""
    records = client.leg.from_jumpoint(LOGIN_RESPONSE)
    assert records and LOGIN_RESPONSE not in records
    assert client.decrypt(records) == LOGIN_RESPONSE
    client.to_jumpoint.clear()
    assert client.send_tls(BATCH) == b""
    assert client.to_jumpoint == BATCH


def test_strict_tls_first_alpn_tds8_tls13(pki: Pki) -> None:
    client = Client(make_leg(pki), pki)
    client.strict_handshake()
    assert client.leg.mode == "strict"
    assert client.engine is not None
    assert client.engine.alpn() == ALPN_TDS8 and client.leg.alpn == ALPN_TDS8
    assert client.engine.protocol_version() == "TLSv1.3" == client.leg.tls_version
    reply = client.send_tls(
        encode_message(PacketType.PRELOGIN, client_prelogin(Encryption.NOT_SUP))
    )
    (message,) = messages(reply)
    assert message.type == PacketType.TABULAR
    answer = decode_prelogin(message.payload)
    assert answer.encryption is STRICT_PRELOGIN_REPLY is Encryption.NOT_SUP
    assert answer.mars is False
    assert client.to_jumpoint == b""
    client.send_tls(login_message(client_login()))
    login, rest = login_at_jumpoint(bytes(client.to_jumpoint))
    assert login == expected_at_jumpoint(client_login()) and rest == b""
    assert client.decrypt(client.leg.from_jumpoint(LOGIN_RESPONSE)) == LOGIN_RESPONSE


@pytest.mark.parametrize("mode", ["none", "login-only", "full", "strict"])
def test_full_duplex_after_login(pki: Pki, mode: str) -> None:
    """An attention while results stream: both directions keep their bytes and order."""
    client = tls_login(pki, mode)
    client.to_jumpoint.clear()
    encrypted = mode in ("full", "strict")
    received = bytearray()
    rows = [encode_message(PacketType.TABULAR, bytes([n]) * 3000) for n in range(5)]
    for index, row in enumerate(rows):
        out = client.leg.from_jumpoint(row)
        received += client.decrypt(out) if encrypted else out
        if index == 2:
            if encrypted:
                client.send_tls(ATTENTION)
            else:
                client.send(ATTENTION)
    assert received == b"".join(rows)
    assert client.to_jumpoint == ATTENTION


# -- what reaches the Jumpoint ------------------------------------------------


@pytest.mark.parametrize("mode", ["none", "login-only", "full", "strict"])
def test_the_password_never_reaches_the_jumpoint(pki: Pki, mode: str) -> None:
    login = client_login(
        change_password=PASSWORD,
        attach_db_file="C:\\db\\x.mdf",
        option_flags3=0x08 | OPT3_CHANGE_PASSWORD | OPT3_USER_INSTANCE,
        feature_ext=encode_feature_ext(
            [
                (FEATURE_FEDAUTH, b"\x02" + PASSWORD.encode("utf-16-le")),
                (FEATURE_UTF8_SUPPORT, b"\x01"),
            ]
        ),
    )
    client = tls_login(pki, mode, login)
    sent = bytes(client.to_jumpoint)
    assert_no_secret(sent)
    found, _ = login_at_jumpoint(sent)
    assert found.username == found.password == found.change_password == ""
    assert found.attach_db_file == ""
    assert not found.option_flags3 & (OPT3_CHANGE_PASSWORD | OPT3_USER_INSTANCE)
    assert found.features == ((FEATURE_UTF8_SUPPORT, b"\x01"),)
    assert found == login.without_credentials()
    assert found.hostname == "laptop-17" and found.database == "sales"
    assert found.packet_size == 8192 and found.servername == "127.0.0.6"
    assert_no_secret(repr(vars(client.leg)))


@pytest.mark.parametrize("mode", ["none", "login-only", "full"])
def test_a_multi_packet_login7_fed_one_byte_at_a_time(pki: Pki, mode: str) -> None:
    login = big_login()
    data = login_message(login)
    assert len(packets(data)) >= 2
    client = Client(make_leg(pki), pki)
    asked = {"none": Encryption.NOT_SUP, "login-only": Encryption.OFF, "full": Encryption.ON}
    client.prelogin(asked[mode])
    if mode == "none":
        client.send(data, [1] * len(data))
    else:
        client.tds7_handshake()
        client.send_tls(data, [1] * (2 * len(data)))
    assert client.closes == []
    found, rest = login_at_jumpoint(bytes(client.to_jumpoint))
    assert found == expected_at_jumpoint(login) and rest == b""
    assert_no_secret(bytes(client.to_jumpoint))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    mode=st.sampled_from(["none", "login-only", "full", "strict"]),
    sizes=st.lists(st.integers(min_value=1, max_value=600), min_size=1, max_size=40),
)
def test_any_chunking_gives_the_same_login(pki: Pki, mode: str, sizes: list[int]) -> None:
    login = big_login()
    client = Client(make_leg(pki), pki)
    if mode == "strict":
        client.strict_handshake()
        client.send_tls(
            encode_message(PacketType.PRELOGIN, client_prelogin(Encryption.NOT_SUP)), sizes
        )
    else:
        asked = {"none": Encryption.NOT_SUP, "login-only": Encryption.OFF, "full": Encryption.ON}
        client.prelogin(asked[mode])
        if mode != "none":
            client.tds7_handshake()
    data = login_message(login) + BATCH
    if mode == "none":
        client.send(data, sizes)
    else:
        client.send_tls(data, sizes)
    assert client.closes == []
    found, rest = login_at_jumpoint(bytes(client.to_jumpoint))
    assert found == expected_at_jumpoint(login)
    assert rest == BATCH
    assert_no_secret(bytes(client.to_jumpoint))


# -- refusals and malformed input -----------------------------------------------


@pytest.mark.parametrize("mode", ["none", "login-only", "full", "strict"])
def test_windows_authentication_gets_18456_and_close(pki: Pki, mode: str) -> None:
    login = client_login(
        username="", password="", option_flags2=0x03 | OPT2_INT_SECURITY, sspi=b"NTLMSSP\0\1\0\0\0"
    )
    client = connect(pki, mode)
    reply = send_login(client, login_message(login))
    assert client.closes and "Windows authentication" in client.closes[0]
    assert client.leg.failure == client.closes[0]
    assert client.to_jumpoint == b""
    (message,) = messages(reply)
    assert message.type == PacketType.TABULAR
    (error,) = scan_login_response(message.payload).errors
    assert error.number == 18456 and error.message == WINDOWS_AUTH_REFUSED
    # closed: nothing more in either direction
    assert client.leg.from_jumpoint(LOGIN_RESPONSE) == b""
    assert client.leg.from_client(BATCH).to_jumpoint == b""


@pytest.mark.parametrize(
    "first", [b"GET / HTTP/1.1\r\n\r\n", b"\x10" + bytes(40), b"SSH-2.0-OpenSSH_9.6\r\n"]
)
def test_a_first_byte_that_is_not_tds_or_tls_closes(pki: Pki, first: bytes) -> None:
    client = Client(make_leg(pki), pki)
    assert client.send(first) == b""
    assert client.closes and f"0x{first[0]:02x}" in client.closes[0]
    assert client.leg.mode is None and client.to_jumpoint == b""


@pytest.mark.parametrize("mode", ["none", "login-only", "full", "strict"])
def test_an_oversized_login7_closes(pki: Pki, mode: str) -> None:
    client = connect(pki, mode, max_login=2048)
    data = login_message(big_login())
    reply = send_login(client, data)
    assert client.closes and "exceeds the limit of 2048" in client.closes[0]
    assert client.to_jumpoint == b""
    assert_no_secret(client.closes[0])
    # the client waiting for its login response is told why
    (message,) = messages(reply)
    (error,) = scan_login_response(message.payload).errors
    assert error.number == 18456 and "2048" in error.message


@pytest.mark.parametrize(
    "payload",
    [
        bytes(50),  # shorter than the fixed part
        encode_login7(client_login())[:-4],  # Length field says more
        bytes(encode_login7(client_login())[:40])
        + b"\xff\xff"
        + encode_login7(client_login())[42:],
    ],
    ids=["short", "truncated", "bad-offset"],
)
def test_a_malformed_login7_closes_with_a_reason(pki: Pki, payload: bytes) -> None:
    client = connect(pki, "full")
    send_login(client, encode_message(PacketType.LOGIN7, payload, 4096))
    assert client.closes and "LOGIN7" in client.closes[0]
    assert client.to_jumpoint == b""
    assert_no_secret(client.closes[0])


def test_another_message_instead_of_login7_closes(pki: Pki) -> None:
    client = connect(pki, "none")
    send_login(client, BATCH)
    assert client.closes and "expected LOGIN7" in client.closes[0]


def test_a_malformed_prelogin_closes(pki: Pki) -> None:
    client = Client(make_leg(pki), pki)
    assert client.send(encode_message(PacketType.PRELOGIN, b"\x00\x00\x10\x00\x06")) == b""
    assert client.closes and "PRELOGIN" in client.closes[0]


def test_a_bad_packet_length_closes_before_its_body_arrives(pki: Pki) -> None:
    client = Client(make_leg(pki), pki)
    client.send(b"\x12\x01\x00\x04\x00\x00\x01\x00")
    assert client.closes and "shorter than the 8-byte header" in client.closes[0]


def test_garbage_instead_of_the_tls_handshake_closes(pki: Pki) -> None:
    client = Client(make_leg(pki), pki)
    client.prelogin(Encryption.ON)
    client.send(wrap_handshake(b"\x16\x03\x01\x00\x05hello"))
    assert client.closes and "TLS" in client.closes[0]


def test_a_strict_client_that_fails_the_handshake_closes(pki: Pki) -> None:
    client = Client(make_leg(pki), pki)
    client.send(b"\x16\x03\x01\x00\x04\x01\x00\x00\x00")
    assert client.closes and "TLS" in client.closes[0]
    assert client.leg.mode == "strict"


def test_garbage_tls_records_after_login_close(pki: Pki) -> None:
    client = tls_login(pki, "full")
    client.send(b"\x17\x03\x03\x00\x20" + bytes(32))
    assert client.closes and "TLS" in client.closes[0]


def test_a_bad_certificate_is_a_reason_not_an_exception() -> None:
    leg = ClientLeg(b"not a certificate", b"not a key")
    out = leg.from_client(encode_message(PacketType.PRELOGIN, client_prelogin(Encryption.ON)))
    assert out.close is not None and "certificate" in out.close


def test_jumpoint_bytes_before_the_login_wait_for_it(pki: Pki) -> None:
    client = connect(pki, "full")
    assert client.leg.from_jumpoint(b"early") == b""
    assert client.engine is not None
    client.engine.send(login_message(client_login()))
    back = client.send(client.engine.pending_output())
    assert client.decrypt(back) == b"early"


# -- the Twisted bridge ----------------------------------------------------------


class _Handler:
    def control_received(self, message: dict[str, Any]) -> None:
        pass

    def stream_requested(self, stream: Any, payload: bytes) -> None:
        pass

    def mux_closing(self, code: int, reason: str, by_peer: bool) -> None:
        pass


class _Local(StringTransport):
    def loseWriteConnection(self) -> None:
        pass


def _untyped(factory: Any) -> Any:
    """An instance of an unannotated Twisted test class."""
    return factory()


def _bridge(pki: Pki) -> tuple[TcpBridge, Any, Any, Stream]:
    """A bridge on a real multiplexer: the client's socket, the channel's wire, the stream."""
    mux = Multiplexer(is_client=True, handler=_Handler(), clock=Clock(), settings=MuxSettings())
    wire = _untyped(StringTransport)
    mux.make_connection(wire)
    mux.establish()
    stream = mux.open_stream(b"{}")
    local = _untyped(_Local)
    bridge = TdsClientHandler(stream, make_leg(pki), local="127.0.0.6:1433").bridge
    cast(Any, bridge).makeConnection(local)
    wire.clear()
    return bridge, local, wire, stream


def _stream_data(wire: Any) -> bytes:
    found = FrameParser(1 << 20).feed(wire.value())
    return b"".join(f.payload for f in found if f.type is FrameType.DATA)


def test_bridge_answers_prelogin_itself_and_streams_only_login7(pki: Pki) -> None:
    bridge, local, wire, stream = _bridge(pki)
    bridge.dataReceived(encode_message(PacketType.PRELOGIN, client_prelogin(Encryption.NOT_SUP)))
    (message,) = messages(local.value())
    assert decode_prelogin(message.payload).encryption is Encryption.NOT_SUP
    assert _stream_data(wire) == b""
    local.clear()
    bridge.dataReceived(login_message(client_login()))
    login, rest = login_at_jumpoint(_stream_data(wire))
    assert login == expected_at_jumpoint(client_login()) and rest == b""
    assert_no_secret(wire.value())
    stream._data_received(LOGIN_RESPONSE)
    assert local.value() == LOGIN_RESPONSE


def test_bridge_closes_the_client_after_writing_the_refusal(pki: Pki) -> None:
    bridge, local, wire, stream = _bridge(pki)
    bridge.dataReceived(encode_message(PacketType.PRELOGIN, client_prelogin(Encryption.NOT_SUP)))
    local.clear()
    windows = client_login(password="", option_flags2=0x83, sspi=b"NTLMSSP\0")
    bridge.dataReceived(login_message(windows))
    (message,) = messages(local.value())
    assert scan_login_response(message.payload).errors[0].number == 18456
    assert local.disconnecting and stream.closed
    resets = [f for f in FrameParser(1 << 20).feed(wire.value()) if f.type is FrameType.RESET]
    assert len(resets) == 1
    assert bridge.close_reason is not None and "Windows" in bridge.close_reason


def test_bridge_in_full_tls_encrypts_what_the_jumpoint_sends(pki: Pki) -> None:
    bridge, local, wire, stream = _bridge(pki)
    bridge.dataReceived(encode_message(PacketType.PRELOGIN, client_prelogin(Encryption.ON)))
    (message,) = messages(local.value())
    assert decode_prelogin(message.payload).encryption is Encryption.ON
    engine = TlsEngine(
        client_context(pki.ca.certificate_pem, tds8=False, verify=True), server_side=False
    )
    engine.start()
    while not engine.handshake_done:
        local.clear()
        bridge.dataReceived(wrap_handshake(engine.pending_output()))
        (flight,) = messages(local.value())
        engine.receive(flight.payload)
    local.clear()
    engine.send(login_message(client_login()))
    bridge.dataReceived(engine.pending_output())
    assert local.value() == b""
    login, _ = login_at_jumpoint(_stream_data(wire))
    assert login == expected_at_jumpoint(client_login())
    stream._data_received(LOGIN_RESPONSE)
    assert LOGIN_RESPONSE not in local.value()
    assert engine.receive(local.value()) == LOGIN_RESPONSE


# -- the tunnel: dispatch and binding text -------------------------------------


def _session(item: dict[str, Any], pki: Pki | None = None, **terms: Any) -> Any:
    from console.tunnels import TunnelSession

    clock = Clock()
    mux = Multiplexer(is_client=True, handler=_Handler(), clock=clock, settings=MuxSettings())
    wire = _untyped(StringTransport)
    mux.make_connection(wire)
    mux.establish()
    wire.clear()
    channel = cast(
        Any, type("Channel", (), {"mux": mux, "profile": object(), "clock": clock, "wire": wire})()
    )
    result = {
        "session": "s1",
        "item": item,
        "tunnels": [
            {
                "local_address": "127.0.0.6",
                "local_port": 1433,
                "remote_host": "sqlprod.corp",
                "remote_port": 1433,
            }
        ],
        **terms,
    }
    session = TunnelSession(channel, str(item["name"]), result)
    session.tunnels[0].local_port = 1433
    return session


MSSQL_ITEM = {
    "name": "sql-prod",
    "type": "mssql",
    "host": "sqlprod.corp",
    "port": 1433,
    "username": "app_ro",
    "database": "sales",
}


def test_the_binding_of_an_mssql_tunnel_names_the_login_and_database() -> None:
    import io
    import json

    from console.view import JsonView, PlainView

    session = _session(MSSQL_ITEM)
    (tunnel,) = session.tunnels
    expected = "127.0.0.6:1433 -> sqlprod.corp:1433 (SQL Server as 'app_ro', database 'sales')"
    assert tunnel.binding == expected
    plain = io.StringIO()
    PlainView(plain).ready("sql-prod", "s1", [t.describe() for t in session.tunnels])
    assert plain.getvalue() == expected + "\n"
    # the JSON events keep their fields
    out = io.StringIO()
    JsonView(out, lambda: 0.0).ready("sql-prod", "s1", [t.describe() for t in session.tunnels])
    assert json.loads(out.getvalue())["tunnels"] == [
        {
            "local_address": "127.0.0.6",
            "local_port": 1433,
            "remote_host": "sqlprod.corp",
            "remote_port": 1433,
        }
    ]
    no_database = _session({**MSSQL_ITEM, "database": None})
    assert no_database.tunnels[0].binding.endswith("(SQL Server as 'app_ro')")
    tcp = _session({"name": "web", "type": "tcp", "host": "sqlprod.corp"})
    assert tcp.tunnels[0].binding == "127.0.0.6:1433 -> sqlprod.corp:1433"


def test_mssql_connections_get_a_tds_bridge_with_one_certificate_per_tunnel(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    from console import tunnels
    from console.kinds import mssql_session as console_mssql
    from shared.bridge import TcpBridge

    issued: list[str] = []

    def certificate(profile: Any, address: str) -> KeyPair:
        issued.append(address)
        return pki.listener

    monkeypatch.setattr(console_mssql, "listener_certificate", certificate)
    session = _session(MSSQL_ITEM)
    factory = tunnels.TunnelFactory(session, session.tunnels[0])
    peer = type("Peer", (), {"host": "127.0.0.1"})()
    first, second = factory.buildProtocol(peer), factory.buildProtocol(peer)
    assert isinstance(first, TdsLocalConnection) and isinstance(second, TdsLocalConnection)
    assert first.leg is not second.leg
    assert issued == ["127.0.0.6"]
    tcp = _session({"name": "web", "type": "tcp", "host": "sqlprod.corp"})
    plain = tunnels.TunnelFactory(tcp, tcp.tunnels[0]).buildProtocol(peer)
    assert type(plain) is TcpBridge


# -- the login comes first: no stream before the LOGIN7, a login timeout -------


def _local_connection(
    pki: Pki, monkeypatch: pytest.MonkeyPatch, **terms: Any
) -> tuple[Any, Any, Any]:
    """A tunnel session of an mssql item, and a function accepting one local connection."""
    from console import tunnels
    from console.kinds import mssql_session as console_mssql

    monkeypatch.setattr(
        console_mssql, "listener_certificate", lambda profile, address: pki.listener
    )
    session = _session(MSSQL_ITEM, **terms)
    factory = tunnels.TunnelFactory(session, session.tunnels[0])
    peer = type("Peer", (), {"host": "127.0.0.1"})()

    def accept() -> tuple[Any, Any]:
        protocol = factory.buildProtocol(peer)
        local = _untyped(_Local)
        cast(Any, protocol).makeConnection(local)
        return protocol, local

    return session, accept, session.channel.wire


def _frames(wire: Any) -> list[Any]:
    return FrameParser(1 << 20).feed(wire.value())


def test_no_stream_is_opened_before_the_whole_login7(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, accept, wire = _local_connection(pki, monkeypatch, login_timeout=30)
    protocol, local = accept()
    protocol.dataReceived(encode_message(PacketType.PRELOGIN, client_prelogin(Encryption.NOT_SUP)))
    assert messages(local.value())  # the PRELOGIN reply came from the console itself
    login = login_message(big_login())
    protocol.dataReceived(login[:-10])  # all but the end of the LOGIN7
    assert _frames(wire) == []  # no OPEN: the Jumpoint dials nothing yet
    assert session.current_connections() == 1  # but the connection holds a slot
    protocol.dataReceived(login[-10:])
    found = _frames(wire)
    assert found[0].type is FrameType.OPEN
    at_jumpoint, rest = login_at_jumpoint(_stream_data(wire))
    assert at_jumpoint == expected_at_jumpoint(big_login()) and rest == b""
    assert_no_secret(wire.value())
    (tunnel,) = session.tunnels
    assert len(tunnel.bridges) == 1 and not tunnel.logins
    (bridge,) = tunnel.bridges
    bridge.stream._data_received(LOGIN_RESPONSE)
    assert local.value().endswith(LOGIN_RESPONSE)
    session.channel.clock.advance(60)  # the timer was cancelled with the login
    assert not local.disconnecting and tunnel.login_timeouts == 0


@pytest.mark.parametrize(
    "sent",
    [b"", encode_message(PacketType.PRELOGIN, client_prelogin(Encryption.NOT_SUP))[:11]],
    ids=["nothing", "partial prelogin"],
)
def test_a_client_that_does_not_log_in_in_time_is_closed_and_counted(
    pki: Pki, monkeypatch: pytest.MonkeyPatch, sent: bytes
) -> None:
    session, accept, wire = _local_connection(pki, monkeypatch, login_timeout=5, max_connections=1)
    protocol, local = accept()
    if sent:
        protocol.dataReceived(sent)
    (tunnel,) = session.tunnels
    from console.tunnels import REFUSALS_IN_FLIGHT

    others = [accept()[1] for _ in range(REFUSALS_IN_FLIGHT)]
    refused, _ = accept()  # connections still logging in hold the slots
    assert type(refused).__name__ == "_Refused"
    session.channel.clock.advance(4.9)
    assert not local.disconnecting
    session.channel.clock.advance(0.1)
    assert local.disconnecting and all(other.disconnecting for other in others)
    expected = 1 + REFUSALS_IN_FLIGHT
    assert tunnel.login_timeouts == expected and tunnel.counters()["login_timeouts"] == expected
    assert session.current_connections() == 0
    assert _frames(wire) == []  # nothing ever reached the Jumpoint
    again, _ = accept()  # the slot is free again
    assert isinstance(again, TdsLocalConnection)


def test_without_a_login_timeout_in_the_terms_the_default_applies(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, accept, _ = _local_connection(pki, monkeypatch)  # an older Jumpoint sends none
    _, local = accept()
    session.channel.clock.advance(29.9)
    assert not local.disconnecting
    session.channel.clock.advance(0.1)
    assert local.disconnecting and session.tunnels[0].login_timeouts == 1


def test_a_client_closing_before_its_login_frees_its_slot_uncounted(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, accept, wire = _local_connection(pki, monkeypatch, login_timeout=5)
    protocol, _ = accept()
    protocol.dataReceived(b"\x12\x01")
    protocol.connectionLost()
    (tunnel,) = session.tunnels
    assert session.current_connections() == 0 and tunnel.login_timeouts == 0
    session.channel.clock.advance(10)
    assert tunnel.login_timeouts == 0 and _frames(wire) == []


def test_a_refused_login_closes_the_client_without_a_stream(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, accept, wire = _local_connection(pki, monkeypatch, login_timeout=5)
    protocol, local = accept()
    protocol.dataReceived(b"GET / HTTP/1.1\r\n\r\n")  # not TDS
    assert local.disconnecting and session.current_connections() == 0
    assert _frames(wire) == []


def test_the_session_closing_aborts_connections_still_logging_in(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, accept, _ = _local_connection(pki, monkeypatch, login_timeout=5)
    _, local = accept()
    session.abort_connections()
    assert local.disconnecting and session.current_connections() == 0
