"""The Jumpoint's rules, enforced through the real channel.

Every test runs real consoles (L{console.channel.ConsoleChannel}) against a
real L{JumpointCore} over in-memory TLS 1.3 (L{twisted.test.iosim}), with a
fake clock and fake targets, and checks what a user would see: the reply,
the error's code and rule, the C{session_closed} code, and the audit rows.

The clock starts at 0, which is Thursday 1970-01-01 00:00 UTC; the strict
schedule below (thu 00:00-00:10 UTC) is built around that.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from sqlite3 import OperationalError
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump, connectedServerAndClient

from console.channel import ConsoleChannel
from console.profiles import Profile
from jumpoint.audit import AuditEntry, query
from jumpoint.config import parse_config
from jumpoint.dialing import Resolve
from jumpoint.recording import SessionRecorder, SynchronousWriter
from jumpoint.server import JumpointCore, JumpointFactory
from jumpoint.state import StateDatabase
from shared import pki
from shared.bridge import TcpBridge
from shared.errors import (
    AccessDenied,
    ConfigError,
    ConsentRequired,
    ExitCode,
    JumpError,
    StateUnavailable,
    UsageError,
)
from shared.protocol import control
from shared.protocol.control import StreamTarget
from shared.protocol.frames import ErrorCode
from shared.protocol.mux import Stream
from shared.protocol.tls import client_options, server_options, wrap_client, wrap_server
from tests.unit.test_channel_tls import RecordingApp, TargetTransport

CONFIG = """
jumpoint: {name: unit, listen: "127.0.0.1:7443", addresses: ["127.0.0.1"]}
groups:
  default:
    jump_groups: {see: ["*"], open: ["*"], manage: ["lab*"]}
  admins:
    jump_groups: {see: ["*"], open: ["*"], manage: ["*"]}
    tunnels_restricted: {terminate_foreign_tunnels: true}
  approvers:
    jump_groups: {see: ["*"], open: ["*"]}
  restricted:
    jump_groups: ["*"]
    tunnels_restricted: {local: ["20000-20100"]}
jump_policies:
  ticketed: {ticket_id_required: true, ticket_id_pattern: "INC-[0-9]+"}
  office:
    schedule:
      timezone: UTC
      strict: true
      windows: [{days: [thu], start: "00:00", end: "00:10"}]
  approval: {approval_required: true, approver_group: approvers, approval_max_duration: 1h}
session_policies:
  idle: {idle_timeout: 60s}
  short: {auto_close: 5m}
  capped: {max_connections: 2}
  recorded: {recording: true}
items:
  - name: web
    type: tcp
    host: 10.1.2.3
    tag: frontend
    tunnels: [{local_port: auto, remote_port: 80}, {local_port: 8443, remote_port: 443}]
  - {name: idle, type: tcp, host: 10.1.2.4, session_policy: idle,
     tunnels: [{local_port: auto, remote_port: 22}]}
  - {name: short, type: tcp, host: 10.1.2.5, session_policy: short,
     tunnels: [{local_port: auto, remote_port: 22}]}
  - {name: capped, type: tcp, host: 10.1.2.6, session_policy: capped,
     tunnels: [{local_port: auto, remote_port: 22}]}
  - {name: recorded, type: tcp, host: 10.1.2.7, session_policy: recorded,
     tunnels: [{local_port: auto, remote_port: 22}]}
  - {name: ticketed, type: tcp, host: 10.1.2.8, jump_policy: ticketed,
     tunnels: [{local_port: auto, remote_port: 22}]}
  - {name: office, type: tcp, host: 10.1.2.9, jump_policy: office,
     tunnels: [{local_port: auto, remote_port: 22}]}
  - {name: guarded, type: tcp, host: 10.1.2.10, jump_policy: approval,
     tunnels: [{local_port: auto, remote_port: 5432}]}
  - {name: auto, type: tcp, host: 10.1.2.11, tunnels: [{local_port: auto, remote_port: 22}]}
"""

ALLOW_LIST = """
allowed_targets: ["10.1.0.0/16"]
"""

ALLOW_LIST_ITEMS = """
  - {name: inside, type: tcp, host: db.internal, tunnels: [{local_port: auto, remote_port: 5432}]}
  - {name: mixed, type: tcp, host: mixed.internal,
     tunnels: [{local_port: auto, remote_port: 5432}]}
"""

USERS: dict[str, tuple[str, ...]] = {
    "alice": ("default",),
    "bob": ("default",),
    "carol": ("approvers", "default"),
    "dave": ("admins",),
    "erin": ("restricted",),
}


@dataclass
class Keys:
    ca: pki.KeyPair
    server: pki.KeyPair
    users: dict[str, pki.KeyPair]


@pytest.fixture(scope="module")
def keys() -> Keys:
    ca = pki.create_ca("unit")
    return Keys(
        ca,
        pki.issue_server(ca, "unit", ["127.0.0.1"]),
        {name: pki.issue_client(ca, name, groups[0]) for name, groups in USERS.items()},
    )


@dataclass
class Targets:
    """The fake connect_target: records each request and lets the test complete it."""

    requests: list[tuple[str, int, TcpBridge, Deferred[Any]]] = field(default_factory=list)

    def __call__(self, host: str, port: int, protocol: Protocol) -> Deferred[Any]:
        assert isinstance(protocol, TcpBridge)
        attempt: Deferred[Any] = Deferred()
        self.requests.append((host, port, protocol, attempt))
        return attempt

    def connect(self, index: int = -1) -> tuple[TargetTransport, TcpBridge]:
        _, _, bridge, attempt = self.requests[index]
        transport = TargetTransport()
        bridge.makeConnection(transport)
        attempt.callback(bridge)
        return transport, bridge


class ReplyError(AssertionError):
    """The request has no reply yet."""


@dataclass
class Console:
    """One user's console connected to the world's Jumpoint."""

    user: str
    channel: ConsoleChannel
    pump: IOPump
    world: World

    def send(self, kind: str, **fields: Any) -> Deferred[dict[str, Any]]:
        pending = self.channel.request(kind, **fields)
        self.world.flush()
        return pending

    def ask(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Send a request and return its result (raises the error reply's L{JumpError})."""
        result: dict[str, Any] = outcome(self.send(kind, **fields))
        return result

    def refused(self, kind: str, **fields: Any) -> JumpError:
        """Send a request that must fail; return the error."""
        with pytest.raises(JumpError) as caught:
            self.ask(kind, **fields)
        return caught.value

    def open(self, item: str, **fields: Any) -> dict[str, Any]:
        return self.ask(control.OPEN_SESSION, item=item, **fields)

    def stream(self, host: str, port: int) -> tuple[Stream, RecordingApp]:
        assert self.channel.mux is not None
        stream = self.channel.mux.open_stream(StreamTarget(host, port).encode())
        app = RecordingApp()
        stream.attach(app)
        self.world.flush()
        return stream, app

    def closed_code(self) -> str | None:
        """The code of the C{session_closed} the console received, if any."""
        closed = self.channel.session_closed_reason
        return None if closed is None else closed[0]

    def closed_text(self) -> str:
        closed = self.channel.session_closed_reason
        assert closed is not None
        return closed[1]


@dataclass
class World:
    """One Jumpoint (core), its clock and targets, and the consoles connected to it."""

    tmp_path: Path
    keys: Keys
    core: JumpointCore
    clock: Clock
    targets: Targets
    consoles: list[Console] = field(default_factory=list)

    def connect(self, user: str) -> Console:
        server_factory = _server_factory(self)
        client = self.keys.users[user]
        profile = Profile("unit", self.tmp_path, "unit", "127.0.0.1", 7443, "127.0.0.1", user)
        channel = ConsoleChannel(self.clock, profile)
        client_factory = _client_factory(self.keys, client, channel)
        _, _, pump = connectedServerAndClient(
            lambda: server_factory.buildProtocol(None),
            lambda: client_factory.buildProtocol(None),
            clock=self.clock,
        )
        console = Console(user, channel, pump, self)
        self.consoles.append(console)
        self.flush()
        assert outcome(channel.welcome)["user"] == user
        return console

    def flush(self) -> None:
        for _ in range(3):
            for console in self.consoles:
                console.pump.flush()

    def advance(self, seconds: float, step: float = 1.0) -> None:
        """Advance the clock in steps, moving bytes after each (keepalives keep flowing)."""
        left = seconds
        while left > 1e-9:
            now = min(step, left)
            self.clock.advance(now)
            left -= now
            self.flush()

    def audit(self, event: str, **filters: Any) -> list[AuditEntry]:
        self.core.log_audit.flush()
        return query(self.core.database, event=event, **filters)


def _server_factory(world: World) -> Any:
    keys = world.keys
    return wrap_server(
        server_options(keys.ca.certificate_pem, keys.server.certificate_pem, keys.server.key_pem),
        JumpointFactory(world.core),
    )


def _client_factory(keys: Keys, client: pki.KeyPair, channel: ConsoleChannel) -> Any:
    return wrap_client(
        client_options(
            "127.0.0.1", keys.ca.certificate_pem, client.certificate_pem, client.key_pem
        ),
        Factory.forProtocol(lambda: channel),
    )


def outcome(deferred: Deferred[Any]) -> Any:
    """The result of a fired Deferred, or raise its failure (consumes the result)."""
    results: list[Any] = []
    deferred.addBoth(results.append)
    if not results:
        raise ReplyError("the Deferred has not fired")
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def make_world(
    tmp_path: Path,
    keys: Keys,
    *,
    config: str = CONFIG,
    resolve: Resolve | None = None,
    recordings: Path | None = None,
) -> World:
    clock = Clock()
    parsed = parse_config(config, tmp_path / "jumpoint.yaml")
    database = StateDatabase(tmp_path / "state.db")
    for name, groups in USERS.items():
        database.add_user(name, groups[0], keys.users[name].serial, "2099-01-01", groups[1:])
    targets = Targets()
    extra: dict[str, Any] = {}
    if resolve is not None:
        extra["resolve"] = resolve
    if recordings is not None:
        directory = recordings

        def new_recorder(session_id: str, link_type: int) -> SessionRecorder:
            return SessionRecorder(
                directory, session_id, clock, writer=SynchronousWriter(), link_type=link_type
            )

        extra["new_recorder"] = new_recorder
    core = JumpointCore(
        config=parsed, database=database, clock=clock, connect_target=targets, **extra
    )
    return World(tmp_path, keys, core, clock, targets)


@pytest.fixture
def new_world(tmp_path: Path, keys: Keys) -> Iterator[Callable[..., World]]:
    """Build a world with options of L{make_world}; its database is closed afterwards."""
    made: list[World] = []

    def build(**options: Any) -> World:
        built = make_world(tmp_path, keys, **options)
        made.append(built)
        return built

    yield build
    for built in made:
        built.core.database.close()


@pytest.fixture
def world(new_world: Callable[..., World]) -> World:
    return new_world()


def names(result: dict[str, Any]) -> list[str]:
    return [item["name"] for item in result["items"]]


# -- 1. item management --------------------------------------------------------


def test_item_lifecycle_over_the_channel(world: World) -> None:
    """Create, list with filters, show, change (tunnels, move, tag, comments), delete."""
    alice = world.connect("alice")
    created = alice.ask(
        control.CREATE_ITEM,
        item={
            "name": "labdb",
            "type": "tcp",
            "host": "db.lab.example",
            "jump_group": "lab",
            "tag": "db",
            "tunnels": [{"local_port": "auto", "remote_port": 5432}],
        },
    )["item"]
    assert created["source"] == "console" and created["read_only"] is False
    assert created["created_by"] == "alice" and created["may_manage"] is True
    assert created["tunnels"] == [{"local_port": "auto", "remote_port": 5432, "protocol": "tcp"}]

    assert names(alice.ask(control.LIST_ITEMS, search="LAB.EXAMPLE")) == ["labdb"]
    assert names(alice.ask(control.LIST_ITEMS, tag="db")) == ["labdb"]
    assert names(alice.ask(control.LIST_ITEMS, tag="frontend")) == ["web"]
    assert "labdb" not in names(alice.ask(control.LIST_ITEMS, tag=""))
    assert "web" not in names(alice.ask(control.LIST_ITEMS, tag=""))
    assert names(alice.ask(control.LIST_ITEMS, jump_group="lab")) == ["labdb"]
    assert "labdb" in names(alice.ask(control.LIST_ITEMS))
    shown = alice.ask(control.SHOW_ITEM, item="labdb")["item"]
    assert shown["host"] == "db.lab.example" and shown["jump_group"] == "lab"

    def change(kind: str, value: str) -> dict[str, Any]:
        result: dict[str, Any] = alice.ask(
            control.CHANGE_ITEM, item="labdb", change=kind, value=value
        )["item"]
        return result

    assert change("tunnel_add", "15432:5433")["tunnels"] == [
        {"local_port": "auto", "remote_port": 5432, "protocol": "tcp"},
        {"local_port": 15432, "remote_port": 5433, "protocol": "tcp"},
    ]
    with pytest.raises(UsageError, match="already has tunnel"):
        change("tunnel_add", "15432:5433")
    assert change("tunnel_remove", "auto:5432")["tunnels"] == [
        {"local_port": 15432, "remote_port": 5433, "protocol": "tcp"}
    ]
    with pytest.raises(UsageError, match="has no tunnel 1:2"):
        change("tunnel_remove", "1:2")
    with pytest.raises(UsageError, match="is the last tunnel"):
        change("tunnel_remove", "15432:5433")
    with pytest.raises(UsageError, match="not LOCAL:REMOTE"):
        change("tunnel_add", "nonsense")
    with pytest.raises(UsageError, match="unknown item change"):
        change("rename", "x")

    assert change("tag", "  primary ")["tag"] == "primary"
    assert change("tag", "   ")["tag"] is None
    assert "labdb" in names(alice.ask(control.LIST_ITEMS, tag=""))
    assert change("comments", "the lab database")["comments"] == "the lab database"
    assert change("comments", "")["comments"] is None

    moved = change("move", "lab2")
    assert moved["jump_group"] == "lab2"
    denied = alice.refused(control.CHANGE_ITEM, item="labdb", change="move", value="prod")
    assert isinstance(denied, AccessDenied) and denied.rule == "groups.jump_groups.manage"
    assert alice.ask(control.SHOW_ITEM, item="labdb")["item"]["jump_group"] == "lab2"
    # the stored item survives a reload from the database
    stored = world.core.catalog.get("labdb")
    assert stored is not None and stored.jump_group == "lab2"
    assert stored.tunnels[0].remote_port == 5433 and stored.created_by == "alice"

    assert alice.ask(control.DELETE_ITEM, item="labdb")["item"] == "labdb"
    assert "labdb" not in names(alice.ask(control.LIST_ITEMS))
    assert world.core.catalog.get("labdb") is None

    assert [e.item for e in world.audit("item_created")] == ["labdb"]
    assert world.audit("item_created")[0].user == "alice"
    changes = [e.detail["change"] for e in world.audit("item_changed")]
    assert changes == ["tunnel_add", "tunnel_remove", "tag", "tag", "comments", "comments", "move"]
    assert [(e.user, e.item) for e in world.audit("item_deleted")] == [("alice", "labdb")]


def test_item_management_refusals(world: World) -> None:
    """Read-only config items, unmanaged jump groups, invalid fields, clashing names."""
    alice = world.connect("alice")
    for kind, value in (("tag", "x"), ("comments", "x"), ("tunnel_add", "9000:9000")):
        error = alice.refused(control.CHANGE_ITEM, item="web", change=kind, value=value)
        assert isinstance(error, UsageError) and "read-only" in error.message
    error = alice.refused(control.DELETE_ITEM, item="web")
    assert isinstance(error, UsageError) and "read-only" in error.message

    spec = {
        "name": "proddb",
        "type": "tcp",
        "host": "10.9.9.9",
        "jump_group": "prod",
        "tunnels": [{"local_port": "auto", "remote_port": 5432}],
    }
    denied = alice.refused(control.CREATE_ITEM, item=spec)
    assert isinstance(denied, AccessDenied) and denied.rule == "groups.jump_groups.manage"
    assert "prod" in denied.message

    bad_port = {**spec, "jump_group": "lab", "tunnels": [{"remote_port": 70000}]}
    invalid = alice.refused(control.CREATE_ITEM, item=bad_port)
    assert isinstance(invalid, ConfigError) and invalid.code == "config_invalid"
    assert "tunnels[0].remote_port" in invalid.message
    unknown_key = {**spec, "jump_group": "lab", "colour": "blue"}
    invalid = alice.refused(control.CREATE_ITEM, item=unknown_key)
    assert isinstance(invalid, ConfigError) and "colour" in invalid.message
    no_policy = {**spec, "jump_group": "lab", "session_policy": "nope"}
    invalid = alice.refused(control.CREATE_ITEM, item=no_policy)
    assert isinstance(invalid, UsageError) and "session_policy" in invalid.message
    clash = {**spec, "name": "web", "jump_group": "lab"}
    invalid = alice.refused(control.CREATE_ITEM, item=clash)
    assert isinstance(invalid, UsageError) and "jumpoint.yaml" in invalid.message

    assert world.audit("item_created") == []
    assert "proddb" not in names(alice.ask(control.LIST_ITEMS))

    # moving needs manage on both jump groups: alice manages lab*, not prod
    dave = world.connect("dave")
    dave.ask(control.CREATE_ITEM, item=spec)
    shown = alice.ask(control.SHOW_ITEM, item="proddb")["item"]
    assert shown["may_manage"] is False and shown["created_by"] == "dave"
    for kind, value in (("move", "lab"), ("tag", "mine"), ("tunnel_add", "1:2")):
        denied = alice.refused(control.CHANGE_ITEM, item="proddb", change=kind, value=value)
        assert isinstance(denied, AccessDenied) and denied.rule == "groups.jump_groups.manage"
    denied = alice.refused(control.DELETE_ITEM, item="proddb")
    assert isinstance(denied, AccessDenied) and denied.rule == "groups.jump_groups.manage"
    assert (
        dave.ask(control.CHANGE_ITEM, item="proddb", change="move", value="lab")["item"][
            "jump_group"
        ]
        == "lab"
    )
    assert alice.ask(control.SHOW_ITEM, item="proddb")["item"]["may_manage"] is True
    assert [e.user for e in world.audit("item_changed")] == ["dave"]


def test_other_item_kinds_are_created_but_not_opened(world: World) -> None:
    """mssql, k8s (real PEM) and network items are stored; a network session needs the TUN."""
    alice = world.connect("alice")
    pem = pki.create_ca("x").certificate_pem.decode()
    specs: list[dict[str, Any]] = [
        {"name": "sql", "type": "mssql", "host": "sql.lab", "username": "sa", "jump_group": "lab"},
        {
            "name": "cluster",
            "type": "k8s",
            "url": "https://k8s.lab:6443",
            "ca_pem": pem,
            "namespace": "apps",
            "jump_group": "lab",
        },
        {"name": "net", "type": "network", "filters": ["10.0.0.0/24/tcp/22"], "jump_group": "lab"},
    ]
    for spec in specs:
        created = alice.ask(control.CREATE_ITEM, item=spec)["item"]
        assert created["type"] == spec["type"] and created["source"] == "console"
    assert alice.ask(control.SHOW_ITEM, item="sql")["item"]["port"] == 1433
    cluster = alice.ask(control.SHOW_ITEM, item="cluster")["item"]
    assert cluster["ca_certificates"] == 1 and "ca_pem" not in cluster
    assert world.audit("item_created", item="cluster")[0].detail["spec"]["ca_pem"] == (
        "1 certificates"
    )
    # only tcp items have tunnels
    error = alice.refused(control.CHANGE_ITEM, item="sql", change="tunnel_add", value="1:2")
    assert isinstance(error, UsageError) and "only tcp items" in error.message
    # this in-memory Jumpoint has no descriptors to watch, so no TUN interface: refused, audited
    refusal = alice.refused(control.OPEN_SESSION, item="net")
    assert isinstance(refusal, AccessDenied) and refusal.rule == "network.unavailable"
    assert world.audit("session_denied", item="net")[0].rule == "network.unavailable"
    assert world.core.sessions() == []
    # the channel still opens a tcp item afterwards
    assert alice.open("web")["session"]


# -- 2. idle timeout -----------------------------------------------------------


def test_idle_session_is_closed(world: World) -> None:
    """No traffic for the session policy's idle_timeout: session_closed idle_timeout."""
    alice = world.connect("alice")
    opened = alice.open("idle")
    assert opened["idle_timeout"] == 60
    world.advance(59)
    assert world.core.sessions() and alice.closed_code() is None
    world.advance(1)
    assert alice.closed_code() is not None
    assert alice.closed_code() == "idle_timeout" and "no traffic for 1m" in alice.closed_text()
    assert world.core.sessions() == []
    (row,) = world.audit("session_closed")
    assert row.detail["code"] == "idle_timeout" and row.session == opened["session"]


@pytest.mark.parametrize("direction", ["to_target", "from_target"])
def test_traffic_keeps_the_session_open(world: World, direction: str) -> None:
    """Bytes through a stream every few seconds, in either direction, reset the idle timer."""
    alice = world.connect("alice")
    alice.open("idle")
    stream, app = alice.stream("10.1.2.4", 22)
    target, bridge = world.targets.connect()

    def traffic() -> None:
        if direction == "to_target":
            stream.write(b"ping")
        else:
            bridge.dataReceived(b"pong")

    for _ in range(40):  # 200 s
        world.advance(5)
        traffic()
        world.flush()
    assert alice.closed_code() is None and len(world.core.sessions()) == 1
    if direction == "to_target":
        assert target.value() == b"ping" * 40
    else:
        assert app.data == b"pong" * 40
    # then silence: closed about a minute later
    world.advance(75)
    assert alice.closed_code() == "idle_timeout"


def test_a_target_that_does_not_read_counts_as_busy(world: World) -> None:
    """A connection whose target holds back (paused producer: credit held) is not idle."""
    alice = world.connect("alice")
    alice.open("idle")
    stream, _ = alice.stream("10.1.2.4", 22)
    target, bridge = world.targets.connect()
    stream.write(b"x" * 1000)
    world.flush()
    assert target.value() == b"x" * 1000
    assert target.producer is not None
    target.producer.pauseProducing()  # the target's socket buffer is full
    assert bridge.stream.receive_paused
    world.advance(200)
    assert alice.closed_code() is None and len(world.core.sessions()) == 1
    target.producer.resumeProducing()
    world.advance(75)
    assert alice.closed_code() == "idle_timeout"


def test_data_queued_for_the_console_counts_as_busy(world: World) -> None:
    """Bytes from the target waiting for the console's credit keep the session busy."""
    alice = world.connect("alice")
    alice.open("idle")
    stream, app = alice.stream("10.1.2.4", 22)
    _, bridge = world.targets.connect()
    stream.pause_receiving()  # the console's local client does not read
    window = world.core.mux_settings().initial_window
    bridge.dataReceived(b"y" * (window + 10_000))
    world.flush()
    assert bridge.stream.queued_bytes == 10_000
    world.advance(200)
    assert alice.closed_code() is None and len(world.core.sessions()) == 1
    stream.resume_receiving()
    world.flush()
    assert len(app.data) == window + 10_000 and bridge.stream.queued_bytes == 0
    world.advance(75)
    assert alice.closed_code() == "idle_timeout"


def test_the_session_policy_idle_timeout_binds_every_request(world: World) -> None:
    """A shorter idle timeout may be asked for; turning the policy's off may not (even with
    skip_idle_timeout), and without a policy only skip_idle_timeout allows it."""
    alice = world.connect("alice")  # unrestricted: skip_idle_timeout
    denied = alice.refused(control.OPEN_SESSION, item="idle", idle_timeout=0)
    assert isinstance(denied, AccessDenied)
    assert denied.rule == "session_policies.idle.idle_timeout"
    denied = alice.refused(control.OPEN_SESSION, item="idle", idle_timeout=61)
    assert isinstance(denied, AccessDenied)
    assert denied.rule == "session_policies.idle.idle_timeout"
    assert alice.open("web", idle_timeout=0)["idle_timeout"] is None
    alice.ask(control.CLOSE_SESSION, reason="next")
    assert alice.open("idle", idle_timeout=30)["idle_timeout"] == 30
    world.advance(30)
    assert alice.closed_code() == "idle_timeout"

    erin = world.connect("erin")  # restricted, without skip_idle_timeout
    denied = erin.refused(control.OPEN_SESSION, item="auto", idle_timeout=0)
    assert isinstance(denied, AccessDenied)
    assert denied.rule == "tunnels_restricted.skip_idle_timeout"


@pytest.mark.parametrize(
    ("field_name", "value"),
    [("idle_timeout", float("nan")), ("idle_timeout", float("inf")), ("auto_close", float("nan"))],
)
def test_non_finite_durations_are_refused(world: World, field_name: str, value: float) -> None:
    """JSON carries NaN and Infinity; a NaN idle timeout used to switch the timeout off."""
    alice = world.connect("alice")
    error = alice.refused(control.OPEN_SESSION, item="idle", **{field_name: value})
    assert isinstance(error, UsageError) and field_name in error.message
    assert world.core.sessions() == []


# -- 3. auto close and strict schedules ---------------------------------------


def test_requested_auto_close(world: World) -> None:
    alice = world.connect("alice")
    opened = alice.open("web", auto_close=120)
    assert opened["closes_at"] == 120 and "auto_close" in opened["closes_because"]
    world.advance(119)
    assert alice.closed_code() is None
    world.advance(1)
    assert alice.closed_code() == "auto_close"
    assert world.core.sessions() == []


def test_session_policy_auto_close(world: World) -> None:
    alice = world.connect("alice")
    denied = alice.refused(control.OPEN_SESSION, item="short", auto_close=600)
    assert isinstance(denied, AccessDenied)
    assert denied.rule == "session_policies.short.auto_close"
    assert alice.open("short")["closes_at"] == 300
    world.advance(299, step=5)
    assert alice.closed_code() is None
    world.advance(1)
    assert alice.closed_code() == "auto_close"
    assert "5m" in alice.closed_text()


def test_strict_schedule_window_end_closes_the_session(world: World) -> None:
    """thu 00:00-00:10 UTC strict: opened at 00:01, closed at 00:10 with code schedule."""
    alice = world.connect("alice")
    world.advance(60)
    opened = alice.open("office")
    assert opened["closes_at"] == 600
    world.advance(539, step=5)
    assert alice.closed_code() is None
    world.advance(1)
    assert alice.closed_code() == "schedule"
    (row,) = world.audit("session_closed")
    assert row.detail["code"] == "schedule"


# -- 4. connection cap ---------------------------------------------------------


def test_connection_cap(world: World) -> None:
    alice = world.connect("alice")
    opened = alice.open("capped")
    assert opened["max_connections"] == 2
    first, _ = alice.stream("10.1.2.6", 22)
    alice.stream("10.1.2.6", 22)
    _, third = alice.stream("10.1.2.6", 22)
    assert third.reset is not None and third.reset[0] == ErrorCode.LIMIT
    assert "2 connections" in third.reset[1]
    assert len(world.targets.requests) == 2
    (row,) = world.audit("connection_denied")
    assert row.rule == "max_connections" and row.session == opened["session"]
    # a finished connection frees its place
    first.reset(ErrorCode.CANCEL, "done")
    world.flush()
    _, fourth = alice.stream("10.1.2.6", 22)
    assert fourth.reset is None and len(world.targets.requests) == 3


def test_session_stats_reads_the_channel_s_own_session_only(world: World) -> None:
    alice = world.connect("alice")
    refused = alice.refused(control.SESSION_STATS)
    assert isinstance(refused, UsageError) and "no session is open" in refused.message
    bob = world.connect("bob")
    bobs = bob.open("web")["session"]
    assert isinstance(alice.refused(control.SESSION_STATS), UsageError)  # not bob's
    own = bob.ask(control.SESSION_STATS)["session"]
    (listed,) = bob.ask(control.LIST_SESSIONS)["sessions"]
    assert own["session"] == bobs and own.keys() == listed.keys()
    assert "link" not in own  # a tcp session has no packet link


# -- 5. foreign sessions -------------------------------------------------------


def test_foreign_sessions(world: World, tmp_path: Path) -> None:
    alice = world.connect("alice")
    bob = world.connect("bob")
    dave = world.connect("dave")
    bobs = bob.open("web")["session"]
    listed = bob.ask(control.LIST_SESSIONS)["sessions"]
    assert [(s["session"], s["user"], s["item"]) for s in listed] == [(bobs, "bob", "web")]
    assert alice.ask(control.LIST_SESSIONS)["sessions"] == []

    denied = alice.refused(control.LIST_SESSIONS, all=True)
    assert isinstance(denied, AccessDenied)
    assert denied.rule == "tunnels_restricted.terminate_foreign_tunnels"
    everyone = dave.ask(control.LIST_SESSIONS, all=True)["sessions"]
    assert [s["session"] for s in everyone] == [bobs]

    denied = alice.refused(control.CLOSE_SESSION, session=bobs, reason="mine now")
    assert isinstance(denied, AccessDenied)
    assert denied.rule == "tunnels_restricted.terminate_foreign_tunnels"
    assert bob.closed_code() is None and len(world.core.sessions()) == 1
    (row,) = world.audit("close_denied")
    assert row.user == "alice" and row.session == bobs

    # alice joins the admins (another connection, like `jumpoint user groups`)
    admin = StateDatabase(tmp_path / "state.db")
    admin.set_groups("alice", ("default", "admins"))
    admin.close()
    world.core.check_revocations()
    assert [s["session"] for s in alice.ask(control.LIST_SESSIONS, all=True)["sessions"]] == [bobs]
    assert alice.ask(control.CLOSE_SESSION, session=bobs, reason="maintenance")["session"] == bobs
    world.flush()
    assert bob.closed_code() == "closed_by_other"
    assert "closed by alice: maintenance" in bob.closed_text()
    assert world.core.sessions() == []
    (row,) = world.audit("session_terminated")
    assert row.user == "alice" and row.detail["owner"] == "bob"
    # an unknown session
    error = dave.refused(control.CLOSE_SESSION, session="0" * 16, reason="x")
    assert error.code == "unknown_session"


def test_closing_the_own_session(world: World) -> None:
    """close_session without a session id: streams are reset, later OPENs denied."""
    alice = world.connect("alice")
    opened = alice.open("web")
    _, app = alice.stream("10.1.2.3", 80)
    target, _ = world.targets.connect()
    assert alice.ask(control.CLOSE_SESSION, reason="done")["session"] == opened["session"]
    world.flush()
    assert app.reset is not None and app.reset[0] == ErrorCode.SESSION_CLOSED
    assert target.disconnecting or target.disconnected
    _, late = alice.stream("10.1.2.3", 80)
    assert late.reset is not None and late.reset[0] == ErrorCode.DENIED
    assert alice.closed_code() is None  # the user closed it: no session_closed
    assert world.core.sessions() == []
    (row,) = world.audit("session_closed")
    assert row.detail["code"] == "closed_by_user" and "done" in row.detail["reason"]
    (connection,) = world.audit("connection_closed")
    assert connection.session == opened["session"]
    error = alice.refused(control.CLOSE_SESSION, reason="again")
    assert isinstance(error, UsageError)
    # the channel may open a new session afterwards
    assert alice.open("web")["session"] != opened["session"]


# -- 6. the allow-list ---------------------------------------------------------


def test_allow_list_checks_every_resolved_address(
    tmp_path: Path, new_world: Callable[..., World]
) -> None:
    """A host name with one address outside allowed_targets is denied; streams dial the IP."""
    answers = {
        "db.internal": ["10.1.7.7", "10.1.7.8"],
        "mixed.internal": ["10.1.7.9", "192.168.9.9"],
    }
    looked_up: list[str] = []

    def resolve(host: str) -> Deferred[list[str]]:
        looked_up.append(host)
        return succeed(answers.get(host, []))

    config = CONFIG.replace("items:\n", ALLOW_LIST + "items:\n" + ALLOW_LIST_ITEMS, 1)
    world = new_world(config=config, resolve=resolve)
    alice = world.connect("alice")
    denied = alice.refused(control.OPEN_SESSION, item="mixed")
    assert isinstance(denied, AccessDenied) and denied.rule == "allowed_targets"
    assert "192.168.9.9" in denied.message
    (row,) = world.audit("session_denied")
    assert row.rule == "allowed_targets" and row.item == "mixed"
    assert world.core.sessions() == []

    alice.open("inside")
    stream, app = alice.stream("db.internal", 5432)
    stream.write(b"hello")
    world.flush()
    ((host, port, _, _),) = world.targets.requests
    assert (host, port) == ("10.1.7.7", 5432)
    target, _ = world.targets.connect()
    world.flush()
    assert target.value() == b"hello" and app.reset is None
    assert "db.internal" in looked_up
    (opened,) = world.audit("connection_opened")
    assert opened.detail["address"] == "10.1.7.7"


def test_allow_list_resolution_is_asynchronous(
    tmp_path: Path, new_world: Callable[..., World]
) -> None:
    """open_session waits for DNS; the reply comes when the answer does."""
    pending: list[tuple[str, Deferred[list[str]]]] = []

    def resolve(host: str) -> Deferred[list[str]]:
        answer: Deferred[list[str]] = Deferred()
        pending.append((host, answer))
        return answer

    config = CONFIG.replace("items:\n", ALLOW_LIST + "items:\n" + ALLOW_LIST_ITEMS, 1)
    world = new_world(config=config, resolve=resolve)
    alice = world.connect("alice")
    opening = alice.send(control.OPEN_SESSION, item="inside")
    assert not opening.called
    second = alice.refused(control.OPEN_SESSION, item="inside")
    assert isinstance(second, UsageError)
    ((host, answer),) = pending
    assert host == "db.internal"
    answer.callback(["10.1.7.7"])
    world.flush()
    assert outcome(opening)["session"]


# -- 7. approvals --------------------------------------------------------------


def test_approval_end_to_end(world: World) -> None:
    alice = world.connect("alice")
    carol = world.connect("carol")
    denied = alice.refused(control.OPEN_SESSION, item="guarded")
    assert isinstance(denied, AccessDenied)
    assert denied.rule == "jump_policies.approval.approval_required"

    too_long = alice.refused(control.REQUEST_ACCESS, item="guarded", reason="fix", duration=7200)
    assert isinstance(too_long, AccessDenied)
    assert too_long.rule == "jump_policies.approval.approval_max_duration"
    unneeded = alice.refused(control.REQUEST_ACCESS, item="web", reason="fix", duration=60)
    assert isinstance(unneeded, UsageError)
    for duration in (0, -5):
        bad = alice.refused(control.REQUEST_ACCESS, item="guarded", reason="fix", duration=duration)
        assert isinstance(bad, UsageError) and "positive" in bad.message
    for duration in (float("nan"), float("inf"), 10**400):  # the schema's: finite, bounded
        bad = alice.refused(control.REQUEST_ACCESS, item="guarded", reason="fix", duration=duration)
        assert bad.code == "invalid_request" and "'duration'" in bad.message

    request = alice.ask(control.REQUEST_ACCESS, item="guarded", reason="INC-1 db fix", duration=600)
    request_id = request["request"]["id"]
    assert request["request"]["status"] == "pending"
    assert request["request"]["approver_group"] == "approvers"

    mine = alice.ask(control.LIST_REQUESTS)["requests"]
    assert [(r["id"], r["can_decide"]) for r in mine] == [(request_id, False)]
    listed = carol.ask(control.LIST_REQUESTS)["requests"]
    assert [(r["id"], r["user"], r["can_decide"]) for r in listed] == [(request_id, "alice", True)]

    self_approval = alice.refused(control.DECIDE_REQUEST, request=request_id, approve=True)
    assert isinstance(self_approval, AccessDenied)
    assert self_approval.rule == "jump_policies.approval.approver_group"
    # an approver's own request cannot be approved by themselves either
    carols = carol.ask(control.REQUEST_ACCESS, item="guarded", reason="mine", duration=60)
    carols_id = carols["request"]["id"]
    own = carol.refused(control.DECIDE_REQUEST, request=carols_id, approve=True)
    assert isinstance(own, AccessDenied) and own.rule == "approvals.second_person"
    assert {r["id"]: r["can_decide"] for r in carol.ask(control.LIST_REQUESTS)["requests"]} == {
        request_id: True,
        carols_id: False,
    }

    world.advance(10)
    decided = carol.ask(control.DECIDE_REQUEST, request=request_id, approve=True, comment="ok")
    assert decided["request"]["status"] == "approved"
    assert decided["request"]["valid_until"] == 610
    again = carol.refused(control.DECIDE_REQUEST, request=request_id, approve=False)
    assert isinstance(again, UsageError) and "approved" in again.message
    (granted,) = world.audit("approval_granted")
    assert granted.user == "carol" and granted.detail["requester"] == "alice"

    world.advance(100)
    opened = alice.open("guarded")
    assert opened["closes_at"] == 610
    world.advance(499, step=5)
    assert alice.closed_code() is None
    world.advance(1)
    assert alice.closed_code() == "approval_expired"
    assert world.core.sessions() == []
    session_row = world.audit("session_opened")[0]
    assert session_row.detail["approval"] == request_id


def test_denied_request_keeps_the_item_closed(world: World) -> None:
    alice = world.connect("alice")
    carol = world.connect("carol")
    request_id = alice.ask(control.REQUEST_ACCESS, item="guarded", reason="x", duration=600)[
        "request"
    ]["id"]
    decided = carol.ask(control.DECIDE_REQUEST, request=request_id, approve=False, comment="no")
    assert decided["request"]["status"] == "denied"
    denied = alice.refused(control.OPEN_SESSION, item="guarded")
    assert isinstance(denied, AccessDenied)
    assert denied.rule == "jump_policies.approval.approval_required"
    assert f"({request_id}) is denied" in denied.message
    assert world.audit("approval_denied")[0].user == "carol"


# -- 8. recording --------------------------------------------------------------


def test_recorded_session(tmp_path: Path, new_world: Callable[..., World]) -> None:
    recordings = tmp_path / "recordings"
    world = new_world(recordings=recordings)
    alice = world.connect("alice")
    refusal = alice.refused(control.OPEN_SESSION, item="recorded")
    assert isinstance(refusal, ConsentRequired) and refusal.code == "consent_required"
    assert world.audit("consent_requested")[0].item == "recorded"
    assert world.core.sessions() == []

    opened = alice.open("recorded", consent=True)
    assert opened["recording"] is True
    stream, app = alice.stream("10.1.2.7", 22)
    stream.write(b"console-to-target-bytes")
    world.flush()
    target, bridge = world.targets.connect()
    world.flush()
    assert target.value() == b"console-to-target-bytes"
    bridge.dataReceived(b"target-to-console-bytes")
    world.flush()
    assert app.data == b"target-to-console-bytes"
    alice.ask(control.CLOSE_SESSION, reason="done")

    path = recordings / f"{opened['session']}.pcap"
    data = path.read_bytes()
    assert data[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1")
    assert b"console-to-target-bytes" in data and b"target-to-console-bytes" in data
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    (row,) = world.audit("session_opened")
    assert row.detail["recording"] == str(path)


# -- 9. tunnels_bound ----------------------------------------------------------


def test_tunnels_bound_outside_the_local_ports_closes_the_session(world: World) -> None:
    erin = world.connect("erin")
    denied = erin.refused(control.OPEN_SESSION, item="web")  # web has a fixed local port 8443
    assert isinstance(denied, AccessDenied) and denied.rule == "tunnels_restricted.local"
    opened = erin.open("auto")
    assert opened["tunnels"][0]["allowed_local_ports"] == "20000-20100"
    bound = erin.ask(
        control.TUNNELS_BOUND, tunnels=[{"local_address": "127.0.0.1", "local_port": 20050}]
    )
    assert bound["session"] == opened["session"]
    assert world.audit("session_ready")[0].session == opened["session"]
    refusal = erin.refused(
        control.TUNNELS_BOUND, tunnels=[{"local_address": "127.0.0.1", "local_port": 30000}]
    )
    assert isinstance(refusal, AccessDenied) and refusal.rule == "tunnels_restricted.local"
    world.advance(0.1)
    assert erin.closed_code() == "denied"
    assert world.core.sessions() == []
    rows = world.audit("session_denied")
    assert [r.rule for r in rows] == ["tunnels_restricted.local", "tunnels_restricted.local"]


# -- 10. ticket and schedule denials ------------------------------------------


def test_ticket_rules(world: World) -> None:
    alice = world.connect("alice")
    missing = alice.refused(control.OPEN_SESSION, item="ticketed")
    assert isinstance(missing, AccessDenied)
    assert missing.rule == "jump_policies.ticketed.ticket_id_required"
    malformed = alice.refused(control.OPEN_SESSION, item="ticketed", ticket="ABC-1")
    assert isinstance(malformed, AccessDenied)
    assert malformed.rule == "jump_policies.ticketed.ticket_id_pattern"
    assert [r.rule for r in world.audit("session_denied")] == [
        "jump_policies.ticketed.ticket_id_required",
        "jump_policies.ticketed.ticket_id_pattern",
    ]
    alice.open("ticketed", ticket="INC-42")
    (session,) = alice.ask(control.LIST_SESSIONS)["sessions"]
    assert session["ticket"] == "INC-42"


def test_schedule_denial(world: World) -> None:
    alice = world.connect("alice")
    world.advance(700, step=10)  # thu 00:11 UTC: the window closed at 00:10
    denied = alice.refused(control.OPEN_SESSION, item="office")
    assert isinstance(denied, AccessDenied)
    assert denied.rule == "jump_policies.office.schedule"
    assert "next opening 1970-01-08T00:00" in denied.message
    assert world.audit("session_denied")[0].rule == "jump_policies.office.schedule"


# -- every denial is audited ---------------------------------------------------


def _denial_rows(world: World) -> list[AuditEntry]:
    world.core.log_audit.flush()
    return [e for e in query(world.core.database) if e.rule is not None]


def test_every_denied_request_is_audited_with_its_rule(world: World) -> None:
    """Each denial the console is told of has exactly one audit row with the same rule."""
    alice = world.connect("alice")
    carol = world.connect("carol")
    spec = {
        "name": "proddb",
        "type": "tcp",
        "host": "10.9.9.9",
        "jump_group": "prod",
        "tunnels": [{"local_port": "auto", "remote_port": 5432}],
    }
    mine = alice.ask(control.REQUEST_ACCESS, item="guarded", reason="x", duration=60)
    carols = carol.ask(control.REQUEST_ACCESS, item="guarded", reason="y", duration=60)
    attempts: list[tuple[Console, str, dict[str, Any]]] = [
        (alice, control.CREATE_ITEM, {"item": spec}),
        (alice, control.REQUEST_ACCESS, {"item": "guarded", "reason": "x", "duration": 7200}),
        (alice, control.DECIDE_REQUEST, {"request": mine["request"]["id"], "approve": True}),
        (carol, control.DECIDE_REQUEST, {"request": carols["request"]["id"], "approve": True}),
        (alice, control.LIST_SESSIONS, {"all": True}),
        (alice, control.OPEN_SESSION, {"item": "web", "local_address": "10.0.0.1"}),
    ]
    denials = []
    for console, kind, fields in attempts:
        denied = console.refused(kind, **fields)
        assert isinstance(denied, AccessDenied) and denied.rule is not None, kind
        assert f"(rule: {denied.rule})" in denied.message
        denials.append((console.user, kind, denied.rule))
    rows = _denial_rows(world)
    assert [(r.user, r.detail["action"], r.rule) for r in rows] == denials
    assert [r.event for r in rows] == [
        "item_denied",
        "request_denied",
        "request_denied",
        "request_denied",
        "request_denied",
        "session_denied",
    ]
    created, too_long, not_approver, own, listing, off_loopback = rows
    assert created.item == "proddb" and created.detail["jump_group"] == "prod"
    assert too_long.item == "guarded" and too_long.detail["duration"] == 7200
    assert not_approver.rule == "jump_policies.approval.approver_group"
    assert not_approver.item == "guarded" and not_approver.detail["request"] == 1
    assert own.rule == "approvals.second_person" and own.detail["requester"] == "carol"
    assert listing.rule == "tunnels_restricted.terminate_foreign_tunnels"
    assert off_loopback.rule == "tunnels_restricted.acl" and off_loopback.item == "web"
    assert all(r.detail["reason"] for r in rows)


def test_every_request_type_has_its_denial_event() -> None:
    from jumpoint.handlers.dispatch import DENIAL_EVENTS, HANDLERS

    assert set(DENIAL_EVENTS) == set(HANDLERS)


def test_the_console_leaves_the_connection_cap_to_the_jumpoint(world: World) -> None:
    """Over the cap the console still opens the stream: the Jumpoint refuses and audits it."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    from console.tunnels import REFUSALS_IN_FLIGHT, TunnelFactory, TunnelSession

    alice = world.connect("alice")
    opened = alice.open("capped")  # max_connections: 2
    session = TunnelSession(alice.channel, "capped", opened)
    tunnel = session.tunnels[0]
    factory = TunnelFactory(session, tunnel)
    local = []
    for n in range(3):
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000 + n))
        transport = StringTransport()
        protocol.makeConnection(transport)
        local.append((protocol, transport))
        world.flush()
    third, third_transport = local[2]
    assert isinstance(third, TcpBridge)  # not refused by the console
    assert third.reset_code == ErrorCode.LIMIT and third_transport.disconnecting
    third.connectionLost(Failure(Exception("reset")))
    (row,) = world.audit("connection_denied")
    assert row.rule == "max_connections" and row.session == opened["session"]
    assert "(rule: max_connections)" in (third.close_reason or "")
    assert (tunnel.total_connections, tunnel.refused_connections) == (2, 1)
    assert len(world.targets.requests) == 2
    # the console bounds only what waits for the Jumpoint's refusals, naming the same rule
    assert alice.channel.mux is not None
    streams_before = len(alice.channel.mux.streams)
    session.current_connections = lambda: 2 + REFUSALS_IN_FLIGHT  # type: ignore[method-assign]
    refused = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40010))
    assert not isinstance(refused, TcpBridge) and tunnel.refused_connections == 2
    assert len(alice.channel.mux.streams) == streams_before


# -- egress: the built-in default around allowed_targets ------------------------


METADATA_ITEMS = """
  - {name: local-ssh, type: tcp, host: 127.0.0.1, tunnels: [{local_port: auto, remote_port: 22}]}
  - {name: rebinding, type: tcp, host: rebind.example,
     tunnels: [{local_port: auto, remote_port: 80}]}
"""


def _spec(host: str, port: int = 80, name: str = "mine") -> dict[str, Any]:
    return {
        "name": name,
        "type": "tcp",
        "host": host,
        "jump_group": "lab",
        "tunnels": [{"local_port": "auto", "remote_port": port}],
    }


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", "0.0.0.0", "169.254.169.254"]
)
def test_item_create_refuses_loopback_and_link_local_without_an_allow_list(
    world: World, host: str
) -> None:
    """allowed_targets is unset: the built-in default still refuses, at creation."""
    alice = world.connect("alice")
    denied = alice.refused(control.CREATE_ITEM, item=_spec(host))
    assert isinstance(denied, AccessDenied) and denied.rule == "allowed_targets"
    assert "never a target unless allowed_targets lists it explicitly" in denied.message
    (row,) = world.audit("item_denied")
    assert row.rule == "allowed_targets" and row.item == "mine"
    assert row.detail["host"] == host and row.detail["action"] == control.CREATE_ITEM
    assert world.core.catalog.get("mine") is None and world.audit("item_created") == []
    assert alice.ask(control.CREATE_ITEM, item=_spec("10.1.2.3"))["item"]["name"] == "mine"


def test_item_create_and_tunnel_add_refuse_targets_outside_the_allow_list(
    tmp_path: Path, new_world: Callable[..., World]
) -> None:
    config = CONFIG.replace("items:\n", 'allowed_targets: ["10.1.0.0/16:22"]\nitems:\n', 1)
    world = new_world(config=config)
    alice = world.connect("alice")
    denied = alice.refused(control.CREATE_ITEM, item=_spec("10.1.2.3", 5432))
    assert isinstance(denied, AccessDenied) and denied.rule == "allowed_targets"
    assert alice.ask(control.CREATE_ITEM, item=_spec("10.1.2.3", 22))["item"]["name"] == "mine"
    for value in ("9000:5432", "9001:22"):
        change = {"item": "mine", "change": "tunnel_add", "value": value}
        if value.endswith(":5432"):
            refused = alice.refused(control.CHANGE_ITEM, **change)
            assert isinstance(refused, AccessDenied) and refused.rule == "allowed_targets"
        else:
            alice.ask(control.CHANGE_ITEM, **change)
    rows = world.audit("item_denied")
    assert [(r.detail["action"], r.rule) for r in rows] == [
        (control.CREATE_ITEM, "allowed_targets"),
        (control.CHANGE_ITEM, "allowed_targets"),
    ]
    ports = sorted(t.remote_port for t in world.core.catalog.get("mine").tunnels)  # type: ignore[union-attr]
    assert ports == [22, 22]


@pytest.mark.parametrize(
    ("allowed", "opens"),
    [
        (None, False),  # no allow-list: the built-in default refuses loopback
        ('["0.0.0.0/0", ":22"]', False),  # catch-alls do not list it explicitly
        ('["127.0.0.0/8:22"]', True),
        ('["127.0.0.1"]', True),
    ],
)
def test_loopback_is_a_target_only_when_listed_explicitly(
    new_world: Callable[..., World], allowed: str | None, opens: bool
) -> None:
    section = f"allowed_targets: {allowed}\n" if allowed else ""
    config = CONFIG.replace("items:\n", section + "items:\n" + METADATA_ITEMS, 1)
    alice = new_world(config=config).connect("alice")
    if opens:
        assert alice.open("local-ssh")["session"]
        return
    denied = alice.refused(control.OPEN_SESSION, item="local-ssh")
    assert isinstance(denied, AccessDenied) and denied.rule == "allowed_targets"
    assert "127.0.0.1:22 is a loopback address" in denied.message


def test_a_name_that_turns_into_loopback_is_refused_per_connection(
    tmp_path: Path, new_world: Callable[..., World]
) -> None:
    """DNS rebinding: checked at open, and every connection dials what was checked."""
    answers = {"rebind.example": ["10.1.9.9"]}

    def resolve(host: str) -> Deferred[list[str]]:
        return succeed(answers.get(host, []))

    config = CONFIG.replace("items:\n", "items:\n" + METADATA_ITEMS, 1)
    world = new_world(config=config, resolve=resolve)
    alice = world.connect("alice")
    alice.open("rebinding")
    answers["rebind.example"] = ["127.0.0.1"]
    _, app = alice.stream("rebind.example", 80)
    assert app.reset is not None and app.reset[0] == ErrorCode.DENIED
    assert world.targets.requests == []
    (row,) = world.audit("connection_denied")
    assert row.rule == "allowed_targets" and "127.0.0.1" in row.detail["reason"]


def test_the_jumpoints_own_listener_is_no_target(
    tmp_path: Path, new_world: Callable[..., World]
) -> None:
    config = CONFIG.replace(
        'listen: "127.0.0.1:7443", addresses: ["127.0.0.1"]',
        'listen: "0.0.0.0:7443", addresses: ["10.1.0.1"]',
    )
    world = new_world(config=config)
    alice = world.connect("alice")
    denied = alice.refused(control.CREATE_ITEM, item=_spec("10.1.0.1", 7443))
    assert isinstance(denied, AccessDenied) and "own listener" in denied.message
    assert alice.ask(control.CREATE_ITEM, item=_spec("10.1.0.1", 22))["item"]


# -- the state database unavailable ----------------------------------------------


def test_new_sessions_fail_closed_while_the_state_database_is_unavailable(world: World) -> None:
    """Open sessions continue; a new one is refused at once (state_unavailable), then opens."""
    audit = world.core.log_audit
    working = audit.writer
    alice = world.connect("alice")
    alice.open("web")

    class Gone:
        def submit(self, job: Any) -> Deferred[Any]:
            return fail(OperationalError("unable to open database file"))

        def stop(self) -> Deferred[None]:
            return succeed(None)

    audit.writer = Gone()
    audit.record("connection_closed", user="alice", stream=1)
    world.advance(1.0, step=0.25)  # the commit failed: the database is unavailable
    assert not audit.available
    bob = world.connect("bob")
    refused = bob.refused(control.OPEN_SESSION, item="web")
    assert isinstance(refused, StateUnavailable) and refused.code == "state_unavailable"
    assert refused.exit_code == ExitCode.STATE_UNAVAILABLE
    assert "cannot reach its state database" in refused.message
    assert alice.closed_code() is None and len(world.core.sessions()) == 1  # it continues
    assert audit.counters()["refused_decisions"] >= 1
    audit.writer = working
    world.advance(3.0, step=0.5)  # a retry succeeds
    assert audit.available
    assert bob.open("web")["session"]
    assert [e.detail.get("stream") for e in world.audit("connection_closed")] == [1]
    (refusal,) = world.audit("request_refused")
    assert refusal.user == "bob" and refusal.item == "web"
    assert refusal.detail["action"] == "open_session"
    assert refusal.detail["code"] == "state_unavailable"
