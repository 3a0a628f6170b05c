"""The Jumpoint's answers to the console's control requests.

L{handle} dispatches one checked request of a channel's user: items (list,
show, create, change, delete), sessions (open, report bindings, list,
close), and access requests (request, list, approve or deny).  Every
decision is taken here, on the Jumpoint, and audited; a refusal raises a
L{JumpError} naming the rule, which the channel sends back as an error
reply.  Handlers that must wait (DNS for the allow-list, the commit of a
decision by the database thread) return coroutines: a decision and the
state change it makes are committed before the reply, without the reactor
ever waiting for the database.
"""

from __future__ import annotations

import ipaddress
import sqlite3
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from jumpoint.access import SessionRequest, SessionTerms, check_target, decide
from jumpoint.approvals import Approval
from jumpoint.audit import AuditLog
from jumpoint.policy import Grant
from jumpoint.session import Session, new_session_id
from shared.errors import (
    AccessDenied,
    ConsentRequired,
    JumpError,
    ProtocolViolation,
    UnknownItem,
    UnknownRequest,
    UnknownSession,
    UsageError,
)
from shared.items import Item, item_from_data, parse_tunnel_text
from shared.protocol import control
from shared.protocol.frames import ErrorCode

if TYPE_CHECKING:
    from jumpoint.server import JumpointChannel, JumpointCore

log = Logger()

Outcome = dict[str, Any] | Coroutine[Any, Any, dict[str, Any]]


def handle(channel: JumpointChannel, kind: str, message: dict[str, Any]) -> Outcome:
    """Answer one request (see the module docstring); every denial is audited here."""
    assert channel.user is not None
    handler = _HANDLERS.get(kind)
    if handler is None:
        raise ProtocolViolation(f"unexpected request {kind!r}")
    control.check_text_fields(kind, message)
    try:
        grant = channel.core.grant_for(channel.user)
        if grant.missing_groups and not grant.groups:
            raise AccessDenied(
                f"user {channel.user.name!r} is in group {grant.missing_groups[0]!r}, which"
                " jumpoint.yaml does not define",
                hint="ask your administrator to define the group or move you to another one",
                rule="groups",
            )
        outcome: Outcome = handler(channel, grant, message)
    except AccessDenied as denial:
        return _refused_when_audited(_audit_denial(channel, kind, message, denial), denial)
    if isinstance(outcome, dict):
        return outcome
    return _audited(channel, kind, message, outcome)


async def _audited(
    channel: JumpointChannel,
    kind: str,
    message: dict[str, Any],
    pending: Coroutine[Any, Any, dict[str, Any]],
) -> dict[str, Any]:
    """A handler that waits (DNS): its denial is audited like the others."""
    try:
        return await pending
    except AccessDenied as denial:
        await _audit_denial(channel, kind, message, denial)
        raise


async def _refused_when_audited(committed: Deferred[Any], denial: AccessDenied) -> dict[str, Any]:
    """The refusal is sent once its audit row is committed (the reactor does not wait)."""
    await committed
    raise denial


DENIAL_EVENTS = {
    control.LIST_ITEMS: "request_denied",
    control.SHOW_ITEM: "request_denied",
    control.CREATE_ITEM: "item_denied",
    control.CHANGE_ITEM: "item_denied",
    control.DELETE_ITEM: "item_denied",
    control.OPEN_SESSION: "session_denied",
    control.TUNNELS_BOUND: "session_denied",
    control.CLOSE_SESSION: "close_denied",
    control.LIST_SESSIONS: "request_denied",
    control.REQUEST_ACCESS: "request_denied",
    control.LIST_REQUESTS: "request_denied",
    control.DECIDE_REQUEST: "request_denied",
}
"""The audit event of a denied request, by request type (every handler has one)."""


def _audit_denial(
    channel: JumpointChannel, kind: str, message: dict[str, Any], denial: AccessDenied
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
    if kind == control.TUNNELS_BOUND and session is not None:
        fields.update(session.audit_fields())
    fields.update(denial.context)
    return channel.core.log_audit.record(
        DENIAL_EVENTS[kind],
        rule=denial.rule,
        durable=True,
        reason=denial.message,
        **fields,
    )


# -- items -------------------------------------------------------------------


def _visible(core: JumpointCore, grant: Grant, name: str) -> Item:
    item = core.catalog.get(name)
    if item is None or not grant.may_see(item):
        raise UnknownItem(
            f"no item named {name!r} that you may see on Jumpoint {core.config.name}",
            hint="list the items you may open with `jump items`",
        )
    return item


def _item_json(item: Item, grant: Grant) -> dict[str, Any]:
    out = item.to_json()
    out["may_open"] = grant.may_open(item)
    out["may_manage"] = not item.read_only and grant.may_manage(item.jump_group)
    return out


def _list_items(channel: JumpointChannel, grant: Grant, message: dict[str, Any]) -> Outcome:
    search = (message.get("search") or "").lower()
    tag = message.get("tag")
    jump_group = message.get("jump_group")
    found = []
    for item in channel.core.catalog.all():
        if not grant.may_see(item):
            continue
        if jump_group is not None and item.jump_group != jump_group:
            continue
        if tag is not None and (item.tag or "") != tag:
            continue
        if search:
            haystack = " ".join(
                str(v).lower()
                for v in (item.name, item.host, item.tag, item.comments, item.url)
                if v
            )
            if search not in haystack:
                continue
        found.append(_item_json(item, grant))
    return {"items": found}


def _show_item(channel: JumpointChannel, grant: Grant, message: dict[str, Any]) -> Outcome:
    return {"item": _item_json(_visible(channel.core, grant, message["item"]), grant)}


def _denied(message: str, *, rule: str, hint: str | None = None, **context: object) -> AccessDenied:
    """A denial naming its rule, with the fields its audit row adds."""
    denial = AccessDenied(message, hint, rule)
    denial.context.update(context)
    return denial


def _check_manage(grant: Grant, jump_group: str, action: str) -> None:
    if not grant.may_manage(jump_group):
        raise _denied(
            f"your {grant.rule_groups()} may not {action} items in jump group {jump_group!r}",
            rule="groups.jump_groups.manage",
            jump_group=jump_group,
        )


def _check_policies(core: JumpointCore, item: Item) -> None:
    policies = core.config.policies
    for key, known in (("jump_policy", policies.jump), ("session_policy", policies.session)):
        name = getattr(item, key)
        if name is not None and name not in known:
            defined = ", ".join(sorted(known)) or "none"
            raise UsageError(
                f"item: {key}: no {key.replace('_', ' ')} named {name!r} (defined: {defined})"
            )


async def check_item_targets(
    core: JumpointCore, item: Item, ports: frozenset[int] | None = None
) -> None:
    """Every remote port of the item's host (or C{ports}) passes C{allowed_targets}.

    The built-in default applies without an allow-list too: loopback, link-local
    and the Jumpoint's own listener only when listed explicitly.  A host that
    resolves to nothing passes here only without an allow-list (each connection
    is checked again when it is dialled).
    """
    if not item.host:
        return
    addresses, resolved = await resolve_checked(core, item.host)
    if not addresses:
        return
    for port in sorted(item.remote_ports if ports is None else ports):
        check_target(core.config, port, addresses, resolved, item.host)


async def _create_item(
    channel: JumpointChannel, grant: Grant, message: dict[str, Any]
) -> dict[str, Any]:
    core = channel.core
    assert channel.user is not None
    item = item_from_data(message["item"], "console")
    _check_manage(grant, item.jump_group, "create")
    if item.name in core.catalog.configured:
        raise UsageError(
            f"an item named {item.name!r} already exists (in jumpoint.yaml, read-only)",
            hint="choose another name",
        )
    _check_policies(core, item)
    try:  # its targets pass allowed_targets at creation, not only at open
        await check_item_targets(core, item)
    except AccessDenied as denial:
        denial.context.update(jump_group=item.jump_group, host=item.host)
        raise
    # the item and its audit row are committed together, or neither
    created: Item = await core.log_audit.record(
        "item_created",
        user=channel.user.name,
        item=item.name,
        durable=True,
        apply=core.catalog.store.creating(item, channel.user.name, core.clock.seconds()),
        spec=_audit_spec(item.with_changes(source="console", created_by=channel.user.name)),
    )
    return {"item": _item_json(created, grant)}


def _audit_spec(item: Item) -> dict[str, Any]:
    spec = item.to_spec()
    if "ca_pem" in spec:
        spec["ca_pem"] = f"{spec['ca_pem'].count('BEGIN CERTIFICATE')} certificates"
    return spec


def _managed(core: JumpointCore, grant: Grant, name: str, action: str) -> Item:
    item = _visible(core, grant, name)
    if item.read_only:
        raise UsageError(
            f"item {name!r} is defined in jumpoint.yaml and is read-only",
            hint="ask your administrator to change jumpoint.yaml",
        )
    _check_manage(grant, item.jump_group, action)
    return item


async def _change_item(
    channel: JumpointChannel, grant: Grant, message: dict[str, Any]
) -> dict[str, Any]:
    core = channel.core
    assert channel.user is not None
    change, value = message["change"], message["value"]
    if change not in control.ITEM_CHANGES:
        raise UsageError(f"unknown item change {change!r}")
    item = _managed(core, grant, message["item"], "change")
    spec = item.to_spec()
    if change in ("tunnel_add", "tunnel_remove"):
        if item.type != "tcp":
            raise UsageError(
                f"item {item.name!r} is a {item.type} item; only tcp items have tunnels"
            )
        try:
            tunnel = parse_tunnel_text(value)
        except ValueError as error:
            raise UsageError(str(error)) from None
        tunnels = list(spec["tunnels"])
        if change == "tunnel_add":
            if any(
                t["remote_port"] == tunnel["remote_port"]
                and t["local_port"] == tunnel["local_port"]
                for t in tunnels
            ):
                raise UsageError(f"item {item.name!r} already has tunnel {value}")
            tunnels.append(tunnel)
        else:
            kept = [
                t
                for t in tunnels
                if not (
                    t["remote_port"] == tunnel["remote_port"]
                    and t["local_port"] == tunnel["local_port"]
                )
            ]
            if len(kept) == len(tunnels):
                shown = ", ".join(f"{t['local_port']}:{t['remote_port']}" for t in tunnels)
                raise UsageError(f"item {item.name!r} has no tunnel {value} (its tunnels: {shown})")
            if not kept:
                raise UsageError(
                    f"tunnel {value} is the last tunnel of item {item.name!r}",
                    hint="add another tunnel first, or delete the item",
                )
            tunnels = kept
        spec["tunnels"] = tunnels
    elif change == "move":
        _check_manage(grant, value, "move")
        spec["jump_group"] = value
    elif change == "tag":
        spec["tag"] = value.strip() or None
    else:
        spec["comments"] = value or None
    changed = item_from_data(spec, "console").with_changes(created_by=item.created_by)
    if change == "tunnel_add":  # a new target: checked now, not only when opened
        try:
            await check_item_targets(core, changed, frozenset({tunnel["remote_port"]}))
        except AccessDenied as denial:
            denial.context.update(jump_group=changed.jump_group, host=changed.host)
            raise
    await core.log_audit.record(
        "item_changed",
        user=channel.user.name,
        item=item.name,
        durable=True,
        apply=core.catalog.store.updating(changed, core.clock.seconds()),
        change=change,
        value=value,
    )
    return {"item": _item_json(changed, grant)}


async def _delete_item(
    channel: JumpointChannel, grant: Grant, message: dict[str, Any]
) -> dict[str, Any]:
    core = channel.core
    assert channel.user is not None
    item = _managed(core, grant, message["item"], "delete")
    await core.log_audit.record(
        "item_deleted",
        user=channel.user.name,
        item=item.name,
        durable=True,
        apply=core.catalog.store.deleting(item.name),
    )
    return {"item": item.name}


# -- sessions ----------------------------------------------------------------


async def resolve_checked(core: JumpointCore, host: str) -> tuple[list[str], dict[str, list[str]]]:
    """The addresses of C{host}, and of every host name the allow-list mentions.

    With an allow-list a name that resolves to nothing is denied (nothing can
    be checked); without one the addresses are empty and the caller decides.
    """
    addresses = await core.resolve(host)
    if not addresses and core.config.allowed_targets is not None:
        raise AccessDenied(f"cannot resolve {host}", rule="allowed_targets")
    resolved: dict[str, list[str]] = {}
    allow_list = core.config.allowed_targets
    if allow_list is not None:
        for name in sorted(allow_list.hostnames()):
            resolved[name] = await core.resolve(name)
    return addresses, resolved


def _open_session(channel: JumpointChannel, grant: Grant, message: dict[str, Any]) -> Outcome:
    if channel.session is not None or channel.opening:
        raise UsageError("a session is already open on this connection")
    request = SessionRequest.from_message(message)
    return _open(channel, grant, request)


async def _open(channel: JumpointChannel, grant: Grant, request: SessionRequest) -> dict[str, Any]:
    core = channel.core
    assert channel.user is not None
    user = channel.user.name
    audit = core.log_audit
    item = _visible(core, grant, request.item)
    audit.record(
        "session_requested", user=user, item=item.name, ticket=request.ticket, peer=channel.peer
    )
    channel.opening = True
    try:
        return await _decide_and_open(channel, grant, request, item)
    finally:
        channel.opening = False


async def _decide_and_open(
    channel: JumpointChannel, grant: Grant, request: SessionRequest, item: Item
) -> dict[str, Any]:
    core = channel.core
    assert channel.user is not None
    user = channel.user.name
    audit = core.log_audit
    try:
        now = core.clock.seconds()
        terms = decide(core.config, grant, item, request, now, core.approvals)
        await check_item_targets(core, item)
    except ConsentRequired:
        await audit.record("consent_requested", user=user, item=item.name, durable=True)
        raise
    if _connection_gone(channel):
        raise UsageError("the connection closed while the session was being opened")
    session = Session(
        session_id=new_session_id(),
        user=user,
        item=item,
        max_connections=terms.max_connections,
        opened_at=core.clock.seconds(),
        terms=terms,
        on_expired=channel.session_expired,
    )
    details = terms.to_json()
    if terms.recording and core.new_recorder is not None:
        session.recorder = core.new_recorder(session.session_id)
    recording_path = str(session.recorder.path) if session.recorder else None
    # the audit row and the session's row are committed together before the session is set
    # up: if they cannot be written, there is no session
    try:
        await _record_opened(audit, session, terms, details, recording_path)
    except BaseException:
        if session.recorder is not None:
            session.recorder.close()
        raise
    if _connection_gone(channel):
        why = "the connection closed while the session was being opened"
        session.closed = True
        session_ended(core, session, why, "connection_closed")
        raise UsageError(why)
    channel.session = session
    session.start_timers(core.clock)
    log.info(
        "session {session} opened: user {user}, item {item} ({host})",
        session=session.session_id,
        user=user,
        item=item.name,
        host=item.host,
    )
    _notify(core, session, "session_start", None)
    return {"session": session.session_id, "item": item.to_json(), **details}


def _connection_gone(channel: JumpointChannel) -> bool:
    return channel.mux is None or channel.mux.closing


def _record_opened(
    audit: AuditLog,
    session: Session,
    terms: SessionTerms,
    details: dict[str, Any],
    recording: str | None,
) -> Deferred[None]:
    row = (
        session.session_id,
        session.user,
        session.item.name,
        session.opened_at,
        terms.ticket,
        terms.approval_id,
        recording,
    )

    def insert(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO sessions (id, user_name, item, opened_at, ticket, approval_id,"
            " recording) VALUES (?, ?, ?, ?, ?, ?, ?)",
            row,
        )

    return audit.record(
        "session_opened",
        **session.audit_fields(),
        durable=True,
        apply=insert,
        ticket=terms.ticket,
        approval=terms.approval_id,
        recording=recording,
        idle_timeout=terms.idle_timeout,
        closes_at=details["closes_at"],
        tunnels=details["tunnels"],
    )


def session_ended(core: JumpointCore, session: Session, reason: str, code: str) -> None:
    """Record the end of a session: database row, audit, log, notification."""
    to_target, from_target = session.totals()
    now = core.clock.seconds()
    if session.recorder is not None:
        session.recorder.close()
    row = (now, reason, session.total_connections, to_target, from_target, session.session_id)

    def update(db: sqlite3.Connection) -> None:
        db.execute(
            "UPDATE sessions SET closed_at = ?, close_reason = ?, connections = ?,"
            " bytes_to_target = ?, bytes_from_target = ? WHERE id = ?",
            row,
        )

    # not a decision: spooled and retried until committed, with the session's row
    core.log_audit.record(
        "session_closed",
        **session.audit_fields(),
        apply=update,
        code=code,
        reason=reason,
        connections=session.total_connections,
        bytes_to_target=to_target,
        bytes_from_target=from_target,
    )
    log.info(
        "session {session} of user {user} on item {item} closed: {reason};"
        " {connections} connections, {to_target} bytes to target,"
        " {from_target} bytes from target",
        session=session.session_id,
        user=session.user,
        item=session.item.name,
        reason=reason,
        connections=session.total_connections,
        to_target=to_target,
        from_target=from_target,
    )
    _notify(core, session, "session_end", reason)


def _notify(core: JumpointCore, session: Session, event: str, reason: str | None) -> None:
    terms = session.terms
    policy = terms.jump_policy if terms is not None else None
    if policy is None or policy.webhook is None or core.notifier is None:
        return
    if event not in policy.notify_events:
        return
    to_target, from_target = session.totals()
    body: dict[str, Any] = {
        "event": event,
        "jumpoint": core.config.name,
        "session": session.session_id,
        "user": session.user,
        "item": session.item.name,
        "host": session.item.host,
        "jump_policy": policy.name,
        "ticket": terms.ticket if terms else None,
        "time": core.clock.seconds(),
        "opened_at": session.opened_at,
    }
    if event == "session_end":
        body.update(
            reason=reason,
            connections=session.total_connections,
            bytes_to_target=to_target,
            bytes_from_target=from_target,
        )
    core.notifier.notify(policy.webhook, body, policy.webhook_secret)


async def _tunnels_bound(
    channel: JumpointChannel, grant: Grant, message: dict[str, Any]
) -> dict[str, Any]:
    session = channel.session
    if session is None or session.terms is None:
        raise UsageError("no session is open on this connection")
    terms = session.terms
    bound = []
    for entry in message["tunnels"]:
        if not isinstance(entry, dict):
            raise ProtocolViolation("tunnels_bound: malformed tunnel")
        address, port = entry.get("local_address"), entry.get("local_port")
        if not isinstance(address, str) or not isinstance(port, int) or isinstance(port, bool):
            raise ProtocolViolation("tunnels_bound: malformed tunnel")
        bound.append((address, port))
    problem = None
    for address, port in bound:
        if terms.local_ports is not None and port not in terms.local_ports:
            problem = (
                f"local port {port} is not allowed for your"
                f" {grant.rule_groups()} (allowed: {terms.local_ports.describe()})",
                "tunnels_restricted.local",
            )
        elif address != terms.local_address:
            try:
                loopback = ipaddress.ip_address(address).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                problem = (
                    f"the console listens on {address}, not on the granted {terms.local_address}",
                    "tunnels_restricted.acl",
                )
    if problem is not None:
        reason, rule = problem  # audited by handle(), with the session
        channel.core.clock.callLater(
            0, channel.close_session, "denied", f"{reason} (rule: {rule})", ErrorCode.DENIED
        )
        raise AccessDenied(reason, rule=rule)
    channel.core.log_audit.record(
        "session_ready",
        **session.audit_fields(),
        tunnels=[{"local_address": a, "local_port": p} for a, p in bound],
    )
    return {"session": session.session_id}


async def _close_session(
    channel: JumpointChannel, grant: Grant, message: dict[str, Any]
) -> dict[str, Any]:
    core = channel.core
    assert channel.user is not None
    reason = message["reason"][:200]
    target_id = message.get("session")
    if target_id is None or (channel.session and channel.session.session_id == target_id):
        if channel.session is None:
            raise UsageError("no session is open on this connection")
        session_id = channel.session.session_id
        channel.end_session(f"closed by the user: {reason}", "closed_by_user")
        return {"session": session_id}
    owner = core.find_session(target_id)
    if owner is None or owner.session is None:
        raise UnknownSession(f"no open session {target_id!r}", hint="see `jump sessions`")
    session = owner.session
    if session.user != channel.user.name and not grant.restrictions.terminate_foreign_tunnels:
        raise _denied(
            f"session {target_id} belongs to {session.user!r}; your {grant.rule_groups()} may"
            " not close other users' sessions",
            rule="tunnels_restricted.terminate_foreign_tunnels",
            session=session.session_id,
            item=session.item.name,
            owner=session.user,
        )
    why = f"closed by {channel.user.name}: {reason}"
    await core.log_audit.record(
        "session_terminated",
        user=channel.user.name,
        session=session.session_id,
        item=session.item.name,
        durable=True,
        owner=session.user,
        reason=reason,
    )
    if owner.session is session:  # it may have ended while the decision was committed
        owner.close_session("closed_by_other", why, ErrorCode.SESSION_CLOSED)
    return {"session": target_id}


def _list_sessions(channel: JumpointChannel, grant: Grant, message: dict[str, Any]) -> Outcome:
    core = channel.core
    assert channel.user is not None
    everyone = bool(message.get("all"))
    if everyone and not grant.restrictions.terminate_foreign_tunnels:
        raise AccessDenied(
            f"your {grant.rule_groups()} may see only their own sessions",
            rule="tunnels_restricted.terminate_foreign_tunnels",
        )
    now = core.clock.seconds()
    sessions = [s.to_json(now) for s in core.sessions() if everyone or s.user == channel.user.name]
    sessions.sort(key=lambda s: s["opened_at"])
    return {"sessions": sessions}


# -- access requests ---------------------------------------------------------


async def _request_access(
    channel: JumpointChannel, grant: Grant, message: dict[str, Any]
) -> dict[str, Any]:
    core = channel.core
    assert channel.user is not None
    item = _visible(core, grant, message["item"])
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
        raise _denied(
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
            {
                "event": "approval_requested",
                "jumpoint": core.config.name,
                "request": approval.id,
                "user": approval.user,
                "item": approval.item,
                "reason": approval.reason,
                "duration": duration,
                "approver_group": policy.approver_group,
            },
            policy.webhook_secret,
        )
    result = approval.to_json(core.clock.seconds())
    result["approver_group"] = policy.approver_group
    return {"request": result}


def _approver_items(core: JumpointCore, grant: Grant) -> set[str]:
    """The items whose requests this user may decide."""
    out = set()
    for item in core.catalog.all():
        policy = core.config.policies.jump.get(item.jump_policy) if item.jump_policy else None
        if policy is not None and policy.approver_group in grant.groups:
            out.add(item.name)
    return out


def _list_requests(channel: JumpointChannel, grant: Grant, message: dict[str, Any]) -> Outcome:
    core = channel.core
    assert channel.user is not None
    now = core.clock.seconds()
    decidable = _approver_items(core, grant)
    everything = bool(message.get("all"))
    found = []
    for approval in core.approvals.list():
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


async def _decide_request(
    channel: JumpointChannel, grant: Grant, message: dict[str, Any]
) -> dict[str, Any]:
    core = channel.core
    assert channel.user is not None
    request_id = message["request"]
    approval = core.approvals.get(request_id)
    if approval is None:
        raise UnknownRequest(f"no access request {request_id}", hint="see `jump approvals`")
    context: dict[str, object] = {
        "item": approval.item,
        "request": approval.id,
        "requester": approval.user,
    }
    if approval.item not in _approver_items(core, grant):
        item = core.catalog.get(approval.item)
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
        current = core.approvals.check_decidable(request_id, channel.user.name, now)
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


_HANDLERS: dict[str, Any] = {
    control.LIST_ITEMS: _list_items,
    control.SHOW_ITEM: _show_item,
    control.CREATE_ITEM: _create_item,
    control.CHANGE_ITEM: _change_item,
    control.DELETE_ITEM: _delete_item,
    control.OPEN_SESSION: _open_session,
    control.TUNNELS_BOUND: _tunnels_bound,
    control.CLOSE_SESSION: _close_session,
    control.LIST_SESSIONS: _list_sessions,
    control.REQUEST_ACCESS: _request_access,
    control.LIST_REQUESTS: _list_requests,
    control.DECIDE_REQUEST: _decide_request,
}

__all__ = ["JumpError", "handle", "resolve_checked", "session_ended"]
