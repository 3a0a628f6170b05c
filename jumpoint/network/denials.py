"""Rate-limited summaries of dropped packets, for the C{network_denied} audit rows (no I/O).

A console (or the remote network) can send thousands of packets a second
that the filter drops; one audit row each would flood the log.  The
L{DenialSummariser} counts denials per C{(rule, peer, protocol)} over
fixed windows (10 s by default) and gives, when a window has ended, at most
one L{DenialSummary} per key with its count.  The number of keys per window
is bounded (C{key_limit}); denials beyond it are counted in one summary
whose rule is L{OTHER}, so every denial recorded is in exactly one summary's
count: nothing is dropped silently.

The clock is injected: L{DenialSummariser.record} and L{DenialSummariser.due}
take C{now}; call L{DenialSummariser.due} from a timer (or after recording)
and L{DenialSummariser.flush} when the session ends.  A window starts with
its first denial and ends at the first L{DenialSummariser.due} call at least
C{window} seconds later: denials recorded until then count in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from jumpoint.network.ip_packets import format_address

OTHER = "other"
"""The rule of the summary that counts denials beyond the key limit."""

DEFAULT_WINDOW = 10.0
DEFAULT_KEY_LIMIT = 256

_Key: TypeAlias = tuple[str, int | None, int | None]


@dataclass(frozen=True)
class DenialSummary:
    """C{count} packets denied by C{rule} to/from C{peer} over C{protocol} in one window.

    For the L{OTHER} bucket, C{peer} and C{protocol} are C{None} and
    C{reason} is the first overflowing denial's rule.
    """

    rule: str
    peer: str | None
    protocol: int | None
    count: int
    reason: str | None
    """The reason of the first denial of the window (e.g. the malformation)."""
    first_seen: float
    last_seen: float
    window_start: float
    window_end: float

    def audit_details(self) -> dict[str, Any]:
        """The fields of the C{network_denied} audit row."""
        details = {
            "rule": self.rule,
            "peer": self.peer,
            "protocol": self.protocol,
            "count": self.count,
            "reason": self.reason,
            "window": round(self.window_end - self.window_start, 3),
        }
        return {name: value for name, value in details.items() if value is not None}


class _Tally:
    __slots__ = ("count", "first_seen", "last_seen", "reason")

    def __init__(self, reason: str | None, now: float) -> None:
        self.count = 0
        self.reason = reason
        self.first_seen = now
        self.last_seen = now


class DenialSummariser:
    """Counts denials per key and window; see the module docstring."""

    def __init__(self, window: float = DEFAULT_WINDOW, key_limit: int = DEFAULT_KEY_LIMIT) -> None:
        if not window > 0 or key_limit < 1:
            raise ValueError("a denial summariser needs a positive window and key limit")
        self.window = window
        self.key_limit = key_limit
        self._tallies: dict[_Key, _Tally] = {}
        self._other: _Tally | None = None
        self._start: float | None = None
        self.recorded = 0

    def record(
        self,
        now: float,
        rule: str,
        peer: int | None,
        protocol: int | None,
        reason: str | None = None,
    ) -> None:
        """Count one denied packet (C{peer}: the remote address as an integer)."""
        if self._start is None:
            self._start = now
        self.recorded += 1
        key = (rule, peer, protocol)
        tally = self._tallies.get(key)
        if tally is None:
            if len(self._tallies) >= self.key_limit:
                tally = self._other
                if tally is None:
                    tally = self._other = _Tally(rule, now)
            else:
                tally = self._tallies[key] = _Tally(reason, now)
        tally.count += 1
        if now > tally.last_seen:
            tally.last_seen = now

    def due(self, now: float) -> list[DenialSummary]:
        """The summaries of the current window if it has ended by C{now}, else nothing."""
        if self._start is None or now < self._start + self.window:
            return []
        return self.flush(now)

    def flush(self, now: float) -> list[DenialSummary]:
        """The summaries of the current window, ended now (at the session's end)."""
        start = self._start
        if start is None:
            return []
        end = max(now, start)
        summaries = [
            DenialSummary(
                rule,
                format_address(peer) if peer is not None else None,
                protocol,
                tally.count,
                tally.reason,
                tally.first_seen,
                tally.last_seen,
                start,
                end,
            )
            for (rule, peer, protocol), tally in self._tallies.items()
        ]
        other = self._other
        if other is not None:
            summaries.append(
                DenialSummary(
                    OTHER,
                    None,
                    None,
                    other.count,
                    other.reason,
                    other.first_seen,
                    other.last_seen,
                    start,
                    end,
                )
            )
        self._tallies = {}
        self._other = None
        self._start = None
        return summaries
