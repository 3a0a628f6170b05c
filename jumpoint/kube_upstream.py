"""The Jumpoint's side of a Kubernetes cluster item: an HTTP/1.1 proxy per stream.

L{KubeUpstreamHandler} replaces the plain L{TcpBridge} for the streams of k8s
items and drives the shared h11 relay (L{shared.codecs.http.relay.HttpRelay}): the
console's side is the client, the cluster (over TLS: the item's PEM CAs,
host name or IP checked, ALPN C{http/1.1}) the upstream.  For every request:

  - the target is put in its canonical origin form (L{canonical_target});
    anything else (C{//api}, dot or empty segments, encoded C{/}, absolute,
    authority or asterisk form) is answered 400 and audited as C{k8s_denied}
    with rule C{k8s.path}, before any policy check;
  - the canonical target is classified (L{request_info}) and checked against
    the item's policy: a refusal is a 403 C{Status} naming the rule (audited
    as C{k8s_denied}); the body of an answered request is read and dropped,
    so the next request on the connection works;
  - otherwise C{Authorization}, C{Proxy-Authorization}, C{Impersonate-*} and
    C{X-Forwarded-For} are removed, C{Host} rewritten, the cluster's bearer
    token added (client certificates go into the TLS handshake) and, with
    C{impersonate}, C{Impersonate-User} and one C{Impersonate-Group} line per
    group; h11 writes the head (repeats kept) with the canonical target;
  - the response is relayed piece by piece as it arrives (watches and
    C{logs -f} flow at once); after C{101 Switching Protocols} raw bytes pass
    both ways, starting with what came together with the heads;
  - every exchange that reached the cluster is audited exactly once
    (C{k8s_request}, or C{k8s_discovery} for discovery paths), however it
    ends: C{ended} is C{complete}, or C{aborted} with the status and bytes so
    far when the session's end, a reset stream or a lost connection cut it.

Without a usable credential the bridge never dials: every request is
answered 503 with a C{Status} saying so.  The token never appears in logs or
audit rows.

While a watch (or C{logs -f}) is in flight or the connection is upgraded,
L{KubeUpstreamHandler.long_running} is true and the session's idle timeout
does not close it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from jumpoint.credentials import Credential, CredentialUnavailable, credential_for
from shared.bridge import PlainRelay, TcpBridge
from shared.codecs.http.heads import Answer, Forward, RequestHead, error_answer, rewrite_headers
from shared.codecs.http.relay import Exchange, HttpRelay
from shared.k8s.api_policy import Denial, KubePolicy, check, forbidden_answer
from shared.k8s.request_info import (
    K8sRequestError,
    RequestInfo,
    RequestTarget,
    canonical_target,
    request_info,
)
from shared.protocol.frames import ErrorCode, describe_code
from shared.protocol.mux import Stream

if TYPE_CHECKING:
    from collections.abc import Callable

    from twisted.internet.interfaces import IOpenSSLClientConnectionCreator

    from jumpoint.session import Session
    from jumpoint.upstream_context import UpstreamContext

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


def kube_policy(session_item: Any) -> KubePolicy:
    """The L{KubePolicy} of a k8s item."""
    return KubePolicy(
        namespaces=tuple(session_item.allowed_namespaces),
        read_only=bool(session_item.read_only_access),
        denied_resources=tuple(session_item.denied_resources),
        allow_exec=bool(session_item.allow_exec),
        allow_port_forward=bool(session_item.allow_port_forward),
    )


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


@dataclass
class _Context:
    """What the Jumpoint decided about one request (kept on its L{Exchange})."""

    target: RequestTarget | None
    info: RequestInfo | None
    denied: bool = False
    long_running: bool = False


class _Only(Factory):
    """Builds the one protocol it is given (the bridge inside the TLS wrapper)."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol_instance = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.protocol_instance


class KubeUpstreamHandler(PlainRelay):
    """The bridge of one stream of a k8s item (see the module docstring).

    It drives an L{HttpRelay} (the console's side is the client, the cluster
    the upstream) and is the relay's handler.

    @param groups: the jump user's groups (one C{Impersonate-Group} line each).
    @param tls: wrap the cluster connection in TLS (tests turn it off to
        drive the HTTP/1.1 side with a plain transport).
    """

    def __init__(
        self,
        stream: Stream,
        core: UpstreamContext,
        session: Session,
        on_closed: Callable[[TcpBridge], None] | None = None,
        *,
        groups: Sequence[str] = (),
        tls: bool = True,
    ) -> None:
        self.bridge = TcpBridge(stream, on_closed, self)
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
            self.credential = credential_for(core.credentials, self.item)
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
        self._local_only = False
        self._local_status = 503
        self._ending = False
        self.relay = HttpRelay(self)

    # -- what the server and the session ask ---------------------------------

    @property
    def long_running(self) -> bool:
        """An upgraded connection, or a watch / followed log in flight: no idle timeout."""
        relay = self.relay
        if relay.done:
            return False
        if relay.upgraded is not None:
            return True
        exchange = relay.exchange
        if exchange is None or not exchange.forwarded:
            return False
        context = exchange.context
        return isinstance(context, _Context) and context.long_running

    def upstream_protocol(self) -> Protocol:
        """The protocol to connect to the cluster: the bridge inside TLS."""
        if not self._tls:
            return self.bridge
        assert self.tls_options is not None
        factory = TLSMemoryBIOFactory(self.tls_options, True, _Only(self.bridge))
        protocol: Protocol = factory.buildProtocol(None)
        return protocol

    def refused_before_dial(self) -> bool:
        """No usable credential: answer every request 503 without dialling; True if so."""
        if self._unavailable is None:
            return False
        self._local_only = True
        self.bridge.drop_pending()
        self.bridge.stream.resume_receiving()
        log.warn(
            "session {session}: stream {stream_id}: {reason}",
            session=self.session.session_id,
            stream_id=self.bridge.stream.stream_id,
            reason=self._unavailable,
        )
        return True

    # -- the console's side ----------------------------------------------------

    def stream_data(self, bridge: TcpBridge, data: bytes) -> None:
        if not self.bridge.half_close.finished:
            self.relay.feed_client(data)

    def stream_ended(self, bridge: TcpBridge) -> None:
        if not self.bridge.half_close.finished:
            self.relay.client_eof()

    def stream_reset(self, bridge: TcpBridge, code: int, reason: str) -> None:
        if self.bridge.half_close.finished:
            return
        self.bridge.reset_code = code
        self.bridge.close_reason = f"{describe_code(code)}: {reason}"
        if code == ErrorCode.CANCEL and self.relay.upgraded is not None:
            # The console cancels the stream when the client's own connection
            # ends without a half-close (kubectl does so after an exec): that is
            # the upgraded exchange's own end, not a cut by the session.
            self.relay.end(self.bridge.close_reason)
        else:
            self.relay.abort(self.bridge.close_reason)
        self._cut(self.bridge.close_reason)

    def abort(self, bridge: TcpBridge, code: ErrorCode, reason: str) -> None:
        """The session ends: the request in flight gets its row (C{ended: aborted})."""
        if self.bridge.half_close.finished:
            return
        self.bridge.reset_code = code
        self.bridge.close_reason = f"{describe_code(code)}: {reason}"
        self.relay.abort(self.bridge.close_reason)
        self.bridge.abort_both(code, reason)

    # -- the cluster's side ------------------------------------------------------

    def socket_data(self, bridge: TcpBridge, data: bytes) -> None:
        if not self.bridge.half_close.finished:
            self.relay.feed_upstream(data)

    def socket_ended(self, bridge: TcpBridge) -> None:
        self.bridge.half_close.socket_ended()
        self.relay.upstream_eof()

    def socket_lost(self, bridge: TcpBridge, reason: Failure) -> None:
        if self.bridge.half_close.finished:
            return
        self.bridge.forget_socket()
        if self.relay.upgraded is not None:
            self.relay.end("the cluster closed the upgraded connection")  # its end, however
        elif reason.check(ConnectionDone):
            self.relay.upstream_eof()
        else:
            self.relay.upstream_lost(
                f"the connection to the cluster was lost: {reason.getErrorMessage()}"
            )
        if not self.relay.done:
            self.relay.abort("the connection to the cluster was lost")
        if not self.bridge.stream.closed and not self.bridge.stream.local_fin:
            self.bridge.stream.end_write()
        self.bridge.close_reason = self.bridge.close_reason or "closed"
        self.bridge.finish()

    def connection_failed(self, bridge: TcpBridge, code: ErrorCode, reason: str) -> None:
        """The cluster cannot be reached: the request in flight and later ones get a 502 Status."""
        if self.bridge.half_close.finished:
            return
        self._local_only = True
        self._unavailable = f"the Jumpoint cannot reach the cluster: {reason}"
        self.bridge.close_reason = f"connect failed: {reason}"
        self.bridge.reset_code = code
        self._local_status = 502
        self.bridge.drop_pending()  # the rewritten requests: answered instead
        self.bridge.stream.resume_receiving()
        self.relay.upstream_lost(self._unavailable)

    def ended(self, bridge: TcpBridge) -> None:
        if not self.relay.done:  # the last word on every exchange still open
            self._ending = True
            self.relay.abort(self.bridge.close_reason or "closed")

    # -- the relay's handler ---------------------------------------------------

    def now(self) -> float:
        return self.core.clock.seconds()

    def decide(self, exchange: Exchange) -> Forward | Answer:
        head = exchange.head
        try:
            target = canonical_target(head.target)
            info = request_info(head.method, target.path, target.params, upgrade=head.is_upgrade)
        except K8sRequestError as error:
            exchange.context = _Context(None, None, denied=True)
            self._record_denied(exchange, "k8s.path", error.reason)
            return error_answer(400, f"the request target is refused: {error.reason}")
        context = _Context(target, info)
        exchange.context = context
        context.long_running = info.verb == "watch" or (
            info.subresource == "log" and _query_true(target.params, "follow")
        )
        denial = check(self.policy, info)
        if denial is not None:
            context.denied = True
            self._record_denied(exchange, denial.rule, denial.message, denial)
            return forbidden_answer(info, denial)
        if self._local_only:
            assert self._unavailable is not None
            return error_answer(
                self._local_status,
                self._unavailable,
                reason="ServiceUnavailable" if self._local_status == 503 else "InternalError",
            )
        try:
            return Forward(self._rewrite(head, target))
        except CredentialUnavailable as error:
            return error_answer(
                503,
                f"{error.message}: the Jumpoint cannot authenticate to the cluster",
                reason="ServiceUnavailable",
            )
        except ValueError as error:
            return error_answer(400, f"the request cannot be forwarded: {error}")

    def refused(self, status: int, reason: str) -> None:
        log.warn(
            "session {session}: stream {stream_id}: malformed request ({status}): {reason}",
            session=self.session.session_id,
            stream_id=self.bridge.stream.stream_id,
            status=status,
            reason=reason,
        )

    def to_client(self, data: bytes) -> None:
        if self.bridge.tap is not None:
            self.bridge.tap.from_socket(data)
        if not self.bridge.stream.closed:
            self.bridge.stream.write(data)

    def to_upstream(self, data: bytes) -> None:
        if self._local_only or self.bridge.half_close.finished:
            return
        self.bridge.send_to_socket(data)

    def switched(self, exchange: Exchange) -> None:
        log.info(
            "session {session}: stream {stream_id}: {method} {path} upgraded",
            session=self.session.session_id,
            stream_id=self.bridge.stream.stream_id,
            method=exchange.head.method,
            path=_audit_path(exchange),
        )

    def exchange_finished(self, exchange: Exchange) -> None:
        context = exchange.context
        if not isinstance(context, _Context) or context.denied:
            return  # malformed (logged) or denied (audited when refused)
        self._record(exchange, context)

    def upstream_ended(self) -> None:
        if not self.bridge.stream.closed:
            self.bridge.stream.end_write()

    def client_ended(self) -> None:
        # TLS cannot half-close: the console's FIN on an upgraded connection ends it.
        self._close()

    def finished(self, reason: str, clean: bool) -> None:
        if self._ending or self.bridge.half_close.finished:
            return
        if clean:
            self.bridge.close_reason = self.bridge.close_reason or reason
            self._close()
        else:
            self._cut(reason)

    # -- helpers -----------------------------------------------------------------

    def _rewrite(self, head: RequestHead, target: RequestTarget) -> RequestHead:
        add: list[tuple[str, str]] = [("Host", self.authority)]
        credential = self.credential
        if credential is not None and credential.kind == "token":
            add.append(("Authorization", f"Bearer {credential.password().strip()}"))
        if self.item.impersonate:
            add.append(("Impersonate-User", self.session.user))
            add.extend(("Impersonate-Group", group) for group in self.groups)
        rewritten = rewrite_headers(head, remove=REMOVED_HEADERS, add=add)
        return replace(rewritten, target=self.prefix + target.text)

    def _close(self) -> None:
        """End in order: FIN to the console, close the cluster connection."""
        if self.bridge.half_close.finished:
            return
        if not self.bridge.stream.closed:
            self.bridge.stream.end_write()
        transport = self.bridge.transport
        if transport is None or self._local_only:
            self.bridge.close_reason = self.bridge.close_reason or "closed"
            self.bridge.finish()
            return
        self.bridge.stream.flush_socket(transport)
        transport.unregisterProducer()  # type: ignore[attr-defined]
        transport.loseConnection()

    def _cut(self, reason: str) -> None:
        """End at once: reset the stream, abort the cluster connection."""
        if self.bridge.half_close.finished:
            return
        log.warn(
            "session {session}: stream {stream_id}: {reason}",
            session=self.session.session_id,
            stream_id=self.bridge.stream.stream_id,
            reason=reason,
        )
        self.bridge.close_reason = self.bridge.close_reason or reason
        if self.bridge.reset_code is None:
            self.bridge.reset_code = ErrorCode.PROTOCOL_ERROR
        if not self.bridge.stream.closed:
            self.bridge.stream.reset(self.bridge.reset_code, reason)
        transport = self.bridge.transport
        if transport is not None and not self._local_only:
            self.bridge.stream.flush_socket(transport)
            transport.abortConnection()  # type: ignore[attr-defined]
        else:
            self.bridge.finish()

    # -- audit -----------------------------------------------------------------

    def _record_denied(
        self, exchange: Exchange, rule: str, reason: str, denial: Denial | None = None
    ) -> None:
        head = exchange.head
        context = exchange.context
        info = context.info if isinstance(context, _Context) else None
        path = _audit_path(exchange)
        fields: dict[str, Any] = {
            "method": head.method,
            "path": path,
            "reason": denial.message if denial is not None else reason,
        }
        if info is not None:
            fields.update(_info_fields(info))
        fields.update(_kubectl_fields(head))
        log.info(
            "session {session}: {method} {path} denied ({rule})",
            session=self.session.session_id,
            method=head.method,
            path=path,
            rule=rule,
        )
        self.core.log_audit.record(
            "k8s_denied",
            **self.session.audit_fields(),
            rule=rule,
            stream=self.bridge.stream.stream_id,
            **fields,
        )

    def _record(self, exchange: Exchange, context: _Context) -> None:
        head, info, target = exchange.head, context.info, context.target
        duration = round(max(0.0, self.core.clock.seconds() - exchange.started), 6)
        path = _audit_path(exchange)
        if info is not None and info.discovery and exchange.ended == "complete":
            self.core.log_audit.record(
                "k8s_discovery",
                **self.session.audit_fields(),
                stream=self.bridge.stream.stream_id,
                method=head.method,
                path=path,
                status=exchange.status,
                duration=duration,
            )
            return
        fields: dict[str, Any] = {"method": head.method, "path": path}
        if target is not None and target.query:
            fields["query"] = target.query
        if info is not None:
            fields.update(_info_fields(info))
        if exchange.upgraded:
            fields["upgraded"] = True
        fields.update(
            status=exchange.status,
            bytes_in=exchange.request_bytes,
            bytes_out=exchange.response_bytes,
            duration=duration,
            ended=exchange.ended,
        )
        fields.update(_kubectl_fields(head))
        self.core.log_audit.record(
            "k8s_request",
            **self.session.audit_fields(),
            stream=self.bridge.stream.stream_id,
            **fields,
        )


def _audit_path(exchange: Exchange) -> str:
    """The canonical path of a request; the target as sent (cut short) if it was refused."""
    context = exchange.context
    if isinstance(context, _Context) and context.target is not None:
        return context.target.path
    return exchange.head.target.partition("?")[0][:200]


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
