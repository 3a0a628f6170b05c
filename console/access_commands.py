"""`jump request`, `jump approvals`, `jump approve`, `jump deny`, `jump sessions`, `jump close`.

Access requests for items whose jump policy needs approval, their decision
by approvers, and the open sessions (one's own, or everyone's with the
C{terminate_foreign_tunnels} permission).  The Jumpoint decides; these
commands ask and print.
"""

from __future__ import annotations

import json
import time

import click

from console.output import print_requests, print_sessions, say, span, when
from console.remote import call, profile_option
from shared.errors import UsageError
from shared.protocol import control
from shared.schema import parse_duration


def _request(item: str, reason: str, duration: str, as_json: bool, profile: str | None) -> None:
    try:
        seconds = parse_duration(duration)
    except ValueError as error:
        raise UsageError(f"--duration: {error}") from None
    result = call(profile, control.REQUEST_ACCESS, item=item, reason=reason, duration=seconds)[
        "request"
    ]
    if as_json:
        click.echo(json.dumps(result))
        return
    say(
        f"request {result['id']} for item {item!r} ({span(seconds)}) is {result['status']};"
        f" approvers: group {result.get('approver_group')!r}"
    )
    say(f"it expires unanswered at {when(result.get('request_expires_at'))}")


def _approvals(everything: bool, as_json: bool, profile: str | None) -> None:
    result = call(profile, control.LIST_REQUESTS, all=everything or None)
    print_requests(result["requests"], as_json)


def _decide(
    request_id: int, approve: bool, comment: str | None, as_json: bool, profile: str | None
) -> None:
    result = call(
        profile, control.DECIDE_REQUEST, request=request_id, approve=approve, comment=comment
    )["request"]
    if as_json:
        click.echo(json.dumps(result))
    elif approve:
        say(
            f"approved request {request_id}: {result['user']} may open {result['item']!r}"
            f" until {when(result.get('valid_until'))}"
        )
    else:
        say(f"denied request {request_id} of {result['user']} for {result['item']!r}")


def _sessions(everything: bool, as_json: bool, profile: str | None) -> None:
    result = call(profile, control.LIST_SESSIONS, all=everything or None)
    print_sessions(result["sessions"], as_json, time.time())


def _close(session: str, reason: str, as_json: bool, profile: str | None) -> None:
    result = call(profile, control.CLOSE_SESSION, session=session, reason=reason)
    if as_json:
        click.echo(json.dumps({"session": result.get("session", session)}))
    else:
        say(f"closed session {session}")


@click.command()
@click.argument("item")
@click.option("--reason", required=True, help="Why you need access (shown to approvers).")
@click.option("--duration", required=True, help="How long, once approved (30m, 2h).")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@profile_option
def request(item: str, reason: str, duration: str, as_json: bool, profile: str | None) -> None:
    """Ask for approval to open ITEM."""
    _request(item, reason, duration, as_json, profile)


@click.command()
@click.option("--all", "everything", is_flag=True, help="Also decided and expired ones.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@profile_option
def approvals(everything: bool, as_json: bool, profile: str | None) -> None:
    """Your access requests, and those you may decide."""
    _approvals(everything, as_json, profile)


@click.command()
@click.argument("request_id", metavar="ID", type=int)
@click.option("--comment", help="A note for the requester and the audit log.")
@click.option("--json", "as_json", is_flag=True, help="JSON output (and JSON errors).")
@profile_option
def approve(request_id: int, comment: str | None, as_json: bool, profile: str | None) -> None:
    """Approve access request ID."""
    _decide(request_id, True, comment, as_json, profile)


@click.command()
@click.argument("request_id", metavar="ID", type=int)
@click.option("--reason", "comment", help="Why (for the requester and the audit log).")
@click.option("--json", "as_json", is_flag=True, help="JSON output (and JSON errors).")
@profile_option
def deny(request_id: int, comment: str | None, as_json: bool, profile: str | None) -> None:
    """Deny access request ID."""
    _decide(request_id, False, comment, as_json, profile)


@click.command()
@click.option("--all", "everything", is_flag=True, help="Everyone's (needs permission).")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@profile_option
def sessions(everything: bool, as_json: bool, profile: str | None) -> None:
    """Your open sessions (everyone's with --all and the permission)."""
    _sessions(everything, as_json, profile)


@click.command()
@click.argument("session")
@click.option("--reason", default="closed with jump close", help="Why, for the logs.")
@click.option("--json", "as_json", is_flag=True, help="JSON output (and JSON errors).")
@profile_option
def close(session: str, reason: str, as_json: bool, profile: str | None) -> None:
    """Close SESSION (your own; others' with terminate_foreign_tunnels)."""
    _close(session, reason, as_json, profile)


COMMANDS = [request, approvals, approve, deny, sessions, close]
