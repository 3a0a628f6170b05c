"""`jump open` of a network item, the console's part, through a real channel without root.

The Jumpoint is the in-memory one of L{tests.unit.test_network_sessions}
(its TUN in L{twisted.pair.testing.MemoryIOSystem}); the console's "TUN
descriptor" is one end of a C{socketpair(AF_UNIX, SOCK_DGRAM)} (a datagram
per packet, like a TUN), handed out by an injected C{acquire}; the blocking
call runs at once instead of in a thread, and the reader sits on a
L{MemoryReactor} whose turns the test plays by calling C{doRead}.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure

from console.kinds import network_session as network_session_module
from console.kinds import sessions
from console.kinds.network_session import NetworkSession, NetworkSessionKind, NetworkSetupFailed
from console.network_client import AcquiredTun, NetworkServiceUnavailable
from console.network_terms import parse_network_terms
from console.network_tun import Removed
from console.open_command import command_environment
from console.tun_link import TunCounters, TunLink
from console.tunnels import TunnelSession
from shared.errors import JumpError, ProtocolViolation, SessionLost
from tests.unit.ipv4_builder import echo, udp
from tests.unit.test_network_sessions import Lab
from tests.unit.test_session_rules import Keys, keys

__all__ = ["keys"]  # the module's key fixture

GOOD = {
    "address": "198.19.0.2",
    "gateway": "198.19.0.1",
    "routes": ["198.18.2.0/24"],
    "mtu": 1400,
    "flow": 2,
}


class FakeTuns:
    """The injected C{acquire}: a socketpair per interface; the far end plays the kernel."""

    def __init__(self) -> None:
        self.kernel_ends: list[socket.socket] = []
        self.asked: list[tuple[IPv4Address, tuple[IPv4Network, ...], int]] = []
        self.released = 0

    def __call__(
        self, address: IPv4Address, routes: Sequence[IPv4Network], mtu: int
    ) -> AcquiredTun:
        self.asked.append((address, tuple(routes), mtu))
        ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        kernel.setblocking(False)
        self.kernel_ends.append(kernel)
        fd = ours.detach()

        def release() -> Removed:
            self.released += 1
            os.close(fd)
            return Removed("jpt7", f"{address}/32", tuple(str(r) for r in routes))

        return AcquiredTun(fd, "jpt7", address, tuple(routes), mtu, "direct", release)

    @property
    def kernel(self) -> socket.socket:
        (end,) = self.kernel_ends
        return end


def at_once(function: Any, *args: Any) -> Deferred[Any]:
    """The blocking call run on the spot (a thread's result, synchronously)."""
    return maybeDeferred(function, *args)


@pytest.fixture
def tuns() -> Iterator[FakeTuns]:
    """The network kind's session part with the fake interfaces, for the test's length."""
    fake = FakeTuns()
    kind = NetworkSessionKind(acquire=fake, run_blocking=at_once, reactor=MemoryReactor())
    sessions.unregister(kind.name)
    sessions.register(kind)
    try:
        yield fake
    finally:
        sessions.unregister(kind.name)
        sessions.register(network_session_module.KIND)
        for end in fake.kernel_ends:
            end.close()


class Opened:
    """A network session opened on the lab's Jumpoint, the console's part set up."""

    def __init__(self, tmp_path: Path, keys: Keys) -> None:
        self.lab = Lab(tmp_path, keys)
        self.alice = self.lab.world.connect("alice")
        self.result = self.alice.open("lab-net")
        self.session = TunnelSession(self.alice.channel, "lab-net", self.result)
        part = self.session.part
        assert isinstance(part, NetworkSession)
        self.part = part
        self.lines: list[str] = []
        self.ended: list[JumpError] = []

    def start(self) -> None:
        pending = self.part.opened("lab-net", self.session.session_id, [], self.lines.extend)
        assert pending is not None
        failures: list[Failure] = []
        pending.addErrback(failures.append)
        assert failures == []
        self.part.watch(self.ended.append)

    @property
    def link(self) -> TunLink:
        assert self.part.link is not None
        return self.part.link


def test_packets_go_both_ways_and_the_interface_is_shown_and_removed_once(
    tmp_path: Path, keys: Keys, tuns: FakeTuns
) -> None:
    opened = Opened(tmp_path, keys)
    assert opened.session.tunnels == []  # a network session binds no listener
    opened.start()
    assert tuns.asked == [(IPv4Address("198.19.0.2"), (IPv4Network("198.18.2.0/24"),), 1400)]
    assert opened.lines == [
        "network interface jpt7: address 198.19.0.2/32, MTU 1400"
        " (made here: this process holds CAP_NET_ADMIN)",
        "routes into jpt7: 198.18.2.0/24",
    ]
    assert opened.part.details() == {
        "interface": "jpt7",
        "address": "198.19.0.2",
        "gateway": "198.19.0.1",
        "routes": ["198.18.2.0/24"],
        "mtu": 1400,
        "method": "direct",
    }
    env = command_environment(opened.session)
    assert (env["JUMP_NETWORK_INTERFACE"], env["JUMP_NETWORK_ADDRESS"]) == ("jpt7", "198.19.0.2")
    assert env["JUMP_NETWORK_ROUTES"] == "198.18.2.0/24" and "JUMP_LOCAL_PORT" not in env
    link = opened.link
    assert not os.get_blocking(link.fileno())
    reactor = link.reactor
    assert isinstance(reactor, MemoryReactor) and link in reactor.readers

    query = udp("198.19.0.2", "198.18.2.53", 40000, 53, b"dns?")
    ping = echo("198.19.0.2", "198.18.2.10", ident=7, seq=1)
    tuns.kernel.send(query)
    tuns.kernel.send(ping)
    assert link.doRead() is None
    opened.lab.world.flush()
    assert opened.lab.written() == [query, ping]  # one DATAGRAM each, through the filter
    answer = udp("198.18.2.53", "198.19.0.2", 53, 40000, b"dns!")
    opened.lab.from_remote(answer)
    assert tuns.kernel.recv(65535) == answer
    packets = TunCounters(
        packets_out=2, bytes_out=len(query) + len(ping), packets_in=1, bytes_in=len(answer)
    )
    assert opened.part.tun_counters() == packets
    # the live view's tick: the interface's counts now, the Jumpoint's figures once it answers
    assert opened.part.counters() == packets.as_dict()
    assert opened.part.figures.pending
    opened.lab.world.flush()
    jumpoint = {
        "flows": 2,
        "total_flows": 2,
        "denied_out": 0,
        "denied_in": 0,
        "jumpoint_dropped_out": 0,
        "jumpoint_dropped_in": 0,
    }
    assert opened.part.counters() == {**packets.as_dict(), **jumpoint}
    assert opened.part.counters_label() == "jpt7 -> 198.18.2.0/24"

    removed = opened.part.remove()
    assert removed == ["interface jpt7 (198.19.0.2/32; routes 198.18.2.0/24) removed"]
    opened.lab.world.clock.advance(60)
    assert opened.part.counters() == {**packets.as_dict(), **jumpoint}  # the last figures
    assert not opened.part.figures.pending  # and no request once the session is ending
    assert link not in reactor.readers and tuns.released == 1
    assert opened.part.flow is not None and opened.part.flow.closed
    assert opened.part.remove() == [] and tuns.released == 1  # once
    assert opened.ended == []  # a removal is not a loss


def test_a_packet_the_interface_cannot_take_is_dropped_and_counted(
    tmp_path: Path, keys: Keys, tuns: FakeTuns
) -> None:
    opened = Opened(tmp_path, keys)
    opened.start()
    packet = udp("198.18.2.53", "198.19.0.2", 53, 40000, b"x" * 1000)
    # nobody reads the "kernel" end: its queue fills, then each write is EAGAIN, never a wait
    for _ in range(2000):
        opened.part.datagram_received(packet)
    counters = opened.link.counters()
    assert counters.dropped_in > 0
    assert counters.packets_in + counters.dropped_in == 2000
    assert counters.bytes_in == counters.packets_in * len(packet)
    opened.part.remove()
    opened.part.datagram_received(packet)  # after the end: nothing written, nothing raised


def test_the_jumpoint_closing_the_flow_ends_the_session_and_other_flows_pass_on(
    tmp_path: Path, keys: Keys, tuns: FakeTuns
) -> None:
    opened = Opened(tmp_path, keys)
    channel = opened.alice.channel
    others: list[tuple[int, str]] = []
    channel.on_flow_closed = lambda flow, reason: others.append((flow, reason))
    opened.start()
    assert channel.on_flow_closed is not None
    channel.on_flow_closed(99, "idle")  # not the session's flow: passed on
    assert others == [(99, "idle")] and opened.ended == []
    channel.on_flow_closed(opened.result["network"]["flow"], "gone")
    (error,) = opened.ended
    assert isinstance(error, SessionLost)
    assert error.message == "the Jumpoint closed the session's packet flow: gone"
    opened.part.remove()
    assert channel.on_flow_closed is not None and channel.on_flow_closed(1, "x") is None
    assert others[-1] == (1, "x")  # the earlier handler is back


def test_a_flow_the_console_cannot_open_is_a_protocol_violation_and_the_interface_goes(
    tmp_path: Path, keys: Keys, tuns: FakeTuns
) -> None:
    """The reply's flow id is one the console's datagram table refuses (already in use)."""
    opened = Opened(tmp_path, keys)
    mux = opened.alice.channel.mux
    assert mux is not None
    mux.datagrams.open_flow(opened.result["network"]["flow"], opened.part)  # taken before
    pending = opened.part.opened("lab-net", opened.session.session_id, [], opened.lines.extend)
    assert pending is not None
    failures: list[Failure] = []
    pending.addErrback(failures.append)
    (failure,) = failures
    assert failure.check(ProtocolViolation)
    assert "the session's packet flow cannot be opened" in failure.getErrorMessage()
    assert opened.part.link is None and opened.lines == []  # no packets, nothing announced
    assert opened.part.counters() is None
    removed = opened.part.remove()  # what `jump open` does with an opening that failed
    assert removed == ["interface jpt7 (198.19.0.2/32; routes 198.18.2.0/24) removed"]
    assert tuns.released == 1


def test_a_descriptor_at_its_end_reports_once_and_leaves_the_reactor() -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    lost: list[str] = []
    reactor = MemoryReactor()
    link = TunLink(read_end, 1400, lambda packet: False, lost.append, reactor)
    link.start()
    os.write(write_end, b"\x45" + b"\0" * 19)
    assert link.doRead() is None
    assert link.counters() == TunCounters(packets_out=1, bytes_out=20, dropped_out=1)
    os.close(write_end)
    ended = link.doRead()
    assert isinstance(ended, Failure)
    link.connectionLost(ended)  # what the reactor does with it
    link.connectionLost(ended)
    assert lost == ["the interface's descriptor reached its end"]
    assert link not in reactor.readers
    os.close(read_end)


def test_a_failed_acquire_ends_the_opening_with_its_own_error(
    tmp_path: Path, keys: Keys, tuns: FakeTuns
) -> None:
    opened = Opened(tmp_path, keys)
    unavailable = NetworkServiceUnavailable("no network service listens on /run/x")
    for raised, expected in (
        (unavailable, unavailable),
        (PermissionError(13, "Permission denied"), None),
    ):
        opened.part._run_blocking = lambda *args, error=raised: fail(error)
        pending = opened.part.opened("lab-net", "s", [], opened.lines.append)
        failures: list[Failure] = []
        pending.addErrback(failures.append)
        (failure,) = failures
        if expected is not None:
            assert failure.value is expected
        else:
            assert isinstance(failure.value, NetworkSetupFailed)
            assert failure.value.message == (
                "could not create the network interface: Permission denied"
            )
    assert opened.lines == [] and opened.part.remove() is None  # nothing to remove


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"address": "198.19.0"}, "address: '198.19.0' is not an IPv4 address"),
        ({"address": 7}, "address: an IPv4 address"),
        ({"gateway": "::1"}, "gateway: '::1' is not an IPv4 address"),
        ({"gateway": "198.19.0.2"}, "the gateway is the console's address"),
        ({"routes": []}, "routes: a non-empty list"),
        ({"routes": ["198.18.2.1/24"]}, "has host bits set"),
        ({"routes": ["0.0.0.0/0"]}, "the default route"),
        ({"routes": "198.18.2.0/24"}, "routes: a non-empty list"),
        ({"mtu": 575}, "mtu: 575 is out of range"),
        ({"mtu": 65536}, "mtu: 65536 is out of range"),
        ({"mtu": True}, "mtu: an integer is needed"),
        ({"flow": 0}, "flow: an integer from 1"),
        ({"flow": "2"}, "flow: an integer from 1"),
        ({"flow": 2**31}, "flow: an integer from 1"),
    ],
)
def test_a_malformed_network_member_is_a_protocol_violation(
    change: dict[str, Any], problem: str
) -> None:
    reply = {
        "session": "s1",
        "item": {"name": "lab-net", "type": "network"},
        "tunnels": [],
        "network": {**GOOD, **change},
    }
    with pytest.raises(ProtocolViolation, match="malformed network member") as raised:
        TunnelSession(None, "lab-net", reply)  # type: ignore[arg-type]
    assert problem in raised.value.message


def test_a_network_reply_needs_its_member_and_no_tunnels() -> None:
    reply: dict[str, Any] = {"session": "s1", "item": {"type": "network"}, "tunnels": []}
    with pytest.raises(ProtocolViolation, match="malformed network member: an object"):
        TunnelSession(None, "lab-net", reply)  # type: ignore[arg-type]
    tunnel = {"local_address": "127.0.0.1", "local_port": "auto", "remote_host": "h"}
    with pytest.raises(ProtocolViolation, match="tunnels for a session that carries none"):
        TunnelSession(  # type: ignore[arg-type]
            None, "lab-net", {**reply, "network": GOOD, "tunnels": [tunnel]}
        )
    assert parse_network_terms(GOOD).to_json() == GOOD


@given(
    st.dictionaries(
        st.sampled_from(sorted(GOOD)),
        st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.lists(st.text()),
    )
)
def test_any_network_member_is_either_terms_or_a_protocol_violation(value: dict[str, Any]) -> None:
    try:
        terms = parse_network_terms({**GOOD, **value})
    except ProtocolViolation as error:
        assert error.message.startswith("the Jumpoint sent a malformed network member: ")
    else:
        assert 576 <= terms.mtu <= 65535 and terms.flow > 0 and terms.routes
