"""Held channel writes: a burst of datagrams leaves as one transport write, in order, bounded.

L{Multiplexer.hold_writes} (shared/protocol/mux.py) collects frames until the
last L{Multiplexer.release_writes}; the console's L{console.tun_link.TunLink}
holds them while one turn reads its TUN, the Jumpoint's L{NetworkHub} for
each session that got a packet in one read turn of its TUN.
"""

from __future__ import annotations

import os
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.pair.testing import MemoryIOSystem, Tunnel

from console.tun_link import TunLink
from jumpoint.network.hub import BurstTuntapPort, NetworkHub
from jumpoint.network.settings import NetworkSettings
from shared.protocol.frames import HEADER_SIZE, ErrorCode, FrameType
from shared.protocol.mux import HELD_WRITES_LIMIT, Multiplexer
from tests.unit.test_mux import FakeTransport, RecordingHandler
from tests.unit.test_mux_datagrams import PausingTransport, Receiver


class CountingTransport(FakeTransport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[int] = []

    def write(self, data: bytes) -> None:
        super().write(data)
        self.writes.append(len(data))


def one_side(transport: FakeTransport) -> Multiplexer:
    mux = Multiplexer(is_client=True, handler=RecordingHandler(), clock=Clock())
    mux.make_connection(transport)  # type: ignore[arg-type]
    mux.establish()
    mux.datagrams.open_flow(1, Receiver())
    return mux


def test_held_datagrams_leave_in_one_write_in_order_after_the_last_release() -> None:
    transport = CountingTransport()
    mux = one_side(transport)
    mark = len(transport.frames())
    mux.hold_writes()
    mux.hold_writes()  # nested: the outer release writes
    for n in range(10):
        assert mux.datagrams.send(1, bytes([n]) * 100)
    mux.release_writes()
    assert transport.writes == []  # the inner release writes nothing
    mux.release_writes()
    assert len(transport.writes) == 1
    sent = transport.frames()[mark:]
    assert [f.payload for f in sent] == [bytes([n]) * 100 for n in range(10)]
    assert mux.datagrams.sent == 10
    with pytest.raises(RuntimeError):
        mux.release_writes()


def test_holding_never_collects_more_than_the_limit() -> None:
    transport = CountingTransport()
    mux = one_side(transport)
    transport.writes.clear()
    with mux.holding_writes():
        for _ in range(3 * HELD_WRITES_LIMIT // 1000):
            mux.datagrams.send(1, b"x" * 1000)
        assert transport.writes and max(transport.writes) < HELD_WRITES_LIMIT + 1100
    assert sum(transport.writes) == 3 * HELD_WRITES_LIMIT // 1000 * (1000 + HEADER_SIZE)


def test_a_pause_while_holding_makes_later_datagrams_queue_behind_the_held_ones() -> None:
    transport = PausingTransport(capacity=10**9)
    mux = one_side(transport)
    mark = len(transport.frames())
    transport.capacity = 1
    with mux.holding_writes():
        for n in range(HELD_WRITES_LIMIT // 1000 + 5):
            mux.datagrams.send(1, n.to_bytes(2, "big") * 500)
        assert mux.datagrams.queued > 0  # the limit wrote them out, the transport paused
    transport.drain(capacity=10**9)
    payloads = [f.payload for f in transport.frames()[mark:]]
    assert payloads == [n.to_bytes(2, "big") * 500 for n in range(HELD_WRITES_LIMIT // 1000 + 5)]


def test_a_goaway_goes_after_the_held_frames_and_an_abort_drops_them() -> None:
    transport = FakeTransport()
    mux = one_side(transport)
    mark = len(transport.frames())
    mux.hold_writes()
    mux.datagrams.send(1, b"before")
    mux.go_away(ErrorCode.NO_ERROR, "done")
    kinds = [f.type for f in transport.frames()[mark:]]
    assert kinds == [FrameType.DATAGRAM, FrameType.GOAWAY]
    mux.release_writes()
    assert [f.type for f in transport.frames()[mark:]] == kinds

    transport = FakeTransport()
    mux = one_side(transport)
    mark = len(transport.frames())
    mux.hold_writes()
    mux.datagrams.send(1, b"lost")
    mux.connection_lost("gone")
    mux.release_writes()
    assert transport.frames()[mark:] == []


class Holds:
    def __init__(self) -> None:
        self.events: list[str] = []

    def hold_writes(self) -> None:
        self.events.append("hold")

    def release_writes(self) -> None:
        self.events.append("release")


def test_the_console_tun_link_holds_the_channel_for_one_read_turn() -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    holds = Holds()

    def sent(packet: bytes) -> bool:
        holds.events.append("packet")
        return True

    link = TunLink(read_end, 1400, sent, lambda why: None, MemoryReactor(), holds)
    link.start()
    os.write(write_end, b"\x45" + b"\0" * 19)
    assert link.doRead() is None
    assert holds.events == ["hold", "packet", "release"]
    link.stop()
    os.close(write_end)
    os.close(read_end)


class Session:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def from_tun(self, packet: bytes) -> None:
        self.log.append(f"{self.name} packet")

    def hold_writes(self) -> None:
        self.log.append(f"{self.name} hold")

    def release_writes(self) -> None:
        self.log.append(f"{self.name} release")


class NoEgress:
    def install(self) -> None:
        pass

    def remove(self) -> list[str]:
        return []


def packet_to(address: str) -> bytes:
    return b"\x45" + b"\0" * 15 + IPv4Address(address).packed


def test_the_hub_holds_each_session_that_gets_packets_in_a_read_turn_once() -> None:
    io = MemoryIOSystem()
    io.registerSpecialDevice(Tunnel._DEVICE_NAME, Tunnel)
    ports: list[BurstTuntapPort] = []

    def open_port(name: bytes, reader: Any) -> BurstTuntapPort:
        port = BurstTuntapPort(hub, name, reader, reactor=MemoryReactor(), system=io)
        ports.append(port)
        return port

    settings = NetworkSettings(IPv4Network("198.19.0.0/24"), "jpt-test")
    hub = NetworkHub(
        settings,
        MemoryReactor(),
        egress=NoEgress(),  # type: ignore[arg-type]
        open_port=open_port,
        configure=lambda settings: None,
    )
    hub.start()
    log: list[str] = []
    hub.attach(IPv4Address("198.19.0.2"), Session("a", log))
    hub.attach(IPv4Address("198.19.0.3"), Session("b", log))
    tunnel = io.getTunnel(ports[0])
    for address in ("198.19.0.2", "198.19.0.2", "198.19.0.9", "198.19.0.3"):
        tunnel.addToReadBuffer(packet_to(address))
    ports[0].doRead()
    assert log == ["a hold", "a packet", "a packet", "b hold", "b packet", "a release", "b release"]
    assert hub.unowned == 1
    log.clear()
    hub.from_tun(packet_to("198.19.0.3"))  # outside a read turn: nothing held
    assert log == ["b packet"]
