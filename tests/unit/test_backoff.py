"""console.backoff: full-jitter exponential delays stay inside their bounds and reset."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from console.backoff import Backoff


@given(
    base=st.floats(0.01, 5.0),
    cap=st.floats(5.0, 120.0),
    seed=st.integers(0, 2**32),
    attempts=st.integers(1, 200),
)
def test_every_delay_lies_between_zero_and_the_capped_exponential(
    base: float, cap: float, seed: int, attempts: int
) -> None:
    backoff = Backoff(base, cap, random.Random(seed).uniform)
    for attempt in range(attempts):
        delay = backoff.next_delay()
        assert 0.0 <= delay <= min(cap, base * 2**attempt) <= cap


@given(draw=st.floats(-10.0, 1000.0))
def test_a_misbehaving_draw_is_clamped(draw: float) -> None:
    backoff = Backoff(0.5, 30.0, lambda low, high: draw)
    for attempt in range(10):
        assert 0.0 <= backoff.next_delay() <= min(30.0, 0.5 * 2**attempt)


def test_the_ceiling_doubles_to_the_cap_and_reset_starts_again() -> None:
    backoff = Backoff(0.5, 30.0, lambda low, high: high)
    assert [backoff.next_delay() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    backoff.reset()
    assert backoff.next_delay() == 0.5
    assert backoff.ceiling(10_000) == 30.0


def test_full_jitter_spreads_the_delays() -> None:
    backoff = Backoff(0.5, 30.0, random.Random(7).uniform)
    for _ in range(6):
        backoff.next_delay()
    delays = {round(backoff.next_delay(), 3) for _ in range(50)}
    assert len(delays) > 40 and min(delays) < 10 < max(delays)


def test_a_base_above_the_cap_is_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(10.0, 1.0)
