#!/usr/bin/env python3
"""Micro-benchmark of the network tunnel's packet filter (jumpoint/network), in one process.

Packets per second of the sans-IO decision core alone (no TUN, no channel):

* ``parse``            -- L{ip_packets.parse} of a 1400-byte UDP packet;
* ``udp out+in``       -- an established UDP flow, one packet each way per round (counted as 2);
* ``tcp out+in``       -- an established TCP flow: 1400-byte data in, a 40-byte ACK out;
* ``new udp flows``    -- each outbound packet opens a flow: 20 filter rules, the allowed_targets
                          and protocol callbacks, the flow table (cleared when it fills);
* ``denied unsolicited`` -- inbound packets of no flow;
* ``denied spoofed``   -- outbound packets with a foreign source.

Usage::

    python bench/packet_filter.py [--packets N] [--repeat R]

Prints one Markdown table; the best of R runs of N packets.  A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jumpoint.network.flow_table import FlowTable
from jumpoint.network.ip_packets import parse
from jumpoint.network.packet_filter import PacketFilter
from shared.addresses import FilterRule
from tests.unit.ipv4_builder import ACK, SYN, tcp, udp

INNER = "100.64.0.2"
REMOTE = "198.18.1.10"
RULES = [f"198.18.{n}.0/24/udp/53,123" for n in range(2, 20)] + [
    "198.18.1.0/24/udp/1-65535",
    "198.18.1.10/tcp/22,443",
]
SIZE = 1400


def _filter(limit: int = 65536) -> PacketFilter:
    return PacketFilter(
        INNER,
        [FilterRule.parse(text) for text in RULES],
        lambda address, port: True,
        lambda protocol: True,
        FlowTable(limit),
    )


def _rate(run: Callable[[int], int], packets: int, repeat: int) -> float:
    run(1000)  # warm up (and build the inputs)
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        handled = run(packets)
        elapsed = time.perf_counter() - start
        best = max(best, handled / elapsed)
    return best


def parse_only(packets: int) -> int:
    data = udp(INNER, REMOTE, 5000, 7, b"x" * (SIZE - 28))
    for _ in range(packets):
        parse(data)
    return packets


def udp_both_ways(packets: int) -> int:
    f = _filter()
    out = udp(INNER, REMOTE, 5000, 7, b"x" * (SIZE - 28))
    back = udp(REMOTE, INNER, 7, 5000, b"x" * (SIZE - 28))
    outbound, inbound = f.outbound, f.inbound
    assert outbound(out, 0.0).allowed and inbound(back, 0.0).allowed
    now = 0.0
    for _ in range(packets // 2):
        now += 1e-6
        outbound(out, now)
        inbound(back, now)
    assert f.denied_out == f.denied_in == 0
    return packets // 2 * 2


def tcp_both_ways(packets: int) -> int:
    f = _filter()
    assert f.outbound(tcp(INNER, REMOTE, 40000, 22, SYN), 0.0).allowed
    assert f.inbound(tcp(REMOTE, INNER, 22, 40000, SYN | ACK), 0.0).allowed
    ack = tcp(INNER, REMOTE, 40000, 22, ACK)
    data = tcp(REMOTE, INNER, 22, 40000, ACK, b"x" * (SIZE - 40))
    outbound, inbound = f.outbound, f.inbound
    now = 0.0
    for _ in range(packets // 2):
        now += 1e-6
        inbound(data, now)
        outbound(ack, now)
    assert f.denied_out == f.denied_in == 0
    return packets // 2 * 2


_DATAGRAMS: list[bytes] = []


def new_flows(packets: int) -> int:
    if not _DATAGRAMS:  # built once, outside the timed runs after the first
        _DATAGRAMS.extend(udp(INNER, REMOTE, port, 53, b"q" * 40) for port in range(1, 60001))
    datagrams = _DATAGRAMS
    f = _filter(limit=65536)
    now = 0.0
    done = 0
    while done < packets:
        for data in datagrams[: packets - done]:
            now += 1e-6
            f.outbound(data, now)
        done += min(len(datagrams), packets - done)
        f.flows.close_all(now)
    assert f.denied_out == 0
    return packets


def unsolicited(packets: int) -> int:
    f = _filter()
    data = udp(REMOTE, INNER, 7, 5000, b"x" * 100)
    for _ in range(packets):
        f.inbound(data, 0.0)
    return packets


def spoofed(packets: int) -> int:
    f = _filter()
    data = udp("100.64.0.3", REMOTE, 5000, 7, b"x" * 100)
    for _ in range(packets):
        f.outbound(data, 0.0)
    return packets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    cases = [
        ("parse", parse_only),
        ("udp out+in", udp_both_ways),
        ("tcp out+in", tcp_both_ways),
        ("new udp flows", new_flows),
        ("denied unsolicited", unsolicited),
        ("denied spoofed", spoofed),
    ]
    print(f"Python {sys.version.split()[0]}, {options.packets} packets, best of {options.repeat}")
    print()
    print("| case | packets/s | µs/packet | Mbit/s at 1400 B |")
    print("|---|---:|---:|---:|")
    for name, run in cases:
        rate = _rate(run, options.packets, options.repeat)
        mbit = rate * SIZE * 8 / 1e6
        print(f"| {name} | {rate:,.0f} | {1e6 / rate:.2f} | {mbit:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
