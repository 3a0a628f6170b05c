"""The sd_notify sender: real AF_UNIX datagram sockets receive what systemd would."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from jumpoint import sd_notify


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listening:
        listening.bind(str(path))
        listening.settimeout(5)
        yield listening, {"NOTIFY_SOCKET": str(path)}


def _fields(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().split("\n"))


def test_ready_reloading_and_stopping_reach_the_socket(
    receiver: tuple[socket.socket, dict[str, str]],
) -> None:
    listening, environ = receiver
    assert sd_notify.ready("serving 127.0.0.1:7443\nsecond line", environ)
    ready = _fields(listening.recv(4096))
    assert ready == {"READY": "1", "STATUS": "serving 127.0.0.1:7443 second line"}
    before = sd_notify.monotonic_usec()
    assert sd_notify.reloading(environ)
    reloading = _fields(listening.recv(4096))
    assert reloading["RELOADING"] == "1"
    assert before <= int(reloading["MONOTONIC_USEC"]) <= sd_notify.monotonic_usec()
    assert sd_notify.stopping(environ)
    assert _fields(listening.recv(4096))["STOPPING"] == "1"


def test_an_abstract_socket_name_starts_with_at() -> None:
    name = f"jumpoint-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listening:
        listening.bind("\0" + name)
        listening.settimeout(5)
        assert sd_notify.notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert listening.recv(4096) == b"READY=1"


def test_without_notify_socket_nothing_is_sent_and_a_dead_socket_is_not_fatal(
    tmp_path: Path,
) -> None:
    assert sd_notify.notify("READY=1", {}) is False
    assert sd_notify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody")}) is False


def test_status_text_is_one_bounded_line() -> None:
    assert sd_notify.status_line("a\nb\tc") == "a b c"
    assert len(sd_notify.status_line("x" * 1000)) == sd_notify.MAX_STATUS


def test_a_status_line_alone_reaches_the_socket(
    receiver: tuple[socket.socket, dict[str, str]],
) -> None:
    listening, environ = receiver
    assert sd_notify.status("the state database is unavailable (in_file=3)", environ)
    assert _fields(listening.recv(4096)) == {
        "STATUS": "the state database is unavailable (in_file=3)"
    }
