"""Console profiles: one enrolled identity per Jumpoint, in the user's config directory.

Layout under the jump home (C{$JUMP_HOME}, else C{$XDG_CONFIG_HOME/jump}, else
C{~/.config/jump}; C{%APPDATA%\\jump} on Windows)::

    profiles/NAME/profile.yaml   addresses, server name, user, Jumpoint name
    profiles/NAME/ca.pem         the Jumpoint's CA
    profiles/NAME/client.pem     the user's certificate
    profiles/NAME/client.key     the user's private key (mode 0600)
    current                      the profile chosen last

Directories are created with mode 0700.  C{profile.yaml} holds the ordered
C{addresses} of the Jumpoint's members (C{host} and C{port} stay the first,
for older consoles; a file with only those still loads); `jump open` replaces
them with the members the Jumpoint's welcome lists (L{store_addresses}).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from shared.enrollment import Enrollment
from shared.errors import ProfileError
from shared.files import write_private
from shared.schema import parse_host_port
from shared.text import printable

HOME_ENV = "JUMP_HOME"
PROFILE_ENV = "JUMP_PROFILE"
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_ADDRESSES = 32
"""Member addresses a profile keeps (the first ones of a longer list)."""


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def jump_home() -> Path:
    """The console's configuration directory."""
    explicit = os.environ.get(HOME_ENV)
    if explicit:
        return Path(explicit)
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "jump"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "jump"


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if sys.platform != "win32":
        os.chmod(path, 0o700)
    return path


@dataclass(frozen=True)
class Profile:
    name: str
    directory: Path
    jumpoint_name: str
    host: str
    port: int
    server_name: str
    user: str
    addresses: tuple[str, ...] = ()
    """Every member's C{host:port}, in order (empty: only C{host}:C{port})."""

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    def dial_list(self) -> list[tuple[str, int]]:
        """The addresses to dial, in order: C{addresses}, else C{host}:C{port}."""
        if not self.addresses:
            return [(self.host, self.port)]
        return [parse_host_port(text) for text in self.addresses]

    def read_credentials(self) -> tuple[bytes, bytes, bytes]:
        """CA certificate, client certificate and client key (PEM)."""
        try:
            return (
                (self.directory / "ca.pem").read_bytes(),
                (self.directory / "client.pem").read_bytes(),
                (self.directory / "client.key").read_bytes(),
            )
        except OSError as error:
            raise ProfileError(
                f"profile {self.name!r} is damaged: {error}",
                hint="enroll again with `jump enroll FILE`",
            ) from None


def check_profile_name(name: str) -> None:
    """Raise L{ProfileError} for a name a profile directory cannot have."""
    if not _PROFILE_NAME.match(name):
        raise ProfileError(
            f"invalid profile name {printable(name)!r}",
            hint="use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )


def save_profile(
    enrollment: Enrollment,
    certificate_pem: bytes,
    key_pem: bytes,
    name: str | None,
    home: Path | None = None,
) -> Profile:
    """Store an enrollment with the certificate it bought as a profile; make it the current one.

    C{key_pem} is the private key this machine made for the certificate (mode 0600).
    """
    home = home or jump_home()
    profile_name = name or enrollment.jumpoint_name
    check_profile_name(profile_name)
    _private_dir(home)
    _private_dir(home / "profiles")
    directory = _private_dir(home / "profiles" / profile_name)
    (directory / "ca.pem").write_text(enrollment.ca_certificate, encoding="ascii")
    write_private(directory / "client.key", key_pem)
    (directory / "client.pem").write_bytes(certificate_pem)
    document = {
        "jumpoint": enrollment.jumpoint_name,
        "host": enrollment.host,
        "port": enrollment.port,
        "addresses": list(enrollment.addresses) or [enrollment.address],
        "server_name": enrollment.server_name,
        "user": enrollment.user,
    }
    _write_document(directory, document)
    set_current(profile_name, home)
    return load_profile(profile_name, home)


def _write_document(directory: Path, document: dict[str, object]) -> None:
    """profile.yaml, replaced atomically (mode 0600)."""
    write_private(directory / "profile.yaml", yaml.safe_dump(document).encode("utf-8"))


def checked_addresses(values: object) -> tuple[str, ...] | None:
    """A list of C{host:port} texts, or C{None} when it is not one (at most L{MAX_ADDRESSES})."""
    if not isinstance(values, list) or not values:
        return None
    out: list[str] = []
    for value in values[:MAX_ADDRESSES]:
        if not isinstance(value, str):
            return None
        try:
            out.append(format_address(*parse_host_port(value)))
        except ValueError:
            return None
    return tuple(dict.fromkeys(out))


def store_addresses(profile: Profile, addresses: tuple[str, ...]) -> Profile:
    """Replace the profile's addresses (the Jumpoint's members); returns the new profile."""
    if not addresses or addresses == profile.addresses:
        return profile
    path = profile.directory / "profile.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    host, port = parse_host_port(addresses[0])
    document.update({"host": host, "port": port, "addresses": list(addresses)})
    _write_document(profile.directory, document)
    return dataclasses.replace(profile, host=host, port=port, addresses=addresses)


def set_current(name: str, home: Path | None = None) -> None:
    home = home or jump_home()
    (home / "current").write_text(name + "\n", encoding="utf-8")


def list_profiles(home: Path | None = None) -> list[str]:
    root = (home or jump_home()) / "profiles"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "profile.yaml").is_file())


def load_profile(name: str | None = None, home: Path | None = None) -> Profile:
    """The named profile, else C{$JUMP_PROFILE}, else the current one, else the only one."""
    home = home or jump_home()
    available = list_profiles(home)
    chosen = name or os.environ.get(PROFILE_ENV)
    if not chosen:
        current = home / "current"
        if current.is_file():
            chosen = current.read_text(encoding="utf-8").strip()
        elif len(available) == 1:
            chosen = available[0]
    if not available:
        raise ProfileError(
            "this console is not enrolled with any Jumpoint",
            hint="ask your administrator for an enrollment file and run `jump enroll FILE`",
        )
    if not chosen or chosen not in available:
        raise ProfileError(
            f"no profile named {chosen!r}" if chosen else "no profile chosen",
            hint=f"available profiles: {', '.join(available)} (use --profile NAME)",
        )
    directory = home / "profiles" / chosen
    try:
        data = yaml.safe_load((directory / "profile.yaml").read_text(encoding="utf-8"))
        addresses: tuple[str, ...] = ()
        if data.get("addresses") is not None:
            checked = checked_addresses(data["addresses"])
            if checked is None:
                raise ValueError("addresses: expected a list of HOST:PORT")
            addresses = checked
        return Profile(
            name=chosen,
            directory=directory,
            jumpoint_name=str(data["jumpoint"]),
            host=str(data["host"]),
            port=int(data["port"]),
            server_name=str(data["server_name"]),
            user=str(data["user"]),
            addresses=addresses,
        )
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as error:
        raise ProfileError(
            f"profile {chosen!r} is damaged: {error}", hint="enroll again with `jump enroll FILE`"
        ) from None
