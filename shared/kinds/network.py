"""The C{network} kind: filter rules (addresses, protocol, ports) of a network tunnel.

Each rule is checked and stored in its canonical text
(L{shared.addresses.FilterRule}); an item has 1 to 50 of them.
"""

from __future__ import annotations

from typing import Any

import yaml

from shared import addresses, schema
from shared.kinds.base import Item, Kind
from shared.schema import Field, Where

NAME = "network"


def _filter_rule(node: yaml.Node, where: Where) -> str:
    value = schema.string(1, 4096)(node, where)
    try:
        return addresses.FilterRule.parse(value).describe()
    except ValueError as error:
        raise where.error(node, str(error)) from None


FIELDS = {
    "filters": Field(schema.list_of(_filter_rule, min_items=1, max_items=50), required=True),
}


def build(values: dict[str, Any], where: Where, node: yaml.Node) -> dict[str, Any]:
    return {"filters": tuple(values["filters"])}


def spec_values(item: Item) -> dict[str, Any]:
    return {"filters": list(item.filters)}


KIND = Kind(NAME, FIELDS, build, spec_values)
