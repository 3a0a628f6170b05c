"""Does an open session still hold under a reloaded configuration?  The rule that no longer does.

L{recheck} decides for one session with the same rules that admitted it
(L{jumpoint.access.decide}), run twice at the same moment for the session's
own request: under the running configuration and under the new one.  The
session closes (L{Closing}) when

- its item was removed, or changed what it connects to (host, kind fields,
  a tunnel it has gone);
- the new configuration denies it (groups, C{tunnels_restricted}, jump
  policy: schedule, ticket, approval; recording without consent) where the
  running one did not deny it for that rule (a denial both give is not the
  reload's doing: e.g. a non-strict schedule window that ended);
- its terms narrowed (L{narrowing}): a shorter idle timeout, an earlier
  deadline or a new one (auto-close, strict schedule, approval), recording
  newly required, fewer connections or UDP flows, a shorter UDP idle or login
  timeout, a bound local port or a listener ACL no longer allowed;
- for a kind with a session-wide data path fixed when it opened (network):
  a changed C{allowed_targets} or a narrower protocol restriction.

Widening never closes a session: it keeps the terms it opened with.  The
allow-list check of an item's host needs DNS: L{jumpoint.reload} runs it
after this decision.  Plain decisions, no I/O but the approvals read.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from typing import Any

from jumpoint import kinds
from jumpoint.access import SessionRequest, decide
from jumpoint.approvals import ApprovalStore
from jumpoint.config import JumpointConfig
from jumpoint.policy import Grant, Restrictions
from jumpoint.session_terms import SessionTerms
from shared.errors import ConsentRequired, JumpError
from shared.items import Item

DECIDED_ITEM_FIELDS = ("jump_group", "jump_policy", "session_policy", "login_timeout")
"""The fields of an item the access rules judge: taken from the new item, then re-decided."""
IGNORED_ITEM_FIELDS = ("comments", "tag", "local_address", "source", "created_by")
"""Fields whose change does not touch an open session (its listeners are bound already)."""


@dataclass(frozen=True)
class Closing:
    """Why an open session ends at a reload: the rule that no longer holds, and a sentence."""

    rule: str
    reason: str


@dataclass(frozen=True)
class OpenSession:
    """What the decision reads of one open session."""

    user: str
    groups: tuple[str, ...]
    item: Item
    request: SessionRequest
    terms: SessionTerms
    bound_ports: tuple[int, ...] = ()


def configured_item(config: JumpointConfig, item: Item) -> Item | None:
    """The item of this name a configuration offers (a console item stays unless shadowed)."""
    named = config.item(item.name)
    if item.source == "config":
        return named
    return item if named is None else None


def _target(item: Item) -> Item:
    cleared: dict[str, Any] = {f: None for f in (*DECIDED_ITEM_FIELDS, *IGNORED_ITEM_FIELDS)}
    cleared.update(jump_group="", local_address="", source="")
    return dataclasses.replace(item, tunnels=(), **cleared)


def item_change(session_item: Item, new_item: Item | None) -> Closing | None:
    """The item was removed, or no longer reaches what the session reaches."""
    rule = f"items.{session_item.name}"
    if new_item is None:
        return Closing(rule, f"item {session_item.name!r} was removed from the configuration")
    old, new = _target(session_item), _target(new_item)
    fields = [
        f.name for f in dataclasses.fields(old) if getattr(old, f.name) != getattr(new, f.name)
    ]
    gone = [t.text() for t in session_item.tunnels if t not in new_item.tunnels]
    if gone:
        fields.append(f"tunnels ({', '.join(gone)} removed)")
    if not fields:
        return None
    return Closing(rule, f"item {session_item.name!r} changed: {', '.join(fields)}")


def _rule_of(error: JumpError, config: JumpointConfig, item: Item) -> str:
    rule = getattr(error, "rule", None)
    if rule:
        return str(rule)
    if isinstance(error, ConsentRequired):
        return f"session_policies.{item.session_policy}.recording"
    return error.code


def _decide(
    config: JumpointConfig,
    session: OpenSession,
    item: Item,
    now: float,
    approvals: ApprovalStore,
    platform: str | None,
) -> SessionTerms | Closing:
    grant = Grant.of(session.user, session.groups, config.groups)
    try:
        return decide(config, grant, item, session.request, now, approvals, platform)
    except JumpError as error:
        return Closing(_rule_of(error, config, item), error.message)


def recheck(
    old_config: JumpointConfig,
    new_config: JumpointConfig,
    session: OpenSession,
    now: float,
    approvals: ApprovalStore,
    platform: str | None = None,
) -> Closing | None:
    """None when the session still holds under C{new_config}; else why it closes."""
    new_item = configured_item(new_config, session.item)
    changed = item_change(session.item, new_item)
    if changed is not None or new_item is None:
        return changed
    old_item = configured_item(old_config, session.item) or session.item

    def as_judged(source: Item) -> Item:  # what the session uses, judged by source's rules
        return session.item.with_changes(**{f: getattr(source, f) for f in DECIDED_ITEM_FIELDS})

    before = _decide(old_config, session, as_judged(old_item), now, approvals, platform)
    after = _decide(new_config, session, as_judged(new_item), now, approvals, platform)
    if isinstance(after, Closing):
        if isinstance(before, Closing) and before.rule == after.rule:
            return None  # denied under the running configuration too: not the reload's doing
        return after
    baseline = session.terms if isinstance(before, Closing) else before
    return narrowing(baseline, after, session.bound_ports) or _link_change(
        old_config, new_config, session.item, baseline, after
    )


def _policy_rule(terms: SessionTerms, key: str, value: object, otherwise: str) -> str:
    """The session policy's rule when its C{key} gives C{value}, else C{otherwise}."""
    policy = terms.session_policy
    if policy is not None and getattr(policy, key) == value:
        return f"session_policies.{policy.name}.{key}"
    return otherwise


def _deadline_rule(terms: SessionTerms, code: str) -> str:
    jump = terms.jump_policy.name if terms.jump_policy else "?"
    if code == "schedule":
        return f"jump_policies.{jump}.schedule"
    if code == "approval_expired":
        return f"jump_policies.{jump}.approval_required"
    policy = terms.session_policy
    if policy is not None and policy.auto_close is not None:
        return f"session_policies.{policy.name}.auto_close"
    return "tunnels_restricted.auto_close.max"


def _shorter(new: float | None, old: float | None) -> bool:
    """A limit in seconds (None: no limit) that got stricter."""
    return new is not None and (old is None or new < old)


def _acl_narrowed(old: tuple[str, ...], new: tuple[str, ...]) -> bool:
    if not new:
        return False
    if not old:
        return True
    wider = [ipaddress.ip_network(n) for n in new]
    return not all(
        any(n.version == w.version and n.subnet_of(w) for w in wider)  # type: ignore[arg-type]
        for n in (ipaddress.ip_network(o) for o in old)
    )


def narrowing(
    old: SessionTerms, new: SessionTerms, bound_ports: tuple[int, ...] = ()
) -> Closing | None:
    """The first term of C{new} stricter than C{old} (both decided for the same request)."""
    name = new.item.name
    if new.recording and not old.recording:
        rule = _policy_rule(new, "recording", True, f"session_policies.{new.item.session_policy}")
        return Closing(rule, f"sessions of item {name!r} are now recorded")
    if _shorter(new.idle_timeout, old.idle_timeout):
        rule = _policy_rule(
            new, "idle_timeout", new.idle_timeout, "tunnels_restricted.idle_timeout_minutes.min"
        )
        return Closing(rule, f"the idle timeout is now {new.idle_timeout:g}s")
    earlier = {d.code: d.at for d in old.deadlines}
    for deadline in new.deadlines:
        if deadline.code not in earlier or deadline.at < earlier[deadline.code]:
            return Closing(_deadline_rule(new, deadline.code), f"new terms: {deadline.reason}")
    for key, fallback in (
        ("max_connections", "limits.max_connections_per_session"),
        ("max_udp_flows", f"session_policies.{new.item.session_policy}.max_udp_flows"),
        ("udp_idle_timeout", f"session_policies.{new.item.session_policy}.udp_idle_timeout"),
        ("login_timeout", f"items.{name}.login_timeout"),
    ):
        value, before = getattr(new, key), getattr(old, key)
        if value is not None and before is not None and value < before:
            return Closing(_policy_rule(new, key, value, fallback), f"{key} is now {value:g}")
    if new.local_ports is not None:
        outside = [p for p in bound_ports if p not in new.local_ports]
        if outside:
            return Closing(
                "tunnels_restricted.local",
                f"local port {outside[0]} is no longer allowed"
                f" (allowed: {new.local_ports.describe()})",
            )
    if _acl_narrowed(old.acl, new.acl):
        return Closing(
            "tunnels_restricted.acl",
            f"the listener ACL is now {', '.join(new.acl)} (was {', '.join(old.acl) or 'open'})",
        )
    return None


def _protocol_narrowed(old: Restrictions, new: Restrictions) -> bool:
    if new.protocol is None:
        return False
    if old.protocol is None:
        return True
    return any(old.allows_protocol(p) and not new.allows_protocol(p) for p in ("tcp", "udp"))


def _link_change(
    old_config: JumpointConfig,
    new_config: JumpointConfig,
    item: Item,
    old: SessionTerms,
    new: SessionTerms,
) -> Closing | None:
    """A session-wide data path (network) keeps the allow-list and protocols it opened with."""
    if kinds.kind_of(item).start_session is None:
        return None
    if old_config.allowed_targets != new_config.allowed_targets:
        return Closing("allowed_targets", "this Jumpoint's allowed_targets changed")
    if _protocol_narrowed(old.grant.restrictions, new.grant.restrictions):
        return Closing("tunnels_restricted.protocol", "the protocols your groups allow narrowed")
    return None
