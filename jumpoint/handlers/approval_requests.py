"""The access requests of items that need an approval: request one, list them, decide one.

A request is committed with its audit row (C{approval_requested}, whose
row id the audit names) and sent to the jump policy's webhook; a member of
the policy's C{approver_group} other than the requester approves or denies
it, committed with C{approval_granted} or C{approval_denied}.
"""

from __future__ import annotations

from typing import Any

from jumpoint import webhooks
from jumpoint.approvals import Approval, check_decidable
from jumpoint.handlers.request_context import (
    Reply,
    RequestChannel,
    RequestCore,
    denied,
    visible,
)
from jumpoint.policy import Grant
from shared.errors import AccessDenied, UnknownRequest, UsageError


async def request_access(channel: RequestChannel, grant: Grant, message: dict[str, Any]) -> Reply:
    core = channel.core
    assert channel.user is not None
    item = await visible(core, grant, message["item"])
    policy = core.config.policies.jump.get(item.jump_policy) if item.jump_policy else None
    if policy is None or not policy.approval_required:
        raise UsageError(
            f"item {item.name!r} needs no approval", hint=f"open it with `jump open {item.name}`"
        )
    reason = message["reason"].strip()
    if not reason:
        raise UsageError("--reason must say why you need access")
    duration = float(message["duration"])
    if not duration > 0:  # also NaN
        raise UsageError(f"--duration must be a positive number of seconds, not {duration:g}")
    if duration > policy.approval_max_duration:
        raise denied(
            f"a duration of {duration:g}s is longer than the {policy.approval_max_duration:g}s"
            f" jump policy {policy.name!r} allows",
            rule=f"jump_policies.{policy.name}.approval_max_duration",
            item=item.name,
            duration=duration,
        )
    # the request's row and its audit row are committed together; the row's id is audited
    approval: Approval = await core.log_audit.record(
        "approval_requested",
        user=channel.user.name,
        item=item.name,
        durable=True,
        apply=core.approvals.requesting(
            channel.user.name,
            item.name,
            reason[:1000],
            duration,
            policy.approval_request_timeout,
            core.clock.seconds(),
        ),
        fields_from=lambda created: {"request": created.id},
        reason=reason[:1000],
        duration=duration,
        approver_group=policy.approver_group,
    )
    if policy.webhook is not None and core.notifier is not None:
        core.notifier.notify(
            policy.webhook,
            webhooks.approval_requested(core.config.name, approval, duration, policy),
            policy.webhook_secret,
        )
    result = approval.to_json(core.clock.seconds())
    result["approver_group"] = policy.approver_group
    return {"request": result}


async def _approver_items(core: RequestCore, grant: Grant) -> set[str]:
    """The items whose requests this user may decide."""
    out = set()
    for item in await core.catalog.everything():
        policy = core.config.policies.jump.get(item.jump_policy) if item.jump_policy else None
        if policy is not None and policy.approver_group in grant.groups:
            out.add(item.name)
    return out


async def list_requests(channel: RequestChannel, grant: Grant, message: dict[str, Any]) -> Reply:
    core = channel.core
    assert channel.user is not None
    now = core.clock.seconds()
    decidable = await _approver_items(core, grant)
    everything = bool(message.get("all"))
    found = []
    for approval in await core.approvals.listing():
        mine = approval.user == channel.user.name
        can_decide = approval.item in decidable and not mine
        if not (mine or can_decide):
            continue
        entry = approval.to_json(now)
        if (
            not everything
            and entry["status"] != "pending"
            and not (mine and entry["status"] == "approved")
        ):
            continue
        entry["can_decide"] = can_decide and entry["status"] == "pending"
        found.append(entry)
    return {"requests": found}


async def decide_request(channel: RequestChannel, grant: Grant, message: dict[str, Any]) -> Reply:
    core = channel.core
    assert channel.user is not None
    request_id = message["request"]
    approval = await core.approvals.find(request_id)
    if approval is None:
        raise UnknownRequest(f"no access request {request_id}", hint="see `jump approvals`")
    context: dict[str, object] = {
        "item": approval.item,
        "request": approval.id,
        "requester": approval.user,
    }
    if approval.item not in await _approver_items(core, grant):
        item = await core.catalog.find(approval.item)
        policy_name = item.jump_policy if item else None
        denial = AccessDenied(
            f"you are not an approver of item {approval.item!r}",
            rule=f"jump_policies.{policy_name}.approver_group"
            if policy_name
            else "approvals.approver_group",
        )
        denial.context.update(context)
        raise denial
    approve = bool(message["approve"])
    comment = message.get("comment")
    now = core.clock.seconds()
    try:
        current = check_decidable(approval, request_id, channel.user.name, now)
    except AccessDenied as denial:  # one's own request
        denial.context.update(context)
        raise
    # the decision and its audit row are committed together
    decided: Approval = await core.log_audit.record(
        "approval_granted" if approve else "approval_denied",
        user=channel.user.name,
        item=current.item,
        durable=True,
        apply=core.approvals.deciding(current, channel.user.name, approve, comment, now),
        request=current.id,
        requester=current.user,
        comment=comment,
        valid_until=now + current.duration if approve else None,
    )
    return {"request": decided.to_json(core.clock.seconds())}
