"""The console's leg of the SQL Server proxy, sans-IO: the SQL Server a local client sees.

A SQL Server client connects to the console's loopback listener with a
placeholder login.  L{ClientLeg} plays the server up to the login: it
answers PRELOGIN itself, terminates TLS with the listener's certificate,
reassembles LOGIN7, drops everything secret from it and hands the rest to
the Jumpoint, which logs in with the item's credential.  From then on it only
relays (decrypting and encrypting when the connection is in TLS).

The first byte decides the mode (L{ClientLeg.mode}):

  - C{0x16}, a TLS record: TDS 8.0 "strict".  TLS first (ALPN C{tds/8.0},
    TLS 1.2 or 1.3), then plain TDS inside it: PRELOGIN, LOGIN7, the session.
  - C{0x12}, a TDS 7.x PRELOGIN in clear.  The reply follows the MS-TDS table
    for a server whose own setting is OFF (L{negotiate} with OFF): the client's
    OFF gets OFF (C{"login-only"}: only LOGIN7 inside TLS), ON or REQ get ON
    (C{"full"}: the whole connection in TLS), NOT_SUP gets NOT_SUP
    (C{"none"}).  The TLS handshake travels inside PRELOGIN packets, then the
    records go raw on TCP; TLS 1.2 at most.
  - anything else: not TDS, the connection is closed.

Inside strict TLS the PRELOGIN reply says ENCRYPT_NOT_SUP: the connection is
already encrypted, so there is nothing left to negotiate.  It is the value the
clients themselves send there (FreeTDS 1.5 and tedious 18 both send NOT_SUP
inside TDS 8.0), neither of them acts on the reply's value in strict mode, and
NOT_SUP can never make a client start a second, TDS 7.x style handshake inside
the first one (ON could, in a client that does not special-case TDS 8.0).

Login-only: FreeTDS encrypts only the I{first} packet of LOGIN7 and sends the
others in clear, pytds encrypts all of them; both are accepted (TLS records
are fed one at a time, and a clear LOGIN7 packet is recognised by its type
byte at a packet boundary).  Once LOGIN7 is whole the TLS session is dropped
without close_notify.

What goes to the Jumpoint (L{LegOutput.to_jumpoint}), in order: one LOGIN7
message (type 0x10 packets of at most 4096 bytes) with empty UserName,
Password and ChangePassword, no SSPI, AtchDBFile, fIntSecurity,
fChangePassword, fUserInstance or FEDAUTH feature, every other field as the
client sent it; then the client's TDS packets unchanged (decrypted when in
TLS).  PRELOGIN never reaches the Jumpoint.  What comes back
(L{ClientLeg.from_jumpoint}) is plain TDS, the login response first; it is
encrypted here when the connection is in TLS.

A client asking for Windows authentication (fIntSecurity or an SSPI blob) is
answered with a login failure (error 18456) and closed.  Malformed input
closes the connection with a reason (L{LegOutput.close}); no exception leaves
this object, and the client's password never does either: not in
C{to_jumpoint}, not in a reason.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

from OpenSSL import SSL

from shared.codecs.tds.login7 import OPT2_INT_SECURITY, decode_login7, encode_login7
from shared.codecs.tds.packets import (
    DEFAULT_PACKET_SIZE,
    HEADER_SIZE,
    MAX_PACKET_SIZE,
    MessageAssembler,
    Packet,
    PacketParser,
    PacketType,
    TdsError,
    encode_message,
)
from shared.codecs.tds.prelogin import (
    Encryption,
    Outcome,
    decode_prelogin,
    negotiate,
    outcome,
    server_prelogin_reply,
)
from shared.codecs.tds.tls_in_tds import TlsEngine, server_context, wrap_handshake
from shared.codecs.tds.tokens import login_failed

Mode = Literal["none", "login-only", "full", "strict"]

WINDOWS_AUTH_REFUSED = (
    "this SQL Server tunnel logs you in with the item's credential;"
    " use SQL authentication with any user name and password"
)
"""The text of the 18456 error a client using Windows authentication gets."""

STRICT_PRELOGIN_REPLY = Encryption.NOT_SUP
"""The ENCRYPTION value of the PRELOGIN reply inside TDS 8.0 TLS (see the module docstring)."""

SERVER_SETTING = Encryption.OFF
"""The proxy's own setting in the MS-TDS negotiation table: TLS offered, not forced."""

MAX_PRELOGIN = 4096
"""Largest PRELOGIN message accepted (real ones are under 100 bytes)."""

MAX_HANDSHAKE_FLIGHT = 64 * 1024
"""Largest TLS handshake flight accepted inside PRELOGIN packets."""

_TLS_RECORD_TYPES = frozenset({20, 21, 22, 23})  # change_cipher_spec, alert, handshake, data
_TLS_RECORD_HEADER = 5
_TLS_MAX_RECORD = 16384 + 2048  # TLS 1.2 ciphertext limit
_TLS_HANDSHAKE = 0x16

_MODES: dict[Outcome, Mode] = {
    Outcome.NONE: "none",
    Outcome.LOGIN_ONLY: "login-only",
    Outcome.FULL: "full",
}


@dataclass(frozen=True, slots=True)
class LegOutput:
    """What one call of L{ClientLeg.from_client} produced.

    @ivar to_client: bytes to write to the client (first).
    @ivar to_jumpoint: bytes to send to the Jumpoint on the stream.
    @ivar close: when set, why the client connection must be closed after
        writing C{to_client} (safe to log and show).
    @ivar mode: the leg's mode so far (C{None} until the first bytes tell).
    """

    to_client: bytes = b""
    to_jumpoint: bytes = b""
    close: str | None = None
    mode: Mode | None = None


class _Phase(enum.Enum):
    FIRST_BYTE = "first byte"
    PRELOGIN = "prelogin"  # TDS 7.x, in clear
    HANDSHAKE = "handshake"  # TDS 7.x, TLS inside PRELOGIN packets
    STRICT_HANDSHAKE = "strict handshake"  # TDS 8.0, TLS first
    STRICT_PRELOGIN = "strict prelogin"  # TDS 8.0, PRELOGIN inside TLS
    LOGIN = "login"  # waiting for the whole LOGIN7
    RELAY = "relay"
    CLOSED = "closed"


class _PacketReader:
    """Takes whole packets off the front of C{buffer}, one at a time.

    Feeding the L{PacketParser} exactly one packet at a time (header first,
    so that a bad length is refused before its body is awaited) leaves the
    bytes after the packet untouched in C{buffer}: they may not be TDS at all
    (the raw TLS records that follow a TDS 7.x handshake).
    """

    def __init__(self, buffer: bytearray, max_packet: int = MAX_PACKET_SIZE) -> None:
        self.buffer = buffer
        self._parser = PacketParser(max_packet)
        self._body: int | None = None

    @property
    def at_boundary(self) -> bool:
        """Whether no part of a packet has been taken yet."""
        return self._body is None

    def next(self) -> Packet | None:
        buffer = self.buffer
        if self._body is None:
            if len(buffer) < HEADER_SIZE:
                return None
            header = bytes(buffer[:HEADER_SIZE])
            del buffer[:HEADER_SIZE]
            packets = self._parser.feed(header)  # raises for a bad length
            if packets:
                return packets[0]  # a header-only packet
            self._body = int.from_bytes(header[2:4], "big") - HEADER_SIZE
        if len(buffer) < self._body:
            return None
        body = bytes(buffer[: self._body])
        del buffer[: self._body]
        self._body = None
        (packet,) = self._parser.feed(body)
        return packet

    def take_rest(self) -> bytes:
        """Everything not returned as a packet yet (a partial packet's header included)."""
        rest = self._parser.take_buffered() + bytes(self.buffer)
        self.buffer.clear()
        self._body = None
        return rest


@dataclass
class _Output:
    to_client: list[bytes] = field(default_factory=list)
    to_jumpoint: list[bytes] = field(default_factory=list)
    close: str | None = None


class _TlsFailure(TdsError):
    """The TLS engine failed: nothing more can be sent inside that TLS session."""


class ClientLeg:
    """The SQL Server the local client talks to, up to its login; a relay afterwards.

    @param tls_certificate_pem: the listener's certificate (chain optional).
    @param tls_key_pem: its private key.
    @param max_login: the largest LOGIN7 message accepted, in bytes.
    """

    def __init__(
        self, tls_certificate_pem: bytes, tls_key_pem: bytes, *, max_login: int = 128 * 1024
    ) -> None:
        self._certificate_pem = tls_certificate_pem
        self._key_pem = tls_key_pem
        self._max_login = max_login
        self.mode: Mode | None = None
        self.tls_version: str | None = None
        """The negotiated TLS version (C{"TLSv1.2"}, C{"TLSv1.3"}) once a handshake completed."""
        self.alpn: bytes | None = None
        """The ALPN protocol of a strict connection (C{b"tds/8.0"}), if the client offered it."""
        self.failure: str | None = None
        """Why the leg stopped, once it did (the reason given in L{LegOutput.close})."""
        self.client_encryption: Encryption | None = None
        """The ENCRYPTION value of the client's TDS 7.x PRELOGIN."""
        self._phase = _Phase.FIRST_BYTE
        self._raw = bytearray()  # bytes from the client's socket, not consumed yet
        self._plain = bytearray()  # bytes decrypted from TLS, not consumed yet
        self._wire = _PacketReader(self._raw)
        self._inner = _PacketReader(self._plain)
        self._engine: TlsEngine | None = None
        self._assembler = MessageAssembler(MAX_PRELOGIN)
        self._early: list[bytes] = []  # Jumpoint bytes that arrived before the login went out

    @property
    def logged_in(self) -> bool:
        """Whether LOGIN7 went to the Jumpoint (the leg relays from now on)."""
        return self._phase is _Phase.RELAY

    # -- the two directions ----------------------------------------------

    def from_client(self, data: bytes) -> LegOutput:
        """Take bytes the client sent; say what to write to it and to the Jumpoint."""
        out = _Output()
        if self._phase is _Phase.CLOSED:
            return LegOutput(mode=self.mode, close=self.failure)
        try:
            if self._phase is _Phase.RELAY:
                self._relay_from_client(data, out)
            else:
                self._raw += data
                self._advance(out)
        except TdsError as error:
            self._fail(error, out)
        except Exception as error:  # a bug must not leak payload bytes in a traceback
            self._fail(
                TdsError(f"internal error in the SQL Server proxy ({type(error).__name__})"), out
            )
        return LegOutput(
            to_client=b"".join(out.to_client),
            to_jumpoint=b"".join(out.to_jumpoint),
            close=out.close,
            mode=self.mode,
        )

    def from_jumpoint(self, data: bytes) -> bytes:
        """Take TDS bytes from the Jumpoint; return the bytes to write to the client.

        Before the login went out the bytes are held back; once the leg has
        failed they are dropped (L{failure} says why).
        """
        if self._phase is _Phase.CLOSED or not data:
            return b""
        if self._phase is not _Phase.RELAY:
            self._early.append(data)
            return b""
        try:
            return self._seal(data)
        except TdsError as error:
            self._fail(error, _Output())
            return b""

    # -- before the login ------------------------------------------------

    def _advance(self, out: _Output) -> None:
        while True:
            phase = self._phase
            if phase is _Phase.FIRST_BYTE:
                progressed = self._first_byte()
            elif phase is _Phase.PRELOGIN:
                progressed = self._clear_prelogin(out)
            elif phase is _Phase.HANDSHAKE:
                progressed = self._wrapped_handshake(out)
            elif phase is _Phase.STRICT_HANDSHAKE:
                progressed = self._strict_handshake(out)
            elif phase is _Phase.STRICT_PRELOGIN:
                progressed = self._strict_prelogin(out)
            elif phase is _Phase.LOGIN:
                progressed = self._login(out)
            else:
                return
            if not progressed:
                return

    def _first_byte(self) -> bool:
        if not self._raw:
            return False
        first = self._raw[0]
        if first == _TLS_HANDSHAKE:
            self.mode = "strict"
            self._engine = TlsEngine(self._context(tds8=True), server_side=True)
            self._phase = _Phase.STRICT_HANDSHAKE
        elif first == PacketType.PRELOGIN:
            self._phase = _Phase.PRELOGIN
        else:
            raise TdsError(
                f"the client's first byte 0x{first:02x} is neither a TDS PRELOGIN packet (0x12)"
                " nor a TLS handshake (0x16): is it a SQL Server client?"
            )
        return True

    def _context(self, *, tds8: bool) -> SSL.Context:
        return server_context(self._certificate_pem, self._key_pem, tds8=tds8)

    def _prelogin_message(self, reader: _PacketReader) -> bytes | None:
        """The payload of the PRELOGIN message once complete (C{None} until then)."""
        while (packet := reader.next()) is not None:
            message = self._assembler.add(packet)
            if message is None:
                continue
            if message.type != PacketType.PRELOGIN:
                raise TdsError(f"expected PRELOGIN, got a message of type 0x{message.type:02x}")
            return message.payload
        return None

    def _clear_prelogin(self, out: _Output) -> bool:
        payload = self._prelogin_message(self._wire)
        if payload is None:
            return False
        prelogin = decode_prelogin(payload)
        # Without an ENCRYPTION option the client knows nothing of TLS.
        client = prelogin.encryption
        if client is None:
            client = Encryption.NOT_SUP
        self.client_encryption = client
        reply = negotiate(client, SERVER_SETTING)
        result = outcome(client, reply)
        if result not in _MODES:  # cannot happen with SERVER_SETTING = OFF
            raise TdsError(f"client encryption {client.name} cannot be served")
        self.mode = _MODES[result]
        out.to_client.append(encode_message(PacketType.TABULAR, server_prelogin_reply(reply)))
        if self.mode == "none":
            self._start_login()
        else:
            self._engine = TlsEngine(self._context(tds8=False), server_side=True)
            self._assembler = MessageAssembler(MAX_HANDSHAKE_FLIGHT)
            self._phase = _Phase.HANDSHAKE
        return True

    def _wrapped_handshake(self, out: _Output) -> bool:
        engine = self._engine
        assert engine is not None
        packet = self._wire.next()
        if packet is None:
            return False
        if packet.type != PacketType.PRELOGIN:
            raise TdsError(
                f"expected the TLS handshake in PRELOGIN packets, got a packet of type"
                f" 0x{packet.type:02x}"
            )
        message = self._assembler.add(packet)
        if message is None:
            return True
        self._plain += self._tls_receive(message.payload)
        out.to_client.append(wrap_handshake(self._tls_output()))
        if engine.handshake_done:
            # From now on the TLS records go raw on TCP, in both directions.
            self.tls_version = engine.protocol_version()
            self._start_login()
        return True

    def _strict_handshake(self, out: _Output) -> bool:
        engine = self._engine
        assert engine is not None
        if not self._raw:
            return False
        data = bytes(self._raw)
        self._raw.clear()
        self._plain += self._tls_receive(data)
        out.to_client.append(self._tls_output())
        if not engine.handshake_done:
            return False
        self.tls_version = engine.protocol_version()
        self.alpn = engine.alpn()
        self._assembler = MessageAssembler(MAX_PRELOGIN)
        self._phase = _Phase.STRICT_PRELOGIN
        return True

    def _strict_prelogin(self, out: _Output) -> bool:
        self._decrypt_raw()
        payload = self._prelogin_message(self._inner)
        if payload is None:
            return False
        prelogin = decode_prelogin(payload)
        self.client_encryption = prelogin.encryption
        reply = encode_message(PacketType.TABULAR, server_prelogin_reply(STRICT_PRELOGIN_REPLY))
        out.to_client.append(self._seal(reply))
        self._start_login()
        return True

    def _start_login(self) -> None:
        self._assembler = MessageAssembler(self._max_login)
        self._phase = _Phase.LOGIN

    def _login(self, out: _Output) -> bool:
        while (packet := self._login_packet()) is not None:
            if packet.type != PacketType.LOGIN7:
                raise TdsError(f"expected LOGIN7, got a packet of type 0x{packet.type:02x}")
            message = self._assembler.add(packet)
            if message is not None:
                self._forward_login(message.payload, out)
                return True
        return False

    def _login_packet(self) -> Packet | None:
        """The next LOGIN7 packet, from wherever this mode carries it."""
        if self.mode == "none":
            return self._wire.next()
        if self.mode != "login-only":
            self._decrypt_raw()
            return self._inner.next()
        # Login-only: one TLS record at a time, so that clear packets after the
        # encrypted ones (FreeTDS) are never fed to the TLS engine.
        while True:
            if not self._wire.at_boundary:
                return self._wire.next()  # the rest of a clear packet
            packet = self._inner.next()
            if packet is not None:
                return packet
            raw = self._raw
            if not raw:
                return None
            if raw[0] in _TLS_RECORD_TYPES:
                if len(raw) < _TLS_RECORD_HEADER:
                    return None
                size = int.from_bytes(raw[3:5], "big")
                if size > _TLS_MAX_RECORD:
                    raise TdsError(f"TLS record of {size} bytes exceeds the TLS limit")
                end = _TLS_RECORD_HEADER + size
                if len(raw) < end:
                    return None
                record = bytes(raw[:end])
                del raw[:end]
                self._plain += self._tls_receive(record)
                continue
            if (
                raw[0] == PacketType.LOGIN7
                and self._assembler.in_progress
                and self._inner.at_boundary
                and not self._plain
            ):
                return self._wire.next()  # the rest of LOGIN7 in clear
            raise TdsError(
                f"expected LOGIN7 inside TLS, got a byte 0x{raw[0]:02x} that starts no TLS record"
            )

    def _forward_login(self, payload: bytes, out: _Output) -> None:
        login = decode_login7(payload, self._max_login)
        if login.option_flags2 & OPT2_INT_SECURITY or login.sspi:
            self._refuse(WINDOWS_AUTH_REFUSED, "the client asked for Windows authentication", out)
            return
        try:
            stripped = encode_login7(login.without_credentials())
        except ValueError as error:
            raise TdsError(f"LOGIN7 cannot be rebuilt: {error}") from None
        del login, payload
        out.to_jumpoint.append(encode_message(PacketType.LOGIN7, stripped, DEFAULT_PACKET_SIZE))
        if self.mode == "login-only":
            # Dropped without close_notify: both sides continue in clear.
            self._engine = None
        self._phase = _Phase.RELAY
        # Whatever followed LOGIN7 is the client's next TDS bytes.
        rest = self._inner.take_rest()
        if self._engine is None:
            rest += self._wire.take_rest()
        if rest:
            out.to_jumpoint.append(rest)
        early, self._early = self._early, []
        for chunk in early:
            out.to_client.append(self._seal(chunk))

    def _refuse(self, message: str, reason: str, out: _Output) -> None:
        """Answer the login with an 18456 error (encrypted when the connection is), then close."""
        failure = encode_message(PacketType.TABULAR, login_failed(message))
        out.to_client.append(self._seal(failure) if self.mode in ("full", "strict") else failure)
        self._stop(reason, out)

    # -- after the login -------------------------------------------------

    def _relay_from_client(self, data: bytes, out: _Output) -> None:
        if self._engine is None:
            out.to_jumpoint.append(data)
            return
        out.to_jumpoint.append(self._tls_receive(data))
        out.to_client.append(self._tls_output())

    def _seal(self, plain: bytes) -> bytes:
        """C{plain} as the client must receive it: encrypted when the connection is in TLS."""
        engine = self._engine
        if engine is None:
            return plain
        try:
            engine.send(plain)
        except TdsError as error:
            raise _TlsFailure(error.reason) from None
        return self._tls_output()

    # -- TLS and failures ------------------------------------------------

    def _decrypt_raw(self) -> None:
        if self._raw:
            data = bytes(self._raw)
            self._raw.clear()
            self._plain += self._tls_receive(data)

    def _tls_receive(self, data: bytes) -> bytes:
        engine = self._engine
        assert engine is not None
        try:
            return engine.receive(data)
        except TdsError as error:
            raise _TlsFailure(error.reason) from None

    def _tls_output(self) -> bytes:
        engine = self._engine
        return b"" if engine is None else engine.pending_output()

    def _fail(self, error: TdsError, out: _Output) -> None:
        """Stop on malformed input; a client waiting for its login response is told why."""
        reason = error.reason
        if isinstance(error, _TlsFailure):
            # OpenSSL may have queued an alert that tells the client what went wrong
            # (still inside PRELOGIN packets while a TDS 7.x handshake runs).
            try:
                alert = self._tls_output()
                if self._phase is _Phase.HANDSHAKE:
                    alert = wrap_handshake(alert)
                out.to_client.append(alert)
            except Exception:
                pass
        elif self._phase is _Phase.LOGIN:
            try:
                failure = encode_message(
                    PacketType.TABULAR,
                    login_failed(f"the SQL Server tunnel refused the login: {reason}"),
                )
                out.to_client.append(
                    self._seal(failure) if self.mode in ("full", "strict") else failure
                )
            except Exception:
                pass
        self._stop(reason, out)

    def _stop(self, reason: str, out: _Output) -> None:
        self._phase = _Phase.CLOSED
        self.failure = reason
        out.close = reason
        self._engine = None
        self._raw.clear()
        self._plain.clear()
        self._early = []
