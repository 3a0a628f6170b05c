#!/usr/bin/env python3
"""Network tunnel benchmark: iperf3 through a network item, a TCP port tunnel, and direct.

Three network namespaces (``tests/e2e/netns.py``: console, Jumpoint, remote, joined by veth
pairs, addresses only from 198.18.0.0/15) and ``iperf3 -s`` in the remote one.  Paths from
the console namespace to it:

* ``direct``  -- routed through the Jumpoint namespace by the kernel, no jumpoint at all
  (the upper bound: two veth hops);
* ``network`` -- ``jump open`` of a network item: the console's TUN, every packet over the
  mTLS channel, the Jumpoint's filter and TUN, masquerade (TCP inside TCP);
* ``tcp``     -- ``jump open`` of a tcp item: a TCP port tunnel to iperf3's port (the byte
  stream is terminated and carried as stream data; TCP only);
* ``udp``     -- the same item's UDP port tunnel (``tcp-udp`` pair): iperf3's UDP test
  (UDP only).

Measured: iperf3 TCP, one stream, both directions (Mbit/s received, retransmits, CPU seconds
of ``jump`` and ``jumpoint`` per GiB), ping round trips, and UDP at increasing offered rates
(datagrams of 1200 bytes: received packets per second and loss).  One Markdown report on
stdout; every number in ``bench/results/network-<timestamp>.json``; progress on stderr.
Everything is removed at exit (the namespaces and all processes in them), also on error or
Ctrl-C.  A benchmark, not a test: it never fails on slow numbers.  Needs root and Linux.

Usage::

    python bench/network.py [--quick] [--keep-temp]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(REPO_DIR))

from bench.run import git_state, host_facts  # noqa: E402
from tests.e2e.netns import Lab, three_namespaces, wait_listening  # noqa: E402
from tests.e2e.network_lab import (  # noqa: E402
    IPERF,
    JUMPOINT_ADDRESS,
    JUMPOINT_LAN,
    REMOTE,
    NetnsDeployment,
    NetworkSession,
    network_deployment,
    network_item,
    open_network,
)

RESULTS_DIR = BENCH_DIR / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
GIB = 1 << 30
UDP_SIZE = 1200
"""iperf3 -l for UDP: below the tunnel's MTU of 1400 with its headers, so nothing fragments."""
TOOLS = [("iperf3", "iperf3"), ("ip", "iproute2"), ("nft", "nftables"), ("ping", "iputils-ping")]

PATH_TITLES = {
    "direct": "direct (routed, no jumpoint)",
    "network": "network tunnel (jump open lab-net)",
    "tcp": "TCP port tunnel (jump open bench-tcp)",
    "udp": "UDP port tunnel (tcp-udp pair)",
}

START = time.monotonic()


def log(message: str) -> None:
    print(f"[bench-net {time.monotonic() - START:6.1f}s] {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A step failed; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    seconds: int
    """iperf3 -t of every run."""
    udp_rates: tuple[str, ...]
    """iperf3 -b of the UDP runs, in increasing order."""
    pings: int


FULL = Settings(5, ("10M", "50M", "100M", "200M", "400M", "800M"), 50)
QUICK = Settings(2, ("10M", "100M"), 10)


# --------------------------------------------------------------------------- measuring


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime+stime of the processes (all threads), in seconds."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            text = Path(f"/proc/{pid}/stat").read_text()
            fields = text[text.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


@dataclass
class Target:
    """Where a path's iperf3 client connects (from the console namespace)."""

    key: str
    host: str
    port: int
    cpu_pids: dict[str, int] = field(default_factory=dict)
    """The processes whose CPU is measured (C{jump}, C{jumpoint}), by name."""


def iperf3(lab: Lab, target: Target, seconds: int, *args: str) -> dict[str, Any]:
    """One iperf3 client run in the console namespace; its JSON (and the CPU used meanwhile)."""
    before = {name: cpu_seconds([pid]) for name, pid in target.cpu_pids.items()}
    argv = ["iperf3", "-c", target.host, "-p", str(target.port), "-t", str(seconds), "-J", *args]
    done = lab.run(lab.console, *argv, check=False, timeout=seconds + 60)
    cpu = {name: cpu_seconds([pid]) - before[name] for name, pid in target.cpu_pids.items()}
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise BenchError(
            f"iperf3 {' '.join(args)} on {target.key}: {done.stderr.strip()}"
        ) from None
    if "error" in result:
        raise BenchError(f"iperf3 {' '.join(args)} on {target.key}: {result['error']}")
    result["cpu"] = cpu
    return result


def tcp_figures(result: dict[str, Any]) -> dict[str, Any]:
    end = result["end"]
    received = end["sum_received"]
    gib = received["bytes"] / GIB
    figures: dict[str, Any] = {
        "mbit_s": received["bits_per_second"] / 1e6,
        "bytes": received["bytes"],
        "seconds": received["seconds"],
        "retransmits": end["sum_sent"].get("retransmits"),
    }
    for name, seconds in result["cpu"].items():
        figures[f"cpu_{name}_s_per_gib"] = seconds / gib if gib else None
    return figures


def udp_figures(result: dict[str, Any], rate: str) -> dict[str, Any]:
    total = result["end"]["sum"]
    received = total["packets"] - total["lost_packets"]
    return {
        "offered": rate,
        "sent_packets": total["packets"],
        "lost_packets": total["lost_packets"],
        "loss_percent": total["lost_percent"],
        "received_packets_s": received / total["seconds"] if total["seconds"] else 0.0,
        "received_mbit_s": received * UDP_SIZE * 8 / total["seconds"] / 1e6
        if total["seconds"]
        else 0.0,
        "jitter_ms": total.get("jitter_ms"),
        "cpu": result["cpu"],
    }


_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")


def ping_figures(lab: Lab, count: int) -> dict[str, float]:
    done = lab.run(
        lab.console, "ping", "-n", "-q", "-c", str(count), "-i", "0.05", REMOTE, check=False
    )
    found = _RTT.search(done.stdout)
    if found is None:
        raise BenchError(f"ping: {done.stdout.strip()} {done.stderr.strip()}")
    low, mean, high, _ = (float(value) for value in found.groups())
    return {"min_ms": low, "avg_ms": mean, "max_ms": high}


# --------------------------------------------------------------------------- the run


@dataclass
class Results:
    tcp: dict[str, dict[str, Any]] = field(default_factory=dict)
    """path -> direction (up, down) -> figures."""
    ping: dict[str, dict[str, float]] = field(default_factory=dict)
    udp: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def guarded(results: Results, what: str, step: Callable[[], None]) -> None:
    """Run one measurement; a failure is recorded and the others go on."""
    try:
        step()
    except (BenchError, AssertionError, subprocess.SubprocessError, OSError) as error:
        log(f"{what} FAILED: {error}")
        results.errors[what] = str(error)


def measure(lab: Lab, target: Target, settings: Settings, results: Results, tcp: bool) -> None:
    key = target.key
    if tcp:
        log(f"{PATH_TITLES[key]}: iperf3 TCP up and down, {settings.seconds} s each")

        def both_ways() -> None:
            up = tcp_figures(iperf3(lab, target, settings.seconds))
            down = tcp_figures(iperf3(lab, target, settings.seconds, "-R"))
            results.tcp[key] = {"up": up, "down": down}

        guarded(results, f"{key} tcp", both_ways)
        if key != "tcp":
            guarded(
                results,
                f"{key} ping",
                lambda: results.ping.__setitem__(key, ping_figures(lab, settings.pings)),
            )
    if key == "tcp":
        return
    rows = results.udp.setdefault(key, [])
    for rate in settings.udp_rates:
        log(f"{PATH_TITLES[key]}: iperf3 UDP at {rate}bit/s")

        def one_rate(rate: str = rate) -> None:
            result = iperf3(lab, target, settings.seconds, "-u", "-b", rate, "-l", str(UDP_SIZE))
            rows.append(udp_figures(result, rate))

        guarded(results, f"{key} udp {rate}", one_rate)


def direct_routes(lab: Lab, add: bool) -> None:
    """Kernel routes console <-> remote through the Jumpoint namespace (the direct path)."""
    verb = "add" if add else "del"
    lab.run(lab.console, "ip", "route", verb, REMOTE, "via", JUMPOINT_ADDRESS, check=add)
    lab.run(lab.remote, "ip", "route", verb, "198.18.1.0/30", "via", JUMPOINT_LAN, check=add)


def run_paths(lab: Lab, root: Path, settings: Settings) -> tuple[Results, dict[str, Any]]:
    results = Results()
    lab.spawn(lab.remote, "iperf3", "-s", "-p", str(IPERF), log=root / "iperf3.log")
    wait_listening(lab, lab.remote, "tcp", IPERF, "iperf3 -s")

    # direct first, before any jumpoint runs; forwarding on by hand (the Jumpoint leaves a
    # setting it did not make alone)
    lab.run(lab.jumpoint, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    direct_routes(lab, True)
    try:
        measure(lab, Target("direct", REMOTE, IPERF), settings, results, tcp=True)
    finally:
        direct_routes(lab, False)

    items = [
        network_item("lab-net", f"{REMOTE}/tcp/{IPERF}", f"{REMOTE}/udp/{IPERF}", f"{REMOTE}/icmp"),
        {
            "name": "bench-tcp",
            "type": "tcp",
            "host": REMOTE,
            "tunnels": [{"local_port": "auto", "remote_port": IPERF, "protocol": "tcp-udp"}],
        },
    ]
    deployment: NetnsDeployment = network_deployment(lab, root / "jumpoint", items)
    info: dict[str, Any] = {}
    try:
        jumpoint_pid = deployment.processes[-1].pid
        network: NetworkSession = open_network(deployment, "lab-net")
        info["network_ready"] = network.ready
        target = Target(
            "network", REMOTE, IPERF, {"jump": network.process.pid, "jumpoint": jumpoint_pid}
        )
        measure(lab, target, settings, results, tcp=True)
        network.close()

        port = deployment.open("bench-tcp")
        ready = port.wait_for_event("ready")
        info["tcp_ready"] = ready
        tunnel = ready["tunnels"][0]
        pids = {"jump": port.pid, "jumpoint": jumpoint_pid}
        host, local = str(tunnel["local_address"]), int(tunnel["local_port"])
        measure(lab, Target("tcp", host, local, pids), settings, results, tcp=True)
        measure(lab, Target("udp", host, local, pids), settings, results, tcp=False)
        port.stop()
    finally:
        deployment.stop_all()
        info["product_logs"] = {
            " ".join(process.args[4:7]): process.output()[-4000:]
            for process in deployment.processes
        }
    return results, info


# --------------------------------------------------------------------------- the report


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def render(results: Results, settings: Settings) -> str:
    lines = [
        f"### iperf3 TCP, one stream, {settings.seconds} s (from the console namespace)",
        "",
        "| path | up Mbit/s | down Mbit/s | retransmits up/down | jump CPU s/GiB up | "
        "jumpoint CPU s/GiB up | ping avg (max) ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key in ("direct", "network", "tcp"):
        tcp = results.tcp.get(key)
        if tcp is None:
            lines.append(f"| {PATH_TITLES[key]} | error | error | | | | |")
            continue
        up, down = tcp["up"], tcp["down"]
        ping = results.ping.get(key)
        rtt = f"{ping['avg_ms']:.2f} ({ping['max_ms']:.2f})" if ping else "—"
        lines.append(
            f"| {PATH_TITLES[key]} | {_number(up['mbit_s'])} | {_number(down['mbit_s'])} | "
            f"{up['retransmits']}/{down['retransmits']} | "
            f"{_number(up.get('cpu_jump_s_per_gib'), 1)} | "
            f"{_number(up.get('cpu_jumpoint_s_per_gib'), 1)} | {rtt} |"
        )
    lines += [
        "",
        f"### iperf3 UDP, {UDP_SIZE}-byte datagrams, {settings.seconds} s per rate",
        "",
        "| path | offered | received packets/s | received Mbit/s | loss % |",
        "|---|---:|---:|---:|---:|",
    ]
    for key in ("direct", "network", "udp"):
        for row in results.udp.get(key, []):
            lines.append(
                f"| {PATH_TITLES[key]} | {row['offered']}bit/s | "
                f"{_number(row['received_packets_s'])} | {_number(row['received_mbit_s'], 1)} | "
                f"{row['loss_percent']:.2f} |"
            )
    for what, message in results.errors.items():
        lines.append(f"\nfailed: {what}: {message}")
    return "\n".join(lines)


def check_tools() -> None:
    missing = [(tool, package) for tool, package in TOOLS if shutil.which(tool) is None]
    if missing:
        sys.exit(
            "bench: missing tools: "
            + ", ".join(f"{tool} (apt-get install {package})" for tool, package in missing)
        )
    if sys.platform != "linux" or os.geteuid() != 0:
        sys.exit("bench: needs Linux and root (network namespaces, TUN devices)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="2 s runs and two UDP rates: about half a minute"
    )
    parser.add_argument("--keep-temp", action="store_true", help="keep the temporary directory")
    return parser.parse_args(argv)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_tools()
    signal.signal(signal.SIGTERM, _terminate)
    settings = QUICK if args.quick else FULL
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = Path(tempfile.mkdtemp(prefix="jumpoint-bench-net-"))
    try:
        with three_namespaces("bench") as lab:
            log(f"namespaces {lab.console}, {lab.jumpoint}, {lab.remote}; {root}")
            results, info = run_paths(lab, root, settings)
    finally:
        if args.keep_temp:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    report = render(results, settings)
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"network-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "timestamp": stamp,
                "settings": settings.__dict__,
                "udp_datagram_bytes": UDP_SIZE,
                "host": host_facts(),
                "git": git_state(),
                "tcp": results.tcp,
                "ping": results.ping,
                "udp": results.udp,
                "errors": results.errors,
                "info": info,
                "table_markdown": report,
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    log(f"results written to {out}")
    print(report)
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
