"""Storage URL -> Optuna storage (SQLite, PostgreSQL or a journal file), ready for many workers.

Every worker process opens the same URL. For database URLs (`sqlite:///...`, `postgresql://...`)
the storage returned by `open_storage`:

- records a heartbeat for each running trial, so the trial of a worker that died (SIGKILL, lost
  node) is marked FAIL after `grace_period` seconds and re-queued for a surviving worker; a
  running trial that never sent a heartbeat (see `RetryingStorage._get_stale_trial_ids`) is
  failed `grace_period` seconds after a worker first notices it;
- keeps at most two connections per process (main thread + heartbeat thread), so 32 workers stay
  well under PostgreSQL's default `max_connections = 100`;
- retries a call that failed because the database was briefly unreachable (restart, failover,
  a locked SQLite file) for up to `outage_timeout` seconds before giving up with a TunerError.

`journal:PATH` opens Optuna's append-only journal file instead; it has no heartbeats, so a trial
of a killed worker stays RUNNING there (SIGTERM/SIGINT are fine, see `tuner.runner.signals`).

Problems a user can fix (bad URL, unreachable server, wrong password, unwritable file) raise a
one-line `TunerError` that never contains the password.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import time
import warnings
from collections.abc import Callable, Container, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import URL, make_url

from tuner.errors import TunerError

logger = logging.getLogger(__name__)

DEFAULT_STORAGE_URL = "sqlite:///tuner.db"  # a file in the working directory
STORAGE_ENV = "TUNER_STORAGE"
JOURNAL_PREFIX = "journal:"
SUPPORTED = "sqlite:///PATH, postgresql://USER:PASSWORD@HOST:PORT/DB or journal:PATH"

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

T = TypeVar("T")


def resolve_storage_url(cli_value: str | None) -> str:
    """The storage URL to use: the `--storage` flag, else $TUNER_STORAGE, else the default."""
    return cli_value or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE_URL


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, safe for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def open_storage(
    url: str,
    *,
    heartbeat_interval: int = 30,
    grace_period: int = 90,
    max_retry: int = 3,
    outage_timeout: float = 30.0,
    must_exist: bool = False,
) -> BaseStorage:
    """Open the Optuna storage behind `url` for a worker process.

    `heartbeat_interval`/`grace_period` (seconds) set how fast a dead worker's trial is failed;
    `max_retry` how often such a trial is re-queued; `outage_timeout` how long calls are retried
    while the database is unreachable. With `must_exist`, a SQLite or journal file that is not
    there yet is an error instead of being created (for verbs that only read a study).
    Raises TunerError for unusable URLs and databases.
    """
    if heartbeat_interval < 1 or grace_period <= heartbeat_interval:
        raise TunerError(
            f"grace_period ({grace_period} s) must be longer than heartbeat_interval "
            f"({heartbeat_interval} s), which must be at least 1 s"
        )
    if url.startswith(JOURNAL_PREFIX):
        journal = url[len(JOURNAL_PREFIX) :]
        if not journal:
            raise TunerError("journal storage needs a file path, e.g. journal:tuner.journal")
        if must_exist:
            _require_file(Path(journal), url)
        return _open_journal(Path(journal))
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database:
            raise TunerError(
                f"{url!r} names no database file (it would live in memory and be lost); "
                f"use e.g. {DEFAULT_STORAGE_URL}"
            )
        if must_exist and parsed.database != ":memory:":
            _require_file(Path(parsed.database), url)
    backend = parsed.get_backend_name()
    if backend not in _RDB_OPENERS:
        raise TunerError(
            f"unsupported storage URL scheme {parsed.drivername!r} in {mask_url(url)}; "
            f"use {SUPPORTED}"
        )
    parsed, engine_kwargs = _RDB_OPENERS[backend](parsed)
    with warnings.catch_warnings():
        # Heartbeats and the retry callback are marked experimental; tuner relies on them anyway.
        warnings.simplefilter("ignore", ExperimentalWarning)
        retry_callback = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        try:
            rdb = RDBStorage(
                parsed.render_as_string(hide_password=False),
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=retry_callback,
            )
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise _open_error(parsed, exc) from None
        except RuntimeError as exc:  # table schema written by an incompatible Optuna version
            raise TunerError(f"storage {mask_url(url)}: {exc}") from None
        except ImportError:
            raise TunerError(
                f"storage {mask_url(url)}: the database driver for {parsed.drivername!r} is "
                f"not installed; for PostgreSQL use postgresql://... (psycopg 3 is included)"
            ) from None
    return RetryingStorage(rdb, outage_timeout=outage_timeout)


def check_local_workers(url: str, workers: int) -> None:
    """Raise TunerError if `workers` processes on this machine cannot share the storage `url`.

    SQLite (WAL mode, busy timeout, retries) and journal files take several local workers; an
    in-memory SQLite database cannot be shared between processes at all.
    """
    if workers <= 1 or url.startswith(JOURNAL_PREFIX):
        return
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise TunerError(
            f"{workers} workers cannot share the in-memory storage {url!r}; use a file "
            f"({DEFAULT_STORAGE_URL}), a journal file (journal:tuner.journal) or PostgreSQL"
        )


def _require_file(path: Path, url: str) -> None:
    if not path.is_file():
        raise TunerError(
            f"no study storage at {path} ({mask_url(url)}): nothing has been run there yet; "
            f"`tuner run` creates it, or pass --storage / set {STORAGE_ENV}"
        )


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except sqlalchemy.exc.ArgumentError:
        hint = f"; did you mean sqlite:///{url}?" if url.endswith(".db") else ""
        raise TunerError(f"not a storage URL: {mask_url(url)!r}; use {SUPPORTED}{hint}") from None


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


_RDB_OPENERS: dict[str, Callable[[URL], tuple[URL, dict[str, Any]]]] = {
    "postgresql": _prepare_postgres,
    "postgres": _prepare_postgres,  # the spelling Heroku and others hand out
    "sqlite": _prepare_sqlite,
}


def _open_journal(path: Path) -> BaseStorage:
    if not str(path):
        raise TunerError("journal storage needs a file path, e.g. journal:tuner.journal")
    if not path.parent.is_dir():
        raise TunerError(f"journal storage {path}: directory {path.parent} does not exist")
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise TunerError(f"journal storage {path}: cannot write: {exc.strerror}") from None
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _open_error(url: URL, exc: Exception) -> TunerError:
    """One line saying why the database could not be opened, without the password."""
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    detail = lines[0] if lines else type(orig).__name__
    detail = detail.split(" failed: ")[-1]  # psycopg: 'connection to server at ... failed: X'
    if url.get_backend_name() == "sqlite":
        return TunerError(f"SQLite storage {url.database}: {detail}")
    where = f"PostgreSQL server at {url.host or 'localhost'}:{url.port or 5432}"
    text = detail.lower()
    if "password authentication failed" in text or "no password supplied" in text:
        return TunerError(
            f"{where} rejected user {url.username!r}: wrong user name or password "
            f"(storage {mask_url(str(url))})"
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
    return TunerError(f"cannot open storage {mask_url(str(url))}: {detail}")


def _is_transient(exc: BaseException) -> bool:
    """True for errors that a database restart or a busy SQLite file causes and a retry fixes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            if isinstance(current.orig, sqlite3.Error):
                # SQLite's other OperationalErrors (no such table, ...) do not go away.
                return any(word in str(current.orig) for word in ("locked", "busy"))
            return True
        if isinstance(current, sqlalchemy.exc.TimeoutError):  # no pooled connection came free
            return True
        current = current.__cause__ or current.__context__
    return False


# RUNNING trials of a study that have no heartbeat row. Optuna's stale check skips them, so such
# a trial would stay RUNNING forever. The table and column names are Optuna's database schema.
_NEVER_BEATEN = sqlalchemy.text(
    "SELECT t.trial_id FROM trials t WHERE t.study_id = :study_id AND t.state = 'RUNNING' "
    "AND NOT EXISTS (SELECT 1 FROM trial_heartbeats h WHERE h.trial_id = t.trial_id)"
)


class RetryingStorage(BaseStorage, BaseHeartbeat):
    """Wraps an RDBStorage so that a brief outage delays calls instead of failing them.

    Each call is retried with exponential backoff while it fails with a connection error (or a
    locked SQLite file), for up to `outage_timeout` seconds; then it raises TunerError.
    Heartbeats are never raised: a missed heartbeat is logged and the next one tries again.
    """

    def __init__(
        self,
        rdb: RDBStorage,
        *,
        outage_timeout: float = 30.0,
        first_delay: float = 0.25,
        max_delay: float = 4.0,
    ) -> None:
        self.rdb = rdb
        # Optuna's in-memory cache of finished trials; Optuna adds it for a bare RDBStorage
        # itself, but not for a wrapper like this one.
        self.backend = optuna.storages._CachedStorage(rdb)
        self.outage_timeout = outage_timeout
        self.first_delay = first_delay
        self.max_delay = max_delay

    def _retry(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        deadline = time.monotonic() + self.outage_timeout
        delay = self.first_delay
        failed_at: float | None = None
        while True:
            try:
                result = call(*args, **kwargs)
            except Exception as exc:
                if not _is_transient(exc):
                    raise
                now = time.monotonic()
                if failed_at is None:
                    failed_at = now
                    logger.warning(
                        "storage unavailable (%s); retrying for up to %.0f s",
                        _one_line(exc),
                        self.outage_timeout,
                    )
                if now + delay > deadline:
                    raise TunerError(
                        f"lost the storage for {now - failed_at:.0f} s: {_one_line(exc)}"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, self.max_delay)
                continue
            if failed_at is not None:
                logger.warning("storage reachable again after %.1f s", time.monotonic() - failed_at)
            return result

    # --- studies ---
    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        return self._retry(self.backend.create_new_study, directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self._retry(self.backend.delete_study, study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._retry(self.backend.set_study_user_attr, study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._retry(self.backend.set_study_system_attr, study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._retry(self.backend.get_study_id_from_name, study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._retry(self.backend.get_study_name_from_id, study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._retry(self.backend.get_study_directions, study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._retry(self.backend.get_study_user_attrs, study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._retry(self.backend.get_study_system_attrs, study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._retry(self.backend.get_all_studies)

    # --- trials ---
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        # If the connection drops after the database committed the trial, the retry (here or in
        # Optuna's own retry loop) creates a second one; `_get_stale_trial_ids` fails the first.
        # Deduplicating with a token per creation would miss Optuna's loop and dead workers.
        return self._retry(self.backend.create_new_trial, study_id, template_trial)

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: optuna.distributions.BaseDistribution,
    ) -> None:
        self._retry(
            self.backend.set_trial_param, trial_id, param_name, param_value_internal, distribution
        )

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._retry(
            self.backend.get_trial_id_from_study_id_trial_number, study_id, trial_number
        )

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        attempts = 0

        def attempt() -> bool:
            nonlocal attempts
            attempts += 1
            try:
                return self.backend.set_trial_state_values(trial_id, state, values)
            except UpdateFinishedTrialError:
                # The connection may have dropped after an earlier attempt committed: a retried
                # COMPLETE/PRUNED that finds its own result stored has succeeded.
                stored = attempts > 1 and state in _OWNER_STATES
                if stored and self.backend.get_trial(trial_id).state == state:
                    return True
                raise

        return self._retry(attempt)

    def set_trial_intermediate_value(self, trial_id: int, step: int, value: float) -> None:
        self._retry(self.backend.set_trial_intermediate_value, trial_id, step, value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._retry(self.backend.set_trial_user_attr, trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._retry(self.backend.set_trial_system_attr, trial_id, key, value)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._retry(self.backend.get_trial, trial_id)

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        return self._retry(self.backend.get_all_trials, study_id, deepcopy, states)

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self._retry(self.backend.get_best_trial, study_id)

    def remove_session(self) -> None:
        self.backend.remove_session()

    # --- heartbeats ---
    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self._retry(self.backend.record_heartbeat, trial_id)
        except TunerError as exc:
            logger.warning("missed a heartbeat of trial id %d: %s", trial_id, exc)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Trials whose heartbeat is older than the grace period; Optuna fails and re-queues them.

        First, each RUNNING trial without a heartbeat row gets one, dated now. A worker's trial
        gets its row a moment after it is created (the heartbeat thread starts right after
        `study.ask`), so a trial without one is either in that moment or has no owner: the
        first of two created because the connection dropped after the database committed it,
        or the trial of a worker that died or failed inside `study.ask`. Optuna's check skips
        trials without a row, so those would stay RUNNING forever; with the row they are failed
        `grace_period` seconds from now unless an owner starts beating. Only the database's
        clock is involved, as in Optuna's own check.

        A failed orphan is re-queued like any stale trial. It never trained and has no
        parameters, so its retry is a fresh trial, not a repeat of a trained configuration
        (and failed trials do not count towards the study's total).
        """
        for trial_id in self._retry(self._never_beaten, study_id):
            logger.debug("trial id %d is running without a heartbeat; recording one", trial_id)
            self.record_heartbeat(trial_id)
        return self._retry(self.backend._get_stale_trial_ids, study_id)

    def _never_beaten(self, study_id: int) -> list[int]:
        with self.rdb.engine.connect() as connection:
            return list(connection.execute(_NEVER_BEATEN, {"study_id": study_id}).scalars())

    def get_heartbeat_interval(self) -> int | None:
        return self.backend.get_heartbeat_interval()

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.study.Study, FrozenTrial], None] | None:
        return self.backend.get_heartbeat_stale_trial_callback()


_OWNER_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def _one_line(exc: BaseException) -> str:
    """The driver's message (not SQLAlchemy's statement dump) of the first database error."""
    current: BaseException | None = exc
    while current is not None and not isinstance(current, sqlalchemy.exc.DBAPIError):
        current = current.__cause__ or current.__context__
    cause = current.orig if current is not None else exc
    text = " ".join(str(cause).split())
    return text[:200] or type(cause).__name__
