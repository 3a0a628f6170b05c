"""How the management commands print what the Jumpoint answered: tables or JSON.

Every listing has a C{--json} form (the Jumpoint's objects, unchanged; JSON
escapes every control character) and a plain table for people; times are
shown in the local time zone.  Every line of text goes out through L{say},
which escapes control and bidi characters (L{shared.text.printable}); table
cells are escaped before they are padded (L{cell}) so that columns line up.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from console import kinds
from shared.text import printable


def say(text: str, err: bool = False) -> None:
    """Print one line of text for people: every untrusted character escaped."""
    click.echo(printable(text), err=err)


def cell(value: Any) -> str:
    """A table cell: the value as text, escaped (so padding counts what is shown)."""
    return printable("" if value is None else str(value))


def when(seconds: Any) -> str:
    """A Unix time as local date and time, or C{-}."""
    if not isinstance(seconds, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


def span(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    seconds = int(seconds)
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds >= 3600:
        hours, rest = divmod(seconds, 3600)
        return f"{hours}h{rest // 60:02d}m" if rest else f"{hours}h"
    if seconds >= 60:
        minutes, rest = divmod(seconds, 60)
        return f"{minutes}m{rest:02d}s" if rest else f"{minutes}m"
    return f"{seconds}s"


def item_targets(entry: dict[str, Any]) -> str:
    """The TUNNELS column: the item's kind says (L{console.kinds}); blank for an unknown kind."""
    kind = kinds.get(entry.get("type"))
    return "" if kind is None else kind.targets(entry)


def print_items(entries: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(entries))
        return
    if not entries:
        say("no items")
        return
    say(f"{'NAME':<24} {'TYPE':<7} {'HOST':<24} {'TUNNELS':<28} {'GROUP':<12} {'TAG':<12} NOTE")
    for entry in entries:
        notes = []
        if entry.get("read_only"):
            notes.append("read-only")
        if entry.get("may_open") is False:
            notes.append("view only")
        say(
            f"{cell(entry.get('name')):<24} {cell(entry.get('type')):<7}"
            f" {cell(entry.get('host')):<24} {cell(item_targets(entry)):<28}"
            f" {cell(entry.get('jump_group')):<12} {cell(entry.get('tag')):<12}"
            f" {', '.join(notes)}".rstrip()
        )


def print_item(entry: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(entry))
        return
    order = [
        "name",
        "type",
        "host",
        "port",
        "url",
        "namespace",
        "username",
        "database",
        "local_address",
        "local_port",
        "jump_group",
        "tag",
        "comments",
        "jump_policy",
        "session_policy",
        "source",
        "created_by",
    ]
    for key in order:
        if entry.get(key) not in (None, ""):
            say(f"{key + ':':<16} {cell(entry[key])}")
    kind = kinds.get(entry.get("type"))
    for label, text in kind.detail_lines(entry) if kind is not None else []:
        say(f"{label + ':':<16} {text}")
    if entry.get("ca_certificates"):
        say(f"{'ca:':<16} {entry['ca_certificates']} certificate(s)")
    flags = []
    if entry.get("read_only"):
        flags.append("read-only (jumpoint.yaml)")
    if entry.get("may_open"):
        flags.append("you may open it")
    if entry.get("may_manage"):
        flags.append("you may manage it")
    if flags:
        say(f"{'access:':<16} {', '.join(flags)}")


def _carried(entry: dict[str, Any]) -> object:
    """What a session carries now: connections, UDP flows and its link's flows together."""
    link = entry.get("link")
    parts = [entry.get("connections", 0), entry.get("udp_flows", 0)]
    parts.append(link.get("flows", 0) if isinstance(link, dict) else 0)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in parts):
        return entry.get("connections", 0)
    return sum(parts)


def print_sessions(entries: list[dict[str, Any]], as_json: bool, now: float) -> None:
    if as_json:
        click.echo(json.dumps(entries))
        return
    if not entries:
        say("no open sessions")
        return
    say(
        f"{'SESSION':<18} {'USER':<14} {'ITEM':<20} {'AGE':>8} {'CONN':>5} {'TO TARGET':>12}"
        f" {'FROM TARGET':>12} CLOSES"
    )
    for entry in entries:
        closes = when(entry.get("closes_at"))
        if entry.get("recording"):
            closes += " (recorded)"
        say(
            f"{cell(entry.get('session')):<18} {cell(entry.get('user')):<14}"
            f" {cell(entry.get('item')):<20} {span(entry.get('age')):>8}"
            f" {cell(_carried(entry)):>5} {cell(entry.get('bytes_to_target', 0)):>12}"
            f" {cell(entry.get('bytes_from_target', 0)):>12} {closes}"
        )


def print_requests(entries: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(entries))
        return
    if not entries:
        say("no access requests")
        return
    say(f"{'ID':>5} {'STATUS':<9} {'USER':<14} {'ITEM':<20} {'FOR':>6} {'UNTIL':<17} REASON")
    for entry in entries:
        status = cell(entry.get("status"))
        if entry.get("can_decide"):
            status += "*"
        until = entry.get("valid_until") or entry.get("request_expires_at")
        say(
            f"{cell(entry.get('id')):>5} {status:<9} {cell(entry.get('user')):<14}"
            f" {cell(entry.get('item')):<20} {span(entry.get('duration')):>6} {when(until):<17}"
            f" {cell(entry.get('reason'))}"
        )
    if any(e.get("can_decide") for e in entries):
        say("* you may decide: jump approve ID / jump deny ID")
