"""The `jump` command: enroll, items, open.

Each command that talks to a Jumpoint runs the reactor around one coroutine
(L{run_reactor}); errors are L{JumpError}s rendered by L{main} in one place,
with their exit codes, and never as a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

import click
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, globalLogBeginner
from twisted.python.failure import Failure

from console import __version__
from console.logrouter import LOG_ROUTER
from console.profiles import load_profile, save_profile, set_current
from shared import control
from shared.enrollment import read_enrollment
from shared.entrypoint import run_cli
from shared.errors import ExitCode, ProtocolViolation, UsageError
from shared.schema import parse_duration

PROGRAM = "jump"

profile_option = click.option(
    "--profile", help="Profile (Jumpoint) to use; remembered as the current one."
)


def run_reactor(main: Callable[[Any], Coroutine[Any, Any, int]]) -> int:
    """Run the reactor until C{main} finishes; re-raise its error, return its status."""
    from twisted.internet import reactor

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


@click.group()
@click.version_option(__version__, prog_name=PROGRAM)
@click.option("-v", "--verbose", is_flag=True, help="Log informational events too.")
def cli(verbose: bool) -> None:
    """The access console: open tunnels through a Jumpoint."""
    LOG_ROUTER.level = LogLevel.info if verbose else LogLevel.warn
    globalLogBeginner.beginLoggingTo([LOG_ROUTER], redirectStandardIO=False)  # type: ignore[list-item]


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--profile", help="Name of the profile (default: the Jumpoint's name).")
def enroll(file: str, profile: str | None) -> None:
    """Store an enrollment FILE from your administrator as a profile."""
    from pathlib import Path

    enrollment = read_enrollment(Path(file))
    stored = save_profile(enrollment, profile)
    click.echo(
        f"enrolled as {stored.user!r} with Jumpoint {stored.jumpoint_name!r} at"
        f" {stored.address} (profile {stored.name!r})"
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@profile_option
def items(as_json: bool, profile: str | None) -> None:
    """List the items you may open."""
    from console.channel import connect

    chosen = load_profile(profile)
    if profile:
        set_current(chosen.name)

    async def main(reactor: Any) -> int:
        channel = await connect(reactor, chosen)
        try:
            result = await channel.request(control.LIST_ITEMS)
        finally:
            await channel.close_and_wait(reactor)
        entries = result.get("items")
        if not isinstance(entries, list):
            raise ProtocolViolation("the Jumpoint sent a malformed item list")
        _print_items(entries, as_json)
        return ExitCode.OK

    sys.exit(run_reactor(main))


def _print_items(entries: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(entries))
        return
    if not entries:
        click.echo("no items")
        return
    click.echo(f"{'NAME':<24} {'TYPE':<5} {'HOST':<24} {'TUNNELS':<28} {'GROUP':<12} TAG")
    for entry in entries:
        tunnels = ", ".join(
            f"{t.get('local_port')}:{t.get('remote_port')}" for t in entry.get("tunnels", [])
        )
        click.echo(
            f"{entry.get('name', ''):<24} {entry.get('type', ''):<5} {entry.get('host', ''):<24}"
            f" {tunnels:<28} {entry.get('jump_group', ''):<12} {entry.get('tag') or ''}"
        )


@cli.command(context_settings={"ignore_unknown_options": False})
@click.argument("item")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout.")
@click.option("--for", "duration", help="Close the session after this long (30s, 5m, 1h).")
@click.option("--local-address", help="Listen on this 127.x.y.z address instead of the item's.")
@profile_option
def open(
    item: str,
    command: tuple[str, ...],
    as_json: bool,
    duration: str | None,
    local_address: str | None,
    profile: str | None,
) -> None:
    """Open ITEM's tunnels; with `-- CMD ARG...` run CMD with them, then close."""
    from console.open_command import OpenOptions, run_open

    seconds = None
    if duration is not None:
        try:
            seconds = parse_duration(duration)
        except ValueError as error:
            raise UsageError(f"--for: {error}") from None
    chosen = load_profile(profile)
    if profile:
        set_current(chosen.name)
    options = OpenOptions(
        item=item,
        profile=chosen.name,
        as_json=as_json,
        duration=seconds,
        command=command,
        local_address=local_address,
    )

    async def main(reactor: Any) -> int:
        return await run_open(reactor, options, sys.stdout)

    sys.exit(run_reactor(main))


def main(argv: list[str] | None = None) -> NoReturn:
    """Console-script entry point: run the CLI, print errors without tracebacks."""
    run_cli(cli, PROGRAM, "JUMP_DEBUG", argv)


if __name__ == "__main__":
    main()
