"""The inner addresses of network sessions: one /32 of the pool per session, bounded.

The pool's first address is the Jumpoint's own (its interface); its network
and broadcast addresses are never given out.  Addresses are handed out
lowest first and a released one is reused only after every never-used one,
so that packets still in flight for a session that just ended do not reach
the next session at once.  When every address is in use, a new session is
refused with rule C{network.pool_exhausted}.
"""

from __future__ import annotations

from collections import deque
from ipaddress import IPv4Address, IPv4Network

from shared.errors import AccessDenied

POOL_EXHAUSTED = "network.pool_exhausted"


class AddressPool:
    """Hands out the addresses of C{network} (module docstring)."""

    def __init__(self, network: IPv4Network) -> None:
        self.network = network
        self.gateway = network.network_address + 1
        self._next = int(self.gateway) + 1
        self._last = int(network.broadcast_address) - 1
        self._released: deque[int] = deque()
        self._in_use: dict[str, IPv4Address] = {}

    @property
    def capacity(self) -> int:
        """How many sessions the pool can hold at once."""
        return max(0, int(self.network.broadcast_address) - int(self.gateway) - 1)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def address_of(self, session_id: str) -> IPv4Address | None:
        return self._in_use.get(session_id)

    def allocate(self, session_id: str) -> IPv4Address:
        """The address of C{session_id} (the same one if it has one); L{AccessDenied} if none."""
        held = self._in_use.get(session_id)
        if held is not None:
            return held
        if self._next <= self._last:
            value = self._next
            self._next += 1
        elif self._released:
            value = self._released.popleft()
        else:
            raise AccessDenied(
                f"every inner address of the network pool {self.network} is in use"
                f" ({self.capacity} sessions)",
                rule=POOL_EXHAUSTED,
            )
        address = IPv4Address(value)
        self._in_use[session_id] = address
        return address

    def release(self, session_id: str) -> IPv4Address | None:
        """Give C{session_id}'s address back (nothing if it had none)."""
        address = self._in_use.pop(session_id, None)
        if address is not None:
            self._released.append(int(address))
        return address
