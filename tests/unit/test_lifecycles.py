"""The explicit lifecycles (shared/lifecycle.py) and the objects that own them.

Every table is walked exhaustively (every state times every event: allowed
events go where the table says, the others raise L{IllegalTransition} and
leave the state alone).  The stream and the bridge are then driven into each
of their states through their real APIs and hit with every event, so the
table is checked against what the code does, not only against itself;
hypothesis throws random but possible event sequences at a stream and its
bridge and checks that no undefined transition is ever attempted.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test.iosim import connectedServerAndClient

from console.channel import ConsoleChannel
from console.kube_proxy import (
    KUBE_CONNECTION_TRANSITIONS,
    KubeConnectionState,
)
from console.kubeconfig import SessionKubeconfig
from console.network_service import SESSION_TRANSITIONS, SessionState
from console.profiles import Profile
from shared.bridge import BRIDGE_TRANSITIONS, BridgeEvent, BridgeState, TcpBridge
from shared.codecs.http.relay import RELAY_TRANSITIONS, RelayMode
from shared.lifecycle import IllegalTransition, Lifecycle, Transitions
from shared.protocol import control, frames
from shared.protocol.channel import (
    CONSOLE_HELLO,
    JUMPOINT_HELLO,
    ChannelEvent,
    ChannelState,
)
from shared.protocol.datagrams import FLOW_TRANSITIONS, FlowState
from shared.protocol.frames import ErrorCode, Flag, FrameParser, FrameType, encode_frame
from shared.protocol.mux import (
    STREAM_TRANSITIONS,
    Multiplexer,
    MuxSettings,
    Stream,
    StreamEvent,
    StreamState,
)
from shared.protocol.tls import client_options, wrap_client
from tests.unit.test_channel_tls import RecordingApp
from tests.unit.test_hostile_console import Jumpoint, control_frame, goaway, jumpoint, keys
from tests.unit.test_k8s_http import EXEC_WS, OK, SWITCH, make
from tests.unit.test_kube_proxy import Setup, request

__all__ = ["jumpoint", "keys"]  # fixtures

TABLES: dict[str, tuple[Transitions[Any, Any], enum.Enum]] = {
    "stream": (STREAM_TRANSITIONS, StreamState.OPEN),
    "bridge": (BRIDGE_TRANSITIONS, BridgeState.CONNECTING),
    "console hello": (CONSOLE_HELLO, ChannelState.HANDSHAKING),
    "jumpoint hello": (JUMPOINT_HELLO, ChannelState.HANDSHAKING),
    "kubernetes connection": (KUBE_CONNECTION_TRANSITIONS, KubeConnectionState.AWAITING_LOGIN),
    "http relay": (RELAY_TRANSITIONS, RelayMode.IDLE),
    "datagram flow": (FLOW_TRANSITIONS, FlowState.OPEN),
    "network service session": (SESSION_TRANSITIONS, SessionState.CONNECTED),
}
FINAL = {
    "stream": StreamState.CLOSED,
    "bridge": BridgeState.FINISHED,
    "console hello": ChannelState.CLOSED,
    "jumpoint hello": ChannelState.CLOSED,
    "kubernetes connection": KubeConnectionState.CLOSED,
    "http relay": RelayMode.DONE,
    "datagram flow": FlowState.CLOSED,
    "network service session": SessionState.CLOSED,
}

UNUSED = {
    "console hello": {ChannelState.AWAITING_HELLO, ChannelState.REFUSED},
    "jumpoint hello": {ChannelState.HELLO_SENT},
}


def every_move() -> list[tuple[str, Any, Any]]:
    return [
        (name, state, event)
        for name, (table, _) in TABLES.items()
        for state in table.states
        for event in table.events
    ]


# -- the tables, exhaustively ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "state", "event"),
    every_move(),
    ids=[f"{n}:{s.name}x{e.name}" for n, s, e in every_move()],
)
def test_every_state_times_every_event(name: str, state: Any, event: Any) -> None:
    table, _ = TABLES[name]
    lifecycle = table.start(state)
    target = table.target(state, event)
    assert lifecycle.allows(event) is (target is not None)
    if target is None:
        with pytest.raises(IllegalTransition) as raised:
            lifecycle.fire(event)
        assert raised.value.state is state and raised.value.event is event
        assert event.name in str(raised.value) and state.name in str(raised.value)
        assert lifecycle.state is state  # a refused event changes nothing
    else:
        assert lifecycle.fire(event) is target
        assert lifecycle.state is target


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_state_is_reachable_and_can_end(name: str) -> None:
    table, initial = TABLES[name]
    reached = {initial}
    todo = [initial]
    while todo:
        state = todo.pop()
        for event in table.allowed(state):
            target = table.target(state, event)
            if target not in reached:
                reached.add(target)
                todo.append(target)
    # The two hello tables share ChannelState; each leaves out the other side's states.
    assert set(table.states) - reached == UNUSED.get(name, set())
    final = FINAL[name]
    assert table.allowed(final) == frozenset()  # nothing happens after the end
    for state in reached:  # every state leads to the final one
        assert _leads_to(table, state, final), state


def _leads_to(table: Transitions[Any, Any], start: Any, final: Any) -> bool:
    seen, todo = {start}, [start]
    while todo:
        state = todo.pop()
        if state is final:
            return True
        for event in table.allowed(state):
            target = table.target(state, event)
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return False


@pytest.mark.parametrize("name", sorted(TABLES))
@given(data=st.data())
@settings(max_examples=50, deadline=None)
def test_random_event_sequences_follow_the_table(name: str, data: st.DataObject) -> None:
    table, initial = TABLES[name]
    lifecycle = table.start(initial)
    events = data.draw(st.lists(st.sampled_from(list(table.events)), max_size=30))
    for event in events:
        before = lifecycle.state
        target = table.target(before, event)
        if target is None:
            with pytest.raises(IllegalTransition):
                lifecycle.fire(event)
            assert lifecycle.state is before
        else:
            assert lifecycle.fire(event) is target


class Colour(enum.Enum):
    RED = 1
    GREEN = 2


class Go(enum.Enum):
    NEXT = 1


def test_a_table_is_checked_when_it_is_built() -> None:
    with pytest.raises(TypeError, match="not a Colour"):
        Transitions("t", Colour, Go, {Go.NEXT: {}})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="bad transition"):
        Transitions("t", Colour, Go, {Colour.RED: {Go.NEXT: Go.NEXT}})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="bad transition"):
        Transitions("t", Colour, Go, {Colour.RED: {Colour.GREEN: Colour.GREEN}})  # type: ignore[dict-item]
    table = Transitions("t", Colour, Go, {Colour.RED: {Go.NEXT: Colour.GREEN}})
    with pytest.raises(TypeError, match="not a state"):
        Lifecycle(table, Go.NEXT)  # type: ignore[arg-type]
    lifecycle = table.start(Colour.RED)
    assert repr(lifecycle) == "<t RED>"
    assert lifecycle.fire(Go.NEXT) is Colour.GREEN
    assert table.allowed(Colour.GREEN) == frozenset()  # absent from the table: final
    with pytest.raises(IllegalTransition, match="t: event NEXT is not allowed in state GREEN"):
        lifecycle.fire(Go.NEXT)


# -- the stream, driven through its real API ----------------------------------------------


class Handler:
    def control_received(self, message: dict[str, Any]) -> None:
        pass

    def stream_requested(self, stream: Any, payload: bytes) -> None:
        pass

    def mux_closing(self, code: int, reason: str, by_peer: bool) -> None:
        pass


class Wire(StringTransport):
    """The channel's transport, or a bridge's socket (records half-closes)."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


def make_mux() -> tuple[Multiplexer, Wire]:
    mux = Multiplexer(is_client=True, handler=Handler(), clock=Clock(), settings=MuxSettings())
    wire = Wire()
    mux.make_connection(wire)
    mux.establish()
    return mux, wire


def peer_sends(
    mux: Multiplexer, stream_id: int, frame_type: FrameType, flags: int, payload: bytes
) -> None:
    mux.data_received(encode_frame(frame_type, flags, stream_id, payload))


def peer_fin(mux: Multiplexer, stream: Stream) -> None:
    peer_sends(mux, stream.stream_id, FrameType.DATA, Flag.FIN, b"")


def queue_some(mux: Multiplexer, stream: Stream) -> None:
    """The transport is full: what the stream writes waits in its queue."""
    mux.pauseProducing()
    stream.write(b"queued")
    assert stream.queued_bytes


STREAM_SETUPS: dict[StreamState, Callable[[Multiplexer, Stream], None]] = {
    StreamState.OPEN: lambda mux, stream: None,
    StreamState.FIN_QUEUED: lambda mux, stream: (queue_some(mux, stream), stream.end_write()),
    StreamState.HALF_CLOSED_LOCAL: lambda mux, stream: stream.end_write(),
    StreamState.HALF_CLOSED_REMOTE: lambda mux, stream: peer_fin(mux, stream),
    StreamState.CLOSING: lambda mux, stream: (
        peer_fin(mux, stream),
        queue_some(mux, stream),
        stream.end_write(),
    ),
    StreamState.CLOSED: lambda mux, stream: peer_sends(
        mux, stream.stream_id, FrameType.RESET, 0, frames.encode_reason(ErrorCode.CANCEL, "x")
    ),
}

STREAM_EVENTS: dict[StreamEvent, Callable[[Multiplexer, Stream], None]] = {
    StreamEvent.END_WRITE: lambda mux, stream: stream.end_write(),
    StreamEvent.FIN_SENT: lambda mux, stream: mux.resumeProducing(),  # the queue drains
    StreamEvent.FIN_RECEIVED: peer_fin,
    StreamEvent.DATA_RECEIVED: lambda mux, stream: peer_sends(
        mux, stream.stream_id, FrameType.DATA, 0, b"late"
    ),
    StreamEvent.RESET: lambda mux, stream: peer_sends(
        mux, stream.stream_id, FrameType.RESET, 0, frames.encode_reason(ErrorCode.CANCEL, "x")
    ),
}

# What the API does with an event the table does not allow in that state.
IGNORED = "ignored"
RESET_PROTOCOL_ERROR = "reset: protocol_error"


def stream_outcome(state: StreamState, event: StreamEvent) -> StreamState | str:
    target = STREAM_TRANSITIONS.target(state, event)
    if target is not None:
        return target
    if event is StreamEvent.DATA_RECEIVED and state is not StreamState.CLOSED:
        return RESET_PROTOCOL_ERROR  # DATA after FIN
    return IGNORED  # a second end_write or FIN, nothing queued to drain, a forgotten stream


@pytest.mark.parametrize(
    ("state", "event"),
    list(itertools.product(StreamState, StreamEvent)),
    ids=[f"{s.name}x{e.name}" for s, e in itertools.product(StreamState, StreamEvent)],
)
def test_a_real_stream_in_every_state_takes_every_event(
    state: StreamState, event: StreamEvent
) -> None:
    mux, wire = make_mux()
    stream = mux.open_stream(b"{}")
    app = RecordingApp()
    stream.attach(app)
    STREAM_SETUPS[state](mux, stream)
    assert stream.state is state
    wire.clear()
    expected = stream_outcome(state, event)
    if (
        event is StreamEvent.END_WRITE
        and isinstance(expected, StreamState)
        and not stream.queued_bytes  # nothing to wait for: the FIN goes out at once
    ):
        expected = STREAM_TRANSITIONS.target(expected, StreamEvent.FIN_SENT) or expected
    STREAM_EVENTS[event](mux, stream)
    sent = FrameParser(1 << 20).feed(wire.value())
    if expected == IGNORED:
        assert stream.state is state
    elif expected == RESET_PROTOCOL_ERROR:
        assert stream.state is StreamState.CLOSED
        (reset,) = [f for f in sent if f.type is FrameType.RESET]
        assert frames.decode_reason(reset.payload) == (ErrorCode.PROTOCOL_ERROR, "DATA after FIN")
        assert app.reset == (ErrorCode.PROTOCOL_ERROR, "the peer sent DATA after FIN")
        assert not mux.closing  # a stream error: the channel stays
    else:
        assert stream.state is expected
    # The derived flags agree with the state.
    assert stream.closed is (stream.state is StreamState.CLOSED)
    assert (stream.stream_id in mux.streams) is not stream.closed
    if stream.closed:
        assert stream.queued_bytes == 0


def test_both_fins_with_our_fin_still_queued_is_closing_not_half_closed_local() -> None:
    """The derived state said "half-closed (local)" here, though the peer had ended too."""
    mux, _ = make_mux()
    stream = mux.open_stream(b"{}")
    stream.attach(RecordingApp())
    queue_some(mux, stream)
    stream.end_write()
    peer_fin(mux, stream)
    assert stream.state is StreamState.CLOSING and stream.state == "closing"
    assert stream.local_fin and stream.remote_fin and not stream.closed
    mux.resumeProducing()
    assert stream.state is StreamState.CLOSED


def test_the_stream_ids_run_out_cleanly() -> None:
    """Past MAX_STREAM_ID no OPEN goes out (the peer would drop the whole channel for it):
    the channel goes away with LIMIT and the new stream's application hears why."""
    mux, wire = make_mux()
    mux._next_stream_id = frames.MAX_STREAM_ID  # the last odd id
    last = mux.open_stream(b"{}")
    assert last.stream_id == frames.MAX_STREAM_ID and not mux.closing
    last_app = RecordingApp()
    last.attach(last_app)
    wire.clear()
    refused = mux.open_stream(b"{}")
    sent = FrameParser(1 << 20).feed(wire.value())
    assert [f.type for f in sent] == [FrameType.GOAWAY]
    assert frames.decode_reason(sent[0].payload) == (
        ErrorCode.LIMIT,
        "the channel has used every stream id",
    )
    assert mux.closing and refused.closed and refused.stream_id not in mux.streams
    assert last_app.reset is not None and last_app.reset[0] == ErrorCode.LIMIT
    app = RecordingApp()
    refused.attach(app)
    assert app.reset == (ErrorCode.LIMIT, "the channel has used every stream id")
    # A bridge on such a stream ends at once and never dials.
    bridge = TcpBridge(mux.open_stream(b"{}"))
    assert bridge.state is BridgeState.FINISHED and bridge.reset_code == ErrorCode.LIMIT


# -- the bridge, driven through its real API ----------------------------------------------


class BridgeCase:
    def __init__(self) -> None:
        self.mux, _ = make_mux()
        self.stream = self.mux.open_stream(b"{}")
        self.bridge = TcpBridge(self.stream)
        self.bridge.wait_for_connection()
        self.socket = Wire()

    def connect(self) -> None:
        self.bridge.makeConnection(self.socket)

    def peer_fin(self) -> None:
        peer_fin(self.mux, self.stream)


BRIDGE_SETUPS: dict[BridgeState, Callable[[BridgeCase], None]] = {
    BridgeState.CONNECTING: lambda case: None,
    BridgeState.CONNECTING_ENDED: lambda case: case.peer_fin(),
    BridgeState.OPEN: lambda case: case.connect(),
    BridgeState.READ_CLOSED: lambda case: (case.connect(), case.bridge.readConnectionLost()),
    BridgeState.WRITE_CLOSED: lambda case: (case.connect(), case.peer_fin()),
    BridgeState.CLOSING: lambda case: (
        case.connect(),
        case.peer_fin(),
        case.bridge.readConnectionLost(),
    ),
    BridgeState.FINISHED: lambda case: (
        case.connect(),
        case.bridge.abort(ErrorCode.CANCEL, "test"),
    ),
}


def _reconnect(case: BridgeCase) -> None:
    case.bridge.half_close.reconnect()  # what the SQL Server reroute calls


BRIDGE_EVENTS: dict[BridgeEvent, Callable[[BridgeCase], None]] = {
    BridgeEvent.CONNECTED: lambda case: case.bridge.makeConnection(Wire()),
    BridgeEvent.PEER_FIN: lambda case: case.peer_fin(),
    BridgeEvent.WRITE_LOST: lambda case: case.bridge.writeConnectionLost(),
    BridgeEvent.SOCKET_EOF: lambda case: case.bridge.readConnectionLost(),
    BridgeEvent.RECONNECT: _reconnect,
    BridgeEvent.FINISH: lambda case: case.bridge.connectionLost(Failure(ConnectionDone())),
}

RAISES = "raises"


def bridge_outcome(state: BridgeState, event: BridgeEvent) -> BridgeState | str:
    """What the real bridge does with C{event} in C{state}."""
    target = BRIDGE_TRANSITIONS.target(state, event)
    if target is not None:
        if state is BridgeState.CONNECTING_ENDED:
            # connected, the FIN that came while connecting is replayed at once
            return BRIDGE_TRANSITIONS.target(target, BridgeEvent.PEER_FIN) or target
        return target
    if state is BridgeState.FINISHED:
        return IGNORED  # late callbacks of a finished bridge
    if event is BridgeEvent.PEER_FIN:
        return IGNORED  # a second FIN never reaches the bridge
    if event is BridgeEvent.RECONNECT:
        return IGNORED  # not connected: nothing to replace
    return RAISES  # Twisted never does this: a bug, said loudly


@pytest.mark.parametrize(
    ("state", "event"),
    list(itertools.product(BridgeState, BridgeEvent)),
    ids=[f"{s.name}x{e.name}" for s, e in itertools.product(BridgeState, BridgeEvent)],
)
def test_a_real_bridge_in_every_state_takes_every_event(
    state: BridgeState, event: BridgeEvent
) -> None:
    case = BridgeCase()
    BRIDGE_SETUPS[state](case)
    assert case.bridge.state is state
    expected = bridge_outcome(state, event)
    if expected == RAISES:
        with pytest.raises(IllegalTransition):
            BRIDGE_EVENTS[event](case)
        assert case.bridge.state is state
        return
    BRIDGE_EVENTS[event](case)
    if expected == IGNORED:
        assert case.bridge.state is state
    else:
        assert case.bridge.state is expected
    bridge = case.bridge
    assert bridge.half_close.finished is (bridge.state is BridgeState.FINISHED)
    assert bridge.half_close.read_ended is (
        bridge.state in (BridgeState.READ_CLOSED, BridgeState.CLOSING)
    )
    assert bridge.half_close.write_ended is (
        bridge.state in (BridgeState.WRITE_CLOSED, BridgeState.CLOSING)
    )


def test_a_fin_before_the_connection_is_replayed_once_connected() -> None:
    case = BridgeCase()
    case.peer_fin()
    assert case.bridge.state is BridgeState.CONNECTING_ENDED
    case.connect()
    assert case.bridge.state is BridgeState.WRITE_CLOSED and case.socket.write_closed
    case.bridge.writeConnectionLost()  # the shutdown we asked for completes
    case.bridge.readConnectionLost()
    assert case.bridge.state is BridgeState.CLOSING and case.socket.disconnecting
    case.bridge.connectionLost(Failure(ConnectionDone()))
    assert case.bridge.state is BridgeState.FINISHED and case.bridge.close_reason == "closed"
    assert case.bridge.reset_code is None


# Possible things that happen to a connected bridge, in any order.
ACTIONS = {
    "socket data": lambda case: case.bridge.dataReceived(b"up") if not case.eof else None,
    "socket eof": lambda case: case.socket_eof(),
    "peer data": lambda case: (
        peer_sends(case.mux, case.stream.stream_id, FrameType.DATA, 0, b"down")
        if not case.peer_ended
        else None
    ),
    "peer fin": lambda case: case.peer_finishes(),
    "peer reset": lambda case: peer_sends(
        case.mux,
        case.stream.stream_id,
        FrameType.RESET,
        0,
        frames.encode_reason(ErrorCode.CANCEL, "x"),
    ),
    "socket full": lambda case: (
        case.socket.producer.pauseProducing() if case.socket.producer else None
    ),
    "socket drained": lambda case: (
        case.socket.producer.resumeProducing() if case.socket.producer else None
    ),
    "channel full": lambda case: case.mux.pauseProducing(),
    "channel drained": lambda case: case.mux.resumeProducing(),
    "write side lost": lambda case: case.write_lost(),
    "session closes": lambda case: case.bridge.abort(ErrorCode.SESSION_CLOSED, "closed"),
}


class LiveCase(BridgeCase):
    def __init__(self) -> None:
        super().__init__()
        self.eof = False
        self.peer_ended = False
        self.lost = False

    def socket_eof(self) -> None:
        if not self.eof and not self.bridge.half_close.finished:
            self.eof = True
            self.bridge.readConnectionLost()

    def peer_finishes(self) -> None:
        self.peer_ended = True
        self.peer_fin()

    def write_lost(self) -> None:
        if self.socket.write_closed or not self.lost:
            self.bridge.writeConnectionLost()


@given(
    before_connect=st.lists(st.sampled_from(["peer data", "peer fin", "channel full"]), max_size=3),
    actions=st.lists(st.sampled_from(sorted(ACTIONS)), max_size=25),
)
@settings(max_examples=300, deadline=None)
def test_no_possible_sequence_of_events_attempts_an_undefined_transition(
    before_connect: list[str], actions: list[str]
) -> None:
    case = LiveCase()
    for action in before_connect:  # the stream carries data before the target answers
        ACTIONS[action](case)
    case.connect()
    for action in actions:
        ACTIONS[action](case)  # raises IllegalTransition on a move the table lacks
        if case.socket.disconnecting and not case.lost:
            # the socket closes (loseConnection or abortConnection took effect)
            case.lost = True
            case.bridge.connectionLost(Failure(ConnectionDone()))
    bridge, stream = case.bridge, case.stream
    if bridge.state is BridgeState.FINISHED:
        assert stream.closed or stream.state in (
            StreamState.FIN_QUEUED,
            StreamState.HALF_CLOSED_LOCAL,
            StreamState.CLOSING,
        )
    if stream.closed:
        assert (
            bridge.state in (BridgeState.FINISHED, BridgeState.CLOSING) or case.socket.disconnecting
        )


# -- the channel hello, on real channels ------------------------------------------------------


def test_a_welcomed_channel_is_established_on_both_sides(jumpoint: Jumpoint) -> None:
    console, pump, channel = jumpoint.connect()
    assert console.hello.state is ChannelState.ESTABLISHED
    assert channel.hello.state is ChannelState.ESTABLISHED
    console.close()
    pump.flush()
    assert console.hello.state is ChannelState.CLOSED
    assert channel.hello.state is ChannelState.CLOSED


def test_a_second_welcome_is_a_protocol_violation(jumpoint: Jumpoint) -> None:
    console, pump, _ = jumpoint.connect()
    assert console.mux is not None
    welcome = {"type": control.WELCOME, "version": 1, "jumpoint": "j", "user": "u", "group": "g"}
    console.control_received(welcome)
    assert console.mux.closing and console._goaway == (ErrorCode.PROTOCOL_ERROR, "second welcome")
    pump.flush()


class Mute(ConsoleChannel):
    """A console that completes TLS and never says hello."""

    def channel_started(self) -> None:
        self.hello.fire(ChannelEvent.STARTED)


def _mute_console(jumpoint: Jumpoint) -> tuple[Mute, Any, Any]:
    profile = Profile("unit", jumpoint.tmp_path, "unit", "127.0.0.1", 7443, "127.0.0.1", "alice")
    console = Mute(jumpoint.clock, profile)
    keys = jumpoint.keys
    factory = wrap_client(
        client_options(
            "127.0.0.1", keys.ca.certificate_pem, keys.alice.certificate_pem, keys.alice.key_pem
        ),
        Factory.forProtocol(lambda: console),
    )
    _, _, pump = connectedServerAndClient(
        lambda: jumpoint.server_factory.buildProtocol(None),
        lambda: factory.buildProtocol(None),
        clock=jumpoint.clock,
    )
    pump.flush()
    (channel,) = jumpoint.core.channels
    return console, pump, channel


def test_a_request_before_hello_is_a_protocol_violation(jumpoint: Jumpoint) -> None:
    console, pump, channel = _mute_console(jumpoint)
    assert channel.hello.state is ChannelState.AWAITING_HELLO
    assert console.transport is not None
    parser = FrameParser(1 << 20)
    back: list[Any] = []
    assert console.mux is not None
    console.mux.data_received = lambda chunk: back.extend(parser.feed(chunk))  # type: ignore[method-assign]
    console.transport.write(control_frame({"type": control.LIST_ITEMS, "id": 1}))
    pump.flush()
    assert goaway(back) == ErrorCode.PROTOCOL_ERROR
    (frame,) = [f for f in back if f.type is FrameType.GOAWAY]
    assert frames.decode_reason(frame.payload)[1] == "'list_items' before hello"
    assert channel.hello.state is ChannelState.CLOSED


# -- the console's Kubernetes connections --------------------------------------------------------


@pytest.fixture
def kube(tmp_path: Path) -> SessionKubeconfig:
    return SessionKubeconfig.create(tmp_path, "s-1", "cluster", "127.0.0.5", 4443, "dev")


def test_a_kubernetes_connection_awaits_its_login_then_relays_then_closes(
    kube: SessionKubeconfig,
) -> None:
    setup = Setup(kube)
    connection = setup.bridge
    assert connection.state is KubeConnectionState.AWAITING_LOGIN
    connection.dataReceived(request(kube))
    assert connection.state is KubeConnectionState.RELAYING and setup.streams
    connection.connectionLost(Failure(ConnectionDone()))
    assert connection.state is KubeConnectionState.CLOSED
    assert setup.ended == []  # the leg reports the end, not the login


def test_a_kubernetes_connection_upgraded_by_101(kube: SessionKubeconfig) -> None:
    setup = Setup(kube)
    connection = setup.bridge
    connection.dataReceived(
        request(
            kube,
            "POST",
            "/api/v1/namespaces/dev/pods/p/exec",
            extra="Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n",
        )
    )
    assert connection.state is KubeConnectionState.RELAYING
    setup.stream._data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"
    )
    assert connection.state is KubeConnectionState.UPGRADED


def test_a_kubernetes_connection_that_never_logs_in_times_out_once(kube: SessionKubeconfig) -> None:
    setup = Setup(kube, login_timeout=5)
    connection = setup.bridge
    setup.clock.advance(5)
    assert connection.state is KubeConnectionState.TIMED_OUT and connection.timed_out
    assert setup.local.disconnecting  # aborted
    connection.connectionLost(Failure(ConnectionDone()))
    assert connection.state is KubeConnectionState.CLOSED
    assert setup.ended == [True]  # reported once, as a timeout
    assert setup.streams == []


def test_a_kubernetes_connection_closed_before_login_is_reported_once(
    kube: SessionKubeconfig,
) -> None:
    setup = Setup(kube)
    setup.bridge.connectionLost(Failure(ConnectionDone()))
    assert setup.bridge.state is KubeConnectionState.CLOSED
    setup.clock.advance(60)  # the login timer was cancelled
    assert setup.ended == [False]


# -- the HTTP relay's modes ------------------------------------------------------------------

LIST = b"GET /api/v1/namespaces/dev/pods HTTP/1.1\r\nHost: 127.0.0.5:18443\r\n\r\n"


def test_the_relay_goes_idle_exchange_idle_upgraded_done() -> None:
    relay, recorder = make()
    assert relay.mode is RelayMode.IDLE and not relay.busy
    relay.feed_client(LIST)
    assert relay.mode is RelayMode.EXCHANGE and relay.busy
    relay.feed_upstream(OK)
    assert relay.mode is RelayMode.IDLE and not relay.busy  # kept alive for the next one
    relay.feed_client(EXEC_WS)
    assert relay.mode is RelayMode.EXCHANGE
    relay.feed_upstream(SWITCH)
    assert relay.mode is RelayMode.UPGRADED and relay.busy and recorder.switches == 1
    relay.client_eof()
    relay.upstream_eof()
    assert relay.mode is RelayMode.DONE and relay.done and recorder.end == ("closed", True)


def test_an_idle_relay_whose_client_leaves_is_done() -> None:
    relay, recorder = make()
    relay.client_eof()
    assert relay.mode is RelayMode.DONE and recorder.end == ("closed", True)


def test_a_relay_cut_in_the_middle_of_an_exchange_is_done() -> None:
    relay, recorder = make()
    relay.feed_client(LIST)
    relay.abort("cut")
    assert relay.mode is RelayMode.DONE and recorder.end == ("cut", False)
    relay.feed_client(LIST)  # nothing more happens once done
    assert relay.mode is RelayMode.DONE and len(recorder.heads) == 1


def test_a_pipelined_request_is_not_started_after_the_relay_finished() -> None:
    """A response delimited by the close ends the conversation; the request the client
    had pipelined behind it was still decided and forwarded after C{finished} (found by
    the lifecycle: REQUEST is not allowed once DONE)."""
    relay, recorder = make()
    relay.feed_client(LIST + LIST)
    relay.feed_upstream(b"HTTP/1.1 200 OK\r\n\r\nuntil close")
    upstream_before = recorder.take_upstream()
    relay.upstream_eof()
    assert relay.mode is RelayMode.DONE and recorder.end is not None
    assert len(recorder.heads) == 1  # the second request was never decided
    assert recorder.take_upstream() == b""  # nor forwarded
    assert upstream_before.count(b"GET ") == 1
    (exchange,) = recorder.finished_exchanges
    assert exchange.ended == "complete"
