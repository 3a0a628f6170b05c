"""Tests of pausing the readers that feed a full datagram queue (L{Datagrams.add_source}).

The table is driven sans-IO through a fake outlet (a switch saying whether the
transport accepts data); the console's L{TunLink} is tested over a pipe with
a L{MemoryReactor}, so it is visible whether it is among the reactor's readers.
"""

from __future__ import annotations

import os

import pytest
from twisted.internet.testing import MemoryReactor

from console.tun_link import TunLink
from shared.protocol.datagrams import DatagramLimits, Datagrams, DropReason, FlowLimitReached

LIMITS = DatagramLimits(max_flows=2, queue_bytes=1000, queue_datagrams=4)


class Outlet:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.open = True

    def write(self, data: bytes) -> None:
        assert self.open
        self.written.append(data)

    def writable(self) -> bool:
        return self.open


class Source:
    def __init__(self) -> None:
        self.events: list[str] = []

    def pause_reading(self) -> None:
        self.events.append("pause")

    def resume_reading(self) -> None:
        self.events.append("resume")


class Receiver:
    def datagram_received(self, payload: bytes) -> None:
        raise AssertionError("nothing arrives in these tests")


def table(limits: DatagramLimits = LIMITS) -> tuple[Datagrams, Outlet]:
    outlet = Outlet()
    datagrams = Datagrams(limits, write=outlet.write, writable=outlet.writable, odd_ids=True)
    datagrams.open_flow(1, Receiver())
    return datagrams, outlet


def test_a_source_pauses_when_the_queue_fills_and_resumes_when_half_drained() -> None:
    datagrams, outlet = table()
    source = Source()
    datagrams.add_source(source)
    outlet.open = False
    for _ in range(3):
        assert datagrams.send(1, b"x" * 10)
    assert source.events == [] and not datagrams.full
    assert datagrams.send(1, b"x" * 10)  # the fourth fills the queue: it is kept, then pause
    assert source.events == ["pause"] and datagrams.full
    assert not datagrams.send(1, b"x" * 10)  # still dropped (and counted) if one comes anyway
    assert datagrams.counters().send_drops[DropReason.QUEUE_FULL] == 1
    assert source.events == ["pause"]  # told once
    outlet.open = True
    assert datagrams.send_turn(1) > 0  # one frame out: 3 left, above half of 4
    assert source.events == ["pause"]
    datagrams.send_turn(1)  # 2 left: half
    assert source.events == ["pause", "resume"] and not datagrams.full
    datagrams.send_turn(10_000)
    assert source.events == ["pause", "resume"]


def test_the_byte_bound_pauses_before_a_datagram_of_the_same_size_would_drop() -> None:
    datagrams, outlet = table(DatagramLimits(max_flows=2, queue_bytes=250, queue_datagrams=100))
    source = Source()
    datagrams.add_source(source)
    outlet.open = False
    assert datagrams.send(1, b"x" * 100)
    assert source.events == []
    assert datagrams.send(1, b"x" * 100)  # a third of this size would not fit
    assert source.events == ["pause"]
    assert datagrams.counters().send_drops[DropReason.QUEUE_FULL] == 0


def test_closing_the_flow_that_filled_the_queue_resumes_the_sources() -> None:
    datagrams, outlet = table()
    source = Source()
    datagrams.add_source(source)
    outlet.open = False
    for _ in range(4):
        datagrams.send(1, b"x")
    datagrams.close_flow(1)
    assert source.events == ["pause", "resume"]


def test_a_source_added_while_full_pauses_at_once_and_removed_ones_hear_nothing() -> None:
    datagrams, outlet = table()
    outlet.open = False
    for _ in range(4):
        datagrams.send(1, b"x")
    late, gone = Source(), Source()
    datagrams.add_source(late)
    datagrams.add_source(late)  # added once
    assert late.events == ["pause"]
    datagrams.add_source(gone)
    datagrams.remove_source(gone)
    datagrams.remove_source(gone)  # not there: nothing
    outlet.open = True
    datagrams.send_turn(10_000)
    assert late.events == ["pause", "resume"]
    assert gone.events == ["pause"]


def test_sources_are_bounded_and_forgotten_when_the_channel_closes() -> None:
    datagrams, outlet = table()
    sources = [Source(), Source()]
    for source in sources:
        datagrams.add_source(source)
    with pytest.raises(FlowLimitReached):
        datagrams.add_source(Source())
    outlet.open = False
    for _ in range(4):
        datagrams.send(1, b"x")
    datagrams.close()
    assert not datagrams.full
    assert all(source.events == ["pause"] for source in sources)


def test_the_tun_link_stops_reading_while_the_queue_is_full_and_reads_again_after() -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    datagrams, outlet = table(DatagramLimits(max_flows=2, queue_bytes=10_000, queue_datagrams=3))
    reactor = MemoryReactor()
    link = TunLink(read_end, 100, lambda packet: datagrams.send(1, packet), print, reactor)
    datagrams.add_source(link)
    link.start()
    assert link in reactor.readers
    outlet.open = False
    for _ in range(10):
        os.write(write_end, b"\x45" + b"\0" * 99)
    assert link.doRead() is None
    assert link.counters().packets_out == 3  # the third filled the queue: the rest wait
    assert link.counters().dropped_out == 0
    assert link not in reactor.readers
    outlet.open = True
    datagrams.send_turn(10_000)
    assert link in reactor.readers and not datagrams.full
    outlet.open = False  # the transport full again
    assert link.doRead() is None
    assert link.counters().packets_out == 6 and link not in reactor.readers
    link.stop()
    datagrams.send_turn(10_000)  # resumed after stop: stays off the reactor
    assert link not in reactor.readers
    os.close(write_end)
    os.close(read_end)
