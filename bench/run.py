#!/usr/bin/env python3
"""Loopback benchmark: direct TCP vs ``ssh -L`` vs ``jump open``, side by side in one run.

Four paths to the same loopback servers (an iperf3 server and a small echo server):

* ``direct``  -- the client connects straight to the server;
* ``ssh``     -- ``ssh -L`` through a throwaway sshd, default cipher;
* ``ssh-aes`` -- ``ssh -L -c aes128-gcm@openssh.com`` through its own throwaway sshd;
* ``jump``    -- ``jump open`` through a throwaway Jumpoint (``jumpoint serve``).

Metrics: single-stream throughput (both directions), aggregate throughput with 16 and 64
streams, 1-byte round-trip latency (median, p99), new connections per second, peak RSS of
the console side and the server side, and CPU seconds per GiB moved.  One Markdown table is
printed on stdout (rows = metrics, columns = paths, with the ratio to ``ssh -L``); the
results are also written as JSON to ``bench/results/<timestamp>.json``.  Progress goes to
stderr.  Everything is set up in a temporary directory and torn down at exit.

This is a benchmark, not a test: it never fails on slow numbers.  See bench/README.md.

Usage::

    python bench/run.py [--quick] [--paths direct,ssh,ssh-aes,jump] [--keep-temp]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

LOOPBACK = "127.0.0.1"
GIB = 1 << 30
CLK_TCK = os.sysconf("SC_CLK_TCK")
AES_CIPHER = "aes128-gcm@openssh.com"

PATH_KEYS = ("direct", "ssh", "ssh-aes", "jump")
PATH_TITLES = {
    "direct": "direct TCP",
    "ssh": "ssh -L (default cipher)",
    "ssh-aes": "ssh -L aes128-gcm",
    "jump": "jump open",
}
BASELINE = "ssh"
RSS_TARGET_MIB = 128.0

REPO_INSTALL = "pip install -e . (in this repository)"

# Tools each path needs: (executable, apt package that provides it).
TOOLS: dict[str, list[tuple[str, str]]] = {
    "common": [("iperf3", "iperf3")],
    "ssh": [
        ("sshd", "openssh-server"),
        ("ssh-keygen", "openssh-client"),
        ("ssh", "openssh-client"),
    ],
    "jump": [("jump", REPO_INSTALL), ("jumpoint", REPO_INSTALL)],
}

START_TIME = time.monotonic()


class BenchError(Exception):
    """A setup step or a measurement failed; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    """Sizes and durations of one run (full or ``--quick``)."""

    single_bytes: str  # iperf3 -n argument ("1G" = 1 GiB)
    parallel_seconds: int  # iperf3 -t for the -P 16 / -P 64 runs
    rtt_count: int  # sequential 1-byte round trips
    conn_seconds: float  # the connection-rate loop stops after this long ...
    conn_max: int  # ... or after this many connections
    iperf_timeout: float  # seconds before an iperf3 client run is abandoned


CONN_CLIENTS = 32  # clients of the parallel connection-rate row

FULL = Settings("1G", 5, 3000, 3.0, 1500, 300.0)
QUICK = Settings("256M", 2, 500, 1.0, 300, 120.0)


def log(message: str) -> None:
    """Print a progress line on stderr."""
    print(f"[bench {time.monotonic() - START_TIME:6.1f}s] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- /proc helpers


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name; index 0 is field 3 (state)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def start_time_of(pid: int) -> int | None:
    """The process's start time in clock ticks (to tell a reused PID apart), or None."""
    try:
        return int(_stat_fields(pid)[19])
    except (OSError, IndexError, ValueError):
        return None


def cpu_seconds(pids: Iterable[int]) -> float:
    """Sum of utime+stime of PIDS, in seconds (all threads included)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = _stat_fields(pid)
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def _status_kib(pid: int, key: str) -> int:
    """A ``kB`` value (VmHWM, VmRSS) from /proc/PID/status; 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def reset_hwm(pid: int) -> bool:
    """Reset VmHWM of PID to its current RSS (``echo 5 > clear_refs``); False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def descendants(root: int) -> list[int]:
    """PIDs of all descendants of ROOT, found by scanning the ppid of every /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            children.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return sorted(found)


def is_listening(port: int) -> bool:
    """True if some TCP socket listens on PORT (from /proc/net/tcp and tcp6; no connection)."""
    suffix = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 3 and fields[1].endswith(suffix) and fields[3] == "0A":
                    return True
    return False


def server_connections(port: int) -> int:
    """Sockets with local port PORT that a process still holds (not LISTEN/TIME_WAIT)."""
    suffix = f":{port:04X}"
    busy = {"01", "02", "03", "04", "05", "08", "09", "0B"}  # all but TIME_WAIT, CLOSE, LISTEN
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 3 and fields[1].endswith(suffix) and fields[3] in busy:
                    count += 1
    return count


def free_port() -> int:
    """A TCP port that is free on the loopback address right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- processes


class Processes:
    """Registry of the child processes of a run; ``stop_all`` ends them and their children."""

    def __init__(self, logdir: Path) -> None:
        """Write the children's output to files in LOGDIR."""
        self.logdir = logdir
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.exit_codes: dict[str, int | None] = {}

    def log_path(self, name: str, stream: str) -> Path:
        """Where the STREAM ("stdout"/"stderr") of the process NAME is written."""
        return self.logdir / f"{name}.{stream}.log"

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        stdout_pipe: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Start ARGV as NAME in its own session, output to log files (or stdout to a pipe)."""
        with contextlib.ExitStack() as files:
            stdout: IO[bytes] | int = subprocess.PIPE
            if not stdout_pipe:
                stdout = files.enter_context(open(self.log_path(name, "stdout"), "wb"))
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=files.enter_context(open(self.log_path(name, "stderr"), "wb")),
                env=env,
                start_new_session=True,
            )
        self._procs.append((name, proc))
        log(f"started {name} (pid {proc.pid}): {' '.join(argv)}")
        return proc

    def stderr_tail(self, name: str, lines: int = 15) -> str:
        """The last LINES lines of NAME's stderr log."""
        try:
            text = self.log_path(name, "stderr").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM PROC (then SIGKILL), and afterwards any descendants it left behind."""
        left = [(pid, start_time_of(pid)) for pid in descendants(proc.pid)]
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log(f"{name} (pid {proc.pid}) ignored SIGTERM; killing it")
                proc.kill()
                proc.wait(timeout=5)
        self.exit_codes[name] = proc.returncode
        for sig in (signal.SIGTERM, signal.SIGKILL):
            alive = [pid for pid, started in left if started and start_time_of(pid) == started]
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 3
            while alive and time.monotonic() < deadline:
                alive = [pid for pid, started in left if started and start_time_of(pid) == started]
                time.sleep(0.02)
            if not alive:
                break

    def stop_all(self) -> None:
        """End every started process, newest first."""
        while self._procs:
            name, proc = self._procs.pop()
            try:
                self.stop(name, proc)
            except Exception as exc:  # cleanup must go on
                log(f"could not stop {name} (pid {proc.pid}): {exc}")


def wait_until(
    check: Callable[[], bool],
    what: str,
    *,
    timeout: float = 20.0,
    procs: Sequence[tuple[str, subprocess.Popen[bytes]]] = (),
    registry: Processes | None = None,
) -> None:
    """Poll CHECK until true; fail after TIMEOUT or as soon as one of PROCS has exited."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        for name, proc in procs:
            if proc.poll() is not None:
                tail = registry.stderr_tail(name) if registry else ""
                raise BenchError(
                    f"{name} exited ({proc.returncode}) while waiting for {what}"
                    + (f"; its stderr ends with:\n{tail}" if tail else "")
                )
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


def which(name: str) -> str | None:
    """Path of executable NAME; the one next to this Python (not a pyenv shim) wins."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None and name == "sshd" and os.access("/usr/sbin/sshd", os.X_OK):
        return "/usr/sbin/sshd"
    return found


def check_tools(paths: Sequence[str]) -> dict[str, str]:
    """Locate the tools PATHS need; exit with the apt package names of missing ones."""
    needed = list(TOOLS["common"])
    if "ssh" in paths or "ssh-aes" in paths:
        needed += TOOLS["ssh"]
    if "jump" in paths:
        needed += TOOLS["jump"]
    found: dict[str, str] = {}
    missing: list[tuple[str, str]] = []
    for tool, package in needed:
        location = which(tool)
        if location is None:
            missing.append((tool, package))
        else:
            found[tool] = location
    if missing:
        lines = [f"  {tool:12} install: {package}" for tool, package in missing]
        apt = sorted({p for _, p in missing if " " not in p})
        hint = f"\n  e.g. apt-get install {' '.join(apt)}" if apt else ""
        sys.exit("bench: missing tools:\n" + "\n".join(lines) + hint)
    return found


# --------------------------------------------------------------------------- echo server


def serve_echo(port: int) -> None:
    """Echo server (run as a separate process): echoes every byte on every connection.

    selectors-based, single-threaded, TCP_NODELAY on each accepted socket.  Exits when its
    parent (the benchmark) goes away, so it is never left behind.
    """
    parent = os.getppid()
    sel = selectors.DefaultSelector()
    listener = socket.create_server((LOOPBACK, port), backlog=1024)
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ, None)
    while os.getppid() == parent:
        for key, _ in sel.select(timeout=1.0):
            if key.data is None:
                try:
                    conn, _ = listener.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ, "conn")
                continue
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(sock)
                sock.close()
                continue
            try:
                sent = sock.send(data)
                if sent < len(data):  # rare: finish this write blocking
                    sock.setblocking(True)
                    sock.sendall(data[sent:])
                    sock.setblocking(False)
            except OSError:
                sel.unregister(sock)
                sock.close()


def echo_once(port: int, timeout: float = 2.0) -> bool:
    """True if a 1-byte round trip to PORT works (used to check a tunnel end to end)."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(b"!")
            return sock.recv(1) == b"!"
    except OSError:
        return False


# --------------------------------------------------------------------------- measurements


def _recv_exactly_one(sock: socket.socket) -> None:
    """Receive the 1-byte echo, or raise if the peer closed."""
    if not sock.recv(1):
        raise BenchError("connection closed by the peer before the echo arrived")


def measure_rtt(port: int, count: int) -> dict[str, float]:
    """COUNT sequential 1-byte round trips over one TCP_NODELAY connection; times in µs."""
    samples: list[float] = []
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(max(20, count // 10)):  # warm-up, not recorded
            sock.sendall(b"x")
            _recv_exactly_one(sock)
        clock = time.perf_counter_ns
        for _ in range(count):
            start = clock()
            sock.sendall(b"x")
            _recv_exactly_one(sock)
            samples.append((clock() - start) / 1000)
    samples.sort()
    return {
        "count": count,
        "median_us": statistics.median(samples),
        "p99_us": samples[max(0, math.ceil(0.99 * len(samples)) - 1)],
        "mean_us": statistics.fmean(samples),
        "min_us": samples[0],
        "max_us": samples[-1],
    }


def measure_conn_rate(port: int, seconds: float, max_conns: int) -> dict[str, float]:
    """Open, send 1 byte, receive the echo, close -- sequentially, for SECONDS or MAX_CONNS."""
    count = 0
    start = time.perf_counter()
    elapsed = 0.0
    while count < max_conns and elapsed < seconds:
        with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(b"x")
            _recv_exactly_one(sock)
        count += 1
        elapsed = time.perf_counter() - start
    return {"connections": count, "seconds": elapsed, "per_second": count / elapsed}


def measure_conn_rate_parallel(
    port: int, clients: int, seconds: float, max_conns: int
) -> dict[str, float]:
    """CLIENTS threads, each doing the sequential loop of L{measure_conn_rate}, together.

    They stop after SECONDS or MAX_CONNS connections in all; a connection that fails is
    counted apart (and stops its thread), so a refusing tunnel shows as failures, not speed.
    """
    lock = threading.Lock()
    counts = {"connections": 0, "failures": 0}
    start_gate = threading.Event()
    deadline = [0.0]

    def client() -> None:
        start_gate.wait()
        while time.perf_counter() < deadline[0]:
            with lock:
                if counts["connections"] >= max_conns:
                    return
            try:
                with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sock.sendall(b"x")
                    _recv_exactly_one(sock)
            except OSError:
                with lock:
                    counts["failures"] += 1
                return
            with lock:
                counts["connections"] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start = time.perf_counter()
    deadline[0] = start + seconds
    start_gate.set()
    for thread in threads:
        thread.join(seconds + 30)
    elapsed = time.perf_counter() - start
    return {
        "clients": clients,
        "connections": counts["connections"],
        "failures": counts["failures"],
        "seconds": elapsed,
        "per_second": counts["connections"] / elapsed,
    }


def run_iperf(iperf3: str, port: int, extra: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run an iperf3 client against 127.0.0.1:PORT with -J; return its parsed JSON."""
    argv = [iperf3, "-c", LOOPBACK, "-p", str(port), "-J", *extra]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"iperf3 {' '.join(extra)} did not finish in {timeout:.0f}s") from exc
    try:
        data: dict[str, Any] = json.loads(done.stdout)
    except ValueError as exc:
        err = done.stderr.decode(errors="replace").strip()[-500:]
        raise BenchError(f"iperf3 exited {done.returncode} without JSON: {err}") from exc
    if "error" in data:
        raise BenchError(f"iperf3 {' '.join(extra)}: {data['error']}")
    return data


def iperf_summary(data: dict[str, Any]) -> dict[str, float]:
    """Receiver-side rate (MB/s, 10^6 bytes), bytes moved and duration of an iperf3 run."""
    received = data["end"]["sum_received"]
    per_stream = sorted(float(s["receiver"]["bytes"]) for s in data["end"].get("streams", []))
    return {
        "mb_per_s": received["bits_per_second"] / 8 / 1e6,
        "bytes": float(received["bytes"]),
        "seconds": float(received["seconds"]),
        "streams": float(len(per_stream)),
        "stream_bytes_min": per_stream[0] if per_stream else 0.0,
        "stream_bytes_median": statistics.median(per_stream) if per_stream else 0.0,
        "stream_bytes_max": per_stream[-1] if per_stream else 0.0,
        "streams_without_data": float(sum(1 for b in per_stream if b == 0)),
    }


class IperfServer:
    """``iperf3 -s`` on a free loopback port; restarted after a failed run."""

    def __init__(self, procs: Processes, iperf3: str) -> None:
        """Pick the port; call ``start`` to run the server."""
        self.procs = procs
        self.iperf3 = iperf3
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> None:
        """Start the server and wait until it listens."""
        self.proc = self.procs.start(
            "iperf3-server", [self.iperf3, "-s", "-B", LOOPBACK, "-p", str(self.port)]
        )
        wait_until(
            lambda: is_listening(self.port),
            f"iperf3 -s on port {self.port}",
            procs=[("iperf3-server", self.proc)],
            registry=self.procs,
        )

    def wait_idle(self, timeout: float = 15.0) -> None:
        """Wait until the previous test's connections to the server are gone.

        Through a tunnel the server side of a finished test closes a little after the
        client has exited; a new test started before that is refused as "busy".
        """
        deadline = time.monotonic() + timeout
        while server_connections(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def run(self, port: int, extra: Sequence[str], timeout: float) -> dict[str, Any]:
        """Run an iperf3 client through PORT once the server is idle; retry while busy."""
        for attempt in range(10):
            self.wait_idle()
            try:
                return run_iperf(self.iperf3, port, extra, timeout)
            except BenchError as exc:
                if "busy" not in str(exc) or attempt == 9:
                    raise
                log(f"  iperf3 server busy; retrying ({exc})")
                time.sleep(0.5)
        raise AssertionError("unreachable")

    def restart(self) -> None:
        """Stop and start the server again (a failed client can leave it stuck)."""
        if self.proc is not None:
            self.procs.stop("iperf3-server", self.proc)
        self.restarts += 1
        deadline = time.monotonic() + 10
        while is_listening(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.start()


# --------------------------------------------------------------------------- the four paths


def _no_pids() -> list[int]:
    """No process of its own (the direct path)."""
    return []


@dataclass
class BenchPath:
    """One way from the client to the servers, and the processes that carry it."""

    key: str
    title: str
    iperf_port: int
    echo_port: int
    console_pids: Callable[[], list[int]] = _no_pids
    server_pids: Callable[[], list[int]] = _no_pids
    info: dict[str, Any] = field(default_factory=dict)

    def all_pids(self) -> list[int]:
        """Console and server PIDs together."""
        return self.console_pids() + self.server_pids()


class SshKit:
    """Host and client keys shared by the throwaway sshds; one sshd per ssh path."""

    def __init__(self, procs: Processes, tmp: Path, tools: dict[str, str]) -> None:
        """Generate ed25519 host and client keys in TMP/ssh."""
        self.procs = procs
        self.tools = tools
        self.dir = tmp / "ssh"
        self.dir.mkdir(mode=0o700)
        for name in ("host_key", "client_key"):
            keygen = [tools["ssh-keygen"], "-q", "-t", "ed25519", "-N", "", "-C", f"bench-{name}"]
            keygen += ["-f", str(self.dir / name)]
            subprocess.run(keygen, check=True, stdin=subprocess.DEVNULL, capture_output=True)
        (self.dir / "authorized_keys").write_text((self.dir / "client_key.pub").read_text())
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory

    def start_sshd(self, name: str) -> tuple[int, subprocess.Popen[bytes], Path]:
        """Start ``sshd -D -e`` named NAME on a free port; return (port, process, config)."""
        port = free_port()
        config = self.dir / f"{name}_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    f"ListenAddress {LOOPBACK}",
                    f"HostKey {self.dir / 'host_key'}",
                    f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
                    f"PidFile {self.dir / (name + '.pid')}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "StrictModes no",
                    "PermitRootLogin yes",
                    "AllowTcpForwarding yes",
                    "UsePAM no",
                    "X11Forwarding no",
                    "PrintMotd no",
                    "MaxStartups 100",
                    "",
                ]
            )
        )
        proc = self.procs.start(name, [self.tools["sshd"], "-D", "-e", "-f", str(config)])
        wait_until(
            lambda: is_listening(port),
            f"{name} on port {port}",
            procs=[(name, proc)],
            registry=self.procs,
        )
        return port, proc, config

    def default_cipher(self, sshd_config: Path) -> str:
        """The cipher ssh negotiates by default: the client's first one the server offers."""
        client = subprocess.run(
            [self.tools["ssh"], "-G", "-F", "/dev/null", LOOPBACK],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        server = subprocess.run(
            [self.tools["sshd"], "-T", "-f", str(sshd_config)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout

        def ciphers(text: str) -> list[str]:
            for line in text.splitlines():
                if line.startswith("ciphers "):
                    return line.split(None, 1)[1].split(",")
            return []

        offered = set(ciphers(server))
        return next((c for c in ciphers(client) if c in offered), "unknown")

    def open_path(self, key: str, cipher: str | None, iperf_port: int, echo_port: int) -> BenchPath:
        """Start an sshd and an ``ssh -N -L`` client forwarding to the two servers."""
        sshd_port, sshd, config = self.start_sshd(f"sshd-{key}")
        local_iperf, local_echo = free_port(), free_port()
        options = (
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "ExitOnForwardFailure=yes",
            "BatchMode=yes",
            "IdentitiesOnly=yes",
            "LogLevel=ERROR",
        )
        argv = [self.tools["ssh"], "-N", "-F", "/dev/null"]
        for option in options:
            argv += ["-o", option]
        argv += ["-i", str(self.dir / "client_key"), "-p", str(sshd_port)]
        for local, remote in ((local_iperf, iperf_port), (local_echo, echo_port)):
            argv += ["-L", f"{LOOPBACK}:{local}:{LOOPBACK}:{remote}"]
        if cipher:
            argv += ["-c", cipher]
        argv.append(f"root@{LOOPBACK}")
        name = f"ssh-{key}" if key != "ssh" else "ssh"
        client = self.procs.start(name, argv)
        running = [(name, client), (f"sshd-{key}", sshd)]
        wait_until(
            lambda: is_listening(local_iperf) and echo_once(local_echo),
            f"ssh -L forwards of {name}",
            procs=running,
            registry=self.procs,
        )
        used = cipher or self.default_cipher(config)
        return BenchPath(
            key=key,
            title=PATH_TITLES[key] if cipher else f"ssh -L default ({used.split('@')[0]})",
            iperf_port=local_iperf,
            echo_port=local_echo,
            console_pids=lambda: [client.pid],
            server_pids=lambda: descendants(sshd.pid),
            info={
                "cipher": used,
                "ssh_pid": client.pid,
                "sshd_pid": sshd.pid,
                "sshd_port": sshd_port,
            },
        )


class JumpMonitor:
    """Reads ``jump open --json`` stdout in a thread so the pipe never fills."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        """Start reading PROC's stdout."""
        self.proc = proc
        self.ready: dict[str, Any] | None = None
        self.last_stats: dict[str, Any] | None = None
        self.events: list[dict[str, Any]] = []
        self.other_lines: list[str] = []
        self.stats_lines = 0
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._read, name="jump-stdout", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        """Parse each JSON line; keep the ready event, the last stats and other events."""
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                self.other_lines.append(line)
                continue
            event = obj.get("event") if isinstance(obj, dict) else None
            if event == "ready":
                self.ready = obj
            elif event == "stats":
                self.last_stats = obj
                self.stats_lines += 1
            else:
                self.events.append(obj)
            self._first.set()
        self._first.set()

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        """The ``ready`` event (the first stdout line); raise if something else came first."""
        if not self._first.wait(timeout):
            raise BenchError(f"jump open printed nothing in {timeout:.0f}s")
        if self.ready is None:
            raise BenchError(
                f"jump open did not report ready: events {self.events}, "
                f"other output {self.other_lines[-5:]}"
            )
        return self.ready

    def join(self, timeout: float = 5.0) -> None:
        """Wait for stdout to close (after the process has been stopped)."""
        self._thread.join(timeout)


def open_jump_path(
    procs: Processes, tmp: Path, tools: dict[str, str], iperf_port: int, echo_port: int
) -> tuple[BenchPath, JumpMonitor]:
    """Init a Jumpoint with one item for the two servers, enroll a console, ``jump open``."""
    home = tmp / "jump"
    home.mkdir(mode=0o700)
    config = home / "jumpoint.yaml"
    listen = free_port()

    def cli(*argv: str, env: dict[str, str] | None = None) -> None:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if done.returncode != 0:
            raise BenchError(
                f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
            )

    cli(
        tools["jumpoint"],
        "init",
        "--dir",
        str(home),
        "--name",
        "bench",
        "--listen",
        f"{LOOPBACK}:{listen}",
        "--address",
        LOOPBACK,
    )
    lines = config.read_text().rstrip("\n").split("\n")
    if lines[-1].strip() != "items: []":
        raise BenchError(f"unexpected {config}: last line is {lines[-1]!r}, not 'items: []'")
    lines[-1:] = [
        # loopback is a target only when allowed_targets lists it explicitly
        "allowed_targets:",
        f"  - {LOOPBACK}:{iperf_port}",
        f"  - {LOOPBACK}:{echo_port}",
        "items:",
        "  - name: bench",
        "    type: tcp",
        f"    host: {LOOPBACK}",
        f"    local_address: {LOOPBACK}",
        "    tunnels:",
        f"      - {{local_port: auto, remote_port: {iperf_port}}}",
        f"      - {{local_port: auto, remote_port: {echo_port}}}",
    ]
    config.write_text("\n".join(lines) + "\n")
    cli(tools["jumpoint"], "check-config", "--config", str(config))
    enrollment = home / "bench.enroll"
    cli(
        tools["jumpoint"],
        "user",
        "add",
        "bench",
        "--group",
        "default",
        "--out",
        str(enrollment),
        "--config",
        str(config),
    )
    server = procs.start("jumpoint", [tools["jumpoint"], "serve", "--config", str(config)])
    wait_until(
        lambda: is_listening(listen),
        f"jumpoint serve on port {listen}",
        procs=[("jumpoint", server)],
        registry=procs,
    )
    # enrollment is online (a one-time token redeemed over jumpoint-enroll/1): the
    # Jumpoint must be serving before `jump enroll`
    env = dict(os.environ, JUMP_HOME=str(home / "home"))
    cli(tools["jump"], "enroll", "--delete", str(enrollment), env=env)
    console = procs.start(
        "jump", [tools["jump"], "open", "bench", "--json"], env=env, stdout_pipe=True
    )
    monitor = JumpMonitor(console)
    ready = monitor.wait_ready(30)
    ports = {t["remote_port"]: t["local_port"] for t in ready.get("tunnels", [])}
    if iperf_port not in ports or echo_port not in ports:
        raise BenchError(f"jump open's ready event lacks the tunnels: {ready}")
    wait_until(
        lambda: echo_once(ports[echo_port]),
        "an echo through jump open",
        procs=[("jump", console), ("jumpoint", server)],
        registry=procs,
    )
    path = BenchPath(
        key="jump",
        title=PATH_TITLES["jump"],
        iperf_port=ports[iperf_port],
        echo_port=ports[echo_port],
        console_pids=lambda: [console.pid],
        server_pids=lambda: [server.pid],
        info={
            "jump_pid": console.pid,
            "jumpoint_pid": server.pid,
            "jumpoint_port": listen,
            "session": ready.get("session"),
        },
    )
    return path, monitor


# --------------------------------------------------------------------------- the run


class RssTracker:
    """Peak RSS per process over the whole run, surviving VmHWM resets."""

    def __init__(self) -> None:
        """Nothing seen yet."""
        self.peak_kib: dict[int, int] = {}
        self.reset_ok = True

    def sample(self, pids: Iterable[int]) -> None:
        """Fold the current VmHWM of PIDS into the run's peaks."""
        for pid in pids:
            self.peak_kib[pid] = max(self.peak_kib.get(pid, 0), _status_kib(pid, "VmHWM"))

    def reset(self, pids: Iterable[int]) -> None:
        """Sample, then reset VmHWM so the next reading covers only what follows."""
        pids = list(pids)
        self.sample(pids)
        for pid in pids:
            self.reset_ok &= reset_hwm(pid)

    def peak_mib(self, pids: Iterable[int]) -> float | None:
        """Sum of the run's peaks of PIDS in MiB; None if PIDS is empty."""
        pids = list(pids)
        self.sample(pids)
        return sum(self.peak_kib.get(p, 0) for p in pids) / 1024 if pids else None


@dataclass
class Run:
    """Everything a run measured, path by path."""

    settings: Settings
    paths: list[BenchPath]
    tools: dict[str, str]
    iperf: IperfServer
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    rss: RssTracker = field(default_factory=RssTracker)

    def phase(self, name: str, action: Callable[[BenchPath], None], *, iperf: bool) -> None:
        """Run ACTION on every path; record a failure and go on with the next path."""
        for path in self.paths:
            log(f"{name}: {path.title}")
            try:
                action(path)
            except (BenchError, OSError, KeyError, ValueError) as exc:
                message = f"{type(exc).__name__}: {exc}"
                log(f"{name}: {path.title} FAILED: {message}")
                self.errors.setdefault(path.key, {})[name] = message
                if iperf:
                    self.iperf.restart()

    def put(self, path: BenchPath, **values: float | None) -> None:
        """Record table metrics of PATH."""
        self.metrics.setdefault(path.key, {}).update(values)

    def detail(self, path: BenchPath, name: str, value: Any) -> None:
        """Record extra data of PATH (JSON only)."""
        self.details.setdefault(path.key, {})[name] = value

    def rtt(self, path: BenchPath) -> None:
        """1-byte round-trip latency."""
        result = measure_rtt(path.echo_port, self.settings.rtt_count)
        self.put(path, rtt_median_us=result["median_us"], rtt_p99_us=result["p99_us"])
        self.detail(path, "rtt", result)
        log(f"  median {result['median_us']:.1f} µs, p99 {result['p99_us']:.1f} µs")

    def conn_rate(self, path: BenchPath) -> None:
        """New connections per second."""
        result = measure_conn_rate(
            path.echo_port, self.settings.conn_seconds, self.settings.conn_max
        )
        self.put(path, conn_per_s=result["per_second"])
        self.detail(path, "connections", result)
        log(f"  {result['per_second']:.0f} connections/s ({result['connections']:.0f})")

    def conn_rate_parallel(self, path: BenchPath) -> None:
        """New connections per second from CONN_CLIENTS clients at once."""
        result = measure_conn_rate_parallel(
            path.echo_port,
            CONN_CLIENTS,
            self.settings.conn_seconds,
            self.settings.conn_max * 4,
        )
        if result["failures"]:
            raise BenchError(
                f"{result['failures']:.0f} of the parallel connections failed "
                f"({result['connections']:.0f} succeeded)"
            )
        self.put(path, conn_parallel_per_s=result["per_second"])
        self.detail(path, "connections_parallel", result)
        log(
            f"  {result['per_second']:.0f} connections/s with {CONN_CLIENTS} clients "
            f"({result['connections']:.0f})"
        )

    def single(self, path: BenchPath, reverse: bool) -> None:
        """One stream moving the single-stream size; CPU of each side around it."""
        console, server = path.console_pids(), path.server_pids()
        self.iperf.wait_idle()
        before = cpu_seconds(console), cpu_seconds(server)
        extra = ["-n", self.settings.single_bytes] + (["-R"] if reverse else [])
        data = self.iperf.run(path.iperf_port, extra, self.settings.iperf_timeout)
        after = cpu_seconds(console), cpu_seconds(server)
        summary = iperf_summary(data)
        gib = float(data["end"]["sum_sent"]["bytes"]) / GIB
        cpu_console = (after[0] - before[0]) / gib if console else None
        cpu_server = (after[1] - before[1]) / gib if server else None
        name = "down" if reverse else "up"
        self.put(path, **{f"single_{name}_mbps": summary["mb_per_s"]})
        if not reverse:
            self.put(path, cpu_console_s_per_gib=cpu_console, cpu_server_s_per_gib=cpu_server)
        self.detail(
            path,
            f"single_{name}",
            dict(
                summary,
                gib_sent=gib,
                cpu_console_s_per_gib=cpu_console,
                cpu_server_s_per_gib=cpu_server,
            ),
        )
        cpu = (
            ""
            if cpu_console is None
            else (f", CPU console {cpu_console:.2f} s/GiB, server {cpu_server:.2f} s/GiB")
        )
        log(f"  {summary['mb_per_s']:.0f} MB/s{cpu}")

    def parallel(self, path: BenchPath, streams: int) -> None:
        """STREAMS parallel streams for a few seconds; at 64 also the RSS peak during them."""
        if streams == 64:
            self.iperf.wait_idle()
            self.rss.reset(path.all_pids())
        data = self.iperf.run(
            path.iperf_port,
            ["-P", str(streams), "-t", str(self.settings.parallel_seconds)],
            self.settings.iperf_timeout,
        )
        summary = iperf_summary(data)
        fair_share = summary["bytes"] / max(1.0, summary["streams"])
        self.put(
            path,
            **{
                f"p{streams}_mbps": summary["mb_per_s"],
                f"p{streams}_min_share_pct": 100 * summary["stream_bytes_min"] / fair_share
                if fair_share
                else None,
            },
        )
        self.detail(path, f"parallel_{streams}", summary)
        line = (
            f"  {summary['mb_per_s']:.0f} MB/s; per stream min/median/max "
            f"{summary['stream_bytes_min'] / 1e6:.1f}/{summary['stream_bytes_median'] / 1e6:.1f}/"
            f"{summary['stream_bytes_max'] / 1e6:.1f} MB, "
            f"{summary['streams_without_data']:.0f} streams moved nothing"
        )
        if streams == 64 and path.all_pids():
            console = sum(_status_kib(p, "VmHWM") for p in path.console_pids()) / 1024
            server = sum(_status_kib(p, "VmHWM") for p in path.server_pids()) / 1024
            self.rss.sample(path.all_pids())
            self.put(path, rss_sum_64_mib=console + server)
            self.detail(
                path,
                "rss_at_64_streams_mib",
                {"console": console, "server": server, "exact": self.rss.reset_ok},
            )
            line += f", RSS console {console:.1f} MiB + server {server:.1f} MiB"
        log(line)

    def execute(self) -> None:
        """All phases, metric by metric (each metric runs on every path in turn)."""
        for path in self.paths:
            self.rss.sample(path.all_pids())
        self.phase("1-byte RTT", self.rtt, iperf=False)
        self.phase("connections/s", self.conn_rate, iperf=False)
        self.phase(f"connections/s, {CONN_CLIENTS} clients", self.conn_rate_parallel, iperf=False)
        self.phase("single stream client→server", lambda p: self.single(p, False), iperf=True)
        self.phase("single stream server→client", lambda p: self.single(p, True), iperf=True)
        self.phase("16 streams", lambda p: self.parallel(p, 16), iperf=True)
        self.phase("64 streams", lambda p: self.parallel(p, 64), iperf=True)
        for path in self.paths:
            self.put(
                path,
                rss_console_mib=self.rss.peak_mib(path.console_pids()),
                rss_server_mib=self.rss.peak_mib(path.server_pids()),
            )


# --------------------------------------------------------------------------- reporting


def _fmt_rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def _fmt_1(v: float) -> str:
    return f"{v:,.1f}"


def _fmt_2(v: float) -> str:
    return f"{v:.2f}"


def table_rows(settings: Settings) -> list[tuple[str, str, Callable[[float], str]]]:
    """(metric key, row label, formatter) of the table, in order."""
    size = (
        "1 GiB"
        if settings.single_bytes == "1G"
        else settings.single_bytes.replace("M", " MiB").replace("G", " GiB")
    )
    secs = settings.parallel_seconds
    return [
        ("single_up_mbps", f"single stream {size}, client→server (MB/s)", _fmt_rate),
        ("single_down_mbps", f"single stream {size}, server→client (MB/s)", _fmt_rate),
        ("p16_mbps", f"16 streams, {secs} s, aggregate (MB/s)", _fmt_rate),
        ("p64_mbps", f"64 streams, {secs} s, aggregate (MB/s)", _fmt_rate),
        ("p16_min_share_pct", "16 streams: slowest stream, % of an equal share", _fmt_1),
        ("p64_min_share_pct", "64 streams: slowest stream, % of an equal share", _fmt_1),
        ("rtt_median_us", "1-byte RTT, median (µs)", _fmt_1),
        ("rtt_p99_us", "1-byte RTT, p99 (µs)", _fmt_1),
        ("conn_per_s", "new connections/s (connect, 1-byte echo, close)", _fmt_rate),
        (
            "conn_parallel_per_s",
            f"new connections/s, {CONN_CLIENTS} clients at once",
            _fmt_rate,
        ),
        ("rss_console_mib", "peak RSS, console side (MiB)", _fmt_1),
        ("rss_server_mib", "peak RSS, server side (MiB)", _fmt_1),
        ("rss_sum_64_mib", "peak RSS console+server at 64 streams (MiB)", _fmt_1),
        ("cpu_console_s_per_gib", "CPU console side, single stream (s/GiB)", _fmt_2),
        ("cpu_server_s_per_gib", "CPU server side, single stream (s/GiB)", _fmt_2),
    ]


def render_table(run: Run) -> str:
    """The Markdown table: rows = metrics, columns = paths, ratio to ssh -L as a suffix."""
    keys = [p.key for p in run.paths]
    titles = [p.title + (" = 1x" if p.key == BASELINE else "") for p in run.paths]
    lines = ["| metric | " + " | ".join(titles) + " |", "|---|" + "---:|" * len(keys)]
    for metric, label, fmt in table_rows(run.settings):
        base = run.metrics.get(BASELINE, {}).get(metric)
        cells = []
        for key in keys:
            value = run.metrics.get(key, {}).get(metric)
            if value is None:
                failed = any(run.errors.get(key, {}))
                cells.append("error" if failed and metric not in _UNMEASURED.get(key, ()) else "—")
                continue
            cell = fmt(value)
            if key != BASELINE and base:
                cell += f" ({value / base:.2f}x)"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Metrics a path has no value for by design (no processes of its own).
_UNMEASURED: dict[str, tuple[str, ...]] = {
    "direct": (
        "rss_console_mib",
        "rss_server_mib",
        "rss_sum_64_mib",
        "cpu_console_s_per_gib",
        "cpu_server_s_per_gib",
    ),
}


# Output of the product's processes worth keeping (jump's stdout is the JSON pipe).
PRODUCT_LOGS = (("jumpoint", "stdout"), ("jumpoint", "stderr"), ("jump", "stderr"))
# A Twisted log line: "2026-01-01T00:00:00+0000 [namespace#level] message".
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\S+ \[[^\]#]*(?:#(?P<level>\w+))?\] (?P<message>.*)$")
# "... connection 7 to 127.0.0.1:5201 closed (aborted: ...)" -> "aborted"
CLOSE_REASON = re.compile(r" connection \d+ to \S+ closed \((?P<reason>[^:)]+)")


def scan_product_logs(
    procs: Processes, monitor: JumpMonitor | None
) -> tuple[list[str], dict[str, int]]:
    """Problems in jump/jumpoint output, and a count of Jumpoint's connection close reasons.

    Problems: Jumpoint log lines at level warn/error/critical, lines that are not log lines
    (tracebacks), anything jump wrote on stderr (it only logs warnings and errors), jump
    events other than the final ``closed``, and refused/failed tunnel connections.
    """
    found: list[str] = []
    reasons: dict[str, int] = {}
    for name, stream in PRODUCT_LOGS:
        try:
            text = procs.log_path(name, stream).read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            match = LOG_LINE.match(line)
            if match is None or name == "jump":
                found.append(f"{name} {stream}: {line}")
                continue
            if match["level"] in ("warn", "error", "critical") or "Unhandled" in line:
                found.append(f"{name} {stream}: {line}")
            closed = CLOSE_REASON.search(match["message"])
            if closed:
                reasons[closed["reason"]] = reasons.get(closed["reason"], 0) + 1
    if monitor is not None:
        found += [f"jump stdout (not JSON): {line}" for line in monitor.other_lines]
        for event in monitor.events:
            if event.get("event") != "closed" or event.get("code") != "terminated":
                found.append(f"jump event: {json.dumps(event)}")
        stats = monitor.last_stats or {}
        for tunnel in stats.get("tunnels", []):
            if (
                tunnel.get("refused_connections")
                or tunnel.get("failed_connections")
                or tunnel.get("last_error")
            ):
                found.append(
                    f"jump stats: tunnel {tunnel.get('remote_port')}: refused "
                    f"{tunnel.get('refused_connections')}, failed "
                    f"{tunnel.get('failed_connections')}, last_error "
                    f"{tunnel.get('last_error')!r}"
                )
    return found, reasons


def tool_versions(tools: dict[str, str]) -> dict[str, str]:
    """First line of ``--version`` (``-V`` for ssh) of each tool used."""
    versions: dict[str, str] = {}
    for tool, location in tools.items():
        if tool in ("ssh-keygen", "sshd"):
            continue
        flag = "-V" if tool == "ssh" else "--version"
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(
                [location, flag], capture_output=True, text=True, timeout=20, check=False
            )
            out = (done.stdout or done.stderr).strip().splitlines()
            versions[tool] = out[0] if out else ""
    return versions


def host_facts() -> dict[str, Any]:
    """The machine the run was on (its load at the end: other work skews the numbers)."""
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_at_end": os.getloadavg(),
    }


def git_state() -> dict[str, Any]:
    """Commit and dirtiness of the repository (the product may be edited concurrently)."""

    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO_DIR), *argv], capture_output=True, text=True, check=False
        ).stdout.strip()

    with contextlib.suppress(OSError):
        return {
            "commit": git("rev-parse", "HEAD"),
            "modified_files": git("status", "--porcelain").splitlines(),
        }
    return {}


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description="Loopback benchmark: direct TCP, ssh -L (two ciphers) and jump open."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes (256 MiB single stream, 2 s parallel runs, "
        "500 round trips): a smoke run of about a minute",
    )
    parser.add_argument(
        "--paths",
        default=",".join(PATH_KEYS),
        help=f"comma-separated subset of {','.join(PATH_KEYS)} (default: all)",
    )
    parser.add_argument(
        "--keep-temp",
        action="store_true",
        help="keep the temporary directory (configs, keys, logs)",
    )
    parser.add_argument("--echo-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    keys = [k.strip() for k in args.paths.split(",") if k.strip()]
    unknown = [k for k in keys if k not in PATH_KEYS]
    if unknown or not keys:
        parser.error(f"--paths: unknown {unknown}; choose from {','.join(PATH_KEYS)}")
    args.path_keys = [k for k in PATH_KEYS if k in keys]
    return args


def _terminate(signum: int, _frame: object) -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so the cleanup runs."""
    raise SystemExit(128 + signum)


def setup_paths(
    keys: Sequence[str],
    procs: Processes,
    tmp: Path,
    tools: dict[str, str],
    iperf_port: int,
    echo_port: int,
    setup_errors: dict[str, str],
) -> tuple[list[BenchPath], JumpMonitor | None]:
    """Set up the paths KEYS; one that fails is left out, its error put in SETUP_ERRORS."""
    paths: list[BenchPath] = []
    monitor: JumpMonitor | None = None
    kit: SshKit | None = None
    for key in keys:
        try:
            if key == "direct":
                paths.append(BenchPath(key, PATH_TITLES[key], iperf_port, echo_port))
            elif key in ("ssh", "ssh-aes"):
                kit = kit or SshKit(procs, tmp, tools)
                cipher = AES_CIPHER if key == "ssh-aes" else None
                paths.append(kit.open_path(key, cipher, iperf_port, echo_port))
            elif key == "jump":
                path, monitor = open_jump_path(procs, tmp, tools, iperf_port, echo_port)
                paths.append(path)
        except (BenchError, OSError, subprocess.CalledProcessError) as exc:
            log(f"setup of {PATH_TITLES[key]} FAILED, leaving it out: {exc}")
            setup_errors[key] = str(exc)
    for path in paths:
        log(f"ready: {path.title}: iperf3 via port {path.iperf_port}, echo via {path.echo_port}")
    return paths, monitor


def write_results(
    run: Run,
    stamp: str,
    procs: Processes,
    monitor: JumpMonitor | None,
    setup_errors: dict[str, str],
    problems: list[str],
    close_reasons: dict[str, int],
) -> Path:
    """Write the run as JSON to bench/results/STAMP.json; return its path."""
    jump_rss = run.metrics.get("jump", {}).get("rss_sum_64_mib")
    result = {
        "timestamp": stamp,
        "settings": run.settings.__dict__,
        "host": host_facts(),
        "git": git_state(),
        "tools": tool_versions(run.tools),
        "baseline": BASELINE,
        "paths": {
            p.key: {
                "title": p.title,
                "info": p.info,
                "metrics": run.metrics.get(p.key, {}),
                "details": run.details.get(p.key, {}),
                "errors": run.errors.get(p.key, {}),
            }
            for p in run.paths
        },
        "setup_errors": setup_errors,
        "rss_target_mib": RSS_TARGET_MIB,
        "jump_rss_target_met": None if jump_rss is None else jump_rss < RSS_TARGET_MIB,
        "rss_at_64_streams_exact": run.rss.reset_ok,
        "iperf3_server_restarts": run.iperf.restarts,
        "exit_codes": procs.exit_codes,
        "jump_last_stats": monitor.last_stats if monitor else None,
        "jump_events": monitor.events if monitor else [],
        "product_problems": problems,
        "jumpoint_connection_close_reasons": close_reasons,
        "table_markdown": render_table(run),
    }
    out = RESULTS_DIR / f"{stamp}.json"
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return out


def print_report(run: Run, setup_errors: dict[str, str]) -> None:
    """The table and its footnotes, on stdout."""
    print(render_table(run))
    jump_rss = run.metrics.get("jump", {}).get("rss_sum_64_mib")
    if jump_rss is not None:
        met = "met" if jump_rss < RSS_TARGET_MIB else "NOT met"
        print(
            f"\njump: console+Jumpoint RSS at 64 streams {jump_rss:.1f} MiB "
            f"(target < {RSS_TARGET_MIB:.0f} MiB: {met})"
        )
    for key, errs in run.errors.items():
        for phase, message in errs.items():
            print(f"\nfailed: {PATH_TITLES[key]}, {phase}: {message}")
    for key, message in setup_errors.items():
        print(f"\nnot measured: {PATH_TITLES[key]}: setup failed: {message}")


def benchmark(args: argparse.Namespace) -> int:
    """Set up the selected paths, measure, print the table, write the JSON."""
    settings = QUICK if args.quick else FULL
    tools = check_tools(args.path_keys)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tmp = Path(tempfile.mkdtemp(prefix="jumpoint-bench-"))
    (tmp / "logs").mkdir()
    procs = Processes(tmp / "logs")
    monitor: JumpMonitor | None = None
    run: Run | None = None
    setup_errors: dict[str, str] = {}
    try:
        mode = "quick" if args.quick else "full"
        log(f"temporary directory {tmp}; paths {','.join(args.path_keys)}; {mode} run")
        iperf = IperfServer(procs, tools["iperf3"])
        iperf.start()
        echo_port = free_port()
        echo = procs.start(
            "echo-server",
            [sys.executable, str(Path(__file__).resolve()), "--echo-server", str(echo_port)],
        )
        wait_until(
            lambda: is_listening(echo_port),
            f"echo server on port {echo_port}",
            procs=[("echo-server", echo)],
            registry=procs,
        )
        paths, monitor = setup_paths(
            args.path_keys, procs, tmp, tools, iperf.port, echo_port, setup_errors
        )
        if paths:
            run = Run(settings, paths, tools, iperf)
            run.execute()
    except BenchError as exc:
        log(f"setup failed: {exc}")
    finally:
        log("stopping all processes")
        procs.stop_all()
        if monitor is not None:
            monitor.join()
        problems, close_reasons = scan_product_logs(procs, monitor)
        RESULTS_DIR.mkdir(exist_ok=True)
        for name, stream in PRODUCT_LOGS:
            with contextlib.suppress(OSError):
                target = RESULTS_DIR / f"{stamp}.{name}.{stream}.log"
                shutil.copy(procs.log_path(name, stream), target)
        if args.keep_temp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    for line in problems[:40]:
        log(f"product output: {line}")
    if len(problems) > 40:
        log(f"... and {len(problems) - 40} more lines")
    if close_reasons:
        log(f"Jumpoint's connection close reasons: {close_reasons}")
    if run is None:
        return 1
    out = write_results(run, stamp, procs, monitor, setup_errors, problems, close_reasons)
    log(f"results written to {out}")
    print_report(run, setup_errors)
    return 1 if setup_errors else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: the benchmark, or the echo server when run with --echo-server."""
    args = parse_args(argv)
    if args.echo_server is not None:
        serve_echo(args.echo_server)
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    try:
        return benchmark(args)
    except KeyboardInterrupt:  # the cleanup in benchmark() has run
        log("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
