"""The TCP bridge's backpressure and half-close, and the state database."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from jumpoint.state import MIGRATIONS, StateDatabase
from shared import pki
from shared.bridge import PlainRelay, TcpBridge
from shared.errors import UnknownUser, UsageError
from shared.files import write_private
from shared.protocol.frames import FrameParser, FrameType
from shared.protocol.mux import Multiplexer, MuxSettings


class WireTransport(StringTransport):
    """A transport under the mux that records frames and half-closes."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


class Handler:
    def control_received(self, message: dict[str, Any]) -> None:
        pass

    def stream_requested(self, stream: Any, payload: bytes) -> None:
        pass

    def mux_closing(self, code: int, reason: str, by_peer: bool) -> None:
        pass


def make_mux() -> tuple[Multiplexer, StringTransport]:
    mux = Multiplexer(is_client=True, handler=Handler(), clock=Clock(), settings=MuxSettings())
    wire = StringTransport()
    mux.make_connection(wire)
    mux.establish()
    return mux, wire


def frames_in(wire: StringTransport) -> list[Any]:
    return FrameParser(1 << 20).feed(wire.value())


def test_a_full_socket_holds_back_credit_until_it_drains() -> None:
    """Credit is re-opened only once the local socket has taken the data."""
    mux, wire = make_mux()
    stream = mux.open_stream(b"{}")
    local = WireTransport()
    bridge = TcpBridge(stream)
    bridge.makeConnection(local)
    assert local.producer is not None and local.streaming
    window = stream.recv_window
    # the socket's buffer is full: Twisted pauses the registered producer
    local.producer.pauseProducing()
    wire.clear()
    stream._data_received(b"x" * (window // 2))
    assert local.value() == b"x" * (window // 2)  # delivered to the socket's buffer...
    assert not any(f.type is FrameType.WINDOW_UPDATE for f in frames_in(wire))  # ...not credited
    local.producer.resumeProducing()  # drained
    updates = [f for f in frames_in(wire) if f.type is FrameType.WINDOW_UPDATE]
    assert len(updates) == 1


def test_a_stream_that_cannot_send_stops_reading_the_socket() -> None:
    """With a full queue the bridge pauses its socket; it resumes once the queue drains."""
    mux, _wire = make_mux()
    stream = mux.open_stream(b"{}")
    local = WireTransport()
    bridge = TcpBridge(stream)
    bridge.makeConnection(local)
    mux.pauseProducing()  # the channel's TLS transport is full
    bridge.dataReceived(b"y" * (mux.settings.stream_queue_limit + 1))
    assert local.producerState == "paused"
    mux.resumeProducing()
    assert local.producerState == "producing"
    assert stream.queued_bytes == 0


def test_end_of_input_becomes_fin_and_fin_becomes_a_write_shutdown() -> None:
    mux, wire = make_mux()
    stream = mux.open_stream(b"{}")
    local = WireTransport()
    bridge = TcpBridge(stream)
    bridge.makeConnection(local)
    wire.clear()
    bridge.readConnectionLost()
    (fin,) = frames_in(wire)
    assert fin.type is FrameType.DATA and fin.flags & 1 and fin.payload == b""
    stream._fin_received()
    assert local.write_closed
    assert local.producer is None  # unregistered before the half-close (Twisted quirk)


def test_data_before_the_target_connects_waits_without_credit() -> None:
    """On the Jumpoint, bytes that arrive before the target connects are held, uncredited."""
    mux, wire = make_mux()
    stream = mux.open_stream(b"{}")
    bridge = TcpBridge(stream)
    bridge.wait_for_connection()
    wire.clear()
    window = stream.recv_window
    stream._data_received(b"z" * window)
    assert not any(f.type is FrameType.WINDOW_UPDATE for f in frames_in(wire))
    target = WireTransport()
    bridge.makeConnection(target)
    assert target.value() == b"z" * window
    assert any(f.type is FrameType.WINDOW_UPDATE for f in frames_in(wire))


class UpperCaseRelay(PlainRelay):
    """A handler that changes some hooks: the socket's bytes in capitals, and a log of its end."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def socket_data(self, bridge: TcpBridge, data: bytes) -> None:
        bridge.send_to_stream(data.upper())

    def stream_ended(self, bridge: TcpBridge) -> None:
        self.seen.append("stream_ended")
        super().stream_ended(bridge)

    def ended(self, bridge: TcpBridge) -> None:
        self.seen.append(f"ended: {bridge.close_reason}")


def test_a_handler_changes_what_a_bridge_does_and_keeps_the_rest_plain() -> None:
    """A kind's handler answers some hooks itself; the bridge's lifecycle stays the bridge's."""
    mux, wire = make_mux()
    stream = mux.open_stream(b"{}")
    local = WireTransport()
    relay = UpperCaseRelay()
    bridge = TcpBridge(stream, handler=relay)
    bridge.makeConnection(local)
    wire.clear()
    bridge.dataReceived(b"select 1")
    (data,) = frames_in(wire)
    assert data.type is FrameType.DATA and data.payload == b"SELECT 1"
    stream._data_received(b"answer")
    assert local.value() == b"answer"  # the plain hook: unchanged
    stream._fin_received()
    assert local.write_closed and relay.seen == ["stream_ended"]
    bridge.readConnectionLost()  # the plain hook: FIN on the stream, then closed in order
    bridge.connectionLost()
    assert relay.seen == ["stream_ended", "ended: closed"]
    assert bridge.half_close.finished


def test_state_database_users_and_revocation(tmp_path: Path) -> None:
    database = StateDatabase(tmp_path / "state.db")
    assert database.schema_version == len(MIGRATIONS)
    database.add_user("alice", "default", "abc1", "2099-01-01")
    with pytest.raises(UsageError, match="already exists"):
        database.add_user("alice", "default", "abc2", "2099-01-01")
    user, why = database.user_for_certificate("abc1")
    assert user is not None and user.name == "alice" and why == ""
    other = StateDatabase(tmp_path / "state.db")  # the admin command: another connection
    before = database.data_version()
    assert other.revoke_user("alice") == 1
    assert database.data_version() != before  # the daemon notices
    user, why = database.user_for_certificate("abc1")
    assert user is None and "revoked" in why
    assert database.user_for_certificate("ffff") == (
        None,
        "the certificate is not registered on this Jumpoint",
    )
    with pytest.raises(UnknownUser):
        other.revoke_user("bob")
    # re-enrolling a revoked user issues a new certificate; the old one stays revoked
    database.add_user("alice", "ops", "abc3", "2099-01-01")
    assert database.user_for_certificate("abc3")[0] is not None
    assert database.user_for_certificate("abc1")[0] is None
    assert [u.group for u in database.list_users()] == ["ops"]
    reopened = StateDatabase(tmp_path / "state.db")  # migrations are not re-run
    assert reopened.schema_version == len(MIGRATIONS)


def test_private_files_are_0600(tmp_path: Path) -> None:
    ca = pki.create_ca("unit")
    write_private(tmp_path / "ca.key", ca.key_pem)
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    server = pki.issue_server(ca, "unit", ["jump.corp.example", "10.0.0.5", "::1"])
    from cryptography import x509

    names = server.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert names.value.get_values_for_type(x509.DNSName) == ["jump.corp.example"]
    assert [str(a) for a in names.value.get_values_for_type(x509.IPAddress)] == ["10.0.0.5", "::1"]


def test_a_version_1_database_is_migrated_keeping_its_users(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "state.db"
    old = sqlite3.connect(path)
    old.executescript(MIGRATIONS[0])
    old.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    old.execute("INSERT INTO schema_version VALUES (1)")
    old.execute("INSERT INTO users VALUES ('alice', 'ops', '2026-01-01T00:00:00+00:00', NULL)")
    old.execute("INSERT INTO certificates VALUES ('c1', 'alice', '2026-01-01', '2099-01-01', NULL)")
    old.commit()
    old.close()
    database = StateDatabase(path)
    assert database.schema_version == len(MIGRATIONS)
    assert database.groups_of("alice") == ("ops",)
    user, _ = database.user_for_certificate("c1")
    assert user is not None and user.all_groups == ("ops",)
    database.set_groups("alice", ("ops", "dba"))
    assert database.groups_of("alice") == ("ops", "dba")
    assert [u.all_groups for u in database.list_users()] == [("ops", "dba")]


def test_a_durable_audit_event_that_cannot_be_written_fails_the_request(tmp_path: Path) -> None:
    import sqlite3

    from twisted.internet.defer import fail

    from jumpoint.audit import AuditLog, query
    from jumpoint.db_thread import InlineDatabase
    from shared.errors import StateUnavailable

    database = StateDatabase(tmp_path / "state.db")
    inline = InlineDatabase(database.connection)

    class Writer:  # the database thread, whose disk fills up
        full = False

        def submit(self, job: Any) -> Any:
            if self.full:
                return fail(sqlite3.OperationalError("database or disk is full"))
            return inline.submit(job)

        def stop(self) -> Any:
            return inline.stop()

    writer = Writer()
    audit = AuditLog(writer, tmp_path / "audit.jsonl", Clock())
    outcomes: list[object] = []
    audit.record("session_opened", user="alice", durable=True).addBoth(outcomes.append)
    assert outcomes == [None]
    assert [e.event for e in query(database)] == ["session_opened"]

    writer.full = True
    audit.record("session_opened", user="bob", durable=True).addErrback(
        lambda failure: outcomes.append(failure.value)
    )
    assert isinstance(outcomes[-1], StateUnavailable)  # a full disk: unavailable, fail closed
    assert outcomes[-1].code == "state_unavailable"
    assert "cannot reach its state database" in outcomes[-1].message
    assert audit.spooled == 0  # the refused decision is not retried later
    writer.full = False
    assert [e.user for e in query(database)] == ["alice"]  # nothing half-written
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"user":"alice"' in lines[0]


def test_a_watch_or_upgraded_connection_is_never_idle() -> None:
    """A long-running connection (a watch, an exec) keeps the session open without traffic."""
    from types import SimpleNamespace

    from jumpoint.session import Session
    from shared.items import Item

    clock = Clock()
    closed: list[str] = []

    class Watch:  # what the session reads of a bridge
        def __init__(self) -> None:
            self.stream = SimpleNamespace(
                bytes_received=0, bytes_sent=0, queued_bytes=0, receive_paused=False
            )
            self.connected = True
            self.long_running = True

    watch = Watch()
    session = Session(
        session_id="s",
        user="alice",
        item=Item(name="k", type="k8s"),
        max_connections=4,
        opened_at=0.0,
        terms=SimpleNamespace(idle_timeout=60.0, deadlines=()),  # type: ignore[arg-type]
        on_expired=lambda s, code, reason: closed.append(code),
    )
    session.active.add(watch)  # type: ignore[arg-type]
    session.start_timers(clock)
    for _ in range(30):
        clock.advance(10)
    assert closed == []  # 300 s without a byte, but the watch is open
    watch.long_running = False
    for _ in range(10):
        clock.advance(10)
    assert closed == ["idle_timeout"]
