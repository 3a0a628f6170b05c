"""The console's UDP sockets of a session, thin over the sans-IO L{UdpFlowTable}.

L{UdpListener} is the C{DatagramProtocol} of one UDP tunnel's socket: a
datagram from a local client (loopback, or inside the session's acl) goes to
the table, and the table's replies go back to the client's address.
L{ChannelFlowLink} is the table's way to the Jumpoint: the channel's
datagram flows (L{shared.protocol.datagrams}) and the C{flow_open} and
C{close_flow} requests; the Jumpoint's C{flow_closed} comes back through
L{console.channel.ConsoleChannel.on_flow_closed}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from console.channel import ConsoleChannel
from console.udp_flow_table import ClientFlow, UdpFlowTable, UdpTunnel
from shared.errors import AccessDenied, JumpError
from shared.kinds.base import UDP
from shared.protocol import control
from shared.protocol.datagrams import FlowRefused

log = Logger()


class UdpListener(DatagramProtocol):
    """One UDP tunnel's socket: datagrams in from local clients, replies out to them."""

    noisy = False

    def __init__(
        self, table: UdpFlowTable, tunnel: UdpTunnel, peer_allowed: Callable[[str], bool]
    ) -> None:
        self.table = table
        self.tunnel = tunnel
        self.peer_allowed = peer_allowed

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        host, port = str(addr[0]), int(addr[1])
        if not self.peer_allowed(host):
            self.tunnel.counters.drops += 1
            return
        self.table.from_client(self.tunnel, (host, port), datagram)

    def reply(self, client: tuple[str, int], payload: bytes) -> None:
        if self.transport is None:
            return
        try:
            self.transport.write(payload, client)
        except OSError:  # the client's socket is gone: the datagram is lost, as UDP may
            self.tunnel.counters.drops += 1


class _FlowReceiver:
    """The channel's flow → the table."""

    def __init__(self, table: UdpFlowTable, flow_id: int) -> None:
        self.table = table
        self.flow_id = flow_id

    def datagram_received(self, payload: bytes) -> None:
        self.table.from_remote(self.flow_id, payload)


class ChannelFlowLink:
    """The table's L{console.udp_flow_table.FlowLink} over a console channel."""

    def __init__(self, channel: ConsoleChannel) -> None:
        self.channel = channel
        self.table: UdpFlowTable | None = None
        self.listeners: dict[int, UdpListener] = {}
        """The sockets by tunnel index."""

    def _datagrams(self) -> Any:
        mux = self.channel.mux
        if mux is None or mux.closing:
            raise FlowRefused("the channel is closing")
        return mux.datagrams

    def next_flow_id(self) -> int:
        flow_id: int = self._datagrams().next_flow_id()
        return flow_id

    def open(self, flow: ClientFlow) -> None:
        table = self.table
        assert table is not None
        flow_id = flow.flow_id
        try:
            self._datagrams().open_flow(flow_id, _FlowReceiver(table, flow_id))
        except FlowRefused as refusal:
            self.channel.clock.callLater(0, table.refused, flow_id, str(refusal))
            return
        pending = self.channel.request(
            control.FLOW_OPEN,
            flow=flow_id,
            remote_port=flow.tunnel.remote_port,
            protocol=UDP,
            client=flow.client_text,
        )

        def admitted(result: dict[str, Any]) -> None:
            table.admitted(flow_id)

        def refused(failure: Failure) -> None:
            error = failure.value
            if isinstance(error, AccessDenied) and error.rule:
                reason = f"{error.message} (rule: {error.rule})"
            elif isinstance(error, JumpError):
                reason = error.message
            else:
                reason = failure.getErrorMessage()
            table.refused(flow_id, reason)

        pending.addCallbacks(admitted, refused)

    def send(self, flow_id: int, payload: bytes) -> bool:
        mux = self.channel.mux
        if mux is None:
            return False
        sent: bool = mux.datagrams.send(flow_id, payload)
        return sent

    def close(self, flow: ClientFlow, reason: str, *, tell_jumpoint: bool) -> None:
        mux = self.channel.mux
        if mux is None:
            return
        mux.datagrams.close_flow(flow.flow_id)
        if tell_jumpoint and not mux.closing:
            request = self.channel.request(control.CLOSE_FLOW, flow=flow.flow_id, reason=reason)
            request.addErrback(lambda failure: None)  # the channel's loss says it all

    def reply(self, flow: ClientFlow, payload: bytes) -> None:
        listener = self.listeners.get(flow.tunnel.index)
        if listener is not None:
            listener.reply(flow.client, payload)
