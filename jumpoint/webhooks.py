"""The bodies of the webhook notifications a jump policy asks for.

A jump policy with a C{webhook} is told of the events it lists in
C{notify}: a session's start and end (L{session_event}), an access request
waiting for an approver (L{approval_requested}).  The bodies are built here;
L{jumpoint.notify} signs and delivers them.
"""

from __future__ import annotations

from typing import Any

from jumpoint.approvals import Approval
from jumpoint.policy import JumpPolicy
from jumpoint.session import Session


def session_event(
    jumpoint: str,
    session: Session,
    policy: JumpPolicy,
    event: str,
    reason: str | None,
    now: float,
) -> dict[str, Any]:
    """C{session_start} or C{session_end} (with its reason and totals)."""
    terms = session.terms
    body: dict[str, Any] = {
        "event": event,
        "jumpoint": jumpoint,
        "session": session.session_id,
        "user": session.user,
        "item": session.item.name,
        "host": session.item.host,
        "jump_policy": policy.name,
        "ticket": terms.ticket if terms else None,
        "time": now,
        "opened_at": session.opened_at,
    }
    if event == "session_end":
        to_target, from_target = session.totals()
        body.update(
            reason=reason,
            connections=session.total_connections,
            bytes_to_target=to_target,
            bytes_from_target=from_target,
        )
    return body


def approval_requested(
    jumpoint: str, approval: Approval, duration: float, policy: JumpPolicy
) -> dict[str, Any]:
    """A new access request, for the policy's approver group."""
    return {
        "event": "approval_requested",
        "jumpoint": jumpoint,
        "request": approval.id,
        "user": approval.user,
        "item": approval.item,
        "reason": approval.reason,
        "duration": duration,
        "approver_group": policy.approver_group,
    }
