"""`jump item ...`: create, list, show, change and delete jump items on the Jumpoint.

Tunnels of tcp items (C{jump item tunnel add/remove}) and filter rules of
network items (C{jump item filter add/remove}) are added and removed, never
edited; the Jumpoint refuses duplicates and the removal of the last one.

The console only turns options into an item specification (the same keys as
an entry of C{items:} in jumpoint.yaml) and sends it; the Jumpoint checks
every field with the one schema, checks that the user may manage the jump
group, and answers with the stored item or an error naming the field.
"""

from __future__ import annotations

from typing import Any

import click

from console import kinds
from console.kinds.base import Submit
from console.output import print_item, print_items, say
from console.remote import call, profile_option
from shared.protocol import control


@click.group()
def item() -> None:
    """Create, list, show, change and delete jump items."""


def _common(function: Any) -> Any:
    """Options every item kind has."""
    for option in reversed(
        [
            click.option("--local-address", help="The console's 127.x.y.z address for it."),
            click.option("--jump-group", help="Jump group (default: default)."),
            click.option("--tag", help="Tag (groups items in listings)."),
            click.option("--comments", help="Free text."),
            click.option("--jump-policy", help="Name of a jump policy of the Jumpoint."),
            click.option("--session-policy", help="Name of a session policy of the Jumpoint."),
            click.option("--json", "as_json", is_flag=True, help="JSON output."),
            profile_option,
        ]
    ):
        function = option(function)
    return function


def _spec(kind: str, name: str, options: dict[str, Any], **fields: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "type": kind}
    for key in ("local_address", "jump_group", "tag", "comments", "jump_policy", "session_policy"):
        if options.get(key) is not None:
            spec[key] = options[key]
    spec.update({k: v for k, v in fields.items() if v is not None})
    return spec


def _create(spec: dict[str, Any], as_json: bool, profile: str | None) -> None:
    result = call(profile, control.CREATE_ITEM, item=spec)
    if as_json:
        print_item(result["item"], True)
    else:
        say(f"created {spec['type']} item {spec['name']!r}")
        print_item(result["item"], False)


def _submit(kind: str) -> Submit:
    """What a kind's create command calls with the item's name, options and fields."""

    def submit(name: str, options: dict[str, Any], /, **fields: Any) -> None:
        as_json, profile = options.pop("as_json"), options.pop("profile")
        _create(_spec(kind, name, options, **fields), as_json, profile)

    return submit


@item.group()
def create() -> None:
    """Create an item: tcp, mssql, k8s or network."""


for _kind in kinds.registered():
    _command = _kind.create_command(_common, _submit(_kind.name))
    if _command is not None:
        create.add_command(_command)


@item.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.option("--search", help="Only items whose name, host, tag or comments contain TEXT.")
@click.option("--tag", help="Only items with this tag ('' for untagged).")
@click.option("--jump-group", help="Only items of this jump group.")
@profile_option
def list_items(
    as_json: bool, search: str | None, tag: str | None, jump_group: str | None, profile: str | None
) -> None:
    """List the items you may see."""
    result = call(profile, control.LIST_ITEMS, search=search, tag=tag, jump_group=jump_group)
    print_items(result["items"], as_json)


@item.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@profile_option
def show(name: str, as_json: bool, profile: str | None) -> None:
    """Show one item."""
    print_item(call(profile, control.SHOW_ITEM, item=name)["item"], as_json)


@item.command()
@click.argument("name")
@profile_option
def delete(name: str, profile: str | None) -> None:
    """Delete an item created from the console."""
    call(profile, control.DELETE_ITEM, item=name)
    say(f"deleted item {name!r}")


def _change(
    name: str, change: str, value: str, profile: str | None, done: str, as_json: bool = False
) -> None:
    result = call(profile, control.CHANGE_ITEM, item=name, change=change, value=value)
    if as_json:
        print_item(result["item"], True)
        return
    say(done)
    print_item(result["item"], False)


_json_option = click.option("--json", "as_json", is_flag=True, help="JSON output (the item).")


@item.group()
def tunnel() -> None:
    """Add or remove a tunnel of a tcp item (tunnels are never edited)."""


@tunnel.command("add")
@click.argument("name")
@click.argument("pair")
@_json_option
@profile_option
def tunnel_add(name: str, pair: str, as_json: bool, profile: str | None) -> None:
    """Add the tunnel LOCAL:REMOTE[/PROTOCOL] to item NAME (PROTOCOL: tcp, udp, tcp-udp)."""
    _change(name, "tunnel_add", pair, profile, f"added tunnel {pair} to {name!r}", as_json)


@tunnel.command("remove")
@click.argument("name")
@click.argument("pair")
@_json_option
@profile_option
def tunnel_remove(name: str, pair: str, as_json: bool, profile: str | None) -> None:
    """Remove the tunnel LOCAL:REMOTE[/PROTOCOL] from item NAME."""
    _change(name, "tunnel_remove", pair, profile, f"removed tunnel {pair} from {name!r}", as_json)


@item.group("filter")
def filter_group() -> None:
    """Add or remove a filter rule of a network item (filters are never edited)."""


@filter_group.command("add")
@click.argument("name")
@click.argument("spec")
@_json_option
@profile_option
def filter_add(name: str, spec: str, as_json: bool, profile: str | None) -> None:
    """Add the filter SPEC to item NAME.

    SPEC is IP[,IP|CIDR][/PROTOCOL[/PORTS]] or RANGE[/PROTOCOL[/PORTS]], IPv4
    only; PROTOCOL is an IANA keyword or number (tcp, udp, icmp, sctp, 47...).
    """
    _change(name, "filter_add", spec, profile, f"added filter {spec} to {name!r}", as_json)


@filter_group.command("remove")
@click.argument("name")
@click.argument("spec")
@_json_option
@profile_option
def filter_remove(name: str, spec: str, as_json: bool, profile: str | None) -> None:
    """Remove the filter SPEC from item NAME (never its last one)."""
    _change(name, "filter_remove", spec, profile, f"removed filter {spec} from {name!r}", as_json)


@item.command()
@click.argument("name")
@click.option("--jump-group", required=True, help="The jump group to move it to.")
@profile_option
def move(name: str, jump_group: str, profile: str | None) -> None:
    """Move an item to another jump group (you must manage both)."""
    _change(name, "move", jump_group, profile, f"moved {name!r} to jump group {jump_group!r}")


@item.command()
@click.argument("name")
@click.argument("tag", default="")
@profile_option
def tag(name: str, tag: str, profile: str | None) -> None:
    """Set an item's tag; a blank tag puts it back at the top level."""
    shown = f"tagged {name!r} {tag!r}" if tag.strip() else f"removed the tag of {name!r}"
    _change(name, "tag", tag, profile, shown)


@item.command()
@click.argument("name")
@click.argument("text", default="")
@profile_option
def comments(name: str, text: str, profile: str | None) -> None:
    """Set an item's comments (blank clears them)."""
    _change(name, "comments", text, profile, f"updated the comments of {name!r}")
