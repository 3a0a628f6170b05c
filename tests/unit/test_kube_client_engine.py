"""The sans-IO engine of a kubectl connection (console/kube_client_engine.py), without sockets.

A recording host feeds the engine and keeps the actions it emits; it answers
L{OpenStream} with L{KubeClientEngine.stream_opened} unless the session is
"closing".  Unit tests pin each decision's actions; hypothesis checks that
any split of the client's bytes (and of the cluster's answers) gives the same
decisions, and a state machine throws random event sequences at the engine
and checks the lifecycle and the action log against each other.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from console.kube_client_engine import (
    DEFAULT_LOGIN_TIMEOUT,
    HOST_MESSAGE,
    MAX_LOGGED_TARGET,
    TOKEN_MESSAGE,
    AbortClient,
    Action,
    CancelLoginTimer,
    CloseClient,
    FinishStream,
    HalfCloseStream,
    KubeClientEngine,
    KubeConnectionState,
    OpenStream,
    Refused,
    ReportEnded,
    SendToClient,
    SendToStream,
    StartLoginTimer,
)

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "t0ken-of-the-session"
HOST = "127.0.0.5:4443"
HOSTS = {HOST, "127.0.0.5", "Kube.Local:4443"}
START = 1000.0

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"


def check_token(value: str) -> bool:
    scheme, _, credential = value.partition(" ")
    return scheme.lower() == "bearer" and credential == TOKEN


class Host:
    """Performs nothing: records the actions, answers OpenStream while C{available}."""

    def __init__(self, login_timeout: float | None = None, available: bool = True) -> None:
        self.time = START
        self.available = available
        self.actions: list[Action] = []
        self.engine = KubeClientEngine(
            check_token,
            HOSTS,
            emit=self.perform,
            now=lambda: self.time,
            login_timeout=login_timeout,
        )
        self.engine.connection_made()

    def perform(self, action: Action) -> None:
        self.actions.append(action)
        if isinstance(action, OpenStream) and self.available:
            self.engine.stream_opened()

    def take(self) -> list[Action]:
        actions, self.actions = self.actions, []
        return actions


def state_of(host: Host) -> KubeConnectionState:
    """The engine's state, read afresh (a call, so that mypy does not pin it after a check)."""
    return host.engine.state


@pytest.fixture
def host() -> Host:
    host = Host()
    assert host.take() == [StartLoginTimer(DEFAULT_LOGIN_TIMEOUT, START + DEFAULT_LOGIN_TIMEOUT)]
    return host


def request(
    method: str = "GET",
    target: str = "/api/v1/namespaces/dev/pods",
    *,
    host: str | None = HOST,
    token: str | None = TOKEN,
    extra: str = "",
    body: bytes = b"",
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode() + body


def forwarded(data: bytes) -> bytes:
    """The request as the stream gets it: the session token's line removed."""
    return data.replace(f"Authorization: Bearer {TOKEN}\r\n".encode(), b"")


def answer_of(actions: Iterable[Action]) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of the local answer among C{actions}."""
    data = b"".join(a.data for a in actions if isinstance(a, SendToClient))
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def coalesced(actions: Iterable[Action]) -> list[Action]:
    """C{actions} with adjacent bytes for the same side joined (a split's only difference)."""
    out: list[Action] = []
    for action in actions:
        previous = out[-1] if out else None
        if isinstance(action, SendToClient) and isinstance(previous, SendToClient):
            out[-1] = SendToClient(previous.data + action.data)
        elif isinstance(action, SendToStream) and isinstance(previous, SendToStream):
            out[-1] = SendToStream(previous.data + action.data)
        else:
            out.append(action)
    return out


def test_the_engine_loads_nothing_that_does_io() -> None:
    """Sans-IO: importing the engine (in a fresh interpreter) loads no Twisted, no socket."""
    probe = (
        "import sys, console.kube_client_engine; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('twisted', 'socket', 'ssl')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


# -- the login: the timer and the first request -------------------------------------------------


def test_the_session_terms_login_timeout_sets_the_deadline() -> None:
    host = Host(login_timeout=5.0)
    assert host.take() == [StartLoginTimer(5.0, START + 5.0)]


def test_the_stream_opens_on_the_last_byte_of_an_authenticated_head(host: Host) -> None:
    data = request()
    for index in range(len(data) - 1):
        host.engine.client_data(data[index : index + 1])
    assert host.take() == [] and state_of(host) is KubeConnectionState.AWAITING_LOGIN
    host.engine.client_data(data[-1:])
    assert host.take() == [OpenStream(), CancelLoginTimer(), SendToStream(forwarded(data))]
    assert state_of(host) is KubeConnectionState.RELAYING and host.engine.has_stream
    assert TOKEN.encode() not in forwarded(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (request(token=None), TOKEN_MESSAGE),
        (request(token=""), TOKEN_MESSAGE),
        (request(token="stolen"), TOKEN_MESSAGE),
        (request(extra=f"Authorization: Bearer {TOKEN}\r\n"), TOKEN_MESSAGE),
        (request(host="127.0.0.1:4443"), HOST_MESSAGE),
        (request(host="127.0.0.5:4444"), HOST_MESSAGE),
    ],
)
def test_a_request_without_the_token_or_host_is_refused_401(
    host: Host, data: bytes, message: str
) -> None:
    host.engine.client_data(data)
    actions = host.take()
    assert actions[0] == Refused(401, message, "GET /api/v1/namespaces/dev/pods")
    assert actions[-1] == CloseClient()
    status, body = answer_of(actions)
    assert status == 401 and body["message"] == message and body["reason"] == "Unauthorized"
    assert not any(isinstance(a, OpenStream | SendToStream) for a in actions)
    assert host.engine.refusals == 1
    host.engine.client_data(request())  # whatever follows is dropped
    assert host.take() == []


def test_the_host_is_compared_without_case_or_spaces(host: Host) -> None:
    host.engine.client_data(request(host="KUBE.local:4443"))
    assert host.take()[0] == OpenStream()


def test_a_refused_request_logs_at_most_a_bounded_target(host: Host) -> None:
    target = "/api/" + "x" * 500
    host.engine.client_data(request(target=target, token="stolen"))
    (refused,) = [a for a in host.take() if isinstance(a, Refused)]
    assert refused.request == f"GET {target[:MAX_LOGGED_TARGET]}"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"NOT A REQUEST\r\n\r\n", 400),
        (b"GET /api HTTP/1.1\r\nbad header\r\n\r\n", 400),
        (request(extra="X: " + "a" * 70000 + "\r\n"), 431),
        (request("POST", extra="Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"), 400),
    ],
)
def test_a_malformed_head_is_refused_locally(host: Host, data: bytes, status: int) -> None:
    host.engine.client_data(data)
    actions = host.take()
    (refused,) = [a for a in actions if isinstance(a, Refused)]
    assert refused.status == status and refused.request is None
    assert refused.reason.startswith(f"malformed request ({status}): ")
    assert answer_of(actions)[0] == status and actions[-1] == CloseClient()
    assert not any(isinstance(a, OpenStream | SendToStream) for a in actions)


def test_no_stream_while_the_session_closes_gets_503(kube_host_closing: Host) -> None:
    host = kube_host_closing
    host.engine.client_data(request())
    actions = host.take()
    assert actions[0] == OpenStream() and actions[-1] == CloseClient()
    assert answer_of(actions)[0] == 503
    assert not any(isinstance(a, SendToStream) for a in actions)
    assert state_of(host) is KubeConnectionState.AWAITING_LOGIN and not host.engine.has_stream


@pytest.fixture
def kube_host_closing() -> Host:
    host = Host(available=False)
    host.take()
    return host


def test_the_login_timer_ends_a_connection_without_a_stream_once(host: Host) -> None:
    host.engine.client_data(b"GET /api HTTP/1.1\r\nHost: " + HOST.encode())  # never finished
    host.engine.login_timer_fired()
    assert host.take() == [ReportEnded(timed_out=True), AbortClient()]
    assert state_of(host) is KubeConnectionState.TIMED_OUT and host.engine.timed_out
    host.engine.client_lost("aborted")
    assert host.take() == []  # reported once; the timer is gone already
    assert state_of(host) is KubeConnectionState.CLOSED


def test_a_connection_lost_before_its_first_request_is_not_a_timeout(host: Host) -> None:
    host.engine.client_lost("reset by peer")
    assert host.take() == [CancelLoginTimer(), ReportEnded(timed_out=False)]
    assert state_of(host) is KubeConnectionState.CLOSED and not host.engine.timed_out


def test_a_late_timer_does_nothing_once_the_stream_is_open(host: Host) -> None:
    host.engine.client_data(request())
    host.take()
    host.engine.login_timer_fired()
    assert host.take() == [] and state_of(host) is KubeConnectionState.RELAYING


# -- relaying -------------------------------------------------------------------------------------


@pytest.fixture
def relaying(host: Host) -> Host:
    host.engine.client_data(request())
    host.take()
    return host


def test_keep_alive_requests_are_each_checked(relaying: Host) -> None:
    second = request("PUT", body=b"abcd")
    relaying.engine.client_data(second + request(token="stolen"))
    assert relaying.take() == []  # one request at a time
    relaying.engine.upstream_data(OK)
    assert coalesced(relaying.take()) == [SendToClient(OK), SendToStream(forwarded(second))]
    relaying.engine.upstream_data(OK)
    actions = coalesced(relaying.take())
    assert actions[0] == SendToClient(OK)
    assert actions[1] == Refused(401, TOKEN_MESSAGE, "GET /api/v1/namespaces/dev/pods")
    assert answer_of(actions[2:3])[0] == 401
    assert actions[3:] == [FinishStream("closed after a local answer", clean=True), CloseClient()]
    assert relaying.engine.refusals == 1


def test_the_end_of_the_stream_finishes_in_order(relaying: Host) -> None:
    relaying.engine.upstream_data(OK)
    relaying.take()
    relaying.engine.upstream_eof()
    assert relaying.take() == [FinishStream("closed", clean=True), CloseClient()]
    relaying.engine.client_lost("done")
    assert relaying.take() == [] and state_of(relaying) is KubeConnectionState.CLOSED


def test_a_stream_reset_aborts_kubectl(relaying: Host) -> None:
    relaying.engine.upstream_reset("CANCEL: gone")
    assert relaying.take() == [FinishStream("CANCEL: gone", clean=False), AbortClient()]


def test_kubectl_lost_resets_the_stream_and_reports_nothing(relaying: Host) -> None:
    relaying.engine.client_lost("Connection was closed cleanly.")
    assert relaying.take() == [
        FinishStream("the local connection was lost: Connection was closed cleanly.", clean=False)
    ]
    assert state_of(relaying) is KubeConnectionState.CLOSED


def test_a_101_switches_to_raw_bytes_both_ways(host: Host) -> None:
    upgrade = request(
        "POST",
        "/api/v1/namespaces/dev/pods/p/exec",
        extra="Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n",
    )
    host.engine.client_data(upgrade + b"early")
    assert host.take()[-1] == SendToStream(forwarded(upgrade))
    host.engine.upstream_data(SWITCH + b"out")
    assert host.take() == [SendToClient(SWITCH), SendToClient(b"out"), SendToStream(b"early")]
    assert state_of(host) is KubeConnectionState.UPGRADED
    host.engine.client_data(b"no token needed now")
    assert host.take() == [SendToStream(b"no token needed now")]
    host.engine.upstream_eof()
    assert host.take() == [CloseClient()]
    host.engine.client_lost("closed")
    assert host.take() == [FinishStream("the local connection was lost: closed", clean=False)]


def test_half_close_of_kubectl_after_a_101_is_a_fin_on_the_stream(host: Host) -> None:
    host.engine.client_data(request(extra="Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"))
    host.engine.upstream_data(SWITCH)
    host.take()
    host.engine.relay.client_eof()  # not fed by the TLS listener, but the engine's answer holds
    assert host.take() == [HalfCloseStream()]


# -- any split of the bytes gives the same decisions ----------------------------------------------

REQUESTS = {
    "get": request(),
    "put": request("PUT", body=b'{"spec": 1}'),
    "other host": request(host="127.0.0.5"),
    "stolen": request(token="stolen"),
    "upgrade": request("POST", extra="Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"),
    "no token": request(token=None),
    "wrong host": request(host="evil.example"),
    "malformed": b"GET /api HTTP/1.1\r\nbad header\r\n\r\n",
    "garbage": b"\x16\x03\x01\x00\xa5\x01\x00",
}


def run(
    client: bytes, client_cuts: Iterable[int], answer: bytes, answer_cuts: Iterable[int]
) -> Host:
    """Feed C{client} cut at C{client_cuts}, then answer each forwarded request in pieces."""
    host = Host()
    for piece in pieces(client, client_cuts):
        host.engine.client_data(piece)
    for _ in range(len(REQUESTS)):
        exchange = host.engine.relay.exchange
        if exchange is None or not exchange.forwarded:
            break
        for piece in pieces(answer, answer_cuts):
            host.engine.upstream_data(piece)
    return host


def decisions(actions: Iterable[Action]) -> list[Action]:
    """C{coalesced}, without h11's wording of a malformed head (it may quote what it has read).

    A local answer is kept up to its status line; a malformed head's reason to its status.
    """
    out: list[Action] = []
    for action in coalesced(actions):
        if isinstance(action, SendToClient):
            action = SendToClient(LOCAL_ANSWER.sub(rb"\1", action.data))
        elif isinstance(action, Refused) and action.request is None:
            action = Refused(action.status, f"malformed request ({action.status})", None)
        out.append(action)
    return out


LOCAL_ANSWER = re.compile(rb"(HTTP/1\.1 [45]\d\d [^\r]*\r\n).*", re.DOTALL)


def pieces(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=300)
@given(
    names=st.lists(st.sampled_from(sorted(REQUESTS)), min_size=1, max_size=4),
    client_cuts=st.lists(st.integers(min_value=0, max_value=4096), max_size=40),
    answer_cuts=st.lists(st.integers(min_value=0, max_value=64), max_size=10),
)
def test_any_split_of_the_client_bytes_gives_the_same_decisions(
    names: list[str], client_cuts: list[int], answer_cuts: list[int]
) -> None:
    client = b"".join(REQUESTS[name] for name in names)
    whole = run(client, [], OK, [])
    split = run(client, client_cuts, OK, answer_cuts)
    assert decisions(split.actions) == decisions(whole.actions)
    assert state_of(split) is whole.engine.state
    assert split.engine.refusals == whole.engine.refusals
    sent = b"".join(a.data for a in whole.actions if isinstance(a, SendToStream))
    assert TOKEN.encode() not in sent
    # the first request decides whether a stream exists at all
    first = names[0]
    assert whole.engine.has_stream is (first in ("get", "put", "other host", "upgrade"))


# -- the lifecycle under random events ------------------------------------------------------------


class EngineMachine(RuleBasedStateMachine):
    """Random events on one engine; the action log and the lifecycle must agree."""

    def __init__(self) -> None:
        super().__init__()
        self.host = Host()
        self.engine = self.host.engine
        self.armed = True
        self.lost = False
        self.after_lost = 0
        self.seen = 1  # the StartLoginTimer of connection_made

    @property
    def log(self) -> list[Action]:
        return self.host.actions

    def _count(self, kind: type) -> int:
        return sum(isinstance(a, kind) for a in self.log)

    def _step(self) -> None:
        """Keep the model of the timer in step with what the engine asked for."""
        if any(isinstance(a, CancelLoginTimer) for a in self.log[self.seen :]):
            assert self.armed, "the login timer was cancelled twice"
            self.armed = False
        self.seen = len(self.log)

    @rule(name=st.sampled_from(sorted(REQUESTS)), cut=st.integers(min_value=0, max_value=200))
    def client_sends(self, name: str, cut: int) -> None:
        data = REQUESTS[name]
        self.engine.client_data(data[:cut])
        self.engine.client_data(data[cut:])
        self._step()

    @rule(data=st.binary(max_size=30))
    def client_sends_bytes(self, data: bytes) -> None:
        self.engine.client_data(data)
        self._step()

    @rule()
    def kubectl_execs(self) -> None:
        self.engine.client_data(REQUESTS["upgrade"])
        self._step()

    @precondition(lambda self: self._forwarded())
    @rule(answer=st.sampled_from([OK, SWITCH, b"HTTP/1.1 403 Forbidden\r\n\r\n", b"junk\r\n\r\n"]))
    def upstream_answers(self, answer: bytes) -> None:
        self.engine.upstream_data(answer)
        self._step()

    @rule(data=st.binary(min_size=1, max_size=30))
    def upstream_sends_bytes(self, data: bytes) -> None:
        self.engine.upstream_data(data)
        self._step()

    def _forwarded(self) -> bool:
        exchange = self.engine.relay.exchange
        return exchange is not None and exchange.forwarded

    @rule()
    def upstream_ends(self) -> None:
        self.engine.upstream_eof()
        self._step()

    @rule()
    def upstream_resets(self) -> None:
        self.engine.upstream_reset("CANCEL: reset")
        self._step()

    @rule(available=st.booleans())
    def session_availability(self, available: bool) -> None:
        self.host.available = available

    @precondition(lambda self: self.armed)
    @rule(seconds=st.floats(min_value=0, max_value=DEFAULT_LOGIN_TIMEOUT / 2))
    def time_passes(self, seconds: float) -> None:
        self.host.time += seconds
        if self.host.time >= START + DEFAULT_LOGIN_TIMEOUT:  # the host's timer fires
            self.armed = False
            self.engine.login_timer_fired()
        self._step()

    @precondition(lambda self: not self.lost)
    @rule(message=st.sampled_from(["Connection was closed cleanly.", "reset by peer"]))
    def client_is_lost(self, message: str) -> None:
        self.engine.client_lost(message)
        self.lost = True
        self._step()
        self.after_lost = len(self.log)

    @invariant()
    def the_timer_is_started_once_first(self) -> None:
        assert self.log[0] == StartLoginTimer(DEFAULT_LOGIN_TIMEOUT, START + DEFAULT_LOGIN_TIMEOUT)
        assert self._count(StartLoginTimer) == 1

    @invariant()
    def the_stream_opens_at_most_once_and_only_then_gets_bytes(self) -> None:
        opened = [i for i, a in enumerate(self.log) if isinstance(a, OpenStream)]
        assert len(opened) <= 1
        sent = [i for i, a in enumerate(self.log) if isinstance(a, SendToStream)]
        assert not sent or (self.engine.has_stream and opened and sent[0] > opened[0])
        for action in self.log:  # the token never crosses, up to a 101 (then bytes are raw)
            if isinstance(action, SendToClient) and action.data.startswith(SWITCH):
                break
            if isinstance(action, SendToStream):
                assert TOKEN.encode() not in action.data

    @invariant()
    def a_connection_without_a_stream_is_reported_once(self) -> None:
        reports = [a for a in self.log if isinstance(a, ReportEnded)]
        assert len(reports) <= 1
        if reports:
            assert not self.engine.has_stream
            assert reports[0].timed_out is self.engine.timed_out
        if self.lost and not self.engine.has_stream:
            assert len(reports) == 1

    @invariant()
    def the_state_matches_the_log(self) -> None:
        state = self.engine.state
        if self.lost:
            assert state is KubeConnectionState.CLOSED
            assert len(self.log) == self.after_lost  # nothing happens after the end
        if state in (KubeConnectionState.RELAYING, KubeConnectionState.UPGRADED):
            assert self.engine.has_stream and not self.armed
        if state is KubeConnectionState.AWAITING_LOGIN:
            assert not self.engine.has_stream
        if state is KubeConnectionState.TIMED_OUT:
            assert self.engine.timed_out and AbortClient() in self.log
        if state is KubeConnectionState.UPGRADED:
            assert any(isinstance(a, SendToClient) and a.data.startswith(SWITCH) for a in self.log)
        assert self.engine.refusals == self._count(Refused)

    @invariant()
    def the_stream_finishes_once_and_then_gets_nothing(self) -> None:
        finished = [i for i, a in enumerate(self.log) if isinstance(a, FinishStream)]
        assert len(finished) <= 1
        if finished:
            assert not any(isinstance(a, SendToStream) for a in self.log[finished[0] :])


EngineMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=30, deadline=None)
test_engine_state_machine = EngineMachine.TestCase
