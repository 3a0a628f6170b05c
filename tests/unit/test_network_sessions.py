"""Network sessions on the Jumpoint, through a real channel, with the TUN device in memory.

The console end is the test: it opens a session of a network item, reads
the reply's C{network} fields, opens the datagram flow they name and sends
IPv4 packets on it; the Jumpoint's TUN is L{twisted.pair.testing.MemoryIOSystem}.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Sequence
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactor
from twisted.pair.testing import MemoryIOSystem, Tunnel
from twisted.pair.tuntap import TuntapPort

from jumpoint.network.egress import CommandResult, Egress
from jumpoint.network.hub import NetworkHub
from jumpoint.network.settings import NetworkSettings
from jumpoint.network.tunnel_service import NetworkService, routes_of, target_check
from jumpoint.recording import LINKTYPE_RAW, SessionRecorder, SynchronousWriter
from shared.addresses import EgressGuard, FilterRule
from shared.protocol import control
from tests.unit.ipv4_builder import echo, udp
from tests.unit.test_session_rules import CONFIG, Keys, World, keys, make_world

__all__ = ["keys"]  # the module's key fixture

NETWORK_ITEMS = """\
  - name: lab-net
    type: network
    filters: ["198.18.2.0/24/udp/53", "198.18.2.10/icmp"]
"""


class Receiver:
    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def datagram_received(self, payload: bytes) -> None:
        self.packets.append(payload)


class Nft:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], stdin: str | None) -> CommandResult:
        self.calls.append(list(argv))
        return CommandResult(0, "", "")


class Lab:
    """A world whose Jumpoint has a TUN in memory; the test plays the console."""

    def __init__(self, tmp_path: Path, keys: Keys) -> None:
        self.world: World = make_world(tmp_path, keys, config=CONFIG + NETWORK_ITEMS)
        settings = NetworkSettings(IPv4Network("198.19.0.0/24"), "jpt-test")
        self.io = MemoryIOSystem()
        self.io.registerSpecialDevice(Tunnel._DEVICE_NAME, Tunnel)
        self.ports: list[TuntapPort] = []
        self.nft = Nft()
        forward = tmp_path / "ip_forward"
        forward.write_text("1\n")
        hub = NetworkHub(
            settings,
            MemoryReactor(),
            egress=Egress(settings, self.nft, forward),
            open_port=self._port,
            configure=lambda settings: None,
        )
        self.service = NetworkService(settings, self.world.clock, hub)
        self.world.core.kind_services["network"] = self.service

    def _port(self, name: bytes, reader: Any) -> TuntapPort:
        port = TuntapPort(name, reader, reactor=MemoryReactor(), system=self.io)
        self.ports.append(port)
        return port

    @property
    def tunnel(self) -> Any:
        (port,) = self.ports
        return self.io.getTunnel(port)

    def from_remote(self, packet: bytes) -> None:
        self.tunnel.addToReadBuffer(packet)
        self.ports[0].doRead()
        self.world.flush()

    def written(self) -> list[bytes]:
        out = list(self.tunnel.writeBuffer)
        self.tunnel.writeBuffer.clear()
        return out


def test_routes_cover_every_rule_in_as_few_networks_as_possible() -> None:
    rules = [FilterRule.parse(text) for text in ("198.18.2.0/24/udp/53", "198.18.2.10/icmp")]
    assert routes_of(rules) == ["198.18.2.0/24"]
    spread = [FilterRule.parse("198.18.3.1-198.18.3.6/tcp/22")]
    assert routes_of(spread) == ["198.18.3.1/32", "198.18.3.2/31", "198.18.3.4/31", "198.18.3.6/32"]


def test_a_network_session_carries_allowed_packets_and_audits_their_flows(
    tmp_path: Path, keys: Keys
) -> None:
    lab = Lab(tmp_path, keys)
    world = lab.world
    alice = world.connect("alice")
    opened = alice.open("lab-net")
    network = opened["network"]
    assert network == {
        "address": "198.19.0.2",
        "gateway": "198.19.0.1",
        "routes": ["198.18.2.0/24"],
        "mtu": 1400,
        "flow": network["flow"],
    }
    assert network["flow"] % 2 == 0  # the Jumpoint's parity
    assert lab.nft.calls == [["nft", "-f", "-"]]  # egress installed with the first session
    mux = alice.channel.mux
    assert mux is not None
    receiver = Receiver()
    flow = mux.datagrams.open_flow(network["flow"], receiver)

    query = udp("198.19.0.2", "198.18.2.53", 40000, 53, b"dns?")
    flow.send(query)
    world.flush()
    assert lab.written() == [query]
    answer = udp("198.18.2.53", "198.19.0.2", 53, 40000, b"dns!")
    lab.from_remote(answer)
    assert receiver.packets == [answer]

    # denied: another port, a spoofed source, unsolicited traffic from the remote network
    flow.send(udp("198.19.0.2", "198.18.2.53", 40001, 80, b"web"))
    flow.send(udp("198.19.0.9", "198.18.2.53", 40002, 53, b"spoofed"))
    world.flush()
    assert lab.written() == []
    lab.from_remote(udp("198.18.2.66", "198.19.0.2", 53, 40003, b"unasked"))
    assert receiver.packets == [answer]
    ping = echo("198.19.0.2", "198.18.2.10", ident=7, seq=1)
    flow.send(ping)
    world.flush()
    assert lab.written() == [ping]

    world.advance(11)  # a summary window passes
    denied = {(row.rule, row.detail["count"]) for row in world.audit("network_denied")}
    assert denied == {
        ("network.filter", 1),
        ("network.spoofed_source", 1),
        ("network.unsolicited", 1),
    }
    (listed,) = alice.ask(control.LIST_SESSIONS)["sessions"]
    assert listed["link"] == {
        "flows": 2,
        "total_flows": 2,
        "packets_out": 2,
        "bytes_out": len(query) + len(ping),
        "packets_in": 1,
        "bytes_in": len(answer),
        "denied_out": 2,
        "denied_in": 1,
        "channel_drops": 0,
        "tun_drops": 0,
    }
    # what the console's live view polls: its own session, the same figures
    own = alice.ask(control.SESSION_STATS)["session"]
    assert own["session"] == listed["session"] and own["link"] == listed["link"]
    alice.ask(control.CLOSE_SESSION, reason="done")
    world.flush()
    opened_rows = world.audit("network_flow_opened")
    closed_rows = world.audit("network_flow_closed")
    assert len(opened_rows) == len(closed_rows) == 2
    dns = next(row.detail for row in closed_rows if row.detail["protocol"] == 17)
    assert (dns["dst"], dns["dport"], dns["packets_out"], dns["packets_in"]) == (
        "198.18.2.53",
        53,
        1,
        1,
    )
    assert dns["reason"] == "session_end"
    (session_row,) = world.audit("session_closed", item="lab-net")
    assert session_row.detail["bytes_to_target"] == len(query) + len(ping)
    assert session_row.detail["bytes_from_target"] == len(answer)
    assert lab.service.pool.in_use == 0  # the address went back to the pool
    lab.from_remote(answer)  # nobody owns the address any more
    assert receiver.packets == [answer] and lab.service.hub is not None
    assert lab.service.hub.unowned == 1


def test_the_pool_is_never_a_target_and_a_recorded_session_keeps_raw_ip_packets(
    tmp_path: Path, keys: Keys
) -> None:
    lab = Lab(tmp_path, keys)
    guard = EgressGuard.of(None)
    check = target_check(guard, IPv4Network("198.19.0.0/24"))
    assert (
        check("198.18.2.53", 53) and not check("198.19.0.3", 53) and not check("198.19.0.1", None)
    )
    assert not check("127.0.0.1", 53)  # the built-in default of allowed_targets
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    recorder = SessionRecorder(
        recordings, "s1", lab.world.clock, writer=SynchronousWriter(), link_type=LINKTYPE_RAW
    )
    packet = udp("198.19.0.2", "198.18.2.53", 40000, 53, b"dns?")
    recorder.packet(packet)
    recorder.close()
    data = (recordings / "s1.pcap").read_bytes()
    assert struct.unpack_from("<I", data, 20) == (LINKTYPE_RAW,)
    assert data.endswith(packet) and len(data) == 24 + 16 + len(packet)
    program = shutil.which("tshark")
    if program is None:
        pytest.fail("tshark is not installed (Debian/Ubuntu package: tshark)")
    fields = ["ip.src", "ip.dst", "udp.srcport", "udp.dstport"]
    result = subprocess.run(
        [program, "-n", "-r", str(recordings / "s1.pcap"), "-T", "fields"]
        + [arg for name in fields for arg in ("-e", name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["198.19.0.2", "198.18.2.53", "40000", "53"]
