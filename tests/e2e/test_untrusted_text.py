"""End to end: hostile text never reaches a terminal or the text log raw (issue 9, point 13).

Real `jumpoint serve` and `jump` processes.  An ESC[2J, an OSC 8 link and a
newline that forges a row (`99 approved root everything`) are refused where
they enter (item names, tags, comments, request reasons), replaced in a close
reason, and escaped where text from before the checks is shown: `jump items`,
`jump approvals`, a victim's `jump open` stderr and the Jumpoint's text log.
Outputs are read as raw bytes.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time

from shared.errors import ExitCode
from tests.e2e.harness import Deployment, tool, wait_until
from tests.e2e.servers import EchoServer

CLEAR = "\x1b[2J"
OSC8 = "\x1b]8;;https://evil.example/\x1b\\click me\x1b]8;;\x1b\\"
FORGED_ROW = "\n   99 approved  root           everything"
LEGACY = "legacy" + CLEAR + FORGED_ROW
LEGACY_SHOWN = "legacy\\x1b[2J\\n   99 approved  root           everything"


def _raw(
    deployment: Deployment, *args: str, user: str = "alice"
) -> subprocess.CompletedProcess[bytes]:
    """`jump ARGS` as C{user}, with stdout and stderr as bytes."""
    env = deployment.env(JUMP_HOME=str(deployment.home_of(user)))
    return subprocess.run(
        [*tool("jump"), *args],
        env=env,
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def _assert_safe(raw: bytes) -> None:
    """No ESC, no C1 CSI, no bidi override: nothing a terminal would act on."""
    assert b"\x1b" not in raw and b"\x9b" not in raw, raw
    assert "\u202e".encode() not in raw, raw


def _store_legacy_rows(deployment: Deployment, port: int) -> None:
    """An item and an access request as a Jumpoint before these checks could store them."""
    spec = {
        "name": LEGACY,
        "type": "tcp",
        "host": "127.0.0.1",
        "tunnels": [{"local_port": "auto", "remote_port": port}],
        "jump_group": "default",
        "comments": OSC8,
    }
    now = time.time()
    database = sqlite3.connect(deployment.directory / "state.db")
    try:
        with database:
            database.execute(
                "INSERT INTO items (name, type, jump_group, spec, created_by, created_at,"
                " updated_at) VALUES (?, 'tcp', 'default', ?, 'alice', ?, ?)",
                (LEGACY, json.dumps(spec), now, now),
            )
            database.execute(
                "INSERT INTO approvals (user_name, item, reason, duration, status, requested_at,"
                " request_expires_at) VALUES ('alice', 'db', ?, 600, 'pending', ?, ?)",
                ("urgent" + CLEAR + FORGED_ROW + OSC8, now, now + 3600),
            )
    finally:
        database.close()


def test_hostile_text_is_refused_replaced_or_escaped(deployment: Deployment) -> None:
    echo = EchoServer()
    try:
        deployment.items = [
            {
                "name": "db",
                "type": "tcp",
                "host": "127.0.0.1",
                "tunnels": [{"local_port": "auto", "remote_port": echo.port}],
                "jump_policy": "guarded",
            }
        ]
        deployment.sections = {
            "groups": {
                "default": {"jump_groups": {"see": ["*"], "open": ["*"], "manage": ["*"]}},
                "approvers": {"jump_groups": ["*"]},
                "admins": {
                    "jump_groups": ["*"],
                    "tunnels_restricted": {"terminate_foreign_tunnels": True},
                },
            },
            "allowed_targets": [f"127.0.0.1:{echo.port}"],
            "jump_policies": {
                "guarded": {"approval_required": True, "approver_group": "approvers"}
            },
        }
        deployment.create()
        deployment.add_user("bob", "approvers", deployment.home_of("bob"))
        deployment.add_user("carol", "admins", deployment.home_of("carol"))
        _store_legacy_rows(deployment, echo.port)
        daemon = deployment.serve()

        # refused where they enter: names, tags, comments, a request reason
        for extra in (
            ["web" + CLEAR],
            ["web" + FORGED_ROW],
            ["web", "--tag", OSC8],
            ["web", "--comments", "ok" + FORGED_ROW],
        ):
            created = _raw(
                deployment,
                "item", "create", "tcp", *extra, "--host", "127.0.0.1",
                "--tunnel", f"auto:{echo.port}",
            )  # fmt: skip
            assert created.returncode != 0, created.stdout
            _assert_safe(created.stderr)
            assert created.stderr.count(b"\n") <= 2  # the error and its hint, no forged line
        assert (
            b"must be printable: U+001B (escape)"
            in _raw(
                deployment, "item", "create", "tcp", "web" + CLEAR, "--host", "h", "--tunnel", "1:2"
            ).stderr
        )
        request = _raw(
            deployment, "request", "db", "--reason", "x" + FORGED_ROW, "--duration", "5m"
        )
        assert request.returncode == ExitCode.USAGE
        assert b"--reason must be one line of text without control characters" in request.stderr
        _assert_safe(request.stderr)

        # escaped where older text is shown: jump items, jump item show, jump approvals
        items = _raw(deployment, "items")
        assert items.returncode == 0, items.stderr
        _assert_safe(items.stdout)
        rows = items.stdout.decode().splitlines()
        assert len(rows) == 3  # the header, db, and the legacy item on one row
        assert any(row.startswith(LEGACY_SHOWN) for row in rows)
        shown = _raw(deployment, "item", "show", LEGACY)
        _assert_safe(shown.stdout)
        assert b"comments:        \\x1b]8;;https://evil.example/" in shown.stdout
        listed = json.loads(_raw(deployment, "items", "--json").stdout)
        assert LEGACY in [entry["name"] for entry in listed]  # JSON keeps the value itself

        approvals = _raw(deployment, "approvals", user="bob")
        assert approvals.returncode == 0, approvals.stderr
        _assert_safe(approvals.stdout)
        lines = approvals.stdout.decode().splitlines()
        assert len(lines) == 3, lines  # header, the one request, the "you may decide" note
        assert "urgent\\x1b[2J\\n   99 approved" in lines[1]
        assert not any(line.lstrip().startswith("99 ") for line in lines)

        # a victim's jump open: the close reason and the item name arrive escaped
        victim = subprocess.Popen(
            [*tool("jump"), "open", LEGACY],
            env=deployment.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:

            def open_session() -> str | None:
                found = json.loads(
                    _raw(deployment, "sessions", "--all", "--json", user="carol").stdout
                )
                return found[0]["session"] if found else None

            session = wait_until(open_session, what="the victim's session")
            closed = _raw(
                deployment, "close", session, "--reason", CLEAR + OSC8 + FORGED_ROW, user="carol"
            )
            assert closed.returncode == 0, closed.stderr
            out, err = victim.communicate(timeout=30)
        finally:
            if victim.poll() is None:
                victim.kill()
                victim.communicate()
        assert victim.returncode == ExitCode.SESSION_LOST
        _assert_safe(out + err)
        message = [line for line in err.decode().splitlines() if "closed by carol" in line]
        assert len(message) == 1, err
        assert "\\x1b[2J\\x1b]8;;https://evil.example/" in message[0]
        assert "\\n   99 approved  root           everything" in message[0]
        assert not any(
            line.lstrip().startswith("99 ") for line in (out + err).decode().splitlines()
        )
    finally:
        echo.close()

    # the Jumpoint's text log: every event on one line, escaped
    daemon.stop()
    log = "\n".join(daemon.stdout_lines + daemon.stderr_lines)
    assert "\x1b" not in log and "\u202e" not in log
    opened = [line for line in daemon.stdout_lines if " opened: " in line and "legacy" in line]
    assert len(opened) == 1 and LEGACY_SHOWN in opened[0], daemon.output()
    assert not any(line.lstrip().startswith("99 ") for line in daemon.stdout_lines)
