"""The benchmark still runs: `bench/run.py --quick` through real `jumpoint serve` and `jump open`.

A benchmark nobody runs breaks silently (twice: the egress default and online
enrollment each stopped it).  This runs the quick variant on the direct and
jump paths and checks that every jump figure was measured; it asserts no
speed (speed is the benchmark's report, never a test's verdict).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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
