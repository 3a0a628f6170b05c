"""Which fragmented datagrams may go on: first fragments that passed, remembered for 30 s.

Only the first fragment of a datagram carries the transport header (ports,
TCP flags, the ICMP type), so only it can be checked against the filter and
the flow table.  The filter does not reassemble (that would buffer up to
64 KiB per datagram of untrusted data); it remembers, for each first fragment
that passed, the datagram's C{(src, dst, protocol, identification)} and the
flow it belongs to, and lets a later fragment through only when its datagram
is remembered.  A later fragment that comes before its first fragment, or
after the memory forgot it, is dropped (rule C{network.fragment}): the sender
retransmits the datagram, or path MTU discovery shrinks it.  Fragments are
never reordered by the channel, and Linux sends a datagram's fragments in
order.

Memory is bounded: C{limit} datagrams, each for C{lifetime} seconds (30 s,
as Linux's C{ipfrag_time}); when full, the oldest is forgotten first (its
later fragments are then dropped: the table fails closed).  Entries are kept
in insertion order, which is expiry order, so forgetting costs O(expired).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeAlias

from jumpoint.network.flow_table import Flow

DatagramKey: TypeAlias = tuple[int, int, int, int]
"""C{(src, dst, protocol, identification)}."""

DEFAULT_LIMIT = 1024
DEFAULT_LIFETIME = 30.0


class FragmentMemory:
    """The datagrams whose first fragment passed, and the flow each belongs to."""

    def __init__(self, limit: int = DEFAULT_LIMIT, lifetime: float = DEFAULT_LIFETIME) -> None:
        if limit < 1 or not lifetime > 0:
            raise ValueError("a fragment memory needs a positive limit and lifetime")
        self.limit = limit
        self.lifetime = lifetime
        self._entries: OrderedDict[DatagramKey, tuple[float, Flow, bool]] = OrderedDict()
        self._now = float("-inf")
        self.forgotten = 0
        """Datagrams forgotten before their time because the memory was full."""

    def __len__(self) -> int:
        return len(self._entries)

    def _forget_expired(self, now: float) -> None:
        entries = self._entries
        while entries:
            key = next(iter(entries))
            if entries[key][0] > now:
                break
            del entries[key]

    def remember(self, key: DatagramKey, flow: Flow, reply: bool, now: float) -> None:
        """A first fragment of datagram C{key}, of C{flow} going C{reply} way, passed."""
        now = max(now, self._now)
        self._now = now
        self._forget_expired(now)
        entries = self._entries
        entries.pop(key, None)
        if len(entries) >= self.limit:
            entries.popitem(last=False)
            self.forgotten += 1
        entries[key] = (now + self.lifetime, flow, reply)

    def find(self, key: DatagramKey, now: float) -> tuple[Flow, bool] | None:
        """The flow and direction of datagram C{key}, if its first fragment passed lately."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= max(now, self._now):
            self._forget_expired(max(now, self._now))
            return None
        return entry[1], entry[2]
