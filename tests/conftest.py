"""Shared test configuration."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from jumpoint.state import StateDatabase
from tests.postgres_server import PostgresServer

# Property tests drive Twisted code through a fake clock; their run time depends
# on the machine, so the "ci" profile (the default) has no per-example deadline.
settings.register_profile("ci", deadline=None)
# scripts/fuzz.sh: the fuzz targets (tests/fuzz) fed FUZZ_EXAMPLES inputs each.
settings.register_profile(
    "fuzz", deadline=None, max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200000"))
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# -- PostgreSQL (the state backend's tests): one throwaway server per test run ---------


BACKEND_ENV = "JUMPOINT_TEST_BACKEND"
"""sqlite (the default) or postgresql: the backend the e2e Deployments run on."""


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster in a temporary folder for the whole run (fails if not installed)."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """The DSN of a new, empty database on the run's server (one per test)."""
    return postgres_server.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def state_backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn (the store tests run on both)."""
    return str(request.param)


@pytest.fixture
def open_state(
    state_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[], StateDatabase]]:
    """Opens a connection to one fresh state database of each backend (migrated)."""
    opened: list[StateDatabase] = []
    if state_backend == "postgresql":
        dsn = request.getfixturevalue("postgres_dsn")

        def connect() -> StateDatabase:
            opened.append(StateDatabase.postgres(dsn, "the test database", migrate=True))
            return opened[-1]
    else:

        def connect() -> StateDatabase:
            opened.append(StateDatabase(tmp_path / "state.db"))
            return opened[-1]

    yield connect
    for database in opened:
        database.close()
