"""The console's per-session kubeconfig for Kubernetes items: files, modes, kubectl, cleanup."""

from __future__ import annotations

import base64
import http.server
import json
import os
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from console import kubeconfig as kube_session
from console.kubeconfig import SessionKubeconfig, cache_root, sweep

KUBECTL = Path("/usr/lib/google-cloud-sdk/bin/kubectl.1.33")
VIEW = ["config", "view", "--minify", "--raw", "-o", "json"]
POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _kubectl() -> str:
    # Deliberately not a skip: the test machine must have the real binary.
    assert KUBECTL.is_file(), f"kubectl missing at {KUBECTL}"
    return str(KUBECTL)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake $HOME with a ~/.kube/config that must stay as it is."""
    directory = tmp_path / "home"
    (directory / ".kube").mkdir(parents=True)
    (directory / ".kube" / "config").write_text("# the user's own config\n", encoding="utf-8")
    monkeypatch.setenv("HOME", str(directory))
    monkeypatch.setenv("KUBECONFIG", "/the/users/own/kubeconfig")
    monkeypatch.delenv("JUMP_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return directory


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "kube"


@pytest.fixture
def session(root: Path) -> Iterator[SessionKubeconfig]:
    created = SessionKubeconfig.create(root, "s1", "prod-cluster", "127.0.0.5", 18443, "web")
    yield created
    created.remove()


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(directory.rglob("*"))
    }


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _write_owner(directory: Path, owner: dict[str, Any] | str) -> None:
    text = owner if isinstance(owner, str) else json.dumps(owner)
    (directory / "owner").write_text(text, encoding="utf-8")


def _age(directory: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(directory, (past, past))


# -- cache_root ---------------------------------------------------------------------------------


@POSIX_ONLY
def test_cache_root_locations(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_root() == home / ".cache" / "jump" / "kube"
    assert _mode(cache_root()) == 0o700
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "jump" / "kube"
    monkeypatch.setenv("JUMP_CACHE_DIR", str(tmp_path / "explicit"))
    assert cache_root() == tmp_path / "explicit"
    assert _mode(tmp_path / "explicit") == 0o700


# -- create ------------------------------------------------------------------------------------


@POSIX_ONLY
def test_modes(session: SessionKubeconfig) -> None:
    assert _mode(session.directory) == 0o700
    assert _mode(session.cache_dir) == 0o700
    assert _mode(session.kubeconfig_path) == 0o600
    assert _mode(session.directory / "server.key") == 0o600
    assert _mode(session.directory / "owner") == 0o600
    assert sorted(p.name for p in session.directory.iterdir()) == [
        "ca.pem",
        "cache",
        "kubeconfig",
        "owner",
        "server.key",
        "server.pem",
    ]
    # The CA's key is never written anywhere.
    for path in session.directory.iterdir():
        if path.is_file() and path.name != "server.key":
            assert b"PRIVATE KEY" not in path.read_bytes()


def test_paths_and_attributes(root: Path, session: SessionKubeconfig) -> None:
    assert session.directory == root / "s1"
    assert session.kubeconfig_path == root / "s1" / "kubeconfig"
    assert session.cache_dir == root / "s1" / "cache"
    assert session.cache_dir.is_dir()
    assert (session.directory / "server.key").read_bytes() == session.key_pem
    assert (session.directory / "server.pem").read_bytes() == session.certificate_pem
    assert (session.directory / "ca.pem").read_bytes() == session.ca_pem
    assert len(session.token) >= 43
    assert session.environment() == {
        "KUBECONFIG": str(root / "s1" / "kubeconfig"),
        "KUBECACHEDIR": str(root / "s1" / "cache"),
    }
    owner = json.loads((session.directory / "owner").read_text(encoding="utf-8"))
    assert owner["pid"] == os.getpid()
    assert abs(owner["created"] - time.time()) < 60


def test_listener_certificate(session: SessionKubeconfig) -> None:
    certificate = x509.load_pem_x509_certificate(session.certificate_pem)
    ca = x509.load_pem_x509_certificate(session.ca_pem)
    assert certificate.issuer == ca.subject
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.5"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_kubeconfig_structure(session: SessionKubeconfig) -> None:
    document = yaml.safe_load(session.kubeconfig_path.read_text(encoding="utf-8"))
    ca_data = document["clusters"][0]["cluster"]["certificate-authority-data"]
    assert base64.b64decode(ca_data) == session.ca_pem
    assert document == {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "jump-prod-cluster",
                "cluster": {
                    "server": "https://127.0.0.5:18443",
                    "certificate-authority-data": ca_data,
                },
            }
        ],
        "users": [{"name": "jump-prod-cluster", "user": {"token": session.token}}],
        "contexts": [
            {
                "name": "jump-prod-cluster",
                "context": {
                    "cluster": "jump-prod-cluster",
                    "user": "jump-prod-cluster",
                    "namespace": "web",
                },
            }
        ],
        "current-context": "jump-prod-cluster",
        "preferences": {},
    }


def test_kubeconfig_without_namespace_and_ipv6(root: Path) -> None:
    created = SessionKubeconfig.create(root, "s2", "c", "::1", 6443, None)
    document = yaml.safe_load(created.kubeconfig_path.read_text(encoding="utf-8"))
    assert document["clusters"][0]["cluster"]["server"] == "https://[::1]:6443"
    assert document["contexts"][0]["context"] == {"cluster": "jump-c", "user": "jump-c"}
    created.remove()


def test_tokens_differ_between_sessions(root: Path) -> None:
    a = SessionKubeconfig.create(root, "a", "c", "127.0.0.1", 1, None)
    b = SessionKubeconfig.create(root, "b", "c", "127.0.0.1", 1, None)
    assert a.token != b.token
    assert a.ca_pem != b.ca_pem


def test_bad_session_id_and_existing_directory(root: Path, session: SessionKubeconfig) -> None:
    for bad in ("", "../x", "a/b", ".hidden", "x" * 200):
        with pytest.raises(ValueError):
            SessionKubeconfig.create(root, bad, "c", "127.0.0.1", 1, None)
    before = _snapshot(session.directory)
    with pytest.raises(FileExistsError):
        SessionKubeconfig.create(root, "s1", "c", "127.0.0.1", 1, None)
    assert _snapshot(session.directory) == before


# -- real kubectl ------------------------------------------------------------------------------


def test_kubectl_config_view(home: Path, session: SessionKubeconfig) -> None:
    result = subprocess.run(
        [_kubectl(), "--kubeconfig", str(session.kubeconfig_path), *VIEW],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    view = json.loads(result.stdout)
    assert view["current-context"] == "jump-prod-cluster"
    assert view["clusters"][0]["cluster"]["server"] == "https://127.0.0.5:18443"
    assert view["users"] == [{"name": "jump-prod-cluster", "user": {"token": session.token}}]
    assert view["contexts"][0]["context"]["namespace"] == "web"
    assert (
        base64.b64decode(view["clusters"][0]["cluster"]["certificate-authority-data"])
        == session.ca_pem
    )


class _FakeApi(http.server.BaseHTTPRequestHandler):
    """Just enough of an API server for `kubectl api-resources`."""

    session: SessionKubeconfig
    seen: list[tuple[str, bool]]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        authorized = self.session.check_token(self.headers.get("Authorization"))
        self.seen.append((self.path.split("?")[0], authorized))
        if not authorized:
            self._json(
                401, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 401}
            )
            return
        path = self.path.split("?")[0]
        if path == "/api":
            self._json(
                200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
            )
        elif path == "/apis":
            self._json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
        elif path == "/api/v1":
            resource = {
                "name": "pods",
                "singularName": "pod",
                "namespaced": True,
                "kind": "Pod",
                "verbs": ["get", "list"],
            }
            self._json(
                200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": [resource]}
            )
        else:
            self._json(
                404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}
            )


def test_kubectl_trusts_listener_and_sends_token(home: Path, root: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeApi)
    port = server.server_address[1]
    created = SessionKubeconfig.create(root, "live", "c1", "127.0.0.1", port, "default")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(created.directory / "server.pem", created.directory / "server.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    seen: list[tuple[str, bool]] = []
    handler = type("Handler", (_FakeApi,), {"session": created, "seen": seen})
    server.RequestHandlerClass = handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        environment |= created.environment()
        environment["KUBECTL_COMMAND_HEADERS"] = "false"
        result = subprocess.run(
            [_kubectl(), "api-resources", "--no-headers"],
            capture_output=True,
            text=True,
            timeout=60,
            env=environment,
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "pods"
    assert seen and all(authorized for _, authorized in seen)
    # Discovery was cached in the session, not in ~/.kube/cache.
    assert list(created.cache_dir.rglob("*.json"))
    assert _snapshot(home / ".kube") == {"config": b"# the user's own config\n"}
    lines = created.remove()
    assert any(line.startswith(f"removed cache {created.cache_dir} (") for line in lines)
    assert not created.directory.exists()


# -- check_token -------------------------------------------------------------------------------


def test_check_token(session: SessionKubeconfig) -> None:
    token = session.token
    assert session.check_token(f"Bearer {token}")
    assert session.check_token(f"bearer {token}")
    for wrong in (
        None,
        "",
        token,
        f"Basic {token}",
        f"Bearer {token}x",
        f"Bearer {token[:-1]}",
        f"Bearer  {token}",
        f"Bearer {token} ",
        "Bearer ",
        "Bearer é",
    ):
        assert not session.check_token(wrong), wrong
    session.remove()
    assert not session.check_token(f"Bearer {token}")


# -- remove ------------------------------------------------------------------------------------


def test_remove(root: Path, session: SessionKubeconfig) -> None:
    (session.cache_dir / "discovery" / "127.0.0.5_18443").mkdir(parents=True)
    (session.cache_dir / "discovery" / "127.0.0.5_18443" / "servergroups.json").write_text("{}")
    (session.cache_dir / "http").mkdir()
    (session.cache_dir / "http" / "x").write_text("")
    (session.directory / "kubeconfig.lock").write_text("")
    lines = session.remove()
    assert lines == [
        f"removed kubeconfig {session.kubeconfig_path}",
        f"removed cache {session.cache_dir} (2 files)",
        "removed session keys",
    ]
    assert not session.directory.exists()
    assert list(root.iterdir()) == []
    assert session.remove() == []
    assert session.remove() == []


def test_remove_after_someone_else_deleted_parts(session: SessionKubeconfig) -> None:
    session.kubeconfig_path.unlink()
    assert session.remove() == [
        f"removed cache {session.cache_dir} (0 files)",
        "removed session keys",
    ]
    assert not session.directory.exists()


def test_console_environment_and_home_untouched(home: Path, root: Path) -> None:
    before = _snapshot(home)
    environment = dict(os.environ)
    created = SessionKubeconfig.create(root, "h", "c", "127.0.0.1", 1, "ns")
    created.environment()
    created.remove()
    assert dict(os.environ) == environment
    assert os.environ["KUBECONFIG"] == "/the/users/own/kubeconfig"
    assert "KUBECACHEDIR" not in os.environ
    assert _snapshot(home) == before


# -- sweep -------------------------------------------------------------------------------------


def test_sweep_dead_owner_removed_live_kept(root: Path) -> None:
    live = SessionKubeconfig.create(root, "live", "c", "127.0.0.1", 1, None)
    dead = SessionKubeconfig.create(root, "dead", "c", "127.0.0.1", 2, None)
    pid = _dead_pid()
    _write_owner(dead.directory, {"pid": pid, "process_start": None, "created": time.time()})
    lines = sweep(root)
    assert (
        lines[0] == f"removed stale Kubernetes session {dead.directory} (console PID {pid} is gone)"
    )
    assert f"removed kubeconfig {dead.kubeconfig_path}" in lines
    assert not dead.directory.exists()
    assert live.directory.is_dir() and live.kubeconfig_path.is_file()
    assert sweep(root) == []
    assert live.directory.is_dir()
    live.remove()


def test_sweep_reused_pid(root: Path) -> None:
    created = SessionKubeconfig.create(root, "reused", "c", "127.0.0.1", 1, None)
    if kube_session._process_start(os.getpid()) is None:
        pytest.skip("no process start time on this platform")
    # Our own PID, but written by a process that started at another time.
    _write_owner(created.directory, {"pid": os.getpid(), "process_start": "linux:1", "created": 0})
    assert sweep(root)[0].endswith(f"(console PID {os.getpid()} is gone)")
    assert not created.directory.exists()


@pytest.mark.parametrize(
    "owner",
    [
        "",
        "not json",
        "[]",
        "{}",
        '{"pid": "12"}',
        '{"pid": -1}',
        '{"pid": true}',
        '{"pid": 12, "process_start": 5}',
        '{"pid": 12, "created": "yesterday"}',
        None,
    ],
)
def test_sweep_corrupt_or_missing_owner(root: Path, owner: str | None) -> None:
    created = SessionKubeconfig.create(root, "broken", "c", "127.0.0.1", 1, None)
    if owner is None:
        (created.directory / "owner").unlink()
    else:
        _write_owner(created.directory, owner)
    _age(created.directory, 600)
    assert sweep(root) == []
    assert created.kubeconfig_path.is_file()
    _age(created.directory, 2 * 3600)
    lines = sweep(root)
    assert lines[0] == f"removed stale Kubernetes session {created.directory} (no valid owner file)"
    assert not created.directory.exists()


def test_sweep_ignores_other_entries(root: Path, tmp_path: Path) -> None:
    root.mkdir(parents=True)
    (root / "file").write_text("x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("x")
    _age(elsewhere, 2 * 3600)
    (root / "link").symlink_to(elsewhere)
    (root / ".hidden").mkdir()
    _age(root / ".hidden", 2 * 3600)
    assert sweep(root) == []
    assert (root / "file").is_file()
    assert (elsewhere / "keep").is_file()
    assert (root / ".hidden").is_dir()
    assert sweep(tmp_path / "missing") == []
