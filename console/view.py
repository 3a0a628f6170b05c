"""What `jump open` shows: a live terminal view, JSON lines, or plain lines.

All three get the same calls: L{SessionView.ready} once the listeners are
bound, L{SessionView.update} periodically with the tunnels' counters, and
L{SessionView.closed} with the reason.  L{RateMeter} turns byte counters into
throughput.  The plain and terminal views escape everything they write
(L{shared.text.printable}): item names, the Jumpoint's notes and close
reasons come from other people.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Protocol, TextIO

from shared.kinds.base import TCP
from shared.text import printable


class SessionView(Protocol):
    def ready(
        self,
        item: str,
        session: str,
        tunnels: list[dict[str, Any]],
        details: dict[str, Any] | None = None,
    ) -> None: ...

    def update(self, counters: list[dict[str, Any]]) -> None: ...

    def note(self, text: str) -> None: ...

    def closed(self, code: str, reason: str, counters: list[dict[str, Any]]) -> None: ...


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

    def update(self, counters: list[dict[str, Any]]) -> None:
        rates = self.meter.rates(counters)
        tunnels = [
            {**_json_fields(c), "send_rate": round(up, 1), "receive_rate": round(down, 1)}
            for c, (up, down) in zip(counters, rates, strict=True)
        ]
        self._emit(
            {
                "event": "stats",
                "item": self.item,
                "session": self.session,
                "connections": sum(c["connections"] for c in counters),
                "bytes_to_remote": sum(c["bytes_to_remote"] for c in counters),
                "bytes_from_remote": sum(c["bytes_from_remote"] for c in counters),
                **udp_totals(counters),
                "tunnels": tunnels,
            }
        )

    def note(self, text: str) -> None:
        """Notes go to the log (stderr), never to stdout."""

    def closed(
        self,
        code: str,
        reason: str,
        counters: list[dict[str, Any]],
        removed: list[str] | None = None,
    ) -> None:
        """C{removed}: k8s, what the cleanup of the session's kubeconfig removed."""
        event: dict[str, Any] = {
            "event": "closed",
            "item": self.item,
            "session": self.session,
            "code": code,
            "reason": reason,
            "bytes_to_remote": sum(c["bytes_to_remote"] for c in counters),
            "bytes_from_remote": sum(c["bytes_from_remote"] for c in counters),
            "total_connections": sum(c["total_connections"] for c in counters),
            **udp_totals(counters),
        }
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
    ) -> None:
        for tunnel in tunnels:
            self.out.write(printable(binding(tunnel)) + "\n")
        self.out.flush()

    def update(self, counters: list[dict[str, Any]]) -> None:
        pass

    def note(self, text: str) -> None:
        self.out.write(f"jump: {printable(text)}\n")
        self.out.flush()

    def closed(self, code: str, reason: str, counters: list[dict[str, Any]]) -> None:
        up = sum(c["bytes_to_remote"] for c in counters)
        down = sum(c["bytes_from_remote"] for c in counters)
        total = sum(c["total_connections"] for c in counters)
        udp = udp_totals(counters)
        flows = f" {udp['total_udp_flows']} UDP flows," if udp else ""
        self.out.write(
            f"jump: session closed: {printable(reason)} ({total} connections,{flows}"
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

    def ready(
        self,
        item: str,
        session: str,
        tunnels: list[dict[str, Any]],
        details: dict[str, Any] | None = None,
    ) -> None:
        for tunnel in tunnels:
            self.out.write(printable(binding(tunnel)) + "\n")
        self.header = (
            f"item {printable(item)}, session {printable(session)} (Ctrl-C closes the session)"
        )
        self.out.flush()

    def note(self, text: str) -> None:
        self.notes.append(text)

    def update(self, counters: list[dict[str, Any]]) -> None:
        rates = self.meter.rates(counters)
        lines = [self.header]
        lines.append(
            f"{'TUNNEL':<44} {'STATUS':<10} {'CONN':>5} {'TOTAL':>6}"
            f" {'SENT':>11} {'RECEIVED':>11} {'UP/s':>11} {'DOWN/s':>11}"
        )
        for counter, (up, down) in zip(counters, rates, strict=True):
            lines.append(
                f"{printable(binding(counter, service=False)):<44}"
                f" {printable(str(counter['status'])):<10}"
                f" {counter['connections'] + counter.get('udp_flows', 0):>5}"
                f" {counter['total_connections'] + counter.get('total_udp_flows', 0):>6}"
                f" {human_bytes(counter['bytes_to_remote']):>11}"
                f" {human_bytes(counter['bytes_from_remote']):>11} {human_bytes(up):>11}"
                f" {human_bytes(down):>11}"
            )
        lines.extend(f"  ! {printable(note)}" for note in self.notes)
        self._redraw(lines)

    def _redraw(self, lines: list[str]) -> None:
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self._drawn = len(lines)

    def closed(self, code: str, reason: str, counters: list[dict[str, Any]]) -> None:
        self.update(counters)
        self.out.write(f"session closed: {printable(reason)}\n")
        self.out.flush()
