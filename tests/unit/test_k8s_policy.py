"""The Kubernetes policy and its Status responses (shared/k8s/api_policy.py)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import h11
import pytest

from shared.k8s.api_policy import Denial, KubePolicy, check, status_401, status_403
from shared.k8s.request_info import RequestInfo, request_info


def info(method: str, target: str) -> RequestInfo:
    parts = urlsplit(target)
    return request_info(method, parts.path, parse_qs(parts.query, keep_blank_values=True))


def rule(policy: KubePolicy, method: str, target: str) -> str | None:
    denial = check(policy, info(method, target))
    return None if denial is None else denial.rule


NS = "/api/v1/namespaces"
DISCOVERY = ["/api", "/apis", "/api/v1", "/apis/apps/v1", "/version?timeout=5s", "/openapi/v3"]


@pytest.mark.parametrize("target", DISCOVERY)
def test_discovery_always_allowed(target: str) -> None:
    strict = KubePolicy(
        namespaces=("dev",), read_only=True, allow_exec=False, allow_port_forward=False
    )
    assert rule(strict, "GET", target) is None


def test_default_policy() -> None:
    policy = KubePolicy()
    assert rule(policy, "GET", f"{NS}/default/pods?limit=500") is None
    assert rule(policy, "POST", f"{NS}/default/configmaps") is None
    assert rule(policy, "GET", "/api/v1/pods") is None
    assert rule(policy, "GET", f"{NS}/default/pods/p/exec?command=ls") is None
    assert rule(policy, "GET", f"{NS}/default/secrets") == "k8s.denied_resources"
    assert rule(policy, "GET", f"{NS}/default/secrets/s") == "k8s.denied_resources"
    assert rule(policy, "GET", "/api/v1/watch/secrets") == "k8s.denied_resources"


def test_namespaces() -> None:
    policy = KubePolicy(namespaces=("dev", "qa"))
    assert rule(policy, "GET", f"{NS}/dev/pods") is None
    assert rule(policy, "PATCH", f"{NS}/qa/configmaps/cm") is None
    assert rule(policy, "GET", f"{NS}/prod/pods") == "k8s.namespaces"
    assert rule(policy, "GET", f"{NS}/prod") == "k8s.namespaces"
    assert rule(policy, "GET", f"{NS}/dev") is None
    # kubectl get pods -A and its watch, also through the legacy prefix
    assert rule(policy, "GET", "/api/v1/pods?limit=500") == "k8s.namespaces"
    assert rule(policy, "GET", "/api/v1/pods?watch=true") == "k8s.namespaces"
    assert rule(policy, "GET", "/api/v1/watch/pods") == "k8s.namespaces"
    assert rule(policy, "GET", "/apis/example.com/v1/widgets") == "k8s.namespaces"
    # reading cluster-scoped resources stays allowed, writing them does not
    assert rule(policy, "GET", f"{NS}") is None
    assert rule(policy, "GET", "/api/v1/nodes/n1") is None
    assert rule(policy, "POST", f"{NS}") == "k8s.namespaces"
    assert (
        rule(policy, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings")
        == "k8s.namespaces"
    )
    assert rule(policy, "GET", "/api/v1/nodes/n1/proxy/stats") == "k8s.namespaces"
    # kubectl auth can-i
    assert rule(policy, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews") is None


@pytest.mark.parametrize(
    ("method", "target", "expected"),
    [
        ("GET", f"{NS}/d/pods", None),
        ("GET", f"{NS}/d/pods?watch=true", None),
        ("GET", f"{NS}/d/pods/p", None),
        ("HEAD", f"{NS}/d/pods/p", None),
        ("GET", f"{NS}/d/pods/p/log?follow=true", None),
        ("POST", f"{NS}/d/configmaps", "k8s.read_only"),
        ("PATCH", f"{NS}/d/configmaps/cm", "k8s.read_only"),
        ("PUT", f"{NS}/d/configmaps/cm", "k8s.read_only"),
        ("DELETE", f"{NS}/d/configmaps/cm", "k8s.read_only"),
        ("DELETE", f"{NS}/d/configmaps", "k8s.read_only"),
        ("GET", f"{NS}/d/pods/p/exec?command=sh", "k8s.read_only"),
        ("POST", f"{NS}/d/pods/p/exec?command=sh", "k8s.read_only"),
        ("GET", f"{NS}/d/pods/p/attach", "k8s.read_only"),
        ("GET", f"{NS}/d/pods/p/portforward", "k8s.read_only"),
        ("GET", f"{NS}/d/services/s/proxy/", "k8s.read_only"),
        ("GET", "/api/v1/proxy/namespaces/d/pods/p/", "k8s.read_only"),
        ("OPTIONS", f"{NS}/d/pods", "k8s.read_only"),
        ("POST", "/logs", "k8s.read_only"),
        ("GET", "/healthz", None),
    ],
)
def test_read_only(method: str, target: str, expected: str | None) -> None:
    assert rule(KubePolicy(read_only=True, denied_resources=()), method, target) == expected


def test_denied_resources_forms() -> None:
    policy = KubePolicy(denied_resources=("pods/exec", "deployments.apps", "Secrets"))
    assert rule(policy, "GET", f"{NS}/d/pods/p/exec") == "k8s.denied_resources"
    assert rule(policy, "GET", f"{NS}/d/pods/p") is None
    assert rule(policy, "GET", f"{NS}/d/pods/p/attach") is None
    assert rule(policy, "GET", "/apis/apps/v1/namespaces/d/deployments") == "k8s.denied_resources"
    assert (
        rule(policy, "GET", "/apis/apps/v1/namespaces/d/deployments/x/scale")
        == "k8s.denied_resources"
    )
    assert rule(policy, "GET", "/apis/other.io/v1/namespaces/d/deployments") is None
    assert rule(policy, "GET", f"{NS}/d/secrets") == "k8s.denied_resources"
    assert rule(KubePolicy(denied_resources=()), "GET", f"{NS}/d/secrets") is None


def test_exec_and_port_forward_switches() -> None:
    no_exec = KubePolicy(allow_exec=False)
    assert rule(no_exec, "GET", f"{NS}/d/pods/p/exec?command=ls") == "k8s.exec"
    assert rule(no_exec, "POST", f"{NS}/d/pods/p/exec?command=ls") == "k8s.exec"
    assert rule(no_exec, "POST", f"{NS}/d/pods/p/attach") == "k8s.exec"
    assert rule(no_exec, "GET", f"{NS}/d/pods/p/portforward") is None
    no_pf = KubePolicy(allow_port_forward=False)
    assert rule(no_pf, "GET", f"{NS}/d/pods/p/portforward") == "k8s.port_forward"
    assert rule(no_pf, "POST", f"{NS}/d/pods/p/portforward") == "k8s.port_forward"
    assert rule(no_pf, "GET", f"{NS}/d/pods/p/exec") is None


def _parse(response: bytes) -> tuple[int, dict[str, object], dict[str, str]]:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(response)
    head = client.next_event()
    assert isinstance(head, h11.Response)
    data = client.next_event()
    assert isinstance(data, h11.Data)
    body = bytes(data.data)
    headers = {k.decode(): v.decode() for k, v in head.headers.raw_items()}
    assert int(headers["Content-Length"]) == len(body)
    assert headers["Content-Type"] == "application/json"
    return head.status_code, json.loads(body), headers


def test_status_403() -> None:
    request = info("GET", f"{NS}/d/pods/p/exec?command=sh")
    denial = check(KubePolicy(read_only=True), request)
    assert denial is not None
    status, body, headers = _parse(status_403(request, denial))
    assert status == 403
    assert "Connection" not in headers
    assert body["kind"] == "Status"
    assert body["apiVersion"] == "v1"
    assert body["metadata"] == {}
    assert body["status"] == "Failure"
    assert body["reason"] == "Forbidden"
    assert body["code"] == 403
    assert body["details"] == {"name": "p", "kind": "pods"}
    message = body["message"]
    assert isinstance(message, str)
    assert message.startswith('pods/exec "p" is forbidden: ')
    assert message.endswith("(rule: k8s.read_only)")


def test_status_403_group_and_close() -> None:
    request = info("DELETE", "/apis/apps/v1/namespaces/prod/deployments/web")
    denial = Denial("k8s.namespaces", 'namespace "prod" is not allowed by this jump item')
    _, body, headers = _parse(status_403(request, denial, close=True))
    assert headers["Connection"] == "close"
    assert body["details"] == {"name": "web", "group": "apps", "kind": "deployments"}
    assert body["message"] == (
        'deployments "web" is forbidden: namespace "prod" is not allowed by this jump item'
        " (rule: k8s.namespaces)"
    )


def test_status_401() -> None:
    status, body, _ = _parse(status_401("missing or invalid session token"))
    assert status == 401
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "missing or invalid session token",
        "reason": "Unauthorized",
        "code": 401,
    }
