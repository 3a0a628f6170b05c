"""console.reconnect: the reconnect lifecycle on a MemoryReactorClock.

Attempts are scripted Deferreds; the listener records what `jump open`
would show.  Covered: the backoff between attempts (jittered, within bounds),
the give-up at --reconnect-for with the last reason, a decision that ends
the session at once, --no-reconnect, and the backoff reset after a success.
"""

from __future__ import annotations

import random

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock

from console.backoff import Backoff
from console.reconnect import (
    TRANSITIONS,
    Event,
    Final,
    Reconnected,
    Reconnecting,
    Reconnector,
    State,
    describe,
)
from shared.errors import AccessDenied, ExitCode, JumpError, JumpointUnreachable, SessionLost


class Recorder:
    def __init__(self) -> None:
        self.news: list[Reconnecting | Reconnected] = []
        self.endings: list[JumpError] = []

    def reconnecting(self, news: Reconnecting) -> None:
        self.news.append(news)

    def reconnected(self, news: Reconnected) -> None:
        self.news.append(news)

    def ended(self, error: JumpError) -> None:
        self.endings.append(error)


class Attempts:
    """Each attempt's Deferred, to fire by hand."""

    def __init__(self) -> None:
        self.pending: list[Deferred[str]] = []

    def __call__(self, number: int) -> Deferred[str]:
        attempt: Deferred[str] = Deferred()
        self.pending.append(attempt)
        return attempt

    def fail(self, error: BaseException) -> None:
        self.pending.pop(0).errback(error)

    def succeed(self, address: str = "127.0.0.1:7443") -> None:
        self.pending.pop(0).callback(address)


LOST = SessionLost("the connection to the Jumpoint was lost: reset by peer")


def make(
    reconnect_for: float | None = 300.0, seed: int = 1
) -> tuple[MemoryReactorClock, Attempts, Recorder, Reconnector]:
    clock, attempts, recorder = MemoryReactorClock(), Attempts(), Recorder()
    backoff = Backoff(0.5, 30.0, random.Random(seed).uniform)
    return clock, attempts, recorder, Reconnector(clock, attempts, recorder, reconnect_for, backoff)


def run_until_attempt(clock: MemoryReactorClock, attempts: Attempts) -> None:
    news_delay = 0.0
    while not attempts.pending:
        clock.advance(0.05)
        news_delay += 0.05
        assert news_delay < 60, "no attempt started"


def test_a_loss_announces_the_first_attempt_within_the_base_delay() -> None:
    clock, attempts, recorder, reconnector = make()
    reconnector.lost(LOST, reset_connections=3)
    (news,) = recorder.news
    assert isinstance(news, Reconnecting)
    assert (news.attempt, news.reset_connections) == (1, 3)
    assert news.reason == LOST.message
    assert 0 <= news.retry_in <= 0.5
    assert reconnector.state is State.WAITING
    clock.advance(news.retry_in + 0.001)  # retry_in is rounded to the millisecond
    assert len(attempts.pending) == 1 and reconnector.state is State.DIALING


def test_failed_attempts_back_off_with_jitter_inside_the_capped_bounds() -> None:
    clock, attempts, recorder, reconnector = make(reconnect_for=10_000.0)
    reconnector.lost(LOST)
    for n in range(12):
        run_until_attempt(clock, attempts)
        attempts.fail(JumpointUnreachable(f"refused {n}"))
    waits = [news.retry_in for news in recorder.news if isinstance(news, Reconnecting)]
    assert len(waits) == 13
    for n, wait in enumerate(waits):
        assert 0 <= wait <= min(30.0, 0.5 * 2**n)
    assert len(set(waits)) > 10  # jittered, not one fixed schedule
    last = recorder.news[-1]
    assert isinstance(last, Reconnecting) and last.reason == "refused 11"
    assert last.attempt == 13


def test_it_gives_up_at_reconnect_for_with_the_last_reason_and_exit_9() -> None:
    clock, attempts, recorder, reconnector = make(reconnect_for=20.0)
    reconnector.lost(LOST)
    while not recorder.endings:
        if attempts.pending:
            attempts.fail(JumpointUnreachable("the Jumpoint at 127.0.0.1:7443 refused"))
        clock.advance(0.25)
        assert clock.seconds() <= 20.5
    (error,) = recorder.endings
    assert isinstance(error, SessionLost) and error.exit_code == ExitCode.SESSION_LOST
    assert "gave up after 20s" in error.message and "refused" in error.message
    assert reconnector.state is State.ENDED
    assert not clock.getDelayedCalls()


def test_an_attempt_still_dialing_at_the_deadline_is_cancelled() -> None:
    clock, attempts, recorder, reconnector = make(reconnect_for=5.0)
    reconnector.lost(LOST)
    run_until_attempt(clock, attempts)
    dialing = attempts.pending[0]
    clock.advance(5.0)
    assert dialing.called  # cancelled: the dial's own errback cleans up
    assert len(recorder.endings) == 1 and "gave up after 5s" in recorder.endings[0].message


def test_a_denial_at_resume_ends_the_session_with_its_rule_at_once() -> None:
    clock, attempts, recorder, reconnector = make()
    reconnector.lost(LOST)
    run_until_attempt(clock, attempts)
    denial = AccessDenied("your access was revoked", rule="revoked")
    attempts.fail(Final(denial))
    assert recorder.endings == [denial]
    assert denial.exit_code == ExitCode.DENIED and "(rule: revoked)" in denial.message
    assert not clock.getDelayedCalls()


def test_without_reconnect_for_the_first_loss_ends_the_session() -> None:
    clock, attempts, recorder, reconnector = make(reconnect_for=None)
    reconnector.lost(LOST, reset_connections=2)
    assert recorder.endings == [LOST] and recorder.news == []
    assert not attempts.pending and not clock.getDelayedCalls()


def test_a_success_reports_down_for_and_resets_the_backoff() -> None:
    clock, attempts, recorder, reconnector = make()
    reconnector.lost(LOST)
    for _ in range(5):
        run_until_attempt(clock, attempts)
        attempts.fail(JumpointUnreachable("refused"))
    run_until_attempt(clock, attempts)
    down = clock.seconds()
    attempts.succeed("127.0.0.2:7443")
    news = recorder.news[-1]
    assert isinstance(news, Reconnected)
    assert (news.attempt, news.address, news.down_for) == (6, "127.0.0.2:7443", round(down, 3))
    assert reconnector.state is State.UP and reconnector.reconnects == 1
    assert not clock.getDelayedCalls()  # the deadline went with the loss
    reconnector.lost(LOST)
    again = recorder.news[-1]
    assert isinstance(again, Reconnecting) and again.attempt == 1 and again.retry_in <= 0.5


def test_close_stops_everything_and_is_idempotent() -> None:
    clock, _attempts, recorder, reconnector = make()
    reconnector.lost(LOST)
    reconnector.close()
    reconnector.close()
    assert not clock.getDelayedCalls() and recorder.endings == []
    reconnector.lost(LOST)  # after the end: nothing
    assert len(recorder.news) == 1


def test_the_events_are_the_documented_json() -> None:
    assert describe(Reconnecting(2, 1.25, "why", 4, 1)) == {
        "event": "reconnecting",
        "attempt": 2,
        "retry_in": 1.25,
        "reason": "why",
        "reset_connections": 4,
        "reset_udp_flows": 1,
    }
    assert describe(Reconnected(3, "h:1", 2.5)) == {
        "event": "reconnected",
        "attempt": 3,
        "address": "h:1",
        "down_for": 2.5,
    }


def test_the_table_ends_in_ended_from_every_live_state() -> None:
    for state in (State.UP, State.WAITING, State.DIALING):
        assert TRANSITIONS.target(state, Event.END) is State.ENDED
    assert TRANSITIONS.allowed(State.ENDED) == frozenset()
