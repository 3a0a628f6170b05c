"""The C{k8s} kind: a Kubernetes API server (https URL, its CA certificates as PEM).

One tunnel, to the URL's port, with scheme C{https}; a connection's first
request is its login (C{login_timeout}).  The access rules (impersonation,
allowed namespaces, read-only, denied resources, exec and port-forward) are
the item's; the Jumpoint enforces them per request.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import yaml

from shared import schema
from shared.kinds.base import AUTO, Item, Kind, TunnelSpec
from shared.kinds.fields import local_port, login_timeout, pem_certificates
from shared.schema import Field, Where

NAME = "k8s"


def _https_url(node: yaml.Node, where: Where) -> str:
    value = schema.string(9, 2048)(node, where)
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise where.error(node, f"{value!r} must be an https:// URL with a host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise where.error(node, "the URL must not carry credentials, a query or a fragment")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise where.error(node, f"{value!r} has an invalid port") from None
    return value.rstrip("/")


_NAMESPACE = schema.string(1, 63, r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

FIELDS = {
    "url": Field(_https_url, required=True),
    "ca_pem": Field(pem_certificates, required=True),
    "namespace": Field(_NAMESPACE, default=None),
    "local_port": Field(local_port, default=None),
    "impersonate": Field(schema.boolean, default=False),
    "allowed_namespaces": Field(schema.list_of(_NAMESPACE, max_items=1000), default=[]),
    "read_only_access": Field(schema.boolean, default=False),
    "denied_resources": Field(
        schema.list_of(schema.string(1, 253, r"^[a-z0-9.-]+(/[a-z0-9-]+)?$"), max_items=1000),
        default=["secrets"],
    ),
    "allow_exec": Field(schema.boolean, default=True),
    "allow_port_forward": Field(schema.boolean, default=True),
    "login_timeout": Field(login_timeout, default=None),
}


def build(values: dict[str, Any], where: Where, node: yaml.Node) -> dict[str, Any]:
    parts = urlsplit(values["url"])
    return {
        "host": parts.hostname or "",
        "url": values["url"],
        "ca_pem": values["ca_pem"],
        "namespace": values["namespace"],
        "impersonate": values["impersonate"],
        "allowed_namespaces": tuple(values["allowed_namespaces"]),
        "read_only_access": values["read_only_access"],
        "denied_resources": tuple(values["denied_resources"]),
        "allow_exec": values["allow_exec"],
        "allow_port_forward": values["allow_port_forward"],
        "tunnels": (TunnelSpec(values["local_port"], parts.port or 443, "https"),),
    }


def spec_values(item: Item) -> dict[str, Any]:
    local = item.tunnels[0].local_port if item.tunnels else None
    return {
        "url": item.url,
        "ca_pem": item.ca_pem,
        "namespace": item.namespace,
        "local_port": AUTO if local is None else local,
        "impersonate": item.impersonate or None,
        "allowed_namespaces": list(item.allowed_namespaces) or None,
        "read_only_access": item.read_only_access or None,
        "denied_resources": list(item.denied_resources),
        "allow_exec": None if item.allow_exec else False,
        "allow_port_forward": None if item.allow_port_forward else False,
        "login_timeout": item.login_timeout,
    }


KIND = Kind(NAME, FIELDS, build, spec_values, logs_in=True)
