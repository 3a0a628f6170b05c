"""The Jumpoint's leg of the SQL Server proxy (jumpoint/tds_server_leg.py), without sockets.

Each test drives a L{ServerLeg} against L{FakeServer}, an in-memory SQL Server
built from the C{shared.codecs.tds} codecs and a server-side L{TlsEngine} with a
certificate from L{shared.pki}: PRELOGIN, the TLS handshake inside PRELOGIN
packets (or TLS first for TDS 8.0), LOGIN7 checked against a SQL login or
pyspnego's NTLM acceptor, and knobs for errors, routing and extra tokens.
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import spnego
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.python.failure import Failure

from jumpoint.config import CredentialRef
from jumpoint.credentials import Credential
from jumpoint.tds_server_leg import (
    AuditEvent,
    LegOutput,
    ServerLeg,
    login_refusal,
)
from jumpoint.tds_upstream import MAX_REROUTES, TdsUpstreamHandler
from shared.bridge import TcpBridge
from shared.codecs.tds import tokens
from shared.codecs.tds.login7 import (
    OPT2_INT_SECURITY,
    OPT3_CHANGE_PASSWORD,
    OPT3_USER_INSTANCE,
    Login7,
    decode_login7,
    encode_feature_ext,
    encode_login7,
    obfuscate_password,
)
from shared.codecs.tds.packets import (
    MessageAssembler,
    Packet,
    PacketParser,
    PacketType,
    Status,
    encode_message,
)
from shared.codecs.tds.prelogin import (
    Encryption,
    PreLogin,
    decode_prelogin,
    server_prelogin_reply,
)
from shared.codecs.tds.tls_in_tds import ALPN_TDS8, TlsEngine, server_context, wrap_handshake
from shared.items import Item, TunnelSpec
from shared.pki import KeyPair, create_ca, issue_server
from shared.protocol.frames import ErrorCode
from tests.unit.test_channel_tls import RecordingApp, TargetTransport
from tests.unit.test_session_rules import USERS, Keys, World, make_world

PASSWORD = "Zq7-unique-s3cret!"
HOST = "sql.example"
ALL_HEADERS = (
    bytes.fromhex("16 00 00 00 12 00 00 00 02 00")
    + bytes(7)
    + b"\x01"
    + bytes.fromhex("01 00 00 00")
)
COLLATION = bytes.fromhex("09 04 D0 00 34")


# -- keys and items ------------------------------------------------------------


@functools.cache
def ca() -> KeyPair:
    return create_ca("tds-leg")


@functools.cache
def other_ca() -> KeyPair:
    return create_ca("someone-else")


@functools.cache
def server_pair() -> KeyPair:
    return issue_server(ca(), "sql", [HOST, "127.0.0.1"])


@functools.cache
def foreign_pair() -> KeyPair:
    return issue_server(other_ca(), "sql", [HOST])


def make_item(**changes: object) -> Item:
    item = Item(
        name="db",
        type="mssql",
        host=HOST,
        port=1433,
        username="app",
        database="appdb",
        encryption="required",
        ca_pem=ca().certificate_pem.decode(),
        tunnels=(TunnelSpec(None, 1433, "mssql"),),
    )
    return replace(item, **changes)  # type: ignore[arg-type]


def sql_credential(tmp_path: Path, password: str = PASSWORD) -> Credential:
    secret = tmp_path / "sql.secret"
    secret.write_text(password + "\n", encoding="utf-8")
    ref = CredentialRef(kind="sql", username="app", item="db", password_file=secret)
    return Credential("sql", "app", None, ref)


def ntlm_credential(tmp_path: Path, password: str = PASSWORD) -> Credential:
    secret = tmp_path / "ntlm.secret"
    secret.write_text(password + "\n", encoding="utf-8")
    ref = CredentialRef(
        kind="ntlm", username="svc_app", item="db", domain="CORP", password_file=secret
    )
    return Credential("ntlm", "svc_app", "CORP", ref)


def console_login7(**changes: object) -> Login7:
    """The LOGIN7 the console forwards: the client's, with empty user name and password."""
    login = Login7(
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
        hostname="WORKSTATION1",
        appname="sqlcmd",
        servername="127.0.0.2,14333",
        feature_ext=encode_feature_ext([(0x0A, b"\x01")]),
        clt_int_name="ODBC",
        language="us_english",
        database="clientdb",
        client_id=bytes.fromhex("00 50 8b e2 d0 01"),
    )
    return replace(login, **changes)  # type: ignore[arg-type]


def login_bytes(login: Login7, packet_size: int = 4096) -> bytes:
    return encode_message(PacketType.LOGIN7, encode_login7(login), packet_size)


def secret_forms(password: str = PASSWORD) -> list[bytes]:
    return [
        password.encode("utf-8"),
        password.encode("utf-16-le"),
        obfuscate_password(password),
    ]


def assert_no_secret(data: bytes, password: str = PASSWORD) -> None:
    for form in secret_forms(password):
        assert form not in data


# -- the fake server -------------------------------------------------------------


def sspi_token(data: bytes) -> bytes:
    return bytes([tokens.SSPI]) + struct.pack("<H", len(data)) + data


@dataclass
class Knobs:
    encryption: Encryption = Encryption.ON
    strict: bool = False
    user: str = "app"
    password: str = PASSWORD
    ntlm: bool = False
    error_text: str | None = None
    routing: tuple[str, int] | None = None
    extra_tokens: bytes = b""
    spid: int = 57


@dataclass
class FakeServer:
    """Just enough SQL Server: PRELOGIN, TLS (7.x or 8.0), LOGIN7/SSPI, then recording."""

    pair: KeyPair
    knobs: Knobs = field(default_factory=Knobs)
    phase: str = ""
    prelogin: PreLogin | None = None
    login: Login7 | None = None
    login_packets: list[Packet] = field(default_factory=list)
    sspi_packets: list[Packet] = field(default_factory=list)
    response: bytes = b""
    logged_in: bool = False
    after_login: bytes = b""
    after_packets: list[Packet] = field(default_factory=list)
    received_in_clear: bytes = b""

    def __post_init__(self) -> None:
        context = server_context(
            self.pair.certificate_pem, self.pair.key_pem, tds8=self.knobs.strict
        )
        self.tls = TlsEngine(context, True)
        self.phase = "tls_first" if self.knobs.strict else "prelogin"
        self.clear = PacketParser()
        self.clear_messages = MessageAssembler(1 << 20)
        self.inner = PacketParser()
        self.inner_messages = MessageAssembler(1 << 24)
        self.acceptor = spnego.server(protocol="ntlm") if self.knobs.ntlm else None

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        if self.phase == "prelogin":
            for packet in self.clear.feed(data):
                message = self.clear_messages.add(packet)
                if message is None:
                    continue
                assert message.type == PacketType.PRELOGIN
                self.prelogin = decode_prelogin(message.payload)
                reply = server_prelogin_reply(self.knobs.encryption)
                out.append(encode_message(PacketType.TABULAR, reply))
                encrypted = self.knobs.encryption in (Encryption.ON, Encryption.REQ)
                self.phase = "handshake" if encrypted else "clear"
            return b"".join(out)
        if self.phase == "handshake":
            for packet in self.clear.feed(data):
                assert packet.type == PacketType.PRELOGIN
                message = self.clear_messages.add(packet)
                if message is None:
                    continue
                was_done = self.tls.handshake_done
                assert self.tls.receive(message.payload) == b""
                output = self.tls.pending_output()
                out.append(output if was_done else wrap_handshake(output))
                if self.tls.handshake_done:
                    self.phase = "tls"
            rest = self.clear.take_buffered()
            if rest:
                out.append(self.feed(rest))
            return b"".join(out)
        if self.phase == "clear":
            self.received_in_clear += data
            return b""
        plain = self.tls.receive(data)
        out.append(self.tls.pending_output())
        if self.tls.handshake_done:
            self.phase = "tls"
        if plain:
            reply = self._plain(plain)
            if reply:
                self.tls.send(reply)
                out.append(self.tls.pending_output())
        return b"".join(out)

    def send(self, plain: bytes) -> bytes:
        """Server-initiated data (results) inside TLS."""
        self.tls.send(plain)
        return self.tls.pending_output()

    def _plain(self, plain: bytes) -> bytes:
        out: list[bytes] = []
        for packet in self.inner.feed(plain):
            if self.logged_in:
                self.after_packets.append(packet)
                self.after_login += packet.encode()
                continue
            if packet.type == PacketType.LOGIN7:
                self.login_packets.append(packet)
            elif packet.type == PacketType.SSPI:
                self.sspi_packets.append(packet)
            message = self.inner_messages.add(packet)
            if message is None:
                continue
            if message.type == PacketType.PRELOGIN:
                self.prelogin = decode_prelogin(message.payload)
                reply = server_prelogin_reply(Encryption.NOT_SUP)
                out.append(encode_message(PacketType.TABULAR, reply))
            elif message.type == PacketType.LOGIN7:
                out.append(self._login(decode_login7(message.payload)))
            elif message.type == PacketType.SSPI:
                out.append(self._sspi(message.payload))
            else:
                raise AssertionError(f"unexpected message type {message.type:#x} before login")
        return b"".join(out)

    def _login(self, login: Login7) -> bytes:
        self.login = login
        if self.knobs.ntlm:
            assert self.acceptor is not None
            challenge = self.acceptor.step(login.sspi)
            assert challenge
            return encode_message(PacketType.TABULAR, sspi_token(challenge), spid=self.knobs.spid)
        if self.knobs.error_text is None and (
            login.username == self.knobs.user and login.password == self.knobs.password
        ):
            return self._accept()
        return self._reject(self.knobs.error_text or f"Login failed for user '{login.username}'.")

    def _sspi(self, token: bytes) -> bytes:
        assert self.acceptor is not None
        try:
            self.acceptor.step(token)
        except spnego.exceptions.SpnegoError:
            return self._reject("Login failed. The login is from an untrusted domain.", 18452)
        return self._accept()

    def _accept(self) -> bytes:
        payload = (
            tokens.envchange_database("appdb", "master")
            + tokens.info_token(5701, 2, 0, "Changed database context to 'appdb'.", "SQL1")
            + tokens.loginack_token()
            + self.knobs.extra_tokens
            + (
                tokens.routing_envchange(self.knobs.routing[1], self.knobs.routing[0])
                if self.knobs.routing
                else b""
            )
            + tokens.envchange_packet_size(8192, 4096)
            + tokens.done_token()
        )
        self.response = encode_message(PacketType.TABULAR, payload, spid=self.knobs.spid)
        self.logged_in = True
        return self.response

    def _reject(self, text: str, number: int = tokens.LOGIN_FAILED) -> bytes:
        payload = tokens.error_token(number, 1, 14, text, "SQL1") + tokens.done_token(
            tokens.DONE_ERROR
        )
        self.response = encode_message(PacketType.TABULAR, payload, spid=self.knobs.spid)
        return self.response


# -- driving a leg ------------------------------------------------------------------


@dataclass
class Run:
    leg: ServerLeg
    server: FakeServer
    outputs: list[LegOutput] = field(default_factory=list)

    @property
    def to_console(self) -> bytes:
        return b"".join(out.to_console for out in self.outputs)

    @property
    def audit(self) -> list[AuditEvent]:
        return [event for out in self.outputs for event in out.audit]

    def events(self, kind: str) -> list[AuditEvent]:
        return [event for event in self.audit if event.kind == kind]

    @property
    def close(self) -> str | None:
        return next((out.close for out in self.outputs if out.close is not None), None)

    @property
    def reconnect(self) -> tuple[str, int] | None:
        return next((out.reconnect for out in self.outputs if out.reconnect is not None), None)

    def take(self, out: LegOutput) -> LegOutput:
        self.outputs.append(out)
        self.pump(out.to_server)
        return out

    def pump(self, to_server: bytes) -> None:
        while to_server:
            reply = self.server.feed(to_server)
            if not reply:
                return
            out = self.leg.from_server(reply)
            self.outputs.append(out)
            to_server = out.to_server

    def console(self, data: bytes) -> LegOutput:
        return self.take(self.leg.from_console(data))

    def start(self) -> LegOutput:
        return self.take(self.leg.start_output())

    def check_no_secret(self) -> None:
        assert_no_secret(self.to_console)
        dumped = json.dumps([[e.kind, e.fields] for e in self.audit], default=str)
        assert PASSWORD not in dumped
        for out in self.outputs:
            assert out.close is None or PASSWORD not in out.close
            assert PASSWORD not in repr(out)


def make_run(
    credential: Credential,
    item: Item | None = None,
    knobs: Knobs | None = None,
    pair: KeyPair | None = None,
    server_name: str = HOST,
    max_message: int = 4 * 1024 * 1024,
) -> Run:
    item = item or make_item()
    leg = ServerLeg(
        item, credential, server_name=server_name, now=lambda: 100.0, max_message=max_message
    )
    return Run(leg, FakeServer(pair or server_pair(), knobs or Knobs()))


def logged_in(tmp_path: Path, **kwargs: object) -> Run:
    run = make_run(sql_credential(tmp_path), **kwargs)  # type: ignore[arg-type]
    run.start()
    run.console(login_bytes(console_login7()))
    assert run.leg.logged_in, run.outputs
    return run


def response_payload(data: bytes) -> tuple[list[Packet], bytes]:
    packets = PacketParser().feed(data)
    return packets, b"".join(packet.payload for packet in packets)


def error_of(data: bytes) -> tokens.ErrorInfo:
    packets, payload = response_payload(data)
    assert packets and all(p.type == PacketType.TABULAR for p in packets)
    assert packets[-1].status & Status.EOM
    response = tokens.scan_login_response(payload)
    assert response.loginack is None
    assert response.tokens[-1].kind == tokens.DONE
    (error,) = response.errors
    return error


# -- PRELOGIN, TLS, credential injection --------------------------------------------


@pytest.mark.parametrize("reply", [Encryption.ON, Encryption.REQ])
@pytest.mark.parametrize("login_first", [True, False])
def test_sql_login_injects_the_credential_inside_tls(
    tmp_path: Path, reply: Encryption, login_first: bool
) -> None:
    run = make_run(sql_credential(tmp_path), knobs=Knobs(encryption=reply))
    client = console_login7(
        option_flags3=0x08 | OPT3_CHANGE_PASSWORD | OPT3_USER_INSTANCE,
        change_password="new-one",
        attach_db_file="C:\\evil.mdf",
    )
    if login_first:
        assert run.console(login_bytes(client)).to_server == b""  # queued until TLS is up
    start = run.start()
    prelogin_packets = PacketParser().feed(start.to_server)
    assert [p.type for p in prelogin_packets] == [PacketType.PRELOGIN]
    if not login_first:
        run.console(login_bytes(client))

    server = run.server
    assert server.prelogin is not None
    assert server.prelogin.encryption is Encryption.ON
    assert server.prelogin.mars is False
    assert server.tls.handshake_done and server.tls.protocol_version() == "TLSv1.2"
    login = server.login
    assert login is not None
    assert (login.username, login.password, login.servername) == ("app", PASSWORD, HOST)
    assert login.database == "appdb"  # the item's database wins
    assert not login.option_flags2 & OPT2_INT_SECURITY
    assert login.change_password == "" and login.attach_db_file == ""
    assert not login.option_flags3 & (OPT3_CHANGE_PASSWORD | OPT3_USER_INSTANCE)
    # every other field is the console's
    expected = replace(
        client,
        username="app",
        password=PASSWORD,
        servername=HOST,
        database="appdb",
        change_password="",
        attach_db_file="",
        option_flags3=0x08,
    )
    assert login == expected
    assert login.packet_size == 8192 and login.features == ((0x0A, b"\x01"),)

    # the login response reaches the console byte for byte
    assert run.leg.logged_in and run.close is None
    assert run.to_console == server.response
    (event,) = run.events("sql_login")
    assert event.fields["login"] == "app" and event.fields["database"] == "appdb"
    assert event.fields["auth"] == "sql" and event.fields["tls"] == "TLSv1.2"
    run.check_no_secret()


def test_client_database_is_kept_when_the_item_names_none(tmp_path: Path) -> None:
    run = make_run(sql_credential(tmp_path), item=make_item(database=None))
    run.start()
    run.console(login_bytes(console_login7()))
    assert run.server.login is not None and run.server.login.database == "clientdb"


def test_login7_larger_than_4096_bytes_is_split(tmp_path: Path) -> None:
    run = make_run(sql_credential(tmp_path))
    client = console_login7(appname="A" * 3000, hostname="H" * 1000)
    data = login_bytes(client)
    assert len(data) > 2 * 4096
    run.start()
    # the console's packets arrive in odd chunks
    for start in range(0, len(data), 1000):
        run.console(data[start : start + 1000])
    server = run.server
    assert server.login is not None and server.login.appname == "A" * 3000
    sizes = [8 + len(p.payload) for p in server.login_packets]
    assert len(sizes) >= 3 and max(sizes) <= 4096
    assert [bool(p.status & Status.EOM) for p in server.login_packets] == [False] * (
        len(sizes) - 1
    ) + [True]
    assert run.leg.logged_in


# -- certificates ------------------------------------------------------------------------


def test_certificate_for_another_host_is_refused(tmp_path: Path) -> None:
    run = make_run(
        sql_credential(tmp_path),
        item=make_item(host="db.other.example"),
        server_name="db.other.example",
    )
    run.start()
    run.console(login_bytes(console_login7()))
    error = error_of(run.to_console)
    assert error.number == 18456 and error.severity == 14
    assert "TLS" in error.message and "db.other.example" in error.message
    assert run.close is not None and run.server.login is None
    (event,) = run.events("sql_login_failed")
    assert "db.other.example" in event.fields["reason"]
    run.check_no_secret()


def test_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    run = make_run(sql_credential(tmp_path), pair=foreign_pair())
    run.start()
    run.console(login_bytes(console_login7()))
    error = error_of(run.to_console)
    assert error.message.startswith("Login failed: the Jumpoint could not set up TLS")
    assert run.close is not None and run.server.login is None
    assert run.events("sql_login_failed")


def test_system_store_is_used_without_ca_certificates(tmp_path: Path) -> None:
    run = make_run(sql_credential(tmp_path), item=make_item(ca_pem=None))
    run.start()
    assert run.close is not None and run.server.login is None
    assert error_of(run.to_console).number == 18456


def test_trust_server_certificate_accepts_any_certificate(tmp_path: Path) -> None:
    item = make_item(host="10.9.8.7", trust_server_certificate=True)
    run = make_run(sql_credential(tmp_path), item=item, pair=foreign_pair(), server_name="10.9.8.7")
    run.start()
    run.console(login_bytes(console_login7()))
    assert run.leg.logged_in
    assert run.server.login is not None and run.server.login.servername == "10.9.8.7"


@pytest.mark.parametrize("reply", [Encryption.NOT_SUP, Encryption.OFF])
def test_server_without_encryption_is_refused(tmp_path: Path, reply: Encryption) -> None:
    run = make_run(sql_credential(tmp_path), knobs=Knobs(encryption=reply))
    run.console(login_bytes(console_login7()))
    run.start()
    error = error_of(run.to_console)
    assert "does not offer encryption" in error.message and reply.name in error.message
    assert run.close is not None
    assert run.server.received_in_clear == b""  # nothing after the PRELOGIN
    assert all(out.to_server == b"" for out in run.outputs[2:])
    assert run.leg.from_console(b"\x01\x01\x00\x08\x00\x00\x01\x00") == LegOutput()
    run.check_no_secret()


# -- login responses -----------------------------------------------------------------------


def test_server_error_gives_a_clean_18456_without_the_password(tmp_path: Path) -> None:
    run = make_run(sql_credential(tmp_path), knobs=Knobs(password="something else"))
    run.start()
    run.console(login_bytes(console_login7()))
    error = error_of(run.to_console)
    assert error.number == 18456 and error.state == 1 and error.severity == 14
    assert "stored credential for 'app'" in error.message
    assert "Login failed for user 'app'." in error.message
    assert run.close is not None and not run.leg.logged_in
    (event,) = run.events("sql_login_failed")
    assert event.fields["reason"] in error.message
    # the server's own response is not forwarded
    assert run.server.response not in run.to_console
    run.check_no_secret()
    assert run.leg.from_server(b"more") == LegOutput()


def test_server_text_holding_the_password_is_not_shown(tmp_path: Path) -> None:
    run = make_run(sql_credential(tmp_path), knobs=Knobs(error_text=f"bad password {PASSWORD}"))
    run.start()
    run.console(login_bytes(console_login7()))
    error = error_of(run.to_console)
    assert error.message.endswith("(server error 18456)")
    run.check_no_secret()


def test_routing_asks_for_a_reconnect_and_never_reaches_the_console(tmp_path: Path) -> None:
    credential = sql_credential(tmp_path)
    run = make_run(credential, knobs=Knobs(routing=("replica.example", 11001)))
    run.start()
    run.console(login_bytes(console_login7()))
    assert run.reconnect == ("replica.example", 11001)
    assert run.to_console == b"" and run.close is None
    assert run.events("sql_routed") == []  # the bridge audits it once it follows the route
    assert run.leg.closed
    replay = run.leg.console_login
    assert replay == login_bytes(console_login7())

    # the Twisted layer runs a fresh leg against the alternate server
    second = Run(
        ServerLeg(make_item(), credential, server_name=HOST, now=lambda: 1.0),
        FakeServer(server_pair()),
    )
    second.console(replay)
    second.start()
    assert second.leg.logged_in and second.to_console == second.server.response


def test_mirroring_partner_is_stripped_the_rest_is_forwarded(tmp_path: Path) -> None:
    mirror = tokens.envchange_token(
        tokens.ENV_MIRROR_PARTNER, tokens.b_varchar("mirror.example"), b"\0"
    )
    run = make_run(sql_credential(tmp_path), knobs=Knobs(extra_tokens=mirror, spid=99))
    run.start()
    run.console(login_bytes(console_login7()))
    assert run.leg.logged_in
    packets, payload = response_payload(run.to_console)
    _, original = response_payload(run.server.response)
    assert payload == original.replace(mirror, b"")
    assert mirror not in run.to_console and b"m\x00i\x00r\x00r\x00o\x00r" not in run.to_console
    assert tokens.scan_login_response(payload).packet_size == 8192
    assert {p.spid for p in packets} == {99}


# -- Windows authentication (NTLM) ------------------------------------------------------------


@pytest.fixture
def ntlm_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    users = tmp_path / "ntlm-users"
    users.write_text(f"CORP:svc_app:{PASSWORD}\n", encoding="utf-8")
    monkeypatch.setenv("NTLM_USER_FILE", str(users))
    yield


@pytest.mark.usefixtures("ntlm_users")
def test_ntlm_login_with_the_right_password(tmp_path: Path) -> None:
    run = make_run(ntlm_credential(tmp_path), knobs=Knobs(ntlm=True))
    run.start()
    run.console(login_bytes(console_login7()))
    server = run.server
    assert server.login is not None
    assert server.login.option_flags2 & OPT2_INT_SECURITY
    assert (server.login.username, server.login.password) == ("", "")
    assert server.login.sspi.startswith(b"NTLMSSP\0")
    assert [p.type for p in server.sspi_packets] == [PacketType.SSPI]
    assert server.acceptor is not None and server.acceptor.complete
    assert run.leg.logged_in and run.to_console == server.response
    assert run.events("sql_login")[0].fields["auth"] == "windows"
    run.check_no_secret()


@pytest.mark.usefixtures("ntlm_users")
def test_ntlm_login_with_a_wrong_password_fails(tmp_path: Path) -> None:
    run = make_run(ntlm_credential(tmp_path, password="not-the-one"), knobs=Knobs(ntlm=True))
    run.start()
    run.console(login_bytes(console_login7()))
    error = error_of(run.to_console)
    assert error.number == 18456 and "server error 18452" in error.message
    assert run.close is not None and not run.leg.logged_in
    assert_no_secret(run.to_console, "not-the-one")


# -- failures before the server ----------------------------------------------------------------


def test_missing_secret_gives_18456(tmp_path: Path) -> None:
    ref = CredentialRef(kind="sql", username="app", item="db", password_env="NO_SUCH_VARIABLE_X")
    run = make_run(Credential("sql", "app", None, ref))
    run.start()
    run.console(login_bytes(console_login7()))
    error = error_of(run.to_console)
    assert "not available on the Jumpoint" in error.message
    assert run.close is not None and run.server.login is None
    assert run.events("sql_login_failed")


def test_login_refusal_and_fail() -> None:
    out = login_refusal("the Jumpoint has no credential for item 'db'", server="x")
    assert error_of(out.to_console).message == (
        "Login failed: the Jumpoint has no credential for item 'db'"
    )
    assert out.close and out.audit[0].kind == "sql_login_failed"
    assert out.audit[0].fields["server"] == "x"


def test_fail_during_the_login(tmp_path: Path) -> None:
    run = make_run(sql_credential(tmp_path))
    run.start()
    out = run.leg.fail("the server at sql.example:1433 is unreachable")
    assert "unreachable" in error_of(out.to_console).message
    assert out.close and out.audit[0].kind == "sql_login_failed"
    assert run.leg.fail("again") == LegOutput()


def test_console_sends_something_else_than_login7(tmp_path: Path) -> None:
    run = make_run(sql_credential(tmp_path))
    out = run.console(
        encode_message(PacketType.SQL_BATCH, ALL_HEADERS + "select 1".encode("utf-16-le"))
    )
    assert out.close is not None and error_of(out.to_console).number == 18456
    assert [e.kind for e in out.audit] == ["sql_malformed"]


# -- after the login ----------------------------------------------------------------------------


def batch_message(text: str, packet_size: int = 512) -> bytes:
    return encode_message(PacketType.SQL_BATCH, ALL_HEADERS + text.encode("utf-16-le"), packet_size)


@functools.cache
def _cached_dir() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="tds-leg-"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.text(min_size=1, max_size=700).filter(lambda t: "\x00" not in t),
    packet_size=st.integers(min_value=16, max_value=600),
    cuts=st.lists(st.integers(min_value=1, max_value=200), max_size=30),
)
def test_batch_over_several_packets_is_audited_once(
    text: str, packet_size: int, cuts: list[int]
) -> None:
    run = logged_in(_cached_dir())
    data = batch_message(text, packet_size)
    chunks, position = [], 0
    for cut in cuts:
        if position >= len(data):
            break
        chunks.append(data[position : position + cut])
        position += cut
    chunks.append(data[position:])
    before = len(run.audit)
    for chunk in chunks:
        out = run.console(chunk)
        assert out.close is None
        if chunk:
            assert out.to_server  # relayed at once, whole message or not
    events = run.audit[before:]
    assert [e.kind for e in events] == ["sql_batch"]
    assert events[0].fields["text"] == text.encode("utf-16-le", "surrogatepass").decode(
        "utf-16-le", "replace"
    )
    assert run.server.after_login == data


def rpc_message() -> bytes:
    name = "dbo.refresh_totals"
    by_name = struct.pack("<H", len(name)) + name.encode("utf-16-le") + b"\x00\x00"
    statement = "SELECT @p1".encode("utf-16-le")
    param = b"\x00" + b"\x00" + b"\xe7" + struct.pack("<H", 8000) + COLLATION
    param += struct.pack("<H", len(statement)) + statement
    by_id = b"\xff\xff" + struct.pack("<H", 10) + b"\x00\x00" + param
    payload = ALL_HEADERS + by_name + b"\x80" + by_id
    return encode_message(PacketType.RPC, payload, 64)


def test_rpc_is_audited_with_its_procedures(tmp_path: Path) -> None:
    run = logged_in(tmp_path)
    data = rpc_message()
    run.console(data)
    (event,) = run.events("sql_rpc")
    assert event.fields["procedures"] == ["dbo.refresh_totals", "sp_executesql"]
    assert event.fields["text"] == "SELECT @p1"
    assert run.server.after_login == data


def test_attention_passes_while_the_server_streams(tmp_path: Path) -> None:
    run = logged_in(tmp_path)
    run.console(batch_message("WAITFOR DELAY '00:01:00'"))
    rows = encode_message(PacketType.TABULAR, b"\x81" + bytes(300), 128)[:200]  # mid-message
    out = run.leg.from_server(run.server.send(rows))
    assert out.to_console == rows and out.close is None
    attention = encode_message(PacketType.ATTENTION, b"")
    out = run.leg.from_console(attention)
    assert out.to_server and out.close is None and out.audit == []
    run.server.feed(out.to_server)
    assert run.server.after_packets[-1].type == PacketType.ATTENTION
    # the server's answer flows back unchanged
    ack = encode_message(PacketType.TABULAR, tokens.done_token(tokens.DONE_ATTN))
    assert run.leg.from_server(run.server.send(ack)).to_console == ack


def test_server_data_is_forwarded_unchanged(tmp_path: Path) -> None:
    run = logged_in(tmp_path)
    blob = bytes(range(256)) * 300  # not even TDS: the leg does not look
    out = run.leg.from_server(run.server.send(blob))
    assert out.to_console == blob


@pytest.mark.parametrize(
    "packet",
    [
        bytes.fromhex("01 01 00 04 00 00 01 00"),  # length shorter than the header
        encode_message(PacketType.LOGIN7, b"x"),  # not a request type
        encode_message(PacketType.SQL_BATCH, ALL_HEADERS + b"odd"),  # odd text length
    ],
)
def test_malformed_packet_closes_the_connection(tmp_path: Path, packet: bytes) -> None:
    run = logged_in(tmp_path)
    out = run.leg.from_console(packet)
    assert out.to_server == b"" and out.to_console == b""
    assert out.close is not None and "malformed" in out.close
    (event,) = out.audit
    assert event.kind == "sql_malformed" and event.fields["reason"]
    assert run.leg.from_console(batch_message("select 1")) == LegOutput()


def test_message_too_large_is_relayed_without_reassembly(tmp_path: Path) -> None:
    run = logged_in(tmp_path, max_message=2000)
    big = batch_message("x" * 5000)
    out = run.console(big)
    assert out.close is None
    assert [e.kind for e in out.audit] == ["sql_message_too_large"]
    assert run.server.after_login == big
    out = run.console(batch_message("select 2"))
    assert [e.fields.get("text") for e in out.audit] == ["select 2"]


def test_requests_pipelined_behind_the_login_are_relayed_after_it(tmp_path: Path) -> None:
    run = make_run(sql_credential(tmp_path))
    run.start()
    run.console(login_bytes(console_login7()) + batch_message("select 3"))
    assert run.leg.logged_in
    assert run.server.after_login == batch_message("select 3")
    assert [e.fields["text"] for e in run.events("sql_batch")] == ["select 3"]


def test_shutdown_sends_close_notify(tmp_path: Path) -> None:
    run = logged_in(tmp_path)
    alert = run.leg.shutdown()
    assert alert
    run.server.feed(alert)
    assert run.server.tls.closed


# -- TDS 8.0 ------------------------------------------------------------------------------------


def test_strict_starts_with_tls_and_alpn_tds8(tmp_path: Path) -> None:
    item = make_item(encryption="strict")
    run = make_run(sql_credential(tmp_path), item=item, knobs=Knobs(strict=True))
    start = run.leg.start_output()
    assert start.to_server[:1] == b"\x16"  # a TLS record, no PRELOGIN packet
    run.take(start)
    server = run.server
    assert server.tls.alpn() == ALPN_TDS8
    assert server.prelogin is not None  # PRELOGIN came inside TLS
    run.console(login_bytes(console_login7()))
    assert server.login is not None and server.login.password == PASSWORD
    assert run.leg.logged_in and run.to_console == server.response
    assert run.events("sql_login")[0].fields["tls"] in ("TLSv1.2", "TLSv1.3")
    run.check_no_secret()


def test_strict_with_a_certificate_for_another_host(tmp_path: Path) -> None:
    item = make_item(encryption="strict", host="other.example")
    run = make_run(
        sql_credential(tmp_path), item=item, knobs=Knobs(strict=True), server_name="other.example"
    )
    run.start()
    run.console(login_bytes(console_login7()))
    assert error_of(run.to_console).number == 18456
    assert run.close is not None and run.server.login is None


# -- the Twisted layer: TdsUpstreamHandler through a real channel -------------------------------


@pytest.fixture(scope="module")
def keys() -> Keys:
    from shared import pki

    authority = pki.create_ca("unit")
    return Keys(
        authority,
        pki.issue_server(authority, "unit", ["127.0.0.1"]),
        {name: pki.issue_client(authority, name, groups[0]) for name, groups in USERS.items()},
    )


def sql_world(tmp_path: Path, keys: Keys, *, credential: bool = True, extra: str = "") -> World:
    secret = tmp_path / "sql.secret"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    secret.chmod(0o600)
    config = f"""
jumpoint: {{name: unit, listen: "127.0.0.1:7443", addresses: ["127.0.0.1"]}}
groups:
  default:
    jump_groups: {{see: ["*"], open: ["*"]}}
items:
  - name: sql
    type: mssql
    host: {HOST}
    port: 1433
    username: app
    database: appdb
    ca_pem: {json.dumps(ca().certificate_pem.decode())}
{extra}"""
    if credential:
        config += f"""
credentials:
  - {{item: sql, password_file: {json.dumps(str(secret))}}}
"""
    return make_world(tmp_path, keys, config=config)


@dataclass
class Wire:
    """The bridge's server side: the fake server behind a TargetTransport."""

    world: World
    bridge: TcpBridge
    transport: TargetTransport
    server: FakeServer

    def pump(self) -> None:
        for _ in range(20):
            sent = self.transport.value()  # type: ignore[no-untyped-call]
            self.transport.clear()  # type: ignore[no-untyped-call]
            if not sent:
                break
            reply = self.server.feed(sent)
            if reply:
                self.bridge.dataReceived(reply)
        self.world.flush()


def open_sql_stream(world: World) -> tuple[RecordingApp, Any]:
    alice = world.connect("alice")
    alice.open("sql")
    stream, app = alice.stream(HOST, 1433)
    return app, stream


def connect_server(world: World, server: FakeServer, index: int = -1) -> Wire:
    transport, bridge = world.targets.connect(index)
    assert isinstance(bridge, TcpBridge) and isinstance(bridge.handler, TdsUpstreamHandler)
    assert isinstance(transport, TargetTransport)
    wire = Wire(world, bridge, transport, server)
    wire.pump()
    return wire


def refused() -> Exception:
    return ConnectionRefusedError()  # type: ignore[no-untyped-call]


def audit_events(world: World, event: str) -> list[Any]:
    return world.audit(event)


def test_bridge_logs_in_and_audits_through_the_channel(tmp_path: Path, keys: Keys) -> None:
    world = sql_world(tmp_path, keys)
    app, stream = open_sql_stream(world)
    stream.write(login_bytes(console_login7()))
    world.flush()
    ((host, port, _, _),) = world.targets.requests
    assert (host, port) == (HOST, 1433)
    wire = connect_server(world, FakeServer(server_pair()))
    assert wire.server.login is not None and wire.server.login.password == PASSWORD
    assert app.data == wire.server.response
    stream.write(batch_message("select 42"))
    world.flush()
    wire.pump()
    assert wire.server.after_login == batch_message("select 42")
    (batch,) = audit_events(world, "sql_batch")
    assert batch.detail["text"] == "select 42" and batch.item == "sql"
    assert audit_events(world, "sql_login")
    result = wire.server.send(b"\x04\x01\x00\x09\x00\x00\x01\x00\xfd")
    wire.bridge.dataReceived(result)
    world.flush()
    assert app.data.endswith(b"\x04\x01\x00\x09\x00\x00\x01\x00\xfd")
    assert_no_secret(app.data)
    rows = json.dumps([e.detail for e in world.audit("connection_opened")])
    assert PASSWORD not in rows


def test_bridge_without_credential_refuses_without_dialling(tmp_path: Path, keys: Keys) -> None:
    world = sql_world(tmp_path, keys, credential=False)
    app, stream = open_sql_stream(world)
    stream.write(login_bytes(console_login7()))
    world.flush()
    assert world.targets.requests == []
    error = error_of(app.data)
    assert "no credential for item 'sql'" in error.message
    assert app.ended and app.reset is None  # FIN after the error, not a reset
    (failed,) = audit_events(world, "sql_login_failed")
    assert "no credential" in failed.detail["reason"]
    assert audit_events(world, "connection_failed")


def test_bridge_unreachable_server_gives_18456(tmp_path: Path, keys: Keys) -> None:
    world = sql_world(tmp_path, keys)
    app, stream = open_sql_stream(world)
    stream.write(login_bytes(console_login7()))
    world.flush()
    _, _, _, attempt = world.targets.requests[0]
    attempt.errback(Failure(refused()))
    world.flush()
    error = error_of(app.data)
    assert "cannot reach the server" in error.message and "refused" in error.message
    assert app.ended and app.reset is None
    assert audit_events(world, "sql_login_failed")


def test_bridge_server_closing_during_login_gives_18456(tmp_path: Path, keys: Keys) -> None:
    world = sql_world(tmp_path, keys)
    app, stream = open_sql_stream(world)
    stream.write(login_bytes(console_login7()))
    world.flush()
    transport, bridge = world.targets.connect()
    bridge.readConnectionLost()
    world.flush()
    assert transport.disconnecting
    bridge.connectionLost(Failure(refused()))
    world.flush()
    assert "closed the connection during the login" in error_of(app.data).message
    assert app.ended and app.reset is None
    assert world.audit("connection_closed")


def test_the_server_is_dialled_only_once_the_whole_login7_is_in(tmp_path: Path, keys: Keys) -> None:
    world = sql_world(tmp_path, keys)
    app, stream = open_sql_stream(world)
    assert world.targets.requests == []  # an OPEN alone dials nothing
    data = login_bytes(console_login7(appname="A" * 3000))  # two packets
    stream.write(data[:5000])
    world.flush()
    assert world.targets.requests == []
    stream.write(data[5000:])
    world.flush()
    ((host, port, _, _),) = world.targets.requests
    assert (host, port) == (HOST, 1433)
    wire = connect_server(world, FakeServer(server_pair()))
    assert wire.server.login is not None and app.data == wire.server.response


class _Tap:
    def __init__(self) -> None:
        self.to_server = bytearray()
        self.from_server = bytearray()

    def to_socket(self, data: bytes) -> None:
        self.to_server += data

    def from_socket(self, data: bytes) -> None:
        self.from_server += data

    def closed(self, reset: bool) -> None:
        pass


def test_the_recording_starts_with_the_login7_that_came_before_the_dial(
    tmp_path: Path, keys: Keys
) -> None:
    world = sql_world(tmp_path, keys)
    app, stream = open_sql_stream(world)
    login = login_bytes(console_login7())
    stream.write(login)
    world.flush()
    _, _, bridge, _ = world.targets.requests[0]
    tap = _Tap()
    bridge.tap = tap  # as StreamConnection.dial does for a recorded session
    wire = connect_server(world, FakeServer(server_pair()))
    stream.write(batch_message("select 1"))
    world.flush()
    wire.pump()
    assert bytes(tap.to_server) == login + batch_message("select 1")
    assert bytes(tap.from_server) == app.data


def test_a_stream_that_sends_no_login7_is_reset_at_the_login_timeout(
    tmp_path: Path, keys: Keys
) -> None:
    world = sql_world(tmp_path, keys)
    app, stream = open_sql_stream(world)
    stream.write(login_bytes(console_login7())[:100])  # a partial LOGIN7, then nothing
    world.advance(29)
    assert app.reset is None
    world.advance(1)
    assert app.reset is not None
    code, reason = app.reset
    assert code == ErrorCode.TIMED_OUT and "login_timeout" in reason and "30s" in reason
    assert world.targets.requests == []
    (failed,) = audit_events(world, "sql_login_failed")
    assert "login_timeout" in failed.detail["reason"]
    assert audit_events(world, "connection_failed")


def test_a_login_the_server_does_not_answer_fails_at_the_login_timeout(
    tmp_path: Path, keys: Keys
) -> None:
    world = sql_world(tmp_path, keys, extra="    login_timeout: 5s\n")
    app, stream = open_sql_stream(world)
    stream.write(login_bytes(console_login7()))
    world.flush()
    transport, _ = world.targets.connect()  # connected, but the server never answers
    world.advance(5)
    error = error_of(app.data)
    assert error.number == 18456 and "did not complete within 5s (login_timeout)" in error.message
    assert app.ended and app.reset is None
    assert transport.disconnecting
    (failed,) = audit_events(world, "sql_login_failed")
    assert "login_timeout" in failed.detail["reason"]


def test_a_completed_login_is_not_timed_out(tmp_path: Path, keys: Keys) -> None:
    world = sql_world(tmp_path, keys, extra="    login_timeout: 5s\n")
    app, stream = open_sql_stream(world)
    stream.write(login_bytes(console_login7()))
    world.flush()
    wire = connect_server(world, FakeServer(server_pair()))
    assert app.data == wire.server.response
    world.advance(10)
    assert app.reset is None and not app.ended and not wire.transport.disconnecting
    assert audit_events(world, "sql_login_failed") == []


def test_stream_to_another_port_gets_18456_after_its_login(tmp_path: Path, keys: Keys) -> None:
    world = sql_world(tmp_path, keys)
    alice = world.connect("alice")
    alice.open("sql")
    stream, app = alice.stream(HOST, 1434)
    assert app.data == b"" and app.reset is None
    data = login_bytes(console_login7(appname="A" * 3000))
    stream.write(data[:5000])
    world.flush()
    assert app.data == b""
    stream.write(data[5000:])
    world.flush()
    assert "is not a tunnel of item 'sql'" in error_of(app.data).message
    assert app.ended and app.reset is None
    assert world.targets.requests == []
    assert world.audit("connection_denied")


def test_bridge_follows_routing_with_a_fresh_leg(tmp_path: Path, keys: Keys) -> None:
    world = sql_world(tmp_path, keys, extra='    allowed_routes: ["sql.example:11001"]\n')
    app, stream = open_sql_stream(world)
    stream.write(login_bytes(console_login7()))
    world.flush()
    first = connect_server(world, FakeServer(server_pair(), Knobs(routing=("sql.example", 11001))))
    assert first.transport.disconnecting and app.data == b""
    assert len(world.targets.requests) == 1  # dialled only once the old connection is gone
    first.bridge.connectionLost(Failure(refused()))
    world.flush()
    host, port, _, _ = world.targets.requests[-1]
    assert (host, port) == ("sql.example", 11001)
    second = connect_server(world, FakeServer(server_pair()))
    assert second.bridge is first.bridge
    assert second.server.login is not None and second.server.login.servername == "sql.example"
    assert app.data == second.server.response and app.reset is None and not app.ended
    (routed,) = audit_events(world, "sql_routed")
    assert routed.detail["to"] == "sql.example:11001" and routed.detail["server"] == HOST


def test_bridge_stops_after_too_many_reroutes(tmp_path: Path, keys: Keys) -> None:
    world = sql_world(tmp_path, keys)
    app, stream = open_sql_stream(world)
    stream.write(login_bytes(console_login7()))
    world.flush()
    for _ in range(MAX_REROUTES + 1):
        wire = connect_server(world, FakeServer(server_pair(), Knobs(routing=(HOST, 1433))))
        if wire.transport.disconnecting and not app.data:
            wire.bridge.connectionLost(Failure(refused()))
            world.flush()
    assert "more than 3 times" in error_of(app.data).message
    assert len(world.targets.requests) == MAX_REROUTES + 1


def test_bridge_route_outside_the_allow_list_is_refused(tmp_path: Path, keys: Keys) -> None:
    world = sql_world(
        tmp_path,
        keys,
        extra=f'    allowed_routes: ["evil.example:1433"]\nallowed_targets: ["{HOST}"]\n',
    )

    def resolve(host: str) -> Deferred[list[str]]:
        return succeed({HOST: ["10.1.1.1"]}.get(host, ["192.0.2.7"]))

    world.core.resolve = resolve
    app, stream = open_sql_stream(world)
    stream.write(login_bytes(console_login7()))
    world.flush()
    assert world.targets.requests, "the item's own host is allowed"
    first = connect_server(world, FakeServer(server_pair(), Knobs(routing=("evil.example", 1433))))
    first.bridge.connectionLost(Failure(refused()))
    world.flush()
    assert len(world.targets.requests) == 1
    error = error_of(app.data)
    assert error.number == 18456 and "(rule: allowed_targets)" in error.message
    assert app.ended and app.reset is None
    (failed,) = audit_events(world, "sql_login_failed")
    assert failed.rule == "allowed_targets" and failed.detail["to"] == "evil.example:1433"
    assert audit_events(world, "sql_routed") == []


@pytest.mark.parametrize("route", [("127.0.0.1", 1433), ("169.254.169.254", 80)])
def test_bridge_route_to_loopback_or_link_local_is_refused_without_an_allow_list(
    tmp_path: Path, keys: Keys, route: tuple[str, int]
) -> None:
    """No allowed_targets: the built-in default still refuses the route (a clean 18456)."""
    host, port = route
    world = sql_world(tmp_path, keys, extra=f'    allowed_routes: ["{host}:{port}"]\n')
    app, stream = open_sql_stream(world)
    stream.write(login_bytes(console_login7()))
    world.flush()
    first = connect_server(world, FakeServer(server_pair(), Knobs(routing=route)))
    first.bridge.connectionLost(Failure(refused()))
    world.flush()
    assert len(world.targets.requests) == 1  # never dialled
    error = error_of(app.data)
    assert error.number == 18456 and "(rule: allowed_targets)" in error.message
    (failed,) = audit_events(world, "sql_login_failed")
    assert failed.rule == "allowed_targets"
    assert audit_events(world, "sql_routed") == []


@pytest.mark.parametrize(
    ("route", "allowed_routes"),
    [
        (("10.9.9.9", 1433), []),  # another host
        ((HOST, 1444), []),  # the item's host, another port
        (("replica.corp", 1433), ["replica.corp:1444"]),  # listed at another port
        (("corp", 1433), ["*.corp:1433"]),  # a wildcard matches names under the domain only
    ],
)
def test_bridge_route_the_item_does_not_allow_is_refused(
    tmp_path: Path, keys: Keys, route: tuple[str, int], allowed_routes: list[str]
) -> None:
    world = sql_world(tmp_path, keys, extra=f"    allowed_routes: {json.dumps(allowed_routes)}\n")
    app, stream = open_sql_stream(world)
    stream.write(login_bytes(console_login7()))
    world.flush()
    first = connect_server(world, FakeServer(server_pair(), Knobs(routing=route)))
    assert first.transport.disconnecting
    first.bridge.connectionLost(Failure(refused()))
    world.flush()
    assert len(world.targets.requests) == 1  # the routed target is never dialled
    error = error_of(app.data)
    assert error.number == 18456 and "(rule: allowed_routes)" in error.message
    assert f"{route[0]}:{route[1]}" in error.message
    assert app.ended and app.reset is None
    (failed,) = audit_events(world, "sql_login_failed")
    assert failed.rule == "allowed_routes" and failed.detail["to"] == f"{route[0]}:{route[1]}"
    assert failed.detail["server"] == HOST
    assert audit_events(world, "sql_routed") == []
    assert_no_secret(app.data)


def test_bridge_follows_a_route_a_wildcard_allows(tmp_path: Path, keys: Keys) -> None:
    world = sql_world(tmp_path, keys, extra='    allowed_routes: ["*.Corp.:1433"]\n')
    app, stream = open_sql_stream(world)
    stream.write(login_bytes(console_login7()))
    world.flush()
    first = connect_server(world, FakeServer(server_pair(), Knobs(routing=("Replica.corp", 1433))))
    first.bridge.connectionLost(Failure(refused()))
    world.flush()
    host, port, _, _ = world.targets.requests[-1]
    assert (host, port) == ("Replica.corp", 1433)
    second = connect_server(world, FakeServer(issue_server(ca(), "replica", ["replica.corp"])))
    assert app.data == second.server.response
    (routed,) = audit_events(world, "sql_routed")
    assert routed.detail["to"] == "Replica.corp:1433"


def test_bridge_malformed_packet_after_login_resets_the_stream(tmp_path: Path, keys: Keys) -> None:
    world = sql_world(tmp_path, keys)
    app, stream = open_sql_stream(world)
    stream.write(login_bytes(console_login7()))
    world.flush()
    wire = connect_server(world, FakeServer(server_pair()))
    stream.write(bytes.fromhex("01 01 00 04 00 00 01 00"))
    world.flush()
    assert app.reset is not None and "malformed" in app.reset[1]
    assert wire.transport.disconnecting
    assert audit_events(world, "sql_malformed")


def test_bridge_session_end_while_a_refusal_waits(tmp_path: Path, keys: Keys) -> None:
    world = sql_world(tmp_path, keys, credential=False)
    alice = world.connect("alice")
    alice.open("sql")
    _stream, app = alice.stream(HOST, 1433)  # refused (no credential), waiting for the LOGIN7
    alice.ask("close_session", reason="done")
    world.flush()
    assert app.reset is not None and app.data == b""
    assert world.targets.requests == []
    assert world.audit("connection_failed")
