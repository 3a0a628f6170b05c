"""End to end: online single-use enrollment with the real `jumpoint` and `jump` processes.

`jumpoint user add` writes a file with a one-time token and no key; `jump enroll` makes the
key on the console, gets its certificate from the running Jumpoint, and the same file is
refused the second time (exit 8, rule named on stderr, in the JSON error event and in the
audit log).
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

from shared.errors import ExitCode
from tests.e2e.harness import Deployment, run, tool


def _enroll(deployment: Deployment, path: Path, home: Path, *args: str):  # type: ignore[no-untyped-def]
    return run(
        [*tool("jump"), "enroll", *args, str(path)], {**deployment.env(), "JUMP_HOME": str(home)}
    )


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_token_enrolls_one_console_once(deployment: Deployment) -> None:
    deployment.items = []
    deployment.create().serve()
    path = deployment.root / "bob.enroll"
    deployment.jumpoint("user", "add", "bob", "--group", "default", "--out", str(path))
    text = path.read_text()
    assert "PRIVATE KEY" not in text and stat.S_IMODE(path.stat().st_mode) == 0o600
    pending = json.loads(deployment.jumpoint("user", "list", "--json").stdout)
    assert {u["name"]: u["status"] for u in pending}["bob"] == "pending"

    home = deployment.root / "home-bob"
    first = _enroll(deployment, path, home, "--json", "--keep")
    assert first.returncode == 0, first.stderr
    (event,) = _json_lines(first.stdout)
    assert event["event"] == "enrolled" and event["user"] == "bob"
    assert event["file_deleted"] is False and path.exists()
    key = next((home / "profiles").iterdir()) / "client.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text() not in text  # the key was made here, never in the file
    items = deployment.jump("items", JUMP_HOME=str(home))
    assert items.returncode == 0, items.stderr
    users = json.loads(deployment.jumpoint("user", "list", "--json").stdout)
    assert {u["name"]: u["status"] for u in users}["bob"] == "active"

    thief = _enroll(deployment, path, deployment.root / "home-thief", "--json")
    assert thief.returncode == ExitCode.DENIED, thief.stderr
    assert "used already" in thief.stderr and "enrollment.token_used" in thief.stderr
    (error,) = _json_lines(thief.stdout)
    assert error["event"] == "error" and error["code"] == "enrollment_refused"
    assert error["rule"] == "enrollment.token_used"
    assert not (deployment.root / "home-thief" / "profiles").exists()
    audit = [
        json.loads(line)
        for line in deployment.jumpoint("audit", "--json", "--user", "bob").stdout.splitlines()
    ]
    events = [row["event"] for row in audit]
    assert events == ["user_added", "user_enrolled", "enrollment_refused"], events
    assert audit[2]["rule"] == "enrollment.token_used"
    assert audit[1]["serial"] and audit[1]["peer"].startswith("127.0.0.1:")


def test_enroll_deletes_the_file_when_asked(deployment: Deployment) -> None:
    deployment.items = []
    deployment.create().serve()
    path = deployment.root / "carol.enroll"
    deployment.jumpoint("user", "add", "carol", "--group", "default", "--out", str(path))
    bad_name = _enroll(deployment, path, deployment.root / "home-carol", "--profile", "bad name")
    assert bad_name.returncode == ExitCode.CONFIG and "invalid profile name" in bad_name.stderr
    # checked before connecting: the token is not spent
    result = _enroll(deployment, path, deployment.root / "home-carol", "--delete")
    assert result.returncode == 0, result.stderr
    assert "private key was made here" in result.stdout and f"deleted {path}" in result.stdout
    assert not path.exists()


def test_enroll_without_a_running_jumpoint_says_so(deployment: Deployment) -> None:
    deployment.items = []
    deployment.create()  # not serving
    path = deployment.root / "alice.enroll"
    result = _enroll(deployment, path, deployment.root / "home-early")
    assert result.returncode == ExitCode.UNREACHABLE, result.stderr
    assert "refused the connection" in result.stderr and "Traceback" not in result.stderr
    assert path.exists()  # nothing spent: it can be used once the Jumpoint runs
