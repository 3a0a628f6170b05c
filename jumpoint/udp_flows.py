"""The UDP flows of a session on the Jumpoint: one datagram flow, one connected UDP socket.

A console asks for a flow with C{flow_open} (L{jumpoint.handlers.flow_requests}
decides and audits it); an admitted flow is a L{UdpFlow}: the channel's
datagram flow (L{shared.protocol.datagrams}) on one side, a UDP socket
connected to the checked target address on the other, every datagram
relayed as it is (its boundaries kept).  The flow ends at the first of: the
console's C{close_flow}, C{udp_idle_timeout} seconds without a datagram
either way (the console is told with C{flow_closed}), or the session's end;
it is audited once (C{udp_flow_closed}, with datagrams, bytes and drops both
ways and its duration).

L{UdpRelay} is the thin Twisted side (a C{DatagramProtocol}); L{reactor_udp}
opens the sockets of a real reactor, and tests give the core their own
L{OpenUdp}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from jumpoint.audit import AuditLog
from jumpoint.recording import FlowRecording
from jumpoint.session import Session
from shared.lifecycle import Lifecycle
from shared.protocol.datagrams import FLOW_TRANSITIONS, Datagrams, FlowEvent, FlowState

log = Logger()

MAX_UDP_PAYLOAD = 65507
"""The largest UDP payload over IPv4 (65535 - 20 - 8): longer datagrams are dropped."""


class UdpSocket(Protocol):
    """A UDP socket connected to one target address."""

    def write(self, payload: bytes) -> None:
        """Send one datagram to the target (raises L{OSError} when the kernel refuses it)."""

    def close(self) -> None:
        """Stop reading and close the socket."""


OpenUdp = Callable[[str, int, "UdpRelay"], UdpSocket]
"""Opens a UDP socket connected to C{address:port} whose datagrams go to the relay."""


class _ReactorSocket:
    """A connected socket of C{reactor.listenUDP} (the port's transport)."""

    def __init__(self, port: Any) -> None:
        self.port = port

    def write(self, payload: bytes) -> None:
        self.port.write(payload)

    def close(self) -> None:
        self.port.stopListening()


def reactor_udp(reactor: Any) -> OpenUdp:
    """The L{OpenUdp} of a real reactor: an ephemeral port, connected to the target."""

    def open_udp(address: str, port: int, relay: UdpRelay) -> UdpSocket:
        interface = "::" if ":" in address else "0.0.0.0"
        listening = reactor.listenUDP(0, relay, interface=interface, maxPacketSize=65535)
        try:
            listening.connect(address, port)
        except Exception:
            listening.stopListening()
            raise
        return _ReactorSocket(listening)

    return open_udp


class UdpRelay(DatagramProtocol):
    """The socket's side of one flow: what the target sends goes to the flow."""

    noisy = False  # one port per flow: no "starting on" line each

    def __init__(self) -> None:
        self.flow: UdpFlow | None = None

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self.flow is not None:
            self.flow.from_target(datagram)

    def connectionRefused(self) -> None:
        if self.flow is not None:
            self.flow.target_refused()


FlowClosed = Callable[["UdpFlow", str], None]
"""Tells the console that the Jumpoint closed a flow, and why (C{flow_closed})."""


class UdpFlow:
    """One admitted UDP flow of a session (module docstring)."""

    def __init__(
        self,
        *,
        session: Session,
        datagrams: Datagrams,
        flow_id: int,
        target: str,
        address: str,
        clock: IReactorTime,
        audit: AuditLog,
        idle_timeout: float,
        tell_console: FlowClosed,
    ) -> None:
        self.session = session
        self.datagrams = datagrams
        self.flow_id = flow_id
        self.target = target
        """C{host:port} as the item names it."""
        self.address = address
        """The checked address the socket is connected to."""
        self.clock = clock
        self.audit = audit
        self.idle_timeout = idle_timeout
        self.tell_console = tell_console
        self.socket: UdpSocket | None = None
        self.recording: FlowRecording | None = None
        """The flow's datagrams in the session's pcap (a recorded session)."""
        self.opened_at = clock.seconds()
        self.last_activity = self.opened_at
        self.datagrams_to_target = 0
        self.datagrams_from_target = 0
        self.bytes_to_target = 0
        self.bytes_from_target = 0
        self.drops_to_target = 0
        """Datagrams from the console the target's socket did not take (too large, refused)."""
        self.refusals = 0
        """ICMP port unreachable answers from the target."""
        self._lifecycle: Lifecycle[FlowState, FlowEvent] = FLOW_TRANSITIONS.start(FlowState.OPEN)
        self._idle: IDelayedCall | None = None
        self._dropped_at_close = 0

    @property
    def closed(self) -> bool:
        return self._lifecycle.state is FlowState.CLOSED

    def start(self, socket: UdpSocket) -> None:
        """The socket is open and the datagram flow registered: count it, arm the idle timer."""
        self.socket = socket
        self.session.flow_started(self)
        self._idle = self.clock.callLater(self.idle_timeout, self._idle_check)

    # -- datagrams ---------------------------------------------------------

    def datagram_received(self, payload: bytes) -> None:
        """From the console (the channel's flow): to the target."""
        if self.closed or self.socket is None:
            return
        if len(payload) > MAX_UDP_PAYLOAD:
            self.drops_to_target += 1
            return
        try:
            self.socket.write(payload)
        except OSError as error:  # a full socket buffer, an ICMP error pending: a lost datagram
            self.drops_to_target += 1
            log.debug(
                "flow {flow}: datagram to {target} lost: {error}",
                flow=self.flow_id,
                target=self.target,
                error=error,
            )
            return
        self.datagrams_to_target += 1
        self.bytes_to_target += len(payload)
        self.last_activity = self.clock.seconds()
        if self.recording is not None:
            self.recording.to_server(payload)

    def from_target(self, payload: bytes) -> None:
        """From the target's socket: to the console (dropped and counted if the queue is full)."""
        if self.closed:
            return
        self.last_activity = self.clock.seconds()
        if self.datagrams.send(self.flow_id, payload):
            self.datagrams_from_target += 1
            self.bytes_from_target += len(payload)
            if self.recording is not None:
                self.recording.from_server(payload)

    def target_refused(self) -> None:
        """The target answered port unreachable: counted; the flow stays (a server may start)."""
        self.refusals += 1

    @property
    def drops_from_target(self) -> int:
        """Datagrams from the target the channel dropped (its queue full)."""
        flow = self.datagrams.flow(self.flow_id)
        return flow.dropped if flow is not None else self._dropped_at_close

    # -- the end -----------------------------------------------------------

    def _idle_check(self) -> None:
        self._idle = None
        if self.closed:
            return
        idle_for = self.clock.seconds() - self.last_activity
        if idle_for >= self.idle_timeout:
            self.close(f"no datagram for {self.idle_timeout:g}s (udp_idle_timeout)")
            return
        self._idle = self.clock.callLater(self.idle_timeout - idle_for, self._idle_check)

    def close(self, reason: str, *, tell_console: bool = True) -> None:
        """End the flow: the socket, the datagram flow, the session's count; audited once."""
        if self.closed:
            return
        self._dropped_at_close = self.drops_from_target
        self._lifecycle.fire(FlowEvent.CLOSE)
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        if self.socket is not None:
            self.socket.close()
        self.datagrams.close_flow(self.flow_id)
        self.session.flow_finished(self)
        duration = max(0.0, self.clock.seconds() - self.opened_at)
        log.info(
            "session {session}: UDP flow {flow} to {target} closed ({reason}); {sent} datagrams"
            " to target, {received} from target",
            session=self.session.session_id,
            flow=self.flow_id,
            target=self.target,
            reason=reason,
            sent=self.datagrams_to_target,
            received=self.datagrams_from_target,
        )
        self.audit.record(
            "udp_flow_closed",
            **self.session.audit_fields(),
            flow=self.flow_id,
            target=self.target,
            address=self.address,
            reason=reason,
            datagrams_to_target=self.datagrams_to_target,
            datagrams_from_target=self.datagrams_from_target,
            bytes_to_target=self.bytes_to_target,
            bytes_from_target=self.bytes_from_target,
            drops_to_target=self.drops_to_target,
            drops_from_target=self._dropped_at_close,
            duration=round(duration, 3),
        )
        if tell_console:
            self.tell_console(self, reason)
