"""PostgreSQL fixtures (only those; the throwaway-server helper itself is tests/pg.py)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pg
import pytest


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[pg.PostgresServer]:
    """One throwaway PostgreSQL server for the whole test session."""
    if not pg.postgres_available():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl, postgres) are not on PATH")
    server = pg.start_postgres()
    yield server
    pg.stop_postgres(server)


@pytest.fixture
def postgres_url(postgres_server: pg.PostgresServer) -> str:
    """A SQLAlchemy URL (postgresql+psycopg://...) of a fresh, empty database."""
    return postgres_server.create_database(f"test_{secrets.token_hex(4)}")
