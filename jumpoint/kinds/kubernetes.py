"""The C{k8s} kind on the Jumpoint: the Kubernetes API proxy (L{jumpoint.kube_upstream}).

The Jumpoint authenticates to the cluster with the item's credential, inside
TLS, and checks and audits every request.  It needs a Linux Jumpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twisted.internet.protocol import Protocol

from jumpoint.kinds.base import Dial, JumpointKind
from jumpoint.kube_upstream import KubeUpstreamHandler
from jumpoint.session import Session
from jumpoint.upstream_context import UpstreamContext
from shared.bridge import TcpBridge
from shared.kinds.kubernetes import KIND as SHARED
from shared.protocol.mux import Stream


@dataclass(frozen=True)
class KubeUpstream:
    """A k8s connection: answered locally without a credential, else dialled at once."""

    handler: KubeUpstreamHandler

    @property
    def bridge(self) -> TcpBridge:
        return self.handler.bridge

    def start(self, dial: Dial) -> None:
        if self.handler.refused_before_dial():
            return  # k8s without a credential: every request is answered 503
        dial()

    def protocol(self) -> Protocol:
        return self.handler.upstream_protocol()


def open_upstream(
    stream: Stream,
    core: UpstreamContext,
    session: Session,
    *,
    on_closed: Callable[[TcpBridge], None],
    groups: Sequence[str],
) -> KubeUpstream:
    return KubeUpstream(
        KubeUpstreamHandler(stream, core, session, on_closed=on_closed, groups=groups)
    )


KIND = JumpointKind(
    shared=SHARED,
    open_upstream=open_upstream,
    platforms=("linux",),
    platform_refusal="Kubernetes items need a Linux Jumpoint",
    audit_events=("k8s_denied", "k8s_discovery", "k8s_request"),
)
