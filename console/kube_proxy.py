"""The console's HTTPS listener for Kubernetes cluster items: local auth, then raw relay.

Each accepted connection of a C{k8s} tunnel is TLS (the per-session listener
certificate of L{KubeSession}, TLS 1.2 or later, ALPN C{http/1.1} only, since
SPDY and WebSocket upgrades need HTTP/1.1) around a L{KubeClientBridge}.  The
stream to the Jumpoint is opened when the connection is accepted, as for any
tunnel.  For each request on the connection (keep-alive, pipelining allowed)
the bridge parses the head:

  - a malformed head gets a local 400 (a small C{Status}), and the
    connection is closed;
  - a request without exactly one C{Authorization: Bearer <session token>}
    line, or whose C{Host} is not the listener's C{ADDR:PORT} (or C{ADDR}),
    gets a local 401 and the connection is closed; none of its bytes cross
    the channel;
  - otherwise the head bytes, as received, and the body (Content-Length or
    chunked; the chunked framing is decoded only to find where the body
    ends) go to the stream unchanged.

What comes back on the stream is raw HTTP/1.1 responses, written to the
client unchanged.  After an upgrade request (C{Connection: upgrade} with an
C{Upgrade} header) has been forwarded, bytes pass both ways untouched.

A request refused after earlier requests of the same connection were
forwarded is answered only once the Jumpoint has ended the stream (the
console sends FIN first), so that the 401 cannot land inside a response
still in flight; after L{REFUSAL_WAIT} seconds it is written anyway.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from http import HTTPStatus
from typing import Any

from twisted.internet import ssl
from twisted.internet.interfaces import IDelayedCall, IProtocolFactory, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from console.kube_session import KubeSession
from shared.bridge import TcpBridge
from shared.frames import ErrorCode
from shared.k8s.http import ChunkedDecoder, HttpError, RequestHead, RequestHeadParser
from shared.k8s.policy import status_401, status_body
from shared.mux import Stream

log = Logger()

ALPN = b"http/1.1"
REFUSAL_WAIT = 5.0
"""Seconds to wait for the Jumpoint to end the stream before a held-back refusal is written."""

TOKEN_MESSAGE = (
    "Unauthorized: the request does not carry this session's token"
    " (use the kubeconfig printed by jump open)"
)
HOST_MESSAGE = "Unauthorized: the Host header does not name this session's listener"


def listener_hosts(address: str, port: int) -> frozenset[str]:
    """The C{Host} values accepted on a listener: C{ADDR:PORT} and C{ADDR} (lowercase)."""
    host = f"[{address}]" if ":" in address else address
    return frozenset({f"{host}:{port}".lower(), host.lower()})


def status_response(code: int, message: str) -> bytes:
    """A complete HTTP/1.1 error response with a Kubernetes C{Status}; closes the connection."""
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "Error"
    reason = phrase.replace(" ", "") or "BadRequest"
    body = json.dumps(status_body(code, reason, message), separators=(",", ":")).encode("utf-8")
    head = (
        f"HTTP/1.1 {code} {phrase}\r\n"
        "Content-Type: application/json\r\n"
        "Cache-Control: no-cache, private\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def tls_options(session: KubeSession) -> ssl.CertificateOptions:
    """The listener's TLS settings: the session's certificate, TLS 1.2+, ALPN http/1.1 only."""
    certificate = ssl.PrivateCertificate.loadPEM(session.certificate_pem + b"\n" + session.key_pem)
    return ssl.CertificateOptions(
        privateKey=certificate.privateKey.original,
        certificate=certificate.original,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        acceptableProtocols=[ALPN],
    )


class _Refuse(Protocol):
    """Closes a connection at once (no session yet)."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.abortConnection()  # type: ignore[attr-defined]


class KubeListenerFactory(ServerFactory):
    """The factory bound for a k8s tunnel: TLS around C{inner}, once the session exists.

    The L{KubeSession} is made after binding (it needs the bound port); until
    C{get_session} returns it, connections are closed at once.
    """

    def __init__(
        self,
        inner: IProtocolFactory,
        get_session: Callable[[], KubeSession | None],
        clock: IReactorTime | None = None,
    ) -> None:
        self.inner = inner
        self.clock = clock
        self.get_session = get_session
        self._tls: TLSMemoryBIOFactory | None = None
        self._tls_for: KubeSession | None = None

    def buildProtocol(self, addr: Any) -> Protocol | None:
        session = self.get_session()
        if session is None:
            log.warn("refused a Kubernetes connection: the session is not ready yet")
            return _Refuse()
        if self._tls is None or self._tls_for is not session:
            self._tls = TLSMemoryBIOFactory(
                tls_options(session), False, self.inner, clock=self.clock
            )
            self._tls_for = session
        protocol: Protocol | None = self._tls.buildProtocol(addr)
        return protocol


class KubeClientBridge(TcpBridge):
    """One kubectl connection (already decrypted) bridged to a stream, request by request.

    @param hosts: the accepted C{Host} values (L{listener_hosts}).
    @param local: the listener's address, for logs.
    @param clock: for the refusal wait (the global reactor by default).
    """

    def __init__(
        self,
        stream: Stream,
        session: KubeSession,
        hosts: Collection[str],
        on_closed: Callable[[TcpBridge], None] | None = None,
        *,
        local: str = "",
        clock: IReactorTime | None = None,
    ) -> None:
        super().__init__(stream, on_closed)
        self.session = session
        self.hosts = frozenset(h.lower() for h in hosts)
        self.local = local
        self._clock = clock
        self._mode = "head"  # head | length | chunked | upgraded | closed
        self._parser = RequestHeadParser()
        self._raw = bytearray()
        self._remaining = 0
        self._decoder: ChunkedDecoder | None = None
        self.forwarded = 0
        """Requests forwarded to the stream on this connection."""
        self.refused = 0
        self._held: bytes | None = None
        self._wait: IDelayedCall | None = None
        self._client_closed = False

    # -- from the client -------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        while data:
            mode = self._mode
            if mode == "closed":
                return
            if mode == "upgraded":
                super().dataReceived(data)
                return
            if mode == "head":
                data = self._head_bytes(data)
            elif mode == "length":
                used = min(self._remaining, len(data))
                super().dataReceived(data[:used])
                self._remaining -= used
                data = data[used:]
                if not self._remaining:
                    self._next_request()
            else:
                data = self._chunked_bytes(data)

    def _head_bytes(self, data: bytes) -> bytes:
        """Feed the head parser; forward or refuse a complete head; the bytes after it."""
        self._raw += data
        try:
            head = self._parser.feed(data)
        except HttpError as error:
            self._refuse(status_response(error.status, f"malformed request: {error.reason}"), error)
            return b""
        if head is None:
            return b""
        rest = self._parser.rest()
        raw = bytes(self._raw[: len(self._raw) - len(rest)]).lstrip(b"\r\n")
        self._raw.clear()
        try:
            length, chunked = head.content_length, head.chunked
        except HttpError as error:
            self._refuse(status_response(error.status, f"malformed request: {error.reason}"), error)
            return b""
        message = self._unauthorized(head)
        if message is not None:
            self._refuse(status_401(message, close=True), message, head)
            return b""
        super().dataReceived(raw)
        self.forwarded += 1
        if head.is_upgrade:
            self._mode = "upgraded"
        elif chunked:
            self._mode = "chunked"
            self._decoder = ChunkedDecoder()
        elif length:
            self._mode = "length"
            self._remaining = length
        else:
            self._next_request()
        return rest

    def _chunked_bytes(self, data: bytes) -> bytes:
        decoder = self._decoder
        assert decoder is not None
        before = decoder.wire_bytes
        try:
            decoder.feed(data)
        except HttpError as error:
            # The head already went through: the Jumpoint holds a partial request.
            self._abort_with(status_response(error.status, f"malformed request: {error.reason}"))
            return b""
        used = decoder.wire_bytes - before
        super().dataReceived(data[:used])
        if not decoder.done:
            return b""
        self._next_request()
        return data[used:]

    def _next_request(self) -> None:
        self._mode = "head"
        self._parser = RequestHeadParser()
        self._raw.clear()
        self._remaining = 0
        self._decoder = None

    def _unauthorized(self, head: RequestHead) -> str | None:
        """Why the request may not cross the channel, or None."""
        values = head.get_all("authorization")
        if len(values) != 1 or not self.session.check_token(values[0]):
            return TOKEN_MESSAGE
        host = head.get("host")
        if host is None or host.strip().lower() not in self.hosts:
            return HOST_MESSAGE
        return None

    # -- local answers ------------------------------------------------------------------------

    def _refuse(self, response: bytes, why: object, head: RequestHead | None = None) -> None:
        """Answer C{response} locally and close; nothing of this request reaches the stream."""
        self._mode = "closed"
        self.refused += 1
        reason = why.reason if isinstance(why, HttpError) else str(why)
        log.warn(
            "refused a Kubernetes request from {peer} on {local}{what}: {reason}",
            peer=self._peer(),
            local=self.local,
            what=f" ({head.method} {head.path})" if head is not None else "",
            reason=reason,
        )
        self.close_reason = f"refused locally: {reason}"
        if not self.forwarded or self.stream.closed:
            self._abort_with(response)
            return
        # Responses to earlier requests may still be coming: end our side, answer after them.
        self._held = response
        self.stream.end_write()
        clock = self._clock
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        assert clock is not None
        self._wait = clock.callLater(REFUSAL_WAIT, self._wait_over)

    def _wait_over(self) -> None:
        self._wait = None
        held, self._held = self._held, None
        if held is not None:
            self._abort_with(held)

    def _abort_with(self, response: bytes) -> None:
        """Reset the stream, write C{response} to the client, close the connection."""
        self._mode = "closed"
        self.stream.reset(ErrorCode.CANCEL, self.close_reason or "refused by the console")
        self._close_client(response)

    def _close_client(self, last: bytes | None) -> None:
        """Write C{last} after everything relayed, then close the TLS connection in order."""
        self._mode = "closed"
        if self._wait is not None and self._wait.active():
            self._wait.cancel()
        self._wait = None
        transport = self.transport
        if self._client_closed or transport is None:
            if transport is None:
                self._finish()
            return
        self._client_closed = True
        if last:
            transport.write(last)
        # A registered producer would make the TLS transport wait before closing.
        transport.unregisterProducer()  # type: ignore[attr-defined]
        transport.loseConnection()

    # -- from the stream --------------------------------------------------------------------

    def stream_data(self, data: bytes) -> None:
        if self._before_connect is not None or self.transport is None:
            super().stream_data(data)
            return
        if self._client_closed:
            return
        if self.tap is not None:
            self.tap.to_socket(data)
        # Straight to the TLS transport: the write batch would bypass the encryption.
        self.transport.write(data)

    def stream_ended(self) -> None:
        if self._before_connect is not None or self.transport is None:
            super().stream_ended()
            return
        # The Jumpoint has nothing more to say: TLS cannot half-close, so close in order.
        self._write_closed = True
        self.stream.end_write()
        held, self._held = self._held, None
        self.close_reason = self.close_reason or "closed"
        self._close_client(held)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._wait is not None and self._wait.active():
            self._wait.cancel()
        self._wait = None
        self._mode = "closed"
        super().connectionLost(reason)

    def _peer(self) -> str:
        transport = self.transport
        if transport is None:
            return "?"
        peer = transport.getPeer()
        return f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"


__all__ = [
    "ALPN",
    "KubeClientBridge",
    "KubeListenerFactory",
    "listener_hosts",
    "status_response",
    "tls_options",
]
