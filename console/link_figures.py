"""What only the Jumpoint knows of a session's packet link, polled with C{session_stats}.

The console counts its own packets and bytes; a network session's flows,
the packets the Jumpoint's rules denied and the Jumpoint's own drops are
decided there (its stateful filter, docs/protocol.md C{list_sessions}), so
the console asks for them.  L{LinkFigures.poll} sends C{session_stats} when
the last answer is older than L{POLL_INTERVAL} and none is in flight (at
most one at a time: nothing queues), and never once the session is closing.
L{LinkFigures.latest} is the last answer, renamed for the console's side
(L{JUMPOINT_FIELDS}); fields the Jumpoint did not send are left out, and a
malformed answer is logged once and ignored (the figures are for people, the
session goes on).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from console.channel import ConsoleChannel
from shared.errors import JumpError
from shared.protocol import control

log = Logger()

POLL_INTERVAL = 3.0
"""Least seconds between two C{session_stats} requests."""

MAX_COUNT = 2**63 - 1

JUMPOINT_FIELDS: Final[Mapping[str, str]] = {
    "flows": "flows",
    "total_flows": "total_flows",
    "denied_out": "denied_out",
    "denied_in": "denied_in",
    "tun_drops": "jumpoint_dropped_out",
    "channel_drops": "jumpoint_dropped_in",
}
"""The Jumpoint's C{link} fields the console shows, and their names on the console's side."""

Request = Callable[[], "Deferred[dict[str, Any]]"]
"""Sends C{session_stats} (the channel's C{request})."""


class LinkFigures:
    """The last C{link} figures of the Jumpoint (module docstring)."""

    def __init__(
        self, request: Request, clock: IReactorTime, interval: float = POLL_INTERVAL
    ) -> None:
        self._request = request
        self._clock = clock
        self.interval = interval
        self._asked_at: float | None = None
        self.pending = False
        self._latest: dict[str, int] = {}
        self._warned = False

    def poll(self, open_: bool) -> None:
        """Ask again if it is time (C{open_}: the session still runs on an open channel)."""
        now = self._clock.seconds()
        if not open_ or self.pending:
            return
        if self._asked_at is not None and now - self._asked_at < self.interval:
            return
        self._asked_at = now
        self.pending = True
        self._request().addCallbacks(self._answered, self._failed)

    def latest(self) -> dict[str, int]:
        return dict(self._latest)

    def _answered(self, result: dict[str, Any]) -> None:
        self.pending = False
        figures = parse_link(result)
        if figures is None:
            self._warn("the Jumpoint sent malformed session figures")
            return
        self._latest = figures

    def _failed(self, failure: Failure) -> None:
        self.pending = False
        if failure.check(JumpError):
            error = failure.value
            assert isinstance(error, JumpError)
            self._warn(f"the Jumpoint did not give the session's figures: {error.message}")
            return
        log.failure("session_stats", failure)

    def _warn(self, text: str) -> None:
        if not self._warned:
            self._warned = True
            log.info("{text}", text=text)


def parse_link(result: Any) -> dict[str, int] | None:
    """The console's names for a C{session_stats} result's C{link} ({}: none; None: malformed)."""
    session = result.get("session") if isinstance(result, dict) else None
    if not isinstance(session, dict):
        return None
    link = session.get("link")
    if link is None:
        return {}
    if not isinstance(link, dict):
        return None
    figures: dict[str, int] = {}
    for theirs, ours in JUMPOINT_FIELDS.items():
        if theirs not in link:
            continue
        value = link[theirs]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
            return None
        figures[ours] = value
    return figures


def session_stats_request(channel: ConsoleChannel) -> Request:
    """The channel's C{session_stats} request, as L{LinkFigures} sends it."""
    return partial(channel.request, control.SESSION_STATS)
