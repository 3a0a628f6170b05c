"""ConsoleChannel.loss_is_reconnectable: which ends of a channel are the Jumpoint's decision."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock

from console.channel import ConsoleChannel
from console.profiles import Profile
from shared.protocol.frames import ErrorCode

PROFILE = Profile("lab", Path("/nonexistent"), "lab", "127.0.0.1", 7443, "jumpoint.lab", "alice")


def channel(
    goaway: tuple[int, bool] | None, closed: tuple[str, str] | None = None
) -> ConsoleChannel:
    made = ConsoleChannel(Clock(), PROFILE)
    if goaway is not None:
        made.mux_closing(goaway[0], "why", goaway[1])
    made.session_closed_reason = closed
    return made


@pytest.mark.parametrize(
    ("goaway", "expected"),
    [
        (None, True),  # the transport went without a GOAWAY
        ((ErrorCode.CANCEL, True), True),  # the mux's own note of a lost transport
        ((ErrorCode.RESTARTING, True), True),
        ((ErrorCode.KEEPALIVE_TIMEOUT, True), True),
        ((ErrorCode.KEEPALIVE_TIMEOUT, False), True),  # this console saw a dead link
        ((ErrorCode.LIMIT, False), True),  # a stuck link
        ((ErrorCode.SHUTDOWN, True), False),
        ((ErrorCode.REVOKED, True), False),
        ((ErrorCode.SESSION_CLOSED, True), False),
        ((ErrorCode.PROTOCOL_ERROR, True), False),
        ((ErrorCode.PROTOCOL_ERROR, False), False),
        ((ErrorCode.NO_ERROR, False), False),  # this console closed on purpose
    ],
)
def test_which_losses_are_reconnected(goaway: tuple[int, bool] | None, expected: bool) -> None:
    assert channel(goaway).loss_is_reconnectable() is expected


def test_a_session_closed_by_the_jumpoint_is_never_reconnected() -> None:
    made = channel((ErrorCode.CANCEL, True), closed=("idle_timeout", "idle for 10m"))
    assert not made.loss_is_reconnectable()
