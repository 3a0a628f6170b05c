"""docs/console-guide.md, "JSON events": every field `jump open --json` writes is documented.

The C{stats} and C{closed} events are made by the real L{JsonView} from a
real tunnel's counters (a tcp-udp pair, so its UDP figures are in) and a
network session's link counters (the console's own and the Jumpoint's
figures, L{console.link_figures}); each member, each C{tunnels[]} member and
each C{link} member must be a row of the event's table.  The check is a
function returning the missing names, so a test can show it catches drift.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

from console.link_figures import JUMPOINT_FIELDS
from console.tun_link import TunCounters
from console.tunnel_counters import Tunnel
from console.udp_flow_table import UdpCounters
from console.view import JsonView

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "console-guide.md"
EVENTS = ("ready", "stats", "closed")


def documented_fields(text: str) -> dict[str, set[str]]:
    """The field names of the table under each C{**`EVENT`**} paragraph of "JSON events"."""
    section = text[text.index("### JSON events") :]
    section = section[: section.index("\n### ", 1)]
    fields: dict[str, set[str]] = {}
    current: str | None = None
    for line in section.splitlines():
        heading = re.match(r"\*\*`(\w+)`\*\*", line)
        if heading:
            current = heading.group(1)
            fields.setdefault(current, set())
        elif current is not None and line.startswith("| `"):
            first = line.split("|")[1]
            fields[current].update(re.findall(r"`([\w.\[\]]+)`", first))
    return fields


def emitted_fields(event: dict[str, Any]) -> set[str]:
    """C{a}, C{tunnels[].b}, C{link.c}: every member of one event, nested ones by path."""
    names = set(event) - {"event", "item", "session"}  # common to every event
    for tunnel in event.get("tunnels", []):
        names.update(f"tunnels[].{key}" for key in tunnel)
    names.update(f"link.{key}" for key in event.get("link", {}))
    return names


def network_link() -> dict[str, int]:
    return {**TunCounters().as_dict(), **dict.fromkeys(JUMPOINT_FIELDS.values(), 0)}


def events() -> dict[str, dict[str, Any]]:
    tunnel = Tunnel(
        local_address="127.0.0.1",
        requested_port=5353,
        remote_host="10.1.2.53",
        remote_port=53,
        protocol="tcp-udp",
    )
    tunnel.udp = UdpCounters()
    out = io.StringIO()
    view = JsonView(out, lambda: 0.0)
    view.ready("dns", "s1", [tunnel.describe()])
    view.update([tunnel.counters()], network_link())
    view.closed("expired", "done", [tunnel.counters()], network_link(), removed=[])
    made = [json.loads(line) for line in out.getvalue().splitlines()]
    return {event["event"]: event for event in made}


def missing(text: str) -> list[str]:
    documented = documented_fields(text)
    # as the guide says: a stats tunnel has the ready fields "plus" its own, and
    # closed's link has the members of stats' link
    tunnels = {name for name in documented["ready"] if name.startswith("tunnels[].")}
    documented["stats"] |= tunnels
    documented["closed"] |= {name for name in documented["stats"] if name.startswith("link.")}
    for fields in documented.values():
        if "tunnels[]" in fields:
            fields.add("tunnels")
    problems = []
    for name, event in events().items():
        if name == "ready":
            continue  # its kind-specific members are listed by kind; its tunnels are checked here
        for field in sorted(emitted_fields(event) - documented.get(name, set())):
            problems.append(f"{name}: {field}")
    return problems


def test_every_field_of_the_stats_and_closed_events_is_documented() -> None:
    assert missing(GUIDE.read_text(encoding="utf-8")) == []


def test_the_tunnels_of_the_ready_event_are_documented() -> None:
    documented = documented_fields(GUIDE.read_text(encoding="utf-8"))
    ready = events()["ready"]
    assert {f"tunnels[].{key}" for key in ready["tunnels"][0]} <= documented["ready"]


def test_a_field_missing_from_the_guide_is_caught() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `link.flows`"))
    assert missing(text.replace(row + "\n", "")) == [
        "stats: link.flows",
        "stats: link.total_flows",
        "closed: link.flows",
        "closed: link.total_flows",
    ]
