"""The dispatch of the console's control requests: the typed table, the checks, the denials.

L{handle} answers one checked request of a channel's user: it finds the
request type's L{Handler} in L{HANDLERS}, checks the text fields and the
user's groups, and runs it.  Every decision is taken on the Jumpoint and
audited; a refusal raises a L{JumpError} naming the rule, which the channel
sends back as an error reply, and every denial is recorded here
(L{DENIAL_EVENTS}) and committed before the refusal is sent.  Handlers that
must wait return coroutines: a decision and the state change it makes are
committed before the reply, without the reactor ever waiting for the
database.  While the state database is unavailable, the requests that take
a decision (L{DECISIONS}) are refused at once with C{state_unavailable}.
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from typing import Any, Final

from twisted.internet.defer import Deferred

from jumpoint.handlers import approval_requests, flow_requests, item_requests, session_requests
from jumpoint.handlers.request_context import (
    Handler,
    Outcome,
    Reply,
    RequestChannel,
    check_groups_defined,
)
from shared.errors import AccessDenied, ProtocolViolation
from shared.protocol import control

HANDLERS: Final[Mapping[str, Handler]] = {
    control.LIST_ITEMS: item_requests.list_items,
    control.SHOW_ITEM: item_requests.show_item,
    control.CREATE_ITEM: item_requests.create_item,
    control.CHANGE_ITEM: item_requests.change_item,
    control.DELETE_ITEM: item_requests.delete_item,
    control.OPEN_SESSION: session_requests.open_session,
    control.TUNNELS_BOUND: session_requests.tunnels_bound,
    control.CLOSE_SESSION: session_requests.close_session,
    control.LIST_SESSIONS: session_requests.list_sessions,
    control.SESSION_STATS: session_requests.session_stats,
    control.REQUEST_ACCESS: approval_requests.request_access,
    control.LIST_REQUESTS: approval_requests.list_requests,
    control.DECIDE_REQUEST: approval_requests.decide_request,
    control.FLOW_OPEN: flow_requests.flow_open,
    control.CLOSE_FLOW: flow_requests.close_flow,
}
"""The handler of every request type the console may send after its hello."""


def handle(channel: RequestChannel, kind: str, message: dict[str, Any]) -> Outcome:
    """Answer one request (see the module docstring); every denial is audited here."""
    assert channel.user is not None
    handler = HANDLERS.get(kind)
    if handler is None:
        raise ProtocolViolation(f"unexpected request {kind!r}")
    control.check_text_fields(kind, message)
    if kind in DECISIONS:  # fail closed, before any read
        item = message.get("item")
        channel.core.log_audit.refuse_if_unavailable(
            kind, channel.user.name, item if isinstance(item, str) else None
        )
    try:
        grant = channel.core.grant_for(channel.user)
        check_groups_defined(grant, channel.user.name)
        outcome: Outcome = handler(channel, grant, message)
    except AccessDenied as denial:
        return _refused_when_audited(_audit_denial(channel, kind, message, denial), denial)
    if isinstance(outcome, dict):
        return outcome
    return _audited(channel, kind, message, outcome)


async def _audited(
    channel: RequestChannel,
    kind: str,
    message: dict[str, Any],
    pending: Coroutine[Any, Any, Reply],
) -> Reply:
    """A handler that waits (DNS): its denial is audited like the others."""
    try:
        return await pending
    except AccessDenied as denial:
        await _audit_denial(channel, kind, message, denial)
        raise


async def _refused_when_audited(committed: Deferred[Any], denial: AccessDenied) -> Reply:
    """The refusal is sent once its audit row is committed (the reactor does not wait)."""
    await committed
    raise denial


DENIAL_EVENTS: Final[Mapping[str, str]] = {
    control.LIST_ITEMS: "request_denied",
    control.SHOW_ITEM: "request_denied",
    control.CREATE_ITEM: "item_denied",
    control.CHANGE_ITEM: "item_denied",
    control.DELETE_ITEM: "item_denied",
    control.OPEN_SESSION: "session_denied",
    control.TUNNELS_BOUND: "session_denied",
    control.CLOSE_SESSION: "close_denied",
    control.LIST_SESSIONS: "request_denied",
    control.SESSION_STATS: "request_denied",
    control.REQUEST_ACCESS: "request_denied",
    control.LIST_REQUESTS: "request_denied",
    control.DECIDE_REQUEST: "request_denied",
    control.FLOW_OPEN: "udp_flow_denied",
    control.CLOSE_FLOW: "request_denied",
}
"""The audit event of a denied request, by request type (every handler has one)."""


DECISIONS: Final = frozenset(
    {
        control.OPEN_SESSION,
        control.CREATE_ITEM,
        control.CHANGE_ITEM,
        control.DELETE_ITEM,
        control.REQUEST_ACCESS,
        control.DECIDE_REQUEST,
    }
)
"""Requests that take a decision the audit log must commit: refused at once while the
state database is unavailable (L{jumpoint.audit.AuditLog.refuse_if_unavailable})."""


SESSION_REQUESTS: Final = frozenset(
    {control.TUNNELS_BOUND, control.SESSION_STATS, control.FLOW_OPEN, control.CLOSE_FLOW}
)
"""Requests about the channel's open session: their denials name it."""


def _audit_denial(
    channel: RequestChannel, kind: str, message: dict[str, Any], denial: AccessDenied
) -> Deferred[Any]:
    """Record one denial with its rule: the user, what they asked for, and why not.

    Committed before the refusal is sent; if the audit cannot be written the
    console gets an internal error instead (the request is refused either way).
    """
    assert channel.user is not None
    fields: dict[str, Any] = {"user": channel.user.name, "action": kind}
    item = message.get("item")
    if isinstance(item, dict):  # create_item: the new item's spec
        item = item.get("name")
    if isinstance(item, str):
        fields["item"] = item
    session = channel.session
    if kind in SESSION_REQUESTS and session is not None:
        fields.update(session.audit_fields())
    fields.update(denial.context)
    return channel.core.log_audit.record(
        DENIAL_EVENTS[kind],
        rule=denial.rule,
        durable=True,
        reason=denial.message,
        **fields,
    )
