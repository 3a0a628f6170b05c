"""The per-jump-item Kubernetes policy, enforced on the Jumpoint.

L{check} decides one classified request (L{requests.RequestInfo}) against a
L{KubePolicy}; the first rule that refuses it, in this order, is reported:

  1. C{k8s.namespaces}: with a non-empty namespace list, a namespaced request
     outside it; a request without a namespace on a resource not known to be
     cluster-scoped (e.g. C{kubectl get pods -A}, or any list of an unknown
     custom resource across namespaces); and any write, or any subresource
     other than C{status}, on a cluster-scoped resource (creating a
     C{ClusterRoleBinding} or proxying to a node is not inside a namespace).
     Reads of cluster-scoped resources (C{kubectl get ns}, C{get nodes}) and
     the self-review creates of C{kubectl auth can-i} stay allowed.
  2. C{k8s.read_only}: only C{get}, C{list} and C{watch}; the C{exec},
     C{attach}, C{portforward} and C{proxy} subresources and the C{proxy}
     verb are refused whatever the method; for non-resource requests only
     GET and HEAD.
  3. C{k8s.denied_resources}: entries are C{resource}, C{resource/subresource}
     or C{resource.group} (C{deployments.apps}); C{resource} alone also covers
     its subresources; names compare case-insensitively, in any group unless
     one is given.
  4. C{k8s.exec}: C{exec} and C{attach} when C{allow_exec} is off.
  5. C{k8s.port_forward}: C{portforward} when C{allow_port_forward} is off.

Discovery requests (L{requests.RequestInfo.discovery}) are always allowed.
L{status_403} and L{status_401} build complete HTTP/1.1 responses carrying a
Kubernetes C{Status} object, so kubectl prints C{Error from server
(Forbidden): ...}; the message names the rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from shared.codecs.http.heads import Answer
from shared.k8s.request_info import RequestInfo

READ_VERBS = frozenset({"get", "list", "watch"})
EXEC_SUBRESOURCES = frozenset({"exec", "attach"})
PORT_FORWARD_SUBRESOURCE = "portforward"
STREAMING_SUBRESOURCES = frozenset({"exec", "attach", "portforward", "proxy"})

CLUSTER_SCOPED_RESOURCES = frozenset(
    {
        "namespaces",
        "nodes",
        "persistentvolumes",
        "componentstatuses",
        "storageclasses",
        "csidrivers",
        "csinodes",
        "volumeattachments",
        "customresourcedefinitions",
        "apiservices",
        "clusterroles",
        "clusterrolebindings",
        "priorityclasses",
        "runtimeclasses",
        "ingressclasses",
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
        "certificatesigningrequests",
        "flowschemas",
        "prioritylevelconfigurations",
        "selfsubjectaccessreviews",
        "selfsubjectrulesreviews",
        "selfsubjectreviews",
    }
)
"""Built-in resources that have no namespace: reading them is not "outside"."""

SELF_REVIEWS = frozenset(
    {"selfsubjectaccessreviews", "selfsubjectrulesreviews", "selfsubjectreviews"}
)
"""Cluster-scoped creates that only ask about the caller (C{kubectl auth can-i})."""


@dataclass(frozen=True, slots=True)
class KubePolicy:
    """What one jump item lets its users do on the cluster."""

    namespaces: tuple[str, ...] = ()
    """Allowed namespaces; empty means any."""
    read_only: bool = False
    denied_resources: tuple[str, ...] = ("secrets",)
    allow_exec: bool = True
    allow_port_forward: bool = True


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a request was refused: the rule name and a message for the user."""

    rule: str
    message: str


def _where(info: RequestInfo) -> str:
    return f'in the namespace "{info.namespace}"' if info.namespace else "at the cluster scope"


def _denied_entry(policy: KubePolicy, info: RequestInfo) -> str | None:
    resource = info.resource.lower()
    subresource = info.subresource.lower()
    group = info.api_group.lower()
    for entry in policy.denied_resources:
        wanted = entry.strip().lower()
        base, _, wanted_sub = wanted.partition("/")
        name, _, wanted_group = base.partition(".")
        if name != resource:
            continue
        if wanted_group and wanted_group != group:
            continue
        if wanted_sub and wanted_sub != subresource:
            continue
        return entry
    return None


def _check_namespaces(policy: KubePolicy, info: RequestInfo) -> Denial | None:
    if not policy.namespaces:
        return None
    if info.namespace:
        if info.namespace in policy.namespaces:
            return None
        return Denial(
            "k8s.namespaces",
            f'namespace "{info.namespace}" is not allowed by this jump item',
        )
    resource = info.resource.lower()
    if resource not in CLUSTER_SCOPED_RESOURCES:
        return Denial(
            "k8s.namespaces",
            f'{info.verb} of "{info.resource}" across all namespaces is not allowed; '
            f"allowed namespaces: {', '.join(policy.namespaces)}",
        )
    if resource in SELF_REVIEWS and info.verb == "create" and not info.subresource:
        return None
    if info.verb not in READ_VERBS or info.subresource not in ("", "status"):
        return Denial(
            "k8s.namespaces",
            f'{info.verb} of cluster-scoped "{_what(info)}" is not allowed '
            "when the jump item is limited to namespaces",
        )
    return None


def _what(info: RequestInfo) -> str:
    return info.resource_path or info.resource


def check(policy: KubePolicy, info: RequestInfo) -> Denial | None:
    """The first rule of C{policy} that refuses C{info}, or None when allowed."""
    if info.discovery:
        return None
    if not info.is_resource_request:
        if policy.read_only and info.verb not in ("get", "head"):
            return Denial("k8s.read_only", f"{info.verb.upper()} is not allowed: read-only access")
        return None
    denial = _check_namespaces(policy, info)
    if denial is not None:
        return denial
    subresource = info.subresource.lower()
    if policy.read_only and (info.verb not in READ_VERBS or subresource in STREAMING_SUBRESOURCES):
        return Denial(
            "k8s.read_only",
            f'{info.verb} of "{_what(info)}" {_where(info)} is not allowed: read-only access',
        )
    entry = _denied_entry(policy, info)
    if entry is not None:
        return Denial(
            "k8s.denied_resources",
            f'access to "{_what(info)}" is denied by this jump item (denied: {entry})',
        )
    if subresource in EXEC_SUBRESOURCES and not policy.allow_exec:
        return Denial("k8s.exec", f"{subresource} into pods is not allowed by this jump item")
    if subresource == PORT_FORWARD_SUBRESOURCE and not policy.allow_port_forward:
        return Denial("k8s.port_forward", "port-forward is not allowed by this jump item")
    return None


def _response(code: int, phrase: str, status: dict[str, object], close: bool) -> bytes:
    body = json.dumps(status, separators=(",", ":")).encode("utf-8")
    lines = [
        f"HTTP/1.1 {code} {phrase}",
        "Content-Type: application/json",
        "Cache-Control: no-cache, private",
        "X-Content-Type-Options: nosniff",
        f"Content-Length: {len(body)}",
    ]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def status_body(
    code: int, reason: str, message: str, details: dict[str, str] | None = None
) -> dict[str, object]:
    """A Kubernetes C{Status} object (C{metav1.Status}) as a JSON-ready dict."""
    status: dict[str, object] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details:
        status["details"] = details
    status["code"] = code
    return status


def denial_message(info: RequestInfo, denial: Denial) -> str:
    """The apiserver-style message: C{pods "p" is forbidden: ... (rule: R)}."""
    if info.is_resource_request:
        subject = _what(info)
        subject = f'{subject} "{info.name}"' if info.name else subject
    else:
        subject = "/" + "/".join(info.parts)
    return f"{subject} is forbidden: {denial.message} (rule: {denial.rule})"


def status_403(info: RequestInfo, denial: Denial, *, close: bool = False) -> bytes:
    """A complete 403 response with a C{Status} naming the rule.

    C{details} carries C{name}, C{group} and C{kind} (the resource), empty
    ones left out as the apiserver's C{omitempty} does.  Pass C{close=True}
    when the connection will be closed after it (e.g. the request body was
    not read).
    """
    details = {
        key: value
        for key, value in (("name", info.name), ("group", info.api_group), ("kind", info.resource))
        if value
    }
    body = status_body(403, "Forbidden", denial_message(info, denial), details)
    return _response(403, "Forbidden", body, close)


def status_401(message: str = "Unauthorized", *, close: bool = False) -> bytes:
    """A complete 401 response with a C{Status} (reason C{Unauthorized})."""
    return _response(401, "Unauthorized", status_body(401, "Unauthorized", message), close)


def _answer(code: int, status: dict[str, object], close: bool) -> Answer:
    return Answer(
        status=code,
        headers=(
            ("Content-Type", "application/json"),
            ("Cache-Control", "no-cache, private"),
            ("X-Content-Type-Options", "nosniff"),
        ),
        body=json.dumps(status, separators=(",", ":")).encode("utf-8"),
        close=close,
    )


def forbidden_answer(info: RequestInfo, denial: Denial) -> Answer:
    """L{status_403} as a relay L{Answer} (the connection stays open)."""
    _, _, body = status_403(info, denial).partition(b"\r\n\r\n")
    return _answer(403, json.loads(body), False)


def unauthorized_answer(message: str) -> Answer:
    """L{status_401} as a relay L{Answer}; the connection is closed after it."""
    return _answer(401, status_body(401, "Unauthorized", message), True)
