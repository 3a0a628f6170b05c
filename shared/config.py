"""The schema of jumpoint.yaml and its loader.

L{load_config} reads the file, checks every key (unknown keys are errors) and
returns a L{JumpointConfig}; relative paths are resolved against the file's
directory.  Every error names the file, the line and the key, and is raised
before the daemon starts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shared import items as item_schema
from shared import schema
from shared.errors import ConfigError
from shared.items import TcpItem
from shared.schema import Field, Where

CONFIG_ENV = "JUMPOINT_CONFIG"
MAX_CONNECTIONS_PER_SESSION = 256


@dataclass(frozen=True)
class Group:
    """A user group; C{jump_groups} lists the jump groups its members may open ("*": all)."""

    name: str
    jump_groups: tuple[str, ...] = ("*",)
    comments: str | None = None

    def may_open(self, item: TcpItem) -> bool:
        return "*" in self.jump_groups or item.jump_group in self.jump_groups


@dataclass(frozen=True)
class Limits:
    max_connections_per_session: int = MAX_CONNECTIONS_PER_SESSION
    connect_timeout: float = 10.0
    handshake_timeout: float = 10.0
    keepalive_interval: float = 15.0
    keepalive_timeout: float = 45.0
    revocation_poll_interval: float = 1.0


@dataclass(frozen=True)
class JumpointConfig:
    path: Path
    name: str
    listen_host: str
    listen_port: int
    addresses: tuple[str, ...]
    ca_certificate: Path
    ca_key: Path
    server_certificate: Path
    server_key: Path
    state_database: Path
    limits: Limits = field(default_factory=Limits)
    groups: dict[str, Group] = field(default_factory=dict)
    items: tuple[TcpItem, ...] = ()

    @property
    def directory(self) -> Path:
        return self.path.parent

    def item(self, name: str) -> TcpItem | None:
        for entry in self.items:
            if entry.name == name:
                return entry
        return None


JUMPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_NAME = schema.string(1, 128, JUMPOINT_NAME.pattern)

_JUMPOINT_FIELDS = {
    "name": Field(_NAME, required=True),
    "listen": Field(schema.host_port, required=True),
    "addresses": Field(schema.list_of(schema.host, min_items=1, max_items=32), required=True),
}

_TLS_FIELDS = {
    "ca_certificate": Field(schema.string(), default="ca.pem"),
    "ca_key": Field(schema.string(), default="ca.key"),
    "server_certificate": Field(schema.string(), default="server.pem"),
    "server_key": Field(schema.string(), default="server.key"),
}

_LIMIT_FIELDS = {
    "max_connections_per_session": Field(
        schema.integer(1, MAX_CONNECTIONS_PER_SESSION), default=MAX_CONNECTIONS_PER_SESSION
    ),
    "connect_timeout": Field(schema.duration(600), default=10.0),
    "handshake_timeout": Field(schema.duration(600), default=10.0),
    "keepalive_interval": Field(schema.duration(3600), default=15.0),
    "keepalive_timeout": Field(schema.duration(3600), default=45.0),
    "revocation_poll_interval": Field(schema.duration(600), default=1.0),
}

_GROUP_FIELDS = {
    "jump_groups": Field(schema.list_of(schema.string(1, 128)), default=["*"]),
    "comments": Field(schema.optional_string(), default=None),
}


def _mapping_or_empty(fields: dict[str, Field]) -> schema.Checker[dict[str, Any]]:
    def checker(node: yaml.Node, where: Where) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
            return {name: spec.default for name, spec in fields.items()}
        return schema.mapping(node, where, fields)

    return checker


def _group_checker(node: yaml.Node, where: Where) -> dict[str, Any]:
    return _mapping_or_empty(_GROUP_FIELDS)(node, where)


def _items_or_empty(node: yaml.Node, where: Where) -> tuple[TcpItem, ...]:
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
        return ()
    return item_schema.items(node, where)


_TOP_FIELDS = {
    "jumpoint": Field(lambda n, w: schema.mapping(n, w, _JUMPOINT_FIELDS), required=True),
    "tls": Field(_mapping_or_empty(_TLS_FIELDS), default=None),
    "state_database": Field(schema.string(), default="state.db"),
    "limits": Field(_mapping_or_empty(_LIMIT_FIELDS), default=None),
    "groups": Field(schema.dict_of(_group_checker), default=None),
    "items": Field(_items_or_empty, default=()),
}


def parse_config(text: str, path: Path) -> JumpointConfig:
    """Check the text of a jumpoint.yaml; raises L{ConfigError}."""
    filename = str(path)
    root = schema.compose(text, filename)
    top = schema.mapping(root, Where(filename, ""), _TOP_FIELDS)
    jumpoint = top["jumpoint"]
    tls = top["tls"] or {name: spec.default for name, spec in _TLS_FIELDS.items()}
    limits_values = top["limits"] or {}
    limits = Limits(**{k: v for k, v in limits_values.items() if v is not None})
    if limits.keepalive_timeout <= limits.keepalive_interval:
        raise ConfigError(
            f"{filename}: limits.keepalive_timeout must be longer than limits.keepalive_interval"
        )
    groups_values = top["groups"] or {}
    groups = {
        name: Group(name, tuple(values["jump_groups"]), values["comments"])
        for name, values in groups_values.items()
    }
    base = path.parent

    def resolve(value: str) -> Path:
        candidate = Path(os.path.expanduser(value))
        return candidate if candidate.is_absolute() else base / candidate

    listen_host, listen_port = jumpoint["listen"]
    return JumpointConfig(
        path=path,
        name=jumpoint["name"],
        listen_host=listen_host,
        listen_port=listen_port,
        addresses=tuple(jumpoint["addresses"]),
        ca_certificate=resolve(tls["ca_certificate"]),
        ca_key=resolve(tls["ca_key"]),
        server_certificate=resolve(tls["server_certificate"]),
        server_key=resolve(tls["server_key"]),
        state_database=resolve(top["state_database"]),
        limits=limits,
        groups=groups,
        items=top["items"],
    )


def load_config(path: str | Path | None) -> JumpointConfig:
    """Read and check jumpoint.yaml from C{path} or C{$JUMPOINT_CONFIG}."""
    if path is None:
        path = os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(
            "no configuration file given",
            hint=f"pass --config DIR/jumpoint.yaml or set {CONFIG_ENV}",
        )
    config_path = Path(path).absolute()
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{config_path}: no such file", hint="create one with `jumpoint init`"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{config_path}: cannot read: {error}") from None
    config = parse_config(text, config_path)
    for label, file_path in (
        ("tls.ca_certificate", config.ca_certificate),
        ("tls.ca_key", config.ca_key),
        ("tls.server_certificate", config.server_certificate),
        ("tls.server_key", config.server_key),
    ):
        if not file_path.is_file():
            raise ConfigError(f"{config_path}: {label}: {file_path} does not exist")
        if not os.access(file_path, os.R_OK):
            raise ConfigError(f"{config_path}: {label}: {file_path} is not readable")
    if not config.state_database.parent.is_dir():
        raise ConfigError(
            f"{config_path}: state_database: the directory {config.state_database.parent}"
            " does not exist"
        )
    return config
