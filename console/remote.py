"""Running one request against the Jumpoint from a CLI command.

L{run_reactor} runs the reactor around one coroutine and returns its exit
status (errors are re-raised as they are, for L{shared.entrypoint.run_cli} to
render); L{call} connects with a profile, sends one control request, closes
the channel and returns the result.

This module is a launcher (C{LAUNCHERS} in C{tests/unit/test_architecture.py}):
L{call} imports the channel stack (L{console.channel}: TLS, the mux) when a
command first talks to a Jumpoint, not when the CLI builds its commands, so
C{jump --help} and a command's C{--help} never load it; likewise
L{run_reactor} imports the reactor and Twisted's Deferreds when it runs.  It
is the same mechanism as L{console.cli}'s commands importing their modules
when they run.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import click
from twisted.python.failure import Failure

from console.profiles import Profile, load_profile, set_current
from shared.errors import ExitCode

PROGRAM = "jump"

profile_option = click.option(
    "--profile", help="Profile (Jumpoint) to use; remembered as the current one."
)


def run_reactor(main: Callable[[Any], Coroutine[Any, Any, int]]) -> int:
    """Run the reactor until C{main} finishes; re-raise its error, return its status."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    outcome: list[object] = []
    interrupted: list[bool] = []

    def shutting_down() -> None:
        if not outcome:  # stopped by a signal before main finished
            interrupted.append(True)

    reactor.addSystemEventTrigger("before", "shutdown", shutting_down)

    def start() -> None:
        finished = Deferred.fromCoroutine(main(reactor))

        def done(result: object) -> None:
            outcome.append(result)
            reactor.stop()

        finished.addBoth(done)

    reactor.callWhenRunning(start)
    reactor.run()
    if interrupted or not outcome:
        click.echo(f"{PROGRAM}: interrupted", err=True)
        return 130
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    return int(result) if isinstance(result, int) else ExitCode.OK


def chosen_profile(name: str | None) -> Profile:
    """The profile to use; one named explicitly becomes the current one."""
    profile = load_profile(name)
    if name:
        set_current(profile.name)
    return profile


def call(profile_name: str | None, kind: str, **fields: Any) -> dict[str, Any]:
    """Send one request to the profile's Jumpoint; returns its result."""
    from console.channel import connect

    profile = chosen_profile(profile_name)
    results: list[dict[str, Any]] = []

    async def main(reactor: Any) -> int:
        channel = await connect(reactor, profile)
        try:
            results.append(await channel.request(kind, **fields))
        finally:
            await channel.close_and_wait(reactor)
        return ExitCode.OK

    status = run_reactor(main)
    if not results:
        raise SystemExit(status)
    return results[0]
