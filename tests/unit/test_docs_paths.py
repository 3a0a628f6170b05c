"""Every source path and module name in README.md and docs/*.md names something that exists.

Modules move (issue 10 moved the channel stack to shared/protocol/, the codecs
to shared/codecs/, the daemon-only modules to jumpoint/); a guide that still
names the old place sends its reader to a file that is not there.  This test
scans the Markdown for

* repository paths such as ``shared/protocol/tls.py`` or ``shared/codecs/tds/``
  (not absolute paths such as ``/etc/jumpoint/jumpoint.yaml``), which must exist;
* dotted names such as ``shared.protocol.mux.Multiplexer`` (also as
  C{L{...}}, and the log namespaces, which Twisted derives from the module and
  class), which must import: the longest prefix that is a module of this
  repository, then attributes of it.

Not module names, and so skipped: the file names ``jumpoint.yaml``,
``jumpoint.json`` and ``jumpoint.log``, and the configuration keys of the
``jumpoint:`` section (``jumpoint.listen``, ...), read from jumpoint/config.py.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from jumpoint import config

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_TOP = r"(?:jumpoint|console|shared|tests|bench|scripts|contrib)"
PATH = re.compile(rf"(?<![\w./~$-]){_TOP}/(?:[\w-]+/)*(?:[\w-]+\.py\b|(?=[\s`)|,;:]))")
"""A repository path: a .py file, or a folder (ending in a slash)."""

DOTTED = re.compile(r"(?<![\w./~$-])(?:jumpoint|console|shared)(?:\.[A-Za-z_]\w*)+")
"""A dotted name under one of the three packages."""

FILE_NAMES = {"jumpoint.yaml", "jumpoint.json", "jumpoint.log"}
CONFIG_KEYS = {f"jumpoint.{key}" for key in config._JUMPOINT_FIELDS}


def _mentions(pattern: re.Pattern[str]) -> list[tuple[str, int, str]]:
    found = []
    for document in DOCUMENTS:
        for number, line in enumerate(document.read_text(encoding="utf-8").splitlines(), 1):
            for match in pattern.finditer(line):
                found.append((document.relative_to(ROOT).as_posix(), number, match.group(0)))
    return found


def _resolves(name: str) -> bool:
    """Whether C{name} is a module of this repository, or attributes of one."""
    parts = name.split(".")
    for cut in range(len(parts), 1, -1):
        relative = Path(*parts[:cut])
        if (ROOT / relative.with_suffix(".py")).is_file() or (
            ROOT / relative / "__init__.py"
        ).is_file():
            target: object = importlib.import_module(".".join(parts[:cut]))
            for attribute in parts[cut:]:
                if not hasattr(target, attribute):
                    return False
                target = getattr(target, attribute)
            return True
    return False


def test_the_scan_sees_paths_and_module_names() -> None:
    paths = {text for _, _, text in _mentions(PATH)}
    names = {text for _, _, text in _mentions(DOTTED)}
    assert "shared/protocol/frames.py" in paths
    assert "shared.protocol.mux.Multiplexer" in names
    assert not any(text.startswith("jumpoint/bin") for text in paths)  # /opt/jumpoint/bin/...


def test_every_path_in_the_docs_exists() -> None:
    missing = [
        f"{document}:{number}: {text}"
        for document, number, text in _mentions(PATH)
        if not (ROOT / text).exists()
    ]
    assert not missing, "paths that do not exist:\n" + "\n".join(missing)


def test_every_module_name_in_the_docs_imports() -> None:
    missing = [
        f"{document}:{number}: {text}"
        for document, number, text in _mentions(DOTTED)
        if text not in FILE_NAMES and text not in CONFIG_KEYS and not _resolves(text)
    ]
    assert not missing, "module names that do not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize(
    "text",
    ["jumpoint/pki.py", "shared/mux.py", "shared/tds/", "shared.config", "shared.mux.Multiplexer"],
)
def test_a_stale_name_is_caught(text: str) -> None:
    if text.endswith((".py", "/")):
        assert PATH.fullmatch(text) or PATH.match(text + " ")
        assert not (ROOT / text).exists()
    else:
        assert DOTTED.fullmatch(text) and not _resolves(text)
