"""Storage URL -> Optuna storage (SQLite, PostgreSQL or a journal file), ready for many workers.

Every worker process opens the same URL. For database URLs (`sqlite:///...`, `postgresql://...`)
the storage returned by `open_storage`:

- records a heartbeat for each running trial, so the trial of a worker that died (SIGKILL, lost
  node) is marked FAIL after `grace_period` seconds and re-queued for a surviving worker
  (`stale.py`; a run also waits for running trials before it calls a study finished);
- keeps at most two connections per process (main thread + heartbeat thread), so 32 workers stay
  well under PostgreSQL's default `max_connections = 100`;
- retries calls while the database is unreachable (restart, failover, a locked SQLite file) for
  up to `outage_timeout` seconds per outage, then raises StorageLostError (`retrying.py`);
- can be opened by any number of workers at once on an empty database (`opening.py`).

`journal:PATH` opens Optuna's append-only journal file instead; it has no heartbeats, so a trial
of a killed worker stays RUNNING there (SIGTERM/SIGINT are fine, see `tuner.runner.signals`).

Problems a user can fix (bad URL, unreachable server, wrong password, unwritable or damaged
file, an outage longer than the window) raise a one-line `TunerError` without the password.
Optuna's private parts are used in `_optuna.py` only.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages import BaseStorage

from tuner.errors import TunerError
from tuner.storage.opening import open_journal, open_rdb
from tuner.storage.retrying import RetryingStorage, StorageLostError, storage_lost
from tuner.storage.stale import settle_stale_trials, stale_poll_seconds
from tuner.storage.urls import (
    DEFAULT_RETRY_SECONDS,
    DEFAULT_STORAGE_URL,
    HEARTBEAT_INTERVAL,
    JOURNAL_PREFIX,
    RETRY_SECONDS_ENV,
    STORAGE_ENV,
    STORAGE_FILE_ENV,
    SUPPORTED,
    grace_period_for,
    mask_url,
    parse_url,
    resolve_retry_seconds,
    resolve_storage_url,
)

__all__ = [
    "DEFAULT_RETRY_SECONDS",
    "DEFAULT_STORAGE_URL",
    "JOURNAL_PREFIX",
    "RETRY_SECONDS_ENV",
    "STORAGE_ENV",
    "STORAGE_FILE_ENV",
    "SUPPORTED",
    "RetryingStorage",
    "StorageLostError",
    "check_local_workers",
    "load_stored_study",
    "mask_url",
    "open_storage",
    "resolve_retry_seconds",
    "resolve_storage_url",
    "settle_stale_trials",
    "stale_poll_seconds",
    "storage_lost",
]


def open_storage(
    url: str,
    *,
    heartbeat_interval: int = HEARTBEAT_INTERVAL,
    grace_period: int | None = None,
    max_retry: int = 3,
    outage_timeout: float | None = None,
    must_exist: bool = False,
) -> BaseStorage:
    """Open the Optuna storage behind `url` for a worker process.

    `heartbeat_interval`/`grace_period` (seconds) set how fast a dead worker's trial is failed
    (default grace: 90 s, or longer than the retry window plus a heartbeat interval and 10 s);
    `max_retry` how often such a trial is re-queued; `outage_timeout` how long calls are retried
    while the database is unreachable (default: $TUNER_STORAGE_RETRY_SECONDS, else 60 s). With
    `must_exist`, a SQLite or journal file that is not there yet is an error instead of being
    created (for verbs that only read a study). Raises TunerError for unusable URLs and databases.
    """
    retry_seconds = resolve_retry_seconds(outage_timeout)
    if grace_period is None:
        grace_period = grace_period_for(retry_seconds, heartbeat_interval)
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
        return open_journal(Path(journal))
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database:
            raise TunerError(
                f"{mask_url(url)!r} names no database file (it would live in memory and be lost); "
                f"use e.g. {DEFAULT_STORAGE_URL}"
            )
        if must_exist and parsed.database != ":memory:":
            _require_file(Path(parsed.database), url)
    rdb = open_rdb(
        parsed,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        max_retry=max_retry,
    )
    return RetryingStorage(rdb, outage_timeout=retry_seconds)


def check_local_workers(url: str, workers: int) -> None:
    """Raise TunerError if `workers` processes on this machine cannot share the storage `url`.

    SQLite (WAL mode, busy timeout, retries) and journal files take several local workers; an
    in-memory SQLite database cannot be shared between processes at all.
    """
    if workers <= 1 or url.startswith(JOURNAL_PREFIX):
        return
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise TunerError(
            f"{workers} workers cannot share the in-memory storage {mask_url(url)!r}; use a file "
            f"({DEFAULT_STORAGE_URL}), a journal file (journal:tuner.journal) or PostgreSQL"
        )


def _require_file(path: Path, url: str) -> None:
    if not path.is_file():
        raise TunerError(
            f"no study storage at {path} ({mask_url(url)}): nothing has been run there yet; "
            f"`tuner run` creates it, or pass --storage / set {STORAGE_ENV}"
        )


def load_stored_study(name: str, url: str) -> optuna.Study:
    """The study `name` in the storage at `url` (which must exist); a one-line TunerError
    listing the studies there when it is not one of them."""
    storage = open_storage(url, must_exist=True)
    names = optuna.get_all_study_names(storage)
    if name not in names:
        raise TunerError(
            f"no study {name!r} in {mask_url(url)}; studies there: {', '.join(names) or '(none)'}"
        )
    return optuna.load_study(study_name=name, storage=storage)
