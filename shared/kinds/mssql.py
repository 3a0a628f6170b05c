"""The C{mssql} kind: a SQL Server (host, port, the login the Jumpoint injects, database).

One tunnel, to the server's port, with scheme C{mssql}; the connection logs
in first (C{login_timeout}).  C{encryption} is how the Jumpoint talks to the
server (C{required}: TLS, C{strict}: TDS 8.0); C{allowed_routes} are the
targets a routing answer may send the login to (L{shared.kinds.routes}).
"""

from __future__ import annotations

from typing import Any

import yaml

from shared import schema
from shared.kinds.base import AUTO, NAME_MAX, Item, Kind, TunnelSpec
from shared.kinds.fields import local_port, login_timeout, pem_certificates
from shared.kinds.routes import split_route
from shared.schema import Field, Where

NAME = "mssql"
DEFAULT_PORT = 1433


def _route(node: yaml.Node, where: Where) -> str:
    value = schema.string(3, 300)(node, where)
    try:
        host, port = split_route(value)
    except ValueError as error:
        raise where.error(node, str(error)) from None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


FIELDS = {
    "host": Field(schema.host, required=True),
    "port": Field(schema.integer(1, 65535), default=DEFAULT_PORT),
    "local_port": Field(local_port, default=None),
    "username": Field(schema.name(NAME_MAX), required=True),
    "database": Field(schema.name(NAME_MAX), default=None),
    "encryption": Field(schema.choice("required", "strict"), default="required"),
    "trust_server_certificate": Field(schema.boolean, default=False),
    "ca_pem": Field(pem_certificates, default=None),
    "login_timeout": Field(login_timeout, default=None),
    "allowed_routes": Field(schema.list_of(_route, max_items=100), default=[]),
}


def build(values: dict[str, Any], where: Where, node: yaml.Node) -> dict[str, Any]:
    return {
        "host": values["host"],
        "port": values["port"],
        "username": values["username"],
        "database": values["database"],
        "encryption": values["encryption"],
        "trust_server_certificate": values["trust_server_certificate"],
        "ca_pem": values["ca_pem"],
        "allowed_routes": tuple(values["allowed_routes"]),
        "tunnels": (TunnelSpec(values["local_port"], values["port"], NAME),),
    }


def spec_values(item: Item) -> dict[str, Any]:
    local = item.tunnels[0].local_port if item.tunnels else None
    return {
        "host": item.host,
        "port": item.port,
        "local_port": AUTO if local is None else local,
        "username": item.username,
        "database": item.database,
        "encryption": item.encryption,
        "trust_server_certificate": item.trust_server_certificate or None,
        "ca_pem": item.ca_pem,
        "login_timeout": item.login_timeout,
        "allowed_routes": list(item.allowed_routes) or None,
    }


KIND = Kind(NAME, FIELDS, build, spec_values, logs_in=True)
