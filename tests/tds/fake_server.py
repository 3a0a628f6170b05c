"""A fake SQL Server that speaks enough real MS-TDS for pytds, pymssql, FreeTDS tsql and tedious.

Run standalone (prints C{{"event": "listening", "port": N}} on stdout, serves until SIGTERM)::

    python -m tests.tds.fake_server --port 0 --encryption off --user sa --password secret

or in-process::

    server = FakeTdsServer(FakeTdsOptions(user="sa", password="secret")).start()
    ...  # connect to 127.0.0.1:server.port
    server.stop()

Threads + blocking sockets; TLS is the standard library's C{ssl} on memory BIOs, so the
TDS 7.x handshake can travel inside PRELOGIN (0x12) packets.

Behaviour:
  - PRELOGIN: server side of the MS-TDS encryption table.  Both OFF ⇒ only LOGIN7 is
    encrypted ("login-only"); ON/REQ ⇒ full TLS (≤ 1.2) after a handshake carried in 0x12
    packets; NOT_SUP ⇒ clear text.
  - TDS 8.0 ("strict"): TLS first (ALPN C{tds/8.0}, TLS 1.2/1.3), then plain TDS inside.
    With C{--strict} only that is accepted; otherwise a first byte 0x16 is served as strict too.
  - LOGIN7: SQL login check, or NTLM through pyspnego's acceptor; error / routing knobs.
  - Requests: C{SELECT 1}, a C{rows} query (N rows of INT + NVARCHAR(100)), C{WAITFOR}
    (slow stream, ATTENTION ⇒ DONE with ATTN), C{use [db]}, transactions; DONE for the rest.
  - C{--record FILE}: one JSON line per login attempt and per batch / RPC.

C{FAKE_TDS_DEBUG=1} in the environment logs TLS details and dropped connections to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import json
import os
import re
import select
import signal
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.tds import wire

ENCRYPTION_MODES = ("off", "on", "required", "not-supported")
MAX_MESSAGE = 4 * 1024 * 1024
STREAM_INTERVAL = 0.05
STREAM_DURATION = 30.0
SERVER_NAME = "FAKESQL"
_ENV_LOCK = threading.Lock()  # NTLM_USER_FILE is process-global


@dataclass
class FakeTdsOptions:
    host: str = "127.0.0.1"
    port: int = 0
    encryption: str = "off"
    strict: bool = False
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = None
    ntlm_user_file: str | None = None
    login_error: str | None = None
    route_to: str | None = None
    database: str = "master"
    rows: int = 100
    record: str | None = None
    stream_interval: float = STREAM_INTERVAL
    stream_duration: float = STREAM_DURATION

    def __post_init__(self) -> None:
        if self.encryption not in ENCRYPTION_MODES:
            raise ValueError(
                f"encryption must be one of {ENCRYPTION_MODES}, not {self.encryption!r}"
            )
        if self.route_to is not None:
            self.route_target()  # validate early

    def route_target(self) -> tuple[str, int]:
        assert self.route_to is not None
        host, _, port = self.route_to.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--route-to must be HOST:PORT, not {self.route_to!r}")
        return host, int(port)


class ConnectionClosed(Exception):
    pass


class LoginFailed(Exception):
    pass


# ----------------------------------------------------------------------------- TLS helpers


def _self_signed(directory: str) -> tuple[str, str]:
    """An ephemeral certificate for 127.0.0.1/localhost (SQL Server also makes one at startup)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-sql-server")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    Path(cert_path).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    Path(key_path).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _tds7_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # TDS 7.x is specified up to TLS 1.2
    context.load_cert_chain(cert, key)
    return context


def _strict_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["tds/8.0"])
    return context


# ----------------------------------------------------------------------------- one connection


class _Channel:
    """Byte I/O on a socket, optionally through a memory-BIO TLS object.

    Reads are exact-size so that switching from TLS back to clear text (login-only
    encryption) never strands decrypted bytes.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()

    # raw socket
    def _recv_raw(self, size: int) -> bytes:
        data = self.sock.recv(size)
        if not data:
            raise ConnectionClosed("peer closed the connection")
        return data

    def _recv_raw_exact(self, size: int) -> bytes:
        chunks = []
        while size:
            data = self._recv_raw(size)
            chunks.append(data)
            size -= len(data)
        return b"".join(chunks)

    def peek_byte(self) -> int:
        data = self.sock.recv(1, socket.MSG_PEEK)
        if not data:
            raise ConnectionClosed("peer closed the connection")
        return data[0]

    # TLS
    def start_tls(self, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)

    def drop_tls(self) -> None:
        """Forget the TLS session without close_notify (login-only encryption)."""
        self.tls = None

    def tls_pending_output(self) -> bytes:
        return self._outgoing.read()

    def feed_tls(self, data: bytes) -> None:
        self._incoming.write(data)

    def _flush_tls(self) -> None:
        data = self._outgoing.read()
        if data:
            self.sock.sendall(data)

    def handshake_raw(self) -> None:
        assert self.tls is not None
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush_tls()
                self._incoming.write(self._recv_raw(65536))
        self._flush_tls()

    def tls_buffered(self) -> bool:
        return self.tls is not None and (self.tls.pending() > 0 or self._incoming.pending > 0)

    # I/O used by the TDS layer
    def recv_exact(self, size: int) -> bytes:
        if self.tls is None:
            return self._recv_raw_exact(size)
        buffer = b""
        while len(buffer) < size:
            try:
                chunk = self.tls.read(size - len(buffer))
            except ssl.SSLWantReadError:
                self._flush_tls()
                self._incoming.write(self._recv_raw(65536))
                continue
            except ssl.SSLZeroReturnError as error:
                raise ConnectionClosed("TLS close_notify") from error
            if not chunk:
                raise ConnectionClosed("TLS stream ended")
            buffer += chunk
        return buffer

    def send(self, data: bytes) -> None:
        if self.tls is None:
            self.sock.sendall(data)
            return
        view = memoryview(data)
        while view:
            written = self.tls.write(view)
            view = view[written:]
            self._flush_tls()

    def readable(self, timeout: float) -> bool:
        if self.tls_buffered():
            return True
        ready, _, _ = select.select([self.sock], [], [], timeout)
        return bool(ready)


@dataclass
class _Message:
    type: int
    status: int
    payload: bytes


class _Session:
    def __init__(self, server: FakeTdsServer, sock: socket.socket, spid: int) -> None:
        self.server = server
        self.options = server.options
        self.channel = _Channel(sock)
        self.spid = spid
        self.packet_size = 4096
        self.packet_id = 1
        self.encryption = "none"
        self.database = self.options.database
        self.transaction = 0
        self.tds_version = wire.TDS74
        self.pending_sspi = b""
        self.ntlm_check: str | None = None
        self.tls_version: str | None = None
        self.alpn: str | None = None

    # -- framing
    def read_packet(self) -> tuple[wire.PacketHeader, bytes]:
        header = wire.parse_header(self.channel.recv_exact(wire.HEADER_SIZE))
        payload = self.channel.recv_exact(header.length - wire.HEADER_SIZE)
        return header, payload

    def read_message(self, first: tuple[wire.PacketHeader, bytes] | None = None) -> _Message:
        header, payload = first or self.read_packet()
        parts = [payload]
        total = len(payload)
        while not header.eom:
            header, payload = self.read_packet()
            total += len(payload)
            if total > MAX_MESSAGE:
                raise wire.ProtocolError("message too large")
            parts.append(payload)
            if header.type == wire.ATTENTION:
                break
        return _Message(header.type, header.status, b"".join(parts))

    def send_message(
        self, payload: bytes, ptype: int = wire.TABULAR_RESULT, final: bool = True
    ) -> None:
        packets = wire.split_message(
            ptype, payload, self.packet_size, self.spid, self.packet_id, final
        )
        self.packet_id = (self.packet_id + len(packets)) & 0xFF
        self.channel.send(b"".join(packets))

    # -- main flow
    def run(self) -> None:
        first = self.channel.peek_byte()
        if first == 0x16:
            if self.server.tls_files is None:
                raise wire.ProtocolError("TLS first (TDS 8.0) but no certificate")
            self.channel.start_tls(self.server.strict_context())
            self.channel.handshake_raw()
            self.encryption = "strict"
            assert self.channel.tls is not None
            self.tls_version = self.channel.tls.version()
            self.alpn = self.channel.tls.selected_alpn_protocol()
            self.server.log(f"strict TLS {self.tls_version} alpn={self.alpn}")
        elif self.options.strict:
            raise wire.ProtocolError(
                f"strict (TDS 8.0) server: first byte 0x{first:02x} is not a TLS record"
            )

        header, payload = self.read_packet()
        if header.type == wire.PRELOGIN:
            message = self.read_message((header, payload))
            login_message = self.prelogin(message)
        elif header.type == wire.LOGIN7:
            login_message = self.read_message((header, payload))
        else:
            raise wire.ProtocolError(
                f"expected PRELOGIN or LOGIN7, got packet type 0x{header.type:02x}"
            )
        if not self.login(login_message):
            return
        while True:
            self.serve_request(self.read_message())

    # -- PRELOGIN and encryption
    def prelogin(self, message: _Message) -> _Message:
        options = wire.parse_prelogin(message.payload)
        client = options.get(wire.PL_ENCRYPTION, bytes([wire.ENCRYPT_NOT_SUP]))[:1] or b"\x02"
        client_value = client[0] & ~wire.ENCRYPT_CLIENT_CERT
        if self.encryption == "strict":
            reply, mode = wire.ENCRYPT_NOT_SUP, "strict"  # already inside TLS, the option is moot
        else:
            reply, mode = self.negotiate(client_value)
        self.send_message(
            wire.build_prelogin(
                [
                    (wire.PL_VERSION, wire.server_version_option()),
                    (wire.PL_ENCRYPTION, bytes([reply])),
                    (wire.PL_INSTOPT, b"\x00"),
                    (wire.PL_THREADID, b""),
                    (wire.PL_MARS, b"\x00"),
                ]
            )
        )
        if mode == "terminate":
            raise ConnectionClosed(f"client encryption 0x{client_value:02x} is not acceptable")
        if mode in ("login-only", "full"):
            self.tls_handshake_in_prelogin()
            self.encryption = mode
        # LOGIN7 (inside TLS when negotiated)
        header, payload = self.read_packet()
        if header.type != wire.LOGIN7:
            raise wire.ProtocolError(f"expected LOGIN7, got packet type 0x{header.type:02x}")
        parts = [payload]
        while not header.eom:
            # FreeTDS encrypts only the first LOGIN7 packet; the rest may follow in clear.
            if (
                mode == "login-only"
                and self.channel.tls is not None
                and not self.channel.tls_buffered()
                and self.channel.peek_byte() == wire.LOGIN7
            ):
                self.channel.drop_tls()
            header, payload = self.read_packet()
            parts.append(payload)
        if mode == "login-only":
            self.channel.drop_tls()
        return _Message(wire.LOGIN7, header.status, b"".join(parts))

    def negotiate(self, client: int) -> tuple[int, str]:
        """Server side of the MS-TDS 2.2.6.5 encryption table: (reply byte, mode)."""
        configured = self.options.encryption
        if configured == "not-supported":
            return wire.ENCRYPT_NOT_SUP, "none"
        if configured == "off":
            if client == wire.ENCRYPT_OFF:
                return wire.ENCRYPT_OFF, "login-only"
            if client in (wire.ENCRYPT_ON, wire.ENCRYPT_REQ):
                return wire.ENCRYPT_ON, "full"
            return wire.ENCRYPT_NOT_SUP, "none"
        # on / required: the server insists on encryption
        if client == wire.ENCRYPT_OFF:
            return wire.ENCRYPT_REQ, "full"
        if client in (wire.ENCRYPT_ON, wire.ENCRYPT_REQ):
            return wire.ENCRYPT_ON, "full"
        return wire.ENCRYPT_REQ, "terminate"

    def tls_handshake_in_prelogin(self) -> None:
        """TLS handshake whose records travel as the payload of PRELOGIN (0x12) packets."""
        self.channel.start_tls(self.server.tds7_context())
        tls = self.channel.tls
        assert tls is not None
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            self._send_handshake_flight()
            header, payload = self.read_packet_clear()
            if header.type != wire.PRELOGIN:
                raise wire.ProtocolError(
                    f"expected TLS handshake in PRELOGIN, got 0x{header.type:02x}"
                )
            self.channel.feed_tls(payload)
        self._send_handshake_flight()
        self.tls_version = tls.version()
        self.server.log(f"TDS 7.x TLS {tls.version()} {tls.cipher()}")

    def _send_handshake_flight(self) -> None:
        data = self.channel.tls_pending_output()
        if data:
            packets = wire.split_message(wire.PRELOGIN, data, 4096, self.spid, self.packet_id)
            self.packet_id = (self.packet_id + len(packets)) & 0xFF
            self.channel.sock.sendall(b"".join(packets))

    def read_packet_clear(self) -> tuple[wire.PacketHeader, bytes]:
        tls = self.channel.tls
        self.channel.tls = None
        try:
            return self.read_packet()
        finally:
            self.channel.tls = tls

    # -- LOGIN7
    def login(self, message: _Message) -> bool:
        login = wire.parse_login7(message.payload)
        self.tds_version = login.tds_version
        requested = login.packet_size or 4096
        record: dict[str, Any] = {
            "user": login.username,
            "password": login.password,
            "database": login.database,
            "servername": login.servername,
            "appname": login.appname,
            "hostname": login.hostname,
            "library": login.library,
            "auth": "ntlm" if login.integrated_security else "sql",
            "ntlm_user": None,
            "encryption": self.encryption,
            "tls_version": self.tls_version,
            "alpn": self.alpn,
            "tds_version": f"0x{login.tds_version:08x}",
            "packet_size": login.packet_size,
            "ok": False,
        }
        try:
            if login.integrated_security:
                record["ntlm_user"] = self.ntlm(login)
                record["ntlm_check"] = self.ntlm_check
                user_label = record["ntlm_user"]
            else:
                user_label = login.username
            if self.options.login_error is not None:
                raise LoginFailed(self.options.login_error)
            if (
                not login.integrated_security
                and self.options.user is not None
                and (
                    login.username != self.options.user
                    or login.password != (self.options.password or "")
                )
            ):
                raise LoginFailed(f"Login failed for user '{user_label}'.")
        except LoginFailed as failure:
            number = 18452 if login.integrated_security and record["ntlm_user"] is None else 18456
            self.server.record(record)
            self.send_message(wire.message(number, str(failure)) + wire.done(wire.DONE_ERROR))
            return False
        record["ok"] = True
        self.server.record(record)
        final_token = wire.sspi_token(self.pending_sspi) if self.pending_sspi else b""
        self.send_message(final_token + self.login_response(login, requested))
        self.packet_size = min(max(requested, 512), 32767)
        return True

    def login_response(self, login: wire.Login7, requested: int) -> bytes:
        version = login.tds_version if login.tds_version in wire.TDS_VERSIONS else wire.TDS74
        if version == 0x08000000 or version > wire.TDS74:
            version = wire.TDS74
        ack = wire.loginack(version)
        if self.options.route_to is not None:
            host, port = self.options.route_target()
            return ack + wire.envchange_routing(host, port) + wire.done()
        if login.database:
            self.database = login.database
        size = str(min(max(requested, 512), 32767))
        return (
            wire.envchange(wire.ENV_DATABASE, self.database, "master")
            + wire.envchange_bytes(wire.ENV_COLLATION, wire.DEFAULT_COLLATION, b"")
            + wire.envchange(wire.ENV_LANGUAGE, "us_english", "")
            + ack
            + wire.envchange(wire.ENV_PACKETSIZE, size, "4096")
            + wire.done()
        )

    def ntlm(self, login: wire.Login7) -> str:
        """Run the SSPI exchange; return the authenticated DOMAIN\\user or raise LoginFailed."""
        untrusted = "Login failed. The login is from an untrusted domain and cannot be used with Integrated authentication."
        if self.options.ntlm_user_file is None or not login.sspi:
            raise LoginFailed(untrusted)
        import spnego
        import spnego.exceptions

        protocol = "ntlm" if login.sspi.startswith(b"NTLMSSP\x00") else "negotiate"
        token: bytes | None = login.sspi
        challenge = b""
        with _ntlm_user_file(self.options.ntlm_user_file):
            context = spnego.server(protocol=protocol)
        for _ in range(8):
            try:
                with _ntlm_user_file(self.options.ntlm_user_file):
                    out = context.step(token)
            except spnego.exceptions.SpnegoError as error:
                # tedious declares only the 16-byte NTProofStr as NtChallengeResponse (the NTLMv2
                # blob trails outside the field), so only its LMv2 response can be checked —
                # which MS-NLMP 3.3.2 accepts; pyspnego's acceptor does not try LMv2.
                principal = _lmv2_principal(token or b"", challenge, self.options.ntlm_user_file)
                if principal is not None:
                    self.ntlm_check = "lmv2"
                    return principal
                self.server.log(f"NTLM rejected: {error}")
                raise LoginFailed(untrusted) from error
            if context.complete:
                # a final token (SPNEGO accept-completed) precedes LOGINACK
                if out:
                    self.pending_sspi = out
                self.ntlm_check = protocol
                return str(context.client_principal)
            if not out:
                raise LoginFailed(untrusted)
            challenge = out
            self.send_message(wire.sspi_token(out))
            reply = self.read_message()
            if reply.type not in (wire.SSPI, wire.LOGIN7):  # pytds keeps the LOGIN7 type
                raise wire.ProtocolError(f"expected SSPI packet, got type 0x{reply.type:02x}")
            token = reply.payload
        raise LoginFailed(untrusted)

    # -- requests
    def serve_request(self, message: _Message) -> None:
        reset = wire.envchange_reset_ack() if message.status & wire.STATUS_RESET_CONNECTION else b""
        if message.type == wire.ATTENTION:
            self.server.record({"attention": True, "while": "idle"})
            self.send_message(wire.done(wire.DONE_ATTN))
        elif message.type == wire.SQL_BATCH:
            text = wire.batch_text(message.payload)
            self.server.record({"batch": text})
            self.answer_query(text, reset, rpc=False)
        elif message.type == wire.RPC:
            rpc = wire.parse_rpc(message.payload)
            self.server.record({"rpc": rpc.name, "statement": rpc.statement})
            statement = rpc.statement
            if statement is None:  # not a string first parameter: search the whole request
                body = wire.strip_all_headers(message.payload)
                statement = body.decode("utf-16-le", errors="replace")
            self.answer_query(statement, reset, rpc=True)
        elif message.type == wire.TRANSACTION_MANAGER:
            self.server.record({"tm": self.transaction_manager_name(message.payload)})
            self.send_message(reset + self.transaction_manager(message.payload))
        else:
            self.server.record({"unknown_packet_type": message.type})
            self.send_message(reset + wire.done())

    def transaction_manager_name(self, payload: bytes) -> str:
        body = wire.strip_all_headers(payload)
        request = struct.unpack_from("<H", body, 0)[0] if len(body) >= 2 else -1
        return {5: "begin", 7: "commit", 8: "rollback", 9: "save"}.get(
            request, f"request#{request}"
        )

    def transaction_manager(self, payload: bytes) -> bytes:
        body = wire.strip_all_headers(payload)
        if len(body) < 2:
            return wire.done()
        (request,) = struct.unpack_from("<H", body, 0)
        if request == 5:
            return self.begin_transaction() + wire.done()
        if request in (7, 8):
            flags = body[3] if len(body) > 3 else 0
            out = self.end_transaction(commit=request == 7)
            if flags & 1:
                out += self.begin_transaction()
            return out + wire.done()
        return wire.done()

    def begin_transaction(self) -> bytes:
        self.server.transactions += 1
        self.transaction = self.server.transactions
        return wire.envchange_bytes(wire.ENV_BEGIN_TRAN, struct.pack("<Q", self.transaction), b"")

    def end_transaction(self, commit: bool) -> bytes:
        if not self.transaction:
            return b""
        old = struct.pack("<Q", self.transaction)
        self.transaction = 0
        return wire.envchange_bytes(
            wire.ENV_COMMIT_TRAN if commit else wire.ENV_ROLLBACK_TRAN, b"", old
        )

    def answer_query(self, text: str, reset: bytes, rpc: bool) -> None:
        lowered = text.lower()
        end = self._rpc_end if rpc else self._batch_end
        if "waitfor" in lowered:
            self.stream_slowly(reset, end)
            return
        if re.search(r"\brows\b", lowered):
            columns = [wire.Column("id", "int"), wire.Column("name", "nvarchar", 100)]
            body = bytearray(reset + wire.colmetadata(columns))
            for number in range(1, self.options.rows + 1):
                body += wire.row(columns, (number, f"row {number} of {self.options.rows}"))
            self.send_message(bytes(body) + end(self.options.rows))
            return
        if "select 1" in lowered:
            columns = [wire.Column("", "int")]
            self.send_message(reset + wire.colmetadata(columns) + wire.row(columns, (1,)) + end(1))
            return
        prefix = reset
        use = re.match(r"\s*use\s+\[?([^\]\s;]+)\]?", text, re.IGNORECASE)
        if use:
            old, self.database = self.database, use.group(1)
            prefix += wire.envchange(wire.ENV_DATABASE, self.database, old)
        elif re.match(r"\s*begin\s+tran", lowered):
            prefix += self.begin_transaction()
        elif re.search(r"\bcommit\b", lowered):
            prefix += self.end_transaction(commit=True)
        elif re.search(r"\brollback\b", lowered):
            prefix += self.end_transaction(commit=False)
        if rpc:
            self.send_message(prefix + wire.returnstatus(0) + wire.done(token=wire.TOKEN_DONEPROC))
        else:
            self.send_message(prefix + wire.done())

    @staticmethod
    def _batch_end(count: int) -> bytes:
        return wire.done(wire.DONE_COUNT, wire.CURCMD_SELECT, count)

    @staticmethod
    def _rpc_end(count: int) -> bytes:
        return (
            wire.done(
                wire.DONE_COUNT | wire.DONE_MORE, wire.CURCMD_SELECT, count, wire.TOKEN_DONEINPROC
            )
            + wire.returnstatus(0)
            + wire.done(token=wire.TOKEN_DONEPROC)
        )

    def stream_slowly(self, reset: bytes, end: Callable[[int], bytes]) -> None:
        """One row per packet every C{stream_interval}; ATTENTION ⇒ DONE(ATTN)."""
        columns = [wire.Column("id", "int"), wire.Column("name", "nvarchar", 100)]
        self.send_message(
            reset + wire.colmetadata(columns) + wire.row(columns, (1, "row 1")), final=False
        )
        sent = 1
        deadline = time.monotonic() + self.options.stream_duration
        while time.monotonic() < deadline:
            if self.channel.readable(self.options.stream_interval):
                header, _ = self.read_packet()
                if header.type == wire.ATTENTION:
                    self.server.record({"attention": True, "while": "streaming", "rows_sent": sent})
                    self.send_message(wire.done(wire.DONE_ATTN))
                    return
                raise wire.ProtocolError(
                    f"packet type 0x{header.type:02x} while streaming a result"
                )
            sent += 1
            self.send_message(wire.row(columns, (sent, f"row {sent}")), final=False)
        self.send_message(end(sent))


def _lmv2_principal(authenticate: bytes, challenge: bytes, user_file: str) -> str | None:
    """Check the LMv2 response of an NTLM AUTHENTICATE (MS-NLMP 3.3.2); DOMAIN\\user or None."""
    import hmac

    from spnego._ntlm_raw.crypto import hmac_md5, ntowfv1, ntowfv2

    if len(authenticate) < 64 or not authenticate.startswith(b"NTLMSSP\x00") or len(challenge) < 32:
        return None
    if struct.unpack_from("<I", authenticate, 8)[0] != 3:
        return None

    def field(at: int) -> bytes:
        length, _, offset = struct.unpack_from("<HHI", authenticate, at)
        return authenticate[offset : offset + length]

    lm_response, nt_response = field(12), field(20)
    if len(lm_response) != 24 or len(nt_response) > 24:
        return None  # a complete NTLMv2 response was already judged by pyspnego
    (flags,) = struct.unpack_from("<I", authenticate, 60)
    encoding = "utf-16-le" if flags & 1 else "latin-1"
    domain = field(28).decode(encoding, errors="replace")
    user = field(36).decode(encoding, errors="replace")
    server_challenge = challenge[24:32]
    for line in Path(user_file).read_text(encoding="utf-8").splitlines():
        parts = line.split(":")
        if (
            len(parts) != 3
            or parts[0].upper() != domain.upper()
            or parts[1].upper() != user.upper()
        ):
            continue
        key = ntowfv2(user, ntowfv1(parts[2]), domain)
        expected = hmac_md5(key, server_challenge + lm_response[16:])
        if hmac.compare_digest(expected, lm_response[:16]):
            return f"{domain}\\{user}" if domain else user
    return None


class _ntlm_user_file(contextlib.AbstractContextManager[None]):
    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> None:
        _ENV_LOCK.acquire()
        self.previous = os.environ.get("NTLM_USER_FILE")
        os.environ["NTLM_USER_FILE"] = self.path

    def __exit__(self, *exc: object) -> None:
        if self.previous is None:
            os.environ.pop("NTLM_USER_FILE", None)
        else:
            os.environ["NTLM_USER_FILE"] = self.previous
        _ENV_LOCK.release()


# ----------------------------------------------------------------------------- server


class FakeTdsServer:
    """Accept loop on a thread, one thread per connection."""

    def __init__(self, options: FakeTdsOptions | None = None, **overrides: Any) -> None:
        if options is None:
            options = FakeTdsOptions(**overrides)
        elif overrides:
            options = FakeTdsOptions(**{**asdict(options), **overrides})
        self.options = options
        self.records: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.transactions = 0
        self.accepted = 0
        """TCP connections accepted so far (to check that nothing dialled the server)."""
        self.port = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._spid = 50
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self.tls_files: tuple[str, str] | None = None
        self._tds7: ssl.SSLContext | None = None
        self._strict: ssl.SSLContext | None = None

    # lifecycle
    def start(self) -> FakeTdsServer:
        options = self.options
        if options.cert and options.key:
            self.tls_files = (options.cert, options.key)
        elif options.encryption != "not-supported" or options.strict:
            self._tempdir = tempfile.TemporaryDirectory(prefix="fake-tds-")
            self.tls_files = _self_signed(self._tempdir.name)
        if self.tls_files:
            self._tds7 = _tds7_context(*self.tls_files)
            self._strict = _strict_context(*self.tls_files)
        listener = socket.socket(socket.AF_INET6 if ":" in options.host else socket.AF_INET)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((options.host, options.port))
        listener.listen(128)
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._thread = threading.Thread(
            target=self._accept, name=f"fake-tds-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                connection.close()
        if self._thread is not None:
            self._thread.join(5)
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def __enter__(self) -> FakeTdsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        return self.options.host, self.port

    # shared state
    def tds7_context(self) -> ssl.SSLContext:
        if self._tds7 is None:
            raise wire.ProtocolError("TLS negotiated but the server has no certificate")
        return self._tds7

    def strict_context(self) -> ssl.SSLContext:
        assert self._strict is not None
        return self._strict

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.records.append(entry)
            if self.options.record:
                with open(self.options.record, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(entry) + "\n")

    def logins(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.records if "ok" in r]

    def batches(self) -> list[str]:
        with self._lock:
            return [r["batch"] for r in self.records if "batch" in r]

    def rpcs(self) -> list[str]:
        with self._lock:
            return [r["rpc"] for r in self.records if "rpc" in r]

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Poll the records until C{predicate(records)} is true; return the records."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                snapshot = list(self.records)
            if predicate(snapshot):
                return snapshot
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"fake TDS server: condition not met within {timeout}s; records={snapshot}"
                )
            time.sleep(0.02)

    def log(self, text: str) -> None:
        if os.environ.get("FAKE_TDS_DEBUG"):
            print(f"fake-tds[{self.port}]: {text}", file=sys.stderr, flush=True)

    # threads
    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._spid += 1
                self.accepted += 1
                spid = self._spid
                self._connections.add(connection)
            threading.Thread(target=self._serve, args=(connection, spid), daemon=True).start()

    def _serve(self, connection: socket.socket, spid: int) -> None:
        try:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _Session(self, connection, spid).run()
        except (ConnectionClosed, ConnectionError, BrokenPipeError):
            pass
        except (wire.ProtocolError, ssl.SSLError, struct.error, ValueError, OSError) as error:
            if not self._stopping.is_set():
                with self._lock:
                    self.errors.append(f"{type(error).__name__}: {error}")
                self.log(f"connection {spid} dropped: {type(error).__name__}: {error}")
        except Exception:
            with self._lock:
                self.errors.append(traceback.format_exc())
            self.log(traceback.format_exc())
        finally:
            with self._lock:
                self._connections.discard(connection)
            with contextlib.suppress(OSError):
                connection.close()


# ----------------------------------------------------------------------------- CLI


def _parse_args(argv: list[str] | None) -> FakeTdsOptions:
    parser = argparse.ArgumentParser(
        prog="python -m tests.tds.fake_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    parser.add_argument(
        "--encryption",
        choices=ENCRYPTION_MODES,
        default="off",
        help="server PRELOGIN setting; on and required both force TLS (spec columns ON/REQ)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="TDS 8.0 only: TLS first, ALPN tds/8.0"
    )
    parser.add_argument(
        "--cert", help="PEM certificate (chain) for TLS; default: ephemeral self-signed"
    )
    parser.add_argument("--key", help="PEM private key for --cert")
    parser.add_argument("--user", help="SQL login name to accept (default: any)")
    parser.add_argument("--password", help="password for --user")
    parser.add_argument(
        "--ntlm-user-file", help="DOMAIN:USER:PASSWORD lines for Windows (NTLM) logins"
    )
    parser.add_argument("--login-error", help="fail every login with this message (18456)")
    parser.add_argument("--route-to", help="HOST:PORT sent as ENVCHANGE routing after LOGINACK")
    parser.add_argument("--database", default="master")
    parser.add_argument(
        "--rows", type=int, default=100, help="rows returned by a query mentioning 'rows'"
    )
    parser.add_argument(
        "--record", help="append one JSON line per login / batch / RPC to this file"
    )
    args = parser.parse_args(argv)
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    return FakeTdsOptions(
        host=args.host,
        port=args.port,
        encryption=args.encryption,
        strict=args.strict,
        cert=args.cert,
        key=args.key,
        user=args.user,
        password=args.password,
        ntlm_user_file=args.ntlm_user_file,
        login_error=args.login_error,
        route_to=args.route_to,
        database=args.database,
        rows=args.rows,
        record=args.record,
    )


def main(argv: list[str] | None = None) -> int:
    options = _parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = FakeTdsServer(options).start()
    print(json.dumps({"event": "listening", "port": server.port}), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
