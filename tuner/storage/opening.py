"""Open the database behind a storage URL: engine settings, SQLite checks, one-line errors, and a
lock so that any number of workers may create Optuna's tables in an empty database at once."""

from __future__ import annotations

import os
import sqlite3
import warnings
import zlib
from collections.abc import Callable, Container, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from tuner.errors import TunerError
from tuner.storage.stale import queue_order
from tuner.storage.urls import DEFAULT_STORAGE_URL, SUPPORTED, mask_url

try:
    import fcntl
except ImportError:  # not on Windows: SQLite starters there are not serialised
    fcntl = None  # type: ignore[assignment]

# Two connections per worker process: the main thread and the heartbeat thread each hold one at
# most, and only while a query runs. pool_pre_ping replaces connections a server restart killed.
POSTGRES_ENGINE: dict[str, Any] = {
    "pool_size": 1,
    "max_overflow": 1,
    "pool_pre_ping": True,
    "connect_args": {
        "connect_timeout": 10,
        "application_name": "tuner",
        # Notice a dead server or network path on idle connections within about a minute.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    },
}
# sqlite3's `timeout` is its busy timeout: wait this long for another process's write lock.
SQLITE_ENGINE: dict[str, Any] = {"connect_args": {"timeout": 30}}

# PostgreSQL advisory lock key (scoped to the database) held while Optuna creates its tables.
_SCHEMA_LOCK_KEY = zlib.crc32(b"tuner: create optuna schema")


def open_rdb(url: URL, *, heartbeat_interval: int, grace_period: int, max_retry: int) -> RDBStorage:
    """Optuna's RDBStorage for a parsed sqlite or postgresql URL, with heartbeats and retries of
    the trials of dead workers. Raises a one-line TunerError for unusable URLs and databases."""
    backend = url.get_backend_name()
    if backend not in _PREPARE:
        raise TunerError(
            f"unsupported storage URL scheme {url.drivername!r} in {_masked(url)}; use {SUPPORTED}"
        )
    with warnings.catch_warnings():
        # Heartbeats and the retry callback are marked experimental; tuner relies on them anyway.
        warnings.simplefilter("ignore", ExperimentalWarning)
        try:
            with _schema_lock(url):
                url, engine_kwargs = _PREPARE[backend](url)
                return RDBStorage(
                    url.render_as_string(hide_password=False),
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry),
                )
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            raise open_error(url, exc) from None
        except RuntimeError as exc:  # table schema written by an incompatible Optuna version
            raise TunerError(f"storage {_masked(url)}: {exc}") from None
        except ImportError:
            raise TunerError(
                f"storage {_masked(url)}: the database driver for {url.drivername!r} is not "
                f"installed; for PostgreSQL use postgresql://... (psycopg 3 is included)"
            ) from None


def open_journal(path: Path) -> BaseStorage:
    """Optuna's journal-file storage at `path` (created if missing)."""
    if not str(path):
        raise TunerError("journal storage needs a file path, e.g. journal:tuner.journal")
    if not path.parent.is_dir():
        raise TunerError(f"journal storage {path}: directory {path.parent} does not exist")
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise TunerError(f"journal storage {path}: cannot write: {exc.strerror}") from None
    return _Journal(JournalFileBackend(str(path)))


class _Journal(optuna.storages.JournalStorage):
    """Optuna's journal storage, its queue listed retries first (`queue_order`)."""

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        return queue_order(super().get_all_trials(study_id, deepcopy, states), states)


def _masked(url: URL) -> str:
    return mask_url(url)  # a password in the query string (`?password=`) too


def _prepare_postgres(url: URL) -> tuple[URL, dict[str, Any]]:
    # Plain postgresql:// would make SQLAlchemy look for psycopg2; tuner ships psycopg 3.
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url, POSTGRES_ENGINE


def _prepare_sqlite(url: URL) -> tuple[URL, dict[str, Any]]:
    """Check the file can be written and switch it to WAL, so readers never block the writer."""
    database = url.database
    if not database or database == ":memory:" or url.query.get("uri"):
        return url, SQLITE_ENGINE
    path = Path(database)
    where = f"SQLite storage {path}"
    # SQLite silently opens an unwritable file read-only; say so now rather than mid-study.
    if not path.parent.is_dir():
        raise TunerError(f"{where}: directory {path.parent} does not exist")
    if path.exists() and not os.access(path, os.W_OK):
        raise TunerError(f"{where}: the file is read-only")
    if not os.access(path.parent, os.W_OK):
        raise TunerError(
            f"{where}: directory {path.parent} is read-only (SQLite writes the database and its "
            f"-wal/-shm files there)"
        )
    try:
        with closing(sqlite3.connect(path, timeout=30)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the file
    except sqlite3.DatabaseError as exc:
        raise TunerError(f"{where}: cannot use the file ({exc})") from None
    return url, SQLITE_ENGINE


_PREPARE: dict[str, Callable[[URL], tuple[URL, dict[str, Any]]]] = {
    "postgresql": _prepare_postgres,
    "postgres": _prepare_postgres,  # the spelling Heroku and others hand out
    "sqlite": _prepare_sqlite,
}


@contextmanager
def _schema_lock(url: URL) -> Iterator[None]:
    """Let one process at a time create Optuna's tables (and stamp their version).

    Optuna creates missing tables on open; two processes doing it at once on an empty database
    collide (PostgreSQL: duplicate key in pg_type; SQLite: table already exists, or "database
    is locked" while one switches the file to WAL). A PostgreSQL advisory lock, or an flock on
    the SQLite file's directory, makes them take turns; opening an existing database holds the
    lock for a few queries only.
    """
    if url.get_backend_name() == "postgresql":
        url, engine_kwargs = _prepare_postgres(url)
        connect_args = {"connect_args": engine_kwargs["connect_args"]}
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, **connect_args)
        try:
            # Closing the connection (NullPool: really closing it) releases the lock.
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text(f"SELECT pg_advisory_lock({_SCHEMA_LOCK_KEY})"))
                yield
        finally:
            engine.dispose()
        return
    database = url.database
    in_memory = not database or database == ":memory:" or url.query.get("uri")
    if fcntl is None or in_memory or not Path(database).parent.is_dir():
        yield  # nothing to share, or _prepare_sqlite is about to say what is wrong
        return
    # The directory, not the database file: closing any descriptor of the database file would
    # drop SQLite's own POSIX locks on it in this process.
    descriptor = os.open(Path(database).parent, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the flock


def open_error(url: URL, exc: Exception) -> TunerError:
    """One line saying why the database could not be opened, without the password."""
    orig = getattr(exc, "orig", None) or exc.__cause__ or exc
    orig = getattr(orig, "orig", None) or orig  # StorageInternalError -> SQLAlchemy -> driver
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    detail = lines[0] if lines else type(orig).__name__
    if "connection to server" in detail:  # psycopg: 'connection to server at ... failed: X'
        detail = detail.split(" failed: ")[-1]
    if url.get_backend_name() == "sqlite":
        if type(orig) is sqlite3.DatabaseError:  # "database disk image is malformed", ...
            return damaged_sqlite_error(url.database or "", detail)
        return TunerError(f"SQLite storage {url.database}: {detail}")
    where = f"PostgreSQL server at {url.host or 'localhost'}:{url.port or 5432}"
    text = detail.lower()
    if "password authentication failed" in text or "no password supplied" in text:
        return TunerError(
            f"{where} rejected user {url.username!r}: wrong user name or password "
            f"(storage {_masked(url)})"
        )
    if "does not exist" in text:
        return TunerError(f"{where}: {detail.removeprefix('FATAL:').strip()}")
    if "translate host name" in text or "name or service not known" in text:
        return TunerError(f"{where}: unknown host name {url.host!r}")
    if isinstance(exc, sqlalchemy.exc.OperationalError):
        return TunerError(
            f"{where} is not reachable ({detail}); check that the server is running and that "
            f"host and port in the storage URL are right"
        )
    return TunerError(f"cannot open storage {_masked(url)}: {detail}")


def damaged_sqlite_error(path: str, detail: str) -> TunerError:
    """The one line for a SQLite file that SQLite itself reports as damaged."""
    return TunerError(
        f"SQLite storage {path}: the file is damaged ({detail}); restore it from a backup, or "
        f"start afresh with another --storage (e.g. {DEFAULT_STORAGE_URL})"
    )
