"""The folder tree tells the architecture: these tests fail the build when it stops doing so.

Read from the source with C{ast} (nothing is imported):
  - no import cycle among the project's modules;
  - no project import inside a function, except in the launchers, which import a
    command's module when the command runs (start-up time), never to dodge a cycle;
  - C{shared/} imports neither C{jumpoint} nor C{console}, and every module in
    it is used by both sides (a module one side alone uses lives on that side);
  - no two modules share a file name in different roles (a name shared by the
    two sides' versions of one thing, such as C{cli.py}, or by the sides' parts
    of one kind in their C{kinds} packages, is allowed);
  - every module starts with a docstring saying its job;
  - nothing derives from C{TcpBridge}: a kind changes what a bridge does with a
    handler (L{shared.bridge.BridgeHandler}), composed, never by subclassing.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("jumpoint", "console", "shared")
LAUNCHERS = {"jumpoint.cli", "console.cli", "console.remote", "jumpoint.windows_service"}
"""Modules allowed to import project modules inside functions (a command's code, lazily).

C{console.remote} imports the channel stack when a command first sends a
request, so that building the CLI (C{jump --help}) does not load TLS.
"""
SIDE_PAIRS = {"cli.py", "channel.py", "enroll.py"}
"""File names the two sides (or a side and the wire) give to their halves of one thing."""
KIND_PACKAGES = {"shared.kinds", "console.kinds", "jumpoint.kinds"}
"""Each side's part of a kind is a module named after the kind in that side's C{kinds} package."""


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imported(node: ast.Import | ast.ImportFrom, module: str) -> set[str]:
    """The project modules one import statement names (C{from a import b}: a.b if a module)."""
    names: set[str] = set()
    if isinstance(node, ast.Import):
        candidates = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".")[: -node.level]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        candidates = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
    for candidate in candidates:
        while candidate and candidate not in MODULES:
            candidate = candidate.rpartition(".")[0]
        if candidate and candidate != module:
            names.add(candidate)
    return names


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Module-level imports, and imports made inside functions, per module."""
    top: dict[str, set[str]] = defaultdict(set)
    local: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        inside: set[int] = set()
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(function):
                    if isinstance(node, ast.Import | ast.ImportFrom):
                        inside.add(id(node))
                        local[module] |= _imported(node, module)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in inside:
                if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                    continue
                top[module] |= _imported(node, module)
    return top, local


TOP, LOCAL = _graph()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in MODULES:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _reachable(start: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        module = todo.pop()
        for child in TOP[module] | LOCAL[module]:
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    names = list(MODULES)[:3]
    graph[names[0]] = {names[1]}
    graph[names[1]] = {names[2]}
    graph[names[2]] = {names[0]}
    assert _cycles(graph) == [sorted(names)]


def test_there_is_no_import_cycle() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for module in MODULES:
        graph[module] = TOP[module] | LOCAL[module]
    assert _cycles(graph) == []


def test_no_project_import_inside_a_function_outside_the_launchers() -> None:
    offenders = {m: sorted(LOCAL[m]) for m in MODULES if LOCAL[m] and m not in LAUNCHERS}
    assert offenders == {}


def test_shared_imports_neither_side() -> None:
    offenders = {
        module: sorted(d for d in TOP[module] | LOCAL[module] if not d.startswith("shared"))
        for module in MODULES
        if module.startswith("shared")
    }
    assert {m: d for m, d in offenders.items() if d} == {}


def test_every_shared_module_is_used_by_both_sides() -> None:
    shared = {m for m in MODULES if m.startswith("shared") and MODULES[m].name != "__init__.py"}
    by_jumpoint = _reachable([m for m in MODULES if m.startswith("jumpoint")])
    by_console = _reachable([m for m in MODULES if m.startswith("console")])
    assert sorted(shared - by_jumpoint) == [], "shared modules the Jumpoint never uses"
    assert sorted(shared - by_console) == [], "shared modules the console never uses"


def test_no_two_modules_share_a_name_in_different_roles() -> None:
    by_name: dict[str, list[str]] = defaultdict(list)
    for module, path in MODULES.items():
        if path.name != "__init__.py":
            by_name[path.name].append(module)
    repeated = {
        n: m
        for n, m in by_name.items()
        if len(m) > 1
        and n not in SIDE_PAIRS
        and not all(module.rpartition(".")[0] in KIND_PACKAGES for module in m)
    }
    assert repeated == {}


def test_every_module_starts_with_a_docstring() -> None:
    missing = [
        module
        for module, path in MODULES.items()
        if not ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert missing == []


def test_nothing_subclasses_the_bridge() -> None:
    subclasses = [
        f"{module}.{node.name}"
        for module, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef)
        and any(
            (isinstance(base, ast.Name) and base.id == "TcpBridge")
            or (isinstance(base, ast.Attribute) and base.attr == "TcpBridge")
            for base in node.bases
        )
    ]
    assert subclasses == []
