"""What opening a session and resuming one share: the admission decision and the kind's link.

L{admit} is the whole decision of L{jumpoint.access.decide} (the groups,
C{tunnels_restricted}, the jump and session policies, approvals) plus the
Jumpoint's allow-list for the item's targets; L{start_link} starts the kind's
own data path of a session (a network tunnel's packets) on the channel.  A
new session and a resumed one go through exactly the same code.
"""

from __future__ import annotations

from typing import Any

from jumpoint import kinds
from jumpoint.access import SessionRequest, decide
from jumpoint.approvals import ApprovalsOf
from jumpoint.config import JumpointConfig
from jumpoint.dialing import check_item_targets
from jumpoint.handlers.request_context import RequestChannel, RequestCore
from jumpoint.kinds.base import SessionStart
from jumpoint.policy import Grant
from jumpoint.session import Session
from jumpoint.session_terms import SessionTerms
from shared.items import Item


async def admit(
    core: RequestCore, config: JumpointConfig, grant: Grant, item: Item, request: SessionRequest
) -> SessionTerms:
    """Every rule of C{config} on C{request} now; raises the L{shared.errors.AccessDenied}
    naming the rule."""
    now = core.clock.seconds()
    approvals = await _approvals_for(config, core, grant.user, item, now)
    terms = decide(config, grant, item, request, now, approvals)
    await check_item_targets(core, item)
    return terms


async def _approvals_for(
    config: JumpointConfig, core: RequestCore, user: str, item: Item, now: float
) -> ApprovalsOf:
    """The user's requests for C{item}, read off the reactor when its jump policy needs one."""
    policy = config.policies.jump.get(item.jump_policy) if item.jump_policy else None
    if policy is None or not policy.approval_required:
        return ApprovalsOf(None, None)
    return await core.approvals.of(user, item.name, now)


def start_link(channel: RequestChannel, grant: Grant, session: Session) -> dict[str, Any]:
    """The kind's own data path of the session (network packets), if it has one: reply fields."""
    start = kinds.kind_of(session.item).start_session
    mux = channel.mux
    if start is None or mux is None:
        return {}
    core = channel.core
    audit = core.log_audit
    fields = session.audit_fields()

    def record(event: str, **details: Any) -> None:
        audit.record(event, **fields, **details)

    session.link = start(
        SessionStart(
            session=session,
            recorder=session.recorder,
            config=core.config,
            restrictions=grant.restrictions,
            datagrams=mux.datagrams,
            service=core.kind_services.get(session.item.type),
            record=record,
        )
    )
    return session.link.reply_fields()


def connection_gone(channel: RequestChannel) -> bool:
    """The requesting channel closed while the request waited."""
    return channel.mux is None or channel.mux.closing
