"""The package's requirements (setup.cfg): what a user installs, and what only tests do.

hypothesis ships a pytest plugin that loads in every environment it is installed
in, so it belongs to the test extra only. Twisted is pinned to a tested range
(see the comment in setup.cfg and tests/unit/test_twisted_contract.py).
"""

from __future__ import annotations

import configparser
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def _requirements(section: str, key: str) -> dict[str, Requirement]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = [line.strip() for line in config[section][key].splitlines()]
    parsed = [Requirement(line) for line in lines if line and not line.startswith("#")]
    return {requirement.name.lower(): requirement for requirement in parsed}


def test_hypothesis_is_a_test_requirement_only() -> None:
    assert "hypothesis" not in _requirements("options", "install_requires")
    assert "hypothesis" in _requirements("options.extras_require", "test")


def test_no_test_tool_is_installed_for_users() -> None:
    tools = {"pytest", "pytest-timeout", "mypy", "ruff", "hypothesis"}
    assert not tools & set(_requirements("options", "install_requires"))


def test_twisted_is_pinned_to_a_range_that_contains_the_tested_version() -> None:
    twisted = _requirements("options", "install_requires")["twisted"]
    operators = {spec.operator for spec in twisted.specifier}
    assert ">=" in operators and "<" in operators, f"not a closed range: {twisted}"
    assert twisted.specifier.contains(metadata.version("twisted"))
