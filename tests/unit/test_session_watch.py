"""console.session_watch with a real TunnelSession and TunnelFactory on fake channels:
which losses end the session and which reconnect, the connections reset and counted,
local connections held meanwhile and released or refused, the tunnels' status."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport

from console.held_connections import HeldConnection
from console.session_watch import SessionWatch
from console.tunnels import TunnelFactory, TunnelSession
from shared.errors import AccessDenied, JumpError, SessionLost

LOST = SessionLost("the connection to the Jumpoint was lost: reset")
PEER = IPv4Address("TCP", "127.0.0.1", 50000)


class FakeMux:
    def __init__(self, streams: int = 0) -> None:
        self.closing = False
        self.streams_at_close = streams


class FakeChannel:
    def __init__(self, clock: MemoryReactorClock, reconnectable: bool = True) -> None:
        self.clock = clock
        self.lost: Deferred[JumpError] = Deferred()
        self.mux = FakeMux()
        self.profile = None
        self.address = "127.0.0.1:7443"
        self.session_closed_reason: tuple[str, str] | None = None
        self.reconnectable = reconnectable
        self.on_flow_closed = None

    def loss_is_reconnectable(self) -> bool:
        return self.reconnectable

    def lose(self, error: JumpError = LOST, streams: int = 0) -> None:
        self.mux.closing = True
        self.mux.streams_at_close = streams
        self.lost.callback(error)


class FakeResumer:
    def __init__(self, token: str | None = "t") -> None:
        self.token = token
        self.attempts: list[Deferred[str]] = []

    def attempt(self, number: int) -> Deferred[str]:
        self.attempts.append(Deferred())
        return self.attempts[-1]


class View:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def news(self, event: dict[str, Any]) -> None:
        self.events.append(event)


RESULT = {
    "session": "s1",
    "resume_token": "t",
    "item": {"name": "web", "type": "tcp"},
    "tunnels": [
        {"local_address": "127.0.0.5", "local_port": 8080, "remote_host": "h", "remote_port": 80}
    ],
}


def setup(
    token: str | None = "t", reconnectable: bool = True, connect_wait: float = 10.0
) -> tuple[MemoryReactorClock, FakeChannel, TunnelSession, FakeResumer, View, list[Any]]:
    clock = MemoryReactorClock()
    channel = FakeChannel(clock, reconnectable)
    session = TunnelSession(channel, "web", RESULT)  # type: ignore[arg-type]
    resumer, view, endings = FakeResumer(token), View(), []
    watch = SessionWatch(
        clock,
        session,
        view,  # type: ignore[arg-type]
        lambda error, code: endings.append((code, error)),
        resumer,  # type: ignore[arg-type]
        300.0,
        connect_wait,
    )
    watch.watch(channel)  # type: ignore[arg-type]
    return clock, channel, session, resumer, view, endings


def test_a_loss_that_is_a_decision_ends_the_session_with_its_code() -> None:
    _, channel, session, resumer, view, endings = setup(reconnectable=False)
    channel.session_closed_reason = ("revoked", "your access was revoked")
    channel.lose()
    assert endings == [("revoked", LOST)] and view.events == [] and session.held is None


def test_without_a_resume_token_a_loss_ends_the_session_as_before() -> None:
    _, channel, session, _, view, endings = setup(token=None)
    channel.lose()
    assert endings == [("jumpoint_lost", LOST)] and view.events == []


def test_a_part_that_cannot_move_ends_the_session() -> None:
    clock = MemoryReactorClock()
    channel = FakeChannel(clock)
    session = TunnelSession(channel, "web", RESULT)  # type: ignore[arg-type]
    session.part.reconnects = False  # as a network session's part says
    endings: list[Any] = []
    watch = SessionWatch(
        clock,
        session,
        View(),
        lambda e, c: endings.append(c),
        FakeResumer(),
        300.0,
        10.0,  # type: ignore[arg-type]
    )
    watch.watch(channel)  # type: ignore[arg-type]
    channel.lose()
    assert endings == ["jumpoint_lost"]


def test_a_loss_resets_counts_holds_and_the_reconnect_releases() -> None:
    clock, channel, session, resumer, view, endings = setup()
    channel.lose(streams=3)
    (news,) = view.events
    assert news["event"] == "reconnecting" and news["reset_connections"] == 3
    assert session.tunnels[0].status == "reconnecting" and session.held is not None
    factory = TunnelFactory(session, session.tunnels[0])
    held = factory.buildProtocol(PEER)
    assert isinstance(held, HeldConnection)
    held.makeConnection(StringTransport())
    clock.advance(news["retry_in"] + 0.001)
    new_channel = FakeChannel(clock)
    session.attach(new_channel)  # type: ignore[arg-type]
    released: list[bool] = []
    held.build = lambda: released.append(True)  # type: ignore[assignment,return-value,func-returns-value]
    resumer.attempts[0].callback("127.0.0.2:7443")
    assert view.events[-1]["event"] == "reconnected"
    assert view.events[-1]["address"] == "127.0.0.2:7443"
    assert released == [True] and session.held is None
    assert session.tunnels[0].status == "listening" and endings == []


def test_a_denial_at_resume_refuses_the_held_connections_and_ends_with_its_code() -> None:
    from console.reconnect import Final

    clock, channel, session, resumer, view, endings = setup()
    channel.lose()
    held = TunnelFactory(session, session.tunnels[0]).buildProtocol(PEER)
    transport = StringTransport()
    held.makeConnection(transport)
    clock.advance(1.0)
    denial = AccessDenied("your access was revoked", rule="users.revoked")
    resumer.attempts[0].errback(Final(denial))
    assert endings == [("denied", denial)]
    assert transport.disconnecting
    refused = [e for e in view.events if e["event"] == "connection_refused"]
    assert refused and refused[0]["reason"].startswith("reconnecting: ")


def test_a_connection_waits_at_most_connect_wait() -> None:
    clock, channel, session, _, view, _ = setup(connect_wait=2.0)
    channel.lose()
    transport = StringTransport()
    TunnelFactory(session, session.tunnels[0]).buildProtocol(PEER).makeConnection(transport)
    clock.advance(2.01)
    assert transport.disconnecting
    assert view.events[-1] == {
        "event": "connection_refused",
        "reason": "reconnecting: the channel was not back within --connect-wait (2s)",
    }


def test_a_loss_of_an_old_channel_is_ignored() -> None:
    clock, channel, session, _, view, endings = setup()
    session.attach(FakeChannel(clock))  # type: ignore[arg-type]
    channel.lose()
    assert view.events == [] and endings == []
