# mypy: disable-error-code="no-untyped-call"
# (twisted.internet.testing.StringTransport is not annotated)
"""Hundreds of short execs through both Kubernetes legs, in one process (issue 9, point 17).

kubectl's side is a StringTransport on the console's L{KubeClientConnection};
the console's and the Jumpoint's multiplexers talk through two
StringTransports the test pumps in random pieces; the Jumpoint's
L{KubeUpstreamHandler} (no TLS) writes to a StringTransport the test answers
as the cluster.  Each exec is a WebSocket or SPDY upgrade whose answer comes
with the 101 head, the command's output and the exit status in random
pieces (often all in one read, with the close right after), and whose
client sends its first frames together with, or right after, its request.
Every output byte must reach kubectl, in order, and every exec must have
exactly one C{k8s_request} row (C{ended: complete}), also when kubectl drops
its connection first and the console's CANCEL reaches the Jumpoint while the
cluster's connection is still open, or crosses the cluster's close.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from console.kube_proxy import KubeClientConnection, listener_hosts
from console.kubeconfig import SessionKubeconfig
from jumpoint.config import CredentialRef
from jumpoint.credentials import Credential
from jumpoint.kube_upstream import KubeUpstreamHandler
from jumpoint.session import Session
from shared.bridge import TcpBridge
from shared.items import Item, TunnelSpec
from shared.protocol.mux import Multiplexer, MuxSettings, Stream

ADDRESS, PORT = "127.0.0.5", 4443
EXECS = 300
"""Execs per seed (half WebSocket, half SPDY)."""


class _Quiet:
    def control_received(self, message: dict[str, Any]) -> None:
        pass

    def stream_requested(self, stream: Stream, payload: bytes) -> None:
        pass

    def mux_closing(self, code: int, reason: str, by_peer: bool) -> None:
        pass


class ClusterTransport(StringTransport):
    def loseWriteConnection(self) -> None:
        pass


@dataclass
class Audit:
    rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def record(self, event: str, **fields: Any) -> None:
        self.rows.append((event, fields))


@dataclass
class Store:
    credential: Credential

    def for_item(self, item: Item) -> Credential:
        return self.credential


@dataclass
class Core:
    credentials: Store
    clock: Clock = field(default_factory=Clock)
    log_audit: Audit = field(default_factory=Audit)


class Jumpoint(_Quiet):
    """The Jumpoint's end: every stream becomes a KubeUpstreamHandler on a fresh cluster connection."""

    def __init__(self, core: Core, session: Session) -> None:
        self.core = core
        self.session = session
        self.pending: list[tuple[TcpBridge, ClusterTransport]] = []
        self.connect_at_once = True
        """Connect to the cluster when the stream opens, or only when the test says so."""

    def stream_requested(self, stream: Stream, payload: bytes) -> None:
        bridge = KubeUpstreamHandler(stream, cast(Any, self.core), self.session, tls=False).bridge
        bridge.wait_for_connection()
        self.session.connection_started(bridge)
        cluster = ClusterTransport()
        if self.connect_at_once:
            bridge.makeConnection(cluster)
        self.pending.append((bridge, cluster))


class Chain:
    def __init__(self, tmp_path: Path, rng: random.Random) -> None:
        self.rng = rng
        token_file = tmp_path / "token"
        token_file.write_text("sa-token\n", encoding="utf-8")
        ref = CredentialRef(kind="token", username=None, item="kube", password_file=token_file)
        self.core = Core(Store(Credential("token", "", None, ref)))
        item = Item(
            name="kube",
            type="k8s",
            host="k8s.lab",
            url="https://k8s.lab:6443",
            ca_pem="unused without TLS",
            tunnels=(TunnelSpec(None, 6443, "https"),),
        )
        self.session = Session("s1", "alice", item, 100000, 0.0)
        self.jumpoint = Jumpoint(self.core, self.session)
        self.console_wire, self.jumpoint_wire = StringTransport(), StringTransport()
        self.console = Multiplexer(
            is_client=True, handler=_Quiet(), clock=Clock(), settings=MuxSettings()
        )
        self.server = Multiplexer(
            is_client=False, handler=self.jumpoint, clock=Clock(), settings=MuxSettings()
        )
        self.console.make_connection(self.console_wire)
        self.server.make_connection(self.jumpoint_wire)
        self.console.establish()
        self.server.establish()
        self.kube = SessionKubeconfig.create(tmp_path, "s-1", "cluster", ADDRESS, PORT, "default")

    def pump(self, partial: bool = False) -> bool:
        """Move channel bytes both ways (a random part of them if C{partial}); True if any."""
        moved = False
        for wire, peer in (
            (self.console_wire, self.server),
            (self.jumpoint_wire, self.console),
        ):
            data = bytes(wire.value())
            if not data:
                continue
            cut = self.rng.randint(1, len(data)) if partial else len(data)
            wire.clear()
            wire.write(data[cut:])
            peer.data_received(data[:cut])
            moved = True
        return moved

    def settle(self) -> None:
        for _ in range(1000):
            if not self.pump():
                return
        raise AssertionError("the channel never went quiet")

    def pieces(self, data: bytes) -> list[bytes]:
        """C{data} in 1 to 4 random pieces (one piece half of the time)."""
        if self.rng.random() < 0.5 or len(data) < 4:
            return [data]
        cuts = sorted(self.rng.sample(range(1, len(data)), self.rng.randint(1, 3)))
        return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def _websocket_request(token: str, n: int) -> bytes:
    return (
        f"GET /api/v1/namespaces/default/pods/web-0/exec?command=echo&command=hello{n}"
        "&stdout=true HTTP/1.1\r\n"
        f"Host: {ADDRESS}:{PORT}\r\nAuthorization: Bearer {token}\r\n"
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n"
    ).encode()


def _spdy_request(token: str, n: int) -> bytes:
    return (
        f"POST /api/v1/namespaces/default/pods/web-0/exec?command=echo&command=hello{n}"
        "&stdout=true HTTP/1.1\r\n"
        f"Host: {ADDRESS}:{PORT}\r\nAuthorization: Bearer {token}\r\n"
        "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        "X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def _one_exec(chain: Chain, n: int, spdy: bool) -> None:
    rng = chain.rng
    local = StringTransport()
    connection = KubeClientConnection(
        lambda: chain.console.open_stream(b"{}"),
        chain.kube,
        listener_hosts(ADDRESS, PORT),
        clock=Clock(),
    )
    connection.makeConnection(local)
    request = (_spdy_request if spdy else _websocket_request)(chain.kube.token, n)
    # the client's first frames: with the request, or right after it
    early = b"SYN_STREAM-%d" % n if spdy else b"\x82\x02\xff\x00"
    together = rng.random() < 0.5
    chain.jumpoint.connect_at_once = rng.random() < 0.5  # else the dial completes later
    for piece in chain.pieces(request + early if together else request):
        connection.dataReceived(piece)
        if rng.random() < 0.3:
            chain.pump(partial=True)
    if not together:
        connection.dataReceived(early)
    chain.settle()
    bridge, cluster = chain.jumpoint.pending.pop()
    if not chain.jumpoint.connect_at_once:
        bridge.makeConnection(cluster)  # the request waited for the connection
        chain.settle()
    forwarded = bytes(cluster.value())
    assert forwarded.startswith(request.split(b"\r\n")[0]) and forwarded.endswith(b"\r\n\r\n")
    cluster.clear()  # the early frames wait for the answer
    if spdy:
        switch = (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
        )
        output = b"SYN_REPLY-%d|DATA hello%d\n|FIN|ERROR {}" % (n, n)
    else:
        switch = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n"
        )
        line = b"\x01hello%d\n" % n
        output = bytes([0x82, len(line)]) + line + b"\x82\x03\x03{}" + b"\x88\x02\x03\xe8"
    answer = switch + output
    for piece in chain.pieces(answer):
        bridge.dataReceived(piece)
        if rng.random() < 0.3:
            chain.pump(partial=True)
    if rng.random() < 0.5:
        chain.pump(partial=True)
    if rng.random() < 0.5:
        chain.settle()
        assert cluster.value() == early  # kubectl's early frames reached the cluster after the 101
    if rng.random() < 0.25:
        # kubectl has its exit status and drops its connection before the cluster
        # closes: the console cancels the stream (TLS cannot half-close), and the
        # CANCEL reaches the Jumpoint while the cluster's connection is still open
        chain.settle()
        got = bytes(local.value())
        assert got == answer, (n, spdy, got, answer)
        connection.connectionLost(Failure(ConnectionDone()))
        if rng.random() < 0.5:
            chain.pump(partial=True)  # the CANCEL on its way while the cluster closes
        else:
            chain.settle()
        if not bridge.half_close.finished:
            bridge.readConnectionLost()
        bridge.connectionLost(Failure(ConnectionLost()))  # cut by the Jumpoint or closed
        chain.settle()
        return
    # the exec is over: the cluster closes (often before kubectl's frames could reach it)
    bridge.readConnectionLost()
    bridge.connectionLost(Failure(ConnectionDone()))
    chain.settle()
    got = bytes(local.value())
    assert got.startswith(switch), (n, spdy, got[:200])
    assert got == answer, (n, spdy, got, answer)  # every output byte, in order
    assert local.disconnecting  # the end reached kubectl
    connection.connectionLost(Failure(ConnectionDone()))
    chain.settle()


@pytest.mark.parametrize("seed", [1, 2])
def test_hundreds_of_short_execs_lose_no_byte_and_no_audit_row(tmp_path: Path, seed: int) -> None:
    chain = Chain(tmp_path, random.Random(seed))
    kinds = [bool(i % 2) for i in range(EXECS)]
    for n, spdy in enumerate(kinds):
        _one_exec(chain, n, spdy)
    rows = [fields for event, fields in chain.core.log_audit.rows if event == "k8s_request"]
    assert len(rows) == len(kinds)  # one row per exec, none missing, none twice
    assert all(r["status"] == 101 and r["upgraded"] and r["ended"] == "complete" for r in rows)
    assert sorted(r["query"].split("hello")[1].split("&")[0] for r in rows) == sorted(
        str(n) for n in range(len(kinds))
    )
    assert not [e for e, _ in chain.core.log_audit.rows if e != "k8s_request"]
