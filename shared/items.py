"""Jump items: what a user may open, and the one schema that checks them.

An item names a target on the Jumpoint's network.  Four kinds share the
common fields (name, local address, jump group, tag, comments, policies):

* C{tcp}: a host and one or more tunnel pairs (a local port on the console,
  "auto" for any free port, and a remote port on the host);
* C{mssql}: a SQL Server (host, port, the login the Jumpoint injects, database);
* C{k8s}: a Kubernetes API server (https URL, its CA certificates as PEM);
* C{network}: filter rules (addresses, protocol, ports).

Items come from jumpoint.yaml (read-only) or are created from the console and
kept in the state database.  Both go through the same checkers
(L{item_checker}): a console request is turned into a node tree
(L{shared.schema.from_data}) and checked exactly like the YAML file, so a
field is validated in one place.  Items travel to the console as plain JSON
(L{Item.to_json}).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import yaml

from shared import addresses, schema
from shared.errors import ConfigError
from shared.schema import Field, Where

NAME_MAX = 128
AUTO = "auto"
KINDS = ("tcp", "mssql", "k8s", "network")
LOOPBACK_DEFAULT = "127.0.0.1"

LOGIN_TIMEOUT_DEFAULT = 30.0
"""Seconds a local connection of an mssql or k8s item has to finish its login (or first request)."""
LOGIN_TIMEOUT_MAX = 3600.0
LOGIN_KINDS = ("mssql", "k8s")
"""The kinds whose connections log in first, so that C{login_timeout} applies to them."""

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

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]{0,31}$")


@dataclass(frozen=True)
class TunnelSpec:
    """One local→remote port pair; C{local_port} C{None} means "auto"."""

    local_port: int | None
    remote_port: int
    scheme: str | None = None

    @property
    def effective_scheme(self) -> str | None:
        return self.scheme or WELL_KNOWN_SCHEMES.get(self.remote_port)

    def text(self) -> str:
        """The console's C{LOCAL:REMOTE} form."""
        local = AUTO if self.local_port is None else str(self.local_port)
        suffix = f"/{self.scheme}" if self.scheme else ""
        return f"{local}:{self.remote_port}{suffix}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "local_port": AUTO if self.local_port is None else self.local_port,
            "remote_port": self.remote_port,
        }
        if self.scheme:
            out["scheme"] = self.scheme
        return out


def parse_tunnel_text(text: str) -> dict[str, Any]:
    """Parse the console's C{LOCAL:REMOTE[/SCHEME]} into the schema's mapping."""
    body, _, scheme = text.strip().partition("/")
    local, sep, remote = body.partition(":")
    if not sep:
        raise ValueError(f"{text!r} is not LOCAL:REMOTE (for example 8080:80 or auto:5432)")
    out: dict[str, Any] = {
        "local_port": AUTO if local.strip() == AUTO else _port_text(local, text),
        "remote_port": _port_text(remote, text),
    }
    if scheme:
        out["scheme"] = scheme
    return out


def _port_text(value: str, whole: str) -> int:
    value = value.strip()
    if not value.isdigit():
        raise ValueError(f"{whole!r}: {value!r} is not a port number (1-65535) or 'auto'")
    return int(value)


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
    filters: tuple[str, ...] = ()
    login_timeout: float | None = None
    """mssql, k8s: seconds a local connection has to finish its login (L{LOGIN_TIMEOUT_DEFAULT})."""
    allowed_routes: tuple[str, ...] = ()
    """mssql: C{HOST:PORT} targets (C{*.domain} for any name under it) the server may route to."""
    source: str = "config"
    created_by: str | None = None

    @property
    def read_only(self) -> bool:
        return self.source == "config"

    @property
    def remote_ports(self) -> frozenset[int]:
        return frozenset(t.remote_port for t in self.tunnels)

    def allows_target(self, host: str, port: int) -> bool:
        """The seed's rule: only the item's host and one of its remote ports."""
        return host == self.host and port in self.remote_ports

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
        for key, value in _KIND_VALUES[self.type](self).items():
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


def _tcp_values(item: Item) -> dict[str, Any]:
    return {"host": item.host, "tunnels": [t.to_json() for t in item.tunnels]}


def _mssql_values(item: Item) -> dict[str, Any]:
    local = item.tunnels[0].local_port if item.tunnels else None
    return {
        "host": item.host,
        "port": item.port,
        "local_port": AUTO if local is None else local,
        "username": item.username,
        "database": item.database,
        "encryption": item.encryption,
        "trust_server_certificate": item.trust_server_certificate or None,
        "ca_pem": item.ca_pem,
        "login_timeout": item.login_timeout,
        "allowed_routes": list(item.allowed_routes) or None,
    }


def _k8s_values(item: Item) -> dict[str, Any]:
    local = item.tunnels[0].local_port if item.tunnels else None
    return {
        "url": item.url,
        "ca_pem": item.ca_pem,
        "namespace": item.namespace,
        "local_port": AUTO if local is None else local,
        "impersonate": item.impersonate or None,
        "allowed_namespaces": list(item.allowed_namespaces) or None,
        "read_only_access": item.read_only_access or None,
        "denied_resources": list(item.denied_resources),
        "allow_exec": None if item.allow_exec else False,
        "allow_port_forward": None if item.allow_port_forward else False,
        "login_timeout": item.login_timeout,
    }


def _network_values(item: Item) -> dict[str, Any]:
    return {"filters": list(item.filters)}


_KIND_VALUES = {
    "tcp": _tcp_values,
    "mssql": _mssql_values,
    "k8s": _k8s_values,
    "network": _network_values,
}


# -- checkers ---------------------------------------------------------------


def _local_port(node: yaml.Node, where: Where) -> int | None:
    if isinstance(node, yaml.ScalarNode) and node.value == AUTO:
        return None
    try:
        return schema.integer(1, 65535)(node, where)
    except ConfigError:
        raise where.error(node, "must be 'auto' or a port number (1-65535)") from None


def _scheme(node: yaml.Node, where: Where) -> str:
    value = schema.string(1, 32)(node, where).lower()
    if not _SCHEME.match(value):
        raise where.error(node, f"{value!r} is not a scheme name (such as ssh, http, postgres)")
    return value


_TUNNEL_FIELDS = {
    "local_port": Field(_local_port, default=None),
    "remote_port": Field(schema.integer(1, 65535), required=True),
    "scheme": Field(_scheme, default=None),
}


def _tunnel(node: yaml.Node, where: Where) -> TunnelSpec:
    values = schema.mapping(node, where, _TUNNEL_FIELDS)
    return TunnelSpec(values["local_port"], values["remote_port"], values["scheme"])


def _https_url(node: yaml.Node, where: Where) -> str:
    value = schema.string(9, 2048)(node, where)
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise where.error(node, f"{value!r} must be an https:// URL with a host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise where.error(node, "the URL must not carry credentials, a query or a fragment")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise where.error(node, f"{value!r} has an invalid port") from None
    return value.rstrip("/")


def _pem_certificates(node: yaml.Node, where: Where) -> str:
    from cryptography import x509

    value = schema.string(1, 65536)(node, where)
    try:
        certificates = x509.load_pem_x509_certificates(value.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise where.error(node, "is not PEM text of X.509 certificates") from None
    if len(certificates) > 16:
        raise where.error(node, "holds more than 16 certificates")
    return value


def _filter_rule(node: yaml.Node, where: Where) -> str:
    value = schema.string(1, 4096)(node, where)
    try:
        return addresses.FilterRule.parse(value).describe()
    except ValueError as error:
        raise where.error(node, str(error)) from None


def canonical_route_host(host: str) -> str:
    """A host as routing compares it: lower case, no trailing dot or brackets, IPs normalised."""
    text = host.strip().strip("[]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def split_route(text: str) -> tuple[str, int]:
    """C{HOST:PORT} (C{[IPV6]:PORT}) of an C{allowed_routes} entry; raises L{ValueError}."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (for example replica.corp:1433)")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, as [::1]:1433")
    name = canonical_route_host(host)
    pattern = name[2:] if name.startswith("*.") else name
    if not pattern or not schema.is_host(pattern):
        raise ValueError(f"{text!r}: {host!r} is not a host name, *.domain or IP address")
    return name, int(port)


def _route(node: yaml.Node, where: Where) -> str:
    value = schema.string(3, 300)(node, where)
    try:
        host, port = split_route(value)
    except ValueError as error:
        raise where.error(node, str(error)) from None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def login_timeout(node: yaml.Node, where: Where) -> float:
    """C{login_timeout} of an item or a session policy: a duration, 1 s to 1 h."""
    seconds = schema.duration(LOGIN_TIMEOUT_MAX)(node, where)
    if not 1 <= seconds <= LOGIN_TIMEOUT_MAX:  # also NaN, which parses as a number
        raise where.error(node, f"must be 1 to {LOGIN_TIMEOUT_MAX:g} seconds")
    return seconds


_NAMESPACE = schema.string(1, 63, r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

COMMENTS_MAX = 4096

# Names are printable and in NFKC form, comments are one line of text
# (shared.text): they are shown on others' terminals.
_COMMON_FIELDS = {
    "name": Field(schema.name(NAME_MAX), required=True),
    "type": Field(schema.choice(*KINDS), required=True),
    "local_address": Field(schema.loopback_address, default=LOOPBACK_DEFAULT),
    "jump_group": Field(schema.name(NAME_MAX), default="default"),
    "tag": Field(schema.optional_name(NAME_MAX), default=None),
    "comments": Field(schema.free_text(COMMENTS_MAX), default=None),
    "jump_policy": Field(schema.name(NAME_MAX), default=None),
    "session_policy": Field(schema.name(NAME_MAX), default=None),
}

_KIND_FIELDS: dict[str, dict[str, Field]] = {
    "tcp": {
        "host": Field(schema.host, required=True),
        "tunnels": Field(schema.list_of(_tunnel, min_items=1, max_items=64), required=True),
    },
    "mssql": {
        "host": Field(schema.host, required=True),
        "port": Field(schema.integer(1, 65535), default=1433),
        "local_port": Field(_local_port, default=None),
        "username": Field(schema.name(NAME_MAX), required=True),
        "database": Field(schema.name(NAME_MAX), default=None),
        "encryption": Field(schema.choice("required", "strict"), default="required"),
        "trust_server_certificate": Field(schema.boolean, default=False),
        "ca_pem": Field(_pem_certificates, default=None),
        "login_timeout": Field(login_timeout, default=None),
        "allowed_routes": Field(schema.list_of(_route, max_items=100), default=[]),
    },
    "k8s": {
        "url": Field(_https_url, required=True),
        "ca_pem": Field(_pem_certificates, required=True),
        "namespace": Field(_NAMESPACE, default=None),
        "local_port": Field(_local_port, default=None),
        "impersonate": Field(schema.boolean, default=False),
        "allowed_namespaces": Field(schema.list_of(_NAMESPACE, max_items=1000), default=[]),
        "read_only_access": Field(schema.boolean, default=False),
        "denied_resources": Field(
            schema.list_of(schema.string(1, 253, r"^[a-z0-9.-]+(/[a-z0-9-]+)?$"), max_items=1000),
            default=["secrets"],
        ),
        "allow_exec": Field(schema.boolean, default=True),
        "allow_port_forward": Field(schema.boolean, default=True),
        "login_timeout": Field(login_timeout, default=None),
    },
    "network": {
        "filters": Field(schema.list_of(_filter_rule, min_items=1, max_items=50), required=True),
    },
}


def _kind_of(node: yaml.Node, where: Where) -> str:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == "type":
                return schema.choice(*KINDS)(value_node, where.child("type"))
        raise where.error(node, "missing required key 'type'")
    raise where.error(node, "expected a mapping of keys to values")


def item_checker(source: str = "config") -> schema.Checker[Item]:
    """The checker of one item; C{source} is C{"config"} or C{"console"}."""

    def check(node: yaml.Node, where: Where) -> Item:
        kind = _kind_of(node, where)
        values = schema.mapping(node, where, {**_COMMON_FIELDS, **_KIND_FIELDS[kind]})
        return _build(kind, values, source, where, node)

    return check


def _build(kind: str, values: dict[str, Any], source: str, where: Where, node: yaml.Node) -> Item:
    common = {
        "name": values["name"],
        "type": kind,
        "local_address": values["local_address"],
        "jump_group": values["jump_group"],
        "tag": values["tag"] or None,
        "comments": values["comments"] or None,
        "jump_policy": values["jump_policy"],
        "session_policy": values["session_policy"],
        "login_timeout": values.get("login_timeout"),
        "source": source,
    }
    if kind == "tcp":
        tunnels: tuple[TunnelSpec, ...] = tuple(values["tunnels"])
        fixed = [t.local_port for t in tunnels if t.local_port is not None]
        if len(fixed) != len(set(fixed)):
            raise where.child("tunnels").error(node, "two tunnels use the same local port")
        return Item(host=values["host"], tunnels=tunnels, **common)
    if kind == "mssql":
        tunnel = TunnelSpec(values["local_port"], values["port"], "mssql")
        return Item(
            host=values["host"],
            port=values["port"],
            username=values["username"],
            database=values["database"],
            encryption=values["encryption"],
            trust_server_certificate=values["trust_server_certificate"],
            ca_pem=values["ca_pem"],
            allowed_routes=tuple(values["allowed_routes"]),
            tunnels=(tunnel,),
            **common,
        )
    if kind == "k8s":
        parts = urlsplit(values["url"])
        host = parts.hostname or ""
        tunnel = TunnelSpec(values["local_port"], parts.port or 443, "https")
        return Item(
            host=host,
            url=values["url"],
            ca_pem=values["ca_pem"],
            namespace=values["namespace"],
            impersonate=values["impersonate"],
            allowed_namespaces=tuple(values["allowed_namespaces"]),
            read_only_access=values["read_only_access"],
            denied_resources=tuple(values["denied_resources"]),
            allow_exec=values["allow_exec"],
            allow_port_forward=values["allow_port_forward"],
            tunnels=(tunnel,),
            **common,
        )
    return Item(filters=tuple(values["filters"]), **common)


def items(node: yaml.Node, where: Where) -> tuple[Item, ...]:
    """Check the C{items:} list of jumpoint.yaml: every item valid, names unique."""
    checked = schema.list_of(item_checker("config"), max_items=100_000)(node, where)
    seen: set[str] = set()
    for index, entry in enumerate(checked):
        if entry.name in seen:
            raise (
                where.child(index)
                .child("name")
                .error(node.value[index], f"duplicate item name {entry.name!r}")
            )
        seen.add(entry.name)
    return tuple(checked)


def item_from_data(
    data: dict[str, Any], source: str, label: str = "item", stored: bool = False
) -> Item:
    """Check an item given as plain data (a console request, a database row).

    C{stored}: a row of the state database, checked when it was stored; the
    text rules of names and comments are not applied again (L{Where.check_text}).
    """
    where = Where(label, "", show_line=False, check_text=not stored)
    return item_checker(source)(schema.from_data(data), where)
