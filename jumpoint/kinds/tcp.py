"""The C{tcp} kind on the Jumpoint: a plain byte bridge to the item's host and remote ports."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twisted.internet.protocol import Protocol

from jumpoint.kinds.base import Dial, JumpointKind
from jumpoint.session import Session
from jumpoint.upstream_context import UpstreamContext
from shared.bridge import TcpBridge
from shared.kinds.tcp import KIND as SHARED
from shared.protocol.mux import Stream


@dataclass(frozen=True)
class TcpUpstream:
    """A tcp connection: dialled at once, the bridge is the target's protocol."""

    bridge: TcpBridge

    def start(self, dial: Dial) -> None:
        dial()

    def protocol(self) -> Protocol:
        return self.bridge


def open_upstream(
    stream: Stream,
    core: UpstreamContext,
    session: Session,
    *,
    on_closed: Callable[[TcpBridge], None],
    groups: Sequence[str],
) -> TcpUpstream:
    return TcpUpstream(TcpBridge(stream, on_closed=on_closed))


KIND = JumpointKind(shared=SHARED, open_upstream=open_upstream, has_tunnels=True)
