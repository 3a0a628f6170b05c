"""The requests on items: list, show, create, change, delete.

An item is visible to a user whose groups may see its jump group; a change
needs the C{manage} right on the jump group (rule
C{groups.jump_groups.manage}), and the items of jumpoint.yaml are read-only.
A new item's targets, and a tunnel added to one, pass C{allowed_targets} at
once, not only when they are opened.  Tunnels (of C{tcp} items: C{LOCAL:REMOTE[/PROTOCOL]})
and filter rules (of C{network} items) are added and removed, never edited;
a duplicate is refused, and so is removing the last one.  Every change is
committed together with its audit row (C{item_created}, C{item_changed}: the
change and its value, a filter in its canonical text; C{item_deleted}).
"""

from __future__ import annotations

from typing import Any

from jumpoint import kinds
from jumpoint.dialing import check_item_targets
from jumpoint.handlers.request_context import (
    Reply,
    RequestChannel,
    RequestCore,
    denied,
    visible,
)
from jumpoint.policy import Grant
from shared.addresses import MAX_FILTER_RULES, FilterRule
from shared.errors import AccessDenied, UsageError
from shared.items import Item, item_from_data, parse_tunnel_text
from shared.kinds.base import TCP
from shared.protocol import control

FILTER_HINT = "a filter is IP[,IP|CIDR][/PROTOCOL[/PORTS]], for example 10.0.0.0/24/tcp/22,443"


def _item_json(item: Item, grant: Grant) -> dict[str, Any]:
    out = item.to_json()
    out["may_open"] = grant.may_open(item)
    out["may_manage"] = not item.read_only and grant.may_manage(item.jump_group)
    return out


async def list_items(channel: RequestChannel, grant: Grant, message: dict[str, Any]) -> Reply:
    search = (message.get("search") or "").lower()
    tag = message.get("tag")
    jump_group = message.get("jump_group")
    found = []
    for item in await channel.core.catalog.everything():
        if not grant.may_see(item):
            continue
        if jump_group is not None and item.jump_group != jump_group:
            continue
        if tag is not None and (item.tag or "") != tag:
            continue
        if search:
            haystack = " ".join(
                str(v).lower()
                for v in (item.name, item.host, item.tag, item.comments, item.url)
                if v
            )
            if search not in haystack:
                continue
        found.append(_item_json(item, grant))
    return {"items": found}


async def show_item(channel: RequestChannel, grant: Grant, message: dict[str, Any]) -> Reply:
    return {"item": _item_json(await visible(channel.core, grant, message["item"]), grant)}


def _check_manage(grant: Grant, jump_group: str, action: str) -> None:
    if not grant.may_manage(jump_group):
        raise denied(
            f"your {grant.rule_groups()} may not {action} items in jump group {jump_group!r}",
            rule="groups.jump_groups.manage",
            jump_group=jump_group,
        )


def _check_policies(core: RequestCore, item: Item) -> None:
    policies = core.config.policies
    for key, known in (("jump_policy", policies.jump), ("session_policy", policies.session)):
        name = getattr(item, key)
        if name is not None and name not in known:
            defined = ", ".join(sorted(known)) or "none"
            raise UsageError(
                f"item: {key}: no {key.replace('_', ' ')} named {name!r} (defined: {defined})"
            )


async def create_item(channel: RequestChannel, grant: Grant, message: dict[str, Any]) -> Reply:
    core = channel.core
    assert channel.user is not None
    item = item_from_data(message["item"], "console")
    _check_manage(grant, item.jump_group, "create")
    if item.name in core.catalog.configured:
        raise UsageError(
            f"an item named {item.name!r} already exists (in jumpoint.yaml, read-only)",
            hint="choose another name",
        )
    _check_policies(core, item)
    try:  # its targets pass allowed_targets at creation, not only at open
        await check_item_targets(core, item)
    except AccessDenied as denial:
        denial.context.update(jump_group=item.jump_group, host=item.host)
        raise
    # the item and its audit row are committed together, or neither
    created: Item = await core.log_audit.record(
        "item_created",
        user=channel.user.name,
        item=item.name,
        durable=True,
        apply=core.catalog.store.creating(item, channel.user.name, core.clock.seconds()),
        spec=_audit_spec(item.with_changes(source="console", created_by=channel.user.name)),
    )
    return {"item": _item_json(created, grant)}


def _audit_spec(item: Item) -> dict[str, Any]:
    spec = item.to_spec()
    if "ca_pem" in spec:
        spec["ca_pem"] = f"{spec['ca_pem'].count('BEGIN CERTIFICATE')} certificates"
    return spec


async def _managed(core: RequestCore, grant: Grant, name: str, action: str) -> Item:
    item = await visible(core, grant, name)
    if item.read_only:
        raise UsageError(
            f"item {name!r} is defined in jumpoint.yaml and is read-only",
            hint="ask your administrator to change jumpoint.yaml",
        )
    _check_manage(grant, item.jump_group, action)
    return item


def _tunnel_key(tunnel: dict[str, Any]) -> tuple[Any, Any, Any]:
    """A tunnel pair is its local port, remote port and protocol (the scheme is a label)."""
    return tunnel["local_port"], tunnel["remote_port"], tunnel.get("protocol", TCP)


def _shown_tunnel(tunnel: dict[str, Any]) -> str:
    protocol = tunnel.get("protocol", TCP)
    suffix = "" if protocol == TCP else f"/{protocol}"
    return f"{tunnel['local_port']}:{tunnel['remote_port']}{suffix}"


def _changed_tunnels(item: Item, spec: dict[str, Any], change: str, value: str) -> list[Any]:
    """C{tunnel_add}, C{tunnel_remove}: the item's tunnels with C{value} added or removed."""
    kind = kinds.get(item.type)
    if kind is None or not kind.has_tunnels:
        raise UsageError(
            f"item {item.name!r} is a {item.type} item; only {kinds.tunnel_kinds()} items"
            " have tunnels"
        )
    try:
        tunnel = parse_tunnel_text(value)
    except ValueError as error:
        raise UsageError(str(error)) from None
    tunnels = list(spec["tunnels"])
    wanted = _tunnel_key(tunnel)
    if change == "tunnel_add":
        if any(_tunnel_key(t) == wanted for t in tunnels):
            raise UsageError(f"item {item.name!r} already has tunnel {value}")
        return [*tunnels, tunnel]
    kept = [t for t in tunnels if _tunnel_key(t) != wanted]
    if len(kept) == len(tunnels):
        shown = ", ".join(_shown_tunnel(t) for t in tunnels)
        raise UsageError(f"item {item.name!r} has no tunnel {value} (its tunnels: {shown})")
    if not kept:
        raise UsageError(
            f"tunnel {value} is the last tunnel of item {item.name!r}",
            hint="add another tunnel first, or delete the item",
        )
    return kept


def _changed_filters(item: Item, change: str, value: str) -> tuple[list[str], str]:
    """C{filter_add}, C{filter_remove}: the item's filters after the change, and the rule's text.

    Filters are compared in their canonical form (L{FilterRule}): C{10.0.0.9,10.0.0.1/TCP/22}
    is C{10.0.0.1,10.0.0.9/tcp/22}.
    """
    kind = kinds.get(item.type)
    if kind is None or not kind.has_filters:
        raise UsageError(
            f"item {item.name!r} is a {item.type} item; only {kinds.filter_kinds()} items"
            " have filters"
        )
    try:  # a stored rule older than today's rules (IPv6...) can still be removed
        rule = FilterRule.parse(value, legacy=change == "filter_remove")
    except ValueError as error:
        raise UsageError(str(error), hint=FILTER_HINT) from None
    rules = list(item.filters)
    shown = rule.describe()
    if change == "filter_add":
        if rule in rules:
            raise UsageError(f"item {item.name!r} already has filter {shown}")
        if len(rules) >= MAX_FILTER_RULES:
            raise UsageError(
                f"item {item.name!r} has {len(rules)} filters, the most an item may have",
                hint="remove a filter first",
            )
        rules.append(rule)
    else:
        if rule not in rules:
            listed = ", ".join(r.describe() for r in rules)
            raise UsageError(f"item {item.name!r} has no filter {shown} (its filters: {listed})")
        if len(rules) == 1:
            raise UsageError(
                f"filter {shown} is the last filter of item {item.name!r}: an item has at"
                " least one",
                hint="add another filter first, or delete the item",
            )
        rules.remove(rule)
    return [r.describe() for r in rules], shown


async def change_item(channel: RequestChannel, grant: Grant, message: dict[str, Any]) -> Reply:
    core = channel.core
    assert channel.user is not None
    change, value = message["change"], message["value"]
    if change not in control.ITEM_CHANGES:
        raise UsageError(f"unknown item change {change!r}")
    item = await _managed(core, grant, message["item"], "change")
    spec = item.to_spec()
    added_port: int | None = None
    if change in ("tunnel_add", "tunnel_remove"):
        spec["tunnels"] = _changed_tunnels(item, spec, change, value)
        if change == "tunnel_add":
            added_port = spec["tunnels"][-1]["remote_port"]
    elif change in ("filter_add", "filter_remove"):
        spec["filters"], value = _changed_filters(item, change, value)
    elif change == "move":
        _check_manage(grant, value, "move")
        spec["jump_group"] = value
    elif change == "tag":
        spec["tag"] = value.strip() or None
    else:
        spec["comments"] = value or None
    changed = item_from_data(spec, "console").with_changes(created_by=item.created_by)
    if added_port is not None:  # a new target: checked now, not only when opened
        try:
            await check_item_targets(core, changed, frozenset({added_port}))
        except AccessDenied as denial:
            denial.context.update(jump_group=changed.jump_group, host=changed.host)
            raise
    await core.log_audit.record(
        "item_changed",
        user=channel.user.name,
        item=item.name,
        durable=True,
        apply=core.catalog.store.updating(changed, core.clock.seconds()),
        change=change,
        value=value,
    )
    return {"item": _item_json(changed, grant)}


async def delete_item(channel: RequestChannel, grant: Grant, message: dict[str, Any]) -> Reply:
    core = channel.core
    assert channel.user is not None
    item = await _managed(core, grant, message["item"], "delete")
    await core.log_audit.record(
        "item_deleted",
        user=channel.user.name,
        item=item.name,
        durable=True,
        apply=core.catalog.store.deleting(item.name),
    )
    return {"item": item.name}
