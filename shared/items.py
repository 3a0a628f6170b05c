"""Jump items: what a user may open, and the one schema that checks them.

An item names a target on the Jumpoint's network.  Every kind shares the
common fields (name, local address, jump group, tag, comments, policies);
the fields of each kind, its checks and the values it stores are its own
module's in L{shared.kinds} (tcp, mssql, k8s, network), looked up by the
item's C{type}.

Items come from jumpoint.yaml (read-only) or are created from the console and
kept in the state database.  Both go through the same checkers
(L{item_checker}): a console request is turned into a node tree
(L{shared.schema.from_data}) and checked exactly like the YAML file, so a
field is validated in one place.  Items travel to the console as plain JSON
(L{Item.to_json}).
"""

from __future__ import annotations

from typing import Any

import yaml

from shared import schema
from shared.kinds import BUILT_IN, kind_named, kind_names
from shared.kinds.base import (
    AUTO,
    LOOPBACK_DEFAULT,
    NAME_MAX,
    WELL_KNOWN_SCHEMES,
    Item,
    TunnelSpec,
)
from shared.kinds.fields import LOGIN_TIMEOUT_DEFAULT, LOGIN_TIMEOUT_MAX, login_timeout
from shared.kinds.routes import canonical_route_host, split_route
from shared.kinds.tcp import parse_tunnel_text
from shared.schema import Field, Where

KINDS = tuple(kind.name for kind in BUILT_IN)
"""The kinds built in (L{shared.kinds.kind_names}: also those registered since)."""
LOGIN_KINDS = tuple(kind.name for kind in BUILT_IN if kind.logs_in)
"""The kinds whose connections log in first, so that C{login_timeout} applies to them."""

COMMENTS_MAX = 4096


def _type(node: yaml.Node, where: Where) -> str:
    """C{type}: one of the registered kinds."""
    return schema.choice(*kind_names())(node, where)


# Names are printable and in NFKC form, comments are one line of text
# (shared.text): they are shown on others' terminals.
_COMMON_FIELDS = {
    "name": Field(schema.name(NAME_MAX), required=True),
    "type": Field(_type, required=True),
    "local_address": Field(schema.loopback_address, default=LOOPBACK_DEFAULT),
    "jump_group": Field(schema.name(NAME_MAX), default="default"),
    "tag": Field(schema.optional_name(NAME_MAX), default=None),
    "comments": Field(schema.free_text(COMMENTS_MAX), default=None),
    "jump_policy": Field(schema.name(NAME_MAX), default=None),
    "session_policy": Field(schema.name(NAME_MAX), default=None),
}


def _kind_of(node: yaml.Node, where: Where) -> str:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == "type":
                return _type(value_node, where.child("type"))
        raise where.error(node, "missing required key 'type'")
    raise where.error(node, "expected a mapping of keys to values")


def item_checker(source: str = "config") -> schema.Checker[Item]:
    """The checker of one item; C{source} is C{"config"} or C{"console"}."""

    def check(node: yaml.Node, where: Where) -> Item:
        kind = kind_named(_kind_of(node, where))
        values = schema.mapping(node, where, {**_COMMON_FIELDS, **kind.fields})
        common = {
            "name": values["name"],
            "type": kind.name,
            "local_address": values["local_address"],
            "jump_group": values["jump_group"],
            "tag": values["tag"] or None,
            "comments": values["comments"] or None,
            "jump_policy": values["jump_policy"],
            "session_policy": values["session_policy"],
            "login_timeout": values.get("login_timeout"),
            "source": source,
        }
        return Item(**common, **kind.build(values, where, node))

    return check


def items(node: yaml.Node, where: Where) -> tuple[Item, ...]:
    """Check the C{items:} list of jumpoint.yaml: every item valid, names unique."""
    checked = schema.list_of(item_checker("config"), max_items=100_000)(node, where)
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


def item_from_data(
    data: dict[str, Any], source: str, label: str = "item", stored: bool = False
) -> Item:
    """Check an item given as plain data (a console request, a database row).

    C{stored}: a row of the state database, checked when it was stored; the
    text rules of names and comments are not applied again (L{Where.check_text}).
    """
    where = Where(label, "", show_line=False, check_text=not stored)
    return item_checker(source)(schema.from_data(data), where)


__all__ = [
    "AUTO",
    "COMMENTS_MAX",
    "KINDS",
    "LOGIN_KINDS",
    "LOGIN_TIMEOUT_DEFAULT",
    "LOGIN_TIMEOUT_MAX",
    "LOOPBACK_DEFAULT",
    "NAME_MAX",
    "WELL_KNOWN_SCHEMES",
    "Item",
    "TunnelSpec",
    "canonical_route_host",
    "item_checker",
    "item_from_data",
    "items",
    "login_timeout",
    "parse_tunnel_text",
    "split_route",
]
