"""The `jumpoint` command: init, serve, check-config and user management.

Every command loads and checks the configuration before doing anything;
errors are L{JumpError}s, printed by L{main} without a traceback.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
from pathlib import Path
from typing import NoReturn

import click

from jumpoint import __version__, pki
from jumpoint.config_template import render_config
from jumpoint.state import StateDatabase
from shared.config import CONFIG_ENV, JUMPOINT_NAME, JumpointConfig, load_config
from shared.enrollment import Enrollment
from shared.entrypoint import run_cli
from shared.errors import ConfigError, UsageError
from shared.logs import LOG_FORMATS
from shared.schema import is_host, parse_host_port

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


@cli.group()
def user() -> None:
    """Enroll, revoke and list users."""


@user.command("add")
@click.argument("name")
@click.option("--group", required=True, help="The user's group (from jumpoint.yaml).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False))
@click.option(
    "--valid-days",
    type=click.IntRange(1, 3650),
    default=365,
    show_default=True,
    help="Lifetime of the client certificate.",
)
@config_option
def user_add(
    name: str, group: str, out_path: str, valid_days: int, config_path: str | None
) -> None:
    """Issue a client certificate and write ONE enrollment file (mode 0600)."""
    config = load_config(config_path)
    _check_user_name(name)
    if group not in config.groups:
        known = ", ".join(sorted(config.groups)) or "none"
        raise UsageError(f"no group named {group!r} in {config.path}", hint=f"groups: {known}")
    ca = _load_ca(config)
    client = pki.issue_client(ca, name, group, datetime.timedelta(days=valid_days))
    certificate = client.certificate
    database = StateDatabase(config.state_database)
    try:
        database.add_user(name, group, client.serial, certificate.not_valid_after_utc.isoformat())
    finally:
        database.close()
    enrollment = Enrollment(
        jumpoint_name=config.name,
        host=config.addresses[0],
        port=config.listen_port,
        server_name=config.addresses[0],
        user=name,
        ca_certificate=ca.certificate_pem.decode(),
        certificate=client.certificate_pem.decode(),
        private_key=client.key_pem.decode(),
    )
    pki.write_private(Path(out_path), enrollment.to_yaml().encode())
    click.echo(f"user {name!r} (group {group!r}) enrolled; enrollment file: {out_path}")
    click.echo(f"give it to the user, who runs: jump enroll {Path(out_path).name}")


def _check_user_name(name: str) -> None:
    if not 1 <= len(name) <= 128 or not all(c.isalnum() or c in "._-@" for c in name):
        raise UsageError(
            f"invalid user name {name!r}",
            hint="use 1-128 letters, digits, '.', '_', '-' or '@'",
        )


def _load_ca(config: JumpointConfig) -> pki.KeyPair:
    try:
        return pki.load_pair(config.ca_certificate, config.ca_key)
    except OSError as error:
        raise ConfigError(f"cannot read the CA certificate or key: {error}") from None


@user.command("revoke")
@click.argument("name")
@config_option
def user_revoke(name: str, config_path: str | None) -> None:
    """Revoke a user: new connections are refused, open sessions are closed."""
    config = load_config(config_path)
    database = StateDatabase(config.state_database)
    try:
        count = database.revoke_user(name)
    finally:
        database.close()
    click.echo(
        f"user {name!r} revoked ({count} certificate(s)); a running Jumpoint closes their"
        f" sessions within {config.limits.revocation_poll_interval:g}s"
    )


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@config_option
def user_list(as_json: bool, config_path: str | None) -> None:
    """List users with their group and status."""
    config = load_config(config_path)
    database = StateDatabase(config.state_database)
    try:
        users = database.list_users()
    finally:
        database.close()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": u.name,
                        "group": u.group,
                        "created_at": u.created_at,
                        "revoked_at": u.revoked_at,
                        "status": "active" if u.active else "revoked",
                    }
                    for u in users
                ]
            )
        )
        return
    if not users:
        click.echo("no users")
        return
    click.echo(f"{'NAME':<24} {'GROUP':<16} {'STATUS':<8} CREATED")
    for u in users:
        status = "active" if u.active else "revoked"
        click.echo(f"{u.name:<24} {u.group:<16} {status:<8} {u.created_at}")


def main(argv: list[str] | None = None) -> NoReturn:
    """Console-script entry point: run the CLI, print errors without tracebacks."""
    run_cli(cli, PROGRAM, "JUMPOINT_DEBUG", argv)


if __name__ == "__main__":
    main()
