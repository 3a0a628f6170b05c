"""Throwaway users and a group for end-to-end tests run as root, always removed afterwards.

L{throwaway_accounts} makes a system group and two system users without
homes or shells, a I{member} of the group and an I{outsider}, each with its
own user group; they are deleted (users, then groups) when the block ends,
also when it fails.  Names are C{jptg}/C{jptm}/C{jpto} and a random tag.
L{folder_others_may_enter} is where their files go (pytest's C{tmp_path} is
root's alone).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def _run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


@dataclass
class Account:
    name: str
    uid: int
    gid: int
    groups: list[int]


@dataclass
class Accounts:
    group: str
    gid: int
    member: Account
    outsider: Account


def _account(name: str) -> Account:
    uid = int(_run("id", "-u", name))
    gid = int(_run("id", "-g", name))
    groups = [int(g) for g in _run("id", "-G", name).split()]
    return Account(name, uid, gid, groups)


@contextlib.contextmanager
def throwaway_accounts() -> Iterator[Accounts]:
    """A group, a member of it and an outsider (module docstring)."""
    tag = secrets.token_hex(3)
    group, member, outsider = f"jptg{tag}", f"jptm{tag}", f"jpto{tag}"
    made_users: list[str] = []
    made_group = False
    try:
        _run("groupadd", "--system", group)
        made_group = True
        for user, extra in ((member, ["-G", group]), (outsider, [])):
            _run("useradd", "--system", "-M", "-U", "-s", "/usr/sbin/nologin", *extra, user)
            made_users.append(user)
        yield Accounts(
            group,
            int(_run("getent", "group", group).split(":")[2]),
            _account(member),
            _account(outsider),
        )
    finally:
        for user in made_users:
            subprocess.run(["userdel", user], check=False, capture_output=True)
            subprocess.run(["groupdel", user], check=False, capture_output=True)
        if made_group:
            subprocess.run(["groupdel", group], check=False, capture_output=True)


@contextlib.contextmanager
def folder_others_may_enter(prefix: str) -> Iterator[Path]:
    """A temporary folder, mode 0755 (throwaway users may reach what is made in it), removed."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
