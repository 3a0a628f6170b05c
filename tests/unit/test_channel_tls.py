"""The whole channel in memory: real TLS 1.3 (iosim), the console and the Jumpoint.

No sockets: L{twisted.test.iosim} moves bytes between the two TLS protocols,
a L{Clock} drives time, and targets are L{StringTransport}s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump, connectedServerAndClient

from console.channel import ConsoleChannel
from console.profiles import Profile
from jumpoint.audit import query
from jumpoint.config import parse_config
from jumpoint.db_thread import InlineDatabase
from jumpoint.server import JumpointCore, JumpointFactory
from jumpoint.state import StateDatabase
from jumpoint.store.change_notice import USERS, Change
from jumpoint.store.connection import POSTGRESQL
from jumpoint.store.error_kinds import DatabaseUnavailable
from shared import pki
from shared.errors import CertificateRejected, SessionLost, StateUnavailable, UnknownItem
from shared.protocol import control
from shared.protocol.control import StreamTarget
from shared.protocol.frames import ErrorCode
from shared.protocol.tls import client_options, server_options, wrap_client, wrap_server

CONFIG = """
jumpoint: {name: unit, listen: "127.0.0.1:7443", addresses: ["127.0.0.1"]}
groups: {default: {jump_groups: ["*"]}}
items:
  - name: web
    type: tcp
    host: 10.1.2.3
    tunnels: [{local_port: auto, remote_port: 80}, {local_port: 8443, remote_port: 443}]
"""


@dataclass
class Pki:
    ca: pki.KeyPair
    server: pki.KeyPair
    alice: pki.KeyPair


@pytest.fixture(scope="module")
def keys() -> Pki:
    ca = pki.create_ca("unit")
    return Pki(
        ca, pki.issue_server(ca, "unit", ["127.0.0.1"]), pki.issue_client(ca, "alice", "default")
    )


class TargetTransport(StringTransport):
    """A target connection that records a shutdown of writing (half-close)."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


@dataclass
class Targets:
    """The fake connect_target: records each request and lets the test complete it."""

    requests: list[tuple[str, int, Protocol, Deferred[Any]]] = field(default_factory=list)

    def __call__(self, host: str, port: int, protocol: Protocol) -> Deferred[Any]:
        attempt: Deferred[Any] = Deferred()
        self.requests.append((host, port, protocol, attempt))
        return attempt

    def connect(self, index: int = 0) -> TargetTransport:
        _, _, protocol, attempt = self.requests[index]
        transport = TargetTransport()
        protocol.makeConnection(transport)
        attempt.callback(protocol)
        return transport


class RecordingApp:
    """A stream application that records what it is told."""

    def __init__(self) -> None:
        self.data = b""
        self.ended = False
        self.reset: tuple[int, str] | None = None

    def stream_data(self, data: bytes) -> None:
        self.data += data

    def stream_ended(self) -> None:
        self.ended = True

    def stream_reset(self, code: int, reason: str) -> None:
        self.reset = (code, reason)

    def pause_sending(self) -> None:
        pass

    def resume_sending(self) -> None:
        pass


@dataclass
class Pair:
    console: ConsoleChannel
    core: JumpointCore
    targets: Targets
    pump: IOPump
    clock: Clock


def make_pair(
    tmp_path: Path,
    keys: Pki,
    client: pki.KeyPair | None = None,
    register: bool = True,
    reader: Any = None,
) -> Pair:
    clock = Clock()
    config = parse_config(CONFIG, tmp_path / "jumpoint.yaml")
    database = StateDatabase(tmp_path / "state.db")
    client = client or keys.alice
    if register:
        database.add_user("alice", "default", client.serial, "2099-01-01")
    targets = Targets()
    core = JumpointCore(
        config=config, database=database, clock=clock, connect_target=targets, reader=reader
    )
    server_factory = wrap_server(
        server_options(keys.ca.certificate_pem, keys.server.certificate_pem, keys.server.key_pem),
        JumpointFactory(core),
    )
    profile = Profile("unit", tmp_path, "unit", "127.0.0.1", 7443, "127.0.0.1", "alice")
    console = ConsoleChannel(clock, profile)
    client_factory = wrap_client(
        client_options(
            "127.0.0.1", keys.ca.certificate_pem, client.certificate_pem, client.key_pem
        ),
        Factory.forProtocol(lambda: console),
    )
    _, _, pump = connectedServerAndClient(
        lambda: server_factory.buildProtocol(None),
        lambda: client_factory.buildProtocol(None),
        clock=clock,
    )
    pump.flush()
    return Pair(console, core, targets, pump, clock)


def result_of(deferred: Deferred[Any]) -> Any:
    results: list[Any] = []
    deferred.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def test_handshake_and_welcome(tmp_path: Path, keys: Pki) -> None:
    """Mutual TLS 1.3 succeeds and the Jumpoint welcomes the user named by the certificate."""
    pair = make_pair(tmp_path, keys)
    welcome = result_of(pair.console.welcome)
    assert welcome["user"] == "alice" and welcome["jumpoint"] == "unit"
    assert pair.console.transport.negotiatedProtocol == b"jumpoint/1"  # type: ignore[union-attr]
    assert len(pair.core.channels) == 1


def test_open_session_and_a_stream_end_to_end(tmp_path: Path, keys: Pki) -> None:
    """A session opens; a stream to an allowed target is connected and carries data both ways."""
    pair = make_pair(tmp_path, keys)
    opening = pair.console.request(control.OPEN_SESSION, item="web")
    pair.pump.flush()
    session = result_of(opening)
    assert [t["remote_port"] for t in session["tunnels"]] == [80, 443]
    assert session["tunnels"][1]["local_port"] == 8443
    assert session["max_connections"] == 256

    assert pair.console.mux is not None
    stream = pair.console.mux.open_stream(StreamTarget("10.1.2.3", 443).encode())
    app = RecordingApp()
    stream.attach(app)
    stream.write(b"GET / HTTP/1.0\r\n\r\n")
    pair.pump.flush()
    ((host, port, bridge, _),) = pair.targets.requests
    assert (host, port) == ("10.1.2.3", 443)
    target = pair.targets.connect()
    assert target.value() == b"GET / HTTP/1.0\r\n\r\n"
    bridge.dataReceived(b"HTTP/1.0 200 OK\r\n\r\nhello")
    pair.pump.flush()
    assert app.data == b"HTTP/1.0 200 OK\r\n\r\nhello"
    # half-close from the console becomes a write shutdown at the target
    stream.end_write()
    pair.pump.flush()
    assert target.write_closed and not target.disconnecting
    assert pair.core.sessions()[0].total_connections == 1


def test_a_target_outside_the_item_is_denied(tmp_path: Path, keys: Pki) -> None:
    """Only the item's host and remote ports are reachable; the reset names the rule."""
    pair = make_pair(tmp_path, keys)
    pair.console.request(control.OPEN_SESSION, item="web")
    pair.pump.flush()
    assert pair.console.mux is not None
    for target in (StreamTarget("10.1.2.3", 22), StreamTarget("10.9.9.9", 80)):
        stream = pair.console.mux.open_stream(target.encode())
        app = RecordingApp()
        stream.attach(app)
        pair.pump.flush()
        assert app.reset is not None
        assert app.reset[0] == ErrorCode.DENIED
        assert "is not a tunnel of item 'web'" in app.reset[1]
    assert pair.targets.requests == []


def test_unreachable_target_resets_only_that_stream(tmp_path: Path, keys: Pki) -> None:
    """A refused connection resets its stream with REFUSED; the channel stays up."""
    from twisted.internet.error import ConnectionRefusedError

    pair = make_pair(tmp_path, keys)
    pair.console.request(control.OPEN_SESSION, item="web")
    pair.pump.flush()
    assert pair.console.mux is not None
    stream = pair.console.mux.open_stream(StreamTarget("10.1.2.3", 80).encode())
    app = RecordingApp()
    stream.attach(app)
    pair.pump.flush()
    pair.targets.requests[0][3].errback(Failure(ConnectionRefusedError()))
    pair.pump.flush()
    assert app.reset is not None and app.reset[0] == ErrorCode.REFUSED
    assert "refused the connection" in app.reset[1]
    listing = pair.console.request(control.LIST_ITEMS)
    pair.pump.flush()
    assert [i["name"] for i in result_of(listing)["items"]] == ["web"]


def test_unknown_item_is_a_clear_error(tmp_path: Path, keys: Pki) -> None:
    pair = make_pair(tmp_path, keys)
    opening = pair.console.request(control.OPEN_SESSION, item="nope")
    pair.pump.flush()
    with pytest.raises(UnknownItem, match="no item named 'nope'"):
        result_of(opening)


def test_a_certificate_from_another_ca_is_rejected(tmp_path: Path, keys: Pki) -> None:
    """The Jumpoint's TLS layer refuses it; the console says which side rejected it."""
    other_ca = pki.create_ca("other")
    stranger = pki.issue_client(other_ca, "alice", "default")
    pair = make_pair(tmp_path, keys, client=stranger, register=False)
    with pytest.raises(CertificateRejected, match="the Jumpoint rejected this console's"):
        result_of(pair.console.welcome)
    assert pair.core.channels == set()


def test_an_unregistered_certificate_is_rejected(tmp_path: Path, keys: Pki) -> None:
    """A certificate signed by the CA but unknown to the state database is refused."""
    pair = make_pair(tmp_path, keys, register=False)
    with pytest.raises(CertificateRejected, match="not registered"):
        result_of(pair.console.welcome)


def test_revocation_closes_the_session(tmp_path: Path, keys: Pki) -> None:
    """Revoking the user closes their open session with the reason, without a restart."""
    pair = make_pair(tmp_path, keys)
    pair.console.request(control.OPEN_SESSION, item="web")
    pair.pump.flush()
    pair.core.check_revocations()  # nothing revoked yet
    assert pair.core.channels
    admin = StateDatabase(tmp_path / "state.db")  # `jumpoint user revoke`: another connection
    admin.revoke_user("alice")
    admin.close()
    pair.core.check_revocations()
    pair.pump.flush()
    error = result_of(pair.console.lost)
    assert isinstance(error, SessionLost)
    assert "revoked" in error.message
    assert pair.console.session_closed_reason is not None
    assert pair.core.channels == set()


def test_keepalive_drops_a_silent_peer(tmp_path: Path, keys: Pki) -> None:
    """With no answer to pings, the Jumpoint gives up after the keepalive timeout."""
    pair = make_pair(tmp_path, keys)
    (channel,) = pair.core.channels
    assert channel.mux is not None
    # the pump is never run again: the console's pongs never come back
    timeout = pair.core.config.limits.keepalive_timeout
    pair.clock.advance(pair.core.config.limits.keepalive_interval)
    pair.clock.advance(timeout + 1)
    assert channel.mux.closing


def test_the_transcript_holds_plaintext_and_is_private(
    tmp_path: Path, keys: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JUMP_TRANSCRIPT is created 0600 (an existing file is narrowed to 0600 first)."""
    import os
    import stat

    fresh = tmp_path / "fresh.bin"
    old = tmp_path / "old.bin"
    old.write_bytes(b"")
    old.chmod(0o644)
    previous = os.umask(0o022)
    try:
        for transcript in (fresh, old):
            monkeypatch.setenv("JUMP_TRANSCRIPT", str(transcript))
            directory = tmp_path / transcript.stem
            directory.mkdir()
            pair = make_pair(directory, keys)
            assert result_of(pair.console.welcome)["user"] == "alice"
            assert stat.S_IMODE(transcript.stat().st_mode) == 0o600
            assert b'"welcome"' in transcript.read_bytes()  # the channel's plaintext
    finally:
        os.umask(previous)


def _tcp_of(protocol: Any) -> Any:
    """The in-memory TCP transport under a TLS-wrapped channel protocol."""
    return protocol.transport.transport


def test_the_jumpoint_aborts_a_dead_console(tmp_path: Path, keys: Pki) -> None:
    # Regression (issue 9, point 11): a polite TLS close to a dead console waits for a
    # close_notify that never comes, keeping the connection ESTABLISHED.
    pair = make_pair(tmp_path, keys)
    (channel,) = pair.core.channels
    limits = pair.core.config.limits
    pair.clock.advance(limits.keepalive_timeout)
    assert channel.mux is not None and channel.mux.closing
    assert _tcp_of(channel).disconnecting  # aborted: a polite close would wait
    pair.pump.flush()
    assert pair.core.channels == set()


def test_the_console_follows_the_jumpoints_keepalive(tmp_path: Path, keys: Pki) -> None:
    global CONFIG
    saved = CONFIG
    CONFIG = saved + "limits: {keepalive_interval: 2s, keepalive_timeout: 5s}\n"
    try:
        pair = make_pair(tmp_path, keys)
    finally:
        CONFIG = saved
    welcome = result_of(pair.console.welcome)
    assert (welcome["keepalive_interval"], welcome["keepalive_timeout"]) == (2.0, 5.0)
    assert pair.console.mux is not None
    assert pair.console.mux.settings.keepalive_timeout == 5.0
    assert pair.console.mux.settings.keepalive_interval == 2.0


def test_a_dead_jumpoint_is_a_lost_connection_on_the_console(tmp_path: Path, keys: Pki) -> None:
    """The console gives up on a silent Jumpoint: aborted, and said to be lost, not closed."""
    pair = make_pair(tmp_path, keys)
    (channel,) = pair.core.channels
    assert channel.mux is not None
    channel.mux.settings = channel.mux.settings.__class__(keepalive_timeout=1e9)
    pair.clock.advance(45.0)  # nothing pumped: the Jumpoint is frozen
    assert pair.console.mux is not None and pair.console.mux.closing
    assert _tcp_of(pair.console).disconnecting
    pair.pump.flush()
    error = result_of(pair.console.lost)
    assert isinstance(error, SessionLost) and error.exit_code == 9
    assert error.message == (
        "the connection to the Jumpoint was lost: no answer to a keepalive ping within 45s"
    )
    assert "the Jumpoint closed" not in error.message


class HeldReader:
    """A reader whose jobs wait until released (as PostgreSQL's reader threads take time)."""

    def __init__(self, path: Path) -> None:
        self.inline = InlineDatabase(StateDatabase(path).connection)
        self.jobs: list[tuple[Any, Deferred[Any]]] = []

    def submit(self, job: Any) -> Deferred[Any]:
        waiting: Deferred[Any] = Deferred()
        self.jobs.append((job, waiting))
        return waiting

    def release(self) -> int:
        count = 0
        while self.jobs:
            job, waiting = self.jobs.pop(0)
            self.inline.submit(job).chainDeferred(waiting)
            count += 1
        return count

    def stop(self) -> Deferred[None]:
        return self.inline.stop()


def test_reads_off_the_reactor_hold_the_console_until_they_answer(
    tmp_path: Path, keys: Pki
) -> None:
    """With a reader that answers later, the hello waits for the user and the open for its item."""
    StateDatabase(tmp_path / "state.db").close()
    reader = HeldReader(tmp_path / "state.db")
    pair = make_pair(tmp_path, keys, reader=reader)
    assert not pair.console.welcome.called and not pair.core.channels
    assert reader.release() == 1  # the certificate's user; the waiting hello is replayed
    pair.pump.flush()
    assert result_of(pair.console.welcome)["user"] == "alice"
    listed = pair.console.request(control.LIST_ITEMS)
    pair.pump.flush()
    assert not listed.called  # the console's items are being read
    assert reader.release() == 1
    pair.pump.flush()
    assert [i["name"] for i in result_of(listed)["items"]] == ["web"]
    opened = pair.console.request(control.OPEN_SESSION, item="web")  # configured: no read
    pair.pump.flush()
    assert result_of(opened)["session"]
    admin = StateDatabase(tmp_path / "state.db")
    admin.revoke_user("alice")
    admin.close()
    pair.core.database.backend = POSTGRESQL  # its re-checks use the reader, not the writer
    pair.core.changed(Change(USERS, "alice"))  # as the PostgreSQL change feed says
    pair.core.changed(None)  # a second change while the first check runs: one more check
    assert len(reader.jobs) == 1  # one check at a time ...
    assert reader.release() == 2  # ... and the second change's check runs after the first
    pair.pump.flush()
    assert isinstance(result_of(pair.console.lost), SessionLost)
    assert pair.core.channels == set()


class UnreachableOnce(HeldReader):
    """A reader whose first job fails as a stopped PostgreSQL server does."""

    def submit(self, job: Any) -> Deferred[Any]:
        if not self.jobs:
            self.jobs.append((job, Deferred()))
            return fail(DatabaseUnavailable("the Jumpoint cannot reach its state database now"))
        return self.inline.submit(job)


def test_a_console_connecting_while_the_database_is_unreachable_is_refused_everything(
    tmp_path: Path, keys: Pki
) -> None:
    """Fail closed: welcomed by its certificate's name, every request refused until re-checked."""
    StateDatabase(tmp_path / "state.db").close()
    pair = make_pair(tmp_path, keys, reader=UnreachableOnce(tmp_path / "state.db"))
    assert result_of(pair.console.welcome)["user"] == "alice"
    (channel,) = pair.core.channels
    assert channel.provisional
    listed = pair.console.request(control.LIST_ITEMS)
    pair.pump.flush()
    with pytest.raises(StateUnavailable, match="cannot reach its state database"):
        result_of(listed)
    pair.core.log_audit.flush()  # a record: committed with the next batch
    refused = [e.event for e in query(pair.core.database, event="request_refused")]
    assert refused == ["request_refused"]
    pair.core.changed(None)  # the resync once the database is back confirms the user
    assert not channel.provisional
    listed = pair.console.request(control.LIST_ITEMS)
    pair.pump.flush()
    assert [i["name"] for i in result_of(listed)["items"]] == ["web"]
