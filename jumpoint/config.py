"""The schema of jumpoint.yaml and its loader.

L{load_config} reads the file, checks every key (unknown keys are errors) and
returns a L{JumpointConfig}; relative paths are resolved against the file's
directory.  Every error names the file, the line and the key, and is raised
before the daemon starts.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from jumpoint.audit_spool_file import LIMIT_BYTES as SPOOL_LIMIT_BYTES
from jumpoint.network.settings import NetworkSettings, network_settings
from jumpoint.policy import Group, JumpPolicy, Policies, Restrictions, SessionPolicy
from jumpoint.schedule import schedule_checker
from jumpoint.secret_ref import SecretRef, loose_permissions
from jumpoint.store.connection import POSTGRESQL
from jumpoint.store.state_settings import StateSettings, state_section
from shared import items as item_schema
from shared import schema
from shared.addresses import AllowList, PortSet
from shared.errors import ConfigError
from shared.items import Item
from shared.schema import Field, Where

CONFIG_ENV = "JUMPOINT_CONFIG"
MAX_CONNECTIONS_PER_SESSION = 256
MAX_UDP_FLOWS_PER_SESSION = 256
"""The most UDP flows a session policy may allow (the channel's C{max_flows})."""
UDP_FLOWS_DEFAULT = 64
"""UDP flows a session carries at once unless its session policy says otherwise."""
UDP_IDLE_TIMEOUT_DEFAULT = 60.0
"""Seconds without a datagram that close a UDP flow unless the session policy says otherwise."""

__all__ = ["CONFIG_ENV", "Group", "JumpointConfig", "Limits", "load_config", "parse_config"]


@dataclass(frozen=True)
class CredentialRef:
    """Where the Jumpoint finds a credential it injects: never the secret itself.

    Chosen for an item by C{item} name, else by C{host} and C{username}.  The
    secret is read from C{password_file} or the environment variable
    C{password_env} each time it is used (L{jumpoint.credentials}).
    """

    kind: str
    username: str | None
    item: str | None = None
    host: str | None = None
    domain: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    certificate_file: Path | None = None
    """client_certificate: the certificate; its key (the secret) is C{password_file}."""

    def __repr__(self) -> str:  # the reference only; no secret is held
        return (
            f"CredentialRef(kind={self.kind!r}, username={self.username!r}, item={self.item!r},"
            f" host={self.host!r}, file={str(self.password_file) if self.password_file else None},"
            f" env={self.password_env!r})"
        )


RECONNECT_GRACE_DEFAULT = 300.0
"""Seconds a detached session stays resumable unless C{limits.reconnect_grace} says otherwise."""


@dataclass(frozen=True)
class Limits:
    max_connections_per_session: int = MAX_CONNECTIONS_PER_SESSION
    connect_timeout: float = 10.0
    handshake_timeout: float = 10.0
    keepalive_interval: float = 15.0
    keepalive_timeout: float = 45.0
    revocation_poll_interval: float = 1.0
    reconnect_grace: float = RECONNECT_GRACE_DEFAULT
    """Seconds a session whose channel was lost stays resumable (L{jumpoint.detached_sessions})."""


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
    items: tuple[Item, ...] = ()
    policies: Policies = field(default_factory=Policies)
    allowed_targets: AllowList | None = None
    audit_file: Path | None = None
    audit_spool_file: Path | None = None
    """Where records wait while the database cannot take them (default: by the state database)."""
    audit_spool_limit_bytes: int = SPOOL_LIMIT_BYTES
    recordings_directory: Path | None = None
    recording_buffer_limit: int = 8 * 1024 * 1024
    credentials: tuple[CredentialRef, ...] = ()
    max_pending_handshakes: int = 512
    max_pending_handshakes_per_address: int = 32
    network: NetworkSettings = field(default_factory=NetworkSettings)
    state: StateSettings = field(default_factory=StateSettings)
    """The state backend (C{state:}); SQLite's file is L{state_database}."""

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def spool_path(self) -> Path:
        """The audit spool file: C{audit.spool_file}, else next to the state database."""
        if self.audit_spool_file is not None:
            return self.audit_spool_file
        return self.state_database.with_name("audit-spool.jsonl")

    def item(self, name: str) -> Item | None:
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
    "max_pending_handshakes": Field(schema.integer(1, 100_000), default=512),
    "max_pending_handshakes_per_address": Field(schema.integer(1, 100_000), default=32),
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
    "reconnect_grace": Field(schema.duration(86400), default=RECONNECT_GRACE_DEFAULT),
}

_PATTERN = schema.name(128)  # a jump group name, or a pattern of them
_PATTERNS = schema.list_of(_PATTERN, max_items=1000)

_JUMP_GROUP_FIELDS = {
    "see": Field(_PATTERNS, default=[]),
    "open": Field(_PATTERNS, default=[]),
    "manage": Field(_PATTERNS, default=[]),
}


def _jump_groups(node: yaml.Node, where: Where) -> dict[str, list[str]]:
    """C{jump_groups}: a list (see and open) or a mapping with C{see}, C{open}, C{manage}."""
    if isinstance(node, yaml.SequenceNode):
        patterns = _PATTERNS(node, where)
        return {"see": patterns, "open": patterns, "manage": []}
    return schema.mapping(node, where, _JUMP_GROUP_FIELDS)


def _port_set(node: yaml.Node, where: Where) -> PortSet | None:
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
        return None
    entries = schema.list_of(schema.string(1, 32), max_items=1000)(node, where)
    if not entries:
        return None
    try:
        return PortSet.parse(entries)
    except ValueError as error:
        raise where.error(node, str(error)) from None


def _names(node: yaml.Node, where: Where) -> frozenset[str] | None:
    entries = schema.list_of(schema.string(1, 32), max_items=100)(node, where)
    return frozenset(e.lower() for e in entries) or None


def _protocols(node: yaml.Node, where: Where) -> frozenset[str] | None:
    entries = schema.list_of(schema.choice("tcp", "udp", "tcp-udp"), max_items=3)(node, where)
    return frozenset(entries) or None


def _acl(node: yaml.Node, where: Where) -> tuple[Any, ...] | None:
    entries = schema.list_of(schema.string(1, 64), max_items=1000)(node, where)
    networks = []
    for index, text in enumerate(entries):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise where.child(index).error(
                node.value[index], f"{text!r} is not an IP address or CIDR"
            ) from None
    return tuple(networks) or None


_MIN_FIELDS = {"min": Field(schema.integer(0, 10080), default=None)}
_AUTO_CLOSE_FIELDS = {
    "min": Field(schema.duration(), default=None),
    "max": Field(schema.duration(), default=None),
}

_RESTRICTED_FIELDS = {
    "local": Field(_port_set, default=None),
    "remote": Field(_port_set, default=None),
    "scheme": Field(_names, default=None),
    "acl": Field(_acl, default=None),
    "idle_timeout_minutes": Field(
        lambda n, w: schema.mapping(n, w, _MIN_FIELDS), default={"min": None}
    ),
    "auto_close": Field(
        lambda n, w: schema.mapping(n, w, _AUTO_CLOSE_FIELDS), default={"min": None, "max": None}
    ),
    "protocol": Field(_protocols, default=None),
    "skip_idle_timeout": Field(schema.boolean, default=False),
    "terminate_foreign_tunnels": Field(schema.boolean, default=False),
}


def _restrictions(node: yaml.Node, where: Where) -> Restrictions:
    values = schema.mapping(node, where, _RESTRICTED_FIELDS)
    idle_min = values["idle_timeout_minutes"]["min"]
    auto_close = values["auto_close"]
    if (
        auto_close["min"] is not None
        and auto_close["max"] is not None
        and auto_close["min"] > auto_close["max"]
    ):
        raise where.child("auto_close").error(node, "min is longer than max")
    return Restrictions(
        local=values["local"],
        remote=values["remote"],
        scheme=values["scheme"],
        acl=values["acl"],
        idle_timeout_min=None if idle_min is None else idle_min * 60.0,
        auto_close_min=auto_close["min"],
        auto_close_max=auto_close["max"],
        protocol=values["protocol"],
        skip_idle_timeout=values["skip_idle_timeout"],
        terminate_foreign_tunnels=values["terminate_foreign_tunnels"],
    )


_GROUP_FIELDS = {
    "jump_groups": Field(_jump_groups, default={"see": ["*"], "open": ["*"], "manage": []}),
    "tunnels": Field(schema.boolean, default=True),
    "tunnels_restricted": Field(_restrictions, default=None),
    "comments": Field(schema.optional_string(), default=None),
}

_SESSION_POLICY_FIELDS = {
    "recording": Field(schema.boolean, default=False),
    "idle_timeout": Field(schema.duration(7 * 86400), default=None),
    "auto_close": Field(schema.duration(), default=None),
    "max_connections": Field(schema.integer(1, MAX_CONNECTIONS_PER_SESSION), default=None),
    "login_timeout": Field(item_schema.login_timeout, default=None),
    "udp_idle_timeout": Field(schema.duration(7 * 86400), default=None),
    "max_udp_flows": Field(schema.integer(1, MAX_UDP_FLOWS_PER_SESSION), default=None),
    "comments": Field(schema.optional_string(), default=None),
}


def _session_policy(node: yaml.Node, where: Where) -> dict[str, Any]:
    return schema.mapping(node, where, _SESSION_POLICY_FIELDS)


def _regex(node: yaml.Node, where: Where) -> re.Pattern[str]:
    value = schema.string(1, 512)(node, where)
    try:
        return re.compile(value)
    except re.error as error:
        raise where.error(node, f"{value!r} is not a regular expression: {error}") from None


def _webhook(node: yaml.Node, where: Where) -> str:
    value = schema.string(1, 2048)(node, where)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        shown = f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
        raise where.error(node, f"{shown!r} is not an http:// or https:// URL with a host")
    return value


_NOTIFY_EVENTS = ("session_start", "session_end")
_NOTIFICATION_FIELDS = {
    "webhook": Field(_webhook, required=True),
    "events": Field(schema.list_of(schema.choice(*_NOTIFY_EVENTS), 1, 2), default=None),
    "secret_file": Field(schema.string(1, 4096), default=None),
    "secret_env": Field(schema.string(1, 128, r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"), default=None),
}

_JUMP_POLICY_FIELDS = {
    "schedule": Field(schedule_checker, default=None),
    "ticket_id_required": Field(schema.boolean, default=False),
    "ticket_id_pattern": Field(_regex, default=None),
    "notifications": Field(lambda n, w: schema.mapping(n, w, _NOTIFICATION_FIELDS), default=None),
    "approval_required": Field(schema.boolean, default=False),
    "approver_group": Field(schema.name(128), default=None),
    "approval_max_duration": Field(schema.duration(), default=8 * 3600.0),
    "approval_request_timeout": Field(schema.duration(), default=24 * 3600.0),
    "comments": Field(schema.optional_string(), default=None),
}


def _jump_policy(node: yaml.Node, where: Where) -> dict[str, Any]:
    values = schema.mapping(node, where, _JUMP_POLICY_FIELDS)
    if values["approval_required"] and not values["approver_group"]:
        raise where.error(node, "approval_required needs an approver_group")
    return values


def _allowed_targets(node: yaml.Node, where: Where) -> AllowList:
    entries = schema.list_of(schema.string(1, 300), max_items=10_000)(node, where)
    for index, text in enumerate(entries):
        try:
            AllowList.parse([text])
        except ValueError as error:
            raise where.child(index).error(node.value[index], str(error)) from None
    return AllowList.parse(entries)


_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
_CREDENTIAL_FIELDS = {
    "item": Field(schema.name(128), default=None),
    "host": Field(schema.host, default=None),
    "username": Field(schema.name(128), default=None),
    "type": Field(schema.choice("sql", "ntlm", "token", "client_certificate"), default="sql"),
    "domain": Field(schema.string(1, 256), default=None),
    "password_file": Field(schema.string(1, 4096), default=None),
    "password_env": Field(schema.string(1, 128, _ENV_NAME), default=None),
    "token_file": Field(schema.string(1, 4096), default=None),
    "token_env": Field(schema.string(1, 128, _ENV_NAME), default=None),
    "certificate_file": Field(schema.string(1, 4096), default=None),
    "key_file": Field(schema.string(1, 4096), default=None),
    "comments": Field(schema.optional_string(), default=None),
}


def _existing(base: Path, value: str, node: yaml.Node, where: Where, key: str) -> Path:
    """A readable file named by C{key} of a mapping (relative to jumpoint.yaml).

    Every key but C{certificate_file} names a secret: such a file must not be
    accessible by group or others (L{loose_permissions}).
    """
    candidate = Path(os.path.expanduser(value))
    path = candidate if candidate.is_absolute() else base / candidate
    key_node = next(v for k, v in node.value if k.value == key)
    if not path.is_file():
        raise where.child(key).error(key_node, f"{path} does not exist")
    if not os.access(path, os.R_OK):
        raise where.child(key).error(key_node, f"{path} is not readable")
    problem = None if key == "certificate_file" else loose_permissions(path)
    if problem is not None:
        raise where.child(key).error(key_node, problem)
    return path


def _credential_checker(base: Path) -> schema.Checker[CredentialRef]:
    def check(node: yaml.Node, where: Where) -> CredentialRef:
        values = schema.mapping(node, where, _CREDENTIAL_FIELDS)
        kind = values["type"]
        certificate_file = None
        if kind == "token":  # a bearer token is the secret: token_file or token_env
            values["password_file"] = values["password_file"] or values["token_file"]
            values["password_env"] = values["password_env"] or values["token_env"]
        if kind == "client_certificate":
            if values["certificate_file"] is None or values["key_file"] is None:
                raise where.error(node, "a client_certificate needs certificate_file and key_file")
            certificate_file = _existing(
                base, values["certificate_file"], node, where, "certificate_file"
            )
            values["password_file"] = values["key_file"]
        elif (values["password_file"] is None) == (values["password_env"] is None):
            secret = (
                "token_file and token_env"
                if kind == "token"
                else ("password_file and password_env")
            )
            raise where.error(node, f"give exactly one of {secret}")
        if values["item"] is None and (values["host"] is None or values["username"] is None):
            raise where.error(node, "give an item, or a host and a username")
        if values["type"] == "ntlm" and values["username"] is None:
            raise where.error(node, "a Windows (ntlm) credential needs a username")
        secret_file = None
        if values["password_file"] is not None:
            key = next(
                k
                for k in ("password_file", "token_file", "key_file")
                if any(n.value == k for n, _ in node.value)
            )
            secret_file = _existing(base, values["password_file"], node, where, key)
        if values["password_env"] is not None and values["password_env"] not in os.environ:
            key = (
                "password_env"
                if any(n.value == "password_env" for n, _ in node.value)
                else ("token_env")
            )
            key_node = next(v for k, v in node.value if k.value == key)
            raise where.child(key).error(
                key_node, f"the environment variable {values['password_env']} is not set"
            )
        return CredentialRef(
            certificate_file=certificate_file,
            kind=values["type"],
            username=values["username"],
            item=values["item"],
            host=values["host"],
            domain=values["domain"],
            password_file=secret_file,
            password_env=values["password_env"],
        )

    return check


_AUDIT_FIELDS = {
    "file": Field(schema.optional_string(), default="audit.jsonl"),
    "spool_file": Field(schema.optional_string(), default=None),
    "spool_limit_bytes": Field(
        schema.integer(1024 * 1024, 64 * 1024 * 1024 * 1024), default=SPOOL_LIMIT_BYTES
    ),
}
_RECORDINGS_FIELDS = {
    "directory": Field(schema.string(), default="recordings"),
    "buffer_limit": Field(schema.integer(64 * 1024, 1024 * 1024 * 1024), default=8 * 1024 * 1024),
}


def _mapping_or_empty(fields: dict[str, Field]) -> schema.Checker[dict[str, Any]]:
    def checker(node: yaml.Node, where: Where) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
            return {name: spec.default for name, spec in fields.items()}
        return schema.mapping(node, where, fields)

    return checker


def _group_checker(node: yaml.Node, where: Where) -> dict[str, Any]:
    return _mapping_or_empty(_GROUP_FIELDS)(node, where)


def _items_or_empty(node: yaml.Node, where: Where) -> tuple[Item, ...]:
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
        return ()
    return item_schema.items(node, where)


_TOP_FIELDS = {
    "jumpoint": Field(lambda n, w: schema.mapping(n, w, _JUMPOINT_FIELDS), required=True),
    "tls": Field(_mapping_or_empty(_TLS_FIELDS), default=None),
    "state_database": Field(schema.string(), default="state.db"),
    "state": Field(state_section, default=None),
    "limits": Field(_mapping_or_empty(_LIMIT_FIELDS), default=None),
    "groups": Field(schema.dict_of(_group_checker), default=None),
    "allowed_targets": Field(_allowed_targets, default=None),
    "jump_policies": Field(schema.dict_of(_jump_policy), default=None),
    "session_policies": Field(schema.dict_of(_session_policy), default=None),
    "audit": Field(_mapping_or_empty(_AUDIT_FIELDS), default=None),
    "recordings": Field(_mapping_or_empty(_RECORDINGS_FIELDS), default=None),
    "items": Field(_items_or_empty, default=()),
    "credentials": Field(lambda n, w: n, default=None),  # checked with the file's directory
    "network": Field(network_settings, default=None),
}


def _build_group(name: str, values: dict[str, Any]) -> Group:
    jump_groups = values["jump_groups"]
    return Group(
        name=name,
        see=tuple(jump_groups["see"]),
        open=tuple(jump_groups["open"]),
        manage=tuple(jump_groups["manage"]),
        tunnels=values["tunnels"],
        restrictions=values["tunnels_restricted"],
        comments=values["comments"],
    )


def _webhook_secret(
    notifications: dict[str, Any], root: yaml.Node, filename: str, policy: str, base: Path
) -> SecretRef | None:
    """The secret that signs a policy's webhook bodies: C{secret_file} or C{secret_env}."""
    where = Where(filename, f"jump_policies.{policy}.notifications")
    node = _node_at(root, "jump_policies", policy, "notifications")
    secret_file, secret_env = notifications.get("secret_file"), notifications.get("secret_env")
    if secret_file is not None and secret_env is not None:
        raise where.error(node, "give one of secret_file and secret_env, not both")
    if secret_env is not None:
        if not os.environ.get(secret_env):
            raise where.child("secret_env").error(
                _node_at(root, "jump_policies", policy, "notifications", "secret_env"),
                f"the environment variable {secret_env} is not set",
            )
        return SecretRef(env=secret_env)
    if secret_file is None or node is None:
        return None
    return SecretRef(file=_existing(base, secret_file, node, where, "secret_file"))


def _build_policies(top: dict[str, Any], root: yaml.Node, filename: str, base: Path) -> Policies:
    jump = {}
    for name, values in (top["jump_policies"] or {}).items():
        notifications = values["notifications"] or {}
        jump[name] = JumpPolicy(
            name=name,
            schedule=values["schedule"],
            ticket_id_required=values["ticket_id_required"]
            or values["ticket_id_pattern"] is not None,
            ticket_id_pattern=values["ticket_id_pattern"],
            webhook=notifications.get("webhook"),
            webhook_secret=_webhook_secret(notifications, root, filename, name, base),
            notify_events=tuple(notifications.get("events") or _NOTIFY_EVENTS),
            approval_required=values["approval_required"],
            approver_group=values["approver_group"],
            approval_max_duration=values["approval_max_duration"],
            approval_request_timeout=values["approval_request_timeout"],
        )
    session = {
        name: SessionPolicy(
            name=name,
            recording=values["recording"],
            idle_timeout=values["idle_timeout"],
            auto_close=values["auto_close"],
            max_connections=values["max_connections"],
            login_timeout=values["login_timeout"],
            udp_idle_timeout=values["udp_idle_timeout"],
            max_udp_flows=values["max_udp_flows"],
        )
        for name, values in (top["session_policies"] or {}).items()
    }
    return Policies(jump=jump, session=session)


def _node_at(root: yaml.Node, *path: str | int) -> yaml.Node | None:
    """The node at a key path of the document, for the line of an error."""
    node: yaml.Node | None = root
    for key in path:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
            node = node.value[key] if key < len(node.value) else None
        else:
            return None
    return node


def check_references(
    root: yaml.Node,
    where: Where,
    items: tuple[Item, ...],
    policies: Policies,
    groups: dict[str, Group],
) -> None:
    """Every policy an item names exists; every approver group exists."""
    for index, entry in enumerate(items):
        for key, known in (("jump_policy", policies.jump), ("session_policy", policies.session)):
            name = getattr(entry, key)
            if name is not None and name not in known:
                names = ", ".join(sorted(known)) or "none"
                raise (
                    where.child("items")
                    .child(index)
                    .child(key)
                    .error(
                        _node_at(root, "items", index, key),
                        f"no {key.replace('_', ' ')} named {name!r} (defined: {names})",
                    )
                )
    for policy in policies.jump.values():
        if policy.approver_group is not None and policy.approver_group not in groups:
            raise (
                where.child("jump_policies")
                .child(policy.name)
                .child("approver_group")
                .error(
                    _node_at(root, "jump_policies", policy.name, "approver_group"),
                    f"no group named {policy.approver_group!r}",
                )
            )


def _state_settings(
    values: dict[str, Any] | None, root: yaml.Node, filename: str, base: Path
) -> StateSettings:
    """C{state:} with its DSN reference checked (the file 0600, the variable set)."""
    if values is None or values["backend"] != POSTGRESQL:
        return StateSettings()
    where = Where(filename, "state")
    if values["dsn_env"] is not None:
        if not os.environ.get(values["dsn_env"]):
            raise where.child("dsn_env").error(
                _node_at(root, "state", "dsn_env"),
                f"the environment variable {values['dsn_env']} is not set",
            )
        return StateSettings(POSTGRESQL, SecretRef(env=values["dsn_env"]))
    node = _node_at(root, "state")
    assert node is not None
    path = _existing(base, values["dsn_file"], node, where, "dsn_file")
    return StateSettings(POSTGRESQL, SecretRef(file=path))


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
    groups = {name: _build_group(name, values) for name, values in (top["groups"] or {}).items()}
    base = path.parent
    policies = _build_policies(top, root, filename, base)
    check_references(root, Where(filename, ""), top["items"], policies, groups)
    credentials: tuple[CredentialRef, ...] = ()
    if top["credentials"] is not None:
        credentials = tuple(
            schema.list_of(_credential_checker(base), max_items=10_000)(
                top["credentials"], Where(filename, "credentials")
            )
        )
    audit = top["audit"] or {name: spec.default for name, spec in _AUDIT_FIELDS.items()}
    recordings = top["recordings"] or {
        name: spec.default for name, spec in _RECORDINGS_FIELDS.items()
    }

    def resolve(value: str) -> Path:
        candidate = Path(os.path.expanduser(value))
        return candidate if candidate.is_absolute() else base / candidate

    listen_host, listen_port = jumpoint["listen"]
    state = top["state"]
    state_path = state["path"] if state is not None and state["path"] else top["state_database"]
    return JumpointConfig(
        path=path,
        name=jumpoint["name"],
        listen_host=listen_host,
        listen_port=listen_port,
        addresses=tuple(jumpoint["addresses"]),
        max_pending_handshakes=jumpoint["max_pending_handshakes"],
        max_pending_handshakes_per_address=jumpoint["max_pending_handshakes_per_address"],
        ca_certificate=resolve(tls["ca_certificate"]),
        ca_key=resolve(tls["ca_key"]),
        server_certificate=resolve(tls["server_certificate"]),
        server_key=resolve(tls["server_key"]),
        state_database=resolve(state_path),
        state=_state_settings(state, root, filename, base),
        limits=limits,
        groups=groups,
        items=top["items"],
        policies=policies,
        allowed_targets=top["allowed_targets"],
        audit_file=resolve(audit["file"]) if audit["file"] else None,
        audit_spool_file=resolve(audit["spool_file"]) if audit["spool_file"] else None,
        audit_spool_limit_bytes=audit["spool_limit_bytes"],
        recordings_directory=resolve(recordings["directory"]),
        recording_buffer_limit=recordings["buffer_limit"],
        credentials=credentials,
        network=top["network"] or NetworkSettings(),
    )


def config_file(path: str | Path | None) -> Path:
    """The jumpoint.yaml named by C{path} or C{$JUMPOINT_CONFIG}, made absolute."""
    if path is None:
        path = os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(
            "no configuration file given",
            hint=f"pass --config DIR/jumpoint.yaml or set {CONFIG_ENV}",
        )
    return Path(path).absolute()


def load_config(path: str | Path | None) -> JumpointConfig:
    """Read and check jumpoint.yaml from C{path} or C{$JUMPOINT_CONFIG}."""
    config_path = config_file(path)
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
        problem = loose_permissions(file_path) if label.endswith("_key") else None
        if problem is not None:
            raise ConfigError(f"{config_path}: {label}: {problem}")
    if not config.state.shared and not config.state_database.parent.is_dir():
        raise ConfigError(
            f"{config_path}: state_database: the directory {config.state_database.parent}"
            " does not exist"
        )
    return config
