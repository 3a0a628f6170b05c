"""The console's per-session kubeconfig for Kubernetes cluster items, and its cleanup.

Each C{jump open} of a Kubernetes cluster item gets its own private directory
under L{cache_root} (C{$JUMP_CACHE_DIR}, else C{$XDG_CACHE_HOME/jump/kube},
else C{~/.cache/jump/kube}; C{%LOCALAPPDATA%\\jump\\kube} on Windows)::

    SESSION/owner        the console's PID and start time (JSON, 0600), for the sweep
    SESSION/ca.pem       the per-session CA that kubectl trusts
    SESSION/server.pem   the local listener's certificate (IP SAN = listen address)
    SESSION/server.key   its private key (0600)
    SESSION/kubeconfig   one cluster, user (bearer token) and context (0600)
    SESSION/cache/       KUBECACHEDIR: kubectl's discovery and HTTP caches

The session CA's private key is never written: it signs the listener's
certificate once and is then dropped, so nothing else can be made that the
kubeconfig trusts.  The user's own C{~/.kube/config} and the console's own
environment are never touched; the kubeconfig is handed to the command only
through L{SessionKubeconfig.environment}.  L{SessionKubeconfig.remove} deletes all of it
when the session ends, and L{sweep} removes what a console that died left behind.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import re
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from console.profiles import _private_dir
from shared.files import write_private
from shared.pki import create_ca, issue_server

CACHE_ENV = "JUMP_CACHE_DIR"
OWNER_FILE = "owner"
CA_FILE = "ca.pem"
CERTIFICATE_FILE = "server.pem"
KEY_FILE = "server.key"
KUBECONFIG_FILE = "kubeconfig"
CACHE_DIR = "cache"
STALE_AFTER = 3600.0
"""Seconds after which a session directory without a readable owner file is removed."""

_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def cache_root() -> Path:
    """The directory holding one subdirectory per Kubernetes session (created 0700)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return _private_dir(Path(explicit))
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return _private_dir(Path(os.environ["LOCALAPPDATA"]) / "jump" / "kube")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return _private_dir(Path(base) / "jump" / "kube")


# -- the owner process -------------------------------------------------------------------------

if sys.platform == "win32":
    import ctypes
    from ctypes import wintypes

    _PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
    _STILL_ACTIVE = 259
    _ERROR_INVALID_PARAMETER = 87

    # A private handle on kernel32 with explicit prototypes (64-bit HANDLEs, last error).
    _kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    _kernel32.OpenProcess.argtypes = [wintypes.DWORD, wintypes.BOOL, wintypes.DWORD]
    _kernel32.OpenProcess.restype = wintypes.HANDLE
    _kernel32.GetExitCodeProcess.argtypes = [wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD)]
    _kernel32.GetExitCodeProcess.restype = wintypes.BOOL
    _kernel32.GetProcessTimes.argtypes = [wintypes.HANDLE] + [ctypes.POINTER(wintypes.FILETIME)] * 4
    _kernel32.GetProcessTimes.restype = wintypes.BOOL
    _kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
    _kernel32.CloseHandle.restype = wintypes.BOOL

    def _open_process(pid: int) -> int | None:
        handle = _kernel32.OpenProcess(_PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
        return int(handle) if handle else None

    def _pid_alive(pid: int) -> bool:
        handle = _open_process(pid)
        if handle is None:
            # No such process; any other failure (access denied) means it exists.
            return ctypes.get_last_error() != _ERROR_INVALID_PARAMETER
        try:
            code = wintypes.DWORD()
            if not _kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
                return True
            return code.value == _STILL_ACTIVE
        finally:
            _kernel32.CloseHandle(handle)

    def _process_start(pid: int) -> str | None:
        """The process's creation time (FILETIME), to tell a reused PID apart."""
        handle = _open_process(pid)
        if handle is None:
            return None
        try:
            times = [wintypes.FILETIME() for _ in range(4)]
            if not _kernel32.GetProcessTimes(handle, *(ctypes.byref(t) for t in times)):
                return None
            created = (times[0].dwHighDateTime << 32) | times[0].dwLowDateTime
            return f"win:{created}"
        finally:
            _kernel32.CloseHandle(handle)

else:

    def _pid_alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            # EPERM: it exists but belongs to someone else; anything else: be safe.
            return True
        return True

    def _process_start(pid: int) -> str | None:
        """Start time in clock ticks since boot (Linux), to tell a reused PID apart."""
        try:
            stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
            return "linux:" + stat[stat.rindex(")") + 2 :].split()[19]
        except (OSError, ValueError, IndexError):
            return None


@dataclass(frozen=True)
class _Owner:
    pid: int
    process_start: str | None
    created: float


def _read_owner(directory: Path) -> _Owner | None:
    """The owner record, or None when it is missing or corrupt."""
    try:
        data = json.loads((directory / OWNER_FILE).read_text(encoding="utf-8"))
        pid = data["pid"]
        start = data.get("process_start")
        created = data.get("created", 0.0)
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            return None
        if start is not None and not isinstance(start, str):
            return None
        if not isinstance(created, int | float) or isinstance(created, bool):
            return None
        return _Owner(pid, start, float(created))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _owner_gone(owner: _Owner) -> bool:
    """True when the process that wrote the owner record no longer runs."""
    if not _pid_alive(owner.pid):
        return True
    if owner.process_start is None:
        return False
    current = _process_start(owner.pid)
    # A different start time: the PID now belongs to another process.
    return current is not None and current != owner.process_start


# -- removal ----------------------------------------------------------------------------------


def _count_files(directory: Path) -> int:
    count = 0
    for _, _, files in os.walk(directory):
        count += len(files)
    return count


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except OSError:
        return False
    return True


def _remove_directory(directory: Path) -> list[str]:
    """Delete one session directory (best effort, never raising); what was removed."""
    lines: list[str] = []
    try:
        kubeconfig = directory / KUBECONFIG_FILE
        if _unlink(kubeconfig):
            lines.append(f"removed kubeconfig {kubeconfig}")
        cache = directory / CACHE_DIR
        if cache.is_dir() and not cache.is_symlink():
            files = _count_files(cache)
            shutil.rmtree(cache, ignore_errors=True)
            if not cache.exists():
                lines.append(f"removed cache {cache} ({files} file{'' if files == 1 else 's'})")
        keys = [_unlink(directory / name) for name in (KEY_FILE, CERTIFICATE_FILE, CA_FILE)]
        if any(keys):
            lines.append("removed session keys")
        _unlink(directory / OWNER_FILE)
        if directory.is_dir() and not directory.is_symlink():
            # Whatever else kubectl may have left (lock files...).
            shutil.rmtree(directory, ignore_errors=True)
    except OSError:
        pass
    return lines


# -- the session -------------------------------------------------------------------------------


def _server_url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}:{port}"


def _kubeconfig(
    name: str, server: str, ca_pem: bytes, token: str, namespace: str | None
) -> dict[str, object]:
    context: dict[str, str] = {"cluster": name, "user": name}
    if namespace:
        context["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode("ascii"),
                },
            }
        ],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
        "preferences": {},
    }


@dataclass
class SessionKubeconfig:
    """One session's kubeconfig, local listener certificate and bearer token."""

    directory: Path
    kubeconfig_path: Path
    cache_dir: Path
    token: str
    certificate_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    context_name: str
    _removed: bool = field(default=False, repr=False)

    @classmethod
    def create(
        cls,
        root: Path,
        session_id: str,
        item_name: str,
        listen_address: str,
        listen_port: int,
        namespace: str | None,
    ) -> SessionKubeconfig:
        """Write a new session directory C{root/session_id} (which must not exist yet)."""
        if not _SESSION_ID.match(session_id):
            raise ValueError(f"invalid session id {session_id!r}")
        _private_dir(root)
        directory = root / session_id
        os.mkdir(directory, 0o700)
        try:
            if sys.platform != "win32":
                os.chmod(directory, 0o700)
            owner = {
                "pid": os.getpid(),
                "process_start": _process_start(os.getpid()),
                "created": time.time(),
                "item": item_name,
            }
            write_private(directory / OWNER_FILE, json.dumps(owner).encode("utf-8"))
            ca = create_ca(f"jump kube session {session_id}")
            listener = issue_server(ca, f"jump {listen_address}", [listen_address])
            (directory / CA_FILE).write_bytes(ca.certificate_pem)
            (directory / CERTIFICATE_FILE).write_bytes(listener.certificate_pem)
            write_private(directory / KEY_FILE, listener.key_pem)
            token = secrets.token_urlsafe(32)
            name = f"jump-{item_name}"
            document = _kubeconfig(
                name,
                _server_url(listen_address, listen_port),
                ca.certificate_pem,
                token,
                namespace,
            )
            kubeconfig_path = directory / KUBECONFIG_FILE
            write_private(
                kubeconfig_path,
                yaml.safe_dump(document, sort_keys=False, default_flow_style=False).encode("utf-8"),
            )
            cache_dir = directory / CACHE_DIR
            os.mkdir(cache_dir, 0o700)
            if sys.platform != "win32":
                os.chmod(cache_dir, 0o700)
        except BaseException:
            _remove_directory(directory)
            raise
        return cls(
            directory=directory,
            kubeconfig_path=kubeconfig_path,
            cache_dir=cache_dir,
            token=token,
            certificate_pem=listener.certificate_pem,
            key_pem=listener.key_pem,
            ca_pem=ca.certificate_pem,
            context_name=name,
        )

    def environment(self) -> dict[str, str]:
        """The variables to add to the environment of C{jump open ITEM -- CMD}."""
        return {"KUBECONFIG": str(self.kubeconfig_path), "KUBECACHEDIR": str(self.cache_dir)}

    def check_token(self, header_value: str | None) -> bool:
        """Whether an C{Authorization} header value carries this session's token."""
        if self._removed or header_value is None:
            return False
        scheme, _, credential = header_value.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credential.encode("utf-8"), self.token.encode("utf-8"))

    def remove(self) -> list[str]:
        """Delete everything the session created (best effort, idempotent, never raising)."""
        self._removed = True
        return _remove_directory(self.directory)


def sweep(root: Path) -> list[str]:
    """Remove the session directories of consoles that are gone; what was removed.

    A directory is removed when its owner process no longer runs (or its PID now
    belongs to a process that started later), or when its owner file is missing
    or corrupt and the directory is older than L{STALE_AFTER}.  Directories of a
    running console are left alone.
    """
    lines: list[str] = []
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return lines
    now = time.time()
    for directory in entries:
        try:
            if directory.is_symlink() or not directory.is_dir():
                continue
            if not _SESSION_ID.match(directory.name):
                continue
            owner = _read_owner(directory)
            if owner is None:
                age = now - directory.lstat().st_mtime
                if age <= STALE_AFTER:
                    continue
                reason = "no valid owner file"
            elif _owner_gone(owner):
                reason = f"console PID {owner.pid} is gone"
            else:
                continue
        except OSError:
            continue
        details = _remove_directory(directory)
        if not directory.exists():
            lines.append(f"removed stale Kubernetes session {directory} ({reason})")
            lines.extend(details)
    return lines


__all__ = ["CACHE_ENV", "SessionKubeconfig", "cache_root", "sweep"]
