"""The fake Kubernetes API server (L{tests.k8s.fake_apiserver}) against REAL kubectl binaries.

Oldest (1.27) and newest (1.33) kubectl from the Google Cloud SDK, each with its own HOME and
discovery cache, a kubeconfig in tmp_path pointing at the fake with its CA and bearer token.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.k8s.fake_apiserver import FakeApiServer

KUBECTL_DIR = Path("/usr/lib/google-cloud-sdk/bin")
# oldest and newest by default; K8S_KUBECTL_VERSIONS="1.27,1.28,..." widens the matrix
VERSIONS = os.environ.get("K8S_KUBECTL_VERSIONS", "1.27,1.33").split(",")
TOKEN = "sa-token"
TIMEOUT = 60


def kubectl_path(version: str) -> Path:
    path = KUBECTL_DIR / f"kubectl.{version}"
    if not path.exists():
        pytest.fail(f"kubectl {version} is not installed at {path} (apt-get install kubectl)")
    return path


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from shared import pki

    directory = tmp_path_factory.mktemp("k8s-tls")
    ca = pki.create_ca("k8s")
    server = pki.issue_server(ca, "k8s", ["127.0.0.1", "localhost"])
    paths = {
        "ca": directory / "ca.pem",
        "cert": directory / "server.pem",
        "key": directory / "server.key",
    }
    paths["ca"].write_bytes(ca.certificate_pem)
    paths["cert"].write_bytes(server.certificate_pem)
    paths["key"].write_bytes(server.key_pem)
    return paths


@pytest.fixture
def server(tls: dict[str, Path]) -> Iterator[FakeApiServer]:
    with FakeApiServer(str(tls["cert"]), str(tls["key"]), token=TOKEN) as fake:
        yield fake


class Kubectl:
    def __init__(self, version: str, home: Path, kubeconfig: Path) -> None:
        self.binary = kubectl_path(version)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "KUBECONFIG": str(kubeconfig),
            "KUBECACHEDIR": str(home / "cache"),
        }

    def env_with(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {**self.env, **(extra or {})}

    def run(
        self, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), *args],
            input=stdin.decode(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=self.env_with(env),
        )

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(self.binary), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env_with(env),
        )


def write_kubeconfig(path: Path, port: int, ca: Path, token: str) -> None:
    ca_data = base64.b64encode(ca.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "fake",
                "cluster": {
                    "server": f"https://127.0.0.1:{port}",
                    "certificate-authority-data": ca_data,
                },
            }
        ],
        "users": [{"name": "fake", "user": {"token": token}}],
        "contexts": [
            {"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}
        ],
        "current-context": "fake",
    }
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    path.chmod(0o600)


@pytest.fixture(params=VERSIONS)
def kubectl(
    request: pytest.FixtureRequest, server: FakeApiServer, tls: dict[str, Path], tmp_path: Path
) -> Kubectl:
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, server.port, tls["ca"], TOKEN)
    home = tmp_path / "home"
    home.mkdir()
    return Kubectl(request.param, home, kubeconfig)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


# ---------------------------------------------------------------------------------------------
# Direct HTTP checks (no kubectl)


def _https_get(server: FakeApiServer, ca: Path, path: str, token: str | None) -> tuple[int, dict]:
    context = ssl.create_default_context(cafile=str(ca))
    request = urllib.request.Request(f"https://127.0.0.1:{server.port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_rejects_missing_or_wrong_token(server: FakeApiServer, tls: dict[str, Path]) -> None:
    for token in (None, "wrong"):
        code, body = _https_get(server, tls["ca"], "/api/v1/namespaces/default/pods", token)
        assert code == 401
        assert body["kind"] == "Status" and body["reason"] == "Unauthorized"
    code, body = _https_get(server, tls["ca"], "/api/v1/namespaces/default/pods", TOKEN)
    assert code == 200 and [p["metadata"]["name"] for p in body["items"]] == ["web-0", "web-1"]


def test_discovery_documents(server: FakeApiServer, tls: dict[str, Path]) -> None:
    assert _https_get(server, tls["ca"], "/version", TOKEN)[1]["gitVersion"] == "v1.31.0"
    assert _https_get(server, tls["ca"], "/api", TOKEN)[1]["versions"] == ["v1"]
    groups = _https_get(server, tls["ca"], "/apis", TOKEN)[1]["groups"]
    assert [g["name"] for g in groups] == ["apps"]
    core = {r["name"] for r in _https_get(server, tls["ca"], "/api/v1", TOKEN)[1]["resources"]}
    assert {"pods", "pods/exec", "pods/log", "pods/portforward", "configmaps"} <= core
    apps = _https_get(server, tls["ca"], "/apis/apps/v1", TOKEN)[1]["resources"]
    assert apps[0]["name"] == "deployments"


def test_command_line_prints_listening_port(tls: dict[str, Path]) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.k8s.fake_apiserver",
            "--cert",
            str(tls["cert"]),
            "--key",
            str(tls["key"]),
            "--token",
            TOKEN,
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert process.stdout is not None
        event = json.loads(process.stdout.readline())
        assert event["event"] == "listening" and event["port"] > 0
        with socket.create_connection(("127.0.0.1", event["port"]), timeout=5):
            pass
    finally:
        process.terminate()
        process.wait(timeout=10)


# ---------------------------------------------------------------------------------------------
# Real kubectl


def test_get_pods(kubectl: Kubectl, server: FakeApiServer) -> None:
    out = ok(kubectl.run("get", "pods"))
    lines = out.splitlines()
    assert re.split(r"\s+", lines[0])[:3] == ["NAME", "READY", "STATUS"]
    assert lines[1].startswith("web-0") and "Running" in lines[1]
    assert lines[2].startswith("web-1")
    listing = server.requests_to("/api/v1/namespaces/default/pods")[-1]
    assert listing.header("Authorization") == f"Bearer {TOKEN}"
    assert "as=Table" in (listing.header("Accept") or "")
    assert listing.header("Kubectl-Command") == "kubectl get"
    discovery = server.requests_to("/api")[0]
    assert discovery.path == "/api" and "apidiscovery.k8s.io" in (discovery.header("Accept") or "")


def test_get_pod_json_and_impersonation_headers(kubectl: Kubectl, server: FakeApiServer) -> None:
    out = ok(
        kubectl.run(
            "get",
            "pod",
            "web-1",
            "-o",
            "json",
            "--as",
            "alice",
            "--as-group",
            "g1",
            "--as-group",
            "g2",
        )
    )
    assert json.loads(out)["metadata"]["name"] == "web-1"
    request = server.requests_to("/pods/web-1")[-1]
    assert request.header("Impersonate-User") == "alice"
    assert request.header_all("Impersonate-Group") == ["g1", "g2"]


def test_get_pods_watch_streams_then_ends(kubectl: Kubectl, server: FakeApiServer) -> None:
    process = kubectl.popen("get", "pods", "-w", "--output-watch-events")
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # the listing
        seen_before_end = []
        while True:
            line = process.stdout.readline()
            if not line:
                break
            seen_before_end.append((line, process.poll()))
        assert process.wait(timeout=TIMEOUT) == 0, process.stderr.read() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
    assert "NAME" in first or "EVENT" in first
    text = "".join(line for line, _ in seen_before_end)
    assert "ADDED" in text and "MODIFIED" in text
    assert seen_before_end[0][1] is None  # the first event arrived while the stream was open
    watch = [r for r in server.requests_to("/pods") if r.query.get("watch") == ["true"]]
    assert len(watch) == 1
    sent = watch[0].extra["sent_at"]
    assert len(sent) == 3 and sent[-1] - sent[0] >= 2 * server.watch_delay * 0.9  # not buffered


CONFIGMAP = """apiVersion: v1
kind: ConfigMap
metadata:
  name: demo
  namespace: default
data:
  key: {value}
"""


def test_apply_twice(kubectl: Kubectl, server: FakeApiServer, tmp_path: Path) -> None:
    # kubectl >= 1.29 finds server-side field validation in the fake's /openapi/v3; older ones
    # want the protobuf /openapi/v2, which the fake does not serve
    old_kubectl = kubectl.binary.name < "kubectl.1.29"
    validate = ["--validate=false"] if old_kubectl else []
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(CONFIGMAP.format(value="one"), encoding="utf-8")
    assert "configmap/demo created" in ok(kubectl.run("apply", *validate, "-f", str(manifest)))
    assert server.configmaps[("default", "demo")]["data"] == {"key": "one"}
    manifest.write_text(CONFIGMAP.format(value="two"), encoding="utf-8")
    assert "configmap/demo configured" in ok(kubectl.run("apply", *validate, "-f", str(manifest)))
    assert server.configmaps[("default", "demo")]["data"] == {"key": "two"}
    assert "configmap/demo unchanged" in ok(kubectl.run("apply", *validate, "-f", str(manifest)))
    methods = [r.method for r in server.requests_to("/configmaps")]
    assert "POST" in methods and "PATCH" in methods
    patch = next(r for r in server.requests_to("/configmaps") if r.method == "PATCH")
    assert patch.header("Content-Type") == "application/strategic-merge-patch+json"
    post = next(r for r in server.requests_to("/configmaps") if r.method == "POST")
    assert post.query["fieldValidation"] == (["Ignore"] if old_kubectl else ["Strict"])


SPDY_EXEC = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}
SPDY_PF = {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}


def _exec_upgrade(server: FakeApiServer) -> str:
    upgrades = [r for r in server.requests_to("/exec") if r.status == 101]
    assert len(upgrades) == 1
    return (upgrades[0].header("Upgrade") or "").lower()


@pytest.mark.parametrize("env", [None, SPDY_EXEC], ids=["default", "spdy"])
def test_exec_cat_with_stdin(kubectl: Kubectl, server: FakeApiServer, env: dict | None) -> None:
    out = ok(kubectl.run("exec", "-i", "web-0", "--", "cat", stdin=b"hi\nthere\n", env=env))
    assert out == "hi\nthere\n"
    expected = "websocket" if env is None and kubectl.binary.name >= "kubectl.1.30" else "spdy/3.1"
    assert _exec_upgrade(server) == expected


@pytest.mark.parametrize("env", [None, SPDY_EXEC], ids=["default", "spdy"])
def test_exec_exit_status(kubectl: Kubectl, server: FakeApiServer, env: dict | None) -> None:
    result = kubectl.run("exec", "web-0", "--", "sh", "-c", "exit 3", env=env)
    assert result.returncode == 3, (result.stdout, result.stderr)
    result = kubectl.run("exec", "web-0", "--", "echo", "hello", "world", env=env)
    assert ok(result) == "hello world\n"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _echo_through(port: int, payload: bytes, deadline: float) -> bytes:
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(payload)
                received = b""
                while len(received) < len(payload):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    received += chunk
                return received
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize("env", [None, SPDY_PF], ids=["default", "spdy"])
def test_port_forward_echo(kubectl: Kubectl, server: FakeApiServer, env: dict | None) -> None:
    local = _free_port()
    process = kubectl.popen("port-forward", "pod/web-0", f"{local}:8080", env=env)
    try:
        deadline = time.monotonic() + TIMEOUT
        assert _echo_through(local, b"ping-1", deadline) == b"ping-1"
        big = os.urandom(200_000)
        assert _echo_through(local, big, deadline) == big
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert "8080" in server.forwarded_ports
    upgrades = [r for r in server.requests_to("/portforward") if r.status == 101]
    assert upgrades
    expected = "websocket" if env is None and kubectl.binary.name >= "kubectl.1.31" else "spdy/3.1"
    assert (upgrades[0].header("Upgrade") or "").lower() == expected
