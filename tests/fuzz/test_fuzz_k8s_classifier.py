"""Fuzz target of the Kubernetes request classifier (shared/k8s/request_info.py).

Arbitrary request targets and methods, and targets built from API-shaped
segments, go through L{canonical_target} and L{request_info}: they either
raise L{K8sRequestError} or give a canonical target that is a fixed point,
that a URL parser reads as the same path (no authority hiding in C{//}), and
a classification whose namespace and name come from its own segments.  Run
long with C{scripts/fuzz.sh}.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.k8s.request_info import K8sRequestError, canonical_target, request_info

SEGMENTS = st.sampled_from(
    [
        "api",
        "apis",
        "v1",
        "apps",
        "namespaces",
        "default",
        "pods",
        "p",
        "exec",
        "watch",
        "proxy",
        "secrets",
        "status",
        "",
        ".",
        "..",
        "%2e",
        "%2F",
        "%",
        "%41",
        "a%2fb",
        "é",
    ]
)
METHODS = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "get", "X"])


def _check(method: str, target: str) -> None:
    try:
        canonical = canonical_target(target)
    except K8sRequestError:
        return
    assert canonical_target(canonical.text) == canonical
    parts = urlsplit(canonical.text)
    assert parts.netloc == "" and parts.path == canonical.path
    try:
        info = request_info(method, canonical.path, canonical.params)
    except K8sRequestError:
        return
    if info.namespace:
        assert info.namespace in canonical.segments
    if info.name and info.is_resource_request and not canonical.params.get("fieldSelector"):
        assert info.name in canonical.segments


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(method=METHODS, target=st.text(max_size=120))
def test_any_target_is_classified_or_refused(method: str, target: str) -> None:
    _check(method, target)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    method=METHODS,
    segments=st.lists(SEGMENTS, max_size=9),
    lead=st.sampled_from(["/", "//", "http://h/", "h:1/", "*"]),
    query=st.sampled_from(["", "?watch=1", "?watch=false&fieldSelector=metadata.name%3Dp", "?a"]),
)
def test_api_shaped_targets_are_classified_or_refused(
    method: str, segments: list[str], lead: str, query: str
) -> None:
    _check(method, lead + "/".join(segments) + query)
