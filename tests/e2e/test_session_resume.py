"""End to end: a real `jumpoint serve` keeps sessions resumable across a restart.

SIGTERM sends GOAWAY RESTARTING and leaves the session detached; a kill -9
leaves it attached, and the next start detaches it.  Either way the restarted
Jumpoint resumes it, and the audit shows one session with its reconnect.
The client speaks the wire directly (L{tests.e2e.resume_client}).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from tests.e2e.harness import Deployment, Process, audit_until, tcp_item

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def client(deployment: Deployment, *args: str) -> Process:
    env = deployment.env(PYTHONPATH=ROOT)
    process = Process([sys.executable, "-m", "tests.e2e.resume_client", *args], env)
    deployment.processes.append(process)
    return process


def one_session(deployment: Deployment, session: str) -> list[dict[str, Any]]:
    def complete(entries: list[dict[str, Any]]) -> bool:
        return any(e["event"] == "session_closed" for e in entries)

    return audit_until(deployment, complete, "--session", session, what="the session's end")


def _restart_and_resume(deployment: Deployment, opened: dict[str, Any]) -> list[dict[str, Any]]:
    deployment.serve()
    resumed = client(deployment, "resume", "web", opened["session"], opened["resume_token"])
    assert resumed.wait() == 0, resumed.output()
    (answer,) = [e for e in resumed.json_events() if e["event"] == "resumed"]
    assert answer["session"] == opened["session"] and answer["reconnects"] == 1
    entries = one_session(deployment, opened["session"])
    events = [e["event"] for e in entries]
    assert events.count("session_opened") == 1 and events.count("session_closed") == 1
    (reconnected,) = [e for e in entries if e["event"] == "session_reconnected"]
    assert reconnected["reconnects"] == 1
    assert all(opened["resume_token"] not in json.dumps(e) for e in entries)
    return entries


def test_a_sigterm_restart_keeps_the_session_resumable(deployment: Deployment) -> None:
    deployment.items = [tcp_item("web", 9)]
    server = deployment.create().serve()
    first = client(deployment, "open", "web")
    opened = first.wait_for_event("opened")
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    lost = first.wait_for_event("lost")
    assert "restarting" in lost["reason"]
    entries = _restart_and_resume(deployment, opened)
    (detached,) = [e for e in entries if e["event"] == "session_detached"]
    assert detached["code"] == "restarting"


def test_after_a_kill_the_next_start_detaches_the_session(deployment: Deployment) -> None:
    deployment.items = [tcp_item("web", 9)]
    server = deployment.create().serve()
    first = client(deployment, "open", "web")
    opened = first.wait_for_event("opened")
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()
    first.wait_for_event("lost")
    entries = _restart_and_resume(deployment, opened)
    (detached,) = [e for e in entries if e["event"] == "session_detached"]
    assert detached["code"] == "jumpoint_stopped"
