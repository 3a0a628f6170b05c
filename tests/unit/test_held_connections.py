"""console.held_connections: connections made while reconnecting wait, bounded in number and
time, then go through on the new channel (with what they sent meanwhile) or are refused
with a reason that starts with "reconnecting:"."""

from __future__ import annotations

from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from console.held_connections import MAX_HELD_BYTES, HeldConnection, HeldConnections


class Inner(Protocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.made = False
        self.lost = False

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure | None = None) -> None:  # type: ignore[override]
        self.lost = True


def setup(
    wait: float = 10.0, limit: int = 64
) -> tuple[MemoryReactorClock, HeldConnections, list[str]]:
    clock, reasons = MemoryReactorClock(), []
    return clock, HeldConnections(clock, wait, reasons.append, limit), reasons


def accept(held: HeldConnections, inner: Protocol | None) -> tuple[HeldConnection, StringTransport]:
    connection = held.hold(lambda: inner)
    transport = StringTransport()
    connection.makeConnection(transport)
    return connection, transport


def test_a_held_connection_is_paused_then_goes_through_with_what_it_sent() -> None:
    clock, held, reasons = setup()
    inner = Inner()
    connection, transport = accept(held, inner)
    assert transport.producerState == "paused"
    connection.dataReceived(b"GET / HTTP/1.1\r\n")
    assert held.release_all() == 1
    assert inner.made and inner.transport is transport
    assert inner.received == [b"GET / HTTP/1.1\r\n"]
    assert transport.producerState == "producing"
    connection.dataReceived(b"more")
    assert inner.received[-1] == b"more"
    connection.connectionLost(Failure(ConnectionError()))
    assert inner.lost and reasons == [] and not clock.getDelayedCalls()


def test_a_connection_not_released_within_connect_wait_is_refused_with_a_reason() -> None:
    clock, held, reasons = setup(wait=10.0)
    _connection, transport = accept(held, Inner())
    clock.advance(9.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting
    assert reasons == ["reconnecting: the channel was not back within --connect-wait (10s)"]
    assert held.held == set() and held.refused_count == 1


def test_beyond_the_limit_connections_are_refused_at_once() -> None:
    _clock, held, reasons = setup(limit=3)
    accepted = [accept(held, Inner()) for _ in range(5)]
    assert [t.disconnecting for _, t in accepted] == [False, False, False, True, True]
    assert reasons == ["reconnecting: 3 connections already wait"] * 2
    assert len(held.held) == 3


def test_refuse_all_closes_every_waiting_connection_when_reconnecting_gives_up() -> None:
    clock, held, reasons = setup()
    accepted = [accept(held, Inner()) for _ in range(4)]
    assert held.refuse_all("reconnecting: gave up") == 4
    assert all(t.disconnecting for _, t in accepted)
    assert reasons == ["reconnecting: gave up"] * 4 and not clock.getDelayedCalls()


def test_a_connection_the_session_refuses_at_release_is_closed() -> None:
    _clock, held, _reasons = setup()
    _connection, transport = accept(held, None)
    held.release_all()
    assert transport.disconnecting


def test_a_client_that_left_while_waiting_is_forgotten() -> None:
    clock, held, _reasons = setup()
    inner = Inner()
    connection, _transport = accept(held, inner)
    connection.connectionLost(Failure(ConnectionError()))
    assert held.held == set() and not clock.getDelayedCalls()
    assert held.release_all() == 0 and not inner.made


def test_a_client_that_sends_too_much_while_waiting_is_refused() -> None:
    _clock, held, reasons = setup()
    connection, transport = accept(held, Inner())
    connection.dataReceived(b"x" * (MAX_HELD_BYTES + 1))
    assert transport.disconnecting and reasons[0].startswith("reconnecting:")
