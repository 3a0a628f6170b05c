"""Jump items: what a user may open, and the schema that checks them.

An item names a target on the Jumpoint's network.  A TCP tunnel item has a
host and one or more tunnel pairs (a local port on the console's loopback
address, "auto" for any free port, and a remote port on the host).  Items are
sent to the console in control messages as plain JSON (L{TcpItem.to_json}).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from shared import schema
from shared.schema import Field, Where

NAME_MAX = 128
AUTO = "auto"


@dataclass(frozen=True)
class TunnelSpec:
    """One local→remote port pair; C{local_port} C{None} means "auto"."""

    local_port: int | None
    remote_port: int

    def to_json(self) -> dict[str, Any]:
        return {
            "local_port": AUTO if self.local_port is None else self.local_port,
            "remote_port": self.remote_port,
        }


@dataclass(frozen=True)
class TcpItem:
    """A TCP tunnel item (C{type: tcp})."""

    name: str
    host: str
    tunnels: tuple[TunnelSpec, ...]
    local_address: str = "127.0.0.1"
    jump_group: str = "default"
    tag: str | None = None
    comments: str | None = None
    source: str = "config"
    type: str = "tcp"

    @property
    def remote_ports(self) -> frozenset[int]:
        return frozenset(t.remote_port for t in self.tunnels)

    def allows_target(self, host: str, port: int) -> bool:
        """The seed's rule: only the item's host and one of its remote ports."""
        return host == self.host and port in self.remote_ports

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "host": self.host,
            "local_address": self.local_address,
            "tunnels": [t.to_json() for t in self.tunnels],
            "jump_group": self.jump_group,
            "tag": self.tag,
            "comments": self.comments,
            "read_only": self.source == "config",
        }


def _local_port(node: yaml.Node, where: Where) -> int | None:
    if isinstance(node, yaml.ScalarNode) and node.value == AUTO:
        return None
    try:
        return schema.integer(1, 65535)(node, where)
    except Exception:
        raise where.error(node, "must be 'auto' or a port number (1-65535)") from None


_TUNNEL_FIELDS = {
    "local_port": Field(_local_port, default=None),
    "remote_port": Field(schema.integer(1, 65535), required=True),
}


def _tunnel(node: yaml.Node, where: Where) -> TunnelSpec:
    values = schema.mapping(node, where, _TUNNEL_FIELDS)
    return TunnelSpec(values["local_port"], values["remote_port"])


_ITEM_FIELDS = {
    "name": Field(schema.string(1, NAME_MAX), required=True),
    "type": Field(schema.choice("tcp"), required=True),
    "host": Field(schema.host, required=True),
    "local_address": Field(schema.loopback_address, default="127.0.0.1"),
    "tunnels": Field(schema.list_of(_tunnel, min_items=1, max_items=64), required=True),
    "jump_group": Field(schema.string(1, NAME_MAX), default="default"),
    "tag": Field(schema.optional_string(NAME_MAX), default=None),
    "comments": Field(schema.optional_string(4096), default=None),
}


def item(node: yaml.Node, where: Where) -> TcpItem:
    """Check one item of the C{items:} list."""
    values = schema.mapping(node, where, _ITEM_FIELDS)
    tunnels: tuple[TunnelSpec, ...] = tuple(values["tunnels"])
    fixed = [t.local_port for t in tunnels if t.local_port is not None]
    if len(fixed) != len(set(fixed)):
        raise where.child("tunnels").error(node, "two tunnels use the same local port")
    return TcpItem(
        name=values["name"],
        host=values["host"],
        tunnels=tunnels,
        local_address=values["local_address"],
        jump_group=values["jump_group"],
        tag=values["tag"] or None,
        comments=values["comments"],
    )


def items(node: yaml.Node, where: Where) -> tuple[TcpItem, ...]:
    """Check the C{items:} list: every item valid, names unique."""
    checked = schema.list_of(item, max_items=100_000)(node, where)
    seen: set[str] = set()
    for index, entry in enumerate(checked):
        if entry.name in seen:
            raise (
                where.child(index)
                .child("name")
                .error(node.value[index], f"duplicate item name {entry.name!r}")
            )
        seen.add(entry.name)
    return tuple(checked)
