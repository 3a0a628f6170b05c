"""Request classification (shared/k8s/request_info.py), with kubectl's request shapes."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.k8s.request_info import (
    MAX_PATH,
    K8sRequestError,
    RequestInfo,
    canonical_target,
    request_info,
    split_path,
)


def info(method: str, target: str, upgrade: bool = False) -> RequestInfo:
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(target)
    return request_info(method, parts.path, parse_qs(parts.query, keep_blank_values=True), upgrade)


def summary(i: RequestInfo) -> tuple[str, str, str, str, str, str, str]:
    return (i.verb, i.api_group, i.api_version, i.namespace, i.resource, i.subresource, i.name)


@pytest.mark.parametrize(
    ("method", "target", "expected"),
    [
        # kubectl get pods
        (
            "GET",
            "/api/v1/namespaces/default/pods?limit=500",
            ("list", "", "v1", "default", "pods", "", ""),
        ),
        # kubectl get pods -w
        (
            "GET",
            "/api/v1/namespaces/default/pods?resourceVersion=7&watch=true",
            ("watch", "", "v1", "default", "pods", "", ""),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods?watch=1",
            ("watch", "", "v1", "default", "pods", "", ""),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods?watch=false",
            ("list", "", "v1", "default", "pods", "", ""),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods?watch=0",
            ("list", "", "v1", "default", "pods", "", ""),
        ),
        # legacy /watch/ prefix
        (
            "GET",
            "/api/v1/watch/namespaces/default/pods",
            ("watch", "", "v1", "default", "pods", "", ""),
        ),
        (
            "GET",
            "/api/v1/watch/namespaces/default/pods/p",
            ("watch", "", "v1", "default", "pods", "", "p"),
        ),
        (
            "GET",
            "/apis/apps/v1/watch/deployments",
            ("watch", "apps", "v1", "", "deployments", "", ""),
        ),
        # kubectl get pod p, watch of one object by field selector
        ("GET", "/api/v1/namespaces/default/pods/p", ("get", "", "v1", "default", "pods", "", "p")),
        (
            "HEAD",
            "/api/v1/namespaces/default/pods/p",
            ("get", "", "v1", "default", "pods", "", "p"),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dp&watch=true",
            ("watch", "", "v1", "default", "pods", "", "p"),
        ),
        # kubectl apply: GET (404), POST, then PATCH
        (
            "GET",
            "/api/v1/namespaces/default/configmaps/cm",
            ("get", "", "v1", "default", "configmaps", "", "cm"),
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps?fieldManager=kubectl-client-side-apply&fieldValidation=Strict",
            ("create", "", "v1", "default", "configmaps", "", ""),
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/configmaps/cm?fieldManager=kubectl-client-side-apply",
            ("patch", "", "v1", "default", "configmaps", "", "cm"),
        ),
        (
            "PUT",
            "/apis/apps/v1/namespaces/ns/deployments/d/scale",
            ("update", "apps", "v1", "ns", "deployments", "scale", "d"),
        ),
        (
            "DELETE",
            "/apis/apps/v1/namespaces/ns/deployments/d",
            ("delete", "apps", "v1", "ns", "deployments", "", "d"),
        ),
        (
            "DELETE",
            "/apis/apps/v1/namespaces/ns/deployments",
            ("deletecollection", "apps", "v1", "ns", "deployments", "", ""),
        ),
        # exec over GET (WebSocket, kubectl >= 1.30) and POST (SPDY), attach, port-forward
        (
            "GET",
            "/api/v1/namespaces/default/pods/p/exec?command=ls&stdout=true",
            ("create", "", "v1", "default", "pods", "exec", "p"),
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods/p/exec?command=ls&stdin=true",
            ("create", "", "v1", "default", "pods", "exec", "p"),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods/p/attach?stdin=true",
            ("create", "", "v1", "default", "pods", "attach", "p"),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods/p/portforward",
            ("create", "", "v1", "default", "pods", "portforward", "p"),
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods/p/portforward",
            ("create", "", "v1", "default", "pods", "portforward", "p"),
        ),
        # kubectl logs -f
        (
            "GET",
            "/api/v1/namespaces/default/pods/p/log?follow=true&container=c",
            ("get", "", "v1", "default", "pods", "log", "p"),
        ),
        # proxy subresource keeps the method's verb; the legacy /proxy/ prefix sets verb proxy
        (
            "GET",
            "/api/v1/namespaces/default/services/s/proxy/metrics",
            ("get", "", "v1", "default", "services", "proxy", "s"),
        ),
        (
            "POST",
            "/api/v1/namespaces/default/services/s/proxy/",
            ("create", "", "v1", "default", "services", "proxy", "s"),
        ),
        (
            "GET",
            "/api/v1/proxy/namespaces/default/pods/p/x",
            ("proxy", "", "v1", "default", "pods", "", "p"),
        ),
        # cluster-scoped lists and the namespace object itself
        ("GET", "/api/v1/pods?limit=500", ("list", "", "v1", "", "pods", "", "")),
        ("GET", "/api/v1/namespaces", ("list", "", "v1", "", "namespaces", "", "")),
        (
            "GET",
            "/api/v1/namespaces/kube-system",
            ("get", "", "v1", "kube-system", "namespaces", "", "kube-system"),
        ),
        (
            "PUT",
            "/api/v1/namespaces/ns/finalize",
            ("update", "", "v1", "ns", "namespaces", "finalize", "ns"),
        ),
        ("GET", "/api/v1/nodes/n1", ("get", "", "v1", "", "nodes", "", "n1")),
        (
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            ("create", "authorization.k8s.io", "v1", "", "selfsubjectaccessreviews", "", ""),
        ),
        ("OPTIONS", "/api/v1/pods", ("", "", "v1", "", "pods", "", "")),
    ],
)
def test_resource_requests(method: str, target: str, expected: tuple[str, ...]) -> None:
    result = info(method, target)
    assert result.is_resource_request
    assert not result.discovery
    assert summary(result) == expected


def test_exec_is_create_with_or_without_upgrade() -> None:
    target = "/api/v1/namespaces/default/pods/p/exec?command=sh"
    assert info("GET", target, upgrade=True).verb == "create"
    assert info("GET", target, upgrade=False).verb == "create"
    assert info("GET", target).resource_path == "pods/exec"


def test_parts_and_prefix() -> None:
    result = info("GET", "/apis/apps/v1/namespaces/ns/deployments/d/status")
    assert result.api_prefix == "apis"
    assert result.parts == ("deployments", "d", "status")
    assert result.group_version == "apps/v1"
    assert info("GET", "/api/v1/pods").group_version == "v1"


@pytest.mark.parametrize(
    "target",
    [
        "/api",
        "/apis",
        "/api/v1",
        "/apis/apps",
        "/apis/apps/v1",
        "/version?timeout=5s",
        "/openapi/v2",
        "/openapi/v3/api/v1?hash=X",
        "/api/v1/",
    ],
)
def test_discovery(target: str) -> None:
    result = info("GET", target)
    assert not result.is_resource_request
    assert result.discovery
    assert result.verb == "get"


def test_discovery_fields() -> None:
    result = info("GET", "/apis/apps/v1")
    assert (result.api_prefix, result.api_group, result.api_version) == ("apis", "apps", "v1")
    assert info("GET", "/api/v1").api_version == "v1"


@pytest.mark.parametrize(
    "target", ["/healthz", "/livez", "/metrics", "/", "/logs/x", "/version/extra", "/foo/bar/baz"]
)
def test_non_resource_not_discovery(target: str) -> None:
    result = info("POST", target)
    assert not result.is_resource_request
    assert not result.discovery
    assert result.verb == "post"


@pytest.mark.parametrize(
    "path",
    [
        "",
        "api/v1/pods",
        "/api/v1/namespaces/../pods",
        "/api/v1/namespaces/./pods",
        "/api/v1/namespaces/%2e%2e/secrets",
        "/api//v1/pods",
        "/api/v1/namespaces/a%2Fb/pods",
        "/api/v1/namespaces/a%2fb/pods",
        "/api/v1/namespaces/a%5Cb/pods",
        "/api/v1/namespaces/a%252Fb/pods",
        "/api/v1/namespaces/a%00/pods",
        "/api/v1/namespaces/a%zz/pods",
        "/api/v1/namespaces/a%2/pods",
        "/api/v1/namespaces/a%ff/pods",
        "/api/v1/namespaces/a b/pods",
        "/api/v1/namespaces/\u00e9/pods",
        "/api/v1/namespaces/a\\b/pods",
        "/api/v1/pods?watch=true",
        "//",
        "/api/v1/watch",
        "/api/v1/" + "a" * MAX_PATH,
    ],
)
def test_hostile_paths(path: str) -> None:
    with pytest.raises(K8sRequestError) as caught:
        request_info("GET", path, {})
    assert caught.value.reason


def test_invalid_method() -> None:
    with pytest.raises(K8sRequestError):
        request_info("G T", "/api/v1/pods", {})


def test_percent_escapes_decoded() -> None:
    assert split_path("/api/v1/namespaces/a%2Db/pods") == ("api", "v1", "namespaces", "a-b", "pods")


_segment = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?", fullmatch=True).filter(
    lambda s: s not in (".", "..", "namespaces", "watch", "proxy")
)


@given(
    group=st.one_of(st.just(""), st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,8}){0,2}", fullmatch=True)),
    version=st.sampled_from(["v1", "v1beta1", "v2"]),
    namespace=st.one_of(st.just(""), _segment),
    tail=st.lists(_segment, min_size=1, max_size=3),
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]),
)
def test_resource_paths_round_trip(
    group: str, version: str, namespace: str, tail: list[str], method: str
) -> None:
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    ns = f"/namespaces/{namespace}" if namespace else ""
    result = request_info(method, prefix + ns + "/" + "/".join(tail), {})
    assert result.is_resource_request
    assert result.api_group == group
    assert result.api_version == version
    assert result.namespace == namespace
    assert result.parts == tuple(tail)
    assert result.resource == tail[0]
    assert result.name == (tail[1] if len(tail) > 1 else "")
    assert result.subresource == (tail[2] if len(tail) > 2 else "")
    if result.subresource in ("exec", "attach", "portforward"):
        assert result.verb == "create"


@given(st.text(max_size=200), st.sampled_from(["GET", "POST", "get", "", "DELETE"]))
def test_never_another_exception(path: str, method: str) -> None:
    try:
        result = request_info(method, path, {"watch": ["true"]})
    except K8sRequestError as error:
        assert error.reason
    else:
        assert isinstance(result, RequestInfo)


@given(
    st.lists(
        st.sampled_from(
            [
                "api",
                "apis",
                "v1",
                "namespaces",
                "ns",
                "pods",
                "p",
                "exec",
                "watch",
                "proxy",
                "%2F",
                "..",
                "",
                "%41",
            ]
        ),
        max_size=8,
    )
)
def test_never_another_exception_structured(segments: list[str]) -> None:
    path = "/" + "/".join(segments)
    try:
        result = request_info("GET", path, {})
    except K8sRequestError as error:
        assert error.reason
    else:
        assert not ({"..", "%2F"} & set(segments))
        assert result.verb


def test_quoted_names_round_trip() -> None:
    name = "a:b@c"
    result = request_info("GET", "/api/v1/namespaces/ns/pods/" + quote(name, safe=""), {})
    assert result.name == name


# -- the one canonical origin-form target (issue 9, point 1) ----------------------------


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("//api/v1/namespaces/default/secrets", "empty path segment"),
        ("//evil.example/api/v1/pods", "empty path segment"),
        ("/api//v1/pods", "empty path segment"),
        ("/api/v1/./pods", "dot segment"),
        ("/api/v1/namespaces/a/../b/pods", "dot segment"),
        ("/api/v1/namespaces/%2e%2E/pods", "dot segment"),
        ("/api/v1/namespaces/a%2Fb/pods", "forbidden character"),
        ("/api/v1/namespaces/a%2fb/pods", "forbidden character"),
        ("/api/v1/namespaces/a%5cb/pods", "forbidden character"),
        ("/api/v1/namespaces/a%zz/pods", "malformed percent escape"),
        ("https://k8s.lab/api/v1/pods", "absolute-form"),
        ("http:/api", "authority-form"),
        ("k8s.lab:443", "authority-form"),
        ("*", "asterisk-form"),
        ("/api/v1/pods#frag", "fragment"),
        ("/api/v1/pods\\x", "forbidden character"),
        ("/api/v1/p\x00ds", "forbidden character"),
        ("/" + "a" * (16 * 1024), "longer than"),
    ],
)
def test_targets_that_are_not_plain_origin_form_paths_are_refused(target: str, why: str) -> None:
    with pytest.raises(K8sRequestError) as caught:
        canonical_target(target)
    assert why in caught.value.reason


def test_the_canonical_target_decodes_and_reencodes_each_segment_once() -> None:
    target = canonical_target("/api/v1/n%61mespaces/web/pods/p%3a1?watch=1&labelSelector=a%3Db")
    assert target.path == "/api/v1/namespaces/web/pods/p:1"
    assert target.segments == ("api", "v1", "namespaces", "web", "pods", "p:1")
    assert target.query == "watch=1&labelSelector=a%3Db"
    assert target.params == {"watch": ["1"], "labelSelector": ["a=b"]}
    assert target.text == "/api/v1/namespaces/web/pods/p:1?watch=1&labelSelector=a%3Db"
    assert canonical_target("/").path == "/"
    assert canonical_target("/apis/").path == "/apis/"
    assert canonical_target("/api/v1/namespaces/caf%C3%A9").segments[-1] == "café"


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80))
def test_canonical_targets_are_fixed_points_a_url_parser_reads_the_same(target: str) -> None:
    try:
        canonical = canonical_target(target)
    except K8sRequestError:
        return
    assert canonical_target(canonical.text) == canonical
    assert canonical.path.startswith("/") and not canonical.path.startswith("//")
    assert "//" not in canonical.path
    parts = urlsplit(canonical.text)
    assert parts.netloc == "" and parts.scheme == "" and parts.path == canonical.path
    assert all(segment not in (".", "..") for segment in canonical.segments)
    assert "%2f" not in canonical.path.lower() and "%2e" not in canonical.path.lower()


@given(
    st.lists(
        st.text(
            alphabet=st.characters(blacklist_characters="/\\%", blacklist_categories=("Cs", "Cc")),
            min_size=1,
            max_size=12,
        ).filter(lambda s: s not in (".", "..")),
        max_size=8,
    )
)
def test_any_segments_quoted_give_back_the_same_segments(segments: list[str]) -> None:

    target = "/" + "/".join(quote(s, safe="") for s in segments)
    assert canonical_target(target).segments == tuple(segments)
