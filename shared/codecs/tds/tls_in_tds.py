"""TLS inside TDS, sans-IO: a pyOpenSSL connection on memory BIOs, and its contexts.

Two ways to carry TLS (MS-TDS, and the "TDS 8.0" documentation):

  - TDS 7.x: after a clear PRELOGIN exchange, each handshake flight travels
    as the payload of PRELOGIN (type 0x12) packets in both directions
    (L{wrap_handshake}; unwrap with a L{PacketParser} and
    L{MessageAssembler}).  Once the handshake is complete the wrapping stops:
    TLS records go raw on the connection and carry whole TDS packets.  With
    "login-only" encryption (both peers sent ENCRYPT_OFF) the TLS session is
    dropped without close_notify right after the LOGIN7 message.  TLS 1.2 at
    most.
  - TDS 8.0 ("strict"): the TLS handshake comes first on the raw connection
    (ALPN C{tds/8.0}, TLS 1.2 or 1.3) and all of TDS, PRELOGIN included,
    runs inside it.

L{TlsEngine} never touches a socket: feed it the TLS bytes that arrived
(L{TlsEngine.receive}) and write out what L{TlsEngine.pending_output}
returns.  OpenSSL errors become L{TdsError}.
"""

from __future__ import annotations

import ipaddress

import service_identity
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from OpenSSL import SSL, crypto
from service_identity.pyopenssl import verify_hostname, verify_ip_address

from shared.codecs.tds.packets import DEFAULT_PACKET_SIZE, PacketType, TdsError, encode_message

ALPN_TDS8 = b"tds/8.0"
_READ_SIZE = 64 * 1024


def _describe(error: SSL.Error) -> str:
    """A readable sentence for an OpenSSL error (its reason strings, deduplicated)."""
    reasons: list[str] = []
    for item in error.args[0] if error.args and isinstance(error.args[0], list) else []:
        if isinstance(item, tuple) and item:
            text = str(item[-1])
            if text and text not in reasons:
                reasons.append(text)
    if not reasons:
        reasons.append(str(error) or type(error).__name__)
    return "; ".join(reasons)


class TlsEngine:
    """One TLS session on memory BIOs.

    @param server_side: accept (true) or connect (false).
    @param server_name: the SNI name a client sends, if any.

    The caller of a TDS 7.x handshake wraps in PRELOGIN packets every output
    produced while L{handshake_done} was false I{before} the call that
    produced it: on the server side the call to L{receive} that completes the
    handshake also produces the final flight (ChangeCipherSpec, Finished),
    which still goes inside PRELOGIN packets.
    """

    def __init__(
        self, context: SSL.Context, server_side: bool, server_name: bytes | None = None
    ) -> None:
        self._connection = SSL.Connection(context, None)
        self._server_side = server_side
        self._handshake_done = False
        self._closed = False
        if server_side:
            self._connection.set_accept_state()
        else:
            if server_name:
                self._connection.set_tlsext_host_name(server_name)
            self._connection.set_connect_state()

    @property
    def connection(self) -> SSL.Connection:
        """The pyOpenSSL connection (for certificate checks and inspection)."""
        return self._connection

    @property
    def handshake_done(self) -> bool:
        return self._handshake_done

    @property
    def closed(self) -> bool:
        """Whether the peer sent close_notify."""
        return self._closed

    def start(self) -> None:
        """Client side: produce the ClientHello (read it with L{pending_output}).

        Does nothing on the server side.
        """
        if not self._server_side and not self._handshake_done:
            self._drive_handshake()

    def _drive_handshake(self) -> None:
        try:
            self._connection.do_handshake()
        except SSL.WantReadError:
            return
        except SSL.Error as error:
            raise TdsError(f"TLS handshake failed: {_describe(error)}") from None
        self._handshake_done = True

    def receive(self, tls_bytes: bytes) -> bytes:
        """Take TLS bytes from the peer; return the application bytes they decrypt to.

        Drives the handshake while it is in progress; application data that
        arrives with the peer's last flight is returned too.
        """
        if tls_bytes:
            self._connection.bio_write(tls_bytes)
        if not self._handshake_done:
            self._drive_handshake()
            if not self._handshake_done:
                return b""
        chunks: list[bytes] = []
        while not self._closed:
            try:
                chunk = self._connection.recv(_READ_SIZE)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self._closed = True
                break
            except SSL.Error as error:
                raise TdsError(f"TLS error: {_describe(error)}") from None
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def send(self, plain: bytes) -> None:
        """Encrypt C{plain} (read the records with L{pending_output})."""
        if not self._handshake_done:
            raise TdsError("TLS data sent before the handshake completed")
        view = memoryview(plain)
        while view:
            try:
                sent = self._connection.send(view[:_READ_SIZE].tobytes())
            except SSL.Error as error:
                raise TdsError(f"TLS error: {_describe(error)}") from None
            view = view[sent:]

    def pending_output(self) -> bytes:
        """The TLS bytes to write to the peer (handshake flights or records); may be empty."""
        chunks: list[bytes] = []
        while True:
            try:
                chunks.append(self._connection.bio_read(_READ_SIZE))
            except SSL.WantReadError:
                break
        return b"".join(chunks)

    def close(self) -> None:
        """Queue a close_notify (for a full-TLS connection; login-only TLS is just dropped)."""
        try:
            self._connection.shutdown()
        except SSL.Error as error:
            raise TdsError(f"TLS error: {_describe(error)}") from None

    def alpn(self) -> bytes | None:
        """The negotiated ALPN protocol, or C{None}."""
        selected = self._connection.get_alpn_proto_negotiated()
        return selected or None

    def protocol_version(self) -> str:
        """The negotiated TLS version name (C{"TLSv1.2"}, C{"TLSv1.3"})."""
        return self._connection.get_protocol_version_name()

    def peer_certificate(self) -> x509.Certificate | None:
        """The peer's certificate, or C{None}."""
        return self._connection.get_peer_certificate(as_cryptography=True)


def wrap_handshake(tls_bytes: bytes, packet_size: int = DEFAULT_PACKET_SIZE) -> bytes:
    """TDS 7.x: TLS handshake bytes as a PRELOGIN message (nothing for no bytes)."""
    if not tls_bytes:
        return b""
    return encode_message(PacketType.PRELOGIN, tls_bytes, packet_size)


def _certificates(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as error:
        raise TdsError(f"cannot read the certificates: {error}") from None


def _base_context(tds8: bool) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    if not tds8:
        context.set_max_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_TICKET)
    return context


def server_context(certificate_pem: bytes, key_pem: bytes, *, tds8: bool) -> SSL.Context:
    """A server context: TLS 1.2 for TDS 7.x, TLS 1.2-1.3 with ALPN C{tds/8.0} for TDS 8.0.

    C{certificate_pem} is the leaf certificate optionally followed by its chain.
    """
    chain = _certificates(certificate_pem)
    if not chain:
        raise TdsError("no certificate in the server certificate file")
    try:
        key = load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as error:
        raise TdsError(f"cannot read the server key: {error}") from None
    context = _base_context(tds8)
    context.set_options(SSL.OP_CIPHER_SERVER_PREFERENCE)
    try:
        context.use_certificate(chain[0])
        for extra in chain[1:]:
            context.add_extra_chain_cert(extra)
        context.use_privatekey(key)  # type: ignore[arg-type]
        context.check_privatekey()
    except SSL.Error as error:
        raise TdsError(f"the server certificate does not fit its key: {_describe(error)}") from None
    if tds8:
        # Select tds/8.0; a client offering only other protocols gets no ALPN.
        context.set_alpn_select_callback(
            lambda connection, offered: (
                ALPN_TDS8 if ALPN_TDS8 in offered else SSL.NO_OVERLAPPING_PROTOCOLS
            )
        )
    return context


def _verify_callback(
    connection: SSL.Connection, certificate: object, errno: int, depth: int, ok: int
) -> bool:
    return bool(ok)


def client_context(ca_pem: bytes | None, *, tds8: bool, verify: bool) -> SSL.Context:
    """A client context for the Jumpoint's leg to SQL Server.

    TLS 1.2 for TDS 7.x; TLS 1.2-1.3 offering ALPN C{tds/8.0} for TDS 8.0.
    With C{verify} the server's chain is checked against C{ca_pem} (or the
    system store when C{None}); the name is checked after the handshake with
    L{check_server_identity}.
    """
    context = _base_context(tds8)
    if tds8:
        context.set_alpn_protos([ALPN_TDS8])
    if verify:
        context.set_verify(SSL.VERIFY_PEER, _verify_callback)
        if ca_pem is None:
            context.set_default_verify_paths()
        else:
            certificates = _certificates(ca_pem)
            if not certificates:
                raise TdsError("no certificate in the CA file")
            store = context.get_cert_store()
            assert store is not None
            for certificate in certificates:
                store.add_cert(crypto.X509.from_cryptography(certificate))
    else:
        context.set_verify(SSL.VERIFY_NONE)
    return context


def check_server_identity(connection: SSL.Connection | TlsEngine, host: str) -> None:
    """Check the peer certificate against C{host} (DNS name or IP address); raises L{TdsError}."""
    if isinstance(connection, TlsEngine):
        connection = connection.connection
    if connection.get_peer_certificate() is None:
        raise TdsError(f"the server at {host} presented no certificate")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        is_ip = False
    else:
        is_ip = True
    try:
        if is_ip:
            verify_ip_address(connection, host)
        else:
            verify_hostname(connection, host)
    except (service_identity.VerificationError, service_identity.CertificateError) as error:
        raise TdsError(f"the server certificate is not valid for {host}: {error}") from None
