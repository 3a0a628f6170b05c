"""UDP flows through the real channel: the Jumpoint's decisions, its sockets, the console's table.

Real consoles and a real L{JumpointCore} over in-memory TLS (the world of
L{tests.unit.test_session_rules}), a fake clock, and fake UDP sockets on the
Jumpoint (L{Sockets}, the core's C{open_udp}).  Every denial rule of
C{flow_open} is shown with its audit row; then the console's whole path
(L{console.tunnels.TunnelSession} with its UDP socket faked) relays
datagrams to a target socket and back to the client's address.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from twisted.internet.defer import Deferred, succeed

from console.tunnels import TunnelSession
from jumpoint.server import JumpointChannel
from jumpoint.udp_flows import UdpRelay
from shared.errors import AccessDenied, InvalidRequest, NotSupported, UsageError
from shared.protocol import control
from tests.unit.test_session_rules import (
    CONFIG,
    Console,
    World,
    keys,
    new_world,
    outcome,
)

__all__ = ["keys", "new_world"]  # fixtures used below


def udp_config(allowed_targets: list[str] | None = None) -> str:
    document = yaml.safe_load(CONFIG)
    document["groups"]["tcponly"] = {
        "jump_groups": {"see": ["*"], "open": ["*"]},
        "tunnels_restricted": {"protocol": ["tcp"]},
    }
    document["session_policies"]["one-flow"] = {"max_udp_flows": 1, "udp_idle_timeout": "30s"}
    document["items"] += [
        {
            "name": "dns",
            "type": "tcp",
            "host": "10.1.2.53",
            "tunnels": [
                {"local_port": "auto", "remote_port": 53, "protocol": "udp"},
                {"local_port": "auto", "remote_port": 22},
                {"local_port": "auto", "remote_port": 8125, "protocol": "tcp-udp"},
            ],
        },
        {
            "name": "one",
            "type": "tcp",
            "host": "10.1.2.54",
            "session_policy": "one-flow",
            "tunnels": [{"local_port": "auto", "remote_port": 53, "protocol": "udp"}],
        },
        {
            "name": "recorded-dns",
            "type": "tcp",
            "host": "10.1.2.55",
            "session_policy": "recorded",
            "tunnels": [{"local_port": "auto", "remote_port": 53, "protocol": "udp"}],
        },
        {
            "name": "named",
            "type": "tcp",
            "host": "dns.internal",
            "tunnels": [{"local_port": "auto", "remote_port": 53, "protocol": "udp"}],
        },
    ]
    if allowed_targets is not None:
        document["allowed_targets"] = allowed_targets
    return yaml.safe_dump(document, sort_keys=False)


@dataclass
class FakeSocket:
    """A connected UDP socket of the Jumpoint: what it was asked to send."""

    address: str
    port: int
    relay: UdpRelay
    written: list[bytes] = field(default_factory=list)
    closed: bool = False
    fail_with: OSError | None = None

    def write(self, payload: bytes) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.written.append(payload)

    def close(self) -> None:
        self.closed = True

    def reply(self, payload: bytes) -> None:
        """The target answers."""
        self.relay.datagramReceived(payload, (self.address, self.port))


@dataclass
class Sockets:
    opened: list[FakeSocket] = field(default_factory=list)

    def __call__(self, address: str, port: int, relay: UdpRelay) -> FakeSocket:
        opened = FakeSocket(address, port, relay)
        self.opened.append(opened)
        return opened


@dataclass
class Receiver:
    payloads: list[bytes] = field(default_factory=list)

    def datagram_received(self, payload: bytes) -> None:
        self.payloads.append(payload)


def udp_world(new_world: Callable[..., World], **options: Any) -> tuple[World, Sockets]:
    allowed = options.pop("allowed_targets", None)
    world = new_world(config=udp_config(allowed), **options)
    sockets = Sockets()
    world.core.open_udp = sockets
    return world, sockets


def open_flow(
    console: Console, flow_id: int, port: int = 53, client: str = "127.0.0.1:40000"
) -> tuple[dict[str, Any], Receiver]:
    """The console's half of a flow (its receiver), then C{flow_open}."""
    mux = console.channel.mux
    assert mux is not None
    receiver = Receiver()
    mux.datagrams.open_flow(flow_id, receiver)
    result = console.ask(
        control.FLOW_OPEN, flow=flow_id, remote_port=port, protocol="udp", client=client
    )
    return result, receiver


def refused_flow(console: Console, flow_id: int, port: int = 53, **fields: Any) -> Exception:
    with pytest.raises(Exception) as caught:
        console.ask(
            control.FLOW_OPEN,
            flow=flow_id,
            remote_port=port,
            protocol=fields.pop("protocol", "udp"),
            **fields,
        )
    return caught.value


def test_a_flow_relays_datagrams_both_ways_and_is_audited(
    new_world: Callable[..., World],
) -> None:
    world, sockets = udp_world(new_world)
    alice = world.connect("alice")
    opened = alice.open("dns")
    assert opened["udp_idle_timeout"] == 60 and opened["max_udp_flows"] == 64
    assert [t["protocol"] for t in opened["tunnels"]] == ["udp", "tcp", "tcp-udp"]
    result, receiver = open_flow(alice, 1)
    assert (result["flow"], result["address"], result["idle_timeout"]) == (1, "10.1.2.53", 60)
    (target,) = sockets.opened
    assert (target.address, target.port) == ("10.1.2.53", 53)
    (row,) = world.audit("udp_flow_opened")
    assert row.session == opened["session"] and row.user == "alice" and row.item == "dns"
    assert row.detail["flow"] == 1 and row.detail["target"] == "10.1.2.53:53"
    assert row.detail["client"] == "127.0.0.1:40000" and row.detail["address"] == "10.1.2.53"

    mux = alice.channel.mux
    assert mux is not None
    for payload in (b"", b"q" * 3000, b"x" * 65507):
        assert mux.datagrams.send(1, payload)
    world.flush()
    assert target.written == [b"", b"q" * 3000, b"x" * 65507]  # boundaries kept
    target.reply(b"answer one")
    target.reply(b"answer two")
    world.flush()
    assert receiver.payloads == [b"answer one", b"answer two"]
    # a datagram the kernel refuses is lost and counted, the flow stays
    target.fail_with = OSError(105, "No buffer space available")
    mux.datagrams.send(1, b"lost")
    world.flush()
    target.fail_with = None
    target.relay.connectionRefused()
    listed = alice.ask(control.LIST_SESSIONS)["sessions"][0]
    assert listed["udp_flows"] == 1 and listed["total_udp_flows"] == 1
    assert listed["bytes_to_target"] == 3000 + 65507

    world.clock.advance(7.5)
    assert alice.ask(control.CLOSE_FLOW, flow=1, reason="done")["flow"] == 1
    assert target.closed and mux.datagrams.flow(1) is not None  # the console closes its own
    (closed,) = world.audit("udp_flow_closed")
    assert closed.detail["reason"] == "closed by the console: done"
    assert closed.detail["datagrams_to_target"] == 3 and closed.detail["datagrams_from_target"] == 2
    assert closed.detail["bytes_to_target"] == 3000 + 65507
    assert closed.detail["bytes_from_target"] == len(b"answer one") * 2
    assert closed.detail["drops_to_target"] == 1 and closed.detail["drops_from_target"] == 0
    assert closed.detail["duration"] == 7.5
    # a second close (both ends closing at once) is answered the same way, audited once
    assert alice.ask(control.CLOSE_FLOW, flow=1)["flow"] == 1
    assert len(world.audit("udp_flow_closed")) == 1
    # the session's totals keep the flow's bytes
    listed = alice.ask(control.LIST_SESSIONS)["sessions"][0]
    assert listed["udp_flows"] == 0 and listed["bytes_from_target"] == 20


def test_a_tcp_udp_pair_carries_flows_and_a_udp_pair_no_stream(
    new_world: Callable[..., World],
) -> None:
    world, sockets = udp_world(new_world)
    alice = world.connect("alice")
    alice.open("dns")
    open_flow(alice, 1, port=8125)
    assert [(s.address, s.port) for s in sockets.opened] == [("10.1.2.53", 8125)]
    _, app = alice.stream("10.1.2.53", 53)  # a udp pair opens no TCP port
    assert app.reset is not None and "not a tunnel" in app.reset[1]


def test_flow_open_denials_name_their_rule_and_are_audited(
    new_world: Callable[..., World],
) -> None:
    world, sockets = udp_world(new_world)
    alice = world.connect("alice")
    opened = alice.open("dns")
    for port in (22, 54):  # a tcp pair, and no pair at all
        denial = refused_flow(alice, 1, port=port, client="127.0.0.1:1")
        assert isinstance(denial, AccessDenied) and denial.rule == "item host and remote ports"
        assert f"10.1.2.53:{port}/udp is not a tunnel" in denial.message
    rows = world.audit("udp_flow_denied")
    assert [r.rule for r in rows] == ["item host and remote ports"] * 2
    assert rows[0].session == opened["session"] and rows[0].item == "dns"
    assert rows[0].detail["flow"] == 1 and rows[0].detail["target"] == "10.1.2.53:22"
    assert rows[0].detail["client"] == "127.0.0.1:1"
    assert rows[0].detail["action"] == "flow_open"
    assert sockets.opened == []

    # the user's groups changed while the session is open: tunnels_restricted.protocol
    (jumpoint_side,) = [c for c in world.core.channels if isinstance(c, JumpointChannel)]
    assert jumpoint_side.user is not None
    jumpoint_side.user = dataclasses.replace(jumpoint_side.user, group="tcponly", groups=())
    denial = refused_flow(alice, 1)
    assert isinstance(denial, AccessDenied) and denial.rule == "tunnels_restricted.protocol"
    assert "not udp" in denial.message
    assert world.audit("udp_flow_denied")[-1].rule == "tunnels_restricted.protocol"
    assert sockets.opened == []


def test_a_group_without_udp_cannot_open_an_item_with_a_udp_pair(
    new_world: Callable[..., World],
) -> None:
    world, _ = udp_world(new_world)
    alice = world.connect("alice")
    (jumpoint_side,) = [c for c in world.core.channels if isinstance(c, JumpointChannel)]
    assert jumpoint_side.user is not None
    jumpoint_side.user = dataclasses.replace(jumpoint_side.user, group="tcponly", groups=())
    denial = alice.refused(control.OPEN_SESSION, item="dns")
    assert isinstance(denial, AccessDenied) and denial.rule == "tunnels_restricted.protocol"


def test_the_session_flow_cap(new_world: Callable[..., World]) -> None:
    world, sockets = udp_world(new_world)
    alice = world.connect("alice")
    opened = alice.open("one")
    assert opened["max_udp_flows"] == 1 and opened["udp_idle_timeout"] == 30
    open_flow(alice, 1)
    denial = refused_flow(alice, 3)
    assert isinstance(denial, AccessDenied) and denial.rule == "max_udp_flows"
    assert "already carries 1 UDP flows" in denial.message
    assert world.audit("udp_flow_denied")[-1].rule == "max_udp_flows"
    alice.ask(control.CLOSE_FLOW, flow=1)
    open_flow(alice, 3)  # a closed flow frees its place
    assert len(sockets.opened) == 2


def test_allowed_targets_are_checked_for_every_flow(new_world: Callable[..., World]) -> None:
    """The name resolves to an allowed address when the session opens, then to another."""
    answers = {"dns.internal": ["10.1.9.9"]}

    def resolve(host: str) -> Deferred[list[str]]:
        return succeed(list(answers.get(host, [host])))

    world, sockets = udp_world(new_world, allowed_targets=["10.1.0.0/16"], resolve=resolve)
    alice = world.connect("alice")
    alice.open("named")
    open_flow(alice, 1)
    assert sockets.opened[0].address == "10.1.9.9"  # the checked address, never a new lookup
    answers["dns.internal"] = ["192.168.7.7"]
    denial = refused_flow(alice, 3)
    assert isinstance(denial, AccessDenied) and denial.rule == "allowed_targets"
    assert "192.168.7.7" in denial.message
    (row,) = world.audit("udp_flow_denied")
    assert row.rule == "allowed_targets" and row.detail["target"] == "dns.internal:53"
    answers["dns.internal"] = []
    failed = refused_flow(alice, 5)
    assert isinstance(failed, AccessDenied) and "cannot resolve" in failed.message
    assert len(sockets.opened) == 1


def test_requests_that_are_not_decisions(new_world: Callable[..., World]) -> None:
    world, sockets = udp_world(new_world)
    alice = world.connect("alice")
    no_session = refused_flow(alice, 1)
    assert isinstance(no_session, UsageError) and "no session" in no_session.message
    assert isinstance(alice.refused(control.CLOSE_FLOW, flow=1), UsageError)
    alice.open("dns")
    even = refused_flow(alice, 2)
    assert isinstance(even, InvalidRequest) and "odd" in even.message
    tcp = refused_flow(alice, 1, protocol="tcp")
    assert isinstance(tcp, NotSupported)
    open_flow(alice, 1)
    again = refused_flow(alice, 1)
    assert isinstance(again, UsageError) and "already open" in again.message
    world.core.open_udp = None
    no_udp = refused_flow(alice, 5)
    assert isinstance(no_udp, NotSupported) and "carries no UDP" in no_udp.message
    assert len(sockets.opened) == 1


def test_an_idle_flow_closes_and_the_console_is_told(new_world: Callable[..., World]) -> None:
    world, sockets = udp_world(new_world)
    alice = world.connect("alice")
    alice.open("one")  # udp_idle_timeout 30s
    told: list[tuple[int, str]] = []
    alice.channel.on_flow_closed = lambda flow, reason: told.append((flow, reason))
    _, receiver = open_flow(alice, 1)
    (target,) = sockets.opened
    world.advance(20)
    target.reply(b"keeps it alive")
    world.advance(20)
    assert told == [] and not target.closed and receiver.payloads == [b"keeps it alive"]
    world.advance(11)
    assert told == [(1, "no datagram for 30s (udp_idle_timeout)")]
    assert target.closed
    (row,) = world.audit("udp_flow_closed")
    assert row.detail["reason"] == "no datagram for 30s (udp_idle_timeout)"
    assert row.detail["datagrams_from_target"] == 1


def test_the_session_end_closes_every_flow(new_world: Callable[..., World]) -> None:
    world, sockets = udp_world(new_world)
    alice = world.connect("alice")
    opened = alice.open("dns")
    open_flow(alice, 1)
    open_flow(alice, 3, port=8125)
    alice.ask(control.CLOSE_SESSION, reason="bye")
    assert all(s.closed for s in sockets.opened)
    rows = world.audit("udp_flow_closed")
    assert sorted(r.detail["flow"] for r in rows) == [1, 3]
    assert all("the session was closed" in r.detail["reason"] for r in rows)
    (ended,) = world.audit("session_closed")
    assert ended.session == opened["session"]


def test_a_recorded_session_keeps_every_datagram_in_its_pcap(
    new_world: Callable[..., World], tmp_path: Path
) -> None:
    """Each datagram is one UDP packet with a good checksum; tshark reads them back."""
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    world, sockets = udp_world(new_world, recordings=recordings)
    alice = world.connect("alice")
    opened = alice.open("recorded-dns", consent=True)
    open_flow(alice, 1)
    (target,) = sockets.opened
    mux = alice.channel.mux
    assert mux is not None
    payloads = [b"query", b"y" * 65507]
    for payload in payloads:
        mux.datagrams.send(1, payload)
    world.flush()
    target.reply(b"answer")
    world.flush()
    alice.ask(control.CLOSE_SESSION, reason="done")
    path = recordings / f"{opened['session']}.pcap"
    program = shutil.which("tshark")
    if program is None:
        pytest.fail("tshark is not installed (Debian/Ubuntu package: tshark)")
    fields = ["ip.src", "udp.srcport", "ip.dst", "udp.dstport", "udp.length"]
    result = subprocess.run(
        [program, "-n", "-r", str(path), "-o", "udp.check_checksum:TRUE", "-T", "fields"]
        + [arg for name in [*fields, "udp.checksum.status"] for arg in ("-e", name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    (jumpoint_side,) = [c for c in world.core.channels if isinstance(c, JumpointChannel)]
    console = jumpoint_side.peer_host  # the console's address, as the Jumpoint sees it
    assert [row[:5] for row in rows] == [
        [console, "10001", "10.1.2.55", "53", str(8 + 5)],
        [console, "10001", "10.1.2.55", "53", str(8 + 65507)],
        ["10.1.2.55", "53", console, "10001", str(8 + 6)],
    ]
    assert {row[5] for row in rows} == {"1"}  # good checksums


# -- the console's whole path, its UDP socket faked -----------------------------------


@dataclass
class FakeUdpTransport:
    sent: list[tuple[bytes, tuple[str, int]]] = field(default_factory=list)

    def write(self, payload: bytes, address: tuple[str, int]) -> None:
        self.sent.append((payload, address))


@dataclass
class FakePort:
    port: int
    protocol: Any = None
    stopped: bool = False

    def getHost(self) -> Any:
        return dataclasses.make_dataclass("Host", [("port", int)])(self.port)

    def stopListening(self) -> None:
        self.stopped = True


def test_the_console_relays_a_client_through_the_jumpoint_and_back(
    new_world: Callable[..., World],
) -> None:
    world, sockets = udp_world(new_world)
    alice = world.connect("alice")
    result = alice.open("dns")
    session = TunnelSession(alice.channel, "dns", result)
    tcp_ports: list[FakePort] = []
    udp_ports: list[FakePort] = []

    def listen(port: int, factory: Any, address: str) -> FakePort:
        bound = FakePort(port or 30000 + len(tcp_ports))
        tcp_ports.append(bound)
        return bound

    def listen_udp(port: int, protocol: Any, address: str) -> FakePort:
        bound = FakePort(port or 40000 + len(udp_ports), protocol)
        protocol.transport = FakeUdpTransport()
        udp_ports.append(bound)
        return bound

    session.bind_all(listen, listen_udp=listen_udp)
    # udp: a socket only; tcp: a listener only; tcp-udp: both on one port
    assert [t.protocol for t in session.tunnels] == ["udp", "tcp", "tcp-udp"]
    assert [t.local_port for t in session.tunnels] == [40000, 30000, 30001]
    assert [p.port for p in udp_ports] == [40000, 30001]
    described = [t.describe() for t in session.tunnels]
    assert described[0]["protocol"] == "udp" and "protocol" not in described[1]
    assert session.tunnels[0].binding == "127.0.0.1:40000/udp -> 10.1.2.53:53"
    details = session.details()
    assert details["udp_idle_timeout"] == 60 and details["max_udp_flows"] == 64

    dns = udp_ports[0].protocol
    dns.datagramReceived(b"query", ("127.0.0.1", 5353))
    dns.datagramReceived(b"second", ("127.0.0.1", 5353))
    world.flush()
    (target,) = sockets.opened
    assert target.written == [b"query", b"second"]
    target.reply(b"response")
    world.flush()
    assert dns.transport.sent == [(b"response", ("127.0.0.1", 5353))]
    (row,) = world.audit("udp_flow_opened")
    assert row.detail["client"] == "127.0.0.1:5353"
    dns.datagramReceived(b"not loopback", ("192.0.2.1", 1))  # outside the session's acl
    world.flush()
    counters = session.counters()[0]
    assert counters["udp_flows"] == 1 and counters["datagrams_to_remote"] == 2
    assert counters["datagrams_from_remote"] == 1 and counters["udp_drops"] == 1
    assert counters["bytes_to_remote"] == len(b"querysecond")
    assert counters["bytes_from_remote"] == len(b"response")

    # the Jumpoint closes the flow on its idle timeout: the console forgets it
    world.advance(61, step=5)
    assert session.counters()[0]["udp_flows"] == 0
    assert len(world.audit("udp_flow_closed")) == 1

    # a refused flow (the statsd pair, after the user lost udp) drops its datagrams
    (jumpoint_side,) = [c for c in world.core.channels if isinstance(c, JumpointChannel)]
    assert jumpoint_side.user is not None
    jumpoint_side.user = dataclasses.replace(jumpoint_side.user, group="tcponly", groups=())
    statsd = udp_ports[1].protocol
    statsd.datagramReceived(b"metric:1|c", ("127.0.0.1", 7000))
    world.flush()
    statsd.datagramReceived(b"metric:2|c", ("127.0.0.1", 7000))
    world.flush()
    refused = session.counters()[2]
    assert refused["refused_udp_flows"] == 1 and refused["udp_drops"] == 2
    assert refused["total_udp_flows"] == 0 and len(sockets.opened) == 1
    assert len(world.audit("udp_flow_denied")) == 1  # asked once, not per datagram
    session.stop_listening()
    assert all(p.stopped for p in [*tcp_ports, *udp_ports])
    outcome(alice.send(control.CLOSE_SESSION, reason="done"))
