"""jumpoint.yaml checks: every error names the file, the line and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from jumpoint.config import load_config, parse_config
from jumpoint.config_template import render_config
from shared.errors import ConfigError
from shared.schema import parse_duration, parse_host_port

BASE = """\
jumpoint:
  name: test
  listen: 127.0.0.1:7443
  addresses: [127.0.0.1]
"""


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_config(text, Path("/etc/jumpoint/jumpoint.yaml"))


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.message


def test_the_template_written_by_init_is_valid() -> None:
    config = parse(render_config("corp", "0.0.0.0", 7443, ["jump.corp.example", "10.0.0.5"]))
    assert config.name == "corp"
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 7443)
    assert config.addresses == ("jump.corp.example", "10.0.0.5")
    assert config.groups["default"].jump_groups == ("*",)
    assert config.items == ()
    assert config.limits.max_connections_per_session == 256
    assert config.ca_certificate == Path("/etc/jumpoint/ca.pem")


def test_a_full_item() -> None:
    config = parse(
        BASE
        + """\
items:
  - name: db-prod
    type: tcp
    host: db.corp.example
    local_address: 127.0.0.5
    tunnels:
      - {local_port: 5432, remote_port: 5432}
      - {local_port: auto, remote_port: 9187}
    jump_group: databases
    tag: prod
    comments: the main database
"""
    )
    (item,) = config.items
    assert item.name == "db-prod" and item.host == "db.corp.example"
    assert [(t.local_port, t.remote_port) for t in item.tunnels] == [(5432, 5432), (None, 9187)]
    assert item.allows_target("db.corp.example", 9187)
    assert not item.allows_target("db.corp.example", 22)
    assert not item.allows_target("other.corp.example", 5432)
    assert item.to_json()["tunnels"][1] == {
        "local_port": "auto",
        "remote_port": 9187,
        "protocol": "tcp",
    }


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            "items:\n  - {name: x, type: tcp, host: h, tunnels: [{remote_port: 70000}]}\n",
            "jumpoint.yaml:6: items[0].tunnels[0].remote_port: must be between 1 and 65535",
        ),
        (
            "items:\n  - {name: x, type: tcp, host: h, local_address: 10.0.0.1,"
            " tunnels: [{remote_port: 80}]}\n",
            "items[0].local_address: '10.0.0.1' is outside 127.0.0.0/8",
        ),
        (
            "items:\n  - {name: x, type: tcp, host: h, tunnels: [{local_port: 0, remote_port: 80}]}\n",
            "items[0].tunnels[0].local_port: must be 'auto' or a port number",
        ),
        (
            "items:\n  - {name: x, type: tcp, host: h, tunnels: []}\n",
            "items[0].tunnels: expected 1 to 64 entries",
        ),
        (
            "items:\n  - {name: x, type: ftp, host: h, tunnels: [{remote_port: 21}]}\n",
            "items[0].type: must be one of: tcp",
        ),
        (
            "items:\n  - {name: '', type: tcp, host: h, tunnels: [{remote_port: 21}]}\n",
            "items[0].name: must be 1 to 128 characters long",
        ),
        (
            "items:\n  - {name: "
            + "n" * 129
            + ", type: tcp, host: h, tunnels: [{remote_port: 1}]}\n",
            "items[0].name: must be 1 to 128 characters long",
        ),
        (
            "items:\n  - {name: x, type: tcp, host: 'bad host!', tunnels: [{remote_port: 1}]}\n",
            "items[0].host: 'bad host!' is not a host name or IP address",
        ),
        (
            "items:\n  - {name: x, type: tcp, host: h, tunnels: [{remote_port: 1}], colour: red}\n",
            "items[0].colour: unknown key",
        ),
        (
            "items:\n  - {name: x, type: tcp, host: h, tunnels: [{remote_port: 1}]}\n"
            "  - {name: x, type: tcp, host: h, tunnels: [{remote_port: 2}]}\n",
            "items[1].name: duplicate item name 'x'",
        ),
        (
            "items:\n  - {name: x, type: tcp, host: h,"
            " tunnels: [{local_port: 80, remote_port: 1}, {local_port: 80, remote_port: 2}]}\n",
            "items[0].tunnels[1]: two tunnels use the same local port (80/tcp)",
        ),
        ("limits: {max_connections_per_session: 257}\n", "limits.max_connections_per_session"),
        ("audit: {spool_limit_bytes: 1000}\n", "audit.spool_limit_bytes: must be between"),
        ("audit: {spool_limit_bytes: lots}\n", "audit.spool_limit_bytes"),
        ("limits: {connect_timeout: soon}\n", "limits.connect_timeout: 'soon' is not a duration"),
        ("limits: {reconnect_grace: later}\n", "limits.reconnect_grace: 'later' is not a duration"),
        ("limits: {reconnect_grace: 25h}\n", "limits.reconnect_grace: must be at most 86400"),
        ("listen: 1.2.3.4:1\n", "listen: unknown key"),
        ("items:\n  - [1, 2]\n", "items[0]: expected a mapping"),
    ],
)
def test_errors_name_file_line_and_key(snippet: str, expected: str) -> None:
    message = error_of(BASE + snippet)
    assert message.startswith("/etc/jumpoint/jumpoint.yaml:")
    assert expected in message


def test_yaml_syntax_errors_have_a_line() -> None:
    message = error_of(BASE + "items: [\n  - oops\n")
    assert message.startswith("/etc/jumpoint/jumpoint.yaml:")
    assert "invalid YAML" in message


def test_missing_required_section() -> None:
    assert "missing required key 'jumpoint'" in error_of("items: []\n")


def test_reconnect_grace_defaults_to_five_minutes() -> None:
    assert parse_config(BASE, Path("/etc/jumpoint/jumpoint.yaml")).limits.reconnect_grace == 300
    text = BASE + "limits: {reconnect_grace: 90s}\n"
    assert parse_config(text, Path("/etc/jumpoint/jumpoint.yaml")).limits.reconnect_grace == 90


def test_keepalive_timeout_must_exceed_the_interval() -> None:
    text = BASE + "limits: {keepalive_interval: 30s, keepalive_timeout: 10s}\n"
    assert "keepalive_timeout must be longer" in error_of(text)


def test_load_config_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file") as info:
        load_config(tmp_path / "missing.yaml")
    assert info.value.hint is not None and "jumpoint init" in info.value.hint


def test_load_config_needs_a_path_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUMPOINT_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="no configuration file given"):
        load_config(None)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("1.5", 1.5), ("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("2h", 7200.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5", "0", "5x", "m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_host_port() -> None:
    assert parse_host_port("db.corp:5432") == ("db.corp", 5432)
    assert parse_host_port("[::1]:7443") == ("::1", 7443)
    for bad in ("db.corp", "db.corp:0", "db.corp:99999", ":80", "[::1]7443"):
        with pytest.raises(ValueError):
            parse_host_port(bad)


def test_the_audit_spool_file_is_by_the_state_database_unless_given() -> None:
    default = parse(BASE + "state_database: /var/lib/jumpoint/state.db\n")
    assert default.spool_path == Path("/var/lib/jumpoint/audit-spool.jsonl")
    assert default.audit_spool_limit_bytes == 256 * 1024 * 1024
    given = parse(BASE + "audit: {spool_file: spool/a.jsonl, spool_limit_bytes: 2097152}\n")
    assert given.spool_path == Path("/etc/jumpoint/spool/a.jsonl")
    assert given.audit_spool_limit_bytes == 2097152
