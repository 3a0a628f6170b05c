"""The Jumpoint's access decisions: may this user open this item, and on which terms?

L{decide} checks a console's session request against every rule in order
and either raises L{AccessDenied} naming the rule that denied it, or returns
the L{SessionTerms}: the tunnels (with the local ports a restricted user may
bind), the listener ACL, the idle timeout, when the session must close and
why, the connection cap, and whether it is recorded.  The rules, in order:

1. the user's groups: may they open items of the item's jump group at all,
   and open tunnels (C{tunnels})?  Can this Jumpoint open the item's kind
   (L{jumpoint.kinds}), here?
2. C{tunnels_restricted} (the union over the groups): protocol (of each
   tunnel pair for the kinds with tunnels: C{udp} needs C{udp} or C{tcp-udp},
   C{tcp-udp} needs both; else of the kind), remote and local ports, schemes,
   listener address and ACL, idle timeout, auto-close;
3. the item's jump policy: schedule, ticket ID, approval;
4. the item's session policy: recording consent, idle timeout, lifetime,
   connection cap.

The Jumpoint-local allow-list (C{allowed_targets}, with its built-in default:
loopback, link-local and the Jumpoint's own listener only when listed
explicitly) needs DNS, so the server checks it separately (L{jumpoint.dialing.check_target}),
when an item is created or given new tunnels, when the session opens and for
every connection.  Nothing here does I/O except reading approvals.
"""

from __future__ import annotations

import datetime
import ipaddress
import sys

from jumpoint import kinds
from jumpoint.approvals import ApprovalStore
from jumpoint.config import UDP_FLOWS_DEFAULT, UDP_IDLE_TIMEOUT_DEFAULT, JumpointConfig
from jumpoint.policy import Grant, JumpPolicy, SessionPolicy
from jumpoint.session_terms import Deadline, SessionTerms
from jumpoint.session_terms import SessionRequest as SessionRequest  # its home moved there
from shared.errors import AccessDenied, ConsentRequired
from shared.items import LOGIN_TIMEOUT_DEFAULT, Item
from shared.schema import format_duration

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def decide(
    config: JumpointConfig,
    grant: Grant,
    item: Item,
    request: SessionRequest,
    now: float,
    approvals: ApprovalStore,
    platform: str | None = None,
) -> SessionTerms:
    """Apply every rule (see the module docstring); raise L{AccessDenied} naming the rule.

    C{platform} is C{sys.platform} unless given (tests): k8s items need Linux.
    """
    who = grant.rule_groups()
    if not grant.may_open(item):
        raise AccessDenied(
            f"your {who} may see item {item.name!r} but not open items of jump group"
            f" {item.jump_group!r}",
            rule="groups.jump_groups.open",
        )
    if not grant.tunnels:
        raise AccessDenied(f"your {who} may not open tunnels", rule="groups.tunnels")
    kind = kinds.check_openable(item, platform or sys.platform)
    restrictions = grant.restrictions
    allowed = ", ".join(sorted(restrictions.protocol or ()))
    judged_at_open = kind.protocol is not None and not kind.has_tunnels
    if judged_at_open and not restrictions.allows_protocol(kind.protocol or ""):
        raise AccessDenied(
            f"your {who} may open {allowed} tunnels only; item {item.name!r} is {kind.protocol}",
            rule="tunnels_restricted.protocol",
        )
    for tunnel in item.tunnels:
        shown = f"{tunnel.text()} of item {item.name!r}"
        # a kind with tunnels: each pair by its own protocol (tcp-udp needs both)
        if kind.has_tunnels and not all(restrictions.allows_protocol(p) for p in tunnel.carries):
            raise AccessDenied(
                f"tunnel {shown} is {tunnel.protocol}: your {who} may open {allowed} tunnels only",
                rule="tunnels_restricted.protocol",
            )
        if restrictions.remote is not None and tunnel.remote_port not in restrictions.remote:
            raise AccessDenied(
                f"tunnel {shown}: remote port {tunnel.remote_port} is not allowed for your {who}"
                f" (allowed: {restrictions.remote.describe()})",
                rule="tunnels_restricted.remote",
            )
        local = restrictions.local
        if local is not None and tunnel.local_port is not None and tunnel.local_port not in local:
            raise AccessDenied(
                f"tunnel {shown}: local port {tunnel.local_port} is not allowed for your"
                f" {who} (allowed: {local.describe()})",
                rule="tunnels_restricted.local",
            )
        if restrictions.scheme is not None:
            scheme = tunnel.effective_scheme
            if scheme not in restrictions.scheme:
                raise AccessDenied(
                    f"tunnel {shown}: scheme {scheme or 'unknown'} is not allowed for your {who}"
                    f" (allowed: {', '.join(sorted(restrictions.scheme))})",
                    rule="tunnels_restricted.scheme",
                )
    local_address, acl = _listener(item, request, grant)
    idle_timeout = _idle_timeout(item, request, grant, config)
    deadlines: list[Deadline] = []
    auto_close = _auto_close(item, request, grant, config)
    if auto_close is not None:
        deadlines.append(
            Deadline(
                now + auto_close,
                "auto_close",
                f"the session's maximum lifetime of {format_duration(auto_close)} ran out"
                " (auto_close)",
            )
        )
    jump_policy = config.policies.jump.get(item.jump_policy) if item.jump_policy else None
    approval_id = None
    if jump_policy is not None:
        _check_ticket(jump_policy, request.ticket)
        deadline = _check_schedule(jump_policy, now)
        if deadline is not None:
            deadlines.append(deadline)
        if jump_policy.approval_required:
            approval = approvals.valid_for(grant.user, item.name, now)
            if approval is None:
                latest = approvals.latest_for(grant.user, item.name)
                state = (
                    f"your latest request ({latest.id}) is {latest.status_at(now)}"
                    if latest
                    else "you have no approved request"
                )
                raise AccessDenied(
                    f"item {item.name!r} needs an approved access request (jump policy"
                    f" {jump_policy.name!r}); {state}",
                    hint=f"ask with: jump request {item.name} --reason TEXT --duration 1h",
                    rule=f"jump_policies.{jump_policy.name}.approval_required",
                )
            approval_id = approval.id
            assert approval.valid_until is not None
            deadlines.append(
                Deadline(
                    approval.valid_until,
                    "approval_expired",
                    f"the approval of request {approval.id} expired",
                )
            )
    session_policy = (
        config.policies.session.get(item.session_policy) if item.session_policy else None
    )
    recording = bool(session_policy and session_policy.recording)
    if recording and not request.consent:
        assert session_policy is not None
        raise ConsentRequired(
            f"sessions of item {item.name!r} are recorded (session policy"
            f" {session_policy.name!r}): the Jumpoint keeps a copy of every byte of every"
            " connection",
            hint="consent with --yes, or answer the question on a terminal",
        )
    max_connections = config.limits.max_connections_per_session
    if session_policy is not None and session_policy.max_connections is not None:
        max_connections = min(max_connections, session_policy.max_connections)
    udp_idle_timeout, max_udp_flows = UDP_IDLE_TIMEOUT_DEFAULT, UDP_FLOWS_DEFAULT
    if session_policy is not None:
        if session_policy.udp_idle_timeout is not None:
            udp_idle_timeout = session_policy.udp_idle_timeout
        if session_policy.max_udp_flows is not None:
            max_udp_flows = session_policy.max_udp_flows
    return SessionTerms(
        item=item,
        grant=grant,
        local_address=local_address,
        local_ports=restrictions.local,
        acl=acl,
        idle_timeout=idle_timeout,
        deadlines=tuple(deadlines),
        max_connections=max_connections,
        recording=recording,
        ticket=request.ticket,
        approval_id=approval_id,
        jump_policy=jump_policy,
        session_policy=session_policy,
        login_timeout=resolve_login_timeout(item, session_policy),
        udp_idle_timeout=udp_idle_timeout,
        max_udp_flows=max_udp_flows,
    )


def resolve_login_timeout(item: Item, session_policy: SessionPolicy | None) -> float | None:
    """How long a connection of C{item} may take to log in: the item's or the policy's, lowest.

    Only the kinds whose connections log in (L{jumpoint.kinds.base.JumpointKind.logs_in}:
    mssql, k8s) have one; without either key it is L{LOGIN_TIMEOUT_DEFAULT}.
    """
    kind = kinds.get(item.type)
    if kind is None or not kind.logs_in:
        return None
    policy_value = session_policy.login_timeout if session_policy is not None else None
    values = [v for v in (item.login_timeout, policy_value) if v is not None]
    return min(values) if values else LOGIN_TIMEOUT_DEFAULT


def _listener(item: Item, request: SessionRequest, grant: Grant) -> tuple[str, tuple[str, ...]]:
    """The console's listening address and ACL (RPort's C{acl})."""
    restrictions = grant.restrictions
    address_text = request.local_address or item.local_address
    try:
        address = ipaddress.ip_address(address_text)
    except ValueError:
        raise AccessDenied(
            f"{address_text!r} is not an IP address", rule="tunnels_restricted.acl"
        ) from None
    requested = []
    for text in request.acl:
        try:
            requested.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise AccessDenied(
                f"acl entry {text!r} is not an IP address or CIDR", rule="tunnels_restricted.acl"
            ) from None
    allowed = restrictions.acl
    if allowed is not None:
        for network in requested:
            if not any(
                network.version == a.version and network.subnet_of(a)  # type: ignore[arg-type]
                for a in allowed
            ):
                raise AccessDenied(
                    f"acl {network} is wider than your {grant.rule_groups()} allow"
                    f" ({', '.join(str(a) for a in allowed)})",
                    rule="tunnels_restricted.acl",
                )
    chosen = requested or list(allowed or ())
    if address not in LOOPBACK and not chosen:
        raise AccessDenied(
            f"listening on {address} (not loopback) needs an acl saying who may connect",
            hint="pass --acl CIDR (the networks allowed to connect), or use a 127.x.y.z address",
            rule="tunnels_restricted.acl",
        )
    return str(address), tuple(str(n) for n in chosen)


def _idle_timeout(
    item: Item, request: SessionRequest, grant: Grant, config: JumpointConfig
) -> float | None:
    restrictions = grant.restrictions
    policy = config.policies.session.get(item.session_policy) if item.session_policy else None
    policy_idle = policy.idle_timeout if policy else None
    minimum = restrictions.idle_timeout_min or None  # a minimum of 0 restricts nothing
    requested = request.idle_timeout
    if requested is not None and requested <= 0:
        if policy_idle is not None:
            assert policy is not None
            raise AccessDenied(
                f"the idle timeout of {format_duration(policy_idle)} of session policy"
                f" {policy.name!r} cannot be turned off",
                rule=f"session_policies.{policy.name}.idle_timeout",
            )
        if not restrictions.skip_idle_timeout:
            raise AccessDenied(
                f"your {grant.rule_groups()} may not turn the idle timeout off",
                rule="tunnels_restricted.skip_idle_timeout",
            )
        return None
    if requested is not None:
        if minimum is not None and requested < minimum:
            raise AccessDenied(
                f"an idle timeout of {format_duration(requested)} is shorter than the"
                f" {format_duration(minimum)} your {grant.rule_groups()} require",
                rule="tunnels_restricted.idle_timeout_minutes.min",
            )
        if policy_idle is not None and requested > policy_idle:
            assert policy is not None
            raise AccessDenied(
                f"an idle timeout of {format_duration(requested)} is longer than the"
                f" {format_duration(policy_idle)} of session policy {policy.name!r}",
                rule=f"session_policies.{policy.name}.idle_timeout",
            )
        return requested
    if policy_idle is not None:
        return policy_idle
    return minimum  # skip_idle_timeout lets the user turn it off, never does it for them


def _auto_close(
    item: Item, request: SessionRequest, grant: Grant, config: JumpointConfig
) -> float | None:
    restrictions = grant.restrictions
    policy = config.policies.session.get(item.session_policy) if item.session_policy else None
    policy_max = policy.auto_close if policy else None
    requested = request.auto_close
    high, low = restrictions.auto_close_max, restrictions.auto_close_min
    if requested is None:
        # nothing asked: the policy's lifetime, shortened to the groups' maximum
        if high is None:
            return policy_max
        return high if policy_max is None else min(policy_max, high)
    if requested <= 0:
        raise AccessDenied("auto_close must be a positive duration", rule="auto_close")
    if policy_max is not None and requested > policy_max:
        assert policy is not None
        raise AccessDenied(
            f"an auto-close of {format_duration(requested)} is longer than the"
            f" {format_duration(policy_max)} maximum lifetime of session policy {policy.name!r}",
            rule=f"session_policies.{policy.name}.auto_close",
        )
    if high is not None and requested > high:
        raise AccessDenied(
            f"an auto-close of {format_duration(requested)} is longer than the"
            f" {format_duration(high)} your {grant.rule_groups()} allow",
            rule="tunnels_restricted.auto_close.max",
        )
    if low is not None and requested < low:
        raise AccessDenied(
            f"an auto-close of {format_duration(requested)} is shorter than the"
            f" {format_duration(low)} your {grant.rule_groups()} require",
            rule="tunnels_restricted.auto_close.min",
        )
    return requested


def _check_ticket(policy: JumpPolicy, ticket: str | None) -> None:
    if not policy.ticket_id_required:
        return
    ticket = (ticket or "").strip()
    if not ticket:
        raise AccessDenied(
            f"jump policy {policy.name!r} requires a ticket ID",
            hint="pass --ticket ID",
            rule=f"jump_policies.{policy.name}.ticket_id_required",
        )
    pattern = policy.ticket_id_pattern
    if pattern is not None and not pattern.fullmatch(ticket):
        raise AccessDenied(
            f"ticket ID {ticket[:64]!r} does not have the format jump policy {policy.name!r}"
            f" requires ({pattern.pattern})",
            rule=f"jump_policies.{policy.name}.ticket_id_pattern",
        )


def _check_schedule(policy: JumpPolicy, now: float) -> Deadline | None:
    schedule = policy.schedule
    if schedule is None:
        return None
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    window = schedule.window_at(moment)
    if window is None:
        opening = schedule.next_opening(moment)
        when = f"; next opening {opening.isoformat(timespec='minutes')}" if opening else ""
        raise AccessDenied(
            f"outside the schedule of jump policy {policy.name!r}: {schedule.describe()}{when}",
            rule=f"jump_policies.{policy.name}.schedule",
        )
    if not schedule.strict or window.end is None:  # None: the windows cover the whole week
        return None
    return Deadline(
        window.end.timestamp(),
        "schedule",
        f"the schedule window of jump policy {policy.name!r} ended at"
        f" {window.end.isoformat(timespec='minutes')} (strict schedule)",
    )
