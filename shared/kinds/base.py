"""The item record every kind shares, the interface of a kind, and the registry of kinds.

An L{Item} is one record for all kinds: the common fields (name, local
address, jump group, tag, comments, policies) and the fields of the kinds
built in, which the Jumpoint's handlers read by name (C{item.url},
C{item.username}...).  A kind added later keeps its own checked values in
L{Item.extra} and needs no new field here.

A L{Kind} is what the shared schema knows of a kind: its fields, how its
checked values become an item (with the checks that span fields), and the
values it stores (L{Item.to_spec}).  Kinds are registered by name (the wire
and config name, C{tcp}, C{mssql}...) in L{register}; the kinds built in
are registered by L{shared.kinds}.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import yaml

from shared.addresses import FilterRule
from shared.kinds.routes import canonical_route_host, split_route
from shared.schema import Field, Where

NAME_MAX = 128
AUTO = "auto"
LOOPBACK_DEFAULT = "127.0.0.1"

WELL_KNOWN_SCHEMES = {
    22: "ssh",
    80: "http",
    443: "https",
    1433: "mssql",
    3306: "mysql",
    3389: "rdp",
    5432: "postgres",
    5900: "vnc",
    6379: "redis",
    6443: "https",
}
"""The scheme a tunnel gets from its remote port when it names none (RPort's C{scheme})."""


TCP = "tcp"
UDP = "udp"
TUNNEL_PROTOCOLS = (TCP, UDP, "tcp-udp")
"""What a tunnel pair carries (RPort's C{protocol}); C{tcp-udp} is both on the same ports."""


@dataclass(frozen=True)
class TunnelSpec:
    """One local→remote port pair; C{local_port} C{None} means "auto".

    C{protocol} is one of L{TUNNEL_PROTOCOLS} (default C{tcp}).
    """

    local_port: int | None
    remote_port: int
    scheme: str | None = None
    protocol: str = TCP

    @property
    def carries(self) -> frozenset[str]:
        """The transport protocols of the pair: C{{tcp}}, C{{udp}} or both."""
        return frozenset(self.protocol.split("-"))

    @property
    def effective_scheme(self) -> str | None:
        """The scheme, or the well-known one of a TCP remote port (UDP ports have none)."""
        if self.scheme or TCP not in self.carries:
            return self.scheme
        return WELL_KNOWN_SCHEMES.get(self.remote_port)

    def text(self) -> str:
        """The console's C{LOCAL:REMOTE[/PROTOCOL][/SCHEME]} form (C{/tcp} left out)."""
        local = AUTO if self.local_port is None else str(self.local_port)
        protocol = f"/{self.protocol}" if self.protocol != TCP else ""
        suffix = f"/{self.scheme}" if self.scheme else ""
        return f"{local}:{self.remote_port}{protocol}{suffix}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "local_port": AUTO if self.local_port is None else self.local_port,
            "remote_port": self.remote_port,
            "protocol": self.protocol,
        }
        if self.scheme:
            out["scheme"] = self.scheme
        return out


@dataclass(frozen=True)
class Item:
    """A jump item of any kind; the fields of other kinds stay at their defaults."""

    name: str
    type: str
    host: str = ""
    tunnels: tuple[TunnelSpec, ...] = ()
    local_address: str = LOOPBACK_DEFAULT
    jump_group: str = "default"
    tag: str | None = None
    comments: str | None = None
    jump_policy: str | None = None
    session_policy: str | None = None
    port: int | None = None
    username: str | None = None
    database: str | None = None
    url: str | None = None
    ca_pem: str | None = None
    namespace: str | None = None
    encryption: str | None = None
    """mssql: how the Jumpoint talks to the server: C{required} (TLS) or C{strict} (TDS 8.0)."""
    trust_server_certificate: bool = False
    impersonate: bool = False
    """k8s: send Impersonate-User (the jump user) and Impersonate-Group (their groups)."""
    allowed_namespaces: tuple[str, ...] = ()
    read_only_access: bool = False
    """k8s: only get, list and watch (exec, attach, port-forward and proxy denied)."""
    denied_resources: tuple[str, ...] = ("secrets",)
    allow_exec: bool = True
    allow_port_forward: bool = True
    filters: tuple[FilterRule, ...] = ()
    """network: the filter rules (L{shared.kinds.network})."""
    login_timeout: float | None = None
    """mssql, k8s: seconds a local connection has to finish its login (L{LOGIN_TIMEOUT_DEFAULT})."""
    allowed_routes: tuple[str, ...] = ()
    """mssql: C{HOST:PORT} targets (C{*.domain} for any name under it) the server may route to."""
    extra: tuple[tuple[str, Any], ...] = ()
    """The checked values of a kind that has no fields of its own here (L{extra_value})."""
    source: str = "config"
    created_by: str | None = None

    @property
    def read_only(self) -> bool:
        return self.source == "config"

    @property
    def kind(self) -> Kind:
        """The item's kind (L{kind_named}); an item is only built for a registered kind."""
        return kind_named(self.type)

    @property
    def remote_ports(self) -> frozenset[int]:
        """The remote ports of every tunnel, whatever it carries."""
        return frozenset(t.remote_port for t in self.tunnels)

    def extra_value(self, key: str, default: Any = None) -> Any:
        """One of L{extra}, or C{default}."""
        return dict(self.extra).get(key, default)

    def allows_target(self, host: str, port: int, protocol: str = TCP) -> bool:
        """The seed's rule: only the item's host and a remote port of a tunnel carrying C{protocol}.

        A stream is TCP: a C{udp} pair opens no TCP port.
        """
        return host == self.host and any(
            t.remote_port == port and protocol in t.carries for t in self.tunnels
        )

    def allows_route(self, host: str, port: int) -> bool:
        """mssql: may a SQL Server routing answer send the login to C{host}:C{port}?

        Only to the item's own host and port, or to a target of
        C{allowed_routes}; host names compare case-insensitively.
        """
        wanted = canonical_route_host(host)
        if wanted == canonical_route_host(self.host) and port == (self.port or 1433):
            return True
        for entry in self.allowed_routes:
            pattern, entry_port = split_route(entry)
            if entry_port != port:
                continue
            if pattern.startswith("*."):
                if wanted.endswith(pattern[1:]):  # a name under the domain, not the domain
                    return True
            elif pattern == wanted:
                return True
        return False

    def to_spec(self) -> dict[str, Any]:
        """The fields an admin or a console sets: what the database stores."""
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        for key, value in self.kind.values(self).items():
            if value is not None and value != ():
                out[key] = value
        for key in ("local_address", "jump_group", "tag", "comments"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        for key in ("jump_policy", "session_policy"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    def to_json(self) -> dict[str, Any]:
        out = self.to_spec()
        out.pop("ca_pem", None)
        out.setdefault("tag", None)
        out.setdefault("comments", None)
        if self.ca_pem is not None:
            out["ca_certificates"] = self.ca_pem.count("BEGIN CERTIFICATE")
        out["read_only"] = self.read_only
        out["source"] = self.source
        if self.created_by is not None:
            out["created_by"] = self.created_by
        return out

    def with_changes(self, **changes: Any) -> Item:
        return replace(self, **changes)


Build = Callable[[dict[str, Any], Where, yaml.Node], dict[str, Any]]
"""Checked values of a kind's fields → the L{Item} fields they set (raises L{ConfigError})."""


@dataclass(frozen=True)
class Kind:
    """What the shared schema knows of one kind of item.

    @ivar name: the wire and config name (the item's C{type}).
    @ivar fields: the kind's keys beyond the common ones, with their checkers.
    @ivar build: the checked values → the item's fields; the checks that span
        fields (two tunnels on one local port) are made here, with C{where}
        and the item's node for the error.
    @ivar values: the item → the kind's values in L{Item.to_spec} (C{None}
        and C{()} are left out).
    @ivar logs_in: a local connection logs in first (or sends a first
        request), so that C{login_timeout} applies to it.
    """

    name: str
    fields: Mapping[str, Field]
    build: Build
    values: Callable[[Item], dict[str, Any]]
    logs_in: bool = False


_REGISTRY: dict[str, Kind] = {}


def register(kind: Kind) -> None:
    """Add a kind; its name must be new."""
    if kind.name in _REGISTRY:
        raise ValueError(f"the kind {kind.name!r} is already registered")
    _REGISTRY[kind.name] = kind


def unregister(name: str) -> None:
    """Remove a kind (a test's own kind, once the test is done)."""
    del _REGISTRY[name]


def kind_named(name: str) -> Kind:
    """The registered kind called C{name}; raises L{KeyError}."""
    return _REGISTRY[name]


def kind_names() -> tuple[str, ...]:
    """The names of the registered kinds, in the order of registration."""
    return tuple(_REGISTRY)


def registered() -> tuple[Kind, ...]:
    return tuple(_REGISTRY.values())
