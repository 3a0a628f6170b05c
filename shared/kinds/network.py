"""The C{network} kind: filter rules (addresses, IP protocol, ports) of a network tunnel.

An item has 1 to 50 filters, no two the same.  A filter is written either
as a mapping (C{ip}, optional C{protocol} and C{ports}: the form of
jumpoint.yaml) or as one text C{IP[,IP|CIDR][/PROTOCOL[/PORTS]]} (the form
of C{jump item create network --filter} and of the items stored so far).
Both are checked into a L{FilterRule} (L{shared.addresses}), stored and
shown as its canonical text (L{FilterRule.describe}); every error names the
file, line and key (C{filters[1].ports}).  Rows of the state database are
read with the rules they were stored under (L{Where.check_text} off: IPv6
addresses and ranges in lists, refused for new filters, stay readable).
"""

from __future__ import annotations

from typing import Any

import yaml

from shared import addresses, schema
from shared.addresses import FilterRule, PortSet
from shared.kinds.base import Item, Kind
from shared.schema import Field, Where

NAME = "network"


def _legacy(where: Where) -> bool:
    """A row of the state database: read with the rules it was stored under."""
    return not where.check_text


def _ip(node: yaml.Node, where: Where) -> tuple[addresses.FilterAddress, ...]:
    """C{ip}: an address, a list (C{a,b,c} or a YAML list), a range C{a-b} or a CIDR."""
    if isinstance(node, yaml.SequenceNode):
        items = schema.list_of(schema.string(1, 64), min_items=1, max_items=256)(node, where)
        value = ",".join(items)
    else:
        value = schema.string(1, 4096)(node, where)
    try:
        return addresses.parse_filter_addresses(value, _legacy(where))
    except ValueError as error:
        raise where.error(node, str(error)) from None


def _protocol(node: yaml.Node, where: Where) -> str:
    """C{protocol}: an IANA keyword or number (C{tcp}, C{udp}, C{icmp}, C{sctp}, C{47}...)."""
    value = schema.string(1, 32)(node, where)
    try:
        return addresses.parse_protocol(value)
    except ValueError as error:
        raise where.error(node, str(error)) from None


def _ports(node: yaml.Node, where: Where) -> PortSet:
    """C{ports}: a port, a list (C{"53,123"} or a YAML list) or a range C{8000-8100}."""
    value: str | list[str]
    if isinstance(node, yaml.SequenceNode):
        value = schema.list_of(schema.string(1, 16), min_items=1, max_items=256)(node, where)
    else:
        value = schema.string(1, 4096)(node, where)
    try:
        return addresses.parse_filter_ports(value)
    except ValueError as error:
        raise where.error(node, str(error)) from None


_FILTER_FIELDS = {
    "ip": Field(_ip, required=True),
    "protocol": Field(_protocol, default=addresses.ANY_PROTOCOL),
    "ports": Field(_ports, default=None),
}


def _value_node(node: yaml.MappingNode, key: str) -> yaml.Node:
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            found: yaml.Node = value_node
            return found
    return node


def filter_rule(node: yaml.Node, where: Where) -> FilterRule:
    """One filter: the mapping C{{ip, protocol, ports}} or the text C{IP[/PROTOCOL[/PORTS]]}."""
    if isinstance(node, yaml.MappingNode):
        values = schema.mapping(node, where, _FILTER_FIELDS)
        try:
            return FilterRule(values["ip"], values["protocol"], values["ports"])
        except ValueError as error:  # ports with a protocol that has none
            key = "ports" if values["ports"] is not None else "ip"
            raise where.child(key).error(_value_node(node, key), str(error)) from None
    value = schema.string(1, 4096)(node, where)
    try:
        return FilterRule.parse(value, _legacy(where))
    except ValueError as error:
        raise where.error(node, str(error)) from None


def _filters(node: yaml.Node, where: Where) -> list[FilterRule]:
    rules = schema.list_of(filter_rule, min_items=1, max_items=addresses.MAX_FILTER_RULES)(
        node, where
    )
    seen: dict[FilterRule, int] = {}
    for index, rule in enumerate(rules):
        if rule in seen:
            raise where.child(index).error(
                node.value[index],
                f"the same filter as filters[{seen[rule]}] ({rule.describe()})",
            )
        seen[rule] = index
    return rules


FIELDS = {"filters": Field(_filters, required=True)}


def build(values: dict[str, Any], where: Where, node: yaml.Node) -> dict[str, Any]:
    return {"filters": tuple(values["filters"])}


def spec_values(item: Item) -> dict[str, Any]:
    return {"filters": [rule.describe() for rule in item.filters]}


KIND = Kind(NAME, FIELDS, build, spec_values)
