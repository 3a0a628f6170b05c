"""One Jumpoint per state database: an exclusive lock on a file next to it.

C{jumpoint serve} takes the lock before it reads or changes any state (the
sessions a killed daemon left open are closed at start-up: a second daemon
on the same configuration must never do that to a live one's sessions).
The operating system releases the lock when the process ends, however it
ends, so a crashed daemon never leaves a stale lock.  The file holds the
holder's process id, for the error message only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from shared.errors import ConfigError


def lock_path(state_database: Path) -> Path:
    return state_database.with_name(state_database.name + ".lock")


class InstanceLock:
    """The held lock; L{release} (or the end of the process) gives it up."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_database: Path) -> InstanceLock:
        """Take the lock of C{state_database} or fail with a L{ConfigError} (exit 3)."""
        path = lock_path(state_database)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise ConfigError(
                f"{path}: cannot open the Jumpoint's lock file: {error}",
                hint="check that the state directory is writable by this user",
            ) from None
        if not _try_lock(fd):
            holder = _read_pid(fd)
            os.close(fd)
            who = f" (process {holder})" if holder else ""
            raise ConfigError(
                f"another Jumpoint{who} is running on the state database {state_database}",
                hint="stop it first, or give this one its own configuration and state directory",
            )
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_pid(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""
