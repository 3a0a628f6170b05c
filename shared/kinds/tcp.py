"""The C{tcp} kind: a host and one or more tunnel pairs (console port → the host's port).

A pair carries C{tcp} (the default), C{udp} or both (C{tcp-udp}), as
RPort's tunnels.  A local port may be C{auto} (any free port); two tunnels
of one item never share a fixed local port for the same protocol (a TCP and
a UDP listener may).  The console's C{LOCAL:REMOTE[/PROTOCOL][/SCHEME]} text
of a pair is parsed by L{parse_tunnel_text}.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from shared import schema
from shared.kinds.base import AUTO, TCP, TUNNEL_PROTOCOLS, Item, Kind, TunnelSpec
from shared.kinds.fields import local_port
from shared.schema import Field, Where

NAME = "tcp"

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]{0,31}$")


def parse_tunnel_text(text: str) -> dict[str, Any]:
    """Parse the console's C{LOCAL:REMOTE[/PROTOCOL][/SCHEME]} into the schema's mapping.

    C{PROTOCOL} is C{tcp} (the default), C{udp} or C{tcp-udp}; any other
    suffix is a scheme (C{8080:80/http}).
    """
    body, *suffixes = text.strip().split("/")
    local, sep, remote = body.partition(":")
    if not sep:
        raise ValueError(f"{text!r} is not LOCAL:REMOTE (for example 8080:80 or auto:5432)")
    out: dict[str, Any] = {
        "local_port": AUTO if local.strip() == AUTO else _port_text(local, text),
        "remote_port": _port_text(remote, text),
    }
    if len(suffixes) > 2:
        raise ValueError(
            f"{text!r}: expected LOCAL:REMOTE[/PROTOCOL][/SCHEME] (such as 5353:53/udp)"
        )
    if suffixes and suffixes[0].strip().lower() in TUNNEL_PROTOCOLS:
        out["protocol"] = suffixes.pop(0).strip().lower()
    if suffixes and (
        len(suffixes) == 2
        or not suffixes[0].strip()
        or suffixes[0].strip().lower() in TUNNEL_PROTOCOLS
    ):
        raise ValueError(
            f"{text!r}: expected LOCAL:REMOTE[/PROTOCOL][/SCHEME] with PROTOCOL one of"
            f" {', '.join(TUNNEL_PROTOCOLS)} (such as 5353:53/udp or 8080:80/tcp/http)"
        )
    if suffixes:
        out["scheme"] = suffixes[0].strip()
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
    "protocol": Field(schema.choice(*TUNNEL_PROTOCOLS), default=TCP),
}


def _tunnel(node: yaml.Node, where: Where) -> TunnelSpec:
    values = schema.mapping(node, where, _TUNNEL_FIELDS)
    return TunnelSpec(
        values["local_port"], values["remote_port"], values["scheme"], values["protocol"]
    )


FIELDS = {
    "host": Field(schema.host, required=True),
    "tunnels": Field(schema.list_of(_tunnel, min_items=1, max_items=64), required=True),
}


def _tunnel_node(item: yaml.Node, index: int) -> yaml.Node:
    """The node of the item's tunnel C{index} (for the line of an error), else the item's."""
    if isinstance(item, yaml.MappingNode):
        for key, value in item.value:
            if getattr(key, "value", None) == "tunnels" and isinstance(value, yaml.SequenceNode):
                found: yaml.Node = value.value[index]
                return found
    return item


def build(values: dict[str, Any], where: Where, node: yaml.Node) -> dict[str, Any]:
    tunnels: tuple[TunnelSpec, ...] = tuple(values["tunnels"])
    bound: set[tuple[int, str]] = set()  # a TCP and a UDP listener may share a port
    for index, tunnel in enumerate(tunnels):
        if tunnel.local_port is None:
            continue
        for carried in sorted(tunnel.carries):
            if (tunnel.local_port, carried) in bound:
                raise (
                    where.child("tunnels")
                    .child(index)
                    .error(
                        _tunnel_node(node, index),
                        f"two tunnels use the same local port ({tunnel.local_port}/{carried})",
                    )
                )
            bound.add((tunnel.local_port, carried))
    return {"host": values["host"], "tunnels": tunnels}


def spec_values(item: Item) -> dict[str, Any]:
    return {"host": item.host, "tunnels": [t.to_json() for t in item.tunnels]}


KIND = Kind(NAME, FIELDS, build, spec_values)
