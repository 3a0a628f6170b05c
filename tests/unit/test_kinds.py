"""Item kinds as plug-ins: every kind has its parts on both sides, and a new kind is modules only.

- the shared registry (L{shared.kinds}) and the console's (L{console.kinds})
  know the same kinds, in the same order, under the wire names;
- a kind made here (C{echo}, test-only: its shared module and its console
  modules are the classes below) is registered with one call per part (the
  shared one, the console's light part and its session part), and
  then the one schema checks its items, they are stored and sent as JSON,
  C{jump items} and C{jump item show} render them, a session of it shows
  its service in the bindings and the live view; unregistered, it is gone;
- outside the kinds packages, no console or shared module names a kind.
"""

from __future__ import annotations

import ast
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from console import kinds as console_kinds
from console.item_commands import create
from console.kinds import sessions as console_sessions
from console.kinds.base import ConsoleKind
from console.kinds.session_part import SessionContext, SessionKind, SessionPart
from console.output import print_item, print_items
from console.tunnels import TunnelSession
from console.view import PlainView
from shared import kinds as shared_kinds
from shared import schema
from shared.errors import ConfigError
from shared.items import KINDS, LOGIN_KINDS, Item, TunnelSpec, item_from_data
from shared.kinds.base import Kind
from shared.kinds.fields import local_port
from shared.schema import Field, Where

ROOT = Path(__file__).resolve().parents[2]
WIRE_NAMES = ("tcp", "mssql", "k8s", "network")


def test_both_sides_register_the_same_kinds_under_the_wire_names() -> None:
    shared_names = tuple(k.name for k in shared_kinds.registered())
    console_names = tuple(k.name for k in console_kinds.registered())
    session_names = tuple(k.name for k in console_sessions.registered())
    assert shared_names == console_names == session_names == WIRE_NAMES
    assert KINDS == WIRE_NAMES and LOGIN_KINDS == ("mssql", "k8s")
    for name in WIRE_NAMES:
        assert type(console_kinds.get(name)) is not ConsoleKind, f"{name}: no console part"
    own = [k.name for k in console_sessions.registered() if type(k) is not SessionKind]
    assert own == [*LOGIN_KINDS, "network"], (
        "a kind that logs in, or carries packets, has its own session part"
    )


def test_every_kind_with_a_create_command_is_under_jump_item_create() -> None:
    assert sorted(create.commands) == sorted(WIRE_NAMES)
    result = CliRunner().invoke(create, ["tcp", "--help"])
    assert result.exit_code == 0
    assert "--host" in result.output and "--tunnel" in result.output


# -- a kind made in the test: modules and one registration line per side ------


def _build(values: dict[str, Any], where: Where, node: yaml.Node) -> dict[str, Any]:
    if values["quiet"] and values["greeting"] is not None:
        raise where.child("greeting").error(node, "a quiet echo has no greeting")
    return {
        "host": values["host"],
        "port": values["port"],
        "tunnels": (TunnelSpec(values["local_port"], values["port"], "echo"),),
        "extra": (("greeting", values["greeting"]), ("quiet", values["quiet"])),
    }


def _values(item: Item) -> dict[str, Any]:
    local = item.tunnels[0].local_port if item.tunnels else None
    return {
        "host": item.host,
        "port": item.port,
        "local_port": "auto" if local is None else local,
        "greeting": item.extra_value("greeting"),
        "quiet": item.extra_value("quiet") or None,
    }


ECHO = Kind(
    "echo",
    {
        "host": Field(schema.host, required=True),
        "port": Field(schema.integer(1, 65535), default=7),
        "local_port": Field(local_port, default=None),
        "greeting": Field(schema.string(1, 64), default=None),
        "quiet": Field(schema.boolean, default=False),
    },
    _build,
    _values,
)


class EchoSession(SessionPart):
    """Plain bridges (the default acceptor), and a line for people."""

    def shell_lines(self) -> list[str]:
        return ["say something"]


class EchoKind(ConsoleKind):
    name = "echo"

    def targets(self, entry: dict[str, Any]) -> str:
        return f"{entry.get('local_port')}:{entry.get('port')} echo"

    def detail_lines(self, entry: dict[str, Any]) -> list[tuple[str, str]]:
        return [("greeting", str(entry.get("greeting") or "(none)"))]


class EchoSessionKind(SessionKind):
    def open_session(self, context: SessionContext) -> SessionPart:
        for tunnel in context.tunnels:
            tunnel.service = f"echo, greeting {context.spec.get('greeting') or 'none'}"
        return EchoSession()


@pytest.fixture
def echo() -> Iterator[None]:
    shared_kinds.register(ECHO)
    console_kinds.register(EchoKind())
    console_sessions.register(EchoSessionKind("echo"))
    try:
        yield
    finally:
        shared_kinds.unregister("echo")
        console_kinds.unregister("echo")
        console_sessions.unregister("echo")


SPEC = {"name": "echo-1", "type": "echo", "host": "echo.corp", "greeting": "hi"}


def test_an_unregistered_kind_is_not_an_item_type() -> None:
    with pytest.raises(ConfigError, match="type: must be one of: tcp, mssql, k8s, network$"):
        item_from_data(SPEC, "console")


def test_a_registered_kind_is_checked_by_the_one_schema(echo: None) -> None:
    item = item_from_data(SPEC, "console")
    assert (item.type, item.host, item.port, item.extra_value("greeting")) == (
        "echo",
        "echo.corp",
        7,
        "hi",
    )
    assert item.tunnels == (TunnelSpec(None, 7, "echo"),)
    # stored and read back unchanged, sent as JSON with the kind's values
    assert item_from_data(item.to_spec(), "console", stored=True) == item
    assert item.to_json() == {
        "name": "echo-1",
        "type": "echo",
        "host": "echo.corp",
        "port": 7,
        "local_port": "auto",
        "greeting": "hi",
        "local_address": "127.0.0.1",
        "jump_group": "default",
        "tag": None,
        "comments": None,
        "read_only": False,
        "source": "console",
    }
    with pytest.raises(ConfigError, match="missing required key 'host'"):
        item_from_data({"name": "e", "type": "echo"}, "console")
    with pytest.raises(
        ConfigError, match=r"url: unknown key \(known keys: comments, greeting, host"
    ):
        item_from_data({**SPEC, "url": "https://x"}, "console")
    with pytest.raises(ConfigError, match="greeting: a quiet echo has no greeting"):
        item_from_data({**SPEC, "quiet": True}, "console")
    with pytest.raises(ConfigError, match="must be one of: tcp, mssql, k8s, network, echo$"):
        item_from_data({**SPEC, "type": "ping"}, "console")


def test_a_registered_kind_renders_in_jump_items_and_item_show(
    echo: None, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = item_from_data(SPEC, "console").to_json()
    print_items([entry], False)
    _, row = capsys.readouterr().out.splitlines()
    assert row.split()[:4] == ["echo-1", "echo", "echo.corp", "auto:7"]
    print_item(entry, False)
    shown = capsys.readouterr().out.splitlines()
    assert "greeting:        hi" in shown and "port:            7" in shown


def test_a_kind_unknown_to_the_console_shows_no_targets(capsys: pytest.CaptureFixture[str]) -> None:
    print_items([{"name": "x", "type": "echo", "host": "h", "port": 7}], False)
    _, row = capsys.readouterr().out.splitlines()
    assert row.split()[:3] == ["x", "echo", "h"] and "7" not in row


def _result(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "session": "s1",
        "item": spec,
        "tunnels": [
            {
                "local_address": "127.0.0.9",
                "local_port": "auto",
                "remote_host": "echo.corp",
                "remote_port": 7,
            }
        ],
    }


def test_a_session_of_a_registered_kind_gets_its_console_part(echo: None) -> None:
    session = TunnelSession(None, "echo-1", _result(SPEC))  # type: ignore[arg-type]
    assert isinstance(session.part, EchoSession) and session.part.shell_lines() == ["say something"]
    (tunnel,) = session.tunnels
    tunnel.local_port = 7007
    out = io.StringIO()
    PlainView(out).ready("echo-1", "s1", [t.describe() for t in session.tunnels])
    assert out.getvalue() == "127.0.0.9:7007 -> echo.corp:7 (echo, greeting hi)\n"


def test_a_session_of_a_kind_the_console_does_not_know_is_plain_tcp() -> None:
    session = TunnelSession(None, "echo-1", _result(SPEC))  # type: ignore[arg-type]
    assert session.kind is console_sessions.PLAIN and type(session.part) is SessionPart
    assert session.tunnels[0].service is None
    assert session.part.remove() is None and session.part.environment() == {}


def test_a_kind_is_registered_once_per_side() -> None:
    with pytest.raises(ValueError, match="already registered"):
        shared_kinds.register(shared_kinds.kind_named("tcp"))
    with pytest.raises(ValueError, match="already registered"):
        console_kinds.register(console_kinds.BUILT_IN[0])
    with pytest.raises(ValueError, match="already registered"):
        console_sessions.register(console_sessions.BUILT_IN[0])


# -- outside the kinds packages nothing names a kind -----------------------------

NOT_A_KIND = {("shared.addresses", "tcp")}
"""A filter rule's protocol (tcp, udp, icmp), not the item kind."""


def _kind_literals(path: Path) -> set[str]:
    """The kind names a module uses as string values (docstrings and help text aside)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and node.value in WIRE_NAMES
        and id(node) not in docstrings
    }


def test_no_console_or_shared_module_outside_the_kinds_packages_names_a_kind() -> None:
    found = set()
    for package in ("console", "shared"):
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            if module.startswith(f"{package}.kinds"):
                continue
            found |= {(module, name) for name in _kind_literals(path)}
    assert found - NOT_A_KIND == set()


def test_the_literal_finder_finds_a_kind(tmp_path: Path) -> None:
    module = tmp_path / "branchy.py"
    module.write_text('"""Docs name tcp."""\n\n\ndef f(t):\n    return t == "k8s"\n')
    assert _kind_literals(module) == {"k8s"}
