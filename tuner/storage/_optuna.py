"""The only places tuner touches Optuna's private parts; each has no public equivalent.

Every name here is checked against the installed Optuna by tests/test_storage.py
(`test_optuna_private_parts_are_still_there`), so an Optuna release that moves one fails that
test by name instead of failing workers mid-study:

- `cached_storage`: Optuna's in-memory cache of finished trials (`_CachedStorage`). Optuna adds
  it itself for a bare RDBStorage, but not for a wrapper such as tuner's RetryingStorage.
- `HeartbeatStorage`: Optuna enables heartbeats (and calls `_get_stale_trial_ids`, the method a
  heartbeat storage must provide) only for storages derived from `BaseHeartbeat`.
- `study_storage`: the storage object behind a Study (`Study._storage`).
- `never_beaten_trial_ids`: one SQL query against Optuna's `trials` and `trial_heartbeats` tables
  (there is no API for "running trials that never sent a heartbeat"). If Optuna's schema changes,
  it logs a warning and returns nothing: the stale check then does only what Optuna's public
  `fail_stale_trials` does, instead of failing every trial start.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING

import optuna
import optuna.storages._heartbeat
import sqlalchemy
import sqlalchemy.exc

if TYPE_CHECKING:
    from optuna.storages import BaseStorage, RDBStorage

logger = logging.getLogger(__name__)

# Base class of storages that send heartbeats; see the module docstring.
HeartbeatStorage: type = optuna.storages._heartbeat.BaseHeartbeat

# Optuna's schema: table and column names the orphan query relies on.
TRIALS_TABLE, HEARTBEATS_TABLE = "trials", "trial_heartbeats"
TRIALS_COLUMNS, HEARTBEATS_COLUMNS = ("trial_id", "study_id", "state"), ("trial_id",)
NEVER_BEATEN_SQL = (
    f"SELECT t.trial_id FROM {TRIALS_TABLE} t WHERE t.study_id = :study_id "
    f"AND t.state = 'RUNNING' AND NOT EXISTS "
    f"(SELECT 1 FROM {HEARTBEATS_TABLE} h WHERE h.trial_id = t.trial_id)"
)


def cached_storage(rdb: RDBStorage) -> BaseStorage:
    """`rdb` behind Optuna's cache of finished trials, as Optuna wraps a bare RDBStorage."""
    return optuna.storages._CachedStorage(rdb)


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage object a Study reads and writes through."""
    return study._storage


def never_beaten_trial_ids(
    engine: sqlalchemy.engine.Engine,
    study_id: int,
    is_transient: Callable[[BaseException], bool],
) -> list[int] | None:
    """Ids of the study's RUNNING trials that have no heartbeat row.

    Errors `is_transient` accepts (a lost connection) propagate, for the caller to retry; so
    does a damaged SQLite file, for the caller to say so. Any other database error means the
    query no longer fits Optuna's schema: it is logged and None is returned, and the caller
    should stop asking.
    """
    try:
        with engine.connect() as connection:
            rows = connection.execute(sqlalchemy.text(NEVER_BEATEN_SQL), {"study_id": study_id})
            return list(rows.scalars())
    except sqlalchemy.exc.DBAPIError as exc:
        if is_transient(exc) or type(exc.orig) is sqlite3.DatabaseError:  # "malformed", ...
            raise
        logger.warning(
            "cannot look for running trials without a heartbeat (%s); Optuna's database schema "
            "may have changed: such trials are left to Optuna's own stale check",
            " ".join(str(exc.orig).split())[:200],
        )
        return None
