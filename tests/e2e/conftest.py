"""Fixtures for end-to-end tests: a Deployment per test, stopped afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BACKEND_ENV
from tests.e2e.harness import Deployment


def backend_dsn(request: pytest.FixtureRequest) -> str | None:
    """A fresh PostgreSQL database when the run's backend is postgresql, else None (SQLite)."""
    backend = os.environ.get(BACKEND_ENV, "sqlite")
    if backend not in ("sqlite", "postgresql"):
        raise pytest.UsageError(f"{BACKEND_ENV}={backend!r}: expected sqlite or postgresql")
    if backend == "sqlite":
        return None
    return str(request.getfixturevalue("postgres_dsn"))


@pytest.fixture
def deployment(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Deployment]:
    """A throwaway Jumpoint (not started); tests add items, then call create() and serve().

    Its state is in SQLite, or in PostgreSQL when C{JUMPOINT_TEST_BACKEND=postgresql}.
    """
    created = Deployment(tmp_path, postgres_dsn=backend_dsn(request))
    try:
        yield created
    finally:
        created.stop_and_show()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.e2e)
