"""Fixtures shared by every test package: a real PostgreSQL server (see tests/pg.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from pg import PgCluster


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    """One PostgreSQL server for the session (started on first use, per xdist worker)."""
    with PgCluster.create() as cluster:
        yield cluster


@pytest.fixture
def pg_dsn(pg: PgCluster) -> Iterator[str]:
    """The DSN of a fresh database on the session's server, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    pg.psql(f'CREATE DATABASE "{name}"')
    yield pg.dsn(name)
    pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
