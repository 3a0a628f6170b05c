"""Helpers for end-to-end tests: real `jumpoint` and `jump` processes on loopback.

Everything waits by polling with a deadline (L{wait_until}); nothing sleeps
for synchronisation.  L{Deployment} builds a throwaway Jumpoint directory with
the items a test needs, enrolls a user into a private C{JUMP_HOME}, and starts
and stops the processes.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
DEADLINE = 30.0


def wait_until(
    check: Callable[[], T | None], timeout: float = DEADLINE, what: str = "condition"
) -> T:
    """Poll C{check} until it returns something truthy, or fail after C{timeout}."""
    end = time.monotonic() + timeout
    delay = 0.005
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)  # polling interval, not synchronisation
        delay = min(delay * 2, 0.1)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def rss_kib(pid: int) -> int:
    """Resident set size of a process (KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


class Process:
    """A child process whose stdout and stderr lines are collected by threads."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        cwd: Path | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.args = args
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            preexec_fn=preexec_fn,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._events: queue.Queue[str] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, self.stdout_lines, True)),
            threading.Thread(target=self._pump, args=(self.popen.stderr, self.stderr_lines, False)),
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    def _pump(self, stream: Any, into: list[str], is_stdout: bool) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))
            if is_stdout:
                self._events.put(line)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def json_events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.stdout_lines) if line.startswith("{")]

    def wait_for_event(self, name: str, timeout: float = DEADLINE) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for event in self.json_events():
                if event.get("event") == name:
                    return event
            if self.popen.poll() is not None:
                self.join_output()
                raise AssertionError(
                    f"{self.args[:3]} exited with {self.popen.returncode} before {name!r}:"
                    f" {self.output()}"
                )
            return None

        return wait_until(find, timeout, f"event {name!r} from {self.args[:3]}")

    def wait_for_stderr(self, text: str, timeout: float = DEADLINE) -> str:
        def find() -> str | None:
            for line in list(self.stderr_lines):
                if text in line:
                    return line
            return None

        return wait_until(find, timeout, f"{text!r} on stderr of {self.args[:3]}")

    def wait_for_stdout(self, text: str, timeout: float = DEADLINE) -> str:
        def find() -> str | None:
            for line in list(self.stdout_lines):
                if text in line:
                    return line
            return None

        return wait_until(find, timeout, f"{text!r} on stdout of {self.args[:3]}")

    def signal(self, number: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, number)

    def wait(self, timeout: float = DEADLINE) -> int:
        code = self.popen.wait(timeout)
        self.join_output()
        return code

    def join_output(self) -> None:
        for thread in self._threads:
            thread.join(5)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        self.join_output()

    def output(self) -> str:
        return "\n".join(["--- stdout:", *self.stdout_lines, "--- stderr:", *self.stderr_lines])


def run(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def tool(name: str) -> list[str]:
    """The command line of one of our console scripts (installed by `pip install`)."""
    installed = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if installed:
        return [installed]
    module = {"jumpoint": "jumpoint.cli", "jump": "console.cli"}[name]
    return [sys.executable, "-m", module]


LOOPBACK_TARGETS = ["127.0.0.0/8", "::1"]
"""The allowed_targets of a test deployment unless its sections give their own."""


@dataclass
class Deployment:
    """A throwaway Jumpoint with one enrolled user."""

    root: Path
    items: list[dict[str, Any]] = field(default_factory=list)
    user: str = "alice"
    port: int = 0
    serve_args: list[str] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    waiting_enrollments: list[tuple[Path, dict[str, str]]] = field(default_factory=list)
    """Enrollment files written before the Jumpoint ran: L{serve} redeems them."""
    serving: bool = False
    sections: dict[str, Any] = field(default_factory=dict)
    """Further top-level sections of jumpoint.yaml (groups, policies, allowed_targets...)."""
    listen_host: str = "127.0.0.1"
    """The address the Jumpoint listens on (and consoles use)."""
    jump_prefix: list[str] = field(default_factory=list)
    """Prepended to every `jump` command line (e.g. `ip netns exec NS`)."""
    serve_prefix: list[str] = field(default_factory=list)
    """Prepended to the `jumpoint serve` command line."""
    postgres_dsn: str | None = None
    """The state's PostgreSQL database (C{state: backend: postgresql}); none: SQLite."""

    @property
    def directory(self) -> Path:
        return self.root / "jumpoint"

    @property
    def config(self) -> Path:
        return self.directory / "jumpoint.yaml"

    @property
    def home(self) -> Path:
        return self.root / "home"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["JUMP_HOME"] = str(self.home)
        env["JUMPOINT_CONFIG"] = str(self.config)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra)
        return env

    def jumpoint(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = run([*tool("jumpoint"), *args], self.env())
        if check and result.returncode != 0:
            raise AssertionError(f"jumpoint {args} failed: {result.stdout}{result.stderr}")
        return result

    def jump(self, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
        return run([*self.jump_prefix, *tool("jump"), *args], self.env(**env), timeout)

    def listening(self) -> bool:
        """Whether the Jumpoint accepts connections (overridden where it is not reachable here)."""
        return port_open(self.listen_host, self.port)

    def create(self) -> Deployment:
        self.port = free_port()
        self.jumpoint(
            "init",
            "--dir",
            str(self.directory),
            "--name",
            "test",
            "--listen",
            f"{self.listen_host}:{self.port}",
            "--address",
            self.listen_host,
        )
        if self.postgres_dsn is not None:
            dsn_file = self.directory / "state.dsn"
            dsn_file.write_text(self.postgres_dsn + "\n", encoding="utf-8")
            dsn_file.chmod(0o600)
            self.sections.setdefault("state", {"backend": "postgresql", "dsn_file": "state.dsn"})
        self.write_items()
        if self.postgres_dsn is not None:
            self.jumpoint("migrate")
        self.add_user(self.user)
        return self

    def write_items(self) -> None:
        document = yaml.safe_load(self.config.read_text())
        document["items"] = self.items
        document.setdefault("limits", {})["keepalive_interval"] = "5s"
        # The tests' targets listen on loopback, a target only when listed explicitly.
        document["allowed_targets"] = LOOPBACK_TARGETS
        for key, value in self.sections.items():
            if value is None:  # a section the test wants absent (allowed_targets: init's)
                document.pop(key, None)
            elif isinstance(value, dict) and isinstance(document.get(key), dict):
                document[key].update(value)
            else:
                document[key] = value
        self.config.write_text(yaml.safe_dump(document, sort_keys=False))

    def add_user(
        self,
        name: str,
        group: str = "default",
        home: Path | None = None,
        more_groups: tuple[str, ...] = (),
    ) -> Path:
        enrollment = self.root / f"{name}.enroll"
        extra = [arg for g in more_groups for arg in ("--group", g)]
        self.jumpoint("user", "add", name, "--group", group, *extra, "--out", str(enrollment))
        env = self.env()
        if home is not None:
            env["JUMP_HOME"] = str(home)
        if self.serving:
            self.redeem(enrollment, env)
        else:  # enrollment is online: redeemed once the Jumpoint serves
            self.waiting_enrollments.append((enrollment, env))
        return enrollment

    def redeem(self, enrollment: Path, env: dict[str, str]) -> None:
        result = run([*self.jump_prefix, *tool("jump"), "enroll", "--keep", str(enrollment)], env)
        assert result.returncode == 0, result.stderr

    def serve(self, max_files: int | None = None) -> Process:
        """Start `jumpoint serve`; C{max_files} limits its descriptors (RLIMIT_NOFILE)."""
        preexec = None
        if max_files is not None:
            import resource

            def preexec() -> None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (max_files, max_files))

        process = Process(
            [*self.serve_prefix, *tool("jumpoint"), "serve", *self.serve_args],
            self.env(),
            preexec_fn=preexec,
        )
        self.processes.append(process)
        wait_until(
            lambda: self.listening() or process.popen.poll() is not None,
            what="the Jumpoint to listen",
        )
        assert process.popen.poll() is None, process.output()
        self.serving = True
        waiting, self.waiting_enrollments = self.waiting_enrollments, []
        for enrollment, env in waiting:
            self.redeem(enrollment, env)
        return process

    def home_of(self, name: str) -> Path:
        """The JUMP_HOME of a further user (the first user's is L{home})."""
        return self.home if name == self.user else self.root / f"home-{name}"

    def jump_as(
        self, name: str, *args: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.jump(*args, timeout=timeout, JUMP_HOME=str(self.home_of(name)))

    def open_as(self, name: str, item: str, *args: str) -> Process:
        return self.open(item, *args, JUMP_HOME=str(self.home_of(name)))

    def open(self, item: str, *args: str, **env: str) -> Process:
        process = Process(
            [*self.jump_prefix, *tool("jump"), "open", item, "--json", *args], self.env(**env)
        )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def stop_and_show(self, tail: int = 20000) -> None:
        """Stop every process and print its output (pytest shows it when the test fails)."""
        self.stop_all()
        for process in self.processes:
            print(f"=== {' '.join(process.args[:8])} (exit {process.popen.returncode})")
            print(process.output()[-tail:])


def audit_until(
    deployment: Deployment,
    predicate: Callable[[list[dict[str, Any]]], bool],
    *args: str,
    what: str = "the audit rows",
) -> list[dict[str, Any]]:
    """`jumpoint audit --json ARGS` once it satisfies C{predicate}: connection events are
    committed in batches (within a fraction of a second), so tests poll for them."""

    def check() -> list[dict[str, Any]] | None:
        output = deployment.jumpoint("audit", "--json", *args).stdout
        entries = [json.loads(line) for line in output.splitlines() if line.strip()]
        return entries if predicate(entries) else None

    return wait_until(check, what=what)


def tcp_item(name: str, remote_port: int, host: str = "127.0.0.1") -> dict[str, Any]:
    """A TCP item with one tunnel from an automatic local port to HOST:REMOTE_PORT."""
    return {
        "name": name,
        "type": "tcp",
        "host": host,
        "tunnels": [{"local_port": "auto", "remote_port": remote_port}],
    }


def tunnel_address(ready: dict[str, Any], index: int = 0) -> tuple[str, int]:
    tunnel = ready["tunnels"][index]
    return tunnel["local_address"], int(tunnel["local_port"])


@contextmanager
def background_process(
    args: list[str], ready: Callable[[], bool], what: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a real server (redis-server, http.server...) until the block ends."""
    process = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_until(lambda: ready() or process.poll() is not None, what=what)
        assert process.poll() is None, f"{what}: {args} exited with {process.returncode}"
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Terminal:
    """A child process on a pseudo-terminal; L{read_until} collects what it shows."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        import pty

        self.leader, follower = pty.openpty()
        self.popen = subprocess.Popen(
            args, env=env, stdin=follower, stdout=follower, stderr=follower, start_new_session=True
        )
        os.close(follower)
        self.screen = bytearray()

    def _drain(self) -> None:
        import select

        while select.select([self.leader], [], [], 0)[0]:
            try:
                chunk = os.read(self.leader, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.screen.extend(chunk)

    def read_until(self, text: bytes, what: str) -> None:
        def seen() -> bool:
            self._drain()
            return text in self.screen

        wait_until(seen, what=what)

    def type(self, data: bytes) -> None:
        os.write(self.leader, data)

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        status = self.popen.wait(timeout)
        self._drain()
        os.close(self.leader)
        return status, self.screen.decode(errors="replace")
