"""Fixtures for end-to-end tests: a Deployment per test, stopped afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Deployment


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    """A throwaway Jumpoint (not started); tests add items, then call create() and serve()."""
    created = Deployment(tmp_path)
    try:
        yield created
    finally:
        created.stop_and_show()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.e2e)
