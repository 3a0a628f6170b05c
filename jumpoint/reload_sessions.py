"""Closing the open sessions a reloaded configuration no longer allows.

L{SessionRechecker} asks L{jumpoint.session_recheck} about every open
session after a reload swapped the configuration in, then, when
C{allowed_targets} changed, checks the targets of the sessions that stay
(DNS, off the reactor: L{jumpoint.dialing.check_item_targets}).  A session
whose opening was decided under the configuration a reload replaced while it
was being set up is checked the same way once it is set up
(L{SessionRechecker.recheck_late}, the core's C{recheck_session}).  Those
that no longer hold close with code C{config_changed} and the rule.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger

from jumpoint.config import JumpointConfig
from jumpoint.dialing import check_item_targets
from jumpoint.server import JumpointChannel, JumpointCore
from jumpoint.session_recheck import Closing, OpenSession, recheck
from shared.errors import AccessDenied
from shared.protocol.frames import ErrorCode

log = Logger()

CLOSE_CODE = "config_changed"


class SessionRechecker:
    """Re-decides the open sessions of one core against its (new) configuration."""

    def __init__(self, core: JumpointCore, platform: str | None = None) -> None:
        self.core = core
        self.platform = platform

    def recheck_all(self, old: JumpointConfig, generation: int) -> Deferred[int]:
        """Close the sessions the new configuration no longer allows; how many closed."""
        checks = [self.recheck(c, old, generation) for c in list(self.core.channels)]
        return DeferredList(checks, consumeErrors=True).addCallback(
            lambda results: sum(1 for ok, closed in results if ok and closed)
        )

    def recheck_late(self, channel: JumpointChannel, decided_with: JumpointConfig) -> None:
        """A session set up after a reload replaced the configuration it was decided with."""
        self.recheck(channel, decided_with, None)

    def recheck(
        self, channel: JumpointChannel, old: JumpointConfig, generation: int | None
    ) -> Deferred[bool]:
        """Decide one channel's session again; whether it was closed."""
        core = self.core
        session, user = channel.session, channel.user
        if session is None or user is None or session.terms is None or session.request is None:
            return succeed(False)
        opened = OpenSession(
            user=user.name,
            groups=tuple(user.all_groups),
            item=session.item,
            request=session.request,
            terms=session.terms,
            bound_ports=session.bound_ports,
        )
        now = core.clock.seconds()
        verdict = recheck(old, core.config, opened, now, core.approvals, self.platform)
        if verdict is not None:
            self._close(channel, verdict, generation)
            return succeed(True)
        if not session.item.host or old.allowed_targets == core.config.allowed_targets:
            return succeed(False)

        async def check_targets() -> bool:
            try:
                await check_item_targets(core, session.item)
            except AccessDenied as denial:
                if channel.session is not session:
                    return False  # it ended meanwhile
                rule = denial.rule or "allowed_targets"
                self._close(channel, Closing(rule, denial.message), generation)
                return True
            return False

        return Deferred.fromCoroutine(check_targets())

    def _close(self, channel: JumpointChannel, verdict: Closing, generation: int | None) -> None:
        session = channel.session
        assert session is not None
        reason = f"the configuration changed: {verdict.reason}"
        if f"(rule: {verdict.rule})" not in reason:
            reason = f"{reason} (rule: {verdict.rule})"
        log.info(
            "session {session} of user {user} on item {item}: closing after a reload"
            " (generation {generation}): {reason}",
            session=session.session_id,
            user=session.user,
            item=session.item.name,
            generation=generation if generation is not None else "current",
            reason=reason,
        )
        channel.close_session(CLOSE_CODE, reason, ErrorCode.SESSION_CLOSED, verdict.rule)
