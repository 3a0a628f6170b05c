#!/usr/bin/env python3
"""Cluster benchmark: session opening rate per member (SQLite, PostgreSQL), revocation
propagation between members, failover time after kill -9.

Everything is real processes on loopback: `jumpoint serve` members, a throwaway
PostgreSQL server (tests/postgres_server.py, started and stopped here, with its
durability settings on: fsync and synchronous_commit as in production), `jump open`
and a small wire client (this script with C{--client ...}) that speaks the
console's channel classes.

* **sessions/s** -- one channel per member, N sequential C{open_session} +
  C{close_session} round trips on a tcp item: the Jumpoint's whole session path
  (policy decision, session row, C{session_opened} audit committed before the
  reply, then the close and its audit).  Once on SQLite, once on PostgreSQL, once
  with two members on one PostgreSQL at the same time (per member and together).
* **revocation** -- members A and B on one PostgreSQL; a session of a fresh user
  held through A; C{jumpoint user revoke} run with B's configuration; time from the
  revocation's commit (PostgreSQL's commit timestamp of the users row) to the wire client's
  receipt of the end of its session on A.
* **failover** -- C{jump open} with profile addresses [A, B]; A killed with SIGKILL;
  time until a new local connection through the same listener echoes a byte.  If
  B cannot resume the session (it ends), that is reported; the same is measured
  with A started again in place (what a lone Jumpoint gives).

Prints one Markdown table (medians, p99 where repeats allow) and writes every
number to C{bench/results/cluster-<timestamp>.json}.  A benchmark, not a test: it
never fails on slow numbers.  See bench/README.md.

Usage::

    python bench/cluster.py [--quick] [--sessions N] [--revocations N] [--failovers N]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
sys.path.insert(0, str(REPO_DIR))

import yaml  # noqa: E402

from bench.run import git_state, host_facts  # noqa: E402
from tests.e2e.harness import (  # noqa: E402
    Deployment,
    Process,
    free_port,
    tcp_item,
    tunnel_address,
    wait_until,
)
from tests.e2e.servers import EchoServer  # noqa: E402
from tests.postgres_server import PostgresServer  # noqa: E402

KEEPALIVE = {"keepalive_interval": "1s", "keepalive_timeout": "3s"}
"""The members' keepalive limits (the failover's dead-link detection uses them)."""


def log(message: str) -> None:
    print(f"[cluster-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Settings:
    sessions: int
    session_repeats: int
    revocations: int
    failovers: int


FULL = Settings(sessions=200, session_repeats=3, revocations=20, failovers=5)
QUICK = Settings(sessions=10, session_repeats=1, revocations=5, failovers=1)


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (p99 of fewer than 100 values is their maximum)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * share // 100))
    return ordered[int(rank) - 1]


# --------------------------------------------------------------------------- the wire client


async def _open_loop(reactor: Any, item: str, count: int) -> int:
    """COUNT sequential open_session + close_session on one channel; print their seconds."""
    from console.channel import connect
    from console.profiles import load_profile
    from shared.protocol import control

    channel = await connect(reactor, load_profile(None))
    times: list[float] = []
    started = time.perf_counter()
    for _ in range(count):
        begin = time.perf_counter()
        await channel.request(control.OPEN_SESSION, item=item)
        await channel.request(control.CLOSE_SESSION, reason="bench")
        times.append(time.perf_counter() - begin)
    total = time.perf_counter() - started
    print(json.dumps({"event": "done", "seconds": total, "round_trips": times}), flush=True)
    await channel.close_and_wait(reactor)
    return 0


async def _hold(reactor: Any, item: str) -> int:
    """Open one session, print 'opened', then print the wall time its end reaches us."""
    from console.channel import connect
    from console.profiles import load_profile
    from shared.protocol import control

    channel = await connect(reactor, load_profile(None))
    opened = await channel.request(control.OPEN_SESSION, item=item)
    print(json.dumps({"event": "opened", "session": opened["session"]}), flush=True)
    mux = channel.mux
    assert mux is not None
    original = channel.control_received

    def watching(message: dict[str, Any]) -> None:
        if message.get("type") == control.SESSION_CLOSED:
            print(json.dumps({"event": "ended", "at": time.time(), "how": "session_closed",
                              "code": message.get("code")}), flush=True)  # fmt: skip
        original(message)

    channel.control_received = watching  # type: ignore[method-assign]
    lost = await channel.lost
    print(json.dumps({"event": "lost", "at": time.time(), "reason": lost.message}), flush=True)
    return 0


def client_main(args: list[str]) -> int:
    from console.remote import run_reactor

    if args[0] == "open-loop":
        return run_reactor(lambda reactor: _open_loop(reactor, args[1], int(args[2])))
    return run_reactor(lambda reactor: _hold(reactor, args[1]))


# --------------------------------------------------------------------------- members


def cluster_support() -> bool:
    """Whether this Jumpoint knows the C{cluster:} section (the members track)."""
    return importlib.util.find_spec("jumpoint.cluster_settings") is not None


@dataclass
class Member:
    """One `jumpoint serve` process's directory and process."""

    name: str
    deployment: Deployment
    process: Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.deployment.port}"

    def serve(self) -> Process:
        self.process = self.deployment.serve()
        return self.process

    def kill(self) -> None:
        assert self.process is not None
        self.process.signal(signal.SIGKILL)
        self.process.wait()


def _set_config(deployment: Deployment, edit: Any) -> None:
    document = yaml.safe_load(deployment.config.read_text())
    edit(document)
    deployment.config.write_text(yaml.safe_dump(document, sort_keys=False))


def first_member(root: Path, dsn: str | None, items: list[dict[str, Any]]) -> Member:
    deployment = Deployment(root / "a", items=items, postgres_dsn=dsn, user="bench")
    deployment.sections = {"limits": dict(KEEPALIVE)}
    deployment.create()
    if cluster_support():
        _set_config(deployment, lambda d: d.__setitem__("cluster", {"member": "a"}))
    return Member("a", deployment)


def further_member(first: Member, name: str) -> Member:
    """A copy of the first member's directory (same CA and server key) on its own port."""
    source = first.deployment
    deployment = Deployment(source.root.parent / name, items=source.items, user=source.user)
    shutil.copytree(source.directory, deployment.directory)
    deployment.port = free_port()
    deployment.postgres_dsn = source.postgres_dsn

    def edit(document: dict[str, Any]) -> None:
        document["jumpoint"]["listen"] = f"127.0.0.1:{deployment.port}"
        if cluster_support():
            document["cluster"] = {"member": name, "advertise": f"127.0.0.1:{deployment.port}"}

    _set_config(deployment, edit)
    return Member(name, deployment)


def point_profile(home: Path, addresses: list[str]) -> None:
    """The console profile of HOME dials ADDRESSES in order."""
    (path,) = home.glob("profiles/*/profile.yaml")
    document = yaml.safe_load(path.read_text())
    document["addresses"] = addresses
    if "address" in document:
        document["address"] = addresses[0]
    path.write_text(yaml.safe_dump(document))


def client(member: Member, home: Path, *args: str) -> Process:
    env = member.deployment.env(JUMP_HOME=str(home))
    return Process([sys.executable, str(Path(__file__).resolve()), "--client", *args], env)


def add_user(member: Member, name: str) -> Path:
    home = member.deployment.root / f"home-{name}"
    member.deployment.add_user(name, home=home)
    point_profile(home, [member.address])
    return home


# --------------------------------------------------------------------------- 1. sessions/s


def open_rate(members: list[Member], homes: list[Path], count: int) -> list[dict[str, Any]]:
    """One open-loop client per member at the same time; sessions/s of each."""
    clients = [
        client(m, h, "open-loop", "bench", str(count)) for m, h in zip(members, homes, strict=True)
    ]
    results = []
    for process in clients:
        done = process.wait_for_event("done", timeout=600)
        process.wait()
        trips = done["round_trips"]
        results.append({
            "sessions_per_s": count / done["seconds"],
            "median_ms": statistics.median(trips) * 1000,
            "p99_ms": percentile(trips, 99) * 1000,
        })  # fmt: skip
    return results


def bench_rate(root: Path, pg: PostgresServer, settings: Settings, out: dict[str, Any]) -> None:
    items = [tcp_item("bench", 9)]
    setups: list[tuple[str, str | None, int]] = [
        ("sqlite", None, 1),
        ("postgresql", pg.new_database("rate"), 1),
        ("postgresql-2", pg.new_database("rate2"), 2),
    ]
    for key, dsn, count in setups:
        log(f"sessions/s: {key}")
        a = first_member(root / key, dsn, items)
        members = [a] + [further_member(a, n) for n in ("b",)[: count - 1]]
        try:
            for member in members:
                member.serve()
            for member in members[1:]:  # the same user's profile, on its own member
                shutil.copytree(a.deployment.home, member.deployment.home)
            homes = [m.deployment.home for m in members]
            for member, home in zip(members, homes, strict=True):
                point_profile(home, [member.address])
            runs = [
                open_rate(members, homes, settings.sessions)
                for _ in range(settings.session_repeats)
            ]
            per_member = [
                statistics.median(r[i]["sessions_per_s"] for r in runs) for i in range(count)
            ]
            out[key] = {
                "members": count,
                "runs": runs,
                "sessions_per_s_per_member": per_member,
                "sessions_per_s_total": statistics.median(
                    sum(x["sessions_per_s"] for x in r) for r in runs
                ),
                "round_trip_median_ms": statistics.median(r[0]["median_ms"] for r in runs),
                "round_trip_p99_ms": statistics.median(r[0]["p99_ms"] for r in runs),
            }  # fmt: skip
        finally:
            for member in reversed(members):
                member.deployment.stop_all()


# --------------------------------------------------------------------------- 2. revocation


def revocation_commit(dsn: str, user: str) -> float | None:
    import psycopg

    with psycopg.connect(dsn) as db:
        row = db.execute(
            "SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin)) FROM users"
            " WHERE name = %s AND revoked_at IS NOT NULL",
            (user,),
        ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def _end_of(held: Process) -> dict[str, Any] | None:
    return next((e for e in held.json_events() if e["event"] in ("ended", "lost")), None)


def bench_revocation(
    root: Path, pg: PostgresServer, settings: Settings, out: dict[str, Any]
) -> None:
    log("revocation: members a and b on one PostgreSQL")
    dsn = pg.new_database("revoke")
    a = first_member(root / "revoke", dsn, [tcp_item("bench", 9)])
    b = further_member(a, "b")
    delays: list[float] = []
    failures: list[str] = []
    seen_as: list[str] = []
    try:
        a.serve()
        b.serve()
        for number in range(settings.revocations):
            user = f"r{number}"
            home = add_user(a, user)
            held = client(a, home, "hold", "bench")
            held.wait_for_event("opened")
            b.deployment.jumpoint("user", "revoke", user)  # b's config: its own process
            try:
                ended = wait_until(
                    lambda held=held: _end_of(held), timeout=30, what="the session's end"
                )
            except AssertionError as exc:
                failures.append(str(exc))
                held.stop()
                continue
            held.stop()
            committed = revocation_commit(dsn, user)
            if committed is None:
                failures.append(f"{user}: no revoked_at in the database")
                continue
            delays.append(ended["at"] - committed)
            seen_as.append(ended["event"])
    finally:
        b.deployment.stop_all()
        a.deployment.stop_all()
    out["revocation"] = {
        "delays_s": delays,
        "seen_as": seen_as,  # "ended": session_closed message; "lost": the channel's end
        "median_s": statistics.median(delays) if delays else None,
        "p99_s": percentile(delays, 99) if delays else None,
        "failures": failures,
    }


# --------------------------------------------------------------------------- 3. failover


def echoes(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.settimeout(timeout)
            connection.sendall(b"x")
            return connection.recv(1) == b"x"
    except OSError:
        return False


def _one_failover(a: Member, b: Member, restart_a: bool) -> dict[str, Any]:
    """kill -9 A under a `jump open` session; seconds until the listener echoes again."""
    deployment = a.deployment
    session = deployment.open("echo", "--connect-wait", "30s", "--reconnect-for", "60s")
    try:
        host, port = tunnel_address(session.wait_for_event("ready"))
        assert echoes(host, port, 5), "the tunnel did not echo before the kill"
        killed = time.monotonic()
        a.kill()
        if restart_a:
            a.serve()
        works = wait_until(
            lambda: echoes(host, port, 2) or session.popen.poll() is not None,
            timeout=90, what="a connection through the listener",
        )  # fmt: skip
        elapsed = time.monotonic() - killed
        if session.popen.poll() is not None:
            session.wait()
            closed = [e for e in session.json_events() if e["event"] == "closed"]
            why = closed[-1] if closed else {"reason": session.output()[-400:]}
            return {"ok": False, "exit": session.popen.returncode, "closed": why}
        assert works
        reconnected = [e for e in session.json_events() if e["event"] == "reconnected"]
        return {
            "ok": True,
            "seconds": elapsed,
            "address": reconnected[-1].get("address") if reconnected else None,
        }
    finally:
        session.stop()
        if a.process is None or a.process.popen.poll() is not None:
            a.serve()


def bench_failover(root: Path, pg: PostgresServer, settings: Settings, out: dict[str, Any]) -> None:
    log("failover: jump open with addresses [a, b], kill -9 a")
    echo = EchoServer()
    dsn = pg.new_database("failover")
    a = first_member(root / "failover", dsn, [tcp_item("echo", echo.port)])
    b = further_member(a, "b")
    try:
        a.serve()
        b.serve()
        for key, restart in (("failover_to_b", False), ("restart_in_place", True)):
            if restart:  # a alone: b would answer the resume (and could refuse it)
                b.deployment.stop_all()
            runs = []
            for _ in range(settings.failovers):
                point_profile(a.deployment.home, [a.address] if restart else [a.address, b.address])
                runs.append(_one_failover(a, b, restart))
                log(f"{key}: {runs[-1]}")
            times = [r["seconds"] for r in runs if r["ok"]]
            out[key] = {
                "runs": runs,
                "median_s": statistics.median(times) if times else None,
                "p99_s": percentile(times, 99) if times else None,
                "failures": [r["closed"] for r in runs if not r["ok"]],
            }
    finally:
        b.deployment.stop_all()
        a.deployment.stop_all()
        echo.close()


# --------------------------------------------------------------------------- report


def _cell(value: float | None, digits: int = 1) -> str:
    return "error" if value is None else f"{value:,.{digits}f}"


def render_table(out: dict[str, Any]) -> str:
    rows = ["| measurement | value |", "|---|---:|"]
    sqlite = out.get("sqlite", {}).get("sessions_per_s_per_member", [None])[0]
    pg = out.get("postgresql", {}).get("sessions_per_s_per_member", [None])[0]
    rows.append(f"| sessions/s, one member, SQLite | {_cell(sqlite)} |")
    rows.append(f"| sessions/s, one member, PostgreSQL | {_cell(pg)} |")
    rows.append(
        f"| ratio PostgreSQL / SQLite | {_cell(pg / sqlite if pg and sqlite else None, 2)} |"
    )
    two = out.get("postgresql-2", {})
    for index, value in enumerate(two.get("sessions_per_s_per_member", [None, None])):
        rows.append(f"| sessions/s, member {'ab'[index]} of 2 on one PostgreSQL | {_cell(value)} |")
    rows.append(f"| sessions/s, 2 members together | {_cell(two.get('sessions_per_s_total'))} |")
    for key, label in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL")):
        value = out.get(key, {}).get("round_trip_median_ms")
        rows.append(f"| open+close round trip, {label}, median (ms) | {_cell(value, 2)} |")
    revocation = out.get("revocation", {})
    count = len(revocation.get("delays_s", []))
    for stat in ("median", "p99"):
        value = revocation.get(f"{stat}_s")
        rows.append(
            f"| revocation on b → session end on a, {stat} (ms, n={count}) |"
            f" {_cell(None if value is None else value * 1000)} |"
        )
    for key, label in (
        ("failover_to_b", "failover to b"),
        ("restart_in_place", "a restarted in place"),
    ):
        section = out.get(key, {})
        runs = section.get("runs", [])
        good = sum(r["ok"] for r in runs)
        for stat in ("median", "p99"):
            value = section.get(f"{stat}_s")
            cell = _cell(value, 2) if value is not None else ("failed" if runs else "error")
            rows.append(
                f"| kill -9 a → new connection works, {label}, {stat}"
                f" (s, {good}/{len(runs)} ok) | {cell} |"
            )
    return "\n".join(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Cluster benchmark (see bench/README.md).")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--sessions", type=int, help="open+close round trips per run")
    parser.add_argument("--revocations", type=int, help="revocations measured")
    parser.add_argument("--failovers", type=int, help="kill -9 runs per failover row")
    parser.add_argument("--client", nargs="+", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


class DurablePostgres(PostgresServer):
    """The test suite's throwaway server with production durability (fsync, synchronous commit).

    C{track_commit_timestamp} gives each transaction's commit time: the revocation's.
    """

    def start(self) -> None:
        options = (
            f"-c port={self.port} -c listen_addresses={self.host}"
            f" -c unix_socket_directories={self.folder} -c max_connections=200"
            " -c track_commit_timestamp=on"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "-o", options,
            "start",
        )  # fmt: skip


@contextlib.contextmanager
def durable_postgres() -> Iterator[PostgresServer]:
    server = DurablePostgres()
    try:
        yield server
    finally:
        server.destroy()


def benchmark(args: argparse.Namespace) -> int:
    base = QUICK if args.quick else FULL
    settings = Settings(
        sessions=args.sessions or base.sessions,
        session_repeats=base.session_repeats,
        revocations=args.revocations or base.revocations,
        failovers=args.failovers or base.failovers,
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = Path(tempfile.mkdtemp(prefix="jumpoint-cluster-bench-"))
    out: dict[str, Any] = {}
    errors: dict[str, str] = {}
    log(f"temporary directory {root}; {'quick' if args.quick else 'full'} run; {settings}")
    try:
        with durable_postgres() as pg:
            for key, phase in (
                ("sessions", bench_rate),
                ("revocation", bench_revocation),
                ("failover", bench_failover),
            ):
                try:
                    phase(root, pg, settings, out)
                except (AssertionError, OSError, subprocess.SubprocessError, RuntimeError) as exc:
                    log(f"{key} FAILED: {exc}")
                    errors[key] = str(exc)[-2000:]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    table = render_table(out)
    RESULTS_DIR.mkdir(exist_ok=True)
    result = {
        "timestamp": stamp,
        "settings": settings.__dict__,
        "cluster_support": cluster_support(),
        "host": host_facts(),
        "git": git_state(),
        "results": out,
        "errors": errors,
        "table_markdown": table,
    }
    path = RESULTS_DIR / f"cluster-{stamp}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    log(f"results written to {path}")
    print(table)
    for key in ("failover_to_b", "restart_in_place"):
        failures = out.get(key, {}).get("failures", [])
        for why in sorted({f"{c.get('code')}: {c.get('reason')}" for c in failures}):
            count = sum(f"{c.get('code')}: {c.get('reason')}" == why for c in failures)
            print(f"\n{key}: {count} run(s): jump open ended with {why}")
    for key, message in errors.items():
        print(f"\nfailed: {key}: {message.splitlines()[0] if message else ''}")
    return 1 if errors else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client:
        return client_main(args.client)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    return benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
