"""Which open sessions a reload closes: L{jumpoint.session_recheck}, through the real rules."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jumpoint.access import SessionRequest, decide
from jumpoint.approvals import ApprovalStore
from jumpoint.config import JumpointConfig, parse_config
from jumpoint.policy import Grant
from jumpoint.session_recheck import Closing, OpenSession, narrowing, recheck
from jumpoint.state import StateDatabase
from shared.kinds.base import TunnelSpec

HEAD = """
jumpoint: {name: unit, listen: "127.0.0.1:7443", addresses: ["127.0.0.1"]}
"""

GROUPS = """
groups:
  default: {jump_groups: ["*"]}
  ops: {jump_groups: ["ops*"]}
"""

ITEM = """
items:
  - {name: db, type: tcp, host: 10.0.0.1, jump_group: %s, session_policy: p,
     tunnels: [{local_port: auto, remote_port: 5432}]}
"""

PATH = Path("/etc/jumpoint/jumpoint.yaml")


@pytest.fixture(scope="module")
def approvals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApprovalStore]:
    database = StateDatabase(tmp_path_factory.mktemp("recheck") / "state.db")
    yield ApprovalStore(database)
    database.close()


def config(
    policy: str = "{}", jump_group: str = "default", groups: str = GROUPS, extra: str = ""
) -> JumpointConfig:
    text = HEAD + groups + f"session_policies:\n  p: {policy}\n" + ITEM % jump_group + extra
    return parse_config(text, PATH)


def opened(
    old: JumpointConfig,
    approvals: ApprovalStore,
    request: SessionRequest | None = None,
    groups: tuple[str, ...] = ("default",),
) -> OpenSession:
    request = request or SessionRequest(item="db", consent=True)
    item = old.item("db")
    assert item is not None
    grant = Grant.of("alice", groups, old.groups)
    terms = decide(old, grant, item, request, 0.0, approvals)
    return OpenSession("alice", groups, item, request, terms)


def test_the_same_configuration_closes_nothing(approvals: ApprovalStore) -> None:
    old = config("{idle_timeout: 10m, auto_close: 1h, max_connections: 3}")
    again = config("{idle_timeout: 10m, auto_close: 1h, max_connections: 3}")
    assert recheck(old, again, opened(old, approvals), 100.0, approvals) is None


def test_a_removed_item_closes_with_its_rule(approvals: ApprovalStore) -> None:
    old = config()
    new = parse_config(HEAD + GROUPS + "session_policies: {p: {}}\n", PATH)
    verdict = recheck(old, new, opened(old, approvals), 0.0, approvals)
    assert verdict == Closing("items.db", "item 'db' was removed from the configuration")


def test_an_item_that_reaches_elsewhere_closes_one_with_a_new_tunnel_stays(
    approvals: ApprovalStore,
) -> None:
    old = config()
    moved = replace(old, items=(old.items[0].with_changes(host="10.9.9.9"),))
    verdict = recheck(old, moved, opened(old, approvals), 0.0, approvals)
    assert verdict is not None and verdict.rule == "items.db" and "host" in verdict.reason
    item = old.items[0]
    extra = TunnelSpec(local_port=None, remote_port=6543)
    wider = item.with_changes(tunnels=(*item.tunnels, extra), comments="new words")
    kept = replace(old, items=(wider,))
    assert recheck(old, kept, opened(old, approvals), 0.0, approvals) is None


def test_groups_that_no_longer_grant_the_item_close_it_with_the_groups_rule(
    approvals: ApprovalStore,
) -> None:
    old = config()
    new = config(groups="groups:\n  default: {jump_groups: ['lab*']}\n")
    verdict = recheck(old, new, opened(old, approvals), 0.0, approvals)
    assert verdict is not None and verdict.rule == "groups.jump_groups.open"


def test_a_denial_the_running_configuration_gives_too_is_not_the_reloads_doing(
    approvals: ApprovalStore,
) -> None:
    """The user's groups changed in the database since the session opened (they keep it)."""
    old = config()
    session = opened(old, approvals, groups=("default",))
    moved = OpenSession("alice", ("ops",), session.item, session.request, session.terms)
    assert recheck(old, config(), moved, 0.0, approvals) is None


def test_recording_newly_required_without_consent_names_the_policy(
    approvals: ApprovalStore,
) -> None:
    old = config()
    session = opened(old, approvals, SessionRequest(item="db"))
    verdict = recheck(old, config("{recording: true}"), session, 0.0, approvals)
    assert verdict is not None and verdict.rule == "session_policies.p.recording"


def test_a_ticket_newly_required_closes_sessions_opened_without_one(
    approvals: ApprovalStore,
) -> None:
    policies = "jump_policies:\n  t: {ticket_id_required: true}\n"
    old = config()
    new = config(extra=policies)
    item = new.items[0].with_changes(jump_policy="t")
    new = replace(new, items=(item,))
    verdict = recheck(old, new, opened(old, approvals), 0.0, approvals)
    assert verdict is not None and verdict.rule == "jump_policies.t.ticket_id_required"
    ticketed = opened(old, approvals, SessionRequest(item="db", ticket="INC-1", consent=True))
    assert recheck(old, new, ticketed, 0.0, approvals) is None


def test_a_narrower_acl_and_a_bound_port_outside_the_new_range_close(
    approvals: ApprovalStore,
) -> None:
    old = config()
    session = opened(old, approvals)
    narrowed = config(groups="groups:\n  default:\n    tunnels_restricted: {local: ['1-100']}\n")
    bound = replace(session, bound_ports=(5000,))
    verdict = recheck(old, narrowed, bound, 0.0, approvals)
    assert verdict is not None and verdict.rule == "tunnels_restricted.local"
    acl = config(groups="groups:\n  default:\n    tunnels_restricted: {acl: ['10.0.0.0/8']}\n")
    verdict = recheck(old, acl, session, 0.0, approvals)
    assert verdict is not None and verdict.rule == "tunnels_restricted.acl"


DURATIONS = st.sampled_from([None, 60, 600])
CAPS = st.sampled_from([None, 2, 10])


@st.composite
def policies(draw: st.DrawFn) -> dict[str, object]:
    return {
        "recording": draw(st.booleans()),
        "idle_timeout": draw(DURATIONS),
        "auto_close": draw(DURATIONS),
        "max_connections": draw(CAPS),
    }


def _text(policy: dict[str, object]) -> str:
    shown = {
        k: (f"{v}s" if k in ("idle_timeout", "auto_close") else str(v).lower())
        for k, v in policy.items()
        if v is not None
    }
    return "{" + ", ".join(f"{k}: {v}" for k, v in shown.items()) + "}"


def _stricter(new: object, old: object) -> bool:
    return new is not None and (old is None or new < old)  # type: ignore[operator]


@given(old=policies(), new=policies())
def test_a_session_closes_exactly_when_a_term_of_its_policy_narrowed(
    approvals: ApprovalStore, old: dict[str, object], new: dict[str, object]
) -> None:
    before, after = config(_text(old)), config(_text(new))
    session = opened(before, approvals)
    verdict = recheck(before, after, session, 30.0, approvals)
    narrowed = (new["recording"] and not old["recording"]) or any(
        _stricter(new[k], old[k]) for k in ("idle_timeout", "auto_close", "max_connections")
    )
    assert (verdict is not None) == bool(narrowed), (old, new, verdict)
    if verdict is not None:
        assert verdict.rule.startswith("session_policies.p."), verdict


@given(policy=policies())
def test_terms_never_narrow_against_themselves(
    approvals: ApprovalStore, policy: dict[str, object]
) -> None:
    session = opened(config(_text(policy)), approvals)
    assert narrowing(session.terms, session.terms, (1234,)) is None
