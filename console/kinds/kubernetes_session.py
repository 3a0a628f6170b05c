"""A session of the C{k8s} kind: an HTTPS listener, a kubeconfig per session, KUBECONFIG.

The listener is TLS (L{KubeListenerFactory}) with the session's own
certificate; until `jump open` has written the session's kubeconfig
(L{SessionKubeconfig}, after binding: it names the bound port), connections are
refused.  A connection's stream opens once its first request is complete and
carries the session's token (L{KubeClientConnection}).  `jump open` prints
C{export KUBECONFIG=...} (JSON: the C{kubeconfig} field), sets it for a
command, and removes the kubeconfig when the session ends.  The kind's light
part is L{console.kinds.kubernetes}.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger

from console.kinds.session_part import (
    Accept,
    Acceptor,
    SessionContext,
    SessionKind,
    SessionPart,
    refuse,
)
from console.kube_proxy import KubeClientConnection, KubeListenerFactory, listener_hosts
from console.kubeconfig import SessionKubeconfig, cache_root, sweep
from console.tunnel_counters import Tunnel
from shared.errors import JumpError
from shared.kinds.kubernetes import NAME

log = Logger()


class KubernetesSession(SessionPart):
    """The session's kubeconfig and listener certificate (L{kube}), once `jump open` made them."""

    def __init__(self, namespace: str | None) -> None:
        self.namespace = namespace
        self.kube: SessionKubeconfig | None = None
        self._removed = False

    def set_kube(self, kube: SessionKubeconfig) -> None:
        """The session's certificate and token; connections are refused until then."""
        self.kube = kube

    def listener(self, factory: ServerFactory) -> ServerFactory:
        return KubeListenerFactory(factory, lambda: self.kube)

    def acceptor(self, tunnel: Tunnel) -> Acceptor:
        return self._accept

    def _accept(self, accept: Accept) -> Protocol:
        tunnel, kube = accept.tunnel, self.kube
        if kube is None:
            tunnel.refused_connections += 1
            log.warn(
                "refused a connection to {local}: the Kubernetes session is not ready",
                local=accept.local,
            )
            return refuse()
        # The stream waits for a complete, authenticated head.
        connection = KubeClientConnection(
            accept.open_stream,
            kube,
            listener_hosts(tunnel.local_address, tunnel.local_port),
            on_opened=tunnel.login_completed,
            on_ended=lambda c, timed_out: tunnel.login_ended(c, timed_out=timed_out),
            on_closed=tunnel.connection_closed,
            clock=accept.clock,
            login_timeout=accept.login_timeout,
            local=accept.local,
        )
        tunnel.logins.add(connection)
        tunnel.total_connections += 1
        return connection

    def opened(
        self, item: str, session_id: str, tunnels: list[Tunnel], notify: Callable[[list[str]], None]
    ) -> None:
        """Sweep what dead consoles left, write this session's kubeconfig, arm the listener."""
        try:
            root = cache_root()
            notify(sweep(root))
            first = tunnels[0]
            kube = SessionKubeconfig.create(
                root, session_id, item, first.local_address, first.local_port, self.namespace
            )
        except (OSError, ValueError) as error:
            raise JumpError(f"could not write the session's kubeconfig: {error}") from None
        self.set_kube(kube)

    def _path(self) -> Path:
        assert self.kube is not None
        return self.kube.kubeconfig_path

    def details(self) -> dict[str, Any]:
        return {} if self.kube is None else {"kubeconfig": str(self._path())}

    def shell_lines(self) -> list[str]:
        if self.kube is None:
            return []
        return [f"export KUBECONFIG={shlex.quote(str(self._path()))}"]

    def environment(self) -> dict[str, str]:
        return {} if self.kube is None else self.kube.environment()

    def remove(self) -> list[str] | None:
        if self.kube is None:
            return None
        if self._removed:
            return []
        self._removed = True
        return self.kube.remove()


class KubernetesSessionKind(SessionKind):
    def open_session(self, context: SessionContext) -> SessionPart:
        spec = context.spec
        namespace = str(spec["namespace"]) if spec.get("namespace") else None
        service = "Kubernetes" + (f", namespace {namespace}" if namespace else "")
        for tunnel in context.tunnels:
            url = spec.get("url")
            tunnel.remote_url = (
                str(url) if url else f"https://{tunnel.remote_host}:{tunnel.remote_port}"
            )
            tunnel.service = service
        return KubernetesSession(namespace)


KIND = KubernetesSessionKind(NAME)
