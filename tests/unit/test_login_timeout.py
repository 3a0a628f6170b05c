"""The C{login_timeout} setting: declared on items and session policies, resolved into the terms.

An mssql or k8s item and a session policy may each set it; the Jumpoint's
terms carry the lower of the two (30 s without either) to the console in the
C{open_session} result, and C{null} for kinds without a login.
"""

from __future__ import annotations

import datetime
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from console.tunnels import TunnelSession
from jumpoint.access import SessionRequest, decide, resolve_login_timeout
from jumpoint.approvals import ApprovalStore
from jumpoint.config import JumpointConfig, parse_config
from jumpoint.config_template import _EXAMPLE_CA_PEM
from jumpoint.policy import Grant
from jumpoint.state import StateDatabase
from shared.errors import ConfigError, ProtocolViolation
from shared.items import LOGIN_TIMEOUT_DEFAULT, item_from_data

CONFIG_PATH = Path("/etc/jumpoint/jumpoint.yaml")
BASE = 'jumpoint: {name: unit, listen: "127.0.0.1:7443", addresses: ["127.0.0.1"]}\n'
NOW = datetime.datetime(2026, 1, 14, 10, 0, tzinfo=datetime.UTC).timestamp()
CA = textwrap.indent(_EXAMPLE_CA_PEM, " " * 10)

CONFIG = f"""\
groups:
  default: {{jump_groups: ["*"]}}
session_policies:
  quick: {{login_timeout: 5s}}
  slow: {{login_timeout: 2m}}
items:
  - {{name: sql, type: mssql, host: db.corp, username: app}}
  - {{name: sql-10, type: mssql, host: db.corp, username: app, login_timeout: 10s}}
  - {{name: sql-10-quick, type: mssql, host: db.corp, username: app, login_timeout: 10,
     session_policy: quick}}
  - {{name: sql-10-slow, type: mssql, host: db.corp, username: app, login_timeout: 10s,
     session_policy: slow}}
  - {{name: ssh-quick, type: tcp, host: h, tunnels: [{{remote_port: 22}}],
     session_policy: quick}}
  - name: k8s
    type: k8s
    url: https://k8s.corp:6443
    login_timeout: 45s
    ca_pem: |
{CA}"""


def config_of(snippet: str) -> JumpointConfig:
    return parse_config(BASE + textwrap.dedent(snippet), CONFIG_PATH)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ApprovalStore]:
    database = StateDatabase(tmp_path / "state.db")
    yield ApprovalStore(database)
    database.close()


def terms_json(config: JumpointConfig, item_name: str, store: ApprovalStore) -> dict[str, Any]:
    item = config.item(item_name)
    assert item is not None
    grant = Grant.of("alice", ["default"], config.groups)
    request = SessionRequest(item=item_name)
    return decide(config, grant, item, request, NOW, store, platform="linux").to_json()


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("sql", LOGIN_TIMEOUT_DEFAULT),
        ("sql-10", 10.0),
        ("sql-10-quick", 5.0),  # the policy's is lower
        ("sql-10-slow", 10.0),  # the item's is lower
        ("k8s", 45.0),
        ("ssh-quick", None),  # a tcp connection has no login
    ],
)
def test_the_terms_carry_the_lower_login_timeout(
    store: ApprovalStore, item: str, expected: float | None
) -> None:
    config = config_of(CONFIG)
    assert terms_json(config, item, store)["login_timeout"] == expected


def test_the_default_is_thirty_seconds() -> None:
    config = config_of(CONFIG)
    item = config.item("sql")
    assert item is not None
    assert resolve_login_timeout(item, None) == 30.0


def test_the_session_policy_keeps_its_login_timeout() -> None:
    config = config_of(CONFIG)
    assert config.policies.session["quick"].login_timeout == 5.0
    assert config.policies.session["slow"].login_timeout == 120.0


@pytest.mark.parametrize(
    ("snippet", "fragment"),
    [
        (
            "items: [{name: s, type: mssql, host: h, username: u, login_timeout: 0.5}]",
            "must be 1 to 3600 seconds",
        ),
        (
            "items: [{name: s, type: mssql, host: h, username: u, login_timeout: 2h}]",
            "at most 3600 seconds",
        ),
        ("items: [{name: s, type: mssql, host: h, username: u, login_timeout: nan}]", "1 to 3600"),
        ("items: [{name: s, type: mssql, host: h, username: u, login_timeout: soon}]", "duration"),
        ("session_policies: {p: {login_timeout: 0}}", "positive duration"),
        (
            "items: [{name: s, type: tcp, host: h, tunnels: [{remote_port: 22}],"
            " login_timeout: 5s}]",
            "login_timeout",
        ),
    ],
)
def test_a_bad_login_timeout_is_a_config_error(snippet: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_of(snippet + "\n")
    assert fragment in info.value.message
    assert "login_timeout" in info.value.message


def test_an_item_from_the_console_round_trips_its_login_timeout() -> None:
    item = item_from_data(
        {"name": "s", "type": "mssql", "host": "h", "username": "u", "login_timeout": "15s"},
        "console",
    )
    assert item.login_timeout == 15.0
    spec = item.to_spec()
    assert spec["login_timeout"] == 15.0
    assert item_from_data(spec, "console") == item
    assert "login_timeout" not in item.with_changes(login_timeout=None).to_spec()


def _session_result(**extra: Any) -> dict[str, Any]:
    return {
        "session": "s1",
        "item": {"name": "sql", "type": "mssql", "username": "app"},
        "tunnels": [
            {
                "local_address": "127.0.0.6",
                "local_port": "auto",
                "remote_host": "db.corp",
                "remote_port": 1433,
            }
        ],
        **extra,
    }


def test_the_console_reads_the_login_timeout_of_the_terms() -> None:
    session = TunnelSession(None, "sql", _session_result(login_timeout=12))  # type: ignore[arg-type]
    assert session.login_timeout == 12.0
    assert session.details()["login_timeout"] == 12
    assert TunnelSession(None, "sql", _session_result()).login_timeout is None  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -1, "30", True, 1e9, float("nan")])
def test_a_malformed_login_timeout_from_the_jumpoint_is_a_violation(value: object) -> None:
    with pytest.raises(ProtocolViolation, match="login_timeout"):
        TunnelSession(None, "sql", _session_result(login_timeout=value))  # type: ignore[arg-type]
