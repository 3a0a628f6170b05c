"""The `jump` command: enroll, profiles, items, open, and the management commands.

Each command that talks to a Jumpoint runs the reactor around one coroutine
(L{console.remote.run_reactor}); errors are L{JumpError}s rendered by L{main}
in one place, with their exit codes, and never as a traceback.  The item
commands live in L{console.item_commands}, sessions and access requests in
L{console.access_commands}.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click
from twisted.logger import LogLevel, globalLogBeginner

from console import __version__
from console.logrouter import LOG_ROUTER
from console.network_requests import DEFAULT_GROUP, DEFAULT_SOCKET
from console.output import print_items
from console.profiles import list_profiles, load_profile
from console.remote import PROGRAM, call, chosen_profile, profile_option, run_reactor
from shared.enrollment import read_enrollment
from shared.entrypoint import run_cli
from shared.errors import ProtocolViolation, UsageError
from shared.protocol import control
from shared.schema import parse_duration
from shared.text import printable


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
@click.option(
    "--delete/--keep",
    "delete",
    default=None,
    help="Delete the enrollment file once used (default: ask on a terminal, else keep).",
)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
def enroll(file: str, profile: str | None, delete: bool | None, as_json: bool) -> None:
    """Enroll with the enrollment FILE from your administrator (a one-time token).

    Makes this console's private key here, gets its certificate from the
    Jumpoint named in FILE and stores both as a profile.
    """
    from pathlib import Path

    from console.enroll import enroll as redeem
    from console.enroll import skew_warning

    path = Path(file)
    enrollment = read_enrollment(path)
    enrolled: list[Any] = []

    async def main(reactor: Any) -> int:
        enrolled.append(await redeem(reactor, enrollment, profile))
        return 0

    run_reactor(main)
    result = enrolled[0]
    stored = result.profile
    warning = skew_warning(result)
    if warning:
        click.echo(f"{PROGRAM}: warning: {warning}", err=True)
    if delete is None:
        delete = (
            not as_json
            and sys.stdin.isatty()
            and click.confirm(f"the token in {path} is spent: delete the file?", default=True)
        )
    deleted = False
    if delete:
        try:
            path.unlink()
            deleted = True
        except OSError as error:
            click.echo(f"{PROGRAM}: warning: cannot delete {path}: {error.strerror}", err=True)
    if as_json:
        event = {
            "event": "enrolled",
            "user": stored.user,
            "jumpoint": stored.jumpoint_name,
            "address": stored.address,
            "profile": stored.name,
            "groups": list(result.groups),
            "serial": result.serial,
            "not_after": result.not_after,
            "file_deleted": deleted,
        }
        click.echo(json.dumps(event, separators=(",", ":")))
        return
    click.echo(
        f"enrolled as {printable(stored.user)!r} with Jumpoint {printable(stored.jumpoint_name)!r}"
        f" at {stored.address} (profile {stored.name!r}); certificate valid until"
        f" {result.not_after}; the private key was made here and stays here"
    )
    if deleted:
        click.echo(f"deleted {path}")
    elif delete is False or not sys.stdin.isatty():
        click.echo(f"the token in {path} is spent; you may delete the file")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
def profiles(as_json: bool) -> None:
    """List the enrolled profiles; the current one (chosen last) is marked."""
    names = list_profiles()
    try:
        current = load_profile().name if names else None
    except Exception:
        current = None
    entries = []
    for name in names:
        profile = load_profile(name)
        entries.append(
            {
                "profile": name,
                "jumpoint": profile.jumpoint_name,
                "address": profile.address,
                "user": profile.user,
                "current": name == current,
            }
        )
    if as_json:
        click.echo(json.dumps(entries))
        return
    if not entries:
        click.echo("no profiles: enroll with `jump enroll FILE`")
    for entry in entries:
        mark = "*" if entry["current"] else " "
        click.echo(
            f"{mark} {entry['profile']:<20} {entry['jumpoint']:<20} {entry['address']:<24}"
            f" {entry['user']}"
        )


@cli.command()
@click.option("--pem", is_flag=True, help="Print the certificate itself, not its path.")
@profile_option
def ca(pem: bool, profile: str | None) -> None:
    """The local CA of this profile's TLS listeners (trust it in SQL Server clients)."""
    from console.local_ca import CA_FILE, local_ca

    chosen = chosen_profile(profile)
    pair = local_ca(chosen)
    if pem:
        click.echo(pair.certificate_pem.decode("ascii"), nl=False)
    else:
        click.echo(str(chosen.directory / CA_FILE))


def item_filters(function: Any) -> Any:
    function = click.option("--json", "as_json", is_flag=True, help="JSON output.")(function)
    function = click.option(
        "--search", help="Only items whose name, host, tag or comments contain TEXT."
    )(function)
    function = click.option("--tag", help="Only items with this tag ('' for untagged).")(function)
    function = click.option("--jump-group", help="Only items of this jump group.")(function)
    return profile_option(function)


@cli.command()
@item_filters
def items(
    as_json: bool,
    search: str | None,
    tag: str | None,
    jump_group: str | None,
    profile: str | None,
) -> None:
    """List the items you may see (and open)."""
    result = call(profile, control.LIST_ITEMS, search=search, tag=tag, jump_group=jump_group)
    entries = result.get("items")
    if not isinstance(entries, list):
        raise ProtocolViolation("the Jumpoint sent a malformed item list")
    print_items(entries, as_json)


def _duration(option: str, text: str | None, allow_zero: bool = False) -> float | None:
    if text is None:
        return None
    if allow_zero and text.strip() in ("0", "0s", "off", "none"):
        return 0.0
    try:
        return parse_duration(text)
    except ValueError as error:
        raise UsageError(f"{option}: {error}") from None


@cli.command(context_settings={"ignore_unknown_options": False})
@click.argument("item")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout.")
@click.option("--for", "duration", help="Close the session after this long (30s, 5m, 1h).")
@click.option("--local-address", help="Listen on this address instead of the item's.")
@click.option(
    "--acl",
    multiple=True,
    help="CIDR allowed to connect to the listeners (repeatable; needed off loopback).",
)
@click.option("--ticket", help="Ticket ID, when the item's jump policy asks for one.")
@click.option("--yes", "consent", is_flag=True, help="Consent to recording without asking.")
@click.option("--auto-close", help="Ask the Jumpoint to close the session after this long.")
@click.option("--idle-timeout", help="Ask for this idle timeout (0 or off: none, if allowed).")
@click.option(
    "--reconnect-for",
    help="After a lost connection, try to reconnect for this long (default 5m).",
)
@click.option(
    "--no-reconnect", is_flag=True, help="Do not reconnect: exit 9 at the first lost connection."
)
@click.option(
    "--connect-wait",
    help="How long a local connection made while reconnecting waits (default 10s).",
)
@profile_option
def open(
    item: str,
    command: tuple[str, ...],
    as_json: bool,
    duration: str | None,
    local_address: str | None,
    acl: tuple[str, ...],
    ticket: str | None,
    consent: bool,
    auto_close: str | None,
    idle_timeout: str | None,
    reconnect_for: str | None,
    no_reconnect: bool,
    connect_wait: str | None,
    profile: str | None,
) -> None:
    """Open ITEM's tunnels; with `-- CMD ARG...` run CMD with them, then close."""
    from console.open_command import CONNECT_WAIT, RECONNECT_FOR, OpenOptions, run_open

    if no_reconnect and reconnect_for is not None:
        raise UsageError("--no-reconnect and --reconnect-for exclude each other")
    reconnect_seconds = None if no_reconnect else _duration("--reconnect-for", reconnect_for)
    wait_seconds = _duration("--connect-wait", connect_wait)

    # Off loopback without --acl: the Jumpoint decides (rule tunnels_restricted.acl), audited.
    seconds = _duration("--for", duration)
    auto_close_seconds = _duration("--auto-close", auto_close)
    idle_seconds = _duration("--idle-timeout", idle_timeout, allow_zero=True)
    chosen = chosen_profile(profile)
    options = OpenOptions(
        item=item,
        profile=chosen.name,
        as_json=as_json,
        duration=seconds,
        command=command,
        local_address=local_address,
        acl=acl,
        ticket=ticket,
        consent=consent,
        auto_close=auto_close_seconds,
        idle_timeout=idle_seconds,
        reconnect_for=None if no_reconnect else reconnect_seconds or RECONNECT_FOR,
        connect_wait=wait_seconds or CONNECT_WAIT,
    )

    async def main(reactor: Any) -> int:
        return await run_open(reactor, options, sys.stdout)

    sys.exit(run_reactor(main))


@cli.command("network-service")
@click.option(
    "--socket",
    "socket_path",
    default=DEFAULT_SOCKET,
    show_default=True,
    help="Unix socket to listen on (made mode 0660, owned by root and GROUP).",
)
@click.option(
    "--group",
    default=DEFAULT_GROUP,
    show_default=True,
    help="Group whose members may create interfaces (root always may).",
)
def network_service(socket_path: str, group: str) -> None:
    """Create TUN interfaces for network tunnels on behalf of `jump open` (run as root).

    Linux only.  Each caller in GROUP gets one interface per connection, with
    the address, MTU and routes it asks for; the interface is removed when the
    connection ends.  See docs/network-service.md.
    """
    from twisted.internet import reactor

    from console.network_tun import ensure_linux

    ensure_linux()  # before the service's module, which needs a Unix
    from console.network_service import serve

    LOG_ROUTER.level = LogLevel.info
    serve(socket_path, group, reactor)


def _register() -> None:
    from console.access_commands import COMMANDS
    from console.item_commands import item

    cli.add_command(item)
    for command in COMMANDS:
        cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> NoReturn:
    """Console-script entry point: run the CLI, print errors without tracebacks."""
    run_cli(cli, PROGRAM, "JUMP_DEBUG", argv)


if __name__ == "__main__":
    main()
