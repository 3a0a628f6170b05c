"""Bounds on consoles that have connected but not finished their TLS handshake.

Every accepted TCP connection holds a file descriptor and an OpenSSL
connection (tens of KiB) until its handshake completes, fails or times out.
L{PendingHandshakes} caps how many may be pending at once, in all and per
source address; a new connection over either cap closes the oldest pending
one (of that address, or overall) first, so a flood of half-finished
ClientHellos cannot lock out the consoles that do finish theirs, nor use up
the daemon's descriptors and memory.

Failed, timed-out and closed-over-the-cap handshakes are not logged one line
each: the first one after a quiet interval is logged as it happens, the
rest are counted and summed up in one line per interval
(L{PendingHandshakes.log_interval}).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger()

DEFAULT_MAX_PENDING = 512
DEFAULT_MAX_PENDING_PER_ADDRESS = 32
LOG_INTERVAL = 60.0
MAX_SOURCES_TRACKED = 1024
"""Distinct source addresses counted for one summary line (the rest as "others")."""

Abort = Callable[[], None]


@dataclass
class _Pending:
    address: str
    abort: Abort


class PendingHandshakes:
    """The table of pending handshakes; see the module docstring."""

    def __init__(
        self,
        clock: IReactorTime,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_per_address: int = DEFAULT_MAX_PENDING_PER_ADDRESS,
        log_interval: float = LOG_INTERVAL,
    ) -> None:
        if max_pending < 1 or max_per_address < 1:
            raise ValueError("the caps of pending handshakes must be at least 1")
        self.clock = clock
        self.max_pending = max_pending
        self.max_per_address = max_per_address
        self.log_interval = log_interval
        self._pending: OrderedDict[Hashable, _Pending] = OrderedDict()
        self._by_address: dict[str, OrderedDict[Hashable, None]] = {}
        self._summary_call: IDelayedCall | None = None
        self._counts: Counter[str] = Counter()
        self._sources: Counter[str] = Counter()

    # -- the table -----------------------------------------------------------

    def __len__(self) -> int:
        return len(self._pending)

    def pending_from(self, address: str) -> int:
        return len(self._by_address.get(address, ()))

    def started(self, key: Hashable, address: str, abort: Abort) -> None:
        """A connection from C{address} was accepted; C{abort} drops it."""
        self._pending[key] = _Pending(address, abort)
        self._by_address.setdefault(address, OrderedDict())[key] = None
        same_address = self._by_address[address]
        while len(same_address) > self.max_per_address:
            self._evict(next(iter(same_address)), "per_address")
        while len(self._pending) > self.max_pending:
            self._evict(next(iter(self._pending)), "global")

    def completed(self, key: Hashable) -> None:
        """The handshake finished: the connection is no longer pending."""
        self._remove(key)

    def failed(self, key: Hashable, peer: str, reason: str, *, timed_out: bool = False) -> None:
        """The connection closed (or timed out) before its handshake finished."""
        entry = self._remove(key)
        if entry is None:
            return  # closed over the cap: already counted
        self._note("timed_out" if timed_out else "failed", entry.address, peer, reason)

    def _remove(self, key: Hashable) -> _Pending | None:
        entry = self._pending.pop(key, None)
        if entry is not None:
            same_address = self._by_address[entry.address]
            del same_address[key]
            if not same_address:
                del self._by_address[entry.address]
        return entry

    def _evict(self, key: Hashable, cap: str) -> None:
        entry = self._remove(key)
        assert entry is not None
        limit = self.max_per_address if cap == "per_address" else self.max_pending
        scope = f"from {entry.address}" if cap == "per_address" else "in all"
        self._note(
            "closed_over_cap",
            entry.address,
            entry.address,
            f"over the cap of {limit} pending TLS handshakes {scope}; the oldest is closed",
        )
        entry.abort()

    # -- the log ---------------------------------------------------------------

    def _note(self, kind: str, address: str, peer: str, reason: str) -> None:
        if self._summary_call is None:
            log.warn(
                "TLS handshake with {peer} failed: {reason}"
                " (further failures are summed up every {interval:g}s)",
                peer=peer,
                reason=reason,
                interval=self.log_interval,
            )
            self._summary_call = self.clock.callLater(self.log_interval, self._summarise)
            return
        self._counts[kind] += 1
        if address in self._sources or len(self._sources) < MAX_SOURCES_TRACKED:
            self._sources[address] += 1
        else:
            self._sources["others"] += 1

    def _summarise(self) -> None:
        self._summary_call = None
        counts, self._counts = self._counts, Counter()
        sources, self._sources = self._sources, Counter()
        total = sum(counts.values())
        if not total:
            return  # a quiet interval: the next failure is logged at once again
        top = ", ".join(f"{address} ({count})" for address, count in sources.most_common(5))
        log.warn(
            "{total} more TLS handshakes did not finish in the last {interval:g}s:"
            " {failed} failed, {timed_out} timed out, {closed_over_cap} closed over the cap;"
            " {pending} pending now; most from {top}",
            total=total,
            interval=self.log_interval,
            failed=counts["failed"],
            timed_out=counts["timed_out"],
            closed_over_cap=counts["closed_over_cap"],
            pending=len(self._pending),
            top=top,
        )
        self._summary_call = self.clock.callLater(self.log_interval, self._summarise)

    def stop(self) -> None:
        """Cancel the summary timer (the daemon stops)."""
        if self._summary_call is not None and self._summary_call.active():
            self._summary_call.cancel()
        self._summary_call = None
