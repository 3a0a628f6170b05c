"""The Jumpoint's side of a Kubernetes cluster item: an HTTP/1.1-aware stream bridge.

L{KubeUpstreamBridge} replaces the plain L{TcpBridge} for the streams of k8s
items.  The console sends kubectl's raw HTTP/1.1 requests (already
authenticated locally, keep-alive, possibly an upgrade); the bridge speaks
HTTP/1.1 over TLS to the cluster (the item's PEM CAs, host name or IP
checked, ALPN C{http/1.1}) and, for every request:

  - parses the head (the limits of L{shared.k8s.http}) and classifies it
    (L{request_info}); an unparseable path is answered 400, a request the
    item's policy refuses 403 with a C{Status} naming the rule (audited as
    C{k8s_denied}); the body of an answered request is read and dropped, so
    the next request on the connection works;
  - otherwise strips C{Authorization}, C{Proxy-Authorization},
    C{Impersonate-*} and C{X-Forwarded-For}, rewrites C{Host}, adds the
    cluster's bearer token (client certificates go into the TLS handshake)
    and, with C{impersonate}, C{Impersonate-User} and one C{Impersonate-Group}
    line per group; the head is re-encoded one line per header (repeats
    kept) and the body streamed unchanged;
  - relays the response head and then its body piece by piece as it arrives
    (watches and C{logs -f} flow at once), finds its end (length, chunked,
    close) and audits the exchange (C{k8s_request}, or C{k8s_discovery} for
    discovery paths);
  - after a C{101 Switching Protocols} relays raw bytes both ways and audits
    the upgrade when the connection ends.  Bytes the console sends after an
    upgrade request and before the answer are held: raw if the answer is
    101, parsed as requests otherwise (never smuggled past the policy).

Responses go back in request order: a local answer (400, 403, 503) waits
behind the cluster's answers to earlier requests.  Without a usable
credential the bridge never dials: every request is answered 503 with a
C{Status} saying so.  The token never appears in logs or audit rows.

While a watch (or C{logs -f}) is in flight or the connection is upgraded,
L{KubeUpstreamBridge.long_running} is true and the session's idle timeout
does not close it.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from jumpoint.credentials import Credential, CredentialUnavailable
from shared.bridge import TcpBridge
from shared.frames import ErrorCode
from shared.k8s.http import (
    ChunkedDecoder,
    HttpError,
    RequestHead,
    RequestHeadParser,
    ResponseHead,
    ResponseHeadParser,
    encode_head,
    rewrite_headers,
)
from shared.k8s.policy import Denial, KubePolicy, check, status_403, status_body
from shared.k8s.requests import K8sRequestError, RequestInfo, request_info
from shared.mux import Stream

if TYPE_CHECKING:
    from collections.abc import Callable

    from twisted.internet.interfaces import IOpenSSLClientConnectionCreator

    from jumpoint.server import JumpointCore
    from jumpoint.session import Session

log = Logger()

REMOVED_HEADERS = (
    "Host",
    "Authorization",
    "Proxy-Authorization",
    "Impersonate-*",
    "X-Forwarded-For",
)
"""Request headers never forwarded as the client sent them."""

MAX_HELD_AFTER_UPGRADE = 1 << 20
"""Most bytes held after an upgrade request while its answer is awaited."""

_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----"
)

_PHRASES = {400: "Bad Request", 502: "Bad Gateway", 503: "Service Unavailable"}
_REASONS = {400: "BadRequest", 502: "InternalError", 503: "ServiceUnavailable"}


def kube_policy(session_item: Any) -> KubePolicy:
    """The L{KubePolicy} of a k8s item."""
    return KubePolicy(
        namespaces=tuple(session_item.allowed_namespaces),
        read_only=bool(session_item.read_only_access),
        denied_resources=tuple(session_item.denied_resources),
        allow_exec=bool(session_item.allow_exec),
        allow_port_forward=bool(session_item.allow_port_forward),
    )


def status_response(code: int, message: str, *, close: bool = False) -> bytes:
    """A complete response with a Kubernetes C{Status} (400, 502, 503)."""
    body = json.dumps(
        status_body(code, _REASONS.get(code, "InternalError"), message), separators=(",", ":")
    ).encode("utf-8")
    lines = [
        f"HTTP/1.1 {code} {_PHRASES.get(code, 'Error')}",
        "Content-Type: application/json",
        "Cache-Control: no-cache, private",
        f"Content-Length: {len(body)}",
    ]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def cluster_authority(url: str) -> tuple[str, int, str, str]:
    """(host, port, Host header value, path prefix) of a cluster URL."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or 443
    shown = f"[{host}]" if ":" in host else host
    authority = shown if port == 443 else f"{shown}:{port}"
    return host, port, authority, parts.path.rstrip("/")


def client_tls_options(
    host: str, ca_pem: str, credential: Credential | None
) -> IOpenSSLClientConnectionCreator:
    """TLS to the cluster: the item's CAs, C{host} checked, ALPN http/1.1, the client cert."""
    from twisted.internet.ssl import (
        Certificate,
        PrivateCertificate,
        optionsForClientTLS,
        trustRootFromCertificates,
    )

    pems = _PEM_CERTIFICATE.findall(ca_pem or "")
    if not pems:
        raise ValueError("the item has no CA certificate")
    trust = trustRootFromCertificates([Certificate.loadPEM(pem) for pem in pems])
    client = None
    if credential is not None and credential.kind == "client_certificate":
        path = credential.reference.certificate_file
        try:
            if path is None:
                raise OSError("no certificate_file")
            certificate = path.read_text(encoding="ascii")
            client = PrivateCertificate.loadPEM(certificate + "\n" + credential.password())
        except CredentialUnavailable:
            raise
        except Exception:
            raise CredentialUnavailable(
                "the client certificate or key for the cluster cannot be read on the Jumpoint"
            ) from None
    return optionsForClientTLS(
        host, trustRoot=trust, clientCertificate=client, acceptableProtocols=[b"http/1.1"]
    )


class _Body:
    """Where one message body ends: a length, chunked framing, or the connection's close."""

    def __init__(self, kind: str, length: int = 0, error_status: int = 400) -> None:
        self.kind = kind
        self.remaining = length
        self.decoder = ChunkedDecoder(error_status=error_status) if kind == "chunked" else None
        self.done = kind == "none"

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """(the body bytes in C{data}, the bytes after the body)."""
        if self.kind == "close":
            return data, b""
        if self.decoder is not None:
            self.decoder.feed(data)
            if not self.decoder.done:
                return data, b""
            self.done = True
            rest = self.decoder.rest()
            return data[: len(data) - len(rest)], rest
        used = min(self.remaining, len(data))
        self.remaining -= used
        self.done = self.remaining == 0
        return data[:used], data[used:]


@dataclass
class _Exchange:
    """One request on the connection and what became of it."""

    head: RequestHead
    info: RequestInfo | None
    started: float
    local: bytes | None = None
    """A response the Jumpoint answers itself (the request is not forwarded)."""
    upgrade: bool = False
    long_running: bool = False
    request_bytes: int = 0
    response_bytes: int = 0
    status: int | None = None
    keep_alive: bool = True
    audited: bool = False


class _Only(Factory):
    """Builds the one protocol it is given (the bridge inside the TLS wrapper)."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol_instance = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.protocol_instance


class KubeUpstreamBridge(TcpBridge):
    """The bridge of one stream of a k8s item (see the module docstring).

    @param groups: the jump user's groups (one C{Impersonate-Group} line each).
    @param tls: wrap the cluster connection in TLS (tests turn it off to
        drive the HTTP/1.1 side with a plain transport).
    """

    def __init__(
        self,
        stream: Stream,
        core: JumpointCore,
        session: Session,
        on_closed: Callable[[TcpBridge], None] | None = None,
        *,
        groups: Sequence[str] = (),
        tls: bool = True,
    ) -> None:
        super().__init__(stream, on_closed)
        self.core = core
        self.session = session
        self.item = session.item
        self.groups = tuple(groups)
        self.policy = kube_policy(self.item)
        host, port, authority, prefix = cluster_authority(self.item.url or "")
        self.cluster_host, self.cluster_port = host, port
        self.authority, self.prefix = authority, prefix
        self.credential: Credential | None = None
        self.tls_options: IOpenSSLClientConnectionCreator | None = None
        self._unavailable: str | None = None
        try:
            store = core.credentials
            if store is None:
                raise CredentialUnavailable(
                    f"the Jumpoint has no credential for item {self.item.name!r}"
                )
            self.credential = store.for_item(self.item)
            if self.credential.kind not in ("token", "client_certificate"):
                raise CredentialUnavailable(
                    f"the credential of item {self.item.name!r} is not a token or a client"
                    " certificate"
                )
            if tls:
                self.tls_options = client_tls_options(host, self.item.ca_pem or "", self.credential)
        except CredentialUnavailable as error:
            self._unavailable = (
                f"{error.message}: the Jumpoint cannot authenticate to the cluster of item"
                f" {self.item.name!r}"
            )
        except Exception as error:  # bad CA PEM: answer, never crash
            self._unavailable = f"the TLS settings of item {self.item.name!r} are unusable: {error}"
        self._tls = tls
        self._queue: deque[_Exchange] = deque()
        self._request_parser = RequestHeadParser()
        self._request_body: _Body | None = None
        self._request_exchange: _Exchange | None = None
        self._response_parser = ResponseHeadParser()
        self._response_raw = bytearray()
        self._response_body: _Body | None = None
        self._held: bytearray | None = None
        self._upgraded: _Exchange | None = None
        self._upgrade_bytes = [0, 0]
        self._no_more_requests = False
        self._console_ended = False
        self._local_only = False
        self._local_status = 503

    # -- what the server and the session ask ---------------------------------

    @property
    def long_running(self) -> bool:
        """An upgraded connection, or a watch / followed log in flight: no idle timeout."""
        if self._upgraded is not None:
            return True
        return any(ex.long_running and ex.local is None for ex in self._queue)

    def upstream_protocol(self) -> Protocol:
        """The protocol to connect to the cluster: the bridge inside TLS."""
        if not self._tls:
            return self
        assert self.tls_options is not None
        factory = TLSMemoryBIOFactory(self.tls_options, True, _Only(self))
        protocol: Protocol = factory.buildProtocol(None)
        return protocol

    def refused_before_dial(self) -> bool:
        """No usable credential: answer every request 503 without dialling; True if so."""
        if self._unavailable is None:
            return False
        self._local_only = True
        self._before_connect = None
        self.stream.resume_receiving()
        log.warn(
            "session {session}: stream {stream_id}: {reason}",
            session=self.session.session_id,
            stream_id=self.stream.stream_id,
            reason=self._unavailable,
        )
        return True

    # -- the console's side ----------------------------------------------------

    def stream_data(self, data: bytes) -> None:
        if self._finished:
            return
        self._from_console(data)

    def _from_console(self, data: bytes) -> None:
        while data and not self._finished:
            if self._upgraded is not None:
                self._upgrade_bytes[0] += len(data)
                self._to_cluster(data)
                return
            if self._held is not None:
                self._held += data
                if len(self._held) > MAX_HELD_AFTER_UPGRADE:
                    self._fail("too many bytes sent before the upgrade was answered")
                return
            body = self._request_body
            if body is not None:
                exchange = self._request_exchange
                assert exchange is not None
                try:
                    part, data = body.feed(data)
                except HttpError as error:
                    self._fail(f"malformed request body: {error.reason}")
                    return
                exchange.request_bytes += len(part)
                if exchange.local is None and part:
                    self._to_cluster(part)
                if body.done:
                    self._request_body = None
                    self._request_done(exchange)
                continue
            if self._no_more_requests:
                return
            try:
                head = self._request_parser.feed(data)
            except HttpError as error:
                self._bad_request(error.status, error.reason)
                return
            if head is None:
                return
            data = self._request_parser.rest()
            self._request_parser = RequestHeadParser()
            self._start_request(head)

    def _start_request(self, head: RequestHead) -> None:
        now = self.core.clock.seconds()
        exchange = _Exchange(head, None, now, keep_alive=head.keep_alive, upgrade=head.is_upgrade)
        self._request_exchange = exchange
        try:
            info = request_info(head.method, head.path, head.query, upgrade=head.is_upgrade)
        except K8sRequestError as error:
            exchange.local = status_response(400, f"the request path is refused: {error.reason}")
            self._record_denied(exchange, "k8s.path", error.reason)
        else:
            exchange.info = info
            exchange.long_running = info.verb == "watch" or (
                info.subresource == "log" and _query_true(head.query, "follow")
            )
            denial = check(self.policy, info)
            if denial is not None:
                exchange.local = status_403(info, denial)
                self._record_denied(exchange, denial.rule, denial.message, denial)
            elif self._local_only:
                assert self._unavailable is not None
                exchange.local = status_response(self._local_status, self._unavailable)
            else:
                try:
                    forwarded = self._rewrite(head)
                except CredentialUnavailable as error:
                    exchange.local = status_response(
                        503, f"{error.message}: the Jumpoint cannot authenticate to the cluster"
                    )
                except ValueError as error:
                    exchange.local = status_response(
                        400, f"the request cannot be forwarded: {error}"
                    )
                else:
                    exchange.request_bytes += len(forwarded)
                    self._to_cluster(forwarded)
        if exchange.local is not None:
            exchange.upgrade = False  # answered here: the connection stays HTTP
        self._queue.append(exchange)
        length, chunked = head.content_length, head.chunked
        if chunked:
            self._request_body = _Body("chunked")
        elif length:
            self._request_body = _Body("length", length)
        else:
            self._request_done(exchange)
        self._flush_local()

    def _rewrite(self, head: RequestHead) -> bytes:
        add: list[tuple[str, str]] = [("Host", self.authority)]
        credential = self.credential
        if credential is not None and credential.kind == "token":
            add.append(("Authorization", f"Bearer {credential.password().strip()}"))
        if self.item.impersonate:
            add.append(("Impersonate-User", self.session.user))
            add.extend(("Impersonate-Group", group) for group in self.groups)
        rewritten = rewrite_headers(head, remove=REMOVED_HEADERS, add=add)
        if self.prefix:
            rewritten = replace(rewritten, target=self.prefix + rewritten.target)
        return encode_head(rewritten)

    def _request_done(self, exchange: _Exchange) -> None:
        """The whole request (head and body) is in."""
        self._request_exchange = None
        if not exchange.keep_alive:
            self._no_more_requests = True
        if exchange.upgrade and exchange.local is None:
            self._held = bytearray()

    def stream_ended(self) -> None:
        if self._finished:
            return
        if not self._local_only and self.transport is None and self._before_connect is not None:
            self._ended_before_connect = True
            return
        self._console_ended = True
        self._no_more_requests = True
        if self._upgraded is not None or not any(ex.local is None for ex in self._queue):
            self._close()

    def stream_reset(self, code: int, reason: str) -> None:
        if self._local_only:
            self.reset_code = code
            self.close_reason = reason
            self._finish()
            return
        super().stream_reset(code, reason)

    # -- the cluster's side ------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        while data and not self._finished:
            if self._upgraded is not None:
                self._upgrade_bytes[1] += len(data)
                self._to_console(data)
                return
            if not self._queue or self._queue[0].local is not None:
                self._fail("the cluster sent bytes that answer no request", status=502)
                return
            exchange = self._queue[0]
            body = self._response_body
            if body is None:
                data = self._response_head(exchange, data)
                continue
            try:
                part, data = body.feed(data)
            except HttpError as error:
                self._fail(f"malformed response from the cluster: {error.reason}", status=502)
                return
            exchange.response_bytes += len(part)
            if part:
                self._to_console(part)
            if body.done:
                self._response_done()

    def _response_head(self, exchange: _Exchange, data: bytes) -> bytes:
        """Feed the response head; relay it once complete; the bytes after it."""
        self._response_raw += data
        try:
            head = self._response_parser.feed(data)
        except HttpError as error:
            self._fail(f"malformed response from the cluster: {error.reason}", status=502)
            return b""
        if head is None:
            return b""
        rest = self._response_parser.rest()
        raw = bytes(self._response_raw[: len(self._response_raw) - len(rest)])
        self._response_raw = bytearray()
        self._response_parser = ResponseHeadParser()
        if head.is_switching:
            if not exchange.upgrade:
                self._fail("the cluster switched protocols without an upgrade request", status=502)
                return b""
            exchange.response_bytes += len(raw)
            self._to_console(raw)
            self._switch(exchange, rest)
            return b""
        if head.status < 200:
            exchange.response_bytes += len(raw)
            self._to_console(raw)  # interim (100 Continue): the final head follows
            return rest
        exchange.response_bytes += len(raw)
        exchange.status = head.status
        exchange.keep_alive = exchange.keep_alive and head.keep_alive
        self._to_console(raw)
        kind = head.body_kind(exchange.head.method)
        self._response_body = _response_body(head, kind)
        if self._response_body.done:
            self._response_done()
        return rest

    def _response_done(self) -> None:
        exchange = self._queue.popleft()
        self._response_body = None
        self._record(exchange)
        held, self._held = self._held, None
        if not exchange.keep_alive:
            self._no_more_requests = True
            self._close()
            return
        self._flush_local()
        if held:
            self._from_console(bytes(held))  # not upgraded: the bytes are requests again
        self._maybe_end()

    def _switch(self, exchange: _Exchange, rest: bytes) -> None:
        """101: from now on, raw bytes both ways."""
        self._queue.popleft()
        exchange.status = 101
        self._upgraded = exchange
        held, self._held = self._held, None
        log.info(
            "session {session}: stream {stream_id}: {method} {path} upgraded",
            session=self.session.session_id,
            stream_id=self.stream.stream_id,
            method=exchange.head.method,
            path=exchange.head.path,
        )
        if rest:
            self._upgrade_bytes[1] += len(rest)
            self._to_console(rest)
        if held:
            self._upgrade_bytes[0] += len(held)
            self._to_cluster(bytes(held))
        if self._console_ended:
            self._close()

    def readConnectionLost(self) -> None:
        self._close()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._finished:
            return
        self.transport = None
        body = self._response_body
        if body is not None and body.kind == "close" and self._queue:
            self._response_body = None
            exchange = self._queue.popleft()
            exchange.keep_alive = False
            self._record(exchange)
        if self._upgraded is not None:
            self._record(self._upgraded)
        pending = [ex for ex in self._queue if ex.local is None]
        if pending and not self.stream.closed:
            first = pending[0]
            if first.response_bytes == 0 and self._response_body is None:
                text = reason.getErrorMessage()
                message = f"the connection to the cluster was lost: {text}"
                self._queue.popleft()
                first.status = 502
                first.local = status_response(502, message, close=True)
                self._queue.appendleft(first)
                self._flush_local()
                self.stream.end_write()
                self.close_reason = self.close_reason or message
            else:
                self.close_reason = f"aborted: {reason.getErrorMessage()}"
                self.stream.reset(ErrorCode.CANCEL, "the connection to the cluster was lost")
        elif not self.stream.closed:
            self._flush_local()
            self.stream.end_write()
            self.close_reason = self.close_reason or "closed"
        self._finish()

    def connection_failed(self, code: ErrorCode, reason: str) -> None:
        """The cluster cannot be reached: pending and later requests get a 502 Status."""
        if self._finished:
            return
        self._local_only = True
        self._unavailable = f"the Jumpoint cannot reach the cluster: {reason}"
        self.close_reason = f"connect failed: {reason}"
        self.reset_code = code
        self._local_status = 502
        self._before_connect = None  # the rewritten requests: answered below instead
        self.stream.resume_receiving()
        for exchange in self._queue:
            if exchange.local is None:
                exchange.status = 502
                exchange.local = status_response(502, self._unavailable)
        self._flush_local()
        if self._ended_before_connect:
            self._ended_before_connect = False
            self.stream_ended()

    # -- helpers -----------------------------------------------------------------

    def _to_cluster(self, data: bytes) -> None:
        if self._local_only:
            return
        TcpBridge.stream_data(self, data)

    def _to_console(self, data: bytes) -> None:
        if self.tap is not None:
            self.tap.from_socket(data)
        if not self.stream.closed:
            self.stream.write(data)

    def _flush_local(self) -> None:
        """Write the local answers now at the front of the queue (in order)."""
        while self._queue and self._queue[0].local is not None:
            exchange = self._queue.popleft()  # a body still arriving is dropped as it comes
            local = exchange.local
            assert local is not None
            exchange.response_bytes = len(local)
            if exchange.status is None:
                exchange.status = int(local[9:12])
            self._to_console(local)
            self._record(exchange)
            if not exchange.keep_alive:
                self._no_more_requests = True
                self._close()
                return
        self._maybe_end()

    def _maybe_end(self) -> None:
        if self._console_ended and not any(ex.local is None for ex in self._queue):
            self._close()

    def _bad_request(self, status: int, reason: str) -> None:
        """A malformed request head: answer (after earlier answers) and close."""
        log.warn(
            "session {session}: stream {stream_id}: malformed request: {reason}",
            session=self.session.session_id,
            stream_id=self.stream.stream_id,
            reason=reason,
        )
        code = status if status in _PHRASES else 400
        head = RequestHead("GET", "/", "HTTP/1.1", ())
        exchange = _Exchange(head, None, self.core.clock.seconds(), keep_alive=False)
        exchange.local = status_response(code, f"malformed request: {reason}", close=True)
        exchange.status = status
        self._no_more_requests = True
        self._queue.append(exchange)
        self._flush_local()

    def _fail(self, reason: str, status: int = 400) -> None:
        """The HTTP framing is broken: close both sides (a 502 if nothing was answered yet)."""
        log.warn(
            "session {session}: stream {stream_id}: {reason}",
            session=self.session.session_id,
            stream_id=self.stream.stream_id,
            reason=reason,
        )
        self.close_reason = reason
        self._no_more_requests = True
        if status == 502 and self._queue and self._queue[0].response_bytes == 0:
            exchange = self._queue[0]
            if exchange.local is None and self._response_body is None:
                exchange.status = 502
                exchange.keep_alive = False
                self._to_console(status_response(502, reason, close=True))
                self._queue.popleft()
                self._record(exchange)
                self._close()
                return
        self.reset_code = ErrorCode.PROTOCOL_ERROR
        if not self.stream.closed:
            self.stream.reset(ErrorCode.PROTOCOL_ERROR, reason)
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]
        else:
            self._finish()

    def _close(self) -> None:
        """End in order: FIN to the console, close the cluster connection."""
        if self._finished:
            return
        if not self.stream.closed:
            self.stream.end_write()
        transport = self.transport
        if transport is None or self._local_only:
            self.close_reason = self.close_reason or "closed"
            self._finish()
            return
        self.stream.mux.writes.flush(transport)
        transport.unregisterProducer()  # type: ignore[attr-defined]
        transport.loseConnection()

    # -- audit -----------------------------------------------------------------

    def _record_denied(
        self, exchange: _Exchange, rule: str, reason: str, denial: Denial | None = None
    ) -> None:
        head, info = exchange.head, exchange.info
        fields: dict[str, Any] = {
            "method": head.method,
            "path": head.path,
            "reason": denial.message if denial is not None else reason,
        }
        if info is not None:
            fields.update(_info_fields(info))
        fields.update(_kubectl_fields(head))
        exchange.audited = True
        log.info(
            "session {session}: {method} {path} denied ({rule})",
            session=self.session.session_id,
            method=head.method,
            path=head.path,
            rule=rule,
        )
        self.core.log_audit.record(
            "k8s_denied",
            **self.session.audit_fields(),
            rule=rule,
            stream=self.stream.stream_id,
            **fields,
        )

    def _record(self, exchange: _Exchange) -> None:
        if exchange.audited:
            return
        exchange.audited = True
        head, info = exchange.head, exchange.info
        duration = round(max(0.0, self.core.clock.seconds() - exchange.started), 6)
        if info is not None and info.discovery:
            self.core.log_audit.record(
                "k8s_discovery",
                **self.session.audit_fields(),
                stream=self.stream.stream_id,
                method=head.method,
                path=head.path,
                status=exchange.status,
                duration=duration,
            )
            return
        fields: dict[str, Any] = {"method": head.method, "path": head.path}
        query = urlsplit(head.target).query
        if query:
            fields["query"] = query
        if info is not None:
            fields.update(_info_fields(info))
        request_bytes, response_bytes = exchange.request_bytes, exchange.response_bytes
        if exchange is self._upgraded:
            fields["upgraded"] = True
            request_bytes += self._upgrade_bytes[0]
            response_bytes += self._upgrade_bytes[1]
        fields.update(
            status=exchange.status,
            bytes_in=request_bytes,
            bytes_out=response_bytes,
            duration=duration,
        )
        fields.update(_kubectl_fields(head))
        self.core.log_audit.record(
            "k8s_request", **self.session.audit_fields(), stream=self.stream.stream_id, **fields
        )


def _response_body(head: ResponseHead, kind: str) -> _Body:
    if kind == "length":
        return _Body("length", head.content_length or 0, 502)
    return _Body(kind, 0, 502)


def _query_true(query: dict[str, list[str]], key: str) -> bool:
    values = query.get(key) or [""]
    return values[0].lower() not in ("", "0", "false")


def _info_fields(info: RequestInfo) -> dict[str, Any]:
    return {
        "verb": info.verb,
        "api_group": info.api_group,
        "api_version": info.api_version,
        "resource": info.resource,
        "subresource": info.subresource,
        "namespace": info.namespace,
        "name": info.name,
    }


def _kubectl_fields(head: RequestHead) -> dict[str, Any]:
    return {
        "kubectl_command": head.get("Kubectl-Command"),
        "kubectl_session": head.get("Kubectl-Session"),
    }
