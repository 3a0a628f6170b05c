"""The Jumpoint's access decisions (L{jumpoint.access}), one rule at a time.

Every rule is shown allowing and denying; a denial must name its rule (as
C{AccessDenied.rule} and as C{(rule: ...)} in the message) and something
specific (the port, the group, the policy).  Time is a fixed instant,
Wednesday 2026-01-14 10:00 UTC, never the wall clock.
"""

from __future__ import annotations

import datetime
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jumpoint.access import SessionRequest, decide
from jumpoint.approvals import ApprovalStore
from jumpoint.config import JumpointConfig, parse_config
from jumpoint.dialing import check_allowed_targets
from jumpoint.policy import UNRESTRICTED, Grant, Group, Restrictions, union
from jumpoint.session_terms import Deadline, SessionTerms
from jumpoint.state import StateDatabase
from shared.addresses import AllowList, PortSet
from shared.errors import (
    AccessDenied,
    ConfigError,
    ConsentRequired,
    NotSupported,
    UnknownRequest,
    UsageError,
)
from shared.items import Item, TunnelSpec

CONFIG_PATH = Path("/etc/jumpoint/jumpoint.yaml")
BASE = 'jumpoint: {name: unit, listen: "127.0.0.1:7443", addresses: ["127.0.0.1"]}\n'
NOW = datetime.datetime(2026, 1, 14, 10, 0, tzinfo=datetime.UTC).timestamp()
"""Wednesday 2026-01-14 10:00 UTC (11:00 in Berlin, 19:00 in Tokyo)."""
HOUR = 3600.0


def utc(year: int, month: int, day: int, hour: int, minute: int) -> float:
    return datetime.datetime(year, month, day, hour, minute, tzinfo=datetime.UTC).timestamp()


def config_of(snippet: str) -> JumpointConfig:
    """A configuration: the minimal C{jumpoint:} line (line 1), then C{snippet} from line 2."""
    return parse_config(BASE + textwrap.dedent(snippet), CONFIG_PATH)


def config_error(snippet: str) -> str:
    with pytest.raises(ConfigError) as info:
        config_of(snippet)
    return info.value.message


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ApprovalStore]:
    database = StateDatabase(tmp_path / "state.db")
    yield ApprovalStore(database)
    database.close()


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApprovalStore]:
    """For property tests (hypothesis refuses function-scoped fixtures); holds no approvals."""
    database = StateDatabase(tmp_path_factory.mktemp("access") / "state.db")
    yield ApprovalStore(database)
    database.close()


def open_as(
    config: JumpointConfig,
    groups: Sequence[str],
    item_name: str,
    store: ApprovalStore,
    *,
    now: float = NOW,
    user: str = "alice",
    **request: Any,
) -> SessionTerms:
    item = config.item(item_name)
    assert item is not None, item_name
    grant = Grant.of(user, groups, config.groups)
    return decide(config, grant, item, SessionRequest(item=item_name, **request), now, store)


def denied(
    config: JumpointConfig,
    groups: Sequence[str],
    item_name: str,
    store: ApprovalStore,
    **request: Any,
) -> AccessDenied:
    with pytest.raises(AccessDenied) as info:
        open_as(config, groups, item_name, store, **request)
    return info.value


def assert_denial(error: AccessDenied, rule: str, *fragments: str) -> None:
    assert error.rule == rule
    assert f"(rule: {rule})" in str(error.message)
    for fragment in fragments:
        assert fragment in error.message, (fragment, error.message)


# -- groups ------------------------------------------------------------------

GROUPS = config_of(
    """\
    groups:
      viewers:
        jump_groups: {see: [db]}
      openers:
        jump_groups: {open: [db]}
      listed:
        jump_groups: [d*]
      others:
        jump_groups: [web]
      notunnels:
        tunnels: false
      ssh-only:
        jump_groups: [web]
        tunnels_restricted:
          remote: ["22"]
    items:
      - {name: pg, type: tcp, host: db.corp, jump_group: db, tunnels: [{remote_port: 5432}]}
    """
)


def test_a_group_that_may_only_see_may_not_open(store: ApprovalStore) -> None:
    error = denied(GROUPS, ["viewers"], "pg", store)
    assert_denial(
        error, "groups.jump_groups.open", "group viewers", "'pg'", "not open", "jump group 'db'"
    )
    assert Grant.of("alice", ["viewers"], GROUPS.groups).may_see(GROUPS.items[0])


@pytest.mark.parametrize("groups", [["openers"], ["listed"], ["viewers", "openers"]])
def test_a_group_whose_open_patterns_match_may_open(
    store: ApprovalStore, groups: list[str]
) -> None:
    terms = open_as(GROUPS, groups, "pg", store)
    assert terms.item.name == "pg"
    assert terms.grant.groups == tuple(groups)


def test_a_group_for_other_jump_groups_may_not_open(store: ApprovalStore) -> None:
    error = denied(GROUPS, ["others"], "pg", store)
    assert_denial(error, "groups.jump_groups.open", "group others", "jump group 'db'")


def test_a_user_in_no_defined_group_may_open_nothing(store: ApprovalStore) -> None:
    error = denied(GROUPS, ["removed-group"], "pg", store)
    assert error.rule == "groups.jump_groups.open"


def test_tunnels_false_denies(store: ApprovalStore) -> None:
    error = denied(GROUPS, ["notunnels"], "pg", store)
    assert_denial(error, "groups.tunnels", "group notunnels", "may not open tunnels")


def test_tunnels_true_is_the_default(store: ApprovalStore) -> None:
    terms = open_as(GROUPS, ["openers"], "pg", store)
    assert terms.grant.tunnels
    assert terms.grant.restrictions == UNRESTRICTED


def test_a_group_without_tunnels_neither_grants_nor_lifts_tunnel_restrictions(
    store: ApprovalStore,
) -> None:
    # notunnels may open everything but no tunnels; ssh-only may open tunnels to port 22
    # of web items. Together: the db item opens, under ssh-only's restrictions.
    error = denied(GROUPS, ["notunnels", "ssh-only"], "pg", store)
    assert_denial(error, "tunnels_restricted.remote", "remote port 5432", "group ssh-only")
    assert "notunnels" not in error.message


# -- tunnels_restricted: ports, schemes, protocol --------------------------

PORTS = config_of(
    """\
    groups:
      ssh:
        tunnels_restricted:
          remote: ["22"]
      high-local:
        tunnels_restricted:
          local: ["20000-20010"]
      ssh-scheme:
        tunnels_restricted:
          scheme: [SSH]
      udp-only:
        tunnels_restricted:
          protocol: [udp]
      tcp-udp:
        tunnels_restricted:
          protocol: [tcp-udp]
      tcp-only:
        tunnels_restricted:
          protocol: [tcp]
    items:
      - {name: ssh22, type: tcp, host: h, tunnels: [{remote_port: 22}]}
      - {name: pg, type: tcp, host: h, tunnels: [{remote_port: 5432}]}
      - {name: mixed, type: tcp, host: h, tunnels: [{remote_port: 22}, {remote_port: 5432}]}
      - {name: fixed-in, type: tcp, host: h, tunnels: [{local_port: 20005, remote_port: 22}]}
      - {name: fixed-out, type: tcp, host: h, tunnels: [{local_port: 30000, remote_port: 22}]}
      - {name: auto, type: tcp, host: h, tunnels: [{local_port: auto, remote_port: 22}]}
      - {name: ssh-alt, type: tcp, host: h, tunnels: [{remote_port: 2222, scheme: ssh}]}
      - {name: web, type: tcp, host: h, tunnels: [{remote_port: 80}]}
      - {name: odd, type: tcp, host: h, tunnels: [{remote_port: 8081}]}
      - {name: http-on-22, type: tcp, host: h, tunnels: [{remote_port: 22, scheme: http}]}
      - {name: dns, type: tcp, host: h, tunnels: [{remote_port: 53, protocol: udp}]}
      - {name: statsd, type: tcp, host: h, tunnels: [{remote_port: 8125, protocol: tcp-udp}]}
      - {name: dns-and-ssh, type: tcp, host: h,
         tunnels: [{remote_port: 22}, {remote_port: 53, protocol: udp}]}
    """
)


def test_remote_allows_a_listed_port(store: ApprovalStore) -> None:
    terms = open_as(PORTS, ["ssh"], "ssh22", store)
    assert terms.item.remote_ports == {22}


@pytest.mark.parametrize("item", ["pg", "mixed"])
def test_remote_denies_an_unlisted_port(store: ApprovalStore, item: str) -> None:
    error = denied(PORTS, ["ssh"], item, store)
    assert_denial(
        error, "tunnels_restricted.remote", "remote port 5432", "group ssh", "(allowed: 22)"
    )


def test_local_allows_a_fixed_port_inside(store: ApprovalStore) -> None:
    terms = open_as(PORTS, ["high-local"], "fixed-in", store)
    assert terms.local_ports == PortSet(((20000, 20010),))


def test_local_denies_a_fixed_port_outside(store: ApprovalStore) -> None:
    error = denied(PORTS, ["high-local"], "fixed-out", store)
    assert_denial(
        error,
        "tunnels_restricted.local",
        "local port 30000",
        "group high-local",
        "(allowed: 20000-20010)",
    )


def test_local_auto_passes_and_the_terms_carry_the_allowed_ports(store: ApprovalStore) -> None:
    terms = open_as(PORTS, ["high-local"], "auto", store)
    assert terms.local_ports == PortSet(((20000, 20010),))
    (tunnel,) = terms.tunnels_json()
    assert tunnel["local_port"] == "auto"
    assert tunnel["allowed_local_ports"] == "20000-20010"


def test_unrestricted_local_ports_are_not_sent(store: ApprovalStore) -> None:
    terms = open_as(PORTS, ["ssh"], "ssh22", store)
    assert terms.local_ports is None
    assert "allowed_local_ports" not in terms.tunnels_json()[0]


@pytest.mark.parametrize(
    "item",
    [
        "ssh-alt",  # explicit scheme on an unusual port
        "ssh22",  # the well-known scheme of port 22
    ],
)
def test_scheme_allows_explicit_and_well_known_schemes(store: ApprovalStore, item: str) -> None:
    terms = open_as(PORTS, ["ssh-scheme"], item, store)
    assert terms.item.tunnels[0].effective_scheme == "ssh"


@pytest.mark.parametrize(
    ("item", "shown"),
    [
        ("web", "scheme http"),  # well-known port 80
        ("odd", "scheme unknown"),  # no scheme at all
        ("http-on-22", "scheme http"),  # an explicit scheme beats the port's
    ],
)
def test_scheme_denies_other_schemes(store: ApprovalStore, item: str, shown: str) -> None:
    error = denied(PORTS, ["ssh-scheme"], item, store)
    assert_denial(error, "tunnels_restricted.scheme", shown, "group ssh-scheme", "(allowed: ssh)")


def test_protocol_udp_only_denies_tcp_items(store: ApprovalStore) -> None:
    error = denied(PORTS, ["udp-only"], "ssh22", store)
    assert_denial(error, "tunnels_restricted.protocol", "udp tunnels only", "'ssh22' is tcp")


@pytest.mark.parametrize("group", ["tcp-udp", "tcp-only"])
def test_protocol_tcp_or_tcp_udp_allows_tcp_items(store: ApprovalStore, group: str) -> None:
    assert open_as(PORTS, [group], "ssh22", store).item.name == "ssh22"


def test_protocol_union_of_udp_and_tcp_allows_tcp(store: ApprovalStore) -> None:
    terms = open_as(PORTS, ["udp-only", "tcp-only"], "ssh22", store)
    assert terms.grant.restrictions.protocol == frozenset({"udp", "tcp"})


@pytest.mark.parametrize(
    ("groups", "item"),
    [
        (["udp-only"], "dns"),
        (["tcp-udp"], "dns"),
        (["tcp-udp"], "statsd"),
        (["udp-only", "tcp-only"], "statsd"),
        (["udp-only", "tcp-only"], "dns-and-ssh"),
    ],
)
def test_protocol_judges_each_pair_by_its_own_protocol(
    store: ApprovalStore, groups: list[str], item: str
) -> None:
    assert open_as(PORTS, groups, item, store).item.name == item


@pytest.mark.parametrize(
    ("groups", "item", "shown"),
    [
        (["tcp-only"], "dns", "tunnel auto:53/udp of item 'dns' is udp"),
        (["tcp-only"], "statsd", "tunnel auto:8125/tcp-udp of item 'statsd' is tcp-udp"),
        (["udp-only"], "statsd", "tunnel auto:8125/tcp-udp of item 'statsd' is tcp-udp"),
        (["tcp-only"], "dns-and-ssh", "tunnel auto:53/udp of item 'dns-and-ssh' is udp"),
        (["udp-only"], "dns-and-ssh", "tunnel auto:22 of item 'dns-and-ssh' is tcp"),
    ],
)
def test_protocol_denies_a_pair_of_another_protocol(
    store: ApprovalStore, groups: list[str], item: str, shown: str
) -> None:
    error = denied(PORTS, groups, item, store)
    assert_denial(error, "tunnels_restricted.protocol", shown, "tunnels only")


def test_a_udp_pair_has_no_well_known_scheme(store: ApprovalStore) -> None:
    error = denied(PORTS, ["ssh-scheme"], "dns", store)
    assert_denial(error, "tunnels_restricted.scheme", "scheme unknown")


def test_the_session_terms_carry_each_pair_s_protocol(store: ApprovalStore) -> None:
    terms = open_as(PORTS, ["tcp-udp"], "dns-and-ssh", store)
    assert [t["protocol"] for t in terms.tunnels_json()] == ["tcp", "udp"]


@pytest.mark.parametrize("key", ["remote", "scheme", "protocol"])
def test_an_empty_restriction_list_removes_that_restriction(store: ApprovalStore, key: str) -> None:
    """The issue's rule (as in RPort): an omitted or empty list removes that restriction."""
    snippet = f"""\
    groups:
      g:
        tunnels_restricted:
          {key}: []
    items:
      - {{name: ssh22, type: tcp, host: h, tunnels: [{{remote_port: 22}}]}}
    """
    config = config_of(snippet)
    assert open_as(config, ["g"], "ssh22", store).item.name == "ssh22"


# -- tunnels_restricted.acl -------------------------------------------------

ACL = config_of(
    """\
    groups:
      free: {}
      office:
        tunnels_restricted:
          acl: [10.0.0.0/8]
      lab:
        tunnels_restricted:
          acl: [192.168.0.0/16]
    items:
      - {name: ssh, type: tcp, host: h, tunnels: [{remote_port: 22}]}
      - {name: ssh5, type: tcp, host: h, local_address: 127.0.0.5, tunnels: [{remote_port: 22}]}
    """
)


def test_acl_a_non_loopback_listener_without_an_acl_is_denied(store: ApprovalStore) -> None:
    error = denied(ACL, ["free"], "ssh", store, local_address="0.0.0.0")
    assert_denial(error, "tunnels_restricted.acl", "0.0.0.0", "not loopback", "needs an acl")
    assert error.hint is not None and "--acl" in error.hint


def test_acl_a_non_loopback_listener_with_an_acl_is_allowed(store: ApprovalStore) -> None:
    terms = open_as(ACL, ["free"], "ssh", store, local_address="0.0.0.0", acl=("10.1.2.0/24",))
    assert (terms.local_address, terms.acl) == ("0.0.0.0", ("10.1.2.0/24",))
    assert terms.tunnels_json()[0]["local_address"] == "0.0.0.0"


def test_acl_a_requested_acl_inside_the_groups_is_allowed(store: ApprovalStore) -> None:
    terms = open_as(
        ACL, ["office"], "ssh", store, local_address="10.0.0.1", acl=("10.1.0.0/16", "10.2.3.4")
    )
    assert terms.acl == ("10.1.0.0/16", "10.2.3.4/32")


def test_acl_the_groups_acl_applies_when_none_is_requested(store: ApprovalStore) -> None:
    terms = open_as(ACL, ["office"], "ssh", store, local_address="10.0.0.1")
    assert terms.acl == ("10.0.0.0/8",)


@pytest.mark.parametrize("wide", ["0.0.0.0/0", "10.0.0.0/7", "192.168.1.0/24", "::/0"])
def test_acl_a_requested_acl_wider_than_the_groups_is_denied(
    store: ApprovalStore, wide: str
) -> None:
    error = denied(ACL, ["office"], "ssh", store, local_address="10.0.0.1", acl=(wide,))
    assert_denial(error, "tunnels_restricted.acl", f"acl {wide}", "group office", "10.0.0.0/8")


def test_acl_loopback_needs_none(store: ApprovalStore) -> None:
    terms = open_as(ACL, ["free"], "ssh5", store)
    assert (terms.local_address, terms.acl) == ("127.0.0.5", ())
    terms = open_as(ACL, ["free"], "ssh", store, local_address="127.9.9.9")
    assert (terms.local_address, terms.acl) == ("127.9.9.9", ())


def test_acl_even_on_loopback_a_requested_acl_must_be_inside_the_groups(
    store: ApprovalStore,
) -> None:
    error = denied(ACL, ["office"], "ssh5", store, acl=("0.0.0.0/0",))
    assert_denial(error, "tunnels_restricted.acl", "acl 0.0.0.0/0")


def test_acl_union_of_two_groups_allows_either_network(store: ApprovalStore) -> None:
    request: dict[str, Any] = {"local_address": "0.0.0.0", "acl": ("192.168.7.0/24",)}
    assert_denial(denied(ACL, ["office"], "ssh", store, **request), "tunnels_restricted.acl")
    terms = open_as(ACL, ["office", "lab"], "ssh", store, **request)
    assert terms.acl == ("192.168.7.0/24",)
    # nothing requested: the union of both groups' networks
    assert open_as(ACL, ["office", "lab"], "ssh", store, local_address="0.0.0.0").acl == (
        "10.0.0.0/8",
        "192.168.0.0/16",
    )


def test_acl_a_group_without_an_acl_lifts_it(store: ApprovalStore) -> None:
    terms = open_as(
        ACL, ["office", "free"], "ssh", store, local_address="0.0.0.0", acl=("0.0.0.0/0",)
    )
    assert terms.acl == ("0.0.0.0/0",)


@pytest.mark.parametrize(
    ("request_fields", "shown"),
    [
        ({"local_address": "my-laptop"}, "'my-laptop' is not an IP address"),
        ({"acl": ("10.0.0.0/33",)}, "acl entry '10.0.0.0/33' is not an IP address or CIDR"),
    ],
)
def test_acl_malformed_addresses_are_denied(
    store: ApprovalStore, request_fields: dict[str, Any], shown: str
) -> None:
    error = denied(ACL, ["free"], "ssh", store, **request_fields)
    assert_denial(error, "tunnels_restricted.acl", shown)


# -- idle timeout --------------------------------------------------------------

IDLE = config_of(
    """\
    groups:
      min10:
        tunnels_restricted:
          idle_timeout_minutes: {min: 10}
      min30:
        tunnels_restricted:
          idle_timeout_minutes: {min: 30}
      skipper:
        tunnels_restricted:
          skip_idle_timeout: true
      restricted:
        tunnels_restricted:
          remote: ["22"]
      free: {}
      min0:
        tunnels_restricted:
          idle_timeout_minutes: {min: 0}
      min10-skip:
        tunnels_restricted:
          idle_timeout_minutes: {min: 10}
          skip_idle_timeout: true
    session_policies:
      quiet: {idle_timeout: 15m}
    items:
      - {name: ssh, type: tcp, host: h, tunnels: [{remote_port: 22}]}
      - {name: quiet-ssh, type: tcp, host: h, tunnels: [{remote_port: 22}], session_policy: quiet}
    """
)


def test_idle_min_denies_a_shorter_request(store: ApprovalStore) -> None:
    error = denied(IDLE, ["min10"], "ssh", store, idle_timeout=300)
    assert_denial(
        error,
        "tunnels_restricted.idle_timeout_minutes.min",
        "idle timeout of 5m",
        "shorter than the 10m",
        "group min10",
    )


@pytest.mark.parametrize("seconds", [600.0, 601.0, 7200.0])
def test_idle_min_allows_a_request_at_or_above_it(store: ApprovalStore, seconds: float) -> None:
    assert open_as(IDLE, ["min10"], "ssh", store, idle_timeout=seconds).idle_timeout == seconds


def test_idle_min_is_applied_when_nothing_is_requested(store: ApprovalStore) -> None:
    assert open_as(IDLE, ["min10"], "ssh", store).idle_timeout == 600.0
    assert open_as(IDLE, ["min10"], "ssh", store).to_json()["idle_timeout"] == 600.0


def test_no_idle_timeout_at_all_without_a_minimum_or_policy(store: ApprovalStore) -> None:
    assert open_as(IDLE, ["restricted"], "ssh", store).idle_timeout is None


@pytest.mark.parametrize("group", ["min10", "restricted"])
def test_turning_the_idle_timeout_off_needs_skip_idle_timeout(
    store: ApprovalStore, group: str
) -> None:
    error = denied(IDLE, [group], "ssh", store, idle_timeout=0)
    assert_denial(
        error, "tunnels_restricted.skip_idle_timeout", f"group {group}", "may not turn the idle"
    )


@pytest.mark.parametrize("group", ["skipper", "free", "min10-skip"])
def test_skip_idle_timeout_allows_turning_it_off(store: ApprovalStore, group: str) -> None:
    # a group without tunnels_restricted is unrestricted, which includes skip_idle_timeout
    assert open_as(IDLE, [group], "ssh", store, idle_timeout=0).idle_timeout is None


def test_idle_min_still_binds_a_group_with_skip_idle_timeout(store: ApprovalStore) -> None:
    error = denied(IDLE, ["min10-skip"], "ssh", store, idle_timeout=60)
    assert error.rule == "tunnels_restricted.idle_timeout_minutes.min"


def test_idle_min_is_applied_by_default_even_with_skip_idle_timeout(
    store: ApprovalStore,
) -> None:
    assert open_as(IDLE, ["min10-skip"], "ssh", store).idle_timeout == 600.0


def test_idle_min_zero_does_not_close_sessions_at_once(store: ApprovalStore) -> None:
    idle = open_as(IDLE, ["min0"], "ssh", store).idle_timeout
    assert idle is None or idle > 0


def test_session_policy_idle_timeout_is_used_by_default(store: ApprovalStore) -> None:
    assert open_as(IDLE, ["restricted"], "quiet-ssh", store).idle_timeout == 900.0
    # also over a group's (longer) minimum: the policy is the item's
    assert open_as(IDLE, ["min30"], "quiet-ssh", store).idle_timeout == 900.0


def test_session_policy_idle_timeout_allows_a_shorter_request(store: ApprovalStore) -> None:
    assert open_as(IDLE, ["min10"], "quiet-ssh", store, idle_timeout=600).idle_timeout == 600


def test_session_policy_idle_timeout_denies_a_longer_request(store: ApprovalStore) -> None:
    error = denied(IDLE, ["min10"], "quiet-ssh", store, idle_timeout=1200)
    assert_denial(
        error,
        "session_policies.quiet.idle_timeout",
        "idle timeout of 20m",
        "15m",
        "session policy 'quiet'",
    )


def test_skip_idle_timeout_does_not_switch_off_a_session_policy(store: ApprovalStore) -> None:
    error = denied(IDLE, ["free"], "quiet-ssh", store, idle_timeout=0)
    assert_denial(
        error,
        "session_policies.quiet.idle_timeout",
        "15m",
        "session policy 'quiet'",
        "cannot be turned off",
    )


@pytest.mark.parametrize("key", ["idle_timeout", "auto_close"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_request_with_a_non_finite_duration_is_refused(key: str, value: float) -> None:
    # json.loads accepts NaN and Infinity; NaN passes every comparison of the rules
    with pytest.raises(UsageError, match=f"{key} must be a finite number"):
        SessionRequest.from_message({"item": "ssh", key: value})


def test_a_request_from_a_message() -> None:
    request = SessionRequest.from_message(
        {"item": "ssh", "idle_timeout": 600, "auto_close": 1800, "acl": ["10.0.0.0/8"]}
    )
    assert request == SessionRequest(
        item="ssh", idle_timeout=600.0, auto_close=1800.0, acl=("10.0.0.0/8",)
    )
    assert SessionRequest.from_message({"item": "ssh"}) == SessionRequest(item="ssh")


# -- auto close ------------------------------------------------------------------

AUTO = config_of(
    """\
    groups:
      max1h:
        tunnels_restricted:
          auto_close: {max: 1h}
      max4h:
        tunnels_restricted:
          auto_close: {max: 4h}
      min30m:
        tunnels_restricted:
          auto_close: {min: 30m}
      free: {}
    session_policies:
      short: {auto_close: 2h}
      long: {auto_close: 8h}
    items:
      - {name: ssh, type: tcp, host: h, tunnels: [{remote_port: 22}]}
      - {name: short-ssh, type: tcp, host: h, tunnels: [{remote_port: 22}], session_policy: short}
      - {name: long-ssh, type: tcp, host: h, tunnels: [{remote_port: 22}], session_policy: long}
    """
)


def auto_close_deadlines(terms: SessionTerms) -> list[float]:
    return [d.at for d in terms.deadlines if d.code == "auto_close"]


def test_auto_close_max_denies_a_longer_request(store: ApprovalStore) -> None:
    error = denied(AUTO, ["max1h"], "ssh", store, auto_close=2 * HOUR)
    assert_denial(
        error,
        "tunnels_restricted.auto_close.max",
        "auto-close of 2h",
        "longer than the 1h",
        "group max1h",
    )


def test_auto_close_max_allows_a_shorter_request(store: ApprovalStore) -> None:
    terms = open_as(AUTO, ["max1h"], "ssh", store, auto_close=1800)
    assert terms.deadlines == (
        Deadline(
            NOW + 1800, "auto_close", "the session's maximum lifetime of 30m ran out (auto_close)"
        ),
    )


def test_auto_close_max_is_applied_when_nothing_is_requested(store: ApprovalStore) -> None:
    terms = open_as(AUTO, ["max1h"], "ssh", store)
    assert auto_close_deadlines(terms) == [NOW + HOUR]
    assert terms.to_json()["closes_at"] == NOW + HOUR
    assert "1h" in terms.to_json()["closes_because"]


def test_auto_close_min_denies_a_shorter_request(store: ApprovalStore) -> None:
    error = denied(AUTO, ["min30m"], "ssh", store, auto_close=600)
    assert_denial(
        error,
        "tunnels_restricted.auto_close.min",
        "auto-close of 10m",
        "shorter than the 30m",
        "group min30m",
    )


def test_auto_close_min_allows_a_longer_request_and_no_lifetime(store: ApprovalStore) -> None:
    assert auto_close_deadlines(open_as(AUTO, ["min30m"], "ssh", store, auto_close=2700)) == [
        NOW + 2700
    ]
    assert open_as(AUTO, ["min30m"], "ssh", store).deadlines == ()


@pytest.mark.parametrize("value", [0, -5])
def test_auto_close_must_be_positive(store: ApprovalStore, value: float) -> None:
    error = denied(AUTO, ["free"], "ssh", store, auto_close=value)
    assert_denial(error, "auto_close", "positive duration")


def test_session_policy_auto_close_is_the_default_lifetime(store: ApprovalStore) -> None:
    terms = open_as(AUTO, ["free"], "short-ssh", store)
    assert auto_close_deadlines(terms) == [NOW + 2 * HOUR]
    assert terms.session_policy is not None and terms.session_policy.name == "short"


def test_session_policy_auto_close_allows_a_shorter_request(store: ApprovalStore) -> None:
    terms = open_as(AUTO, ["free"], "short-ssh", store, auto_close=HOUR)
    assert auto_close_deadlines(terms) == [NOW + HOUR]


def test_session_policy_auto_close_denies_a_longer_request(store: ApprovalStore) -> None:
    error = denied(AUTO, ["free"], "short-ssh", store, auto_close=3 * HOUR)
    assert_denial(
        error,
        "session_policies.short.auto_close",
        "auto-close of 3h",
        "2h maximum lifetime",
        "session policy 'short'",
    )


def test_session_policy_auto_close_inside_the_groups_max(store: ApprovalStore) -> None:
    assert auto_close_deadlines(open_as(AUTO, ["max4h"], "short-ssh", store)) == [NOW + 2 * HOUR]


def test_a_groups_auto_close_max_shortens_a_longer_session_policy(store: ApprovalStore) -> None:
    assert auto_close_deadlines(open_as(AUTO, ["max1h"], "long-ssh", store)) == [NOW + HOUR]


# -- the union over several groups -------------------------------------------

UNION = config_of(
    """\
    groups:
      ssh-high:
        tunnels_restricted:
          remote: ["22"]
          local: ["20000-20010"]
          idle_timeout_minutes: {min: 30}
          auto_close: {max: 1h, min: 20m}
          terminate_foreign_tunnels: true
      postgres:
        tunnels_restricted:
          remote: ["5432"]
          idle_timeout_minutes: {min: 10}
          auto_close: {max: 4h}
      local-only:
        tunnels_restricted:
          local: ["20000-20010"]
      free: {}
    items:
      - name: both
        type: tcp
        host: h
        tunnels:
          - {local_port: 20005, remote_port: 22}
          - {local_port: 15432, remote_port: 5432}
      - {name: pg, type: tcp, host: h, tunnels: [{remote_port: 5432}]}
    """
)


def test_union_allows_what_neither_group_allows_alone(store: ApprovalStore) -> None:
    only_a = denied(UNION, ["ssh-high"], "both", store)
    assert_denial(only_a, "tunnels_restricted.remote", "remote port 5432", "group ssh-high")
    only_b = denied(UNION, ["postgres"], "both", store)
    assert_denial(only_b, "tunnels_restricted.remote", "remote port 22", "group postgres")
    terms = open_as(UNION, ["ssh-high", "postgres"], "both", store)
    assert terms.grant.restrictions.remote == PortSet(((22, 22), (5432, 5432)))
    assert terms.local_ports is None  # postgres does not restrict local ports
    assert terms.grant.tunnel_groups == ("ssh-high", "postgres")


def test_union_denial_names_every_group(store: ApprovalStore) -> None:
    error = denied(UNION, ["ssh-high", "local-only"], "both", store)
    assert_denial(error, "tunnels_restricted.local", "groups ssh-high, local-only")


def test_union_a_group_without_the_restriction_lifts_it(store: ApprovalStore) -> None:
    assert_denial(denied(UNION, ["ssh-high"], "pg", store), "tunnels_restricted.remote")
    # local-only restricts tunnels, but not their remote ports
    terms = open_as(UNION, ["ssh-high", "local-only"], "pg", store)
    assert terms.grant.restrictions.remote is None
    assert terms.local_ports == PortSet(((20000, 20010),))
    # a group with no tunnels_restricted at all lifts everything (and ssh-high's
    # terminate_foreign_tunnels permission stays)
    lifted = open_as(UNION, ["ssh-high", "free"], "both", store).grant.restrictions
    assert lifted == replace(UNRESTRICTED, terminate_foreign_tunnels=True)


def test_union_takes_the_lowest_idle_minimum(store: ApprovalStore) -> None:
    groups = ["ssh-high", "postgres"]
    assert open_as(UNION, groups, "both", store).idle_timeout == 600.0
    assert open_as(UNION, groups, "both", store, idle_timeout=900).idle_timeout == 900
    error = denied(UNION, groups, "both", store, idle_timeout=300)
    assert_denial(error, "tunnels_restricted.idle_timeout_minutes.min", "10m")


def test_union_takes_the_highest_auto_close_max_and_lowest_min(store: ApprovalStore) -> None:
    both = ["ssh-high", "postgres"]
    assert auto_close_deadlines(open_as(UNION, both, "both", store)) == [NOW + 4 * HOUR]
    assert auto_close_deadlines(open_as(UNION, both, "both", store, auto_close=3 * HOUR)) == [
        NOW + 3 * HOUR
    ]
    # postgres sets no auto_close.min, which lifts ssh-high's 20m
    assert auto_close_deadlines(open_as(UNION, both, "both", store, auto_close=60)) == [NOW + 60]
    error = denied(UNION, both, "both", store, auto_close=5 * HOUR)
    assert_denial(error, "tunnels_restricted.auto_close.max", "4h")


def test_union_terminate_foreign_tunnels_if_any_group_has_it() -> None:
    def grant(*names: str) -> Grant:
        return Grant.of("alice", names, UNION.groups)

    assert grant("ssh-high").restrictions.terminate_foreign_tunnels
    assert not grant("postgres").restrictions.terminate_foreign_tunnels
    assert grant("postgres", "ssh-high").restrictions.terminate_foreign_tunnels
    assert not grant("postgres", "local-only").restrictions.terminate_foreign_tunnels


def test_union_of_nothing_is_unrestricted() -> None:
    assert union([]) == UNRESTRICTED
    assert union([Restrictions(remote=PortSet(((22, 22),)))]).remote == PortSet(((22, 22),))


PROPERTY_CONFIG = config_of("items: []\n")

optional_ports = st.one_of(st.none(), st.frozensets(st.integers(1, 30), max_size=6))


def port_set(ports: frozenset[int] | None) -> PortSet | None:
    return None if ports is None else PortSet(tuple((p, p) for p in ports))


def allowed_by(groups: list[frozenset[int] | None], port: int) -> bool:
    return any(ports is None or port in ports for ports in groups)


@given(
    remote=st.lists(optional_ports, min_size=1, max_size=3),
    local=st.lists(optional_ports, min_size=1, max_size=3),
    remote_port=st.integers(1, 30),
    local_port=st.one_of(st.none(), st.integers(1, 30)),
)
def test_union_allows_a_port_iff_some_group_allows_it(
    shared_store: ApprovalStore,
    remote: list[frozenset[int] | None],
    local: list[frozenset[int] | None],
    remote_port: int,
    local_port: int | None,
) -> None:
    count = max(len(remote), len(local))
    remote = (remote * count)[:count]
    local = (local * count)[:count]
    groups = {
        f"g{i}": Group(f"g{i}", restrictions=Restrictions(remote=port_set(r), local=port_set(lo)))
        for i, (r, lo) in enumerate(zip(remote, local, strict=True))
    }
    grant = Grant.of("alice", list(groups), groups)
    item = Item(name="x", type="tcp", host="h", tunnels=(TunnelSpec(local_port, remote_port),))
    remote_ok = allowed_by(remote, remote_port)
    local_ok = local_port is None or allowed_by(local, local_port)
    try:
        decide(PROPERTY_CONFIG, grant, item, SessionRequest("x"), NOW, shared_store)
    except AccessDenied as error:
        assert not (remote_ok and local_ok)
        expected = "tunnels_restricted.remote" if not remote_ok else "tunnels_restricted.local"
        assert error.rule == expected
    else:
        assert remote_ok and local_ok


@given(
    minimums=st.lists(st.one_of(st.none(), st.integers(0, 120)), min_size=1, max_size=4),
    maximums=st.lists(st.one_of(st.none(), st.integers(1, 600)), min_size=1, max_size=4),
    skips=st.lists(st.booleans(), min_size=1, max_size=4),
)
def test_union_of_timeouts_and_permissions(
    minimums: list[int | None], maximums: list[int | None], skips: list[bool]
) -> None:
    count = max(len(minimums), len(maximums), len(skips))
    parts = [
        Restrictions(
            idle_timeout_min=(minimums * count)[i],
            auto_close_max=(maximums * count)[i],
            skip_idle_timeout=(skips * count)[i],
            terminate_foreign_tunnels=not (skips * count)[i],
        )
        for i in range(count)
    ]
    result = union(parts)
    idle = [p.idle_timeout_min for p in parts]
    high = [p.auto_close_max for p in parts]
    present_idle = [v for v in idle if v is not None]
    present_high = [v for v in high if v is not None]
    assert result.idle_timeout_min == (min(present_idle) if len(present_idle) == count else None)
    assert result.auto_close_max == (max(present_high) if len(present_high) == count else None)
    assert result.skip_idle_timeout == any(p.skip_idle_timeout for p in parts)
    assert result.terminate_foreign_tunnels == any(p.terminate_foreign_tunnels for p in parts)
    assert union(list(reversed(parts))) == result


# -- jump policies: schedule, ticket, approval ---------------------------------

POLICIES = config_of(
    """\
    groups:
      ops: {}
      approvers: {}
    jump_policies:
      berlin:
        schedule:
          timezone: Europe/Berlin
          windows:
            - {days: [mon-fri], start: "09:00", end: "17:00"}
      berlin-strict:
        schedule:
          timezone: Europe/Berlin
          strict: true
          windows:
            - {days: [mon-fri], start: "09:00", end: "17:00"}
      tokyo:
        schedule:
          timezone: Asia/Tokyo
          windows:
            - {days: [mon-fri], start: "09:00", end: "18:00"}
      utc:
        schedule:
          timezone: UTC
          windows:
            - {days: [mon-fri], start: "09:00", end: "18:00"}
      always:
        schedule:
          timezone: Europe/Berlin
          strict: true
          windows:
            - {days: [mon-sun], start: "00:00", end: "24:00"}
      ticketed:
        ticket_id_required: true
      patterned:
        ticket_id_pattern: "[A-Z]+-[0-9]+"
      gated:
        approval_required: true
        approver_group: approvers
    session_policies:
      recorded: {recording: true}
      capped: {max_connections: 4}
      wide: {max_connections: 200}
    items:
      - {name: berlin, type: tcp, host: h, tunnels: [{remote_port: 22}], jump_policy: berlin}
      - {name: berlin-strict, type: tcp, host: h, tunnels: [{remote_port: 22}], jump_policy: berlin-strict}
      - {name: tokyo, type: tcp, host: h, tunnels: [{remote_port: 22}], jump_policy: tokyo}
      - {name: utc, type: tcp, host: h, tunnels: [{remote_port: 22}], jump_policy: utc}
      - {name: always, type: tcp, host: h, tunnels: [{remote_port: 22}], jump_policy: always}
      - {name: ticketed, type: tcp, host: h, tunnels: [{remote_port: 22}], jump_policy: ticketed}
      - {name: patterned, type: tcp, host: h, tunnels: [{remote_port: 22}], jump_policy: patterned}
      - {name: vault, type: tcp, host: h, tunnels: [{remote_port: 8200}], jump_policy: gated}
      - {name: other, type: tcp, host: h, tunnels: [{remote_port: 8200}], jump_policy: gated}
      - {name: recorded, type: tcp, host: h, tunnels: [{remote_port: 22}], session_policy: recorded}
      - {name: capped, type: tcp, host: h, tunnels: [{remote_port: 22}], session_policy: capped}
      - {name: wide, type: tcp, host: h, tunnels: [{remote_port: 22}], session_policy: wide}
      - {name: plain, type: tcp, host: h, tunnels: [{remote_port: 22}]}
    """
)


def test_schedule_inside_a_window_is_allowed(store: ApprovalStore) -> None:
    terms = open_as(POLICIES, ["ops"], "berlin", store)  # 11:00 in Berlin
    assert terms.deadlines == ()
    assert terms.jump_policy is not None and terms.jump_policy.name == "berlin"


def test_a_strict_schedule_adds_a_deadline_at_the_window_end(store: ApprovalStore) -> None:
    terms = open_as(POLICIES, ["ops"], "berlin-strict", store)
    (deadline,) = terms.deadlines
    assert deadline.at == utc(2026, 1, 14, 16, 0)  # 17:00 CET
    assert deadline.code == "schedule"
    assert "2026-01-14T17:00+01:00" in deadline.reason
    assert "'berlin-strict'" in deadline.reason


def test_a_strict_schedule_that_never_closes_adds_no_deadline(store: ApprovalStore) -> None:
    assert open_as(POLICIES, ["ops"], "always", store).deadlines == ()


def test_schedule_outside_the_windows_is_denied_with_the_next_opening(
    store: ApprovalStore,
) -> None:
    # 10:00 UTC is 19:00 in Tokyo: closed until Thursday 09:00 there
    error = denied(POLICIES, ["ops"], "tokyo", store)
    assert_denial(
        error,
        "jump_policies.tokyo.schedule",
        "jump policy 'tokyo'",
        "mon-fri 09:00-18:00 (Asia/Tokyo)",
        "next opening 2026-01-15T09:00+09:00",
    )
    # the same window in UTC is open: the zone matters
    assert open_as(POLICIES, ["ops"], "utc", store).item.name == "utc"


def test_schedule_in_berlin_after_hours_is_denied(store: ApprovalStore) -> None:
    evening = utc(2026, 1, 14, 16, 30)  # 17:30 CET
    with pytest.raises(AccessDenied) as info:
        open_as(POLICIES, ["ops"], "berlin", store, now=evening)
    assert_denial(info.value, "jump_policies.berlin.schedule", "2026-01-15T09:00+01:00")
    # one minute before the end it is still open
    assert open_as(POLICIES, ["ops"], "berlin", store, now=utc(2026, 1, 14, 15, 59)).deadlines == ()


@pytest.mark.parametrize("ticket", [None, ""])
def test_ticket_missing_is_denied(store: ApprovalStore, ticket: str | None) -> None:
    error = denied(POLICIES, ["ops"], "ticketed", store, ticket=ticket)
    assert_denial(
        error, "jump_policies.ticketed.ticket_id_required", "jump policy 'ticketed'", "ticket ID"
    )
    assert error.hint is not None and "--ticket" in error.hint


def test_ticket_present_passes_and_is_kept(store: ApprovalStore) -> None:
    assert open_as(POLICIES, ["ops"], "ticketed", store, ticket="anything").ticket == "anything"


def test_a_ticket_pattern_implies_ticket_id_required(store: ApprovalStore) -> None:
    error = denied(POLICIES, ["ops"], "patterned", store)
    assert error.rule == "jump_policies.patterned.ticket_id_required"


@pytest.mark.parametrize("ticket", ["abc", "OPS-12x", "x OPS-12", "OPS-"])
def test_ticket_malformed_is_denied(store: ApprovalStore, ticket: str) -> None:
    error = denied(POLICIES, ["ops"], "patterned", store, ticket=ticket)
    assert_denial(
        error,
        "jump_policies.patterned.ticket_id_pattern",
        repr(ticket),
        "jump policy 'patterned'",
        "[A-Z]+-[0-9]+",
    )


def test_ticket_matching_the_pattern_passes(store: ApprovalStore) -> None:
    assert open_as(POLICIES, ["ops"], "patterned", store, ticket="OPS-123").ticket == "OPS-123"


def test_a_blank_ticket_is_missing(store: ApprovalStore) -> None:
    error = denied(POLICIES, ["ops"], "ticketed", store, ticket="   ")
    assert error.rule == "jump_policies.ticketed.ticket_id_required"


def request_vault(
    store: ApprovalStore, *, user: str = "alice", item: str = "vault", at: float = NOW - HOUR
) -> int:
    """A pending request for 2 hours of access, which times out 24 hours after C{at}."""
    return store.request(user, item, "rotate keys", 2 * HOUR, 24 * HOUR, at).id


def test_approval_none_is_denied_with_a_hint(store: ApprovalStore) -> None:
    error = denied(POLICIES, ["ops"], "vault", store)
    assert_denial(
        error,
        "jump_policies.gated.approval_required",
        "'vault'",
        "jump policy 'gated'",
        "no approved request",
    )
    assert error.hint is not None and "jump request vault" in error.hint


def test_approval_pending_is_denied(store: ApprovalStore) -> None:
    request_id = request_vault(store)
    error = denied(POLICIES, ["ops"], "vault", store)
    assert_denial(
        error, "jump_policies.gated.approval_required", f"request ({request_id}) is pending"
    )


def test_approval_denied_is_denied(store: ApprovalStore) -> None:
    request_id = request_vault(store)
    store.decide(request_id, "bob", False, "not today", NOW - 1800)
    error = denied(POLICIES, ["ops"], "vault", store)
    assert_denial(
        error, "jump_policies.gated.approval_required", f"request ({request_id}) is denied"
    )


def test_approval_expired_after_valid_until_is_denied(store: ApprovalStore) -> None:
    request_id = request_vault(store, at=NOW - 4 * HOUR)
    approved = store.decide(request_id, "bob", True, None, NOW - 3 * HOUR)
    assert approved.valid_until == NOW - HOUR
    error = denied(POLICIES, ["ops"], "vault", store)
    assert_denial(
        error, "jump_policies.gated.approval_required", f"request ({request_id}) is expired"
    )
    # exactly at valid_until it has expired; a second before, it was valid
    with pytest.raises(AccessDenied):
        open_as(POLICIES, ["ops"], "vault", store, now=NOW - HOUR)
    assert open_as(POLICIES, ["ops"], "vault", store, now=NOW - HOUR - 1).approval_id == request_id


def test_approval_pending_past_its_request_timeout_is_expired(store: ApprovalStore) -> None:
    request_id = request_vault(store)  # requested at NOW - 1h, times out 24h later
    with pytest.raises(AccessDenied) as info:
        open_as(POLICIES, ["ops"], "vault", store, now=NOW + 23 * HOUR)
    assert_denial(
        info.value, "jump_policies.gated.approval_required", f"request ({request_id}) is expired"
    )


def test_approval_approved_and_valid_is_allowed(store: ApprovalStore) -> None:
    request_id = request_vault(store)
    approved = store.decide(request_id, "bob", True, "ok", NOW - 1800)  # valid for 2h
    assert approved.valid_until == NOW + 5400
    terms = open_as(POLICIES, ["ops"], "vault", store)
    assert terms.approval_id == request_id
    assert terms.deadlines == (
        Deadline(NOW + 5400, "approval_expired", f"the approval of request {request_id} expired"),
    )
    assert terms.to_json()["closes_at"] == NOW + 5400
    # still valid one second before valid_until
    assert open_as(POLICIES, ["ops"], "vault", store, now=NOW + 5399).approval_id == request_id


def test_an_approval_counts_only_for_its_user_and_item(store: ApprovalStore) -> None:
    store.decide(request_vault(store, user="carol"), "bob", True, None, NOW)
    store.decide(request_vault(store, item="other"), "bob", True, None, NOW)
    error = denied(POLICIES, ["ops"], "vault", store)
    assert error.rule == "jump_policies.gated.approval_required"
    assert open_as(POLICIES, ["ops"], "other", store).approval_id is not None


def test_a_valid_approval_wins_over_a_later_pending_request(store: ApprovalStore) -> None:
    first = request_vault(store)
    store.decide(first, "bob", True, None, NOW)
    request_vault(store)
    assert open_as(POLICIES, ["ops"], "vault", store).approval_id == first


def test_approvals_refuse_self_approval(store: ApprovalStore) -> None:
    request_id = request_vault(store)
    with pytest.raises(AccessDenied) as info:
        store.decide(request_id, "alice", True, None, NOW)
    assert_denial(info.value, "approvals.second_person", f"request {request_id} is your own")
    current = store.get(request_id)
    assert current is not None and current.status == "pending"


@pytest.mark.parametrize("approve_first", [True, False])
def test_approvals_refuse_deciding_a_decided_request(
    store: ApprovalStore, approve_first: bool
) -> None:
    request_id = request_vault(store)
    store.decide(request_id, "bob", approve_first, None, NOW)
    status = "approved" if approve_first else "denied"
    with pytest.raises(UsageError, match=f"request {request_id} is {status}, not pending"):
        store.decide(request_id, "dave", not approve_first, None, NOW + 1)
    current = store.get(request_id)
    assert current is not None and current.status == status and current.decided_by == "bob"


def test_approvals_refuse_deciding_an_expired_request(store: ApprovalStore) -> None:
    request_id = request_vault(store)
    with pytest.raises(UsageError, match="is expired, not pending"):
        store.decide(request_id, "bob", True, None, NOW + 23 * HOUR)


def test_approvals_refuse_an_unknown_request(store: ApprovalStore) -> None:
    with pytest.raises(UnknownRequest, match="no access request 99"):
        store.decide(99, "bob", True, None, NOW)


# -- session policies: recording, connection cap -----------------------------------


def test_recording_needs_consent(store: ApprovalStore) -> None:
    with pytest.raises(ConsentRequired) as info:
        open_as(POLICIES, ["ops"], "recorded", store)
    assert "are recorded (session policy 'recorded')" in info.value.message
    assert "'recorded'" in info.value.message
    assert info.value.hint is not None and "--yes" in info.value.hint


def test_recording_with_consent_is_allowed_and_recorded(store: ApprovalStore) -> None:
    terms = open_as(POLICIES, ["ops"], "recorded", store, consent=True)
    assert terms.recording is True
    assert terms.to_json()["recording"] is True


def test_no_recording_without_a_recording_policy(store: ApprovalStore) -> None:
    assert open_as(POLICIES, ["ops"], "plain", store).recording is False


def test_max_connections_is_the_lower_of_policy_and_limit(store: ApprovalStore) -> None:
    assert open_as(POLICIES, ["ops"], "capped", store).max_connections == 4
    assert open_as(POLICIES, ["ops"], "wide", store).max_connections == 200
    assert open_as(POLICIES, ["ops"], "plain", store).max_connections == 256
    limited = config_of(
        """\
        limits: {max_connections_per_session: 8}
        groups: {ops: {}}
        session_policies:
          capped: {max_connections: 4}
          wide: {max_connections: 200}
        items:
          - {name: capped, type: tcp, host: h, tunnels: [{remote_port: 22}], session_policy: capped}
          - {name: wide, type: tcp, host: h, tunnels: [{remote_port: 22}], session_policy: wide}
          - {name: plain, type: tcp, host: h, tunnels: [{remote_port: 22}]}
        """
    )
    assert open_as(limited, ["ops"], "capped", store).max_connections == 4
    assert open_as(limited, ["ops"], "wide", store).max_connections == 8
    assert open_as(limited, ["ops"], "plain", store).max_connections == 8


def test_deadlines_of_several_rules_and_the_first_one(store: ApprovalStore) -> None:
    config = config_of(
        """\
        groups:
          ops:
            tunnels_restricted:
              auto_close: {max: 3h}
          approvers: {}
        jump_policies:
          strict-gated:
            approval_required: true
            approver_group: approvers
            schedule:
              timezone: Europe/Berlin
              strict: true
              windows:
                - {days: [wed], start: "08:00", end: "20:00"}
        items:
          - {name: db, type: tcp, host: h, tunnels: [{remote_port: 5432}], jump_policy: strict-gated}
        """
    )
    request_id = store.request("alice", "db", "fix", 2 * HOUR, HOUR, NOW - 60).id
    store.decide(request_id, "bob", True, None, NOW)
    terms = open_as(config, ["ops"], "db", store)
    assert {d.code: d.at for d in terms.deadlines} == {
        "auto_close": NOW + 3 * HOUR,
        "schedule": utc(2026, 1, 14, 19, 0),
        "approval_expired": NOW + 2 * HOUR,
    }
    first = terms.first_deadline()
    assert first is not None and first.code == "approval_expired"
    assert terms.to_json()["closes_because"] == f"the approval of request {request_id} expired"


# -- item kinds ----------------------------------------------------------------------

KINDS = config_of(
    """\
    groups:
      ops: {}
      viewers:
        jump_groups: {see: ["*"]}
    items:
      - {name: sql, type: mssql, host: sql.corp, username: sa}
      - {name: net, type: network, filters: ["10.0.0.0/24/tcp/22"]}
    """
)


def test_network_items_need_a_linux_jumpoint(store: ApprovalStore) -> None:
    item = KINDS.items[1]
    assert item.type == "network"
    grant = Grant.of("alice", ["ops"], KINDS.groups)
    with pytest.raises(NotSupported) as info:
        decide(KINDS, grant, item, SessionRequest(item.name), NOW, store, platform="win32")
    assert info.value.message == "network tunnels need a Linux Jumpoint"
    terms = decide(KINDS, grant, item, SessionRequest(item.name), NOW, store, platform="linux")
    assert terms is not None


def test_k8s_items_need_a_linux_jumpoint(store: ApprovalStore) -> None:
    item = Item(name="kube", type="k8s", host="api", tunnels=(TunnelSpec(None, 443, "https"),))
    grant = Grant.of("alice", ["ops"], KINDS.groups)
    with pytest.raises(NotSupported) as info:
        decide(KINDS, grant, item, SessionRequest(item.name), NOW, store, platform="win32")
    assert info.value.message == "Kubernetes items need a Linux Jumpoint"
    terms = decide(KINDS, grant, item, SessionRequest(item.name), NOW, store, platform="linux")
    assert terms is not None


def test_group_rules_come_before_the_item_kind(store: ApprovalStore) -> None:
    grant = Grant.of("alice", ["viewers"], KINDS.groups)
    with pytest.raises(AccessDenied) as info:
        decide(KINDS, grant, KINDS.items[0], SessionRequest("sql"), NOW, store)
    assert info.value.rule == "groups.jump_groups.open"


# -- allowed_targets ------------------------------------------------------------------

TARGETS = config_of(
    """\
    allowed_targets:
      - 10.0.0.0/8
      - 192.168.1.0/24:5432
      - :22
      - db.corp.example
    """
)


def allow_list() -> AllowList:
    assert TARGETS.allowed_targets is not None
    return TARGETS.allowed_targets


def test_allowed_targets_denies_a_host_with_one_address_outside() -> None:
    with pytest.raises(AccessDenied) as info:
        check_allowed_targets(allow_list(), 443, ["10.1.1.1", "172.16.0.9"], {}, "app.corp")
    assert_denial(
        info.value, "allowed_targets", "app.corp (172.16.0.9):443", "172.16.0.9:443 is not in"
    )


def test_allowed_targets_allows_a_host_with_every_address_inside() -> None:
    check_allowed_targets(allow_list(), 443, ["10.1.1.1", "10.200.0.9"], {}, "app.corp")


def test_allowed_targets_omitted_restricts_nothing() -> None:
    assert config_of("items: []\n").allowed_targets is None
    check_allowed_targets(None, 443, ["203.0.113.7"], {}, "anything.example")


def test_allowed_targets_port_entries() -> None:
    check_allowed_targets(allow_list(), 22, ["203.0.113.7"], {}, "203.0.113.7")  # :22
    check_allowed_targets(allow_list(), 5432, ["192.168.1.20"], {}, "pg.corp")
    with pytest.raises(AccessDenied) as info:
        check_allowed_targets(allow_list(), 5433, ["192.168.1.20"], {}, "pg.corp")
    assert_denial(info.value, "allowed_targets", "pg.corp (192.168.1.20):5433")
    with pytest.raises(AccessDenied) as info:
        check_allowed_targets(allow_list(), 23, ["203.0.113.7"], {}, "203.0.113.7")
    # an IP literal is shown once
    assert_denial(info.value, "allowed_targets", "203.0.113.7:23 is not in this Jumpoint's")


def test_allowed_targets_host_name_entries_match_their_resolved_addresses() -> None:
    resolved = {"db.corp.example": ["203.0.113.50", "2001:db8::50"]}
    assert allow_list().hostnames() == {"db.corp.example"}
    check_allowed_targets(
        allow_list(), 3306, ["203.0.113.50", "2001:db8::50"], resolved, "db.corp.example"
    )
    with pytest.raises(AccessDenied) as info:
        check_allowed_targets(
            allow_list(), 3306, ["203.0.113.50", "203.0.113.51"], resolved, "db.corp.example"
        )
    assert_denial(info.value, "allowed_targets", "203.0.113.51")
    # a name that resolved to nothing allows nothing
    with pytest.raises(AccessDenied):
        check_allowed_targets(allow_list(), 3306, ["203.0.113.50"], {}, "db.corp.example")


def test_allowed_targets_a_host_without_addresses_is_denied() -> None:
    with pytest.raises(AccessDenied) as info:
        check_allowed_targets(allow_list(), 22, [], {}, "ghost.corp")
    assert_denial(info.value, "allowed_targets", "ghost.corp:22", "no addresses")


def test_allowed_targets_empty_list_allows_nothing() -> None:
    empty = config_of("allowed_targets: []\n").allowed_targets
    assert empty is not None
    with pytest.raises(AccessDenied):
        check_allowed_targets(empty, 22, ["10.0.0.1"], {}, "10.0.0.1")


# -- configuration errors name file, line and key ------------------------------------


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            """\
            groups:
              g:
                tunnels_restricted:
                  remote: ["22"]
                  colour: red
            """,
            ":6: groups.g.tunnels_restricted.colour: unknown key (known keys: acl, auto_close,",
        ),
        (
            """\
            groups:
              g:
                tunnels_restricted:
                  remote: ["30000-20000"]
            """,
            ":5: groups.g.tunnels_restricted.remote: port range '30000-20000' is reversed",
        ),
        (
            """\
            groups:
              g:
                tunnels_restricted:
                  local: [22, 70000]
            """,
            ":5: groups.g.tunnels_restricted.local: port '70000' is out of range",
        ),
        (
            """\
            groups:
              g:
                tunnels_restricted:
                  acl:
                    - 10.0.0.0/8
                    - 10.0.0.300/8
            """,
            ":7: groups.g.tunnels_restricted.acl[1]: '10.0.0.300/8' is not an IP address or CIDR",
        ),
        (
            """\
            groups:
              g:
                tunnels_restricted:
                  protocol: [sctp]
            """,
            ":5: groups.g.tunnels_restricted.protocol[0]: must be one of: tcp, udp, tcp-udp",
        ),
        (
            """\
            groups:
              g:
                tunnels_restricted:
                  idle_timeout_minutes: {min: 10081}
            """,
            ":5: groups.g.tunnels_restricted.idle_timeout_minutes.min: must be between 0 and 10080",
        ),
        (
            """\
            groups:
              g:
                tunnels_restricted:
                  auto_close: {max: forever}
            """,
            ":5: groups.g.tunnels_restricted.auto_close.max: 'forever' is not a duration",
        ),
        (
            """\
            groups:
              g:
                tunnels_restricted:
                  skip_idle_timeout: sometimes
            """,
            ":5: groups.g.tunnels_restricted.skip_idle_timeout: expected true or false",
        ),
        (
            """\
            jump_policies:
              gated:
                approval_required: true
            """,
            ":4: jump_policies.gated: approval_required needs an approver_group",
        ),
        (
            """\
            jump_policies:
              p:
                ticket_id_pattern: "[A-Z"
            """,
            ":4: jump_policies.p.ticket_id_pattern: '[A-Z' is not a regular expression",
        ),
        (
            """\
            session_policies:
              s:
                max_connections: 0
            """,
            ":4: session_policies.s.max_connections: must be between 1 and 256",
        ),
        (
            """\
            allowed_targets:
              - 10.0.0.0/8
              - 10.0.0.1/8:22
            """,
            ":4: allowed_targets[1]: invalid allowed target '10.0.0.1/8:22': '10.0.0.1/8' has"
            " host bits set: did you mean '10.0.0.0/8'?",
        ),
        (
            """\
            allowed_targets:
              - ":99999"
            """,
            ":3: allowed_targets[0]: invalid allowed target ':99999': port '99999' is out of range",
        ),
    ],
)
def test_config_errors_name_file_line_and_key(snippet: str, expected: str) -> None:
    message = config_error(snippet)
    assert message.startswith(f"{CONFIG_PATH}:")
    assert f"{CONFIG_PATH}{expected}" in message, message


def test_config_auto_close_min_longer_than_max() -> None:
    message = config_error(
        """\
        groups:
          g:
            tunnels_restricted:
              auto_close: {min: 2h, max: 1h}
        """
    )
    assert message.startswith(f"{CONFIG_PATH}:5: groups.g.tunnels_restricted.auto_close:")
    assert "min is longer than max" in message


UNDEFINED_REFERENCES = [
    (
        """\
        items:
          - {name: x, type: tcp, host: h, tunnels: [{remote_port: 22}], jump_policy: nope}
        """,
        ":3:",
        "items[0].jump_policy: no jump policy named 'nope' (defined: none)",
    ),
    (
        """\
        session_policies: {s: {}}
        items:
          - {name: x, type: tcp, host: h, tunnels: [{remote_port: 22}]}
          - {name: y, type: tcp, host: h, tunnels: [{remote_port: 22}], session_policy: t}
        """,
        ":5:",
        "items[1].session_policy: no session policy named 't' (defined: s)",
    ),
    (
        """\
        groups: {ops: {}}
        jump_policies:
          gated: {approval_required: true, approver_group: admins}
        """,
        ":4:",
        "jump_policies.gated.approver_group: no group named 'admins'",
    ),
]


@pytest.mark.parametrize(("snippet", "line", "expected"), UNDEFINED_REFERENCES)
def test_config_undefined_references_name_file_and_key(
    snippet: str, line: str, expected: str
) -> None:
    message = config_error(snippet)
    assert message.startswith(f"{CONFIG_PATH}")
    assert expected in message


@pytest.mark.parametrize(("snippet", "line", "expected"), UNDEFINED_REFERENCES)
def test_config_undefined_references_name_the_line(snippet: str, line: str, expected: str) -> None:
    assert config_error(snippet).startswith(f"{CONFIG_PATH}{line} {expected}")


# -- the built-in egress default --------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.1.2.3",
        "::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
        "::",
        "169.254.169.254",
        "fe80::1",
    ],
)
def test_loopback_and_link_local_are_refused_without_an_allow_list(address: str) -> None:
    with pytest.raises(AccessDenied) as info:
        check_allowed_targets(None, 80, [address], {}, "target.example")
    assert info.value.rule == "allowed_targets"
    assert "lists it explicitly" in info.value.message
    check_allowed_targets(None, 80, ["10.0.0.1", "2001:db8::1"], {}, "target.example")


def test_a_name_with_one_loopback_address_is_refused() -> None:
    with pytest.raises(AccessDenied, match=r"app\.corp \(127\.0\.0\.1\)"):
        check_allowed_targets(None, 443, ["10.1.1.1", "127.0.0.1"], {}, "app.corp")


def test_protected_addresses_need_an_entry_inside_them() -> None:
    wide = AllowList.parse(["0.0.0.0/0", "::/0", ":80", "metadata.internal"])
    with pytest.raises(AccessDenied):
        check_allowed_targets(wide, 80, ["127.0.0.1"], {}, "127.0.0.1")
    with pytest.raises(AccessDenied):  # a host name entry is not explicit either
        check_allowed_targets(
            wide, 80, ["169.254.169.254"], {"metadata.internal": ["169.254.169.254"]}, "m"
        )
    metadata = AllowList.parse(["169.254.169.254:80"])
    check_allowed_targets(metadata, 80, ["169.254.169.254"], {}, "169.254.169.254")
    with pytest.raises(AccessDenied):
        check_allowed_targets(metadata, 81, ["169.254.169.254"], {}, "169.254.169.254")
    with pytest.raises(AccessDenied):
        check_allowed_targets(metadata, 80, ["169.254.1.1"], {}, "169.254.1.1")
    check_allowed_targets(AllowList.parse(["::1"]), 22, ["::1"], {}, "::1")


def test_the_own_listener_needs_an_entry_naming_its_port() -> None:
    own = [("10.0.0.5", 7443), ("jumpoint.example", 7443)]
    for allow_list in (None, AllowList.parse(["10.0.0.0/8"])):
        with pytest.raises(AccessDenied, match="own listener"):
            check_allowed_targets(allow_list, 7443, ["10.0.0.5"], {}, "10.0.0.5", own)
        check_allowed_targets(allow_list, 22, ["10.0.0.5"], {}, "10.0.0.5", own)
    explicit = AllowList.parse(["10.0.0.5:7443"])
    check_allowed_targets(explicit, 7443, ["10.0.0.5"], {}, "10.0.0.5", own)


def test_the_config_jumpoint_init_writes_refuses_loopback_link_local_and_itself() -> None:
    from jumpoint.config_template import render_config
    from jumpoint.dialing import check_target

    text = render_config("corp", "0.0.0.0", 7443, ["jump.corp.example", "10.0.0.5"])
    config = parse_config(text, Path("/etc/jumpoint/jumpoint.yaml"))
    assert config.allowed_targets is None
    for address, port in (("127.0.0.1", 22), ("169.254.169.254", 80), ("10.0.0.5", 7443)):
        with pytest.raises(AccessDenied) as info:
            check_target(config, port, [address], {}, address)
        assert info.value.rule == "allowed_targets"
    check_target(config, 22, ["10.0.0.5"], {}, "10.0.0.5")
