"""One reconnect attempt of `jump open`: dial a member, resume the session on it.

L{SessionResumer.attempt} dials the profile's addresses in order, starting
with the last one that worked (every member's certificate is checked for the
profile's server name), stores the members the Jumpoint's welcome lists in
the profile, sends C{open_session} with the session's C{resume} token, checks
the bindings again (C{tunnels_bound}) and moves the session onto the new
channel.  The Jumpoint re-checks the session's policy: a denial, or the
session gone, fails the attempt with L{console.reconnect.Final} (the session
ends with it); anything else (unreachable, TLS, a lost channel) is worth
another attempt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from console.channel import CONNECT_TIMEOUT, ConsoleChannel, ConsoleRefused, connect
from console.profiles import Profile, checked_addresses, format_address, store_addresses
from console.reconnect import Final
from console.tunnels import TunnelSession
from shared.errors import (
    AccessDenied,
    ConsentRequired,
    JumpError,
    ProtocolViolation,
    SessionGone,
    UnknownItem,
)
from shared.protocol import control

log = Logger()

DECISIONS = (AccessDenied, ConsentRequired, UnknownItem, SessionGone)
"""Errors at resume that are the Jumpoint's decision: the session ends with them."""

Connect = Callable[[Profile, tuple[str, int], float], "Deferred[ConsoleChannel]"]
"""Dials one member (profile, address, timeout) and waits for its welcome."""
MIN_DIAL_TIMEOUT = 3.0


def dial_timeout(channel: ConsoleChannel) -> float:
    """How long a reconnect waits for one member: its keepalive timeout (3 to 15 s).

    A member that does not finish its handshake within the time that marks
    a link dead is treated as dead: the next one is tried.
    """
    mux = channel.mux
    timeout = mux.settings.keepalive_timeout if mux is not None else CONNECT_TIMEOUT
    return max(MIN_DIAL_TIMEOUT, min(CONNECT_TIMEOUT, timeout))


def resume_token(result: dict[str, Any]) -> str | None:
    """The C{resume_token} of an C{open_session} result (C{None}: the Jumpoint offers none)."""
    token = result.get("resume_token")
    return token if isinstance(token, str) and 0 < len(token) <= 256 else None


def remember_members(profile: Profile, welcome: dict[str, Any]) -> Profile:
    """The profile with the welcome's C{members} as its addresses (stored), if it lists any."""
    members = checked_addresses(welcome.get("members"))
    if members is None:
        return profile
    try:
        return store_addresses(profile, members)
    except (OSError, ValueError) as error:
        log.warn("could not store the Jumpoint's members in the profile: {e}", e=str(error))
        return profile


class _Cancelled:
    """Set once the attempt was cancelled (the reconnect gave up, the session ends)."""

    set = False


class SessionResumer:
    """Makes the reconnect attempts of one session (see the module docstring)."""

    def __init__(
        self,
        reactor: Any,
        profile: Profile,
        session: TunnelSession,
        fields: dict[str, Any],
        on_channel: Callable[[ConsoleChannel], None],
        connect_to: Connect | None = None,
    ) -> None:
        self.reactor = reactor
        self.profile = profile
        self.session = session
        self.fields = fields
        self.on_channel = on_channel
        """Told of the new channel once the session is on it (to watch its loss)."""
        self.token = resume_token(session.result)
        self.last_good = session.channel.address
        self.timeout = dial_timeout(session.channel)
        self._connect = connect_to or (
            lambda profile, member, timeout: Deferred.fromCoroutine(
                connect(reactor, profile, member, timeout)
            )
        )

    def members(self, welcome: dict[str, Any]) -> None:
        """Store the welcome's C{members} (if any) as the profile's addresses."""
        self.profile = remember_members(self.profile, welcome)

    def order(self) -> list[tuple[str, int]]:
        """The profile's addresses, the last good one first, then the next ones in order."""
        listed = self.profile.dial_list()
        texts = [format_address(*member) for member in listed]
        if self.last_good in texts:
            start = texts.index(self.last_good)
            listed = listed[start:] + listed[:start]
        return listed

    def attempt(self, number: int) -> Deferred[str]:
        """One attempt; cancelling it stops it for good (no member is dialled after that)."""
        flag = _Cancelled()
        inner = Deferred.fromCoroutine(self._attempt(flag))

        def cancel(outer: Deferred[str]) -> None:
            flag.set = True
            inner.cancel()

        outer: Deferred[str] = Deferred(cancel)

        def relay(result: object) -> None:
            if outer.called:
                return  # cancelled: what the attempt came to is dropped
            if isinstance(result, Failure):
                outer.errback(result)
            else:
                outer.callback(str(result))

        inner.addBoth(relay)
        return outer

    async def _attempt(self, cancelled: _Cancelled) -> str:
        error: JumpError | None = None
        for member in self.order():
            if cancelled.set:
                raise CancelledError()
            try:
                channel = await self._connect(self.profile, member, self.timeout)
            except ConsoleRefused as refused:
                raise Final(refused) from None
            except JumpError as failed:
                error = failed
                continue
            try:
                if cancelled.set:
                    raise CancelledError()
                await self._resume(channel)
            except BaseException:
                channel._abort()
                raise
            return channel.address
        assert error is not None
        raise error

    async def _resume(self, channel: ConsoleChannel) -> None:
        session = self.session
        assert self.token is not None
        self.members(channel.welcome_message)
        fields = {**self.fields, "resume": {"session": session.session_id, "token": self.token}}
        try:
            result = await channel.request(control.OPEN_SESSION, **fields)
            if result.get("resumed") is not True:
                channel.request(control.CLOSE_SESSION, reason="not a resume").addErrback(
                    lambda failure: None
                )
                raise Final(
                    SessionGone(
                        f"the Jumpoint at {channel.address} opened a new session instead of"
                        " resuming this one: it does not resume sessions"
                    )
                )
            self.token = resume_token(result) or self.token
            self.last_good = channel.address
            session.attach(channel)
            await channel.request(control.TUNNELS_BOUND, tunnels=session.bindings())
        except DECISIONS as decision:
            raise Final(decision) from None
        except ProtocolViolation as violation:
            raise Final(violation) from None
        self.on_channel(channel)
