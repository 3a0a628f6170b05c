"""Resuming a detached session on a new channel: C{open_session} with C{resume}.

The console sends the session's id and its resume token with the same item
and parameters it opened with.  The session's row and the user of the
console's certificate are read on the database thread; a row that is
closed, unknown, of another user or item, past its grace, or a wrong token
all answer C{session_gone} with one message (no oracle).  Then the policy is
decided again exactly as at open (L{jumpoint.handlers.session_admission}:
the user as the database has it now, their groups, the item, the jump policy's
schedule and ticket rule, the approval, C{tunnels_restricted}); a denial
closes the session (audited with the rule) and is answered C{denied}.  A
session that passes is claimed in its row with its C{session_reconnected}
event (one conditional update: one winner), attached to this channel and
answered with the usual result plus C{resumed} and C{reconnects}.  The audit
keeps one session: one C{session_opened}, one C{session_closed}.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from jumpoint import kinds
from jumpoint.access import SessionRequest
from jumpoint.config import JumpointConfig
from jumpoint.detached_rows import ResumableRow, ResumeLookup, claiming, read_for_resume
from jumpoint.handlers.request_context import (
    Reply,
    RequestChannel,
    RequestCore,
    check_groups_defined,
    visible,
)
from jumpoint.handlers.session_admission import admit, connection_gone, start_link
from jumpoint.policy import Grant
from jumpoint.resume_tokens import MAX_TOKEN_LENGTH, token_hash, token_matches
from jumpoint.session import Session
from jumpoint.session_lifecycle import session_ended
from jumpoint.session_sweep import SessionFields, close_detached_row
from jumpoint.session_terms import SessionTerms
from shared.errors import (
    SESSION_GONE_MESSAGE,
    AccessDenied,
    ConsentRequired,
    InvalidRequest,
    SessionGone,
    UnknownItem,
    UsageError,
)
from shared.items import Item
from shared.protocol.frames import ErrorCode

log = Logger()

MAX_SESSION_ID_LENGTH = 64


@dataclass(frozen=True)
class ResumeRequest:
    """The C{resume} member of C{open_session}: which session, and its token."""

    session: str
    token: str = dataclasses.field(repr=False)

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> ResumeRequest:
        value = message["resume"]
        session, token = value.get("session"), value.get("token")
        if (
            not isinstance(session, str)
            or not isinstance(token, str)
            or not 0 < len(session) <= MAX_SESSION_ID_LENGTH
            or not 0 < len(token) <= MAX_TOKEN_LENGTH
        ):
            raise InvalidRequest(
                "open_session: field 'resume' needs the session's id and its resume token"
            )
        return cls(session, token)


async def resume_session(
    channel: RequestChannel, grant: Grant, request: SessionRequest, resume: ResumeRequest
) -> Reply:
    """Resume the session (see the module docstring); C{grant} is re-read, not trusted."""
    channel.opening = True
    try:
        return await _resume(channel, request, resume)
    finally:
        channel.opening = False


async def _resume(channel: RequestChannel, request: SessionRequest, resume: ResumeRequest) -> Reply:
    core = channel.core
    config = core.config  # decided under one configuration (a reload re-checks it after)
    assert channel.user is not None and channel.certificate_serial is not None
    lookup = await core.log_audit.writer.submit(
        read_for_resume(resume.session, channel.certificate_serial)
    )
    now = core.clock.seconds()
    holder = core.find_session(resume.session)
    held_here = holder is not None or resume.session in core.detached
    row = lookup.row
    if not _may_resume(row, channel.user.name, request.item, resume.token, now, held_here):
        await core.log_audit.record(
            "resume_refused",
            user=channel.user.name,
            session=resume.session,
            item=request.item,
            durable=True,
            peer=channel.peer,
            reason=SESSION_GONE_MESSAGE,
        )
        raise SessionGone(SESSION_GONE_MESSAGE)
    assert row is not None
    if holder is not None and holder is not channel:
        # its old channel is still here (the Jumpoint had not noticed it was dead): drop it
        holder.detach_session("resumed on another connection", "resumed_elsewhere")
        if holder.mux is not None:
            holder.mux.go_away(
                ErrorCode.SESSION_CLOSED,
                "the session was resumed on another connection",
                abort=True,
            )
    detached_at = core.detached.detached_at(row.session_id) or now
    session = core.detached.take(row.session_id)
    try:
        grant, item, terms = await _recheck(channel, config, lookup, request)
    except (AccessDenied, ConsentRequired) as refusal:
        if isinstance(refusal, AccessDenied):
            refusal.context["session"] = row.session_id
        await _close_refused(core, row, session, refusal)
        raise
    except BaseException:
        if session is not None:
            core.detached.give_back(session, detached_at)
        raise
    terms = _anchored(terms, row, now)
    session, link_fields = await _attach(channel, grant, row, session, item, terms, request, resume)
    if core.config is not config and core.recheck_session is not None:
        core.recheck_session(channel, config)  # a reload came while it was being resumed
        if channel.session is not session:
            raise UsageError("the configuration was reloaded while the session was resuming")
    return {
        "session": session.session_id,
        "item": item.to_json(),
        **terms.to_json(),
        **link_fields,
        "resume_token": resume.token,
        "reconnect_grace": config.limits.reconnect_grace,
        "resumed": True,
        "reconnects": row.reconnects + 1,
    }


def _may_resume(
    row: ResumableRow | None, user: str, item: str, token: str, now: float, held_here: bool
) -> bool:
    """Whether the console may take this session back (every failure looks the same)."""
    matches = token_matches(token, row.token_hash if row is not None else None)
    if row is None or not matches or row.user != user or row.item != item:
        return False
    if not row.within_grace(now):
        return False
    # attached without being here: another member holds it (its own loss detaches it first)
    return row.detached_at is not None or held_here


async def _recheck(
    channel: RequestChannel, config: JumpointConfig, lookup: ResumeLookup, request: SessionRequest
) -> tuple[Grant, Item, SessionTerms]:
    """The admission decision again, for the user as the database has them now."""
    core = channel.core
    user = lookup.user
    if user is None:
        raise AccessDenied(f"the session cannot be resumed: {lookup.why_not}", rule="users.revoked")
    channel.user = user
    grant = core.grant_for(user)
    check_groups_defined(grant, user.name)
    try:
        item = await visible(core, grant, request.item)
    except UnknownItem:
        raise AccessDenied(
            f"item {request.item!r} no longer exists, or you may no longer see it",
            rule="items.visible",
        ) from None
    return grant, item, await admit(core, config, grant, item, request)


def _anchored(terms: SessionTerms, row: ResumableRow, now: float) -> SessionTerms:
    """The terms with the session's lifetime counted from when it opened, not from now."""
    deadlines = tuple(
        dataclasses.replace(d, at=row.opened_at + (d.at - now)) if d.code == "auto_close" else d
        for d in terms.deadlines
    )
    return dataclasses.replace(terms, deadlines=deadlines)


async def _close_refused(
    core: RequestCore,
    row: ResumableRow,
    session: Session | None,
    refusal: AccessDenied | ConsentRequired,
) -> None:
    """The re-check refused the session: it ends now, audited with the rule."""
    rule = refusal.rule if isinstance(refusal, AccessDenied) else None
    reason = f"{refusal.message} (rule: {rule})" if rule else refusal.message
    if session is not None:
        session.closed = True
        session.close_reason = reason
        session_ended(core, session, reason, refusal.code, rule=rule)
        return
    fields = SessionFields(row.user, row.session_id, row.item)
    await close_detached_row(core.log_audit, fields, row.totals, refusal.code, reason, rule)


def _rebuilt(
    core: RequestCore, row: ResumableRow, item: Item, terms: SessionTerms, reconnects: int
) -> Session:
    """The session of a row this Jumpoint does not hold (it restarted, or another member)."""
    session = Session(
        session_id=row.session_id,
        user=row.user,
        item=item,
        max_connections=terms.max_connections,
        opened_at=row.opened_at,
        total_connections=row.totals.connections,
        bytes_to_target=row.totals.bytes_to_target,
        bytes_from_target=row.totals.bytes_from_target,
    )
    if terms.recording and core.new_recorder is not None:
        link_type = kinds.kind_of(item).recording_link_type
        session.recorder = core.new_recorder(f"{row.session_id}.{reconnects}", link_type)
    return session


async def _attach(
    channel: RequestChannel,
    grant: Grant,
    row: ResumableRow,
    session: Session | None,
    item: Item,
    terms: SessionTerms,
    request: SessionRequest,
    resume: ResumeRequest,
) -> tuple[Session, dict[str, Any]]:
    """Claim the session's row for this channel and set it up there; its link's fields."""
    core = channel.core
    reconnects = row.reconnects + 1
    in_memory = session is not None
    if session is None:
        session = _rebuilt(core, row, item, terms, reconnects)
    session.item, session.terms, session.max_connections = item, terms, terms.max_connections
    session.request = request
    try:
        await core.log_audit.record(
            "session_reconnected",
            **session.audit_fields(),
            durable=True,
            apply=claiming(
                row.session_id, token_hash(resume.token), row.reconnects, core.clock.seconds()
            ),
            reconnects=reconnects,
            peer=channel.peer,
        )
    except SessionGone:
        # resumed or closed meanwhile (or its grace ran out): the row says so; the sweep
        # closes it if it is still detached
        _drop(session)
        raise
    except BaseException:
        if in_memory:
            core.detached.give_back(session, core.clock.seconds())
        else:
            _drop(session)
        raise
    if connection_gone(channel):
        core.detached.detach(session, "the connection closed while the session resumed", "cancel")
        raise UsageError("the connection closed while the session was being resumed")
    session.on_expired = channel.session_expired
    link_fields = start_link(channel, grant, session)
    channel.session = session
    session.start_timers(core.clock)
    log.info(
        "session {session} of user {user} resumed ({reconnects} reconnects) from {peer}",
        session=session.session_id,
        user=session.user,
        reconnects=reconnects,
        peer=channel.peer,
    )
    return session, link_fields


def _drop(session: Session) -> None:
    """Forget a session this Jumpoint will not carry (its row is decided elsewhere)."""
    session.closed = True
    if session.recorder is not None:
        session.recorder.close()
        session.recorder = None
