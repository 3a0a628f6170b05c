"""The `jumpoint` command: init, serve, check-config, user management and the audit log.

Every command loads and checks the configuration before doing anything;
errors are L{JumpError}s, printed by L{main} without a traceback.
"""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
from twisted.internet.task import Clock

from jumpoint import __version__, enrollment_tokens, kinds
from jumpoint.audit import AuditEntry, AuditLog, query
from jumpoint.config import CONFIG_ENV, JUMPOINT_NAME, JumpointConfig, load_config
from jumpoint.config_template import render_config
from jumpoint.logs import LOG_FORMATS
from jumpoint.state import StateDatabase
from shared import pki
from shared.enrollment import Enrollment, rfc3339
from shared.entrypoint import run_cli
from shared.errors import ConfigError, JumpointUnreachable, UnknownUser, UsageError
from shared.schema import is_host, parse_duration, parse_host_port
from shared.text import printable, user_name_problem

PROGRAM = "jumpoint"

config_option = click.option(
    "--config",
    "config_path",
    envvar=CONFIG_ENV,
    type=click.Path(dir_okay=False),
    help=f"Path of jumpoint.yaml (or set ${CONFIG_ENV}).",
)


@click.group()
@click.version_option(__version__, prog_name=PROGRAM)
def cli() -> None:
    """The Jumpoint: privileged-access tunnels into this network."""


@cli.command()
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False))
@click.option("--name", required=True, help="Name of this Jumpoint.")
@click.option("--listen", required=True, help="HOST:PORT to listen on, e.g. 0.0.0.0:7443.")
@click.option(
    "--address",
    "addresses",
    multiple=True,
    help="DNS name or IP consoles use to reach this Jumpoint (repeatable).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing configuration.")
def init(directory: str, name: str, listen: str, addresses: tuple[str, ...], force: bool) -> None:
    """Create a CA, a server certificate and a commented jumpoint.yaml in DIR."""
    if not JUMPOINT_NAME.match(name):
        raise UsageError(
            f"--name: invalid Jumpoint name {name!r}",
            hint="use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    try:
        host, port = parse_host_port(listen)
    except ValueError as error:
        raise UsageError(f"--listen: {error}") from None
    for address in addresses:
        if not is_host(address):
            raise UsageError(f"--address: {address!r} is not a host name or IP address")
    chosen = list(dict.fromkeys(addresses)) or _default_addresses(host)
    target = Path(directory).absolute()
    config_path = target / "jumpoint.yaml"
    if config_path.exists() and not force:
        raise UsageError(f"{config_path} already exists", hint="pass --force to overwrite it")
    target.mkdir(parents=True, exist_ok=True)
    os.chmod(target, 0o700)
    ca = pki.create_ca(name)
    server = pki.issue_server(ca, name, chosen)
    (target / "ca.pem").write_bytes(ca.certificate_pem)
    pki.write_private(target / "ca.key", ca.key_pem)
    (target / "server.pem").write_bytes(server.certificate_pem)
    pki.write_private(target / "server.key", server.key_pem)
    state = target / "state.db"
    if force and state.exists():
        for suffix in ("", "-wal", "-shm"):
            Path(str(state) + suffix).unlink(missing_ok=True)
    StateDatabase(state).close()
    config_path.write_text(render_config(name, host, port, chosen), encoding="utf-8")
    click.echo(f"created Jumpoint {name!r} in {target}")
    click.echo(f"  configuration: {config_path}")
    click.echo(f"  addresses in the server certificate: {', '.join(chosen)}")
    click.echo(
        f"next: jumpoint user add NAME --group default --out NAME.enroll --config {config_path}"
    )


def _default_addresses(host: str) -> list[str]:
    try:
        unspecified = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        unspecified = False
    if unspecified:
        return ["localhost", "127.0.0.1"]
    return [host]


@cli.command()
@config_option
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text", show_default=True)
def serve(config_path: str | None, log_format: str) -> None:
    """Run the Jumpoint in the foreground until SIGINT or SIGTERM."""
    from jumpoint.run import run_foreground

    config = load_config(config_path)
    run_foreground(config, log_format)


@cli.command()
@config_option
@click.option(
    "--wait",
    type=click.FloatRange(min=0.1, max=3600),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the daemon's outcome.",
)
def reload(config_path: str | None, wait: float) -> None:
    """Reload the running Jumpoint's configuration (SIGHUP) and report the outcome.

    Exits 0 when the daemon applied the file; on an invalid file it prints the
    error (file, line and key), exits 3, and the daemon keeps its configuration.
    """
    from jumpoint import reload_status

    path, state_database, problem = reload_status.locate(config_path)
    try:
        status = reload_status.request_reload(path, state_database, wait)
    except JumpointUnreachable:
        if problem is not None:
            raise problem from None
        raise
    if not status.ok:
        raise reload_status.failed(status)
    for line in reload_status.outcome_lines(status):
        click.echo(line)


@cli.command("check-config")
@config_option
def check_config(config_path: str | None) -> None:
    """Check jumpoint.yaml and report the first error with file, line and key."""
    config = load_config(config_path)
    StateDatabase(config.state_database).close()
    click.echo(
        f"{config.path}: OK (Jumpoint {config.name!r}, {len(config.items)} items,"
        f" {len(config.groups)} groups)"
    )
    for problem in kinds.host_problems(config):
        click.echo(f"warning: {problem}", err=True)


@cli.group()
def user() -> None:
    """Enroll, revoke and list users, and change their groups."""


@user.command("add")
@click.argument("name")
@click.option(
    "--group",
    "groups",
    required=True,
    multiple=True,
    help="A group from jumpoint.yaml (repeatable; the first goes into the certificate).",
)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@click.option(
    "--valid-for",
    "valid_for",
    default="24h",
    show_default=True,
    help="How long the enrollment file's one-time token may wait to be used (30m, 24h, 7d).",
)
@click.option(
    "--valid-days",
    type=click.IntRange(1, 3650),
    default=365,
    show_default=True,
    help="Lifetime of the client certificate the token buys.",
)
@config_option
def user_add(
    name: str,
    groups: tuple[str, ...],
    out_path: str,
    force: bool,
    valid_for: str,
    valid_days: int,
    config_path: str | None,
) -> None:
    """Add a user and write ONE enrollment file (mode 0600) with a one-time token.

    The user runs `jump enroll FILE`: their console makes its key and gets
    its certificate from the running Jumpoint; the token then is spent.
    """
    config = load_config(config_path)
    _check_user_name(name)
    chosen = _check_groups(config, groups)
    lifetime = _token_lifetime(valid_for)
    out = Path(out_path)
    if out.exists() and not force:
        raise UsageError(
            f"{out} exists already (another enrollment file?)",
            hint="choose another --out, or add --force to replace it",
        )
    ca = _load_ca_certificate(config)
    now = time.time()
    token = enrollment_tokens.new_token()
    enrollment = Enrollment(
        jumpoint_name=config.name,
        host=config.addresses[0],
        port=config.listen_port,
        server_name=config.addresses[0],
        user=name,
        ca_certificate=ca,
        token=token,
        expires_at=datetime.datetime.fromtimestamp(now + lifetime, datetime.UTC),
    )
    staged = _stage_private(out, enrollment.to_yaml().encode())
    placed = False

    def add(db: Any) -> None:
        nonlocal placed
        enrollment_tokens.add_user_with_token(db, name, chosen, token, now, lifetime, valid_days)
        try:
            os.replace(staged, out)
        except OSError as error:
            raise UsageError(f"cannot write {out}: {error.strerror}") from None
        placed = True

    try:
        with _admin_audit(config) as (_database, audit):
            audit.record_sync(
                "user_added",
                user=name,
                groups=list(chosen),
                expires_at=rfc3339(enrollment.expires_at),
                certificate_days=valid_days,
                by=_operator(),
                apply=add,
            )
    except BaseException:
        if placed:
            out.unlink(missing_ok=True)  # nothing in the database: no file either
        staged.unlink(missing_ok=True)
        raise
    label = "group" if len(chosen) == 1 else "groups"
    shown = ", ".join(repr(group) for group in chosen)
    click.echo(f"user {name!r} ({label} {shown}) added; enrollment file: {out}")
    click.echo(
        f"give it to the user, who runs before {rfc3339(enrollment.expires_at)}:"
        f" jump enroll {out.name}"
    )
    click.echo("the file holds a one-time token: it enrolls one console once")


def _token_lifetime(text: str) -> float:
    days = re.fullmatch(r"\s*(\d{1,3})d\s*", text)
    try:
        seconds = int(days.group(1)) * 86400.0 if days else parse_duration(text)
    except ValueError as error:
        raise UsageError(
            f"--valid-for: {error}", hint="use a duration such as 30m, 24h or 7d"
        ) from None
    if not 60 <= seconds <= 90 * 86400:
        raise UsageError("--valid-for: must be between 1m and 90d")
    return seconds


def _stage_private(out: Path, data: bytes) -> Path:
    """Write C{data} (mode 0600) beside C{out}, to be moved into place on commit."""
    staged = out.with_name(f".{out.name}.{os.getpid()}.new")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staged.unlink(missing_ok=True)
        descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
    except OSError as error:
        raise UsageError(f"cannot write {out}: {error.strerror}") from None
    return staged


def _check_groups(config: JumpointConfig, groups: tuple[str, ...]) -> tuple[str, ...]:
    """The groups, without repeats, in order; each must be defined in jumpoint.yaml."""
    chosen = tuple(dict.fromkeys(groups))
    for group in chosen:
        if group not in config.groups:
            known = ", ".join(sorted(config.groups)) or "none"
            raise UsageError(f"no group named {group!r} in {config.path}", hint=f"groups: {known}")
    if not chosen:
        raise UsageError("give at least one --group")
    return chosen


class _WallClock(Clock):
    """The audit log's clock in a command: the time of day; nothing is ever scheduled on it.

    Admin commands write durable events only, which are committed at once;
    anything else would wait for L{AuditLog.close}, which flushes it.
    """

    def seconds(self) -> float:
        return time.time()


@contextmanager
def _admin_audit(config: JumpointConfig) -> Iterator[tuple[StateDatabase, AuditLog]]:
    """The state database and an audit log on it (with the JSON-lines file), closed after."""
    database = StateDatabase(config.state_database)
    try:
        try:
            audit = AuditLog(database, config.audit_file, _WallClock(), durable_wait=0.0)
        except OSError as error:
            raise ConfigError(f"{config.path}: audit.file: cannot open it: {error}") from None
        try:
            yield database, audit
        finally:
            audit.close()
    finally:
        database.close()


def _operator() -> str:
    """Who ran the command: the login name of the process (for the audit log)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _check_user_name(name: str) -> None:
    problem = user_name_problem(name)
    if problem is not None:
        raise UsageError(
            f"invalid user name {name!r}: {problem}",
            hint="use 1-128 letters (of one script), digits, '.', '_', '-' or '@'",
        )


def _load_ca_certificate(config: JumpointConfig) -> str:
    try:
        return config.ca_certificate.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"cannot read the CA certificate {config.ca_certificate}: {error}"
        ) from None


@user.command("revoke")
@click.argument("name")
@config_option
def user_revoke(name: str, config_path: str | None) -> None:
    """Revoke a user: new connections are refused, open sessions are closed."""
    config = load_config(config_path)
    with _admin_audit(config) as (database, audit):
        count = database.revoke_user(name)
        audit.record_sync("user_revoked", user=name, certificates=count, by=_operator())
    click.echo(
        f"user {name!r} revoked ({count} certificate(s)); a running Jumpoint closes their"
        f" sessions within {config.limits.revocation_poll_interval:g}s"
    )


@user.command("groups")
@click.argument("name")
@click.option(
    "--group",
    "groups",
    required=True,
    multiple=True,
    help="A group from jumpoint.yaml (repeatable); replaces all the user's groups.",
)
@config_option
def user_groups(name: str, groups: tuple[str, ...], config_path: str | None) -> None:
    """Replace the groups of user NAME; a running Jumpoint applies them without a restart."""
    config = load_config(config_path)
    chosen = _check_groups(config, groups)
    with _admin_audit(config) as (database, audit):
        existing = database.user(name)
        if existing is None:
            raise UnknownUser(f"no user named {name!r}", hint="see `jumpoint user list`")
        if not existing.active:
            raise UsageError(
                f"user {name!r} is revoked",
                hint=f"add them again: jumpoint user add {name} --group ... --out FILE",
            )
        database.set_groups(name, chosen)
        now = database.groups_of(name)
        audit.record_sync(
            "user_groups_changed",
            user=name,
            groups=list(now),
            previous=list(existing.all_groups),
            by=_operator(),
        )
    label = "group" if len(now) == 1 else "groups"
    click.echo(f"user {name!r} is now in {label}: {', '.join(now)}")
    click.echo(
        "a running Jumpoint applies them to the user's requests within"
        f" {config.limits.revocation_poll_interval:g}s; sessions already open keep their terms"
    )


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@config_option
def user_list(as_json: bool, config_path: str | None) -> None:
    """List users with their groups and status."""
    config = load_config(config_path)
    database = StateDatabase(config.state_database)
    try:
        users = database.list_users()
        waiting = enrollment_tokens.pending(database.connection, time.time())
        unenrolled = enrollment_tokens.never_enrolled(database.connection)
    finally:
        database.close()

    def status(u: Any) -> str:
        if not u.active:
            return "revoked"
        if u.name in waiting:
            return "pending"  # a token that may still be redeemed
        return "unenrolled" if u.name in unenrolled else "active"

    def enroll_by(u: Any) -> str | None:
        seconds = waiting.get(u.name) if u.active else None
        if seconds is None:
            return None
        return rfc3339(datetime.datetime.fromtimestamp(seconds, datetime.UTC))

    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": u.name,
                        "group": u.group,
                        "groups": list(u.all_groups),
                        "created_at": u.created_at,
                        "revoked_at": u.revoked_at,
                        "status": status(u),
                        "enroll_by": enroll_by(u),
                    }
                    for u in users
                ]
            )
        )
        return
    if not users:
        click.echo("no users")
        return
    rows = [(printable(u.name), ",".join(u.all_groups), status(u), u) for u in users]
    name_width = max(24, *(len(row[0]) + 1 for row in rows))
    groups_width = max(16, *(len(row[1]) + 1 for row in rows))
    click.echo(f"{'NAME':<{name_width}} {'GROUPS':<{groups_width}} {'STATUS':<10} CREATED")
    for shown_name, shown_groups, shown_status, u in rows:
        until = enroll_by(u)
        click.echo(
            f"{shown_name:<{name_width}} {shown_groups:<{groups_width}} {shown_status:<10}"
            f" {u.created_at}" + (f" (enroll by {until})" if until else "")
        )


_DAYS = re.compile(r"^(\d+)d(.*)$")


def parse_since(text: str, now: float) -> float:
    """C{--since}: an ISO date or time (naive is UTC), or a duration back from C{now}.

    Durations are C{30m}, C{2h}, C{7d}, C{1d12h}, ... (days, hours, minutes,
    seconds; a unit is required).  Raises L{ValueError}.
    """
    text = text.strip()
    if text and text[0].isdigit() and text[-1] in "dhms" and "-" not in text and ":" not in text:
        match = _DAYS.match(text)
        days, rest = (int(match.group(1)), match.group(2)) if match else (0, text)
        seconds = days * 86400.0
        if rest:
            seconds += parse_duration(rest)
        if seconds <= 0:
            raise ValueError(f"{text!r} is not a positive duration")
        return now - seconds
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a date/time nor a duration") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


@cli.command()
@click.option(
    "--since",
    help="Only events from then on: an ISO date/time (UTC unless it says otherwise)"
    " or a duration back from now (30m, 2h, 7d).",
)
@click.option("--user", "user_name", help="Only events of this user.")
@click.option("--item", help="Only events of this item.")
@click.option("--session", help="Only events of this session.")
@click.option("--event", help="Only events of this kind (e.g. session_opened, user_added).")
@click.option(
    "--limit",
    type=click.IntRange(1, 1_000_000),
    default=1000,
    show_default=True,
    help="Show at most this many events, the newest ones (printed oldest first).",
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines: one object per event.")
@config_option
def audit(
    since: str | None,
    user_name: str | None,
    item: str | None,
    session: str | None,
    event: str | None,
    limit: int,
    as_json: bool,
    config_path: str | None,
) -> None:
    """Show the audit log: every decision and event, oldest first."""
    config = load_config(config_path)
    start = None
    if since is not None:
        try:
            start = parse_since(since, time.time())
        except ValueError as error:
            raise UsageError(
                f"--since: {error}",
                hint="give a date or time such as 2026-12-01, 2026-12-01T10:00 or"
                " 2026-12-01T10:00:00Z, or a duration such as 30m, 2h or 7d",
            ) from None
    database = StateDatabase(config.state_database)
    try:
        entries = query(
            database,
            since=start,
            user=user_name,
            item=item,
            session=session,
            event=event,
            limit=limit + 1,
        )
    finally:
        database.close()
    truncated = len(entries) > limit
    if truncated:
        entries = entries[1:]
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry.to_json(), separators=(",", ":"), default=str))
    elif not entries:
        click.echo("no matching audit events")
    else:
        for entry in entries:
            click.echo(format_entry(entry))
    if truncated:
        click.echo(
            f"{PROGRAM}: only the newest {limit} events are shown; narrow the query"
            " (--since, --user, ...) or raise --limit",
            err=True,
        )


_BARE = re.compile(r"^[^\s\"'=\\]+$")


def _shown(value: Any) -> str:
    """One value of a text audit line: bare when safe, else JSON (quoted, escaped)."""
    if isinstance(value, str):
        if value and value.isprintable() and _BARE.match(value):
            return value
        return json.dumps(value, ensure_ascii=not value.isprintable())
    return json.dumps(value, separators=(",", ":"), default=str)


def format_entry(entry: AuditEntry) -> str:
    """C{TIME EVENT user=U session=S item=I rule=R key=value ...}; unset fields are left out."""
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.time))
    fields: list[tuple[str, Any]] = [
        ("user", entry.user),
        ("session", entry.session),
        ("item", entry.item),
        ("rule", entry.rule),
        *entry.detail.items(),
    ]
    parts = [when, _shown(entry.event)]
    parts.extend(f"{key}={_shown(value)}" for key, value in fields if value is not None)
    return " ".join(parts)


def main(argv: list[str] | None = None) -> NoReturn:
    """Console-script entry point: run the CLI, print errors without tracebacks."""
    run_cli(cli, PROGRAM, "JUMPOINT_DEBUG", argv)


if __name__ == "__main__":
    main()
