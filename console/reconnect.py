"""The reconnect lifecycle of `jump open`: lost, wait, dial, up again or give up.

L{Reconnector} is sans-IO: it gets the clock, the function that makes one
attempt (dial an address, resume the session: L{console.reconnect_attempt}) and
a L{ReconnectListener} that shows and acts on what happens.  On a loss it
waits a jittered backoff (L{console.backoff}), makes an attempt, and repeats
until one succeeds (the backoff starts again from its base) or
C{reconnect_for} seconds have passed since the loss (it gives up with the
last reason: L{SessionLost}, exit 9).  An attempt that fails with L{Final}
(the Jumpoint denied the resume, or no longer has the session) ends the
session with that error at once.  Without C{reconnect_for} (C{--no-reconnect})
the first loss ends the session, as before reconnect existed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from console.backoff import Backoff
from shared.errors import JumpError, SessionLost
from shared.lifecycle import Transitions


class Final(Exception):
    """An attempt's failure that ends the session (a denial, the session gone)."""

    def __init__(self, error: JumpError) -> None:
        super().__init__(error.message)
        self.error = error


class State(enum.Enum):
    UP = "up"
    WAITING = "waiting"
    DIALING = "dialing"
    ENDED = "ended"


class Event(enum.Enum):
    LOST = "lost"
    TIMER = "timer"
    DIALED = "dialed"
    FAILED = "failed"
    END = "end"


TRANSITIONS = Transitions(
    "reconnect",
    State,
    Event,
    {
        State.UP: {Event.LOST: State.WAITING, Event.END: State.ENDED},
        State.WAITING: {Event.TIMER: State.DIALING, Event.END: State.ENDED},
        State.DIALING: {
            Event.DIALED: State.UP,
            Event.FAILED: State.WAITING,
            Event.END: State.ENDED,
        },
    },
)


@dataclass(frozen=True)
class Reconnecting:
    """The JSON C{reconnecting} event: the next attempt and when it starts."""

    attempt: int
    retry_in: float
    reason: str
    reset_connections: int
    """Connections open at the loss, reset with it (0 after the first attempt)."""
    reset_udp_flows: int = 0
    """UDP flows open at the loss, dropped with it (likewise)."""


@dataclass(frozen=True)
class Reconnected:
    attempt: int
    address: str
    down_for: float


class ReconnectListener(Protocol):
    def reconnecting(self, news: Reconnecting) -> None: ...

    def reconnected(self, news: Reconnected) -> None: ...

    def ended(self, error: JumpError) -> None: ...


Attempt = Callable[[int], "Deferred[str]"]
"""Makes attempt C{n} (1-based); fires with the address reached, or fails (L{Final}: the end)."""


class Reconnector:
    """One session's reconnects (see the module docstring)."""

    def __init__(
        self,
        clock: IReactorTime,
        attempt: Attempt,
        listener: ReconnectListener,
        reconnect_for: float | None,
        backoff: Backoff | None = None,
    ) -> None:
        self.clock = clock
        self._attempt = attempt
        self.listener = listener
        self.reconnect_for = reconnect_for
        self.backoff = backoff or Backoff()
        self.lifecycle = TRANSITIONS.start(State.UP)
        self.attempts = 0
        """Attempts since the last loss."""
        self.reconnects = 0
        """Successful reconnects over the session's life."""
        self._down_since = 0.0
        self._reason = ""
        self._timer: IDelayedCall | None = None
        self._deadline: IDelayedCall | None = None
        self._dialing: Deferred[str] | None = None

    @property
    def state(self) -> State:
        return self.lifecycle.state

    def lost(self, error: JumpError, reset_connections: int = 0, reset_udp_flows: int = 0) -> None:
        """The channel is gone (not by a decision): reconnect, or end without C{reconnect_for}."""
        if self.state is not State.UP:
            return
        if self.reconnect_for is None:
            self._end(error)
            return
        self.lifecycle.fire(Event.LOST)
        self._down_since = self.clock.seconds()
        self._reason = error.message
        self.attempts = 0
        self._deadline = self.clock.callLater(self.reconnect_for, self._give_up)
        self._schedule(reset_connections, reset_udp_flows)

    def close(self) -> None:
        """The session ends for another reason: stop trying (idempotent)."""
        if self.state is State.ENDED:
            return
        self.lifecycle.fire(Event.END)
        self._cancel_calls()

    # -- inside ------------------------------------------------------------

    def _schedule(self, reset_connections: int = 0, reset_udp_flows: int = 0) -> None:
        assert self._deadline is not None
        left = max(0.0, self._deadline.getTime() - self.clock.seconds())
        delay = min(self.backoff.next_delay(), left)
        self.listener.reconnecting(
            Reconnecting(
                self.attempts + 1, round(delay, 3), self._reason, reset_connections, reset_udp_flows
            )
        )
        self._timer = self.clock.callLater(delay, self._dial)

    def _dial(self) -> None:
        self._timer = None
        self.lifecycle.fire(Event.TIMER)
        self.attempts += 1
        dialing = self._attempt(self.attempts)
        self._dialing = dialing
        dialing.addCallbacks(self._dialed, self._failed)

    def _dialed(self, address: str) -> None:
        self._dialing = None
        if self.state is not State.DIALING:
            return
        self.lifecycle.fire(Event.DIALED)
        self._cancel_calls()
        self.reconnects += 1
        self.backoff.reset()
        down_for = round(self.clock.seconds() - self._down_since, 3)
        self.listener.reconnected(Reconnected(self.attempts, address, down_for))

    def _failed(self, failure: Failure) -> None:
        self._dialing = None
        if self.state is not State.DIALING:
            return
        value = failure.value
        if isinstance(value, Final):
            self._end(value.error)
            return
        if isinstance(value, CancelledError):
            return  # the deadline cancelled it: _give_up ends the session
        self._reason = value.message if isinstance(value, JumpError) else str(value)
        self.lifecycle.fire(Event.FAILED)
        self._schedule()

    def _give_up(self) -> None:
        self._deadline = None
        if self.state is State.ENDED:
            return
        assert self.reconnect_for is not None
        error = SessionLost(
            f"the connection to the Jumpoint was lost and reconnecting gave up after"
            f" {self.reconnect_for:g}s ({self.attempts} attempts): {self._reason}",
            hint="check the network and that the Jumpoint runs; --reconnect-for sets how long"
            " jump open tries",
        )
        self._end(error)

    def _end(self, error: JumpError) -> None:
        self.lifecycle.fire(Event.END)
        self._cancel_calls()
        self.listener.ended(error)

    def _cancel_calls(self) -> None:
        for call in (self._timer, self._deadline):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._deadline = None
        dialing, self._dialing = self._dialing, None
        if dialing is not None:
            dialing.cancel()


def describe(news: Reconnecting | Reconnected) -> dict[str, Any]:
    """The JSON event of C{news}."""
    if isinstance(news, Reconnecting):
        return {
            "event": "reconnecting",
            "attempt": news.attempt,
            "retry_in": news.retry_in,
            "reason": news.reason,
            "reset_connections": news.reset_connections,
            "reset_udp_flows": news.reset_udp_flows,
        }
    return {
        "event": "reconnected",
        "attempt": news.attempt,
        "address": news.address,
        "down_for": news.down_for,
    }
