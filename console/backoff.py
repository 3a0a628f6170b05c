"""Reconnect delays: exponential backoff with full jitter.

The n-th delay (counting from 0) is drawn uniformly from
C{[0, min(cap, base * 2**n)]} ("full jitter"): consoles that lost the same
Jumpoint at the same moment spread their attempts instead of arriving
together.  L{Backoff.reset} starts again from C{base} after a successful
reconnect.
"""

from __future__ import annotations

import random
from collections.abc import Callable

BASE = 0.5
"""Seconds: the ceiling of the first delay."""
CAP = 30.0
"""Seconds: no delay is longer."""


class Backoff:
    """Successive reconnect delays; C{uniform(low, high)} draws each one (injected for tests)."""

    def __init__(
        self,
        base: float = BASE,
        cap: float = CAP,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if not 0 < base <= cap:
            raise ValueError("backoff: need 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._uniform = uniform
        self.attempts = 0

    def ceiling(self, attempt: int) -> float:
        """The largest delay before attempt C{attempt} (0-based)."""
        if attempt >= 64:  # 2**64 * base is past any cap
            return self.cap
        return min(self.cap, self.base * float(2**attempt))

    def next_delay(self) -> float:
        """The delay before the next attempt (and count it)."""
        high = self.ceiling(self.attempts)
        self.attempts += 1
        drawn = float(self._uniform(0.0, high))
        return min(high, max(0.0, drawn))

    def reset(self) -> None:
        self.attempts = 0
