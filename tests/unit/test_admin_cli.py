"""The admin commands: `jumpoint audit`, users in several groups, and the init template.

Every test runs the real click commands (L{click.testing.CliRunner} against
L{jumpoint.cli.cli}) on a Jumpoint made by a real `jumpoint init` in
C{tmp_path}.  Audit events are written with L{AuditLog} and a fake clock, so
their times are known.  The template tests uncomment the examples of the
`init` template (the lines between C{#>} and C{#<}) and load the result.
"""

from __future__ import annotations

import datetime
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.x509.oid import NameOID
from twisted.internet.task import Clock

from jumpoint import enrollment_tokens
from jumpoint.audit import AuditLog, query
from jumpoint.cli import cli, main, parse_since
from jumpoint.config import JumpointConfig, load_config, parse_config
from jumpoint.config_template import EXAMPLE_END, EXAMPLE_START, render_config
from jumpoint.state import StateDatabase
from shared import pki
from shared.addresses import PortSet
from shared.enrollment import parse_enrollment
from shared.errors import ExitCode, JumpError, UnknownUser, UsageError

T0 = datetime.datetime(2026, 12, 1, 10, 0, 0, tzinfo=datetime.UTC).timestamp()
"""2026-12-01T10:00:00Z"""

EXTRA_GROUPS = """\
  ops:
    jump_groups: [web]
  dba:
    jump_groups: {see: ["*"], open: [db]}
"""


# -- helpers ----------------------------------------------------------------


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    """A Jumpoint from `jumpoint init`, with the groups default, ops and dba."""
    result = CliRunner().invoke(
        cli,
        ["init", "--dir", str(tmp_path / "jp"), "--name", "lab", "--listen", "127.0.0.1:7443"],
    )
    assert result.exit_code == 0, result.output
    path = tmp_path / "jp" / "jumpoint.yaml"
    text = path.read_text()
    anchor = (
        '\n  default:\n    comments: members may see and open every item\n    jump_groups: ["*"]\n'
    )
    assert text.count(anchor) == 1
    path.write_text(text.replace(anchor, anchor + EXTRA_GROUPS))
    assert set(load_config(path).groups) == {"default", "ops", "dba"}
    return path


def run(config: Path, *args: str) -> Result:
    """Run `jumpoint ARGS` with $JUMPOINT_CONFIG set; errors stay in C{result.exception}."""
    return CliRunner().invoke(cli, list(args), env={"JUMPOINT_CONFIG": str(config)})


def ok(config: Path, *args: str) -> Result:
    result = run(config, *args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def failure(config: Path, *args: str) -> JumpError:
    """The L{JumpError} a command raised (L{jumpoint.cli.main} renders it)."""
    result = run(config, *args)
    assert isinstance(result.exception, JumpError), (result.output, result.exception)
    assert result.stdout == ""
    return result.exception


def record(config: Path, events: Sequence[tuple[float, str, dict[str, Any]]]) -> None:
    """Write audit events at the given times (a fake clock), each one durable."""
    clock = Clock()
    database = StateDatabase(load_config(config).state_database)
    audit = AuditLog(database, None, clock)
    try:
        for when, event, fields in events:
            clock.advance(when - clock.seconds())
            audit.record(event, durable=True, **fields)
    finally:
        audit.close()
        database.close()


def stdout_lines(result: Result) -> list[str]:
    return result.stdout.splitlines()


def events_of(result: Result) -> list[str]:
    """The event names of a text `jumpoint audit` output."""
    return [line.split(" ")[1] for line in stdout_lines(result)]


def audit_rows(config: Path) -> list[dict[str, Any]]:
    database = StateDatabase(load_config(config).state_database)
    try:
        return [entry.to_json() for entry in query(database)]
    finally:
        database.close()


def certificate_of(config: Path, enrollment: Path) -> x509.Certificate:
    """Redeem the file's token as the running Jumpoint would (L{enrollment_tokens.redeem})."""
    loaded = parse_enrollment(enrollment.read_text(), str(enrollment))
    settings = load_config(config)
    ca = pki.load_pair(settings.ca_certificate, settings.ca_key)
    _, csr_pem = pki.new_key_and_request(loaded.user)
    csr = pki.load_signing_request(csr_pem)
    database = StateDatabase(settings.state_database)
    try:
        with database.transaction() as db:
            issued = enrollment_tokens.redeem(
                db,
                enrollment_tokens.token_hash(loaded.token),
                time.time(),
                "127.0.0.1:1",
                lambda user, group, lifetime: pki.sign_client_request(
                    ca, csr, user, group, lifetime
                ),
            )
    finally:
        database.close()
    return issued.certificate


def users_json(config: Path) -> dict[str, dict[str, Any]]:
    listing = json.loads(ok(config, "user", "list", "--json").stdout)
    return {entry["name"]: entry for entry in listing}


# -- jumpoint audit: filters, --since, output --------------------------------

FILTER_EVENTS: list[tuple[float, str, dict[str, Any]]] = [
    (T0, "session_opened", {"user": "alice", "item": "web", "session": "s1"}),
    (T0 + 1, "connection_closed", {"user": "alice", "item": "web", "session": "s1"}),
    (T0 + 2, "session_opened", {"user": "bob", "item": "db", "session": "s2"}),
    (
        T0 + 3,
        "session_denied",
        {"user": "bob", "item": "web", "rule": "groups.jump_groups.open"},
    ),
    (T0 + 4, "session_closed", {"user": "alice", "item": "web", "session": "s1"}),
]


def test_audit_filters_select_matching_events_oldest_first(config_path: Path) -> None:
    record(config_path, FILTER_EVENTS)
    everything = ok(config_path, "audit")
    assert events_of(everything) == [event for _, event, _ in FILTER_EVENTS]
    by_user = ok(config_path, "audit", "--user", "bob")
    assert events_of(by_user) == ["session_opened", "session_denied"]
    assert all(" user=bob " in line for line in stdout_lines(by_user))
    by_item = ok(config_path, "audit", "--item", "web")
    assert events_of(by_item) == [
        "session_opened",
        "connection_closed",
        "session_denied",
        "session_closed",
    ]
    by_session = ok(config_path, "audit", "--session", "s2")
    assert stdout_lines(by_session) == [
        "2026-12-01T10:00:02Z session_opened user=bob session=s2 item=db"
    ]
    by_event = ok(config_path, "audit", "--event", "session_opened")
    assert [line.split(" ")[2] for line in stdout_lines(by_event)] == ["user=alice", "user=bob"]
    combined = ok(config_path, "audit", "--user", "alice", "--event", "session_closed")
    assert stdout_lines(combined) == [
        "2026-12-01T10:00:04Z session_closed user=alice session=s1 item=web"
    ]
    nothing = ok(config_path, "audit", "--user", "carol")
    assert nothing.stdout == "no matching audit events\n"


def test_audit_since_iso_dates_and_times(config_path: Path) -> None:
    day = 86400.0
    record(
        config_path,
        [
            (T0 - day, "e_yesterday", {}),
            (T0 - 60, "e_0959", {}),
            (T0, "e_1000", {}),
            (T0 + 30, "e_100030", {}),
            (T0 + 3600, "e_1100", {}),
        ],
    )
    cases = {
        "2026-12-01": ["e_0959", "e_1000", "e_100030", "e_1100"],
        "2026-12-01T10:00": ["e_1000", "e_100030", "e_1100"],
        "2026-12-01T10:00:00Z": ["e_1000", "e_100030", "e_1100"],
        "2026-12-01T10:00:01": ["e_100030", "e_1100"],
        "2026-12-01T12:00:00+02:00": ["e_1000", "e_100030", "e_1100"],  # 10:00Z
        "2026-12-01T10:30:00": ["e_1100"],
        "2026-11-30": ["e_yesterday", "e_0959", "e_1000", "e_100030", "e_1100"],
    }
    for since, expected in cases.items():
        assert events_of(ok(config_path, "audit", "--since", since)) == expected, since
    assert ok(config_path, "audit", "--since", "2026-12-02").stdout == "no matching audit events\n"


def test_audit_since_durations_back_from_now(config_path: Path) -> None:
    now = time.time()
    record(
        config_path,
        [
            (now - 8 * 86400, "e_8d", {}),
            (now - 36 * 3600 - 600, "e_36h10m", {}),
            (now - 3 * 3600, "e_3h", {}),
            (now - 45 * 60, "e_45m", {}),
            (now - 5 * 60, "e_5m", {}),
        ],
    )
    cases = {
        "10m": ["e_5m"],
        "30m": ["e_5m"],
        "1h": ["e_45m", "e_5m"],
        "2h": ["e_45m", "e_5m"],
        "1h30m": ["e_45m", "e_5m"],
        "4h": ["e_3h", "e_45m", "e_5m"],
        "1d12h": ["e_3h", "e_45m", "e_5m"],
        "2d": ["e_36h10m", "e_3h", "e_45m", "e_5m"],
        "7d": ["e_36h10m", "e_3h", "e_45m", "e_5m"],
        "9d": ["e_8d", "e_36h10m", "e_3h", "e_45m", "e_5m"],
        "3600s": ["e_45m", "e_5m"],
    }
    for since, expected in cases.items():
        assert events_of(ok(config_path, "audit", "--since", since)) == expected, since


def test_parse_since_forms() -> None:
    now = T0
    assert parse_since("30m", now) == now - 1800
    assert parse_since("2h", now) == now - 7200
    assert parse_since("7d", now) == now - 7 * 86400
    assert parse_since("1d2h3m4s", now) == now - (86400 + 7200 + 180 + 4)
    assert parse_since(" 2h ", now) == now - 7200
    assert parse_since("2026-12-01", now) == T0 - 10 * 3600
    assert parse_since("2026-12-01T10:00", now) == T0
    assert parse_since("2026-12-01T10:00:00Z", now) == T0
    assert parse_since("2026-12-01 10:00:00", now) == T0
    assert parse_since("2026-12-01T11:00:00+01:00", now) == T0
    for bad in ("", "yesterday", "5", "0d", "0m", "1.5h", "d", "7days", "2026-13-01", "10:00"):
        with pytest.raises(ValueError):
            parse_since(bad, now)


@pytest.mark.parametrize("since", ["yesterday", "5", "0d", "2026-13-01", "-2h", "2h ago"])
def test_a_bad_since_is_a_usage_error_with_a_hint(config_path: Path, since: str) -> None:
    error = failure(config_path, "audit", "--since", since)
    assert isinstance(error, UsageError)
    assert error.message.startswith("--since: ")
    assert repr(since) in error.message
    assert error.hint is not None and "7d" in error.hint and "2026-12-01T10:00" in error.hint


def test_a_bad_since_is_printed_without_a_traceback(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", "--since", "soon", "--config", str(config_path)])
    assert exit_info.value.code == ExitCode.USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "jumpoint: error: --since: 'soon' is neither a date/time nor a duration",
        "jumpoint: hint: give a date or time such as 2026-12-01, 2026-12-01T10:00 or"
        " 2026-12-01T10:00:00Z, or a duration such as 30m, 2h or 7d",
    ]


def test_audit_json_prints_only_json_lines(config_path: Path) -> None:
    record(
        config_path,
        [
            *FILTER_EVENTS,
            (T0 + 5.25, "approval_requested", {"user": "bob", "item": "db", "request": 7}),
        ],
    )
    result = ok(config_path, "audit", "--json")
    lines = stdout_lines(result)
    assert len(lines) == len(FILTER_EVENTS) + 1
    objects = [json.loads(line) for line in lines]
    assert all(isinstance(obj, dict) for obj in objects)
    event_ids = [obj["event_id"] for obj in objects]
    assert len(set(event_ids)) == len(objects) and all(len(e) == 36 for e in event_ids)
    assert objects[0] == {
        "id": 1,
        "event_id": event_ids[0],
        "time": "2026-12-01T10:00:00.000Z",
        "event": "session_opened",
        "user": "alice",
        "session": "s1",
        "item": "web",
    }
    assert objects[3]["rule"] == "groups.jump_groups.open"
    assert objects[-1] == {
        "id": 6,
        "event_id": event_ids[-1],
        "time": "2026-12-01T10:00:05.250Z",
        "event": "approval_requested",
        "user": "bob",
        "session": None,
        "item": "db",
        "request": 7,
    }
    assert objects == audit_rows(config_path)
    # No match: nothing at all on stdout, still exit 0.
    empty = ok(config_path, "audit", "--json", "--user", "nobody")
    assert empty.stdout == ""
    # A cut-off list says so on stderr, never on stdout.
    cut = ok(config_path, "audit", "--json", "--limit", "2")
    assert [json.loads(line)["id"] for line in stdout_lines(cut)] == [5, 6]
    assert "only the newest 2 events are shown" in cut.stderr


def test_audit_text_lines(config_path: Path) -> None:
    record(
        config_path,
        [
            (
                T0 + 0.9,
                "session_denied",
                {
                    "user": "bob",
                    "item": "web",
                    "rule": "tunnels_restricted.remote",
                    "reason": "remote port 22 is not allowed",
                    "ports": [80, 443],
                    "ticket": None,
                    "recorded": False,
                },
            ),
            (
                T0 + 61,
                "item_created",
                {"user": "alice", "item": "evil\nname", "comments": 'say "hi"\x1b[2J'},
            ),
        ],
    )
    lines = stdout_lines(ok(config_path, "audit"))
    assert lines == [
        "2026-12-01T10:00:00Z session_denied user=bob item=web rule=tunnels_restricted.remote"
        ' reason="remote port 22 is not allowed" ports=[80,443] recorded=false',
        "2026-12-01T10:01:01Z item_created user=alice"
        ' item="evil\\nname" comments="say \\"hi\\"\\u001b[2J"',
    ]


def test_audit_limit_keeps_the_newest_printed_oldest_first(config_path: Path) -> None:
    clock = Clock()
    clock.advance(T0)
    database = StateDatabase(load_config(config_path).state_database)
    audit = AuditLog(database, None, clock)
    for index in range(1005):
        audit.record(f"e{index}")  # collected, committed by close() in one transaction
    audit.close()
    database.close()
    default = ok(config_path, "audit")
    names = events_of(default)
    assert len(names) == 1000
    assert names[0] == "e5" and names[-1] == "e1004"
    assert "only the newest 1000 events are shown" in default.stderr
    assert events_of(ok(config_path, "audit", "--limit", "3")) == ["e1002", "e1003", "e1004"]
    whole = ok(config_path, "audit", "--limit", "2000")
    assert len(stdout_lines(whole)) == 1005 and whole.stderr == ""
    bad = run(config_path, "audit", "--limit", "0")
    assert bad.exit_code == ExitCode.USAGE and "--limit" in bad.stderr


# -- users in several groups -------------------------------------------------


def enroll(config: Path, name: str, *groups: str) -> Path:
    out = config.parent / f"{name}.enroll"
    args = ["user", "add", name]
    for group in groups:
        args += ["--group", group]
    ok(config, *args, "--out", str(out))
    return out


def test_user_add_with_two_groups(config_path: Path) -> None:
    out = config_path.parent / "alice.enroll"
    result = ok(
        config_path, "user", "add", "alice", "--group", "ops", "--group", "dba", "--out", str(out)
    )
    assert stdout_lines(result)[0] == (
        f"user 'alice' (groups 'ops', 'dba') added; enrollment file: {out}"
    )
    alice = users_json(config_path)["alice"]
    assert alice["group"] == "ops" and alice["groups"] == ["ops", "dba"]
    assert alice["status"] == "pending" and alice["enroll_by"]
    certificate = certificate_of(config_path, out)
    assert users_json(config_path)["alice"]["status"] == "active"
    unit = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert [a.value for a in unit] == ["ops"]  # the first group goes into the certificate
    database = StateDatabase(load_config(config_path).state_database)
    try:
        assert database.groups_of("alice") == ("ops", "dba")
    finally:
        database.close()


def test_user_add_refuses_an_undefined_second_group(config_path: Path) -> None:
    out = config_path.parent / "carol.enroll"
    error = failure(
        config_path, "user", "add", "carol", "--group", "ops", "--group", "nope", "--out", str(out)
    )
    assert isinstance(error, UsageError)
    assert error.message == f"no group named 'nope' in {config_path}"
    assert error.hint == "groups: dba, default, ops"
    assert "carol" not in users_json(config_path)
    assert not out.exists()
    assert audit_rows(config_path) == []


def test_user_add_with_one_group_keeps_its_message(config_path: Path) -> None:
    out = enroll(config_path, "dave", "default", "default")  # a repeat counts once
    result = users_json(config_path)["dave"]
    assert result["groups"] == ["default"]
    assert out.exists()
    text = ok(config_path, "user", "list").stdout
    assert re.search(r"^dave +default +pending .* \(enroll by \S+Z\)$", text, re.MULTILINE)


def test_user_groups_replaces_the_groups(config_path: Path) -> None:
    enroll(config_path, "alice", "default")
    result = ok(config_path, "user", "groups", "alice", "--group", "dba", "--group", "ops")
    assert stdout_lines(result) == [
        "user 'alice' is now in groups: dba, ops",
        "a running Jumpoint applies them to the user's requests within 1s;"
        " sessions already open keep their terms",
    ]
    assert users_json(config_path)["alice"]["groups"] == ["dba", "ops"]
    one = ok(config_path, "user", "groups", "alice", "--group", "ops")
    assert stdout_lines(one)[0] == "user 'alice' is now in group: ops"
    assert users_json(config_path)["alice"]["groups"] == ["ops"]


def test_user_groups_refusals(config_path: Path) -> None:
    enroll(config_path, "alice", "default")
    undefined = failure(config_path, "user", "groups", "alice", "--group", "ops", "--group", "x")
    assert isinstance(undefined, UsageError) and "no group named 'x'" in undefined.message
    assert users_json(config_path)["alice"]["groups"] == ["default"]
    unknown = failure(config_path, "user", "groups", "zed", "--group", "ops")
    assert isinstance(unknown, UnknownUser) and unknown.exit_code == ExitCode.NOT_FOUND
    ok(config_path, "user", "revoke", "alice")
    revoked = failure(config_path, "user", "groups", "alice", "--group", "ops")
    assert isinstance(revoked, UsageError) and revoked.message == "user 'alice' is revoked"
    missing = run(config_path, "user", "groups", "alice")
    assert missing.exit_code == ExitCode.USAGE and "--group" in missing.stderr
    assert [row["event"] for row in audit_rows(config_path)] == ["user_added", "user_revoked"]


def test_user_list_shows_every_group(config_path: Path) -> None:
    enroll(config_path, "alice", "default", "ops", "dba")
    enroll(config_path, "bob", "dba")
    ok(config_path, "user", "revoke", "bob")
    lines = stdout_lines(ok(config_path, "user", "list"))
    assert lines[0].split() == ["NAME", "GROUPS", "STATUS", "CREATED"]
    rows = [line.split() for line in lines[1:]]
    assert [row[:3] for row in rows] == [
        ["alice", "default,dba,ops", "pending"],
        ["bob", "dba", "revoked"],
    ]
    for row in rows:
        datetime.datetime.fromisoformat(row[3])
    # the columns line up under the header
    status_column = lines[0].index("STATUS")
    assert [line[status_column:].split()[0] for line in lines[1:]] == ["pending", "revoked"]
    assert lines[1][status_column - 1] == " " and lines[2][status_column - 1] == " "
    listing = users_json(config_path)
    assert listing["alice"]["groups"] == ["default", "dba", "ops"]
    assert listing["alice"]["group"] == "default"
    assert listing["bob"]["status"] == "revoked" and listing["bob"]["revoked_at"] is not None
    assert set(listing["alice"]) == {
        "name",
        "group",
        "groups",
        "created_at",
        "revoked_at",
        "status",
        "enroll_by",
    }
    assert listing["bob"]["enroll_by"] is None  # a revoked user's token is dead


def test_user_list_widens_the_columns_for_long_group_lists(config_path: Path) -> None:
    enroll(config_path, "alice", "default", "ops", "dba")
    ok(config_path, "user", "groups", "alice", "--group", "default", "--group", "dba")
    enroll(config_path, "a-rather-long-user-name@corp.example", "default", "ops", "dba")
    lines = stdout_lines(ok(config_path, "user", "list"))
    starts = {line.index("pending") for line in lines[1:]}
    assert starts == {lines[0].index("STATUS")}


def test_user_commands_write_audit_events(config_path: Path) -> None:
    before = time.time()
    out = enroll(config_path, "alice", "default", "ops")
    certificate = certificate_of(config_path, out)
    ok(config_path, "user", "groups", "alice", "--group", "dba")
    ok(config_path, "user", "revoke", "alice")
    rows = audit_rows(config_path)
    assert [row["event"] for row in rows] == ["user_added", "user_groups_changed", "user_revoked"]
    assert all(row["user"] == "alice" and row["item"] is None for row in rows)
    added, changed, revoked = rows
    assert added["groups"] == ["default", "ops"]
    assert added["certificate_days"] == 365
    assert "serial" not in added  # the certificate is made when the console enrolls
    expires = datetime.datetime.fromisoformat(added["expires_at"].replace("Z", "+00:00"))
    assert abs(expires.timestamp() - before - 24 * 3600) < 60
    assert certificate.not_valid_after_utc.timestamp() > before + 364 * 86400
    assert changed["groups"] == ["dba"] and changed["previous"] == ["default", "ops"]
    assert revoked["certificates"] == 1
    assert all(isinstance(row["by"], str) and row["by"] for row in rows)
    for row in rows:
        when = datetime.datetime.fromisoformat(row["time"].replace("Z", "+00:00")).timestamp()
        assert before - 1 <= when <= time.time() + 1
    # The same events went to the JSON-lines file of audit.file.
    config = load_config(config_path)
    assert config.audit_file is not None
    lines = [json.loads(line) for line in config.audit_file.read_text().splitlines()]
    assert [line["event"] for line in lines] == [row["event"] for row in rows]
    # ... and `jumpoint audit` shows them.
    shown = stdout_lines(ok(config_path, "audit", "--user", "alice"))
    assert [line.split(" ")[1] for line in shown] == [row["event"] for row in rows]
    assert 'groups=["dba"] previous=["default","ops"]' in shown[1]


def test_revoking_an_unknown_user_writes_no_event(config_path: Path) -> None:
    error = failure(config_path, "user", "revoke", "zed")
    assert isinstance(error, UnknownUser)
    assert audit_rows(config_path) == []


def test_an_unwritable_audit_file_is_a_config_error(config_path: Path) -> None:
    text = config_path.read_text()
    config_path.write_text(text + "\naudit:\n  file: audit.jsonl/inside-a-file\n")
    (config_path.parent / "audit.jsonl").write_text("")
    out = config_path.parent / "alice.enroll"
    error = failure(config_path, "user", "add", "alice", "--group", "default", "--out", str(out))
    assert error.exit_code == ExitCode.CONFIG and "audit.file: cannot open it" in error.message
    assert "alice" not in users_json(config_path)
    assert not out.exists()


# -- the jumpoint.yaml template ---------------------------------------------

REGIONS = (
    "groups",
    "allowed_targets",
    "jump_policies",
    "session_policies",
    "audit",
    "recordings",
    "items",
)
NEEDS: dict[str, tuple[str, ...]] = {
    "jump_policies": ("groups",),  # approver_group: admins
    "items": ("groups", "jump_policies", "session_policies"),
}


def template() -> str:
    return render_config("corp", "0.0.0.0", 7443, ["jump.corp.example", "10.0.0.5"])


def regions(text: str) -> dict[str, tuple[int, int]]:
    """The example regions: name -> (line of C{#>}, line of C{#<})."""
    found: dict[str, tuple[int, int]] = {}
    start: int | None = None
    name = ""
    for number, line in enumerate(text.splitlines()):
        if line.startswith(EXAMPLE_START):
            assert start is None, f"line {number}: nested example"
            match = re.match(r"^#> example: (\w+)", line)
            assert match, f"line {number}: {line!r}"
            start, name = number, match.group(1)
        elif line.startswith(EXAMPLE_END):
            assert start is not None, f"line {number}: {EXAMPLE_END} without {EXAMPLE_START}"
            assert name not in found
            found[name] = (start, number)
            start = None
    assert start is None, "an example is not closed"
    return found


def uncomment(text: str, names: Sequence[str]) -> str:
    """C{text} with the examples C{names} uncommented (their C{"# "} removed)."""
    lines = text.splitlines()
    spans = regions(text)
    out: list[str] = []
    chosen = {number for name in names for number in range(spans[name][0], spans[name][1] + 1)}
    for number, line in enumerate(lines):
        if number not in chosen:
            out.append(line)
        elif not line.startswith((EXAMPLE_START, EXAMPLE_END)):
            out.append(line[2:])
    if "items" in names:  # the items example replaces the last line
        assert out[-1] == "items: []"
        out.pop()
    return "\n".join(out) + "\n"


def parse(text: str) -> JumpointConfig:
    return parse_config(text, Path("/etc/jumpoint/jumpoint.yaml"))


def test_the_template_parses_as_written() -> None:
    text = template()
    config = parse(text)
    assert set(config.groups) == {"default"}
    default = config.groups["default"]
    assert default.see == ("*",) and default.open == ("*",) and default.manage == ()
    assert default.tunnels and default.restrictions is None
    assert config.items == () and config.allowed_targets is None
    assert config.policies.jump == {} and config.policies.session == {}
    assert config.audit_file == Path("/etc/jumpoint/audit.jsonl")
    assert config.recordings_directory == Path("/etc/jumpoint/recordings")
    assert text.rstrip("\n").splitlines()[-1] == "items: []"  # tools append items there
    # Without comments, the active YAML has exactly these sections.
    assert list(yaml.safe_load(text)) == [
        "jumpoint",
        "tls",
        "state_database",
        "limits",
        "groups",
        "items",
    ]


def test_every_example_line_is_commented() -> None:
    text = template()
    spans = regions(text)
    assert set(spans) == set(REGIONS)
    lines = text.splitlines()
    for name, (start, end) in spans.items():
        assert end - start > 2, name
        for line in lines[start + 1 : end]:
            assert line == "#" or line.startswith("# "), f"{name}: {line!r}"


def test_the_uncommented_examples_have_every_section() -> None:
    text = uncomment(template(), REGIONS)
    config = parse(text)
    assert set(yaml.safe_load(text)) == {
        "jumpoint",
        "tls",
        "state_database",
        "limits",
        "groups",
        "allowed_targets",
        "jump_policies",
        "session_policies",
        "audit",
        "recordings",
        "items",
    }
    groups = config.groups
    assert groups["default"].open == ("*",)
    ops = groups["ops"]
    assert (ops.see, ops.open, ops.manage) == (("*",), ("web", "db"), ("web",))
    assert groups["auditors"].tunnels is False
    restricted = groups["contractors"].restrictions
    assert restricted is not None
    # every field of tunnels_restricted is in the example, with a value of its own
    assert restricted.local == PortSet(((8000, 8999),))
    assert restricted.remote == PortSet(((80, 80), (443, 443)))
    assert restricted.scheme == frozenset({"http", "https"})
    assert restricted.acl is not None and [str(n) for n in restricted.acl] == ["10.1.0.0/16"]
    assert restricted.idle_timeout_min == 15 * 60
    assert (restricted.auto_close_min, restricted.auto_close_max) == (600, 8 * 3600)
    assert restricted.protocol == frozenset({"tcp"})
    contractor_yaml = yaml.safe_load(text)["groups"]["contractors"]["tunnels_restricted"]
    assert set(contractor_yaml) == {
        "local",
        "remote",
        "scheme",
        "acl",
        "idle_timeout_minutes",
        "auto_close",
        "protocol",
        "skip_idle_timeout",
        "terminate_foreign_tunnels",
    }
    allowed = config.allowed_targets
    assert allowed is not None
    assert allowed.describe() == "10.0.0.0/8:22, db.corp.example:5432, :443, 192.168.50.0/24"
    hours = config.policies.jump["business-hours"]
    assert hours.schedule is not None and hours.schedule.timezone == "Europe/Berlin"
    assert hours.schedule.strict and len(hours.schedule.windows) == 2
    assert hours.ticket_id_required and hours.ticket_id_pattern is not None
    assert hours.ticket_id_pattern.fullmatch("OPS-123")
    assert hours.webhook == "https://hooks.corp.example/jumpoint"
    assert hours.notify_events == ("session_start", "session_end")
    approved = config.policies.jump["approved"]
    assert approved.approval_required and approved.approver_group == "admins"
    assert (approved.approval_max_duration, approved.approval_request_timeout) == (
        8 * 3600,
        24 * 3600,
    )
    recorded = config.policies.session["recorded"]
    assert (recorded.recording, recorded.idle_timeout, recorded.auto_close) == (
        True,
        1800,
        8 * 3600,
    )
    assert recorded.max_connections == 16
    assert config.audit_file == Path("/etc/jumpoint/audit.jsonl")
    assert config.recordings_directory == Path("/etc/jumpoint/recordings")
    assert config.recording_buffer_limit == 8388608
    items = {item.name: item for item in config.items}
    assert [item.type for item in config.items] == ["tcp", "mssql", "k8s", "network"]
    web = items["web-prod"]
    assert (web.jump_policy, web.session_policy) == ("business-hours", "recorded")
    assert items["sql-prod"].username == "report_reader"
    assert items["k8s-prod"].ca_pem is not None and items["k8s-prod"].host == "k8s.corp.example"
    assert [rule.describe() for rule in items["lab-net"].filters] == [
        "10.20.0.0/24/tcp/22,443",
        "10.20.1.7-10.20.1.9/udp/161",
        "10.20.1.5/icmp",
    ]


@pytest.mark.parametrize("name", REGIONS)
def test_each_example_works_with_only_what_it_needs(name: str) -> None:
    chosen = (*NEEDS.get(name, ()), name)
    text = uncomment(template(), chosen)
    config = parse(text)
    assert config.name == "corp"
    document = yaml.safe_load(text)
    if name == "groups":
        assert set(document["groups"]) == {"default", "ops", "admins", "auditors", "contractors"}
    else:
        assert document[name], name
    others = set(REGIONS) - set(chosen) - {"groups", "items"}  # those two are always there
    assert not others & set(document), "only the chosen examples are uncommented"
    if "items" not in chosen:
        assert config.items == ()


def test_init_writes_the_template_and_its_examples_pass_check_config(tmp_path: Path) -> None:
    directory = tmp_path / "jp"
    result = CliRunner().invoke(
        cli,
        ["init", "--dir", str(directory), "--name", "corp", "--listen", "0.0.0.0:7443"],
    )
    assert result.exit_code == 0, result.output
    path = directory / "jumpoint.yaml"
    assert path.read_text() == render_config("corp", "0.0.0.0", 7443, ["localhost", "127.0.0.1"])
    path.write_text(uncomment(path.read_text(), REGIONS))
    checked = ok(path, "check-config")
    assert checked.stdout == f"{path}: OK (Jumpoint 'corp', 4 items, 5 groups)\n"


# -- secret files: refused when group or others may read them -------------------


def _with_credential(config: Path, secret: Path) -> None:
    with config.open("a") as handle:
        handle.write(
            f"credentials:\n  - item: db\n    username: app\n    password_file: {secret}\n"
        )


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_a_group_readable_password_file_is_refused_with_the_chmod(
    config_path: Path, command: str
) -> None:
    secret = config_path.parent / "db.secret"
    secret.write_text("hunter2\n")
    secret.chmod(0o640)
    _with_credential(config_path, secret)
    error = failure(config_path, command)
    assert error.exit_code == ExitCode.CONFIG
    line = config_path.read_text().splitlines().index(f"    password_file: {secret}") + 1
    assert error.message.startswith(f"{config_path}:{line}: credentials[0].password_file: ")
    assert "mode 0640" in error.message
    assert f"run `chmod 600 {secret}`" in error.message
    assert "hunter2" not in error.message
    secret.chmod(0o600)
    assert "OK" in ok(config_path, "check-config").stdout


def test_a_world_readable_tls_key_is_refused(config_path: Path) -> None:
    key = config_path.parent / "server.key"
    key.chmod(0o644)
    error = failure(config_path, "check-config")
    assert error.message == (
        f"{config_path}: tls.server_key: {key} is accessible by other users (mode 0644);"
        f" a secret file must be readable by its owner only: run `chmod 600 {key}`"
    )


def test_a_webhook_secret_file_is_checked_and_resolved(config_path: Path) -> None:
    secret = config_path.parent / "webhook.secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o604)
    with config_path.open("a") as handle:
        handle.write(
            "jump_policies:\n  announced:\n    notifications:\n"
            "      webhook: https://hooks.example/j\n      secret_file: webhook.secret\n"
        )
    error = failure(config_path, "check-config")
    assert "jump_policies.announced.notifications.secret_file:" in error.message
    assert f"chmod 600 {secret}" in error.message
    secret.chmod(0o600)
    policy = load_config(config_path).policies.jump["announced"]
    assert policy.webhook_secret is not None and policy.webhook_secret.file == secret
    assert policy.webhook_secret.read() == b"s3cret"


def test_a_webhook_secret_env_must_be_set(
    config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with config_path.open("a") as handle:
        handle.write(
            "jump_policies:\n  announced:\n    notifications:\n"
            "      webhook: https://hooks.example/j\n      secret_env: HOOK_SECRET_FOR_TEST\n"
        )
    monkeypatch.delenv("HOOK_SECRET_FOR_TEST", raising=False)
    error = failure(config_path, "check-config")
    assert "secret_env: the environment variable HOOK_SECRET_FOR_TEST is not set" in (error.message)
    monkeypatch.setenv("HOOK_SECRET_FOR_TEST", "abc")
    policy = load_config(config_path).policies.jump["announced"]
    assert policy.webhook_secret is not None and policy.webhook_secret.read() == b"abc"


# -- user add: the enrollment file ---------------------------------------------------


def test_user_add_writes_a_private_file_with_a_token_and_no_key(config_path: Path) -> None:
    out = enroll(config_path, "alice", "default")
    assert out.stat().st_mode & 0o777 == 0o600
    text = out.read_text()
    assert "PRIVATE KEY" not in text
    loaded = parse_enrollment(text, str(out))
    assert loaded.user == "alice" and loaded.port == 7443
    database = StateDatabase(load_config(config_path).state_database)
    try:
        assert loaded.token not in "\n".join(database.connection.iterdump())
    finally:
        database.close()
    row = audit_rows(config_path)[0]
    assert loaded.token not in json.dumps(row)


def test_user_add_refuses_to_overwrite_a_file_without_force(config_path: Path) -> None:
    out = config_path.parent / "bob.enroll"
    out.write_text("someone else's enrollment\n")
    error = failure(config_path, "user", "add", "alice", "--group", "default", "--out", str(out))
    assert isinstance(error, UsageError) and "exists already" in error.message
    assert error.hint is not None and "--force" in error.hint
    assert out.read_text() == "someone else's enrollment\n"
    assert "alice" not in users_json(config_path)
    assert audit_rows(config_path) == []
    ok(config_path, "user", "add", "alice", "--group", "default", "--out", str(out), "--force")
    assert parse_enrollment(out.read_text(), str(out)).user == "alice"
    assert out.stat().st_mode & 0o777 == 0o600


def test_user_add_writes_nothing_to_the_database_unless_the_file_was_written(
    config_path: Path,
) -> None:
    blocked = config_path.parent / "not-a-directory"
    blocked.write_text("")
    out = blocked / "alice.enroll"
    error = failure(config_path, "user", "add", "alice", "--group", "default", "--out", str(out))
    assert isinstance(error, UsageError) and "cannot write" in error.message
    assert "alice" not in users_json(config_path)
    assert audit_rows(config_path) == []


def test_user_add_writes_no_file_when_the_database_refuses(config_path: Path) -> None:
    enroll(config_path, "alice", "default")
    out = config_path.parent / "again.enroll"
    error = failure(config_path, "user", "add", "alice", "--group", "default", "--out", str(out))
    assert isinstance(error, UsageError) and "already exists" in error.message
    assert not out.exists()
    assert not list(config_path.parent.glob(".again.enroll.*"))  # no staged file left


@pytest.mark.parametrize(
    ("given", "seconds"), [("30m", 1800), ("24h", 86400), ("7d", 7 * 86400), ("90", 90)]
)
def test_user_add_valid_for(config_path: Path, given: str, seconds: int) -> None:
    out = config_path.parent / "alice.enroll"
    before = time.time()
    ok(config_path, "user", "add", "alice", "--group", "default", "--out", str(out),
       "--valid-for", given)  # fmt: skip
    loaded = parse_enrollment(out.read_text(), str(out))
    assert abs(loaded.expires_at.timestamp() - before - seconds) < 60


@pytest.mark.parametrize("given", ["0", "30s", "91d", "soon"])
def test_user_add_refuses_a_bad_valid_for(config_path: Path, given: str) -> None:
    out = config_path.parent / "alice.enroll"
    error = failure(
        config_path, "user", "add", "alice", "--group", "default", "--out", str(out),
        "--valid-for", given,
    )  # fmt: skip
    assert isinstance(error, UsageError) and error.message.startswith("--valid-for:")
    assert not out.exists() and "alice" not in users_json(config_path)


def test_user_list_shows_a_user_whose_token_expired_unused_as_unenrolled(
    config_path: Path,
) -> None:
    enroll(config_path, "alice", "default")
    database = StateDatabase(load_config(config_path).state_database)
    try:
        with database.transaction() as db:
            db.execute("UPDATE enrollment_tokens SET expires_at = 0")
    finally:
        database.close()
    listing = users_json(config_path)["alice"]
    assert listing["status"] == "unenrolled" and listing["enroll_by"] is None
    text = ok(config_path, "user", "list").stdout
    assert re.search(r"^alice +default +unenrolled ", text, re.MULTILINE)


def test_check_config_warns_about_what_keeps_the_host_from_opening_its_items(
    config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jumpoint.network import host_checks

    text = config_path.read_text()
    assert text.endswith("items: []\n")
    config_path.write_text(
        text.replace(
            "items: []\n",
            "items:\n  - name: lab\n    type: network\n    filters: ['198.18.2.0/24/udp/53']\n",
        )
    )
    monkeypatch.setattr(host_checks, "problems", lambda settings: ["the nft command is missing"])
    checked = ok(config_path, "check-config")
    assert "OK" in checked.stdout
    assert "warning: network items: the nft command is missing" in checked.stderr
    monkeypatch.setattr(host_checks, "problems", lambda settings: [])
    assert "warning" not in ok(config_path, "check-config").stderr
