"""The network service's sessions and protocol (console/network_service.py), without root.

A fake L{Devices} stands in for the kernel, a L{Clock} for time; the Twisted
protocol runs over a string transport that records the descriptors it is
asked to send, with a real socket pair behind it for SO_PEERCRED.  The
client's side of the exchange (console/network_client.py) runs against
replies written into a socket pair beforehand.  The real thing, as root in
network namespaces: tests/e2e/test_network_service.py.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import unix
from twisted.internet.interfaces import IUNIXTransport
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from zope.interface import implementer

from console.network_client import NetworkServiceUnavailable, acquire_tun, exchange
from console.network_requests import (
    GROUP_RULE,
    CloseRequest,
    Group,
    OpenRequest,
    Peer,
    encode,
    open_request,
)
from console.network_service import (
    NetworkServiceFactory,
    Registry,
    ServiceLimits,
    ServiceSession,
    SessionState,
    prepare_socket_path,
    read_peer,
    resolve_group,
    stop_service,
)
from console.network_tun import (
    NetworkSetupError,
    Removed,
    TunDevice,
    ensure_linux,
    has_net_admin,
)
from shared.errors import (
    AccessDenied,
    ConfigError,
    InvalidRequest,
    NotSupported,
    ProtocolViolation,
)

GROUP = Group("jumpoint-network", 990)
MEMBER = Peer(pid=100, uid=1001, gid=1001, groups=frozenset({990}), user="alice")
OUTSIDER = Peer(pid=101, uid=1002, gid=1002, groups=frozenset({27}), user="bob")
REQUEST = open_request("198.19.0.2", ["198.18.1.0/24", "198.18.2.7"])


class FakeDevices:
    """Interfaces jpt0, jpt1, ... with a pipe's read end as the descriptor."""

    def __init__(self) -> None:
        self.created: list[TunDevice] = []
        self.removed: list[TunDevice] = []
        self.fail: NetworkSetupError | None = None

    def create(self, request: OpenRequest) -> TunDevice:
        if self.fail is not None:
            raise self.fail
        read, write = os.pipe()
        os.close(write)
        device = TunDevice(
            fd=read,
            interface=request.name or f"jpt{len(self.created)}",
            index=10 + len(self.created),
            address=request.address,
            routes=request.routes,
            mtu=request.mtu,
            ipv6_disabled=True,
        )
        self.created.append(device)
        return device

    def remove(self, device: TunDevice) -> Removed:
        os.close(device.fd)
        self.removed.append(device)
        return Removed(
            device.interface, f"{device.address}/32", tuple(str(r) for r in device.routes)
        )

    @property
    def live(self) -> list[str]:
        return [d.interface for d in self.created if d not in self.removed]


class ListSink:
    def __init__(self) -> None:
        self.messages: list[tuple[dict[str, Any], int | None]] = []
        self.hung_up = False

    def send(self, message: dict[str, Any], fd: int | None = None) -> None:
        assert not self.hung_up, "a reply after hanging up"
        self.messages.append((json.loads(encode(message)), fd))

    def hang_up(self) -> None:
        self.hung_up = True

    @property
    def events(self) -> list[str]:
        return [message["event"] for message, _ in self.messages]

    @property
    def last(self) -> dict[str, Any]:
        return self.messages[-1][0]


class Setup:
    def __init__(self, limits: ServiceLimits | None = None) -> None:
        self.devices = FakeDevices()
        self.clock = Clock()
        self.registry = Registry(limits or ServiceLimits())

    def session(self, peer: Peer | None = MEMBER) -> tuple[ServiceSession, ListSink]:
        sink = ListSink()
        session = ServiceSession(peer, GROUP, self.devices, sink, self.clock, self.registry)
        session.start()
        return session, sink


def request_line(request: OpenRequest | CloseRequest) -> bytes:
    return encode(request.to_json()).rstrip(b"\n")


@pytest.fixture
def setup() -> Iterator[Setup]:
    made = Setup()
    yield made
    for device in made.devices.created:
        if device not in made.devices.removed:
            os.close(device.fd)


# -- admission ------------------------------------------------------------------------------


def test_a_member_is_greeted_with_its_credentials(setup: Setup) -> None:
    session, sink = setup.session()
    assert session.lifecycle.state is SessionState.WAITING
    assert sink.messages == [
        (
            {
                "event": "ready",
                "version": 1,
                "peer": {"pid": 100, "uid": 1001, "gid": 1001, "user": "alice"},
                "admitted": "member of group jumpoint-network",
            },
            None,
        )
    ]
    assert not sink.hung_up


def test_a_caller_outside_the_group_is_refused_and_logged(setup: Setup) -> None:
    logged: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        session, sink = setup.session(OUTSIDER)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert session.lifecycle.state is SessionState.CLOSED
    assert sink.hung_up
    assert sink.events == ["error"]
    assert sink.last["code"] == "denied"
    assert sink.last["rule"] == GROUP_RULE
    assert "not a member of group jumpoint-network" in sink.last["message"]
    assert "usermod -aG jumpoint-network bob" in sink.last["hint"]
    refusals = [e for e in logged if e.get("log_format", "").startswith("refused")]
    assert [e["who"] for e in refusals] == ["uid 1002 (bob) gid 1002 pid 101"]
    # what the refused caller sends next is ignored, and nothing is created
    session.line_received(request_line(REQUEST))
    assert setup.devices.created == []
    assert setup.registry.sessions == set()


def test_a_peer_whose_credentials_cannot_be_read_is_refused(setup: Setup) -> None:
    session, sink = setup.session(None)
    assert session.lifecycle.state is SessionState.CLOSED
    assert sink.events == ["error"] and sink.hung_up
    assert "SO_PEERCRED" in sink.last["message"]


# -- open, close, loss ----------------------------------------------------------------------


def test_open_hands_over_the_descriptor_and_close_says_what_was_removed(setup: Setup) -> None:
    session, sink = setup.session()
    session.line_received(request_line(REQUEST))
    assert session.lifecycle.state is SessionState.OPEN
    opened, fd = sink.messages[-1]
    assert fd == setup.devices.created[0].fd
    assert opened == {
        "event": "opened",
        "interface": "jpt0",
        "index": 10,
        "address": "198.19.0.2/32",
        "routes": ["198.18.1.0/24", "198.18.2.7/32"],
        "mtu": 1400,
        "ipv6": "disabled",
    }
    assert setup.registry.per_uid == {1001: 1}
    session.line_received(request_line(CloseRequest()))
    assert session.lifecycle.state is SessionState.CLOSED
    assert sink.last == {
        "event": "closed",
        "removed": {
            "interface": "jpt0",
            "address": "198.19.0.2/32",
            "routes": ["198.18.1.0/24", "198.18.2.7/32"],
            "already_gone": False,
        },
    }
    assert sink.hung_up
    assert setup.devices.live == []
    assert setup.registry.per_uid == {} and setup.registry.sessions == set()
    session.connection_lost()  # the hang-up's own end: nothing more happens
    assert len(setup.devices.removed) == 1


def test_the_end_of_the_connection_removes_the_interface(setup: Setup) -> None:
    session, sink = setup.session()
    session.line_received(request_line(open_request("198.19.0.3", ["198.18.1.0/24"], 1280)))
    assert setup.devices.live == ["jpt0"]
    session.connection_lost()
    assert session.lifecycle.state is SessionState.CLOSED
    assert setup.devices.live == []
    assert session.removed is not None and session.removed.interface == "jpt0"
    assert sink.events == ["ready", "opened"]  # nobody to tell


def test_close_before_open_removes_nothing(setup: Setup) -> None:
    session, sink = setup.session()
    session.line_received(request_line(CloseRequest()))
    assert sink.last == {"event": "closed", "removed": None}
    assert sink.hung_up and setup.devices.created == []


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b'{"op":"open","version":1,"address":"198.19.0.2","routes":["0.0.0.0/0"]}', "default"),
        (b"not json", "one JSON object per line"),
        (b'{"op":"open","version":2}', "version"),
    ],
)
def test_a_bad_request_is_answered_and_ends_the_connection(
    setup: Setup, raw: bytes, says: str
) -> None:
    session, sink = setup.session()
    session.line_received(raw)
    assert sink.last["event"] == "error"
    assert sink.last["code"] == "invalid_request"
    assert says in sink.last["message"]
    assert sink.hung_up and setup.devices.created == []


def test_a_second_open_is_refused_and_the_first_interface_removed(setup: Setup) -> None:
    session, sink = setup.session()
    session.line_received(request_line(REQUEST))
    session.line_received(request_line(REQUEST))
    assert sink.last["event"] == "error"
    assert "one interface per connection" in sink.last["message"]
    assert sink.last["removed"]["interface"] == "jpt0"
    assert setup.devices.live == [] and sink.hung_up


def test_a_failed_setup_is_reported_with_its_code(setup: Setup) -> None:
    setup.devices.fail = NetworkSetupError("adding the route 198.18.1.0/24 via jpt0: it exists")
    session, sink = setup.session()
    session.line_received(request_line(REQUEST))
    assert sink.last == {
        "event": "error",
        "code": "network_setup",
        "message": "adding the route 198.18.1.0/24 via jpt0: it exists",
    }
    assert sink.hung_up and setup.registry.per_uid == {}


def test_an_overlong_line_ends_the_connection(setup: Setup) -> None:
    session, sink = setup.session()
    session.line_received(request_line(REQUEST))
    session.line_too_long()
    assert "longer than" in sink.last["message"]
    assert setup.devices.live == []


def test_a_connection_without_a_request_is_closed_after_the_timeout(setup: Setup) -> None:
    session, sink = setup.session()
    setup.clock.advance(9.9)
    assert not sink.hung_up
    setup.clock.advance(0.1)
    assert sink.last["event"] == "error"
    assert sink.last["message"] == "no request within 10 seconds"
    assert sink.hung_up and session.lifecycle.state is SessionState.CLOSED


def test_an_open_interface_has_no_timeout(setup: Setup) -> None:
    session, sink = setup.session()
    session.line_received(request_line(REQUEST))
    setup.clock.advance(3600)
    assert setup.clock.getDelayedCalls() == []
    assert session.lifecycle.state is SessionState.OPEN and not sink.hung_up


# -- bounds ---------------------------------------------------------------------------------


def test_a_uid_holds_a_bounded_number_of_interfaces() -> None:
    made = Setup(ServiceLimits(max_interfaces_per_uid=2))
    sessions = [made.session() for _ in range(3)]
    for session, _ in sessions:
        session.line_received(request_line(REQUEST))
    assert made.devices.live == ["jpt0", "jpt1"]
    assert sessions[2][1].last["message"] == "uid 1001 holds 2 interfaces already (the limit)"
    sessions[0][0].connection_lost()
    again, sink = made.session()
    again.line_received(request_line(REQUEST))
    assert sink.events == ["ready", "opened"]
    root, root_sink = made.session(Peer(1, 0, 0, frozenset(), "root"))
    root.line_received(request_line(open_request("198.19.0.1", ["198.18.9.0/24"])))
    assert root_sink.events == ["ready", "opened"]  # the bound is per uid
    for session, _ in [*sessions, (again, sink), (root, root_sink)]:
        session.connection_lost()
    assert made.devices.live == [] and made.registry.per_uid == {}


def test_a_route_over_another_user_s_route_is_refused(setup: Setup) -> None:
    alice, _ = setup.session()
    alice.line_received(request_line(REQUEST))
    bob = Peer(pid=102, uid=1003, gid=1003, groups=frozenset({990}), user="carol")
    session, sink = setup.session(bob)
    session.line_received(request_line(open_request("198.19.0.9", ["198.18.1.128/25"])))
    assert sink.last["message"] == (
        "routes: 198.18.1.128/25 overlaps a route of another user's interface (jpt0):"
        " refused, it would take their traffic"
    )
    assert setup.devices.live == ["jpt0"]
    again, again_sink = setup.session(bob)
    again.line_received(request_line(open_request("198.19.0.9", ["198.18.3.0/24"])))
    assert again_sink.events == ["ready", "opened"]
    mine, mine_sink = setup.session()  # the same uid may overlap its own (the kernel decides)
    mine.line_received(request_line(open_request("198.19.0.4", ["198.18.1.0/25"])))
    assert mine_sink.events == ["ready", "opened"]
    for each in (alice, again, mine):
        each.connection_lost()


def test_the_service_holds_a_bounded_number_of_connections() -> None:
    made = Setup(ServiceLimits(max_connections=2))
    first, second = made.session()[0], made.session()[0]
    third, sink = made.session()
    assert third.lifecycle.state is SessionState.CLOSED
    assert "busy (2 connections)" in sink.last["message"]
    first.connection_lost()
    assert made.session()[0].lifecycle.state is SessionState.WAITING
    assert second.lifecycle.state is SessionState.WAITING


def test_stopping_the_service_removes_every_interface(setup: Setup) -> None:
    sessions = [setup.session() for _ in range(3)]
    for session, _ in sessions[:2]:
        session.line_received(request_line(REQUEST))
    setup.registry.close_all("the service is stopping")
    assert setup.devices.live == []
    for _, sink in sessions:
        assert sink.events[-1] == "closed" and sink.hung_up
    assert [sink.last["removed"] is None for _, sink in sessions] == [False, False, True]


# -- the Twisted protocol, over a transport that records descriptors -------------------------


@implementer(IUNIXTransport)
class UnixStringTransport(StringTransport):
    def __init__(self, connection: socket.socket) -> None:
        super().__init__()
        self.socket = connection
        self.descriptors: list[int] = []

    def sendFileDescriptor(self, descriptor: int) -> None:
        self.descriptors.append(descriptor)

    def sendFileDescriptors(self, descriptors: Any, data: bytes) -> None:
        raise NotImplementedError


def test_the_protocol_reads_the_peer_and_carries_the_exchange() -> None:
    devices = FakeDevices()
    me = read_peer(socket.socketpair()[0])
    factory = NetworkServiceFactory(Group("mine", me.gid), devices, Clock())
    here, there = socket.socketpair()
    with here, there:
        transport = UnixStringTransport(here)
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(transport)
        ready = json.loads(transport.value().splitlines()[0])
        assert ready["event"] == "ready"
        assert ready["peer"]["pid"] == os.getpid()
        transport.clear()
        protocol.dataReceived(encode(REQUEST.to_json()))
        assert json.loads(transport.value())["event"] == "opened"
        assert transport.descriptors == [devices.created[0].fd]
        protocol.connectionLost(None)  # type: ignore[arg-type]
        assert devices.live == []


def test_the_protocol_refuses_a_line_beyond_the_bound() -> None:
    devices = FakeDevices()
    me = read_peer(socket.socketpair()[0])
    factory = NetworkServiceFactory(Group("mine", me.gid), devices, Clock())
    here, there = socket.socketpair()
    with here, there:
        transport = UnixStringTransport(here)
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"x" * 40000)
        last = json.loads(transport.value().splitlines()[-1])
        assert "longer than 32768 bytes" in last["message"]
        assert transport.disconnecting


def test_read_peer_gives_this_process_s_credentials() -> None:
    here, there = socket.socketpair()
    with here, there:
        peer = read_peer(here)
    assert (peer.pid, peer.uid, peer.gid) == (os.getpid(), os.getuid(), os.getgid())
    assert peer.groups == frozenset(os.getgroups())


def test_an_unknown_group_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="there is no group 'jpt-no-such-group'") as raised:
        resolve_group("jpt-no-such-group")
    assert raised.value.hint is not None and "groupadd --system" in raised.value.hint
    assert resolve_group("root").gid == 0


def test_a_stale_socket_is_replaced_and_a_live_one_kept(tmp_path: Path) -> None:
    path = tmp_path / "run" / "network.sock"
    prepare_socket_path(path)
    assert path.parent.is_dir()
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(path))
    live.listen(1)
    with pytest.raises(ConfigError, match="listens on .* already"):
        prepare_socket_path(path)
    live.close()
    prepare_socket_path(path)  # nobody answers now: removed
    assert not path.exists()
    path.write_text("not a socket")
    with pytest.raises(ConfigError, match="is not a socket"):
        prepare_socket_path(path)


# -- the client's side ----------------------------------------------------------------------


def reply(connection: socket.socket, *messages: dict[str, Any], fd: int | None = None) -> None:
    for message in messages:
        data = encode(message)
        if fd is not None and message.get("event") == "opened":
            socket.send_fds(connection, [data[:1]], [fd])
            connection.sendall(data[1:])
        else:
            connection.sendall(data)


READY = {"event": "ready", "version": 1, "peer": {}, "admitted": "root"}


def test_the_client_raises_the_service_s_refusal() -> None:
    client, service = socket.socketpair()
    with service:
        reply(
            service,
            {
                "event": "error",
                "code": "denied",
                "rule": GROUP_RULE,
                "message": "the network service refused uid 1002: not a member of group x",
                "hint": "ask an administrator",
            },
        )
        with pytest.raises(AccessDenied) as raised:
            exchange(REQUEST, client)
    assert raised.value.rule == GROUP_RULE
    assert raised.value.hint == "ask an administrator"
    assert client.fileno() == -1  # closed


def test_the_client_raises_a_setup_error_after_the_greeting() -> None:
    client, service = socket.socketpair()
    with service:
        reply(service, READY, {"event": "error", "code": "invalid_request", "message": "mtu: x"})
        with pytest.raises(InvalidRequest, match="mtu: x"):
            exchange(REQUEST, client)
        sent = service.recv(65536)
    assert json.loads(sent) == REQUEST.to_json()


def test_the_client_refuses_a_descriptor_that_is_not_a_tun() -> None:
    client, service = socket.socketpair()
    read, write = os.pipe()
    opened = {
        "event": "opened",
        "interface": "jpt0",
        "routes": ["198.18.1.0/24"],
        "mtu": 1400,
        "address": "198.19.0.2/32",
    }
    with service:
        reply(service, READY, opened, fd=read)
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(ProtocolViolation, match="not a TUN"):
            exchange(REQUEST, client)
        assert set(os.listdir("/proc/self/fd")) <= before  # the received copy is closed
    os.close(read)
    os.close(write)


def test_the_client_says_what_to_install_when_no_service_listens(tmp_path: Path) -> None:
    method = "service" if has_net_admin() else "auto"  # as root, auto creates it itself
    with pytest.raises(NetworkServiceUnavailable) as raised:
        acquire_tun(
            "198.19.0.2",
            ["198.18.1.0/24"],
            method=method,  # type: ignore[arg-type]
            socket_path=str(tmp_path / "none.sock"),
        )
    assert "lacks CAP_NET_ADMIN and no network service listens on" in raised.value.message
    assert raised.value.hint is not None
    assert "systemctl enable --now jump-network-service" in raised.value.hint
    assert "usermod -aG jumpoint-network" in raised.value.hint


def test_the_client_checks_the_request_before_connecting(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="default route"):
        acquire_tun("198.19.0.2", ["0.0.0.0/0"], socket_path=str(tmp_path / "none.sock"))
    with pytest.raises(InvalidRequest, match="^routes: "):
        acquire_tun("198.19.0.2", [IPv4Network("127.0.0.0/8")])


def test_other_systems_get_a_clear_not_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(NotSupported, match=r"need a Linux console \(this is darwin\)"):
        ensure_linux()
    with pytest.raises(NotSupported):
        acquire_tun("198.19.0.2", ["198.18.1.0/24"])


def test_cap_net_admin_is_read_from_the_effective_set() -> None:
    assert has_net_admin("Name:\tpython\nCapEff:\t000001ffffffffff\n")
    assert has_net_admin("CapEff:\t0000000000001000\n")  # bit 12 alone
    assert not has_net_admin("CapEff:\t0000000000000000\nCapPrm:\t000001ffffffffff\n")
    assert not has_net_admin("CapEff:\t0000000000000fff\n")
    assert not has_net_admin("Name:\tpython\n")


def test_stopping_leaves_the_socket_file_to_the_port_and_removes_every_interface(
    tmp_path: Path,
) -> None:
    """SIGTERM once logged a FileNotFoundError: the service removed the file, then the port."""
    path = tmp_path / "run" / "network.sock"
    prepare_socket_path(path)
    reactor = MemoryReactorClock()
    devices = FakeDevices()
    factory = NetworkServiceFactory(GROUP, devices, reactor)
    port = unix.Port(str(path), factory, backlog=4, mode=0o660, reactor=reactor, wantPID=False)
    port.startListening()
    session = ServiceSession(MEMBER, GROUP, devices, ListSink(), reactor, factory.registry)
    session.start()
    session.line_received(request_line(REQUEST))
    assert path.exists() and len(devices.live) == 1
    errors: list[Any] = []
    globalLogPublisher.addObserver(errors.append)
    try:
        stopped = stop_service(port, factory)
        assert devices.live == []  # at once: the shutdown waits only for the port
        assert not stopped.called and path.exists()
        reactor.advance(0)  # the port's connectionLost: it removes its file, once
    finally:
        globalLogPublisher.removeObserver(errors.append)
    assert stopped.called and not path.exists()
    assert port not in reactor.readers
    assert [e for e in errors if e.get("isError") or e.get("log_failure")] == []
