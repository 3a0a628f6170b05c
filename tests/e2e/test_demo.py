"""The README's first command: the demo runs to its end and shows a real tunnel's traffic."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_demo_runs() -> None:
    env = dict(os.environ, JUMPOINT_DEMO_SKIP_SETUP="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "scripts/demo.sh"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Hello through the Jumpoint" in output
    assert "downloaded 20971520 bytes" in output
    assert '"event": "ready"' in output or "ready " in output
    assert "done: the demo's files are removed" in output
    assert "Traceback" not in output
