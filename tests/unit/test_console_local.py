"""The console's local side: listener errors, profiles, enrollment files, the CLI's errors."""

from __future__ import annotations

import datetime
import errno
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import ServerFactory

from console import cli as jump_cli
from console.listeners import bind, check_local_address
from console.profiles import load_profile, save_profile
from console.view import JsonView, RateMeter, human_bytes
from shared import pki
from shared.enrollment import Enrollment, parse_enrollment
from shared.errors import AccessDenied, EnrollmentError, ExitCode, LocalBindError, ProfileError


class FakePort:
    def __init__(self, port: int) -> None:
        self.port = port

    def getHost(self) -> Any:
        return type("Address", (), {"port": self.port})()


def failing_listen(code: int, succeed_on: str | None = None) -> Any:
    calls: list[tuple[int, str]] = []

    def listen(port: int, factory: ServerFactory, address: str) -> FakePort:
        calls.append((port, address))
        if address == succeed_on:
            return FakePort(port or 49152)
        raise CannotListenError(address, port, OSError(code, os.strerror(code)))

    listen.calls = calls  # type: ignore[attr-defined]
    return listen


def test_port_in_use_suggests_another_loopback_address() -> None:
    with pytest.raises(LocalBindError) as info:
        bind(failing_listen(errno.EADDRINUSE), "127.0.0.5", 5432, ServerFactory())
    assert info.value.message == "local port 127.0.0.5:5432 is already in use"
    assert info.value.hint is not None and "--local-address 127.0.0.6" in info.value.hint
    assert info.value.exit_code == ExitCode.LOCAL_BIND


def test_privileged_port_says_why() -> None:
    with pytest.raises(LocalBindError, match="needs privilege") as info:
        bind(failing_listen(errno.EACCES), "127.0.0.1", 443, ServerFactory())
    assert info.value.hint is not None and "1024" in info.value.hint


def test_outside_loopback_is_refused_before_binding() -> None:
    listen = failing_listen(errno.EADDRINUSE)
    with pytest.raises(LocalBindError, match="outside 127.0.0.0/8"):
        bind(listen, "192.168.1.10", 80, ServerFactory())
    assert listen.calls == []
    with pytest.raises(LocalBindError, match="not an IPv4 address"):
        check_local_address("localhost")


def test_macos_without_alias_falls_back_to_127_0_0_1() -> None:
    listen = failing_listen(errno.EADDRNOTAVAIL, succeed_on="127.0.0.1")
    result = bind(listen, "127.0.0.5", 5432, ServerFactory(), platform="darwin")
    assert result.fell_back and result.address == "127.0.0.1"
    assert listen.calls == [(5432, "127.0.0.5"), (0, "127.0.0.1")]


def test_missing_alias_elsewhere_prints_the_ifconfig_command_on_macos_only() -> None:
    with pytest.raises(LocalBindError) as info:
        bind(
            failing_listen(errno.EADDRNOTAVAIL),
            "127.0.0.5",
            1,
            ServerFactory(),
            platform="darwin",
            allow_fallback=False,
        )
    assert info.value.hint is not None and "sudo ifconfig lo0 alias 127.0.0.5 up" in info.value.hint
    with pytest.raises(LocalBindError) as linux:
        bind(failing_listen(errno.EADDRNOTAVAIL), "127.0.0.5", 1, ServerFactory(), platform="linux")
    assert linux.value.hint is not None and "ifconfig" not in linux.value.hint


def test_real_port_in_use() -> None:
    """The same error with a real socket and the real reactor's listenTCP."""
    from twisted.internet import reactor

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(LocalBindError, match="already in use"):
            bind(
                lambda p, f, a: reactor.listenTCP(p, f, interface=a),  # type: ignore[attr-defined]
                "127.0.0.1",
                port,
                ServerFactory(),
            )


def _enrollment() -> Enrollment:
    ca = pki.create_ca("unit")
    return Enrollment(
        "unit",
        "127.0.0.1",
        7443,
        "127.0.0.1",
        "alice",
        ca.certificate_pem.decode(),
        "A" * 43,
        datetime.datetime(2026, 12, 3, 15, 0, tzinfo=datetime.UTC),
    )


def test_enrollment_round_trip_and_profile_modes(tmp_path: Path) -> None:
    enrollment = _enrollment()
    parsed = parse_enrollment(enrollment.to_yaml(), "alice.enroll")
    assert parsed == enrollment
    key_pem, _ = pki.new_key_and_request("alice")
    certificate = pki.issue_client(pki.create_ca("unit"), "alice", "default").certificate_pem
    profile = save_profile(parsed, certificate, key_pem, None, tmp_path)
    assert profile.name == "unit" and profile.address == "127.0.0.1:7443"
    key = profile.directory / "client.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes() == key_pem
    assert stat.S_IMODE(profile.directory.stat().st_mode) == 0o700
    assert load_profile(None, tmp_path) == profile  # remembered as current


def test_enrollment_errors_are_clear() -> None:
    enrollment = _enrollment()
    document = yaml.safe_load(enrollment.to_yaml())
    document["token"] = "secret-but-short"
    with pytest.raises(EnrollmentError, match="expected a token of 43 characters") as info:
        parse_enrollment(yaml.safe_dump(document), "x.enroll")
    assert "secret-but-short" not in info.value.message  # a token is never quoted
    with pytest.raises(EnrollmentError, match="x.enroll:1: missing required key"):
        parse_enrollment("kind: jump-enrollment\n", "x.enroll")
    old = {**yaml.safe_load(enrollment.to_yaml()), "version": 1}
    with pytest.raises(EnrollmentError, match="version 1") as old_info:
        parse_enrollment(yaml.safe_dump(old), "old.enroll")
    assert old_info.value.hint is not None and "one-time token" in old_info.value.hint
    document = yaml.safe_load(enrollment.to_yaml())
    document["expires_at"] = "tomorrow"
    with pytest.raises(EnrollmentError, match="expires_at"):
        parse_enrollment(yaml.safe_dump(document), "x.enroll")


def test_no_profile_says_how_to_enroll(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as info:
        load_profile(None, tmp_path)
    assert info.value.hint is not None and "jump enroll" in info.value.hint


def test_cli_errors_have_no_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUMP_HOME", str(tmp_path))
    result = CliRunner().invoke(jump_cli.cli, ["items"])
    assert isinstance(result.exception, ProfileError)
    with pytest.raises(SystemExit) as exited:
        jump_cli.main(["items"])
    assert exited.value.code == ExitCode.CONFIG
    bad = tmp_path / "bad.enroll"
    bad.write_text("kind: nope\n")
    with pytest.raises(SystemExit) as exited:
        jump_cli.main(["enroll", str(bad)])
    assert exited.value.code == ExitCode.CONFIG


def test_errors_are_a_json_error_event_under_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JUMP_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as exited:
        jump_cli.main(["items", "--json"])
    assert exited.value.code == ExitCode.CONFIG
    out, err = capsys.readouterr()
    event = json.loads(out)
    assert event["event"] == "error" and event["code"] == "profile"
    assert event["message"] in err
    with pytest.raises(SystemExit):
        jump_cli.main(["items"])
    assert capsys.readouterr().out == ""  # without --json: stderr only


def test_a_denial_as_json_names_its_rule() -> None:
    from shared.entrypoint import wants_json

    denial = AccessDenied("no", rule="tunnels_restricted.acl")
    assert {"event": "error", **denial.to_json()} == {
        "event": "error",
        "code": "denied",
        "message": "no (rule: tunnels_restricted.acl)",
        "rule": "tunnels_restricted.acl",
    }
    assert wants_json(["open", "web", "--json", "--", "cmd"])
    assert not wants_json(["open", "web", "--", "cmd", "--json"])


def test_open_rejects_a_bad_duration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUMP_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as exited:
        jump_cli.main(["open", "web", "--for", "soon"])
    assert exited.value.code == ExitCode.USAGE


def test_json_view_emits_ready_stats_closed() -> None:
    import io

    out = io.StringIO()
    clock = iter([0.0, 1.0, 2.0])
    view = JsonView(out, lambda: next(clock))
    tunnel = {
        "local_address": "127.0.0.5",
        "local_port": 5432,
        "remote_host": "db",
        "remote_port": 5432,
    }
    counters = {
        **tunnel,
        "status": "listening",
        "connections": 1,
        "total_connections": 1,
        "refused_connections": 0,
        "failed_connections": 0,
        "bytes_to_remote": 0,
        "bytes_from_remote": 0,
        "last_error": None,
    }
    view.ready("db", "s1", [tunnel])
    view.update([counters])
    view.update([{**counters, "bytes_from_remote": 1000}])
    view.closed("interrupted", "interrupted by the user", [{**counters, "bytes_from_remote": 1000}])
    import json

    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["ready", "stats", "stats", "closed"]
    assert events[0]["tunnels"] == [tunnel]
    assert events[2]["tunnels"][0]["receive_rate"] == 1000.0
    assert events[3]["reason"] == "interrupted by the user"


def test_rates_and_sizes() -> None:
    times = iter([0.0, 2.0])
    meter = RateMeter(lambda: next(times))
    first = {"bytes_to_remote": 0, "bytes_from_remote": 0}
    assert meter.rates([first]) == [(0.0, 0.0)]
    assert meter.rates([{"bytes_to_remote": 200, "bytes_from_remote": 4000}]) == [(100.0, 2000.0)]
    assert human_bytes(512) == "512 B" and human_bytes(1536) == "1.5 KiB"
