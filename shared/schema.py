"""Schema checks for YAML documents that keep the file, line and key of every error.

The document is composed with PyYAML into a node tree (which remembers line
numbers) and every value is read through a checker.  Unknown keys are an
error, as in tahoe-lafs's configuration.  A checker is a function
C{(node, where) -> value} that raises L{ConfigError}; L{Where} names the
file, the line and the dotted key path.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

from shared import text
from shared.errors import ConfigError

T = TypeVar("T")
Checker = Callable[[yaml.Node, "Where"], T]

MAX_DOCUMENT_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Where:
    """A position in a document: file, line and dotted key path."""

    filename: str
    path: str
    show_line: bool = True
    """C{False} for documents built from a request (their lines mean nothing to the user)."""
    check_text: bool = True
    """C{False} for rows read back from the state database: they were checked when
    stored, perhaps by an older Jumpoint, and stay readable (and deletable) even if
    today's text rules (L{name}, L{free_text}) or filter rules (IPv4 only, a range
    alone: L{shared.kinds.network}) would refuse them."""

    def child(self, key: str | int) -> Where:
        if isinstance(key, int):
            path = f"{self.path}[{key}]"
        else:
            path = f"{self.path}.{key}" if self.path else key
        return Where(self.filename, path, self.show_line, self.check_text)

    def error(self, node: yaml.Node | None, message: str) -> ConfigError:
        line = f":{node.start_mark.line + 1}" if node is not None and self.show_line else ""
        key = f" {self.path}:" if self.path else ""
        return ConfigError(f"{self.filename}{line}:{key} {message}")


def compose(text: str, filename: str) -> yaml.Node:
    """Parse YAML text into a node tree; syntax errors name the file and line."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise ConfigError(f"{filename}: the document is larger than 4 MiB")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{filename}{line}: invalid YAML: {error.problem}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{filename}: invalid YAML: {error}") from None
    if node is None:
        raise ConfigError(f"{filename}: the document is empty")
    return node


_CONSTRUCTOR = yaml.SafeLoader("")


def _scalar(node: yaml.Node, where: Where) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise where.error(node, "expected a single value")
    return _CONSTRUCTOR.construct_object(node)


@dataclass(frozen=True)
class Field:
    """One key of a mapping: its checker, and its default when it may be omitted."""

    check: Callable[[yaml.Node, Where], Any]
    required: bool = False
    default: Any = None


def mapping(node: yaml.Node, where: Where, fields: dict[str, Field]) -> dict[str, Any]:
    """Check a mapping against C{fields}: unknown keys and missing required keys are errors."""
    if not isinstance(node, yaml.MappingNode):
        raise where.error(node, "expected a mapping of keys to values")
    out: dict[str, Any] = {}
    seen: set[str] = set()
    for key_node, value_node in node.value:
        key = _scalar(key_node, where)
        if not isinstance(key, str):
            raise where.error(key_node, f"key {key!r} is not a string")
        if key in seen:
            raise where.child(key).error(key_node, "duplicate key")
        seen.add(key)
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise where.child(key).error(key_node, f"unknown key (known keys: {known})")
        out[key] = fields[key].check(value_node, where.child(key))
    for name, spec in fields.items():
        if name not in out:
            if spec.required:
                raise where.error(node, f"missing required key {name!r}")
            out[name] = spec.default
    return out


def dict_of(
    check: Checker[T], key_pattern: str = r"^[A-Za-z0-9_.-]{1,128}$"
) -> Checker[dict[str, T]]:
    """A mapping from names (matching C{key_pattern}) to values checked by C{check}."""
    pattern = re.compile(key_pattern)

    def checker(node: yaml.Node, where: Where) -> dict[str, T]:
        if not isinstance(node, yaml.MappingNode):
            raise where.error(node, "expected a mapping")
        out: dict[str, T] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node, where)
            if not isinstance(key, str) or not pattern.match(key):
                raise where.error(key_node, f"invalid name {key!r}")
            if key in out:
                raise where.child(key).error(key_node, "duplicate name")
            out[key] = check(value_node, where.child(key))
        return out

    return checker


def list_of(check: Checker[T], min_items: int = 0, max_items: int = 10_000) -> Checker[list[T]]:
    """A sequence of values each checked by C{check}."""

    def checker(node: yaml.Node, where: Where) -> list[T]:
        if not isinstance(node, yaml.SequenceNode):
            raise where.error(node, "expected a list")
        if not min_items <= len(node.value) <= max_items:
            raise where.error(node, f"expected {min_items} to {max_items} entries")
        return [check(item, where.child(index)) for index, item in enumerate(node.value)]

    return checker


def string(min_length: int = 1, max_length: int = 4096, pattern: str | None = None) -> Checker[str]:
    compiled = re.compile(pattern) if pattern else None

    def checker(node: yaml.Node, where: Where) -> str:
        value = _scalar(node, where)
        if isinstance(value, bool) or value is None:
            raise where.error(node, "expected a string")
        value = str(value)
        if not min_length <= len(value) <= max_length:
            raise where.error(node, f"must be {min_length} to {max_length} characters long")
        if compiled is not None and not compiled.match(value):
            raise where.error(node, f"{value!r} is not valid here")
        return value

    return checker


def name(max_length: int = text.NAME_MAX, pattern: str | None = None) -> Checker[str]:
    """A name (item, jump group, tag, policy ...): printable, NFKC (L{text.name_problem})."""
    inner = string(1, max_length, pattern)

    def checker(node: yaml.Node, where: Where) -> str:
        value = inner(node, where)
        problem = text.name_problem(value, max_length) if where.check_text else None
        if problem is not None:
            raise where.error(node, f"{value!r} {problem}")
        return value

    return checker


def optional_name(max_length: int = text.NAME_MAX) -> Checker[str | None]:
    """A name, or nothing (null or the empty string)."""
    inner = name(max_length)

    def checker(node: yaml.Node, where: Where) -> str | None:
        if _scalar(node, where) in (None, ""):
            return None
        return inner(node, where)

    return checker


def free_text(max_length: int = 4096) -> Checker[str | None]:
    """Free text, or nothing: one line without control characters (L{text.free_text_problem})."""
    inner = optional_string(max_length)

    def checker(node: yaml.Node, where: Where) -> str | None:
        value = inner(node, where)
        if value is not None and where.check_text:
            problem = text.free_text_problem(value, max_length)
            if problem is not None:
                raise where.error(node, problem)
        return value

    return checker


def optional_string(max_length: int = 4096) -> Checker[str | None]:
    inner = string(0, max_length)

    def checker(node: yaml.Node, where: Where) -> str | None:
        if _scalar(node, where) is None:
            return None
        return inner(node, where)

    return checker


def integer(minimum: int, maximum: int) -> Checker[int]:
    def checker(node: yaml.Node, where: Where) -> int:
        value = _scalar(node, where)
        if not isinstance(value, int) or isinstance(value, bool):
            raise where.error(node, "expected a whole number")
        if not minimum <= value <= maximum:
            raise where.error(node, f"must be between {minimum} and {maximum}")
        return value

    return checker


def boolean(node: yaml.Node, where: Where) -> bool:
    value = _scalar(node, where)
    if not isinstance(value, bool):
        raise where.error(node, "expected true or false")
    return value


def choice(*options: str) -> Checker[str]:
    def checker(node: yaml.Node, where: Where) -> str:
        value = _scalar(node, where)
        if value not in options:
            raise where.error(node, f"must be one of: {', '.join(options)}")
        return str(value)

    return checker


_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(text: str) -> float:
    """Parse C{90}, C{1.5}, C{30s}, C{5m}, C{1h30m} into seconds; raises L{ValueError}."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        match = _DURATION.match(text)
        if not text or match is None:
            raise ValueError(f"{text!r} is not a duration (examples: 30s, 5m, 1h30m)") from None
        hours, minutes, secs = match.groups()
        seconds = int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(secs or 0)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def format_duration(seconds: float) -> str:
    """The short form of a duration: C{90s}, C{5m}, C{2h}."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def duration(maximum: float = 366 * 86400) -> Checker[float]:
    def checker(node: yaml.Node, where: Where) -> float:
        value = _scalar(node, where)
        try:
            seconds = parse_duration(str(value))
        except ValueError as error:
            raise where.error(node, str(error)) from None
        if seconds > maximum:
            raise where.error(node, f"must be at most {maximum:g} seconds")
        return seconds

    return checker


_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?$"
)


def is_host(value: str) -> bool:
    """Whether C{value} is a DNS name or an IP address literal."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return bool(_HOSTNAME.match(value))
    return True


def host(node: yaml.Node, where: Where) -> str:
    value = string(1, 253)(node, where)
    if not is_host(value):
        raise where.error(node, f"{value!r} is not a host name or IP address")
    return value


def parse_host_port(text: str) -> tuple[str, int]:
    """Parse C{HOST:PORT} or C{[IPv6]:PORT}; raises L{ValueError}."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"{text!r} is not HOST:PORT")
        hostname, port_text = text[1:end], text[end + 2 :]
    else:
        hostname, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"{text!r} is not HOST:PORT")
    if not hostname or not is_host(hostname):
        raise ValueError(f"{hostname!r} is not a host name or IP address")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{port_text!r} is not a port number (1-65535)")
    return hostname, int(port_text)


def host_port(node: yaml.Node, where: Where) -> tuple[str, int]:
    value = string(3, 300)(node, where)
    try:
        return parse_host_port(value)
    except ValueError as error:
        raise where.error(node, str(error)) from None


def loopback_address(node: yaml.Node, where: Where) -> str:
    value = string(7, 15)(node, where)
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        raise where.error(node, f"{value!r} is not an IPv4 address") from None
    if address not in ipaddress.IPv4Network("127.0.0.0/8"):
        raise where.error(node, f"{value!r} is outside 127.0.0.0/8 (local addresses are loopback)")
    return value


def from_data(data: object) -> yaml.Node:
    """The node tree of plain data (a decoded JSON request), for the same checkers."""
    node = yaml.compose(yaml.safe_dump(data), Loader=yaml.SafeLoader)
    assert node is not None
    return node


def ipv4_address(node: yaml.Node, where: Where) -> str:
    value = string(7, 15)(node, where)
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise where.error(node, f"{value!r} is not an IPv4 address") from None
    return value


def node_line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1
