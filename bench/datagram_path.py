#!/usr/bin/env python3
"""Micro-benchmark of a channel's datagram path in one process: flow, multiplexer, TLS, back.

Two real L{Multiplexer}s (console and Jumpoint) joined by the channel's real TLS
(L{shared.protocol.tls.ChannelTLSProtocol}, TLS 1.3, mutual certificates) over
Twisted's in-memory TCP (C{iosim}: no system calls, so the kernel's share is not in
these figures).  Cases, each in bursts of C{--burst} datagrams of C{--size} bytes (1400: what one
TUN read turn hands over):

* ``send``    -- C{Flow.send} on the console: frame, multiplexer, TLS encryption;
* ``receive`` -- the Jumpoint's side of the same bytes: TLS decryption, frame parsing,
                 the flow's receiver (which only counts);
* ``send (held)`` -- the same burst of sends inside L{Multiplexer.holding_writes}, if
                 the multiplexer has it: one TLS write for the burst.

Usage::

    python bench/datagram_path.py [--packets N] [--burst B] [--size S] [--repeat R] [--profile]

Prints one Markdown table of µs per datagram (best of R runs); C{--profile} prints
cProfile's top functions of one send+receive run instead.  A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import pstats
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.test.iosim import IOPump, connectedServerAndClient

from shared import pki
from shared.protocol.datagrams import Flow
from shared.protocol.mux import Multiplexer
from shared.protocol.tls import client_options, server_options, wrap_client, wrap_server

SIZE = 1400
FLOW = 1


class _Handler:
    def control_received(self, message: dict[str, Any]) -> None:
        pass

    def stream_requested(self, stream: Any, payload: bytes) -> None:
        pass

    def mux_closing(self, code: int, reason: str, by_peer: bool) -> None:
        pass


class _Counter:
    def __init__(self) -> None:
        self.count = 0

    def datagram_received(self, payload: bytes) -> None:
        self.count += 1


class _MuxProtocol(Protocol):
    def __init__(self, is_client: bool) -> None:
        self.mux = Multiplexer(is_client=is_client, handler=_Handler(), clock=Clock())

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.mux.make_connection(self.transport)
        self.mux.establish()

    def dataReceived(self, data: bytes) -> None:
        self.mux.data_received(data)


class Channel:
    """Console and Jumpoint multiplexers over the channel's TLS, in memory."""

    def __init__(self) -> None:
        ca = pki.create_ca("bench")
        server_keys = pki.issue_server(ca, "bench", ["127.0.0.1"])
        client_keys = pki.issue_client(ca, "alice", "default")
        self.console = _MuxProtocol(True)
        self.jumpoint = _MuxProtocol(False)
        server = wrap_server(
            server_options(ca.certificate_pem, server_keys.certificate_pem, server_keys.key_pem),
            Factory.forProtocol(lambda: self.jumpoint),
        ).buildProtocol(None)
        client = wrap_client(
            client_options(
                "127.0.0.1", ca.certificate_pem, client_keys.certificate_pem, client_keys.key_pem
            ),
            Factory.forProtocol(lambda: self.console),
        ).buildProtocol(None)
        self.pump: IOPump
        _, _, self.pump = connectedServerAndClient(lambda: server, lambda: client)
        self.pump.flush()
        self.counter = _Counter()
        self.flow: Flow = self.console.mux.datagrams.open_flow(FLOW, _Counter())
        self.jumpoint.mux.datagrams.open_flow(FLOW, self.counter)
        self.flow.send(b"x" * SIZE)  # the server's session tickets, once
        self.pump.flush()


def _held(mux: Multiplexer) -> Callable[[], contextlib.AbstractContextManager[None]]:
    holding = getattr(mux, "holding_writes", None)
    if holding is None:
        return contextlib.nullcontext
    return holding  # type: ignore[no-any-return]


def measure(
    channel: Channel, packets: int, burst: int, held: bool, size: int = SIZE
) -> tuple[float, float]:
    """Seconds spent sending and receiving C{packets} datagrams of C{size} bytes in bursts."""
    payload = b"\x45" + b"p" * (size - 1)
    send = channel.flow.send
    hold = _held(channel.console.mux) if held else contextlib.nullcontext
    sending = receiving = 0.0
    done = 0
    before = channel.counter.count
    while done < packets:
        start = time.perf_counter()
        with hold():
            for _ in range(burst):
                send(payload)
        middle = time.perf_counter()
        channel.pump.pump()  # moves the bytes; the Jumpoint's TLS and mux run here
        end = time.perf_counter()
        sending += middle - start
        receiving += end - middle
        done += burst
    assert channel.counter.count - before == done, "datagrams were lost"
    return sending, receiving


@contextlib.contextmanager
def _profiled(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packets", type=int, default=100_000)
    parser.add_argument("--burst", type=int, default=64)
    parser.add_argument("--size", type=int, default=SIZE, help="bytes per datagram")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    options = parser.parse_args(argv)
    channel = Channel()
    measure(channel, 2000, options.burst, False)  # warm up
    if options.profile:
        with _profiled(True):
            measure(channel, options.packets, options.burst, True)
        return 0
    rows = []
    for held in (False, True):
        best_send = best_receive = float("inf")
        for _ in range(options.repeat):
            sending, receiving = measure(
                channel, options.packets, options.burst, held, options.size
            )
            best_send = min(best_send, sending)
            best_receive = min(best_receive, receiving)
        label = " (held)" if held else ""
        rows.append((f"send{label}", best_send))
        rows.append((f"receive{label}", best_receive))
    print(
        f"Python {sys.version.split()[0]}, {options.packets} datagrams of {options.size} B, "
        f"bursts of {options.burst}, best of {options.repeat}\n"
    )
    print("| case | µs/datagram | datagrams/s |")
    print("|---|---:|---:|")
    for label, seconds in rows:
        per = seconds / options.packets
        print(f"| {label} | {per * 1e6:.2f} | {1 / per:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
