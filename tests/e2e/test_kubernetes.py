"""End to end: real kubectl through `jump open` and `jumpoint serve` to a test API server.

No Kubernetes API server can be installed here, so the cluster is
`tests/k8s/fake_apiserver.py`, which speaks the real HTTPS/JSON API, watches,
exec and port-forward over WebSocket and SPDY, and records every request.
kubectl is the real binary, in its oldest and newest installed versions.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Deployment, Process, audit_until, port_open, wait_until
from tests.k8s.fake_apiserver import FakeApiServer
from tests.tds import clients

KUBECTL_DIR = Path("/usr/lib/google-cloud-sdk/bin")
VERSIONS = ("1.27", "1.33")
TOKEN = "cluster-sa-token-0123456789"
KUBECTL_DROP = "Unknown stream id"
"""What kubectl's WebSocket client logs when it discards a frame that came before its streams."""


def kubectl(version: str) -> str:
    path = KUBECTL_DIR / f"kubectl.{version}"
    assert path.is_file(), f"kubectl {version} is not installed at {path}"
    return str(path)


@dataclass
class Cluster:
    deployment: Deployment
    server: FakeApiServer
    root: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = self.deployment.env(JUMP_CACHE_DIR=str(self.root / "cache"), **extra)
        env["HOME"] = str(self.root / "home-dir")
        return env

    def open(self, item: str = "prod-k8s", *args: str) -> Process:
        process = Process(
            [*self.deployment_tool("jump"), "open", item, "--json", *args], self.env()
        )
        self.deployment.processes.append(process)
        return process

    def deployment_tool(self, name: str) -> list[str]:
        from tests.e2e.harness import tool

        return tool(name)

    def run(self, *args: str, timeout: float = 90, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.deployment_tool("jump"), *args],
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def audit(self, *args: str) -> list[dict[str, Any]]:
        result = self.deployment.jumpoint("audit", "--json", *args)
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture
def cluster(deployment: Deployment, tmp_path: Path) -> Iterator[Cluster]:
    tls = clients.write_tls_files(tmp_path)
    (tmp_path / "home-dir").mkdir()
    server = FakeApiServer(tls.cert, tls.key, token=TOKEN).start()
    try:
        token_file = tmp_path / "k8s.token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        ca_pem = Path(tls.ca).read_text()
        base = {
            "type": "k8s",
            "url": f"https://127.0.0.1:{server.port}",
            "ca_pem": ca_pem,
            "namespace": "default",
            "local_address": "127.0.0.5",
        }
        deployment.items = [
            {"name": "prod-k8s", **base},
            {"name": "viewer-k8s", **base, "read_only_access": True},
            {"name": "as-user-k8s", **base, "impersonate": True},
        ]
        deployment.sections = {
            "credentials": [
                {"item": name, "type": "token", "token_file": str(token_file)}
                for name in ("prod-k8s", "viewer-k8s", "as-user-k8s")
            ]
        }
        deployment.create().serve()
        yield Cluster(deployment, server, tmp_path)
    finally:
        server.stop()


def _ready(process: Process) -> tuple[str, dict[str, Any]]:
    ready = process.wait_for_event("ready")
    kubeconfig = ready["kubeconfig"]
    assert Path(kubeconfig).is_file()
    return kubeconfig, ready


def _only_the_jumpoint_credential(cluster: Cluster) -> None:
    requests = cluster.server.requests
    assert requests
    for request in requests:
        assert request.header("Authorization") == f"Bearer {TOKEN}", request.path
        assert not [name for name, _ in request.headers if name.lower().startswith("impersonate")]
        assert request.header("X-Forwarded-For") is None


@pytest.mark.parametrize("version", VERSIONS)
def test_kubectl_through_the_tunnel(cluster: Cluster, tmp_path: Path, version: str) -> None:
    binary = kubectl(version)
    session = cluster.open()
    config, ready = _ready(session)
    env = dict(os.environ, KUBECONFIG=config, HOME=str(tmp_path / "home-dir"))

    def run(*args: str, stdin: str | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, *args],
            env={**env, **extra},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    pods = run("get", "pods")
    assert pods.returncode == 0, pods.stderr
    assert "web-0" in pods.stdout and "STATUS" in pods.stdout
    watched = run("get", "pods", "-w")
    assert watched.returncode == 0, watched.stderr
    assert "web-0" in watched.stdout
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: default}\n"
        "data: {a: '1'}\n"
    )
    extra_flags = ["--validate=false"] if version in ("1.27", "1.28") else []
    first = run("apply", "-f", str(manifest), *extra_flags)
    assert first.returncode == 0 and "created" in first.stdout, first.stderr
    manifest.write_text(manifest.read_text().replace("'1'", "'2'"))
    second = run("apply", "-f", str(manifest), *extra_flags)
    assert second.returncode == 0 and "configured" in second.stdout, second.stderr
    echoed = run("exec", "-i", "web-0", "--", "cat", stdin="hello through the jumpoint\n")
    assert echoed.returncode == 0 and "hello through the jumpoint" in echoed.stdout, echoed.stderr
    failed = run("exec", "web-0", "--", "sh", "-c", "exit 3")
    assert failed.returncode == 3, failed.stderr
    spdy = run(
        "exec",
        "-i",
        "web-0",
        "--",
        "cat",
        stdin="over spdy\n",
        KUBECTL_REMOTE_COMMAND_WEBSOCKETS="false",
    )
    assert spdy.returncode == 0 and "over spdy" in spdy.stdout, spdy.stderr
    impersonating = run("get", "pods", "--as", "evil", "--as-group", "system:masters")
    assert impersonating.returncode == 0, impersonating.stderr
    _only_the_jumpoint_credential(cluster)
    rows = audit_until(
        cluster.deployment,
        lambda found: (
            any(r.get("subresource") == "exec" for r in found)
            and any(r["verb"] == "watch" for r in found)
        ),
        "--event",
        "k8s_request",
    )
    verbs = {(r["verb"], r.get("resource"), r.get("subresource")) for r in rows}
    assert ("list", "pods", "") in verbs or ("list", "pods", None) in verbs
    assert ("watch", "pods", "") in verbs or ("watch", "pods", None) in verbs
    assert any(v == "create" and s == "exec" for v, _, s in verbs)
    one = next(r for r in rows if r["verb"] == "list")
    for key in ("method", "path", "api_version", "namespace", "status", "duration", "session"):
        assert key in one, key
    assert one["session"] == ready["session"] and one["status"] == 200
    assert any(r.get("kubectl_command") for r in rows)
    assert TOKEN not in json.dumps(cluster.audit())
    session.stop()


def test_port_forward_through_the_tunnel(cluster: Cluster, tmp_path: Path) -> None:
    binary = kubectl(VERSIONS[-1])
    session = cluster.open()
    config, _ = _ready(session)
    for websockets in ("true", "false"):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            local = probe.getsockname()[1]
        forward = subprocess.Popen(
            [binary, "port-forward", "pod/web-0", f"{local}:8080"],
            env=dict(
                os.environ,
                KUBECONFIG=config,
                HOME=str(tmp_path / "home-dir"),
                KUBECTL_PORT_FORWARD_WEBSOCKETS=websockets,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(lambda port=local: port_open("127.0.0.1", port), what="port-forward")
            with socket.create_connection(("127.0.0.1", local), timeout=10) as connection:
                connection.sendall(b"forwarded bytes")
                received = b""
                while len(received) < len(b"forwarded bytes"):
                    chunk = connection.recv(100)
                    if not chunk:
                        break
                    received += chunk
            assert received == b"forwarded bytes"
        finally:
            forward.terminate()
            forward.wait(10)
    audit_until(
        cluster.deployment,
        lambda rows: any(
            r.get("subresource") == "portforward" and r["verb"] == "create" for r in rows
        ),
        "--event",
        "k8s_request",
    )


def test_policy_denials_print_forbidden(cluster: Cluster, tmp_path: Path) -> None:
    binary = kubectl(VERSIONS[-1])
    session = cluster.open("viewer-k8s")
    config, _ = _ready(session)
    env = dict(os.environ, KUBECONFIG=config, HOME=str(tmp_path / "home-dir"))
    before = len(cluster.server.requests_to("/exec"))
    exec_denied = subprocess.run(
        [binary, "exec", "web-0", "--", "echo", "x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert exec_denied.returncode != 0
    assert "Forbidden" in exec_denied.stderr and "k8s.read_only" in exec_denied.stderr
    assert len(cluster.server.requests_to("/exec")) == before  # never reached the cluster
    secrets = subprocess.run(
        [binary, "get", "secrets"], env=env, capture_output=True, text=True, timeout=60
    )
    assert secrets.returncode != 0 and "Forbidden" in secrets.stderr
    assert "k8s.denied_resources" in secrets.stderr
    audit_until(
        cluster.deployment,
        lambda denials: {d["rule"] for d in denials} >= {"k8s.read_only", "k8s.denied_resources"},
        "--event",
        "k8s_denied",
    )


def test_no_token_or_a_wrong_host_never_reaches_the_cluster(cluster: Cluster) -> None:
    session = cluster.open()
    _config, ready = _ready(session)
    port = ready["tunnels"][0]["local_port"]
    count = len(cluster.server.requests)
    for args in (
        [],  # no token at all
        ["-H", "Authorization: Bearer not-the-session-token"],
        ["-H", "Host: evil.example"],
    ):
        answer = subprocess.run(
            ["curl", "-sk", "--max-time", "10", *args, f"https://127.0.0.5:{port}/api/v1/pods"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert '"code":401' in answer.stdout.replace(" ", ""), answer.stdout
    assert len(cluster.server.requests) == count


def test_the_kubeconfig_is_gone_after_every_kind_of_end(cluster: Cluster) -> None:
    # -- CMD: KUBECONFIG and KUBECACHEDIR set for the command, removed afterwards
    ran = cluster.run(
        "open",
        "prod-k8s",
        "--",
        "sh",
        "-c",
        f'{kubectl(VERSIONS[-1])} get pods && echo "CONFIG=$KUBECONFIG CACHE=$KUBECACHEDIR"',
    )
    assert ran.returncode == 0, ran.stderr
    line = next(x for x in ran.stdout.splitlines() if x.startswith("CONFIG="))
    config = Path(line.split()[0].split("=", 1)[1])
    cache = Path(line.split()[1].split("=", 1)[1])
    assert not config.exists() and not cache.exists()
    assert "removed kubeconfig" in ran.stderr
    # SIGTERM
    session = cluster.open()
    config_path, ready = _ready(session)
    port = ready["tunnels"][0]["local_port"]
    session.signal(signal.SIGTERM)
    session.wait()
    assert not Path(config_path).exists()
    assert not port_open("127.0.0.5", port)
    closed = session.wait_for_event("closed")
    assert any("kubeconfig" in line for line in closed.get("removed", []))
    # a crash: swept and reported at the next start
    crashed = cluster.open()
    crashed_config, _ = _ready(crashed)
    os.killpg(crashed.pid, signal.SIGKILL)
    crashed.wait()
    assert Path(crashed_config).exists()
    later = cluster.run("open", "prod-k8s", "--for", "1s")
    assert later.returncode == 0, later.stderr
    assert "removed" in later.stderr and not Path(crashed_config).exists()
    assert not (cluster.root / "home-dir" / ".kube").exists()  # ~/.kube is never touched


def test_impersonation_names_the_jump_user(cluster: Cluster, tmp_path: Path) -> None:
    session = cluster.open("as-user-k8s")
    config, _ = _ready(session)
    ran = subprocess.run(
        [kubectl(VERSIONS[-1]), "get", "pods", "--as", "evil"],
        env=dict(os.environ, KUBECONFIG=config, HOME=str(tmp_path / "home-dir")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    request = cluster.server.requests_to("/pods")[-1]
    assert request.header("Authorization") == f"Bearer {TOKEN}"
    assert request.header_all("Impersonate-User") == ["alice"]  # never the client's --as
    assert "default" in request.header_all("Impersonate-Group")


def _session_token(config: str) -> str:
    import yaml

    document = yaml.safe_load(Path(config).read_text())
    token: str = document["users"][0]["user"]["token"]
    return token


def _curl(*args: str) -> str:
    answer = subprocess.run(
        ["curl", "-sk", "-i", "--path-as-is", "--max-time", "10", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return answer.stdout


def test_a_double_slash_path_is_refused_400_and_audited_before_policy(cluster: Cluster) -> None:
    """Issue 9, point 1: `//api/...` once read as a host by urlsplit and bypassed the policy."""
    session = cluster.open("viewer-k8s")
    config, ready = _ready(session)
    port = ready["tunnels"][0]["local_port"]
    auth = f"Authorization: Bearer {_session_token(config)}"
    base = f"https://127.0.0.5:{port}"
    count = len(cluster.server.requests)
    secrets = _curl("-H", auth, f"{base}//api/v1/namespaces/default/secrets")
    assert secrets.startswith("HTTP/1.1 400 "), secrets
    assert '"code":400' in secrets.replace(" ", "") and "SecretList" not in secrets
    exec_ws = _curl(
        "-H",
        auth,
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Sec-WebSocket-Version: 13",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "-H",
        "Sec-WebSocket-Protocol: v5.channel.k8s.io",
        f"{base}//api/v1/namespaces/default/pods/web-1/exec?command=id&stdout=true",
    )
    assert exec_ws.startswith("HTTP/1.1 400 "), exec_ws
    assert " 101 " not in exec_ws
    assert len(cluster.server.requests) == count  # nothing reached the cluster
    denied = audit_until(
        cluster.deployment,
        lambda rows: len([r for r in rows if r["rule"] == "k8s.path"]) >= 2,
        "--event",
        "k8s_denied",
    )
    paths = sorted(r["path"] for r in denied if r["rule"] == "k8s.path")
    assert paths == [
        "//api/v1/namespaces/default/pods/web-1/exec",
        "//api/v1/namespaces/default/secrets",
    ]
    assert all(r["session"] == ready["session"] for r in denied)
    session.stop()


def _long_running(
    cluster: Cluster, config: str, tmp_path: Path, what: str
) -> subprocess.Popen[str]:
    """A kubectl command that keeps a request open at the cluster until the session ends."""
    env = dict(os.environ, KUBECONFIG=config, HOME=str(tmp_path / "home-dir"))
    binary = kubectl(VERSIONS[-1])
    if what == "exec":
        args = ["exec", "-i", "web-0", "--", "cat"]
    elif what == "exec-spdy":
        args = ["exec", "-i", "web-0", "--", "cat"]
        env["KUBECTL_REMOTE_COMMAND_WEBSOCKETS"] = "false"
    elif what == "attach":
        args = ["attach", "-i", "web-0"]
    elif what == "port-forward":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            local = probe.getsockname()[1]
        args = ["port-forward", "pod/web-0", f"{local}:8080"]
    else:
        args = ["get", "pods", "-w"]
    process = subprocess.Popen(
        [binary, *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    subresource = {"exec": "/exec", "exec-spdy": "/exec", "attach": "/attach"}.get(what)
    if what == "port-forward":
        subresource = "/portforward"
    if subresource is not None:
        wait_until(
            lambda: any(r.status == 101 for r in cluster.server.requests_to(subresource or "")),
            what=f"{what} upgraded at the cluster",
        )
    else:
        wait_until(
            lambda: any(r.query.get("watch") for r in cluster.server.requests_to("/pods")),
            what="the watch at the cluster",
        )
    return process


def test_every_request_that_reached_the_cluster_has_one_row_however_the_session_ends(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Issue 9, point 2: exec, attach, port-forward and watch cut by each kind of session end."""
    cluster.server.watch_delay = 0.5
    cluster.server.watch_events = 60  # a watch that outlives its session
    ends = [
        ("exec", "SIGTERM"),
        ("attach", "Ctrl-C"),
        ("port-forward", "jump close"),
        ("watch", "--for"),
        ("exec-spdy", "revocation"),  # last: alice is revoked
    ]
    kubectls: list[subprocess.Popen[str]] = []
    sessions: list[str] = []
    try:
        for what, end in ends:
            session = cluster.open("prod-k8s", *(["--for", "6s"] if end == "--for" else []))
            config, ready = _ready(session)
            sessions.append(ready["session"])
            kubectls.append(_long_running(cluster, config, tmp_path, what))
            if end == "SIGTERM":
                session.signal(signal.SIGTERM)
            elif end == "Ctrl-C":
                session.signal(signal.SIGINT)
            elif end == "jump close":
                closed = cluster.run("close", ready["session"])
                assert closed.returncode == 0, closed.stderr
            elif end == "revocation":
                cluster.deployment.jumpoint("user", "revoke", "alice")
            session.wait_for_event("closed", timeout=30)
            session.wait()
    finally:
        for process in kubectls:
            if process.poll() is None:
                process.kill()
            process.wait(10)
    # one to one: every request the cluster saw has exactly one row
    seen = sorted((r.method, r.path) for r in cluster.server.requests)

    def requests(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            r
            for r in rows
            if r.get("event") in ("k8s_request", "k8s_discovery") and r.get("session") in sessions
        ]

    rows = requests(
        audit_until(cluster.deployment, lambda found: len(requests(found)) >= len(seen))
    )
    assert sorted((r["method"], r["path"]) for r in rows) == seen
    cut = [r for r in rows if r.get("event") == "k8s_request" and r.get("ended") == "aborted"]
    cut_kinds = {(r["verb"], r.get("subresource") or "") for r in cut}
    assert {("create", "exec"), ("create", "attach"), ("create", "portforward")} <= cut_kinds
    assert ("watch", "") in cut_kinds
    # the status so far: an exec cut before its 101 came back through the Jumpoint has none
    assert all(r["status"] in (None, 101, 200) for r in cut)
    assert all(r["bytes_out"] > 0 for r in cut if r["status"] is not None)


def test_short_execs_in_a_loop_print_every_byte_and_have_every_row(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Issue 9, point 17: `exec -- echo` printed nothing now and then; real kubectl, both protocols.

    The loss was kubectl's own: its WebSocket client (client-go before
    kubernetes/kubernetes#131203; every kubectl installed here, 1.30 to 1.33)
    starts reading frames before it has made its streams and discards a frame
    that comes before them, logging KUBECTL_DROP; the exec then prints nothing
    and exits 0, or fails with "closed all streams".  It happens as often
    without any tunnel (scripts/kube_exec_stress.sh --direct).  Such an exec
    got its frames (kubectl says it discarded one), so it is told apart; any
    other missing byte fails, and every exec needs its row.
    """
    binary = kubectl(VERSIONS[-1])
    session = cluster.open()
    config, ready = _ready(session)
    env = dict(os.environ, KUBECONFIG=config, HOME=str(tmp_path / "home-dir"))
    runs = 10
    discarded = []
    for n in range(runs):
        for websockets in ("true", "false"):
            ran = subprocess.run(
                [binary, "exec", "web-0", "--", "echo", f"hello-{n}-{websockets}"],
                env={**env, "KUBECTL_REMOTE_COMMAND_WEBSOCKETS": websockets},
                capture_output=True,
                text=True,
                timeout=60,
            )
            if websockets == "true" and KUBECTL_DROP in ran.stderr:
                discarded.append((n, ran.returncode, ran.stdout, ran.stderr))
                continue
            assert ran.returncode == 0, ran.stderr
            assert ran.stdout == f"hello-{n}-{websockets}\n", (n, websockets, ran.stdout)
    assert len(discarded) <= 2, discarded  # about one exec in 300 (kubectl's race)
    rows = audit_until(
        cluster.deployment,
        lambda found: len([r for r in found if r.get("subresource") == "exec"]) >= 2 * runs,
        "--event",
        "k8s_request",
    )
    execs = [r for r in rows if r.get("subresource") == "exec" and r["session"] == ready["session"]]
    assert len(execs) == 2 * runs == len(cluster.server.requests_to("/exec"))
    assert all(r["status"] == 101 and r["ended"] == "complete" for r in execs), [
        (r["status"], r["ended"], r.get("reason"), r.get("bytes_in"), r.get("bytes_out"))
        for r in execs
        if r["status"] != 101 or r["ended"] != "complete"
    ]
    session.stop()
