"""Shared fixtures: PostgreSQL (the throwaway-server helper itself is tests/pg.py) and one torch
thread for tests that train."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pg
import pytest
import torch


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


@pytest.fixture
def one_torch_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """One torch thread for the test: tiny models train fastest so, more so on shared cores.

    OMP_NUM_THREADS=1 too, or `tuner.engine.device.configure_backend` would raise the thread count
    again. Used with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`.
    """
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
