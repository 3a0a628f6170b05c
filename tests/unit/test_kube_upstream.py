# mypy: disable-error-code="no-untyped-call"
# (twisted.internet.testing.StringTransport is not annotated)
"""The Jumpoint's HTTP/1.1 bridge for Kubernetes items, driven synchronously.

The console's side is a real multiplexer stream over a StringTransport; the
cluster's side is a StringTransport the test reads and answers (no TLS here).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from jumpoint.config import CredentialRef
from jumpoint.credentials import Credential, CredentialUnavailable
from jumpoint.kube_upstream import KubeUpstreamHandler
from jumpoint.session import Session
from shared.items import Item, TunnelSpec
from shared.protocol.frames import FrameParser, FrameType
from shared.protocol.mux import Multiplexer, MuxSettings, Stream

TOKEN = "sa-token-0123456789"


class ClusterTransport(StringTransport):
    """The cluster's end of the connection: what the bridge wrote, and the half-close."""

    def loseWriteConnection(self) -> None:
        pass


class Handler:
    def control_received(self, message: dict[str, Any]) -> None:
        pass

    def stream_requested(self, stream: Any, payload: bytes) -> None:
        pass

    def mux_closing(self, code: int, reason: str, by_peer: bool) -> None:
        pass


@dataclass
class Row:
    event: str
    fields: dict[str, Any]


@dataclass
class FakeAudit:
    rows: list[Row] = field(default_factory=list)

    def record(self, event: str, **fields: Any) -> None:
        self.rows.append(Row(event, fields))

    def of(self, event: str) -> list[dict[str, Any]]:
        return [row.fields for row in self.rows if row.event == event]


class FakeStore:
    def __init__(self, credential: Credential | None) -> None:
        self.credential = credential

    def for_item(self, item: Item) -> Credential:
        if self.credential is None:
            raise CredentialUnavailable(f"the Jumpoint has no credential for item {item.name!r}")
        return self.credential


@dataclass
class FakeCore:
    credentials: FakeStore
    clock: Clock = field(default_factory=Clock)
    log_audit: FakeAudit = field(default_factory=FakeAudit)


def k8s_item(**changes: Any) -> Item:
    values: dict[str, Any] = {
        "name": "kube",
        "type": "k8s",
        "host": "k8s.lab",
        "url": "https://k8s.lab:6443",
        "ca_pem": "unused without TLS",
        "tunnels": (TunnelSpec(None, 6443, "https"),),
    }
    values.update(changes)
    return Item(**values)


class Harness:
    def __init__(
        self,
        tmp_path: Path,
        item: Item,
        *,
        credential: bool = True,
        groups: tuple[str, ...] = ("ops", "dev"),
    ) -> None:
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n", encoding="utf-8")
        ref = CredentialRef(kind="token", username=None, item="kube", password_file=token_file)
        store = FakeStore(Credential("token", "", None, ref) if credential else None)
        self.core = FakeCore(store)
        self.mux = Multiplexer(
            is_client=False, handler=Handler(), clock=Clock(), settings=MuxSettings()
        )
        self.wire = StringTransport()
        self.mux.make_connection(self.wire)
        self.mux.establish()
        self.stream: Stream = self.mux.open_stream(b"{}")
        self.session = Session("s1", "alice", item, 10, 0.0)
        self.handler = KubeUpstreamHandler(
            self.stream, cast(Any, self.core), self.session, groups=groups, tls=False
        )
        self.bridge = self.handler.bridge
        self.bridge.wait_for_connection()
        self.session.connection_started(self.bridge)
        self.cluster = ClusterTransport()
        self.fin = False

    def connect(self) -> None:
        self.bridge.makeConnection(self.cluster)

    def send(self, data: bytes) -> None:
        """Bytes from kubectl (through the console)."""
        self.stream._data_received(data)

    def at_cluster(self) -> bytes:
        data = bytes(self.cluster.value())
        self.cluster.clear()
        return data

    def answer(self, data: bytes) -> None:
        self.bridge.dataReceived(data)

    def at_console(self) -> bytes:
        frames = FrameParser(1 << 20).feed(self.wire.value())
        self.wire.clear()
        out = b""
        for frame in frames:
            if frame.type is FrameType.DATA and frame.stream_id == self.stream.stream_id:
                out += frame.payload
                if frame.flags & 1:
                    self.fin = True
        return out

    @property
    def audit(self) -> FakeAudit:
        return self.core.log_audit


def request(method: str, target: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.5:18443", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def dechunk(data: bytes) -> bytes:
    """The data of complete chunks (h11 re-frames every piece it relays as one chunk)."""
    out = b""
    while data:
        size, _, rest = data.partition(b"\r\n")
        length = int(size, 16)
        out += rest[:length]
        assert rest[length : length + 2] == b"\r\n"
        data = rest[length + 2 :]
    return out


def head_lines(data: bytes) -> list[str]:
    return data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")


OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def test_client_credentials_are_stripped_and_the_token_injected(tmp_path: Path) -> None:
    h = Harness(tmp_path, k8s_item())
    h.connect()
    h.send(
        request(
            "GET",
            "/api/v1/namespaces/web/pods/p1",
            "Authorization: Bearer console-session-token",
            "Impersonate-User: root",
            "Impersonate-Group: system:masters",
            "X-Forwarded-For: 10.0.0.1",
            "Proxy-Authorization: Basic eA==",
            "Kubectl-Command: kubectl get",
            "Kubectl-Session: 1234",
        )
    )
    lines = head_lines(h.at_cluster())
    assert lines[0] == "GET /api/v1/namespaces/web/pods/p1 HTTP/1.1"
    lowered = [line.lower() for line in lines]
    assert not any(line.startswith("impersonate-") for line in lowered)
    assert not any(line.startswith(("x-forwarded-for", "proxy-authorization")) for line in lowered)
    assert [line for line in lines if line.lower().startswith("authorization")] == [
        f"Authorization: Bearer {TOKEN}"
    ]
    assert [line for line in lines if line.lower().startswith("host:")] == ["Host: k8s.lab:6443"]
    assert "Kubectl-Command: kubectl get" in lines
    h.core.clock.advance(0.25)
    h.answer(OK)
    assert h.at_console() == OK
    (row,) = h.audit.of("k8s_request")
    assert row["verb"] == "get" and row["resource"] == "pods" and row["name"] == "p1"
    assert row["namespace"] == "web" and row["status"] == 200 and row["api_version"] == "v1"
    assert row["kubectl_command"] == "kubectl get" and row["kubectl_session"] == "1234"
    assert row["bytes_out"] == len(OK) and row["bytes_in"] > 0 and row["duration"] == 0.25
    assert row["user"] == "alice" and row["item"] == "kube"
    assert TOKEN not in json.dumps([r.fields for r in h.audit.rows])


def test_impersonation_adds_the_user_and_one_line_per_group(tmp_path: Path) -> None:
    h = Harness(tmp_path, k8s_item(impersonate=True))
    h.connect()
    h.send(request("GET", "/api/v1/namespaces/web/pods", "Impersonate-User: mallory"))
    lines = head_lines(h.at_cluster())
    assert [line for line in lines if line.startswith("Impersonate-")] == [
        "Impersonate-User: alice",
        "Impersonate-Group: ops",
        "Impersonate-Group: dev",
    ]


def test_repeated_headers_stay_separate_lines(tmp_path: Path) -> None:
    h = Harness(tmp_path, k8s_item())
    h.connect()
    h.send(
        request(
            "POST",
            "/api/v1/namespaces/web/pods/p1/exec?command=sh&stdin=true",
            "Connection: Upgrade",
            "Upgrade: SPDY/3.1",
            "X-Stream-Protocol-Version: v4.channel.k8s.io",
            "X-Stream-Protocol-Version: v3.channel.k8s.io",
            "X-Stream-Protocol-Version: channel.k8s.io",
        )
    )
    lines = head_lines(h.at_cluster())
    assert [line for line in lines if line.startswith("X-Stream")] == [
        "X-Stream-Protocol-Version: v4.channel.k8s.io",
        "X-Stream-Protocol-Version: v3.channel.k8s.io",
        "X-Stream-Protocol-Version: channel.k8s.io",
    ]


def _status(data: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head[9:12]), json.loads(body)


def test_denied_requests_get_403_naming_the_rule_and_the_connection_goes_on(
    tmp_path: Path,
) -> None:
    item = k8s_item(read_only_access=True, allowed_namespaces=("web",))
    h = Harness(tmp_path, item)
    h.connect()
    cases = [
        (
            request(
                "GET",
                "/api/v1/namespaces/web/pods/p1/exec?command=sh",
                "Connection: Upgrade",
                "Upgrade: websocket",
                "Sec-WebSocket-Protocol: v5.channel.k8s.io",
            ),
            "k8s.read_only",
        ),
        (request("GET", "/api/v1/namespaces/web/secrets/db"), "k8s.denied_resources"),
        (request("GET", "/api/v1/namespaces/kube-system/pods"), "k8s.namespaces"),
        (
            request("POST", "/api/v1/namespaces/web/configmaps", body=b'{"kind":"ConfigMap"}'),
            "k8s.read_only",
        ),
    ]
    for raw, rule in cases:
        h.send(raw)
        code, status = _status(h.at_console())
        assert code == 403 and status["reason"] == "Forbidden"
        assert f"(rule: {rule})" in status["message"]
    assert h.at_cluster() == b""  # nothing reached the cluster
    denied = h.audit.of("k8s_denied")
    assert [row["rule"] for row in denied] == [rule for _, rule in cases]
    assert denied[0]["verb"] == "create" and denied[0]["subresource"] == "exec"
    assert not h.bridge.long_running
    # the next request on the same connection works
    h.send(request("GET", "/api/v1/namespaces/web/pods"))
    assert head_lines(h.at_cluster())[0] == "GET /api/v1/namespaces/web/pods HTTP/1.1"
    h.answer(OK)
    assert h.at_console() == OK
    assert h.audit.of("k8s_request")[0]["verb"] == "list"


def test_a_403_waits_behind_the_answer_to_an_earlier_request(tmp_path: Path) -> None:
    h = Harness(tmp_path, k8s_item())
    h.connect()
    h.send(request("GET", "/api/v1/namespaces/web/pods") + request("GET", "/api/v1/secrets"))
    assert h.at_console() == b""  # the first answer has not come yet
    h.answer(OK)
    out = h.at_console()
    assert out.startswith(OK) and b"403 Forbidden" in out[len(OK) :]


def test_a_chunked_watch_is_relayed_piece_by_piece(tmp_path: Path) -> None:
    h = Harness(tmp_path, k8s_item())
    h.connect()
    h.send(request("GET", "/api/v1/namespaces/web/pods?watch=true&resourceVersion=7"))
    h.at_cluster()
    assert h.bridge.long_running
    response_head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    h.answer(response_head)
    assert h.at_console() == response_head
    events = [b'{"type":"ADDED","object":{}}\n', b'{"type":"MODIFIED","object":{}}\n']
    for event in events:
        chunk = b"%x\r\n%s\r\n" % (len(event), event)
        h.answer(chunk[:5])  # size line and one byte: that byte reaches the console at once
        assert dechunk(h.at_console()) == event[:1]
        h.answer(chunk[5:])
        assert dechunk(h.at_console()) == event[1:]  # before the next one arrives
    assert h.audit.of("k8s_request") == []  # still running
    assert h.session._busy()  # the idle timeout never closes a watch
    h.answer(b"0\r\n\r\n")
    assert h.at_console() == b"0\r\n\r\n"
    (row,) = h.audit.of("k8s_request")
    assert row["verb"] == "watch" and row["status"] == 200
    assert not h.bridge.long_running


def test_a_101_upgrade_relays_raw_bytes_both_ways(tmp_path: Path) -> None:
    h = Harness(tmp_path, k8s_item())
    h.connect()
    h.send(
        request(
            "GET",
            "/api/v1/namespaces/web/pods/p1/exec?command=sh&stdin=true&tty=true",
            "Connection: Upgrade",
            "Upgrade: websocket",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Protocol: v5.channel.k8s.io",
            "Kubectl-Command: kubectl exec",
        )
    )
    assert "Sec-WebSocket-Protocol: v5.channel.k8s.io" in head_lines(h.at_cluster())
    h.send(b"\x82\x02\x00l")  # early bytes: held until the answer
    assert h.at_cluster() == b""
    switching = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n"
    )
    h.answer(switching + b"\x82\x03\x01$ ")
    assert h.at_console() == switching + b"\x82\x03\x01$ "
    assert h.at_cluster() == b"\x82\x02\x00l"
    assert h.bridge.long_running
    h.send(b"GET / HTTP/1.1\r\n\r\n")  # raw now: not parsed, not refused
    assert h.at_cluster() == b"GET / HTTP/1.1\r\n\r\n"
    h.answer(b"\x82\x01\x01")
    assert h.at_console() == b"\x82\x01\x01"
    assert h.audit.of("k8s_request") == []
    h.bridge.connectionLost()
    (row,) = h.audit.of("k8s_request")
    assert row["verb"] == "create" and row["subresource"] == "exec" and row["status"] == 101
    assert row["upgraded"] is True and row["kubectl_command"] == "kubectl exec"
    assert row["bytes_out"] == len(switching) + 5 + 3
    h.at_console()
    assert h.fin


def test_a_refused_upgrade_turns_held_bytes_back_into_requests(tmp_path: Path) -> None:
    h = Harness(tmp_path, k8s_item())
    h.connect()
    upgrade = request(
        "GET",
        "/api/v1/namespaces/web/pods/p1/exec?command=sh",
        "Connection: Upgrade",
        "Upgrade: websocket",
    )
    h.send(upgrade + request("GET", "/api/v1/namespaces/web/secrets/s"))
    h.at_cluster()
    h.answer(OK)  # not 101: the held bytes are a request, checked by the policy
    out = h.at_console()
    assert out.startswith(OK) and b"403 Forbidden" in out
    assert h.at_cluster() == b""


def test_request_bodies_are_streamed_and_discovery_is_audited_lower(tmp_path: Path) -> None:
    h = Harness(tmp_path, k8s_item())
    h.connect()
    body = b'{"kind":"ConfigMap","metadata":{"name":"c"}}'
    raw = request("POST", "/api/v1/namespaces/web/configmaps", body=body)
    h.send(raw[:-10])
    assert h.at_cluster().endswith(body[:-10])
    h.send(raw[-10:])
    assert h.at_cluster() == body[-10:]
    h.answer(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    h.send(request("GET", "/apis"))
    h.at_cluster()
    h.answer(OK)
    (created,) = h.audit.of("k8s_request")
    assert created["verb"] == "create" and created["status"] == 201
    (discovery,) = h.audit.of("k8s_discovery")
    assert discovery["path"] == "/apis" and discovery["status"] == 200
    assert "verb" not in discovery


def test_without_a_credential_every_request_gets_a_503_status(tmp_path: Path) -> None:
    h = Harness(tmp_path, k8s_item(), credential=False)
    assert h.handler.refused_before_dial()
    h.send(request("GET", "/api/v1/namespaces/web/pods"))
    code, status = _status(h.at_console())
    assert code == 503 and "no credential for item 'kube'" in status["message"]
    h.send(request("GET", "/api/v1/namespaces/web/pods"))
    assert _status(h.at_console())[0] == 503
    h.stream._fin_received()
    h.at_console()
    assert h.fin
    assert h.audit.of("k8s_request")[0]["status"] == 503


def test_an_unreachable_cluster_answers_502(tmp_path: Path) -> None:
    from shared.protocol.frames import ErrorCode

    h = Harness(tmp_path, k8s_item())
    h.send(request("GET", "/api/v1/namespaces/web/pods"))
    h.bridge.connection_failed(ErrorCode.REFUSED, "k8s.lab:6443 refused the connection")
    code, status = _status(h.at_console())
    assert code == 502 and "refused the connection" in status["message"]


def test_a_bad_path_is_answered_400(tmp_path: Path) -> None:
    h = Harness(tmp_path, k8s_item())
    h.connect()
    h.send(request("GET", "/api/v1/namespaces/%2e%2e/pods"))
    code, _ = _status(h.at_console())
    assert code == 400
    assert h.at_cluster() == b""


# -- one canonical origin-form target (issue 9, point 1) ------------------------------


def test_a_double_slash_path_is_refused_400_before_policy_and_audited(tmp_path: Path) -> None:
    h = Harness(tmp_path, k8s_item(read_only_access=True))
    h.connect()
    h.send(request("GET", "//api/v1/namespaces/default/secrets"))
    code, status = _status(h.at_console())
    assert code == 400 and "request target is refused" in status["message"]
    assert h.at_cluster() == b""
    (row,) = h.audit.of("k8s_denied")
    assert row["rule"] == "k8s.path" and row["path"] == "//api/v1/namespaces/default/secrets"
    assert h.audit.of("k8s_request") == []
    # the connection goes on, and the canonical path is what the policy sees
    h.send(request("GET", "/api/v1/namespaces/default/secrets"))
    code, status = _status(h.at_console())
    assert code == 403 and "(rule: k8s.denied_resources)" in status["message"]


def test_a_websocket_exec_on_a_double_slash_path_gets_400_not_101(tmp_path: Path) -> None:
    h = Harness(tmp_path, k8s_item(read_only_access=True))
    h.connect()
    h.send(
        request(
            "GET",
            "//api/v1/namespaces/default/pods/web-1/exec?command=id&stdout=true",
            "Connection: Upgrade",
            "Upgrade: websocket",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Protocol: v5.channel.k8s.io",
        )
        + b"\x82\x02\x00l"  # bytes after the head: never raw, parsed as HTTP (and refused)
    )
    out = h.at_console()
    assert out.startswith(b"HTTP/1.1 400 ")
    assert b" 101 " not in out
    assert h.at_cluster() == b""
    assert [row["rule"] for row in h.audit.of("k8s_denied")] == ["k8s.path"]
    assert not h.bridge.long_running


@pytest.mark.parametrize(
    "target",
    [
        "//api/v1/pods",
        "/api//v1/pods",
        "/api/v1/namespaces/web/pods/./p1",
        "/api/v1/namespaces/web/pods/../../kube-system/pods",
        "/api/v1/namespaces/web/pods/%2e%2e/x",
        "/api/v1/namespaces/web%2Fpods",
        "/api/v1/namespaces/web%2fpods",
        "https://k8s.lab/api/v1/pods",
        "http://evil/api/v1/pods",
        "k8s.lab:6443",
        "*",
    ],
)
def test_targets_that_are_not_a_plain_origin_form_path_get_400(tmp_path: Path, target: str) -> None:
    h = Harness(tmp_path, k8s_item())
    h.connect()
    h.send(request("OPTIONS" if target == "*" else "GET", target))
    code, _ = _status(h.at_console())
    assert code == 400
    assert h.at_cluster() == b""
    assert [row["rule"] for row in h.audit.of("k8s_denied")] == ["k8s.path"]


def test_policy_audit_and_forwarded_bytes_share_the_canonical_target(tmp_path: Path) -> None:
    h = Harness(tmp_path, k8s_item(url="https://k8s.lab:6443/prefix"))
    h.connect()
    h.send(request("GET", "/api/v1/n%61mespaces/web/pods/p%31?watch=0"))
    assert (
        head_lines(h.at_cluster())[0]
        == "GET /prefix/api/v1/namespaces/web/pods/p1?watch=0 HTTP/1.1"
    )
    h.answer(OK)
    (row,) = h.audit.of("k8s_request")
    assert row["path"] == "/api/v1/namespaces/web/pods/p1" and row["query"] == "watch=0"
    assert row["namespace"] == "web" and row["name"] == "p1" and row["ended"] == "complete"


# -- every request that reached the cluster has exactly one row (issue 9, point 2) ------


def _upgrade(path: str, spdy: bool = False) -> bytes:
    if spdy:
        return request(
            "POST",
            path,
            "Connection: Upgrade",
            "Upgrade: SPDY/3.1",
            "X-Stream-Protocol-Version: v4.channel.k8s.io",
            "Content-Length: 0",
        )
    return request(
        "GET",
        path,
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Protocol: v5.channel.k8s.io",
    )


SWITCH_WS = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n"
)


@pytest.mark.parametrize("how", ["session", "reset", "lost"])
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/namespaces/web/pods/p1/exec?command=sh&stdin=true",
        "/api/v1/namespaces/web/pods/p1/attach?stdin=true",
        "/api/v1/namespaces/web/pods/p1/portforward?ports=80",
    ],
)
def test_an_upgraded_request_cut_by_the_session_end_has_its_row(
    tmp_path: Path, how: str, path: str
) -> None:
    from twisted.internet.error import ConnectionLost
    from twisted.python.failure import Failure

    from shared.protocol.frames import ErrorCode

    h = Harness(tmp_path, k8s_item())
    h.connect()
    h.send(_upgrade(path))
    h.at_cluster()
    h.answer(SWITCH_WS + b"\x82\x03\x01$ ")
    h.send(b"\x82\x02\x00l")
    assert h.audit.of("k8s_request") == []
    if how == "session":
        h.bridge.abort(ErrorCode.SESSION_CLOSED, "the session was closed: jump close")
    elif how == "reset":
        h.stream._notify_reset(ErrorCode.CANCEL, "kubectl went away")
    else:
        h.bridge.connectionLost(Failure(ConnectionLost("reset by peer")))
    h.bridge.connectionLost(Failure(ConnectionLost("aborted")))  # the transport's own report
    (row,) = h.audit.of("k8s_request")
    assert row["status"] == 101 and row["upgraded"] is True
    assert row["bytes_out"] == len(SWITCH_WS) + 5 and row["bytes_in"] > 4
    # Either end closing an upgraded connection is its own end (kubectl drops its
    # connection after an exec without a half-close: the console cancels the
    # stream); only the session cutting it is an abort.
    assert row["ended"] == ("aborted" if how == "session" else "complete")


@pytest.mark.parametrize("stage", ["sent", "head", "body"])
def test_a_watch_cut_by_the_session_end_has_its_row(tmp_path: Path, stage: str) -> None:
    from shared.protocol.frames import ErrorCode

    h = Harness(tmp_path, k8s_item())
    h.connect()
    h.send(request("GET", "/api/v1/namespaces/web/pods?watch=true"))
    h.at_cluster()
    if stage != "sent":
        h.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    if stage == "body":
        h.answer(b"5\r\nhello\r\n")
    h.bridge.abort(ErrorCode.SESSION_CLOSED, "the session was closed: SIGTERM")
    (row,) = h.audit.of("k8s_request")
    assert row["verb"] == "watch" and row["ended"] == "aborted"
    assert row["status"] == (None if stage == "sent" else 200)
    assert (row["bytes_out"] > 0) == (stage != "sent")


def test_a_request_still_waiting_for_the_connection_is_reported_when_the_session_ends(
    tmp_path: Path,
) -> None:
    from shared.protocol.frames import ErrorCode

    h = Harness(tmp_path, k8s_item())
    h.send(_upgrade("/api/v1/namespaces/web/pods/p1/exec?command=sh", spdy=True))
    h.bridge.abort(ErrorCode.SESSION_CLOSED, "the session was closed: revoked")
    (row,) = h.audit.of("k8s_request")
    assert row["ended"] == "aborted" and row["status"] is None


def test_bytes_right_after_the_101_in_one_read_reach_both_sides(tmp_path: Path) -> None:
    h = Harness(tmp_path, k8s_item())
    h.connect()
    # kubectl's first frames in the same chunk as its request head
    h.send(_upgrade("/api/v1/namespaces/web/pods/p1/exec?command=echo", spdy=True) + b"SYN1")
    assert h.at_cluster().endswith(b"\r\n\r\n")  # held until the answer
    h.answer(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\nConnection: Upgrade\r\n\r\nOUT1"
    )
    assert h.at_console().endswith(b"\r\n\r\nOUT1")
    assert h.at_cluster() == b"SYN1"
