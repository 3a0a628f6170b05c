"""The benchmarks still run: `bench/run.py`, `bench/network.py` and `bench/cluster.py` --quick.

A benchmark nobody runs breaks silently (twice: the egress default and online
enrollment each stopped it).  This runs the quick variant of the loopback
benchmark on the direct and jump paths, and of the network benchmark (three
namespaces, as root) on all of its paths, and of the cluster benchmark (its
throwaway PostgreSQL, members, revocations, kill -9), and checks that every
figure was measured (a failover the product cannot do yet may say "failed"); it asserts no speed (speed is the benchmark's report, never a
test's verdict).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_quick_benchmark_measures_every_jump_figure() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--paths", "direct,jump"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "not measured" not in done.stdout, done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].split("|")[1:4] == [" metric ", " direct TCP ", " jump open "]
    jump_column = [row.split("|")[3].strip() for row in rows[2:]]
    assert jump_column and all(re.fullmatch(r"[0-9][0-9,.]*", value) for value in jump_column), (
        done.stdout
    )


@pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0, reason="network namespaces need Linux and root"
)
def test_the_quick_network_benchmark_measures_every_path() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "network.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert "failed" not in done.stdout and "error" not in done.stdout, done.stdout
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ")]
    paths = [row[0].strip() for row in rows if not row[0].strip().startswith("path")]
    assert sum(path.startswith("direct") for path in paths) == 1 + 2  # TCP, two UDP rates
    assert sum(path.startswith("network tunnel") for path in paths) == 1 + 2
    assert sum(path.startswith("TCP port tunnel") for path in paths) == 1
    assert sum(path.startswith("UDP port tunnel") for path in paths) == 2
    for row in rows:
        if row[0].strip().startswith(("direct", "network", "TCP", "UDP")):
            figures = [cell.strip() for cell in row[1:3]]
            assert all(re.fullmatch(r"[0-9][0-9,.]*(Mbit/s)?", f) for f in figures), row


CLUSTER_ROWS = 14
"""Rows of bench/cluster.py's table: 8 of sessions/s, 2 of revocation, 4 of failover."""


def test_the_quick_cluster_benchmark_prints_its_whole_table() -> None:
    done = subprocess.run(
        [
            *(sys.executable, str(ROOT / "bench" / "cluster.py"), "--quick"),
            *("--sessions", "5", "--revocations", "2", "--failovers", "1"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ")]
    assert [cell.strip() for cell in rows[0]] == ["measurement", "value"]
    body = [(label.strip(), value.strip()) for label, value in rows[1:]]
    assert len(body) == CLUSTER_ROWS, done.stdout
    for label, value in body:
        if label.startswith("kill -9"):  # a failover the product cannot do yet says so
            assert re.fullmatch(r"[0-9][0-9,.]*|failed", value), (label, value)
        else:
            assert re.fullmatch(r"[0-9][0-9,.]*", value), (label, value)
