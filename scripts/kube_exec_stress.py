"""Stress loop of short `kubectl exec -- echo` runs through real `jump open` and `jumpoint serve`.

Issue 9, point 17: an exec printed nothing (exit 0) now and then, or had no
audit row.  This runs N execs per kubectl version and protocol (WebSocket,
and SPDY via KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false) against the test API
server, optionally several at once, with busy loops on the other cores or
with GOMAXPROCS raised for kubectl (which makes kubectl's own race below
likelier), then checks one to one:

  - every exec exited 0 and printed exactly its own line;
  - every exec the test API server recorded has exactly one k8s_request row
    (status 101, upgraded, ended complete), matched by its command line
    (`jumpoint audit --limit` is raised: its default shows the newest 1000
    events only, so the oldest rows of a long run would look missing).

kubectl's WebSocket client up to 1.33 (client-go before
kubernetes/kubernetes#131203) starts reading frames before it has made its
streams, and drops a frame that comes in before them, logging "Unknown
stream id N, discarding message": an exec then prints nothing and exits 0
(or fails with "closed all streams").  That frame reached kubectl, so such
runs are counted apart (kubectl_dropped) and are no failure of the tunnel;
`--direct` runs kubectl straight to the test API server, without any
tunnel, to show the same drops happen there.

Opt-in (minutes, not CI): `bash scripts/kube_exec_stress.sh [N] [options]`.
Exit status 0 when the tunnel lost nothing; the last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.harness import Deployment, Process, tool, wait_until
from tests.k8s.fake_apiserver import FakeApiServer
from tests.tds import clients

KUBECTL_DIR = Path("/usr/lib/google-cloud-sdk/bin")
TOKEN = "cluster-sa-token-0123456789"
KUBECTL_DROP = "Unknown stream id"
"""What kubectl logs when it discards a frame that came before its streams existed."""


def _busy(stop: Any) -> None:
    while not stop.is_set():
        sum(range(10000))


def _direct_kubeconfig(port: int, ca: str) -> str:
    """A kubeconfig straight to the test API server (with the cluster's own token)."""
    data = base64.b64encode(Path(ca).read_bytes()).decode()
    cluster = {"server": f"https://127.0.0.1:{port}", "certificate-authority-data": data}
    context = {"cluster": "c", "user": "u", "namespace": "default"}
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": "u", "user": {"token": TOKEN}}],
            "contexts": [{"name": "c", "context": context}],
            "current-context": "c",
        }
    )


def _exec_rows(deployment: Deployment, limit: int = 1_000_000) -> list[dict[str, Any]]:
    output = deployment.jumpoint(
        "audit", "--json", "--limit", str(limit), "--event", "k8s_request"
    ).stdout
    found = [json.loads(line) for line in output.splitlines() if line.strip()]
    return [r for r in found if r.get("subresource") == "exec"]


def _commands(row: dict[str, Any]) -> tuple[str, ...]:
    query = row.get("query") or ""
    return tuple(p.partition("=")[2] for p in query.split("&") if p.startswith("command="))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", type=int, default=100, help="execs per kind")
    parser.add_argument("--versions", default="1.30,1.33", help="kubectl versions")
    parser.add_argument("--protocols", default="websocket,spdy")
    parser.add_argument("--parallel", type=int, default=1, help="execs at once")
    parser.add_argument("--busy", type=int, default=1, help="busy-loop processes")
    parser.add_argument("--gomaxprocs", default="", help="GOMAXPROCS for kubectl")
    parser.add_argument(
        "--immediate",
        action="store_true",
        help="look for each exec's audit row as soon as kubectl exits (counts rows not there yet)",
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="kubectl straight to the test API server (no tunnel): are the drops kubectl's own?",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="kube-stress-"))
    tls = clients.write_tls_files(root)
    (root / "home-dir").mkdir()
    server = FakeApiServer(tls.cert, tls.key, token=TOKEN).start()
    deployment = Deployment(root)
    stop = multiprocessing.Event()
    busy = [multiprocessing.Process(target=_busy, args=(stop,)) for _ in range(args.busy)]
    failures: list[str] = []
    dropped: list[str] = []
    late: list[str] = []
    try:
        token_file = root / "k8s.token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        deployment.items = [
            {
                "name": "prod-k8s",
                "type": "k8s",
                "url": f"https://127.0.0.1:{server.port}",
                "ca_pem": Path(tls.ca).read_text(),
                "namespace": "default",
                "local_address": "127.0.0.5",
            }
        ]
        deployment.sections = {
            "credentials": [{"item": "prod-k8s", "type": "token", "token_file": str(token_file)}]
        }
        deployment.create().serve()
        env = deployment.env(JUMP_CACHE_DIR=str(root / "cache"))
        env["HOME"] = str(root / "home-dir")
        session = Process([*tool("jump"), "open", "prod-k8s", "--json"], env)
        deployment.processes.append(session)
        kubeconfig = session.wait_for_event("ready")["kubeconfig"]
        if args.direct:
            kubeconfig = str(root / "direct.kubeconfig")
            Path(kubeconfig).write_text(_direct_kubeconfig(server.port, tls.ca))
        kube_env = dict(os.environ, KUBECONFIG=kubeconfig, HOME=str(root / "home-dir"))
        if args.gomaxprocs:
            kube_env["GOMAXPROCS"] = args.gomaxprocs
        for process in busy:
            process.start()

        jobs = [
            (version, protocol, n)
            for n in range(args.runs)
            for version in args.versions.split(",")
            for protocol in args.protocols.split(",")
        ]

        def one(job: tuple[str, str, int]) -> tuple[str, str] | None:
            version, protocol, n = job
            word = f"hello-{version}-{protocol}-{n}"
            ran = subprocess.run(
                [str(KUBECTL_DIR / f"kubectl.{version}"), "exec", "web-1", "--", "echo", word],
                env={
                    **kube_env,
                    "KUBECTL_REMOTE_COMMAND_WEBSOCKETS": str(protocol == "websocket").lower(),
                },
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
            if ran.returncode != 0 or ran.stdout != word + "\n":
                text = f"{word}: exit {ran.returncode} stdout {ran.stdout!r} stderr {ran.stderr!r}"
                kind = (
                    "dropped" if protocol == "websocket" and KUBECTL_DROP in ran.stderr else "lost"
                )
                return kind, text
            recent = _exec_rows(deployment, 20) if args.immediate and not args.direct else None
            if recent is not None and not any(_commands(r) == ("echo", word) for r in recent):
                late.append(word)
            return None

        started = time.monotonic()
        with ThreadPoolExecutor(args.parallel) as pool:
            for outcome in pool.map(one, jobs):
                if outcome is None:
                    continue
                kind, text = outcome
                if kind == "dropped":
                    dropped.append(text)
                    print("DROPPED BY KUBECTL (the frame reached it):", text, flush=True)
                else:
                    failures.append(text)
                    print("OUTPUT LOST:", text, flush=True)
        elapsed = time.monotonic() - started

        summary: dict[str, Any] = {
            "execs": len(jobs),
            "output_lost": len(failures),
            "kubectl_dropped": len(dropped),
            "seconds": round(elapsed, 1),
        }
        if not args.direct:
            reached = sorted(tuple(r.query.get("command", [])) for r in server.requests_to("/exec"))
            try:
                execs = wait_until(
                    lambda: rows if len(rows := _exec_rows(deployment)) >= len(reached) else None,
                    timeout=30,
                    what="an audit row for every exec",
                )
            except AssertionError:
                execs = _exec_rows(deployment)
            audited = sorted(_commands(r) for r in execs)
            if audited != reached:
                missing = sorted(set(reached) - set(audited))
                failures.append(f"{len(reached)} execs, {len(audited)} rows; missing {missing}")
                print("AUDIT ROWS:", failures[-1], flush=True)
            for row in execs:  # (rows before the h11 relay had no ended field)
                if row.get("status") != 101 or row.get("ended", "complete") != "complete":
                    failures.append(
                        f"row {row.get('query')}: {row.get('status')} {row.get('ended')}"
                    )
                    print("BAD ROW:", failures[-1], flush=True)
            summary.update(reached_cluster=len(reached), audit_rows=len(audited))
            if args.immediate:
                summary["rows_not_yet_there_when_kubectl_exited"] = len(late)
        summary["failures"] = len(failures)
        print(json.dumps(summary), flush=True)
        session.stop()
    finally:
        stop.set()
        for process in busy:
            if process.pid is not None:
                process.join(5)
        deployment.stop_all()
        server.stop()
        if failures or dropped or args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
