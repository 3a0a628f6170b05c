"""Pending TLS handshakes are capped in all and per source address (issue 9, point 7).

The cap logic runs on a fake clock (L{PendingHandshakes}); then the real
Jumpoint listener (TLS around L{JumpointChannel}) is fed half-finished
ClientHellos in memory and keeps its table, its descriptors and its log
bounded while an enrolled console still gets through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, globalLogPublisher

from jumpoint.config import parse_config
from jumpoint.handshakes import PendingHandshakes
from jumpoint.server import JumpointCore, JumpointFactory
from jumpoint.state import StateDatabase
from shared import pki
from shared.errors import ConfigError
from shared.protocol.tls import server_options, wrap_server
from tests.unit.test_channel_tls import Pki, make_pair, result_of

PARTIAL_CLIENT_HELLO = bytes.fromhex("160301020001") + b"\x00\x01\xfc\x03\x03" + b"\x00" * 40
"""A TLS record header announcing a 512-byte ClientHello, and only its first bytes."""


class Connection:
    """A pending connection: remembers whether the table aborted it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


@pytest.fixture(scope="module")
def keys() -> Pki:
    ca = pki.create_ca("unit")
    return Pki(
        ca, pki.issue_server(ca, "unit", ["127.0.0.1"]), pki.issue_client(ca, "alice", "default")
    )


@pytest.fixture
def logged() -> Any:
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def handshake_lines(events: list[LogEvent]) -> list[LogEvent]:
    return [e for e in events if "TLS handshake" in str(e.get("log_format", ""))]


def test_the_oldest_pending_handshake_is_closed_over_the_global_cap() -> None:
    table = PendingHandshakes(Clock(), max_pending=3, max_per_address=10)
    connections = [Connection(f"c{i}") for i in range(5)]
    for index, connection in enumerate(connections):
        table.started(connection, f"10.0.0.{index}", connection.abort)
    assert [c.aborted for c in connections] == [True, True, False, False, False]
    assert len(table) == 3


def test_the_oldest_from_the_same_address_is_closed_over_the_per_address_cap() -> None:
    table = PendingHandshakes(Clock(), max_pending=100, max_per_address=2)
    other = Connection("other")
    table.started(other, "10.0.0.9", other.abort)
    flood = [Connection(f"f{i}") for i in range(4)]
    for connection in flood:
        table.started(connection, "10.0.0.1", connection.abort)
    assert [c.aborted for c in flood] == [True, True, False, False]
    assert not other.aborted  # another address keeps its slot
    assert table.pending_from("10.0.0.1") == 2 and table.pending_from("10.0.0.9") == 1


def test_completed_and_failed_handshakes_leave_the_table() -> None:
    table = PendingHandshakes(Clock(), max_pending=2, max_per_address=2)
    first, second, third = Connection("1"), Connection("2"), Connection("3")
    table.started(first, "10.0.0.1", first.abort)
    table.started(second, "10.0.0.1", second.abort)
    table.completed(first)
    table.failed(second, "10.0.0.1:5", "reset")
    assert len(table) == 0 and table.pending_from("10.0.0.1") == 0
    table.started(third, "10.0.0.1", third.abort)
    assert not any(c.aborted for c in (first, second, third))
    table.failed(first, "10.0.0.1:4", "late")  # unknown by now: ignored
    assert len(table) == 1


def test_one_summary_line_per_interval_instead_of_a_line_per_connection(
    logged: list[LogEvent],
) -> None:
    clock = Clock()
    table = PendingHandshakes(clock, max_pending=10, max_per_address=5, log_interval=60.0)
    for index in range(1100):
        connection = Connection(str(index))
        table.started(connection, f"10.0.{index % 3}.1", connection.abort)
        if index % 2:
            table.failed(connection, "peer", "connection lost", timed_out=index % 4 == 1)
    # The first problem is logged at once; the rest wait for the summary.
    assert len(handshake_lines(logged)) == 1
    clock.advance(59.9)
    assert len(handshake_lines(logged)) == 1
    clock.advance(0.1)
    lines = handshake_lines(logged)
    assert len(lines) == 2
    summary = lines[1]
    # Every connection that left the table unfinished is counted, but for the one logged.
    assert summary["total"] == 1100 - len(table) - 1
    assert summary["failed"] + summary["timed_out"] + summary["closed_over_cap"] == summary["total"]
    assert (summary["failed"], summary["timed_out"]) == (275, 274)
    assert summary["pending"] == len(table) == 9
    assert "10.0.0.1" in summary["top"]
    # A quiet interval ends the summaries; the next problem is logged at once.
    clock.advance(60)
    assert len(handshake_lines(logged)) == 2
    clock.advance(60)
    assert clock.getDelayedCalls() == []
    late = Connection("late")
    table.started(late, "10.9.9.9", late.abort)
    table.failed(late, "10.9.9.9:1", "reset")
    assert len(handshake_lines(logged)) == 3


def test_the_summary_counts_a_bounded_number_of_sources() -> None:
    clock = Clock()
    table = PendingHandshakes(clock, max_pending=1, max_per_address=1)
    for index in range(5000):
        connection = Connection(str(index))
        table.started(connection, f"10.{index // 250}.{index % 250}.1", connection.abort)
    assert len(table._sources) <= 1025


def test_caps_are_configuration_keys_with_defaults(tmp_path: Path) -> None:
    base = 'jumpoint: {name: unit, listen: "127.0.0.1:7443", addresses: ["127.0.0.1"]'
    config = parse_config(base + "}\n", tmp_path / "jumpoint.yaml")
    assert (config.max_pending_handshakes, config.max_pending_handshakes_per_address) == (512, 32)
    config = parse_config(
        base + ", max_pending_handshakes: 64, max_pending_handshakes_per_address: 4}\n",
        tmp_path / "jumpoint.yaml",
    )
    assert (config.max_pending_handshakes, config.max_pending_handshakes_per_address) == (64, 4)
    with pytest.raises(ConfigError, match="max_pending_handshakes"):
        parse_config(base + ", max_pending_handshakes: 0}\n", tmp_path / "jumpoint.yaml")


CONFIG = """
jumpoint:
  name: unit
  listen: "127.0.0.1:7443"
  addresses: ["127.0.0.1"]
  max_pending_handshakes: 20
  max_pending_handshakes_per_address: 8
"""


def test_the_listener_holds_at_most_the_cap_of_half_finished_client_hellos(
    tmp_path: Path, keys: Pki, logged: list[LogEvent]
) -> None:
    clock = Clock()
    core = JumpointCore(
        config=parse_config(CONFIG, tmp_path / "jumpoint.yaml"),
        database=StateDatabase(tmp_path / "state.db"),
        clock=clock,
        connect_target=lambda host, port, protocol: None,  # type: ignore[arg-type,return-value]
    )
    factory = wrap_server(
        server_options(keys.ca.certificate_pem, keys.server.certificate_pem, keys.server.key_pem),
        JumpointFactory(core),
    )
    transports: list[StringTransport] = []
    for index in range(1100):
        source = f"127.0.{index % 50}.{1 + index // 50}"
        transport = StringTransport(peerAddress=IPv4Address("TCP", source, 40000 + index))
        protocol = factory.buildProtocol(transport.getPeer())
        protocol.makeConnection(transport)
        protocol.dataReceived(PARTIAL_CLIENT_HELLO)
        transports.append(transport)
        open_now = [t for t in transports if not t.disconnecting]
        assert len(open_now) <= 20
    assert len(core.handshakes) == 20
    assert [t.disconnecting for t in transports[-20:]] == [False] * 20  # the newest stay
    # One line at once and one summary per interval, not one per connection.
    assert len(handshake_lines(logged)) == 1
    clock.advance(60)
    assert len(handshake_lines(logged)) == 2
    core.handshakes.stop()


def test_an_enrolled_console_still_gets_through(tmp_path: Path, keys: Pki) -> None:
    pair = make_pair(tmp_path, keys)
    assert result_of(pair.console.welcome)["user"] == "alice"
    assert len(pair.core.handshakes) == 0  # completed: no longer pending
