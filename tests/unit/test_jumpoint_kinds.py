# mypy: disable-error-code="no-untyped-call"
# (twisted.internet.testing.StringTransport is not annotated)
"""The Jumpoint's kinds of item (L{jumpoint.kinds}): one registry, one seam.

Every item type the schema knows has a Jumpoint kind; a kind registered here,
in the test, is decided on and opened through the registry alone (its
factory builds the connection of a stream, its refusal answers a refused
stream, its policy settles the login timeout), which shows that adding a kind
is its modules plus one registration line; and the audit events a kind
declares are the ones its modules record, read from the code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from jumpoint import kinds
from jumpoint.access import SessionRequest, decide, resolve_login_timeout
from jumpoint.approvals import ApprovalStore
from jumpoint.config import JumpointConfig, parse_config
from jumpoint.kinds.base import Dial, JumpointKind
from jumpoint.policy import Grant
from jumpoint.session import Session
from jumpoint.state import StateDatabase
from jumpoint.streams import admit_stream
from jumpoint.upstream_context import UpstreamContext
from shared import kinds as shared_kinds
from shared.bridge import TcpBridge
from shared.errors import NotSupported
from shared.items import KINDS, LOGIN_TIMEOUT_DEFAULT, Item, TunnelSpec
from shared.kinds.base import Kind
from shared.protocol.control import StreamTarget
from shared.protocol.frames import ErrorCode
from shared.protocol.mux import Multiplexer, MuxSettings, Stream
from tests.unit import test_architecture, test_audit_doc

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
jumpoint: {name: unit, listen: "127.0.0.1:7443", addresses: ["127.0.0.1"]}
groups:
  default:
    jump_groups: {see: ["*"], open: ["*"]}
"""
PROBE = "probe"
"""The test-only kind: no module of the Jumpoint names it."""


def test_every_item_type_has_a_jumpoint_kind_and_nothing_else_is_registered() -> None:
    assert [kind.name for kind in kinds.registered()] == list(KINDS)
    assert [kind.shared for kind in kinds.registered()] == list(shared_kinds.registered())
    assert kinds.registered() == kinds.BUILT_IN
    for name in KINDS:
        kind = kinds.get(name)
        assert kind is not None and kind.name == name


def test_the_registered_kinds_say_what_the_jumpoint_did_per_type() -> None:
    tcp, mssql, k8s, network = (kinds.get(name) for name in ("tcp", "mssql", "k8s", "network"))
    assert tcp is not None and mssql is not None and k8s is not None and network is not None
    assert [k.name for k in kinds.registered() if k.openable] == ["tcp", "mssql", "k8s", "network"]
    assert [k.name for k in kinds.registered() if k.logs_in] == ["mssql", "k8s"]
    assert kinds.tunnel_kinds() == "tcp"
    assert [k.protocol for k in kinds.registered()] == ["tcp", "tcp", "tcp", None]  # per packet
    assert k8s.runs_on("linux") and not k8s.runs_on("win32") and not k8s.runs_on("darwin")
    assert network.runs_on("linux") and not network.runs_on("win32")
    assert [k.name for k in kinds.registered() if k.start_session] == ["network"]
    assert tcp.runs_on("win32") and mssql.runs_on("darwin")


def test_a_kind_registered_twice_is_refused() -> None:
    tcp = kinds.get("tcp")
    assert tcp is not None
    with pytest.raises(ValueError, match="registered twice"):
        kinds.register(tcp)


# -- a kind of the test's own --------------------------------------------------


class Handler:
    def control_received(self, message: dict[str, Any]) -> None:
        pass

    def stream_requested(self, stream: Any, payload: bytes) -> None:
        pass

    def mux_closing(self, code: int, reason: str, by_peer: bool) -> None:
        pass


@dataclass
class FakeAudit:
    rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    accepting: bool = True
    spooled: int = 0

    def record(self, event: str, **fields: Any) -> None:
        self.rows.append((event, fields))

    def events(self) -> list[str]:
        return [event for event, _ in self.rows]


@dataclass
class FakeCore:
    """The part of the daemon a stream's connection uses; dials are kept, not made."""

    config: JumpointConfig
    clock: Clock = field(default_factory=Clock)
    log_audit: FakeAudit = field(default_factory=FakeAudit)
    credentials: None = None
    resolves_names: bool = True
    dials: list[tuple[str, int, Protocol, Deferred[Any]]] = field(default_factory=list)

    def resolve(self, host: str) -> Deferred[list[str]]:
        return succeed([host])

    def connect_target(self, host: str, port: int, protocol: Protocol) -> Deferred[Any]:
        attempt: Deferred[Any] = Deferred()
        self.dials.append((host, port, protocol, attempt))
        return attempt


@dataclass
class ProbeUpstream:
    """The test kind's connection: its bridge is a TcpBridge, its protocol the bridge."""

    bridge: TcpBridge
    started: list[Dial] = field(default_factory=list)

    def start(self, dial: Dial) -> None:
        self.started.append(dial)
        dial()

    def protocol(self) -> Protocol:
        return self.bridge


@dataclass
class ProbeKind:
    """Records what the Jumpoint asked of the test kind."""

    opened: list[tuple[Stream, Session, tuple[str, ...], ProbeUpstream]] = field(
        default_factory=list
    )
    refused: list[tuple[Stream, ErrorCode, str]] = field(default_factory=list)

    def open_upstream(
        self,
        stream: Stream,
        core: UpstreamContext,
        session: Session,
        *,
        on_closed: Callable[[TcpBridge], None],
        groups: Sequence[str],
    ) -> ProbeUpstream:
        upstream = ProbeUpstream(TcpBridge(stream, on_closed=on_closed))
        self.opened.append((stream, session, tuple(groups), upstream))
        return upstream

    def refuse(self, stream: Stream, code: ErrorCode, reason: str) -> None:
        self.refused.append((stream, code, reason))
        stream.reset(code, reason)

    def kind(self) -> JumpointKind:
        return JumpointKind(
            shared=Kind(PROBE, {}, lambda values, where, node: values, lambda item: {}, True),
            open_upstream=self.open_upstream,
            refuse=self.refuse,
            has_tunnels=True,
        )


@pytest.fixture
def probe() -> Iterator[ProbeKind]:
    recorder = ProbeKind()
    kinds.register(recorder.kind())  # the one registration line of a new kind
    try:
        yield recorder
    finally:
        kinds.unregister(PROBE)
    assert kinds.get(PROBE) is None


def probe_item() -> Item:
    return Item(name="probe-item", type=PROBE, host="10.0.0.7", tunnels=(TunnelSpec(None, 9000),))


def new_stream() -> Stream:
    mux = Multiplexer(is_client=False, handler=Handler(), clock=Clock(), settings=MuxSettings())
    mux.make_connection(StringTransport())
    mux.establish()
    return mux.open_stream(b"{}")


def test_without_its_registration_a_kind_cannot_be_opened(tmp_path: Path) -> None:
    config = parse_config(CONFIG, tmp_path / "jumpoint.yaml")
    database = StateDatabase(tmp_path / "state.db")
    try:
        with pytest.raises(NotSupported) as info:
            decide(
                config,
                Grant.of("alice", ["default"], config.groups),
                probe_item(),
                SessionRequest(item="probe-item"),
                0.0,
                ApprovalStore(database),
            )
    finally:
        database.close()
    assert info.value.message == (
        "item 'probe-item' is a probe item; this Jumpoint cannot open probe items yet"
    )
    assert info.value.hint == "only tcp, mssql, k8s and network items can be opened for now"


def test_a_registered_kind_is_decided_on_by_its_own_policy(
    probe: ProbeKind, tmp_path: Path
) -> None:
    config = parse_config(CONFIG, tmp_path / "jumpoint.yaml")
    database = StateDatabase(tmp_path / "state.db")
    try:
        terms = decide(
            config,
            Grant.of("alice", ["default"], config.groups),
            probe_item(),
            SessionRequest(item="probe-item"),
            0.0,
            ApprovalStore(database),
            platform=sys.platform,
        )
    finally:
        database.close()
    assert terms.login_timeout == LOGIN_TIMEOUT_DEFAULT  # the kind logs in (its shared part)
    assert resolve_login_timeout(probe_item().with_changes(login_timeout=5.0), None) == 5.0
    assert kinds.tunnel_kinds() == "tcp and probe"
    assert kinds.check_openable(probe_item(), "win32").name == PROBE


def test_a_registered_kind_opens_the_streams_of_its_items(probe: ProbeKind, tmp_path: Path) -> None:
    core = FakeCore(parse_config(CONFIG, tmp_path / "jumpoint.yaml"))
    session = Session("s1", "alice", probe_item(), 10, 0.0)
    stream = new_stream()
    target = StreamTarget("10.0.0.7", 9000).encode()
    admit_stream(core, session, stream, target, peer_host="192.0.2.1", groups=("ops",))  # type: ignore[arg-type]

    assert len(probe.opened) == 1
    opened_stream, opened_session, groups, upstream = probe.opened[0]
    assert (opened_stream, opened_session, groups) == (stream, session, ("ops",))
    assert len(upstream.started) == 1  # the kind was asked when to dial, and dialled
    assert [(h, p, proto) for h, p, proto, _ in core.dials] == [("10.0.0.7", 9000, upstream.bridge)]
    assert session.active == {upstream.bridge}
    core.dials[0][3].callback(None)
    assert core.log_audit.events() == ["connection_opened"]
    assert probe.refused == []


def test_a_registered_kind_answers_the_streams_the_rules_refuse(
    probe: ProbeKind, tmp_path: Path
) -> None:
    core = FakeCore(parse_config(CONFIG, tmp_path / "jumpoint.yaml"))
    session = Session("s1", "alice", probe_item(), 10, 0.0)
    stream = new_stream()
    target = StreamTarget("10.0.0.7", 22).encode()  # not a tunnel of the item
    admit_stream(core, session, stream, target, peer_host="192.0.2.1", groups=())  # type: ignore[arg-type]

    assert probe.opened == [] and core.dials == []
    assert [(s, code) for s, code, _ in probe.refused] == [(stream, ErrorCode.DENIED)]
    assert "is not a tunnel of item 'probe-item'" in probe.refused[0][2]
    assert core.log_audit.events() == ["connection_denied"]


# -- the audit events of each kind, read from the code --------------------------


def _module_events(modules: set[str]) -> set[str]:
    paths = [test_architecture.MODULES[module] for module in sorted(modules)]
    return set(test_audit_doc.events_in_files(paths))


def _reachable(module: str) -> set[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        for child in test_architecture.TOP[todo.pop()]:
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def _own_modules(kind: JumpointKind) -> set[str]:
    """The Jumpoint modules only this kind brings in (its bridges, its session data path)."""
    hooks = [kind.open_upstream, kind.start_session, kind.make_service]
    roots = {hook.__module__ for hook in hooks if hook is not None}
    common = _reachable("jumpoint.kinds.base") | {"jumpoint.kinds.base"}
    reached = set().union(*(_reachable(root) for root in roots))
    return {
        m
        for m in reached - common
        if m.startswith("jumpoint.") and not m.startswith("jumpoint.kinds")
    }


def test_the_audit_events_of_each_kind_are_the_ones_its_modules_record() -> None:
    owned = {kind.name: _own_modules(kind) for kind in kinds.registered()}
    assert owned["mssql"] >= {"jumpoint.tds_upstream", "jumpoint.tds_server_leg"}
    assert owned["k8s"] >= {"jumpoint.kube_upstream"}
    assert owned["tcp"] == set()
    assert owned["network"] >= {"jumpoint.network.session_link", "jumpoint.network.hub"}
    recorded = {name: _module_events(modules) for name, modules in owned.items()}
    declared = {kind.name: set(kind.audit_events) for kind in kinds.registered()}
    assert declared == recorded
    assert {"sql_login", "sql_batch"} <= declared["mssql"]
    assert {"k8s_request", "k8s_denied"} <= declared["k8s"]


def test_no_module_outside_a_kind_records_its_events() -> None:
    owned = set().union(*(_own_modules(kind) for kind in kinds.registered()))
    elsewhere = set(test_audit_doc.events_in_code()) - _module_events(owned)
    for kind in kinds.registered():
        assert elsewhere & set(kind.audit_events) == set(), kind.name
    events = [event for kind in kinds.registered() for event in kind.audit_events]
    assert len(events) == len(set(events)), "two kinds declare one event"
