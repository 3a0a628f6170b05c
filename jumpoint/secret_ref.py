"""Secrets given by reference (a file or an environment variable), and the 0600 rule for files.

A configuration never holds a secret itself: it names the file or the
environment variable it is read from, each time it is used, so a rotated
secret takes effect at its next use.  L{loose_permissions} is the check both
the configuration loader and the Jumpoint's commands apply to every secret
file: like ssh with private keys, a secret file that its group or other users
may read is refused, and the message gives the C{chmod} that fixes it.
"""

from __future__ import annotations

import os
import shlex
import stat
import sys
from dataclasses import dataclass
from pathlib import Path


class SecretUnavailable(Exception):
    """The secret's file cannot be read or its environment variable is not set."""


@dataclass(frozen=True)
class SecretRef:
    """Where a secret is: exactly one of C{file} and C{env}."""

    file: Path | None = None
    env: str | None = None

    def read(self) -> bytes:
        """The secret, read now: the file's first line, or the variable's value."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise SecretUnavailable(f"the environment variable {self.env} is not set")
            return value.encode("utf-8")
        assert self.file is not None
        try:
            text = self.file.read_bytes()
        except OSError as error:
            raise SecretUnavailable(f"cannot read {self.file}: {error.strerror}") from None
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise SecretUnavailable(f"{self.file} is empty")
        return lines[0]

    def __repr__(self) -> str:  # the reference only; no secret is held
        return f"SecretRef(file={str(self.file) if self.file else None}, env={self.env!r})"


def loose_permissions(path: Path) -> str | None:
    """Why C{path} is too open for a secret (group or others may read it), or C{None}.

    Always C{None} on Windows, where POSIX modes say nothing about access.
    """
    if sys.platform == "win32":
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # a missing or unreadable file is reported by whoever reads it
    if not mode & (stat.S_IRWXG | stat.S_IRWXO):
        return None
    return (
        f"{path} is accessible by other users (mode {stat.S_IMODE(mode):04o}); a secret file"
        f" must be readable by its owner only: run `chmod 600 {shlex.quote(str(path))}`"
    )
