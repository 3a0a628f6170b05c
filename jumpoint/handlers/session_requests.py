"""The requests on sessions: open one, report its bound tunnels, close one, list them, read one.

Opening decides (L{jumpoint.access.decide}: the groups, the jump and session
policies, approvals, the item's targets against C{allowed_targets}) and
commits the session's row with its audit event before the session is set
up; the console then reports where it listens (C{tunnels_bound}), which the
session's local rules check.  Closing another user's session, or listing
everyone's, needs C{terminate_foreign_tunnels}.  C{session_stats} reads the
channel's own session (the figures a live view polls: a network session's
flows, denials and drops, as the Jumpoint decided them).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.logger import Logger

from jumpoint import kinds
from jumpoint.access import SessionRequest
from jumpoint.handlers.request_context import (
    Outcome,
    Reply,
    RequestChannel,
    denied,
    visible,
)
from jumpoint.handlers.session_admission import admit, connection_gone, start_link
from jumpoint.handlers.session_resume import ResumeRequest, resume_session
from jumpoint.policy import Grant
from jumpoint.resume_tokens import new_resume_token
from jumpoint.session import Session, new_session_id
from jumpoint.session_lifecycle import notify, record_opened, session_ended
from shared.errors import (
    AccessDenied,
    ConsentRequired,
    ProtocolViolation,
    UnknownSession,
    UsageError,
)
from shared.items import Item
from shared.protocol.frames import ErrorCode

log = Logger()


def open_session(channel: RequestChannel, grant: Grant, message: dict[str, Any]) -> Outcome:
    if channel.session is not None or channel.opening:
        raise UsageError("a session is already open on this connection")
    request = SessionRequest.from_message(message)
    if message.get("resume") is not None:
        return resume_session(channel, grant, request, ResumeRequest.from_message(message))
    return _open(channel, grant, request)


async def _open(channel: RequestChannel, grant: Grant, request: SessionRequest) -> Reply:
    core = channel.core
    assert channel.user is not None
    user = channel.user.name
    audit = core.log_audit
    item = await visible(core, grant, request.item)
    audit.record(
        "session_requested", user=user, item=item.name, ticket=request.ticket, peer=channel.peer
    )
    channel.opening = True
    try:
        return await _decide_and_open(channel, grant, request, item)
    finally:
        channel.opening = False


async def _decide_and_open(
    channel: RequestChannel, grant: Grant, request: SessionRequest, item: Item
) -> Reply:
    core = channel.core
    assert channel.user is not None
    user = channel.user.name
    audit = core.log_audit
    config = core.config
    try:
        terms = await admit(core, config, grant, item, request)
    except ConsentRequired:
        await audit.record("consent_requested", user=user, item=item.name, durable=True)
        raise
    if connection_gone(channel):
        raise UsageError("the connection closed while the session was being opened")
    session = Session(
        session_id=new_session_id(),
        user=user,
        item=item,
        max_connections=terms.max_connections,
        opened_at=core.clock.seconds(),
        terms=terms,
        on_expired=channel.session_expired,
        request=request,
    )
    details = terms.to_json()
    token, token_hash = new_resume_token()
    if terms.recording and core.new_recorder is not None:
        link_type = kinds.kind_of(item).recording_link_type
        session.recorder = core.new_recorder(session.session_id, link_type)
    link_fields = start_link(channel, grant, session)
    recording_path = str(session.recorder.path) if session.recorder else None
    # the audit row and the session's row are committed together before the session is set
    # up: if they cannot be written, there is no session
    try:
        await record_opened(audit, session, terms, details, recording_path, token_hash)
    except BaseException:
        if session.recorder is not None:
            session.recorder.close()
        if session.link is not None:
            session.link.close("the session could not be recorded")
        raise
    if connection_gone(channel):
        why = "the connection closed while the session was being opened"
        session.closed = True
        session_ended(core, session, why, "connection_closed")
        raise UsageError(why)
    channel.session = session
    session.start_timers(core.clock)
    if core.config is not config and core.recheck_session is not None:
        core.recheck_session(channel, config)  # a reload came while it was being set up
        if channel.session is not session:
            raise UsageError("the configuration was reloaded while the session was opening")
    log.info(
        "session {session} opened: user {user}, item {item} ({host})",
        session=session.session_id,
        user=user,
        item=item.name,
        host=item.host or ", ".join(rule.describe() for rule in item.filters),
    )
    notify(core, session, "session_start", None)
    return {
        "session": session.session_id,
        "item": item.to_json(),
        **details,
        **link_fields,
        "resume_token": token,
        "reconnect_grace": core.config.limits.reconnect_grace,
    }


async def tunnels_bound(channel: RequestChannel, grant: Grant, message: dict[str, Any]) -> Reply:
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
    session.bound_ports = tuple(port for _, port in bound)
    channel.core.log_audit.record(
        "session_ready",
        **session.audit_fields(),
        tunnels=[{"local_address": a, "local_port": p} for a, p in bound],
    )
    return {"session": session.session_id}


async def close_session(channel: RequestChannel, grant: Grant, message: dict[str, Any]) -> Reply:
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
    session = owner.session if owner is not None else core.detached.peek(target_id)
    if session is None:
        raise UnknownSession(f"no open session {target_id!r}", hint="see `jump sessions`")
    if session.user != channel.user.name and not grant.restrictions.terminate_foreign_tunnels:
        raise denied(
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
    # it may have ended, been resumed or detached while the decision was committed
    if owner is not None and owner.session is session:
        owner.close_session("closed_by_other", why, ErrorCode.SESSION_CLOSED)
    elif core.detached.peek(target_id) is session:
        core.detached.close(target_id, why, "closed_by_other")
    return {"session": target_id}


def list_sessions(channel: RequestChannel, grant: Grant, message: dict[str, Any]) -> Reply:
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


def session_stats(channel: RequestChannel, grant: Grant, message: dict[str, Any]) -> Reply:
    """The channel's own session as C{list_sessions} shows it (its C{link} included)."""
    session = channel.session
    if session is None or session.closed:
        raise UsageError("no session is open on this connection")
    return {"session": session.to_json(channel.core.clock.seconds())}
