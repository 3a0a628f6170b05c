"""Classify a Kubernetes API request like the apiserver's C{RequestInfoFactory}.

The rules follow kubernetes C{staging/src/k8s.io/apiserver/pkg/endpoints/
request/requestinfo.go}:

  - C{/api/VERSION/...} is the core group, C{/apis/GROUP/VERSION/...} a named
    group; anything else, and C{/api}, C{/api/v1}, C{/apis}, C{/apis/GROUP},
    C{/apis/GROUP/VERSION}, is a non-resource request whose verb is the
    lowercase HTTP method;
  - after the version, C{watch/} and C{proxy/} are the legacy special-verb
    prefixes (the verb is then C{watch} or C{proxy} whatever the method, and
    under C{proxy/} no subresource is parsed);
  - C{namespaces/NS/RESOURCE/NAME/SUBRESOURCE/...}; C{namespaces/NS} and
    C{namespaces/NS/status|finalize} are the namespace object itself (its
    namespace is C{NS} too);
  - GET and HEAD give C{get}, or C{list}/C{watch} without a name (C{watch} when
    the C{watch} query parameter is set: any first value but C{0} or
    C{false}, as the apiserver's C{Convert_Slice_string_To_bool}); a
    C{fieldSelector} of C{metadata.name=X} names the object of a list or watch;
    POST C{create}, PUT C{update}, PATCH C{patch}, DELETE C{delete} or
    C{deletecollection} without a name.

One deliberate difference: the connect subresources C{exec}, C{attach} and
C{portforward} are always C{create}, whatever the method (kubectl >= 1.30 uses
a WebSocket GET where older versions POST; the apiserver itself added a
synthetic C{create} check for this in 1.35).

Every request target first goes through L{canonical_target}: the one
origin-form target (path and query) that the policy classifies, the audit
records and the Jumpoint forwards to the cluster.  Anything that is not a
plain origin-form path is refused: absolute-form (C{http://h/p}),
authority-form (C{h:443}), asterisk-form (C{*}), a target that does not
start with exactly one C{/} (C{//api} reads as an authority to URL parsers),
empty segments, dot segments (also percent-encoded), encoded C{/}, C{\\} or
C{%}, control characters, malformed escapes, over L{MAX_PATH} bytes.  The
Jumpoint answers such a target 400 before any policy check and never
forwards it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote

MAX_PATH = 8 * 1024
"""Longest accepted request path, in bytes as sent."""

API_PREFIXES = ("api", "apis")
LEGACY_PREFIX = "api"

SPECIAL_VERBS = frozenset({"proxy", "watch"})
"""Path prefixes after the version that set the verb (legacy API)."""

NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
"""Subresources of a namespace object (C{/api/v1/namespaces/NS/status})."""

CONNECT_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})
"""Subresources whose requests are always classified as C{create}."""

_METHOD_VERBS = {
    "GET": "get",
    "HEAD": "get",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}

MAX_TARGET = 16 * 1024
"""Longest accepted request target (path and query), in bytes as sent."""

_HEX = frozenset("0123456789abcdefABCDEF")

_SEGMENT_SAFE = "!$&'()*+,;=:@"
"""Characters a canonical path segment keeps unescaped (RFC 3986 pchar, besides unreserved)."""


class K8sRequestError(Exception):
    """The request path cannot be classified safely: answer 400, do not forward."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a request does, in the apiserver's terms.

    C{parts} are the decoded path segments relative to the resource (as the
    apiserver's C{Parts}) for a resource request, and all decoded segments for
    a non-resource request.  C{api_prefix}, C{api_group} and C{api_version} are
    also filled in for the discovery paths under C{/api} and C{/apis}.
    """

    is_resource_request: bool
    verb: str
    api_prefix: str
    api_group: str
    api_version: str
    namespace: str
    resource: str
    subresource: str
    name: str
    parts: tuple[str, ...]
    discovery: bool

    @property
    def group_version(self) -> str:
        """C{v1} for the core group, else C{GROUP/VERSION} (empty if unknown)."""
        if not self.api_version:
            return ""
        return f"{self.api_group}/{self.api_version}" if self.api_group else self.api_version

    @property
    def resource_path(self) -> str:
        """C{resource} or C{resource/subresource} (empty for non-resource requests)."""
        if self.subresource:
            return f"{self.resource}/{self.subresource}"
        return self.resource


def _decode_segment(raw: str) -> str:
    if "%" in raw:
        index = raw.find("%")
        while index != -1:
            escape = raw[index + 1 : index + 3]
            if len(escape) != 2 or not set(escape) <= _HEX:
                raise K8sRequestError(f"malformed percent escape in path segment {raw!r}")
            index = raw.find("%", index + 3)
        try:
            decoded = unquote(raw, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise K8sRequestError(f"path segment {raw!r} is not UTF-8") from None
    else:
        decoded = raw
    if decoded in (".", ".."):
        raise K8sRequestError("dot segment in path")
    for char in decoded:
        if char in "/\\%" or ord(char) < 0x20 or ord(char) == 0x7F:
            raise K8sRequestError(f"forbidden character {char!r} in path segment {raw!r}")
    return decoded


def split_path(path: str) -> tuple[str, ...]:
    """The decoded segments of a request path; raises L{K8sRequestError}.

    C{/} gives no segment; one trailing slash is ignored (as the apiserver's
    C{strings.Trim(path, "/")}), any other empty segment is refused.
    """
    if not isinstance(path, str):
        raise K8sRequestError("path is not a string")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH:
        raise K8sRequestError(f"path longer than {MAX_PATH} bytes")
    if not path.startswith("/"):
        raise K8sRequestError("path does not start with '/'")
    for char in path:
        if not 0x21 <= ord(char) <= 0x7E:
            raise K8sRequestError(f"forbidden character {char!r} in path")
        if char in "?#\\":
            raise K8sRequestError(f"forbidden character {char!r} in path")
    body = path[1:]
    if body.endswith("/"):
        body = body[:-1]
    if not body:
        if path != "/":
            raise K8sRequestError("empty path segment")
        return ()
    raw_segments = body.split("/")
    if "" in raw_segments:
        raise K8sRequestError("empty path segment")
    return tuple(_decode_segment(segment) for segment in raw_segments)


@dataclass(frozen=True, slots=True)
class RequestTarget:
    """A request target in its one canonical origin form (see L{canonical_target}).

    @ivar path: the canonical path: each segment decoded once and re-encoded
        the same way, one C{/} between segments, a trailing C{/} kept.
    @ivar query: the query as sent (without C{?}), its characters checked.
    @ivar segments: the decoded path segments.
    """

    path: str
    query: str
    segments: tuple[str, ...]

    @property
    def text(self) -> str:
        """The target to forward: C{path} and, if any, C{?query}."""
        return f"{self.path}?{self.query}" if self.query else self.path

    @property
    def params(self) -> dict[str, list[str]]:
        """The parsed query (blank values kept, C{&} separators only)."""
        return parse_qs(self.query, keep_blank_values=True)


def canonical_target(target: str) -> RequestTarget:
    """The canonical origin form of a request target; raises L{K8sRequestError}.

    Only a plain origin-form target is accepted (see the module docstring);
    the result is a fixed point: C{canonical_target(t.text) == t}.
    """
    if not isinstance(target, str):
        raise K8sRequestError("request target is not a string")
    if len(target.encode("utf-8", "surrogatepass")) > MAX_TARGET:
        raise K8sRequestError(f"request target longer than {MAX_TARGET} bytes")
    for char in target:
        if not 0x21 <= ord(char) <= 0x7E:
            raise K8sRequestError(f"forbidden character {char!r} in request target")
    if target == "*":
        raise K8sRequestError("asterisk-form request target")
    if not target.startswith("/"):
        if "://" in target:
            raise K8sRequestError("absolute-form request target (only a path is accepted)")
        raise K8sRequestError("authority-form request target (only a path is accepted)")
    if target.startswith("//"):
        raise K8sRequestError("empty path segment ('//' at the start reads as an authority)")
    if "#" in target:
        raise K8sRequestError("fragment in request target")
    path, _, query = target.partition("?")
    segments = split_path(path)
    canonical = "/" + "/".join(quote(segment, safe=_SEGMENT_SAFE) for segment in segments)
    if segments and path.endswith("/"):
        canonical += "/"
    return RequestTarget(path=canonical, query=query, segments=segments)


def _query_bool(query: Mapping[str, Sequence[str]], key: str) -> bool:
    values = query.get(key)
    if not values:
        return False
    first = values[0]
    return not (first == "0" or first.lower() == "false")


def _selected_name(query: Mapping[str, Sequence[str]]) -> str:
    """The name a C{metadata.name} field selector requires, if any."""
    values = query.get("fieldSelector")
    if not values:
        return ""
    selector = values[0]
    names = []
    for term in selector.split(","):
        for operator in ("==", "="):
            key, sep, value = term.partition(operator)
            if sep:
                if key.strip() == "metadata.name" and not value.startswith("="):
                    names.append(value.strip())
                break
    if len(names) != 1:
        return ""
    name = names[0]
    if not name or name in (".", "..") or any(c in name for c in "/%"):
        return ""
    return name


def _discovery_path(segments: tuple[str, ...]) -> bool:
    if not segments:
        return False
    head = segments[0]
    if head == "api":
        return len(segments) <= 2
    if head == "apis":
        return len(segments) <= 3
    if head == "version":
        return len(segments) == 1
    return head == "openapi"


def _non_resource(method: str, segments: tuple[str, ...]) -> RequestInfo:
    prefix = group = version = ""
    if segments and segments[0] in API_PREFIXES:
        prefix = segments[0]
        rest = segments[1:]
        if prefix == LEGACY_PREFIX:
            version = rest[0] if rest else ""
        else:
            group = rest[0] if rest else ""
            version = rest[1] if len(rest) > 1 else ""
    return RequestInfo(
        is_resource_request=False,
        verb=method.lower(),
        api_prefix=prefix,
        api_group=group,
        api_version=version,
        namespace="",
        resource="",
        subresource="",
        name="",
        parts=segments,
        discovery=_discovery_path(segments),
    )


def request_info(
    method: str,
    path: str,
    query: Mapping[str, Sequence[str]],
    upgrade: bool = False,
) -> RequestInfo:
    """Classify one request; raises L{K8sRequestError} for unparseable paths.

    @param method: the HTTP method as sent (case-sensitive, like the apiserver).
    @param path: the request path as sent, percent-encoded, without the query.
    @param query: the parsed query (C{urllib.parse.parse_qs} shape).
    @param upgrade: whether the request asks for a protocol upgrade; accepted
        for the callers' audit records, it does not change the verb (connect
        subresources are C{create} with or without it).
    """
    del upgrade  # the classification is the same with or without an upgrade
    if not method or not method.isascii() or not method.isalpha():
        raise K8sRequestError(f"invalid method {method!r}")
    segments = split_path(path)
    if len(segments) < 3 or segments[0] not in API_PREFIXES:
        return _non_resource(method, segments)
    prefix = segments[0]
    current = segments[1:]
    group = ""
    if prefix != LEGACY_PREFIX:
        if len(current) < 3:
            return _non_resource(method, segments)
        group = current[0]
        current = current[1:]
    version = current[0]
    current = current[1:]

    verb_from_method = False
    if current[0] in SPECIAL_VERBS:
        if len(current) < 2:
            raise K8sRequestError("unable to determine kind and namespace from url")
        verb = current[0]
        current = current[1:]
    else:
        verb_from_method = True
        verb = _METHOD_VERBS.get(method, "")

    namespace = ""
    if current[0] == "namespaces" and len(current) > 1:
        namespace = current[1]
        if len(current) > 2 and current[2] not in NAMESPACE_SUBRESOURCES:
            current = current[2:]

    resource = subresource = name = ""
    if len(current) >= 3 and verb != "proxy":
        subresource = current[2]
    if len(current) >= 2:
        name = current[1]
    resource = current[0]

    if verb_from_method and subresource in CONNECT_SUBRESOURCES:
        verb = "create"
    if not name and verb == "get":
        verb = "watch" if _query_bool(query, "watch") else "list"
        name = _selected_name(query)
    if not name and verb == "delete":
        verb = "deletecollection"

    return RequestInfo(
        is_resource_request=True,
        verb=verb,
        api_prefix=prefix,
        api_group=group,
        api_version=version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
        parts=current,
        discovery=False,
    )
