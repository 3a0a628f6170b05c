"""A throwaway PostgreSQL server for the tests: its own cluster in a temporary folder.

L{PostgresServer} runs C{initdb} (as the C{postgres} user when the tests run
as root: initdb refuses root) into a fresh folder, starts the server on
127.0.0.1 and a free port with C{fsync=off} (the tests need no durability),
hands out fresh databases (L{PostgresServer.new_database}) and removes
everything at L{PostgresServer.destroy}.  L{PostgresServer.stop} and
L{PostgresServer.start} stop and start the same cluster, for outage tests.

There is no skip: setup (scripts/setup.sh) installs Debian's C{postgresql},
so a missing server is a broken setup and fails with a message saying so.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SERVICE_USER = "postgres"


class PostgresMissing(RuntimeError):
    """The PostgreSQL server programs are not installed."""


def _server_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key)
    for folder in reversed(found):
        if (Path(folder) / "initdb").exists():
            return Path(folder)
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise PostgresMissing(
        "the PostgreSQL server is not installed (no initdb in /usr/lib/postgresql/*/bin or"
        " on PATH): run `bash scripts/setup.sh` (it installs Debian's postgresql)"
    )


def _version_key(folder: str) -> tuple[int, ...]:
    parts = Path(folder).parent.name.split(".")
    return tuple(int(part) for part in parts if part.isdigit())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One throwaway cluster (see the module docstring)."""

    def __init__(self) -> None:
        self.bin = _server_bin()
        self.folder = Path(tempfile.mkdtemp(prefix="jumpoint-pg."))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.port = free_port()
        self.host = "127.0.0.1"
        self._names = itertools.count(1)
        self._as_service_user = os.geteuid() == 0
        if self._as_service_user:
            entry = pwd.getpwnam(SERVICE_USER)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self.start()

    def _run(self, program: str, *arguments: str) -> None:
        command = [str(self.bin / program), *arguments]
        if self._as_service_user:
            command = ["runuser", "-u", SERVICE_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}{done.stderr}\n{log}"
            )

    def start(self) -> None:
        options = (
            f"-c port={self.port} -c listen_addresses={self.host}"
            f" -c unix_socket_directories={self.folder} -c fsync=off"
            " -c full_page_writes=off -c synchronous_commit=off -c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "-o", options,
            "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    def running(self) -> bool:
        command = [str(self.bin / "pg_ctl"), "-D", str(self.data), "status"]
        if self._as_service_user:
            command = ["runuser", "-u", SERVICE_USER, "--", *command]
        return subprocess.run(command, capture_output=True, check=False).returncode == 0

    def dsn(self, database: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user=postgres dbname={database}"

    def new_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its DSN."""
        import psycopg

        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def destroy(self) -> None:
        try:
            if self.running():
                self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
