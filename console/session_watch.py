"""`jump open`'s watch over its channel: end the session, or reconnect and resume it.

L{SessionWatch} watches each channel the session runs on.  A loss that is
the Jumpoint's decision (C{session_closed}, a GOAWAY other than
C{RESTARTING}), or any loss with C{--no-reconnect}, a Jumpoint that offers no
resume token, or a kind that cannot move to a new channel (a network
session's interface), ends the session as before.  Any other loss keeps the
listeners bound: the open connections are reset (and counted), UDP flows
dropped, new local connections wait (L{console.held_connections}) and the
L{console.reconnect.Reconnector} makes attempts (L{console.reconnect_attempt})
until the session is back or it gives up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from console.channel import ConsoleChannel
from console.held_connections import HeldConnections
from console.reconnect import Reconnected, Reconnecting, Reconnector, describe
from console.reconnect_attempt import SessionResumer
from console.tunnels import TunnelSession
from console.view import SessionView
from shared.errors import JumpError, SessionLost

log = Logger()

End = Callable[[JumpError, str], None]
"""Ends the session with the error and the code the C{closed} event shows."""


class SessionWatch:
    """One session's channels over its life (see the module docstring)."""

    def __init__(
        self,
        clock: Any,
        session: TunnelSession,
        view: SessionView,
        end: End,
        resumer: SessionResumer | None,
        reconnect_for: float | None,
        connect_wait: float,
    ) -> None:
        self.clock = clock
        self.session = session
        self.view = view
        self.end = end
        self.resumer = resumer
        self.connect_wait = connect_wait
        self.dropped_udp_flows = 0
        self.reset_connections = 0
        can = resumer is not None and resumer.token is not None and session.part.reconnects
        self.why_not = (
            None
            if can
            else "this Jumpoint offers no resuming of sessions"
            if resumer is None or resumer.token is None
            else "this kind of session cannot move to a new connection"
        )
        self.reconnector = Reconnector(
            clock,
            resumer.attempt if resumer is not None else _never,
            self,
            reconnect_for if can else None,
        )
        self.closed = False

    def watch(self, channel: ConsoleChannel) -> None:
        channel.lost.addCallback(self._lost, channel)

    def close(self) -> None:
        """The session ends: stop reconnecting, refuse what waits."""
        self.closed = True
        self.reconnector.close()
        self._stop_holding("reconnecting: the session is closing")

    def _lost(self, error: JumpError, channel: ConsoleChannel) -> JumpError:
        if self.closed or channel is not self.session.channel:
            return error
        if self.reconnector.reconnect_for is None or not channel.loss_is_reconnectable():
            if self.why_not is not None and channel.loss_is_reconnectable():
                log.info("not reconnecting: {why}", why=self.why_not)
            closed = channel.session_closed_reason
            self.end(error, closed[0] if closed else "jumpoint_lost")
            return error
        reset, flows = self.session.connection_lost()
        self.reset_connections += reset
        self.dropped_udp_flows += flows
        for tunnel in self.session.tunnels:
            tunnel.status = "reconnecting"
        self.session.held = HeldConnections(self.clock, self.connect_wait, self._refused)
        self.reconnector.lost(error, reset, flows)
        return error

    # -- ReconnectListener ---------------------------------------------------

    def reconnecting(self, news: Reconnecting) -> None:
        self.view.news(describe(news))

    def reconnected(self, news: Reconnected) -> None:
        for tunnel in self.session.tunnels:
            tunnel.status = "listening"
        held, self.session.held = self.session.held, None
        if held is not None:
            held.release_all()
        self.view.news(describe(news))

    def ended(self, error: JumpError) -> None:
        self._stop_holding(f"reconnecting: {error.message}")
        code = "jumpoint_lost" if type(error) is SessionLost else error.code
        self.end(error, code)

    def _refused(self, reason: str) -> None:
        log.warn("refused a local connection: {reason}", reason=reason)
        self.view.news({"event": "connection_refused", "reason": reason})

    def _stop_holding(self, reason: str) -> None:
        held, self.session.held = self.session.held, None
        if held is not None:
            held.refuse_all(reason)


def _never(number: int) -> Any:
    raise AssertionError("no reconnect without a resumer")
