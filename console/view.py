"""What `jump open` shows: a live terminal view, JSON lines, or plain lines.

All three get the same calls: L{SessionView.ready} once the listeners are
bound, L{SessionView.update} periodically with the tunnels' counters and
those of the kind's own data path, its C{link} (a network session's
interface: L{console.kinds.session_part.SessionPart.counters}; its bytes
count in the session's totals), and L{SessionView.closed} with the reason.
While the channel is down and reconnecting (L{console.reconnect}),
L{SessionView.news} gets each C{reconnecting}, C{reconnected} and
C{connection_refused} event (JSON lines, or one line for people).
L{RateMeter} turns byte counters into throughput.  The plain and terminal
views escape everything they write (L{shared.text.printable}): item names,
the Jumpoint's notes and close reasons come from other people.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Protocol, TextIO

from shared.kinds.base import TCP
from shared.text import printable

Link = dict[str, int] | None
"""The counters of a session's own data path (C{None}: it has none)."""


class SessionView(Protocol):
    def ready(
        self,
        item: str,
        session: str,
        tunnels: list[dict[str, Any]],
        details: dict[str, Any] | None = None,
        link_label: str = "",
    ) -> None: ...

    def update(self, counters: list[dict[str, Any]], link: Link = None) -> None: ...

    def note(self, text: str) -> None: ...

    def news(self, event: dict[str, Any]) -> None: ...

    def closed(
        self, code: str, reason: str, counters: list[dict[str, Any]], link: Link = None
    ) -> None: ...


class RateMeter:
    """Bytes per second per tunnel, from successive counter snapshots."""

    def __init__(self, seconds: Any) -> None:
        self._seconds = seconds
        self._last: tuple[float, list[tuple[int, int]]] | None = None

    def rates(self, counters: list[dict[str, Any]]) -> list[tuple[float, float]]:
        now = self._seconds()
        totals = [(c["bytes_to_remote"], c["bytes_from_remote"]) for c in counters]
        last, self._last = self._last, (now, totals)
        if last is None or now <= last[0] or len(last[1]) != len(totals):
            return [(0.0, 0.0) for _ in totals]
        elapsed = now - last[0]
        return [
            ((up - old_up) / elapsed, (down - old_down) / elapsed)
            for (up, down), (old_up, old_down) in zip(totals, last[1], strict=True)
        ]


LINK_DROPS = (
    "dropped_out",
    "dropped_in",
    "refused_in",
    "jumpoint_dropped_out",
    "jumpoint_dropped_in",
)
"""A link's counters of packets dropped on the way (either end, either way)."""
LINK_DENIALS = ("denied_out", "denied_in")
"""A link's counters of packets the Jumpoint's rules dropped."""


def link_row(link: dict[str, int]) -> dict[str, Any]:
    """The link's bytes as a tunnel's counters name them (for sums and rates)."""
    return {
        "bytes_to_remote": link.get("bytes_out", 0),
        "bytes_from_remote": link.get("bytes_in", 0),
    }


def session_bytes(counters: list[dict[str, Any]], link: Link) -> tuple[int, int]:
    """Bytes to and from the remote side, all tunnels and the link."""
    rows = [*counters, link_row(link)] if link is not None else counters
    return sum(c["bytes_to_remote"] for c in rows), sum(c["bytes_from_remote"] for c in rows)


def link_summary(link: dict[str, int]) -> str:
    """The link's packets for people: C{12 packets sent, 10 received, 1 dropped, 2 denied}."""
    text = (
        f"{link.get('packets_out', 0)} packets sent, {link.get('packets_in', 0)} received,"
        f" {sum(link.get(key, 0) for key in LINK_DROPS)} dropped"
    )
    if any(key in link for key in LINK_DENIALS):
        text += f", {sum(link.get(key, 0) for key in LINK_DENIALS)} denied by the Jumpoint"
    return text


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def binding(tunnel: dict[str, Any], service: bool = True) -> str:
    """C{local -> remote}, and what the tunnel leads to (mssql: the login) unless not C{service}."""
    local = tunnel.get("local_url") or f"{tunnel['local_address']}:{tunnel['local_port']}"
    if tunnel.get("protocol", TCP) != TCP:
        local += f"/{tunnel['protocol']}"
    remote = tunnel.get("remote_url") or f"{tunnel['remote_host']}:{tunnel['remote_port']}"
    text = f"{local} -> {remote}"
    return f"{text} ({tunnel['service']})" if service and tunnel.get("service") else text


UDP_TOTALS = (
    "udp_flows",
    "total_udp_flows",
    "refused_udp_flows",
    "datagrams_to_remote",
    "datagrams_from_remote",
    "udp_drops",
)
"""The UDP figures the session's events sum over its UDP tunnels."""


def udp_totals(counters: list[dict[str, Any]]) -> dict[str, int]:
    """The sums of L{UDP_TOTALS} over the tunnels, or nothing when none carries UDP."""
    udp = [c for c in counters if "udp_flows" in c]
    if not udp:
        return {}
    return {key: sum(c[key] for c in udp) for key in UDP_TOTALS}


def _json_fields(tunnel: dict[str, Any]) -> dict[str, Any]:
    """The tunnel as the JSON events show it: the service text is for people only."""
    return {key: value for key, value in tunnel.items() if key != "service"}


def news_line(event: dict[str, Any]) -> str:
    """A reconnect event in one sentence, for people (escaped by the view)."""
    kind = event["event"]
    if kind == "reconnecting":
        reset = event.get("reset_connections", 0)
        lost = f"; {reset} open connections were reset" if reset else ""
        return (
            f"connection to the Jumpoint lost ({event['reason']}){lost}: reconnecting,"
            f" attempt {event['attempt']} in {event['retry_in']:.1f}s"
        )
    if kind == "reconnected":
        return (
            f"reconnected to {event['address']} after {event['down_for']:.1f}s"
            f" (attempt {event['attempt']})"
        )
    return f"refused a local connection: {event.get('reason', '')}"


class JsonView:
    """JSON lines on stdout, and nothing else there."""

    def __init__(self, out: TextIO, seconds: Any) -> None:
        self.out = out
        self.meter = RateMeter(seconds)
        self.item = ""
        self.session = ""

    def _emit(self, event: dict[str, Any]) -> None:
        self.out.write(json.dumps(event, separators=(",", ":")) + "\n")
        self.out.flush()

    def ready(
        self,
        item: str,
        session: str,
        tunnels: list[dict[str, Any]],
        details: dict[str, Any] | None = None,
        link_label: str = "",
    ) -> None:
        self.item, self.session = item, session
        event = {
            "event": "ready",
            "item": item,
            "session": session,
            "tunnels": [_json_fields(t) for t in tunnels],
        }
        event.update(details or {})
        self._emit(event)

    def update(self, counters: list[dict[str, Any]], link: Link = None) -> None:
        rows = [*counters, link_row(link)] if link is not None else counters
        rates = self.meter.rates(rows)
        tunnels = [
            {**_json_fields(c), "send_rate": round(up, 1), "receive_rate": round(down, 1)}
            for c, (up, down) in zip(counters, rates[: len(counters)], strict=True)
        ]
        up, down = session_bytes(counters, link)
        event: dict[str, Any] = {
            "event": "stats",
            "item": self.item,
            "session": self.session,
            "connections": sum(c["connections"] for c in counters),
            "bytes_to_remote": up,
            "bytes_from_remote": down,
            **udp_totals(counters),
            "tunnels": tunnels,
        }
        if link is not None:
            send, receive = rates[-1]
            event["link"] = {**link, "send_rate": round(send, 1), "receive_rate": round(receive, 1)}
        self._emit(event)

    def note(self, text: str) -> None:
        """Notes go to the log (stderr), never to stdout."""

    def news(self, event: dict[str, Any]) -> None:
        self._emit({"event": event["event"], "item": self.item, "session": self.session, **event})

    def closed(
        self,
        code: str,
        reason: str,
        counters: list[dict[str, Any]],
        link: Link = None,
        removed: list[str] | None = None,
    ) -> None:
        """C{removed}: what the kind's cleanup removed (a kubeconfig, an interface)."""
        up, down = session_bytes(counters, link)
        event: dict[str, Any] = {
            "event": "closed",
            "item": self.item,
            "session": self.session,
            "code": code,
            "reason": reason,
            "bytes_to_remote": up,
            "bytes_from_remote": down,
            "total_connections": sum(c["total_connections"] for c in counters),
            **udp_totals(counters),
        }
        if link is not None:
            event["link"] = dict(link)
        if removed is not None:
            event["removed"] = removed
        self._emit(event)


class PlainView:
    """Bindings and the close reason as plain lines (not a terminal, or a command runs)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def ready(
        self,
        item: str,
        session: str,
        tunnels: list[dict[str, Any]],
        details: dict[str, Any] | None = None,
        link_label: str = "",
    ) -> None:
        for tunnel in tunnels:
            self.out.write(printable(binding(tunnel)) + "\n")
        self.out.flush()

    def update(self, counters: list[dict[str, Any]], link: Link = None) -> None:
        pass

    def note(self, text: str) -> None:
        self.out.write(f"jump: {printable(text)}\n")
        self.out.flush()

    def news(self, event: dict[str, Any]) -> None:
        self.note(news_line(event))

    def closed(
        self, code: str, reason: str, counters: list[dict[str, Any]], link: Link = None
    ) -> None:
        up, down = session_bytes(counters, link)
        if link is not None:  # a network session: packets, not connections
            flows = f", {link['total_flows']} flows" if "total_flows" in link else ""
            carried = f"{link_summary(link)}{flows},"
        else:
            total = sum(c["total_connections"] for c in counters)
            udp = udp_totals(counters)
            carried = f"{total} connections," + (
                f" {udp['total_udp_flows']} UDP flows," if udp else ""
            )
        self.out.write(
            f"jump: session closed: {printable(reason)} ({carried}"
            f" {human_bytes(up)} sent, {human_bytes(down)} received)\n"
        )
        self.out.flush()


class TerminalView:
    """A live table redrawn in place until the session ends."""

    def __init__(self, out: TextIO, seconds: Any) -> None:
        self.out = out
        self.meter = RateMeter(seconds)
        self.notes: deque[str] = deque(maxlen=4)
        self._drawn = 0
        self.header = ""
        self.link_label = ""

    def ready(
        self,
        item: str,
        session: str,
        tunnels: list[dict[str, Any]],
        details: dict[str, Any] | None = None,
        link_label: str = "",
    ) -> None:
        for tunnel in tunnels:
            self.out.write(printable(binding(tunnel)) + "\n")
        self.header = (
            f"item {printable(item)}, session {printable(session)} (Ctrl-C closes the session)"
        )
        self.link_label = link_label
        self.out.flush()

    def note(self, text: str) -> None:
        self.notes.append(text)

    def news(self, event: dict[str, Any]) -> None:
        self.note(news_line(event))

    def update(self, counters: list[dict[str, Any]], link: Link = None) -> None:
        self._draw(counters, link, "up")

    def _draw(self, counters: list[dict[str, Any]], link: Link, link_status: str) -> None:
        rows = [*counters, link_row(link)] if link is not None else counters
        rates = self.meter.rates(rows)
        lines = [self.header]
        lines.append(
            f"{'TUNNEL':<44} {'STATUS':<10} {'CONN':>5} {'TOTAL':>6}"
            f" {'SENT':>11} {'RECEIVED':>11} {'UP/s':>11} {'DOWN/s':>11}"
        )
        for counter, (up, down) in zip(counters, rates[: len(counters)], strict=True):
            lines.append(
                f"{printable(binding(counter, service=False)):<44}"
                f" {printable(str(counter['status'])):<10}"
                f" {counter['connections'] + counter.get('udp_flows', 0):>5}"
                f" {counter['total_connections'] + counter.get('total_udp_flows', 0):>6}"
                f" {human_bytes(counter['bytes_to_remote']):>11}"
                f" {human_bytes(counter['bytes_from_remote']):>11} {human_bytes(up):>11}"
                f" {human_bytes(down):>11}"
            )
        if link is not None:
            up, down = rates[-1]
            lines.append(
                f"{printable(self.link_label):<44} {link_status:<10}"
                f" {link.get('flows', '-'):>5} {link.get('total_flows', '-'):>6}"
                f" {human_bytes(link.get('bytes_out', 0)):>11}"
                f" {human_bytes(link.get('bytes_in', 0)):>11} {human_bytes(up):>11}"
                f" {human_bytes(down):>11}"
            )
            lines.append(f"  {link_summary(link)}")
        lines.extend(f"  ! {printable(note)}" for note in self.notes)
        self._redraw(lines)

    def _redraw(self, lines: list[str]) -> None:
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self._drawn = len(lines)

    def closed(
        self, code: str, reason: str, counters: list[dict[str, Any]], link: Link = None
    ) -> None:
        self._draw(counters, link, "closed")
        self.out.write(f"session closed: {printable(reason)}\n")
        self.out.flush()
