"""The C{tcp} kind: a host and one or more tunnel pairs (console port → the host's port).

A local port may be C{auto} (any free port); two tunnels of one item never
share a fixed local port.  The console's C{LOCAL:REMOTE[/SCHEME]} text of a
pair is parsed by L{parse_tunnel_text}.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from shared import schema
from shared.kinds.base import AUTO, Item, Kind, TunnelSpec
from shared.kinds.fields import local_port
from shared.schema import Field, Where

NAME = "tcp"

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]{0,31}$")


def parse_tunnel_text(text: str) -> dict[str, Any]:
    """Parse the console's C{LOCAL:REMOTE[/SCHEME]} into the schema's mapping."""
    body, _, scheme = text.strip().partition("/")
    local, sep, remote = body.partition(":")
    if not sep:
        raise ValueError(f"{text!r} is not LOCAL:REMOTE (for example 8080:80 or auto:5432)")
    out: dict[str, Any] = {
        "local_port": AUTO if local.strip() == AUTO else _port_text(local, text),
        "remote_port": _port_text(remote, text),
    }
    if scheme:
        out["scheme"] = scheme
    return out


def _port_text(value: str, whole: str) -> int:
    value = value.strip()
    if not value.isdigit():
        raise ValueError(f"{whole!r}: {value!r} is not a port number (1-65535) or 'auto'")
    return int(value)


def _scheme(node: yaml.Node, where: Where) -> str:
    value = schema.string(1, 32)(node, where).lower()
    if not _SCHEME.match(value):
        raise where.error(node, f"{value!r} is not a scheme name (such as ssh, http, postgres)")
    return value


_TUNNEL_FIELDS = {
    "local_port": Field(local_port, default=None),
    "remote_port": Field(schema.integer(1, 65535), required=True),
    "scheme": Field(_scheme, default=None),
}


def _tunnel(node: yaml.Node, where: Where) -> TunnelSpec:
    values = schema.mapping(node, where, _TUNNEL_FIELDS)
    return TunnelSpec(values["local_port"], values["remote_port"], values["scheme"])


FIELDS = {
    "host": Field(schema.host, required=True),
    "tunnels": Field(schema.list_of(_tunnel, min_items=1, max_items=64), required=True),
}


def build(values: dict[str, Any], where: Where, node: yaml.Node) -> dict[str, Any]:
    tunnels: tuple[TunnelSpec, ...] = tuple(values["tunnels"])
    fixed = [t.local_port for t in tunnels if t.local_port is not None]
    if len(fixed) != len(set(fixed)):
        raise where.child("tunnels").error(node, "two tunnels use the same local port")
    return {"host": values["host"], "tunnels": tunnels}


def spec_values(item: Item) -> dict[str, Any]:
    return {"host": item.host, "tunnels": [t.to_json() for t in item.tunnels]}


KIND = Kind(NAME, FIELDS, build, spec_values)
