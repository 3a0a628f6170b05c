"""`jump --help` loads no session machinery: the kinds' light parts only, no TLS, no proxy.

The console's kinds are split in two (L{console.kinds}: the light part the
CLI builds its commands and renders items with; L{console.kinds.sessions}:
the session parts only `jump open` reaches), and L{console.remote} imports the
channel stack when a request is sent.  These tests run the CLI in a fresh
interpreter and read which modules it loaded: C{import console.cli}, the
console script's C{jump --help} (L{console.cli.main}, read with C{-X importtime}),
and the C{--help} of the commands that build kind-specific options.  Then
they import L{console.open_command}, to show the names checked are real
modules that `jump open` does load.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "OpenSSL",
    "twisted.internet.ssl",
    "h11",
    "console.kube_proxy",
    "console.tds_proxy",
    "console.tds_client_leg",
    "console.kubeconfig",
    "console.local_ca",
    "console.kinds.sessions",
    "console.tunnels",
    "console.channel",
    "shared.protocol.tls",
    "shared.protocol.mux",
    "shared.bridge",
    "shared.pki",
    "shared.codecs.tds",
    "shared.codecs.http",
    "twisted.internet.defer",
)
"""Modules a session needs and building the CLI does not."""

HELP_ARGS = (
    ["--help"],
    ["items", "--help"],
    ["open", "--help"],
    ["item", "--help"],
    ["item", "create", "--help"],
    ["item", "create", "mssql", "--help"],
    ["item", "create", "k8s", "--help"],
    ["sessions", "--help"],
)

_PROBE = f"""
import json, sys
from click.testing import CliRunner
import console.cli
loaded = {{"import": sorted(sys.modules)}}
for args in {HELP_ARGS!r}:
    result = CliRunner().invoke(console.cli.cli, args)
    assert result.exit_code == 0, (args, result.output)
    assert "Usage: " in result.output, (args, result.output)
loaded["help"] = sorted(sys.modules)
import console.open_command
loaded["open"] = sorted(sys.modules)
print(json.dumps(loaded))
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_building_the_cli_and_its_help_load_no_session_machinery() -> None:
    run = _run("-c", _PROBE)
    assert run.returncode == 0, run.stderr
    loaded = {stage: set(names) for stage, names in json.loads(run.stdout).items()}
    assert "console.kinds.mssql" in loaded["import"]  # the light parts render items
    assert sorted(set(HEAVY) & loaded["import"]) == []
    assert sorted(set(HEAVY) & loaded["help"]) == []
    # jump open loads them: the names above are the modules a session runs on
    assert sorted(set(HEAVY) - loaded["open"]) == []


def test_the_console_scripts_help_loads_no_session_machinery() -> None:
    run = _run("-X", "importtime", "-c", "from console.cli import main; main(['--help'])")
    assert run.returncode == 0, run.stderr
    assert "Usage: jump [OPTIONS] COMMAND" in run.stdout
    imported = {
        line.rpartition("|")[2].strip()
        for line in run.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert {"console.cli", "console.kinds", "click"} <= imported
    assert sorted(set(HEAVY) & imported) == []
