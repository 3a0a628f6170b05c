"""The Jumpoint's leg of the SQL Server proxy, sans-IO: TLS to the server, credential injection.

The console answers its client's PRELOGIN and TLS itself and sends, on the
stream, the client's LOGIN7 with an empty user name and password, then the
client's plain TDS packets.  L{ServerLeg} is the Jumpoint's half of one such
connection, with no I/O of its own:

  1. L{ServerLeg.start_output} (or L{ServerLeg.start}) gives the first bytes
     for the server: a PRELOGIN asking for encryption (MARS off), or, for
     C{encryption: strict} items (TDS 8.0), a TLS ClientHello offering ALPN
     C{tds/8.0}, the PRELOGIN following inside TLS.
  2. The server's PRELOGIN reply must be ON or REQ: the TLS handshake then
     runs inside PRELOGIN packets (TLS 1.2 at most) and the whole connection
     is encrypted afterwards.  OFF and NOT_SUP are refused: the Jumpoint never
     sends a credential in clear.  The certificate is checked against the
     item's CA certificates (the system store without them) and the server's
     name, unless the item says C{trust_server_certificate}.
  3. The console's LOGIN7 (queued until TLS is up) is rebuilt with the
     injected credential (L{Login7.with_credentials}, or L{Login7.with_sspi}
     and an NTLM exchange of SSPI packets for Windows logins), with the
     item's database when it names one, and split into 4096-byte packets.
  4. The login response is read whole.  An error, or no LOGINACK, becomes a
     clean "login failed" (error 18456) for the console; a routing
     ENVCHANGE asks the caller to reconnect elsewhere (L{LegOutput.reconnect})
     and never reaches the console; mirroring-partner ENVCHANGEs are
     removed; the rest goes to the console as it came.
  5. Then the leg relays both ways: console bytes are encrypted and sent at
     once (an ATTENTION passes while results stream), and on the side the
     client's messages are reassembled (bounded) for the audit events
     C{sql_batch} and C{sql_rpc}; server bytes are decrypted and handed to the
     console unchanged.

Every method returns a L{LegOutput}: bytes for the server, bytes for the
console, audit events, and whether to reconnect or close.  The password is
read from the credential when the LOGIN7 is built and leaves the leg only
inside TLS in C{to_server}: it is in no other output, audit event, reason or
exception text.
"""

from __future__ import annotations

import enum
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import spnego
from OpenSSL import SSL
from spnego.exceptions import SpnegoError

from jumpoint.credentials import Credential, CredentialUnavailable
from jumpoint.sql_audit import describe_sql_batch, parse_rpc
from shared.codecs.tds import tokens
from shared.codecs.tds.login7 import MAX_LOGIN7_LENGTH, Login7, decode_login7, encode_login7
from shared.codecs.tds.packets import (
    DEFAULT_PACKET_SIZE,
    HEADER,
    HEADER_SIZE,
    MAX_PACKET_SIZE,
    Message,
    MessageAssembler,
    Packet,
    PacketParser,
    PacketType,
    Status,
    TdsError,
    encode_message,
)
from shared.codecs.tds.prelogin import Encryption, client_prelogin, decode_prelogin
from shared.codecs.tds.tls_in_tds import (
    TlsEngine,
    check_server_identity,
    client_context,
    wrap_handshake,
)
from shared.items import Item

LOGIN_PACKET_SIZE = DEFAULT_PACKET_SIZE
"""Packets the Jumpoint sends before the login completes (LOGIN7 and SSPI) are at most this big."""

MAX_MESSAGE = 4 * 1024 * 1024
"""Default bound of the client messages reassembled for the audit, and of the login response."""

ERROR_SERVER_NAME = "Jumpoint"
"""The ServerName of the ERROR tokens the Jumpoint writes itself."""

MAX_REASON = 1000
"""Longest reason text put into an 18456 error (characters)."""

MAX_SERVER_TEXT = 400
"""Longest part of a server's error text quoted in a reason (characters)."""

STRIPPED_TOKENS: frozenset[tuple[int, int | None]] = frozenset(
    {
        (tokens.ENVCHANGE, tokens.ENV_ROUTING),
        (tokens.ENVCHANGE, tokens.ENV_MIRROR_PARTNER),
    }
)
"""Login response tokens that never reach the console: routing and mirroring partner."""

_AFTER_LOGIN_TYPES = frozenset(
    {
        PacketType.SQL_BATCH,
        PacketType.RPC,
        PacketType.ATTENTION,
        PacketType.BULK_LOAD,
        PacketType.TRANSACTION_MANAGER,
    }
)
_AUDITED_TYPES = frozenset({PacketType.SQL_BATCH, PacketType.RPC})
_TYPE_NAMES = {
    PacketType.SQL_BATCH: "sql_batch",
    PacketType.RPC: "rpc",
    PacketType.BULK_LOAD: "bulk_load",
    PacketType.TRANSACTION_MANAGER: "transaction_manager",
}


class TlsContextFactory(Protocol):
    """Builds the leg's client TLS context (as L{shared.codecs.tds.tls_in_tds.client_context})."""

    def __call__(self, ca_pem: bytes | None, *, tds8: bool, verify: bool) -> SSL.Context: ...


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit event of the leg: the event name and its fields (JSON-ready values)."""

    kind: str
    fields: dict[str, Any]


@dataclass(slots=True)
class LegOutput:
    """What the caller does after one call of the leg, in this order.

    @ivar to_server: bytes to write to the server connection.
    @ivar to_console: bytes to write to the stream (plain TDS).
    @ivar audit: events to record.
    @ivar reconnect: C{(host, port)} when the server routed the login
        elsewhere: drop this server connection (not the stream), dial there
        and run a fresh leg, replaying L{ServerLeg.console_login}.
    @ivar close: the reason, when this connection ends: write C{to_console},
        then end the stream and the server connection.
    """

    to_server: bytes = b""
    to_console: bytes = b""
    audit: list[AuditEvent] = field(default_factory=list)
    reconnect: tuple[str, int] | None = None
    close: str | None = None

    def __repr__(self) -> str:
        return (
            f"LegOutput(to_server=<{len(self.to_server)} bytes>,"
            f" to_console=<{len(self.to_console)} bytes>,"
            f" audit={[event.kind for event in self.audit]!r},"
            f" reconnect={self.reconnect!r}, close={self.close!r})"
        )


class _Out:
    """A L{LegOutput} under construction."""

    def __init__(self) -> None:
        self.server: list[bytes] = []
        self.console: list[bytes] = []
        self.audit: list[AuditEvent] = []
        self.reconnect: tuple[str, int] | None = None
        self.close: str | None = None

    def build(self) -> LegOutput:
        return LegOutput(
            b"".join(self.server), b"".join(self.console), self.audit, self.reconnect, self.close
        )


def refusal_message(reason: str) -> bytes:
    """The type-0x04 message refusing a login: ERROR 18456 "Login failed: <reason>" and DONE."""
    text = f"Login failed: {reason}"
    if len(text) > MAX_REASON:
        text = text[: MAX_REASON - 3] + "..."
    payload = tokens.login_failed(text, server=ERROR_SERVER_NAME)
    return encode_message(PacketType.TABULAR, payload, LOGIN_PACKET_SIZE)


def login_refusal(reason: str, **fields: Any) -> LegOutput:
    """The output refusing a login the leg never tried (no credential, a policy refusal).

    The console gets L{refusal_message}, the audit C{sql_login_failed} with
    C{reason} (and C{fields}), and the connection closes with C{reason}.
    C{reason} must be safe to show: it goes to the user's SQL client.
    """
    return LegOutput(
        to_console=refusal_message(reason),
        audit=[AuditEvent("sql_login_failed", {"reason": reason, **fields})],
        close=reason,
    )


class Phase(enum.Enum):
    NEW = "new"
    TLS_FIRST = "tls_first"
    """TDS 8.0: TLS handshake on the raw connection, before PRELOGIN."""
    PRELOGIN = "prelogin"
    """PRELOGIN sent, waiting for the reply."""
    TLS_HANDSHAKE = "tls_handshake"
    """TDS 7.x: TLS handshake inside PRELOGIN packets."""
    READY = "ready"
    """TLS is up, waiting for the console's LOGIN7."""
    LOGIN = "login"
    """LOGIN7 (and SSPI) sent, waiting for the login response."""
    LOGGED_IN = "logged_in"
    DONE = "done"
    """Closed, or routed elsewhere: every further call returns nothing."""


def _sni(host: str) -> bytes | None:
    """The SNI name for C{host}: none for an IP address (RFC 6066)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return None
    try:
        return host.encode("idna")
    except UnicodeError:
        return None


class _Framer:
    """Clear TDS packets one at a time, so that raw TLS after the last one stays unparsed."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._parser = PacketParser(MAX_PACKET_SIZE)

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_packet(self) -> Packet | None:
        """The next whole packet, or C{None}; raises L{TdsError} for a bad length."""
        if len(self._buffer) < HEADER_SIZE:
            return None
        length = HEADER.unpack_from(self._buffer)[2]
        if not HEADER_SIZE <= length <= MAX_PACKET_SIZE:
            self._parser.feed(bytes(self._buffer[:HEADER_SIZE]))  # raises with the reason
            raise TdsError(f"invalid packet length {length}")
        if len(self._buffer) < length:
            return None
        packets = self._parser.feed(bytes(self._buffer[:length]))
        del self._buffer[:length]
        return packets[0]

    def take_rest(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


class ServerLeg:
    """One connection from the Jumpoint to a SQL Server (see module docstring).

    @param item: the mssql item (C{encryption}, C{ca_pem},
        C{trust_server_certificate}, C{database}).
    @param credential: the login to inject: C{kind} "sql" or "ntlm".
    @param server_name: the server's host name or address as dialled: the
        certificate must be valid for it, it is the SNI name (for a DNS
        name), the LOGIN7 ServerName and the NTLM target host.
    @param tls_context_factory: builds the TLS context (default
        L{shared.codecs.tds.tls_in_tds.client_context}).
    @param now: the clock for the login duration in the audit.
    @param max_message: bound of a reassembled client message (audit) and of
        the login response.
    """

    def __init__(
        self,
        item: Item,
        credential: Credential,
        *,
        server_name: str,
        tls_context_factory: TlsContextFactory = client_context,
        now: Callable[[], float] = time.monotonic,
        max_message: int = MAX_MESSAGE,
    ) -> None:
        self.item = item
        self.credential = credential
        self.server_name = server_name
        self._context_factory = tls_context_factory
        self._now = now
        self.max_message = max_message
        self.strict = item.encryption == "strict"
        self.verify = not item.trust_server_certificate
        self.phase = Phase.NEW
        self.tls_version: str | None = None
        self.server_closed = False
        self.login_done = False
        """Whether the server accepted the login (stays true once the leg closes)."""
        self._started_at: float | None = None
        self._context: SSL.Context | None = None
        self._tls: TlsEngine | None = None
        self._outer = _Framer()
        self._outer_messages = MessageAssembler(64 * 1024)
        self._inner = PacketParser(MAX_PACKET_SIZE)
        self._inner_messages = MessageAssembler(max_message)
        self._response_packets: list[Packet] = []
        # The console's LOGIN7, as it came (for a reroute) and decoded.
        self._console_parser = PacketParser(MAX_PACKET_SIZE)
        self._console_messages = MessageAssembler(MAX_LOGIN7_LENGTH)
        self._login_raw: list[bytes] = []
        self._login_complete = False
        self._client_login: Login7 | None = None
        self._early: list[bytes] = []
        self._early_size = 0
        self._secret: str | None = None
        self._sspi: spnego.ContextProxy | None = None
        self._database: str | None = None
        # Reassembly of client messages after the login (audit only).
        self._relay_parser = PacketParser(MAX_PACKET_SIZE)
        self._message_type: int | None = None
        self._message_parts: list[bytes] = []
        self._message_size = 0
        self._message_oversized = False

    # -- state -----------------------------------------------------------

    @property
    def logged_in(self) -> bool:
        return self.phase is Phase.LOGGED_IN

    @property
    def closed(self) -> bool:
        return self.phase is Phase.DONE

    @property
    def console_login(self) -> bytes | None:
        """The console's LOGIN7 packets exactly as received (to replay on a reroute), once whole."""
        return b"".join(self._login_raw) if self._login_complete else None

    def _in(self, *phases: Phase) -> bool:
        """Whether the phase is one of C{phases} (a call, so that type checkers re-read it)."""
        return self.phase in phases

    # -- the three entry points ----------------------------------------

    def start(self) -> bytes:
        """The bytes to send the server once connected (see L{start_output})."""
        return self.start_output().to_server

    def start_output(self) -> LegOutput:
        """Start: the PRELOGIN, or (TDS 8.0) the TLS ClientHello.

        Returns a whole L{LegOutput} because starting can fail (a TLS context
        that cannot be built): then C{close} is set and C{to_console} holds the
        18456 refusal.
        """
        if self.phase is not Phase.NEW:
            raise RuntimeError("the leg was already started")
        out = _Out()
        self._started_at = self._now()
        try:
            ca_pem = self.item.ca_pem.encode("ascii") if self.item.ca_pem else None
            context = self._context_factory(ca_pem, tds8=self.strict, verify=self.verify)
            if self.strict:
                self._tls = TlsEngine(context, False, _sni(self.server_name))
                self._tls.start()
                self.phase = Phase.TLS_FIRST
                out.server.append(self._tls.pending_output())
            else:
                self._context = context
                self.phase = Phase.PRELOGIN
                out.server.append(self._prelogin(Encryption.ON))
        except (TdsError, SSL.Error, ValueError) as error:
            self._fail(out, f"the Jumpoint cannot set up TLS for the server: {_why(error)}")
        return out.build()

    def from_server(self, data: bytes) -> LegOutput:
        """Bytes from the server connection."""
        out = _Out()
        if self.phase in (Phase.DONE, Phase.NEW) or not data:
            return out.build()
        try:
            self._server_bytes(data, out)
        except TdsError as error:
            self._server_error(out, error.reason)
        except CredentialUnavailable as error:
            self._fail(out, error.message)
        return out.build()

    def from_console(self, data: bytes) -> LegOutput:
        """Bytes from the console (the LOGIN7 first, then the client's requests)."""
        out = _Out()
        if self.phase is Phase.DONE or not data:
            return out.build()
        if self.phase is Phase.LOGGED_IN:
            self._relay(data, out)
            return out.build()
        if self._login_complete:
            self._queue_early(data, out)
            return out.build()
        try:
            complete = self._console_login_bytes(data, out)
        except TdsError as error:
            reason = f"the client's login message is invalid: {error.reason}"
            out.audit.append(AuditEvent("sql_malformed", {"reason": reason, "stage": "login"}))
            self._fail(out, reason, audit=False)
            return out.build()
        if complete and self._in(Phase.READY):
            try:
                self._send_login(out)
            except TdsError as error:
                self._fail(out, f"the Jumpoint cannot send the login to the server: {error.reason}")
            except CredentialUnavailable as error:
                self._fail(out, error.message)
        return out.build()

    def fail(self, reason: str) -> LegOutput:
        """Give up the login with C{reason} (safe to show): 18456 to the console, audit, close.

        For the Twisted layer (the server is unreachable, closed the
        connection during the login, redirected too often).  After the login
        it only closes.
        """
        out = _Out()
        if self.phase is Phase.DONE:
            return out.build()
        if self.phase is Phase.LOGGED_IN:
            self._close(out, reason)
        else:
            self._fail(out, reason)
        return out.build()

    def shutdown(self) -> bytes:
        """After the login: a TLS close_notify for the server (the console ended its side)."""
        if self.phase is not Phase.LOGGED_IN or self._tls is None:
            return b""
        try:
            self._tls.close()
        except TdsError:
            return b""
        return self._tls.pending_output()

    # -- failures ----------------------------------------------------------

    def _fail(self, out: _Out, reason: str, *, audit: bool = True) -> None:
        """The login failed: 18456 to the console, audit C{sql_login_failed}, close."""
        self._secret = None
        self._sspi = None
        self.phase = Phase.DONE
        out.console.append(refusal_message(reason))
        if audit:
            fields: dict[str, Any] = {"reason": reason, "server": self.server_name}
            if self._started_at is not None:
                fields["duration"] = round(max(0.0, self._now() - self._started_at), 3)
            out.audit.append(AuditEvent("sql_login_failed", fields))
        out.close = reason

    def _close(self, out: _Out, reason: str) -> None:
        """After the login: end the connection (nothing more for the console)."""
        self.phase = Phase.DONE
        out.close = reason

    def _server_error(self, out: _Out, reason: str) -> None:
        if self.phase is Phase.LOGGED_IN:
            self._close(out, f"TLS error on the server connection: {reason}")
        elif self.phase in (Phase.TLS_FIRST, Phase.TLS_HANDSHAKE):
            self._fail(out, f"the Jumpoint could not set up TLS with the server: {reason}")
        elif self.phase is Phase.PRELOGIN:
            self._fail(out, f"the server's PRELOGIN reply is invalid: {reason}")
        else:
            self._fail(out, f"the server's login response is invalid: {reason}")

    # -- server side -------------------------------------------------------

    def _server_bytes(self, data: bytes, out: _Out) -> None:
        tls = self._tls
        if self.phase is Phase.LOGGED_IN:
            assert tls is not None
            if self.server_closed:
                return
            plain = tls.receive(data)
            if plain:
                out.console.append(plain)
            out.server.append(tls.pending_output())
            if tls.closed:
                self.server_closed = True
            return
        if self.strict or self.phase in (Phase.READY, Phase.LOGIN):
            assert tls is not None
            self._tls_bytes(data, out)
            return
        self._outer.feed(data)
        while self.phase in (Phase.PRELOGIN, Phase.TLS_HANDSHAKE):
            packet = self._outer.next_packet()
            if packet is None:
                return
            message = self._outer_messages.add(packet)
            if message is None:
                continue
            if self.phase is Phase.PRELOGIN:
                self._prelogin_reply(message, out)
            else:
                self._handshake_flight(message, out)
        rest = self._outer.take_rest()
        if rest and self._in(Phase.READY, Phase.LOGIN):
            self._tls_bytes(rest, out)

    def _tls_bytes(self, data: bytes, out: _Out) -> None:
        """Raw TLS from the server (TDS 8.0 always, TDS 7.x after the handshake)."""
        tls = self._tls
        assert tls is not None
        was_done = tls.handshake_done
        plain = tls.receive(data)
        out.server.append(tls.pending_output())
        if tls.closed:
            raise TdsError("the server closed the TLS session during the login")
        if not was_done and tls.handshake_done:
            self._tls_ready(out)
        if plain:
            self._inner_bytes(plain, out)

    def _prelogin(self, encryption: Encryption) -> bytes:
        return encode_message(PacketType.PRELOGIN, client_prelogin(encryption), LOGIN_PACKET_SIZE)

    def _prelogin_reply(self, message: Message, out: _Out) -> None:
        if message.type != PacketType.TABULAR:
            raise TdsError(
                f"the server answered PRELOGIN with a message of type 0x{message.type:02x}"
            )
        reply = decode_prelogin(message.payload)
        encryption = reply.encryption
        if encryption not in (Encryption.ON, Encryption.REQ):
            shown = "no encryption option" if encryption is None else encryption.name
            self._fail(
                out,
                f"the server does not offer encryption (PRELOGIN reply: {shown}); the Jumpoint"
                " never sends credentials in clear",
            )
            return
        assert self._context is not None
        self._tls = TlsEngine(self._context, False, _sni(self.server_name))
        self.phase = Phase.TLS_HANDSHAKE
        self._tls.start()
        out.server.append(wrap_handshake(self._tls.pending_output(), LOGIN_PACKET_SIZE))

    def _handshake_flight(self, message: Message, out: _Out) -> None:
        if message.type != PacketType.PRELOGIN:
            raise TdsError(
                f"the server sent a message of type 0x{message.type:02x} during the TLS handshake"
            )
        tls = self._tls
        assert tls is not None
        plain = tls.receive(message.payload)
        out.server.append(wrap_handshake(tls.pending_output(), LOGIN_PACKET_SIZE))
        if tls.handshake_done:
            if plain:
                raise TdsError("the server sent data inside the TLS handshake")
            self._tls_ready(out)

    def _tls_ready(self, out: _Out) -> None:
        """The handshake is complete: check the server's name, then go on."""
        tls = self._tls
        assert tls is not None
        if self.verify:
            check_server_identity(tls, self.server_name)
        self.tls_version = tls.protocol_version()
        if self.strict:
            self.phase = Phase.PRELOGIN
            # Inside TDS 8.0 TLS the PRELOGIN encryption option is informational;
            # clients send NOT_SUP (FreeTDS) since no further TLS is negotiated.
            tls.send(self._prelogin(Encryption.NOT_SUP))
            out.server.append(tls.pending_output())
        else:
            self.phase = Phase.READY
            self._send_login(out)

    def _inner_bytes(self, plain: bytes, out: _Out) -> None:
        """TDS packets from inside TLS, before the login completed."""
        for packet in self._inner.feed(plain):
            if self.phase is Phase.LOGGED_IN:
                out.console.append(packet.encode())
                continue
            if self.phase is Phase.DONE:
                return
            if self.phase not in (Phase.PRELOGIN, Phase.LOGIN):
                raise TdsError("the server sent data before the login")
            self._response_packets.append(packet)
            message = self._inner_messages.add(packet)
            if message is None:
                continue
            packets, self._response_packets = self._response_packets, []
            if message.type != PacketType.TABULAR:
                raise TdsError(f"the server sent a message of type 0x{message.type:02x}")
            if self.phase is Phase.PRELOGIN:
                # TDS 8.0: nothing in the reply changes what follows.
                self.phase = Phase.READY
                self._send_login(out)
            else:
                self._login_response(message, packets, out)
        if self.phase is Phase.LOGGED_IN:
            rest = self._inner.take_buffered()
            if rest:
                out.console.append(rest)

    # -- the login -----------------------------------------------------------

    def _console_login_bytes(self, data: bytes, out: _Out) -> bool:
        """Take LOGIN7 packets from the console; return whether the LOGIN7 is now whole."""
        packets = self._console_parser.feed(data)
        for index, packet in enumerate(packets):
            if packet.type != PacketType.LOGIN7:
                raise TdsError(f"expected a LOGIN7 packet, got type 0x{packet.type:02x}")
            self._login_raw.append(packet.encode())
            message = self._console_messages.add(packet)
            if message is None:
                continue
            self._client_login = decode_login7(message.payload)
            self._login_complete = True
            rest = b"".join(p.encode() for p in packets[index + 1 :])
            rest += self._console_parser.take_buffered()
            if rest:
                self._queue_early(rest, out)
            return True
        return False

    def _queue_early(self, data: bytes, out: _Out) -> None:
        """Client bytes that arrived before the login completed: relayed after it."""
        self._early_size += len(data)
        if self._early_size > self.max_message:
            self._fail(out, "the client sent too much data before the login completed")
            return
        self._early.append(data)

    def _send_login(self, out: _Out) -> None:
        """Build the LOGIN7 with the injected credential and send it (when both are ready)."""
        login = self._client_login
        tls = self._tls
        if login is None or self.phase is not Phase.READY:
            return
        assert tls is not None
        credential = self.credential
        database = self.item.database or login.database
        self._database = database or None
        self._secret = credential.password()
        if credential.kind == "sql":
            rebuilt = login.with_credentials(credential.username, self._secret, self.server_name)
        elif credential.kind == "ntlm":
            user = credential.username
            if credential.domain:
                user = f"{credential.domain}\\{user}"
            try:
                self._sspi = spnego.client(
                    username=user,
                    password=self._secret,
                    hostname=self.server_name,
                    service="MSSQLSvc",
                    protocol="ntlm",
                )
            except Exception:  # whatever it says, it must not reach a log with the secret
                self._sspi = None
            first = self._ntlm_step(None)
            if not first:
                self._fail(out, "the Windows (NTLM) authentication failed on the Jumpoint")
                return
            rebuilt = login.with_sspi(first, self.server_name)
        else:
            self._fail(
                out, f"the Jumpoint's credential has an unsupported kind {credential.kind!r}"
            )
            return
        try:
            payload = encode_login7(replace(rebuilt, database=database))
        except ValueError:
            self._fail(out, "the Jumpoint cannot build the login message for the server")
            return
        tls.send(encode_message(PacketType.LOGIN7, payload, LOGIN_PACKET_SIZE))
        out.server.append(tls.pending_output())
        self.phase = Phase.LOGIN

    def _login_response(self, message: Message, packets: list[Packet], out: _Out) -> None:
        response = tokens.scan_login_response(message.payload)
        errors = response.errors
        if errors:
            self._fail(out, self._refused_reason(errors[0]))
            return
        if response.loginack is None:
            challenge = response.sspi
            if challenge is not None and self._sspi is not None and not self._sspi.complete:
                answer = self._ntlm_step(challenge)
                if not answer:
                    self._fail(out, "the Windows (NTLM) authentication failed on the Jumpoint")
                    return
                tls = self._tls
                assert tls is not None
                tls.send(encode_message(PacketType.SSPI, answer, LOGIN_PACKET_SIZE))
                out.server.append(tls.pending_output())
                return
            self._fail(out, "the server did not acknowledge the login")
            return
        self._secret = None
        self._sspi = None
        routing = response.routing
        if routing is not None:
            # The caller checks the target (and audits sql_routed when it follows it).
            out.reconnect = routing
            self.phase = Phase.DONE
            return
        kept = response.without(set(STRIPPED_TOKENS))
        if kept == message.payload:
            out.console.append(b"".join(packet.encode() for packet in packets))
        else:
            size = max([LOGIN_PACKET_SIZE, *(HEADER_SIZE + len(p.payload) for p in packets)])
            out.console.append(encode_message(PacketType.TABULAR, kept, size, spid=packets[0].spid))
        ack = tokens.decode_loginack(response.loginack)
        fields: dict[str, Any] = {
            "login": self.credential.username,
            "auth": "windows" if self.credential.kind == "ntlm" else "sql",
            "database": self._database,
            "server": self.server_name,
            "tds_version": f"0x{ack.tds_version:08x}",
            "server_program": ack.program,
            "tls": self.tls_version,
        }
        if self._started_at is not None:
            fields["duration"] = round(max(0.0, self._now() - self._started_at), 3)
        out.audit.append(AuditEvent("sql_login", fields))
        self.phase = Phase.LOGGED_IN
        self.login_done = True
        early, self._early = self._early, []
        for chunk in early:
            self._relay(chunk, out)
            if self.phase is not Phase.LOGGED_IN:
                break

    def _ntlm_step(self, token: bytes | None) -> bytes | None:
        """The next NTLM token, or C{None} when the exchange failed (the error is dropped)."""
        if self._sspi is None:
            return None
        try:
            return self._sspi.step(token)
        except (SpnegoError, Exception):
            return None

    def _refused_reason(self, error: tokens.ErrorInfo) -> str:
        """The safe reason of a refused login: the server's text only if it holds no secret."""
        base = (
            f"the server refused the Jumpoint's stored credential for {self.credential.username!r}"
        )
        text = " ".join(error.message.split())
        secret = self._secret
        if secret and (secret in error.message or secret in text):
            text = ""
        if len(text) > MAX_SERVER_TEXT:
            text = text[: MAX_SERVER_TEXT - 3] + "..."
        if text:
            return f"{base} (server error {error.number}: {text})"
        return f"{base} (server error {error.number})"

    # -- after the login -------------------------------------------------

    def _relay(self, data: bytes, out: _Out) -> None:
        """Client bytes after the login: audit on the side, then encrypt and forward."""
        tls = self._tls
        assert tls is not None
        try:
            for packet in self._relay_parser.feed(data):
                self._audit_packet(packet, out)
        except TdsError as error:
            reason = error.reason
            out.audit.append(AuditEvent("sql_malformed", {"reason": reason}))
            self._close(out, f"malformed TDS from the client: {reason}")
            return
        try:
            tls.send(data)
        except TdsError as error:
            self._close(out, f"TLS error on the server connection: {error.reason}")
            return
        out.server.append(tls.pending_output())

    def _audit_packet(self, packet: Packet, out: _Out) -> None:
        kind = packet.type
        if kind not in _AFTER_LOGIN_TYPES:
            raise TdsError(f"unexpected packet type 0x{kind:02x} from the client")
        if kind == PacketType.ATTENTION:
            return  # a cancel: passes at any time, outside the message in progress
        if self._message_type is None:
            self._message_type = kind
            self._message_parts = []
            self._message_size = 0
            self._message_oversized = False
        elif kind != self._message_type:
            raise TdsError(
                f"packet of type 0x{kind:02x} inside a message of type 0x{self._message_type:02x}"
            )
        if kind in _AUDITED_TYPES and not self._message_oversized:
            self._message_size += len(packet.payload)
            if self._message_size > self.max_message:
                self._message_oversized = True
                self._message_parts = []
                out.audit.append(
                    AuditEvent(
                        "sql_message_too_large",
                        {"type": _TYPE_NAMES[PacketType(kind)], "limit": self.max_message},
                    )
                )
            else:
                self._message_parts.append(packet.payload)
        if not packet.eom:
            return
        parts, self._message_parts = self._message_parts, []
        oversized = self._message_oversized
        self._message_type = None
        if kind not in _AUDITED_TYPES or oversized or packet.status & Status.IGNORE:
            return
        payload = b"".join(parts)
        if kind == PacketType.SQL_BATCH:
            out.audit.append(AuditEvent("sql_batch", {"text": describe_sql_batch(payload)}))
            return
        calls = parse_rpc(payload)
        statements = [call.statement for call in calls if call.statement is not None]
        out.audit.append(
            AuditEvent(
                "sql_rpc",
                {
                    "procedures": [call.name for call in calls],
                    "text": "\n".join(statements) if statements else None,
                },
            )
        )


def _why(error: Exception) -> str:
    if isinstance(error, TdsError):
        return error.reason
    return type(error).__name__
