"""RetryingStorage: an Optuna RDBStorage that rides out database outages up to a fixed window.

Each call that fails with a connection error (or a locked SQLite file) is retried with
exponential backoff. The window is one clock per worker process, shared by all its calls and
threads: it starts at the first failure and is reset by the first success, so an outage longer
than the window ends the worker `retry_seconds` after it began, however many calls were waiting
(each call with its own clock added them up: 93-117 s for a 30 s window). Then every call raises
StorageLostError, a TunerError, and the trial that was running is left to the stale check of
the workers that come back.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Container, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from tuner.errors import TunerError
from tuner.storage import _optuna
from tuner.storage.opening import damaged_sqlite_error
from tuner.storage.stale import queue_order
from tuner.storage.urls import mask_url

if TYPE_CHECKING:
    from optuna.storages import RDBStorage
    from optuna.study import StudyDirection
    from optuna.study._frozen import FrozenStudy
    from optuna.trial import FrozenTrial

logger = logging.getLogger(__name__)

T = TypeVar("T")

# A retried COMPLETE/PRUNED that finds its own result stored has succeeded (see below).
_OWNER_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


class StorageLostError(TunerError):
    """The database stayed unreachable for longer than the retry window."""


def storage_lost(exc: BaseException) -> StorageLostError | None:
    """The StorageLostError that `exc` is or was raised while handling, if any.

    Optuna's trial loop, failing to record a trial's end, can raise an error of its own
    (UnboundLocalError in optuna 5.0) whose context holds the StorageLostError.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, StorageLostError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class _Outage:
    """When this process's storage calls began failing; one clock for all calls and threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: float | None = None

    def failed(self, now: float) -> tuple[float, bool]:
        """Seconds since the outage began, and whether this call is the first to notice it."""
        with self._lock:
            first = self._since is None
            if first:
                self._since = now
            return now - self._since, first  # type: ignore[operator]

    def succeeded(self) -> float | None:
        """End the outage; its length in seconds, or None if there was none."""
        with self._lock:
            since, self._since = self._since, None
        return None if since is None else time.monotonic() - since


class RetryingStorage(BaseStorage, _optuna.HeartbeatStorage):
    """Wraps an RDBStorage so that a brief outage delays calls instead of failing them.

    Calls are retried while they fail with a connection error (or a locked SQLite file), until
    the database has been unreachable for `outage_timeout` seconds; then StorageLostError.
    Heartbeats are never raised: a missed heartbeat is logged and the next one tries again.
    The queue (WAITING trials) is listed retries first (`queue_order`).
    """

    def __init__(
        self,
        rdb: RDBStorage,
        *,
        outage_timeout: float = 60.0,
        first_delay: float = 0.25,
        max_delay: float = 4.0,
    ) -> None:
        self.rdb = rdb
        self.backend = _optuna.cached_storage(rdb)
        self.outage_timeout = outage_timeout
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._outage = _Outage()
        self._check_orphans = True  # off once the orphan query no longer fits Optuna's schema
        url = rdb.engine.url
        self._sqlite_path = url.database if url.get_backend_name() == "sqlite" else None
        self._where = mask_url(url)

    def _retry(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        delay = self.first_delay
        while True:
            try:
                result = call(*args, **kwargs)
            except Exception as exc:
                if not _is_transient(exc):
                    damaged = self._damaged(exc)
                    if damaged is None:
                        raise
                    raise damaged from None
                lost_for, first = self._outage.failed(time.monotonic())
                if first:
                    logger.warning(
                        "storage unavailable (%s); retrying for up to %.0f s",
                        _one_line(exc),
                        self.outage_timeout,
                    )
                left = self.outage_timeout - lost_for
                if left <= 0:
                    raise StorageLostError(
                        f"lost the storage for {lost_for:.0f} s: {_one_line(exc)} ({self._where} "
                        f"unreachable for longer than the retry window, --storage-retry-seconds "
                        f"{self.outage_timeout:g})"
                    ) from exc
                time.sleep(min(delay, left))
                delay = min(delay * 2, self.max_delay)
                continue
            lost_for = self._outage.succeeded()
            if lost_for is not None:
                logger.warning("storage reachable again after %.1f s", lost_for)
            return result

    def _damaged(self, exc: Exception) -> TunerError | None:
        """A one-line error for a SQLite file that SQLite reports as damaged, else None."""
        if self._sqlite_path is None:
            return None
        cause = exc.__cause__ if isinstance(exc, StorageInternalError) else exc
        orig = getattr(cause, "orig", None)
        if type(orig) is sqlite3.DatabaseError:  # its subclasses are ordinary errors
            return damaged_sqlite_error(self._sqlite_path, " ".join(str(orig).split()))
        return None

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
        trials = self._retry(self.backend.get_all_trials, study_id, deepcopy, states)
        return queue_order(trials, states)

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

        Optuna calls this (by this name: see tuner.storage._optuna) before each trial a worker
        starts, and tuner's stale check (tuner.storage.stale) calls it too.

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
        if self._check_orphans:
            orphans = self._retry(
                _optuna.never_beaten_trial_ids, self.rdb.engine, study_id, _is_transient
            )
            self._check_orphans = orphans is not None
            for trial_id in orphans or ():
                logger.debug("trial id %d is running without a heartbeat; recording one", trial_id)
                self.record_heartbeat(trial_id)
        return self._retry(self.backend._get_stale_trial_ids, study_id)

    def get_heartbeat_interval(self) -> int | None:
        return self.backend.get_heartbeat_interval()

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.study.Study, FrozenTrial], None] | None:
        return self.backend.get_heartbeat_stale_trial_callback()


def _is_transient(exc: BaseException) -> bool:
    """True for errors that a database restart or a busy SQLite file causes and a retry fixes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TunerError):  # StorageLostError: the window has passed already
            return False
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            if isinstance(current.orig, sqlite3.Error):
                # A file that cannot be opened (its mount gone) may come back; SQLite's other
                # OperationalErrors (no such table, ...) do not go away.
                transient = ("locked", "busy", "unable to open")
                return any(word in str(current.orig) for word in transient)
            return True
        if isinstance(current, sqlalchemy.exc.TimeoutError):  # no pooled connection came free
            return True
        current = current.__cause__ or current.__context__
    return False


def _one_line(exc: BaseException) -> str:
    """The driver's message (not SQLAlchemy's statement dump) of the first database error."""
    current: BaseException | None = exc
    while current is not None and not isinstance(current, sqlalchemy.exc.DBAPIError):
        current = current.__cause__ or current.__context__
    cause = current.orig if current is not None else exc
    text = " ".join(str(cause).split())
    return text[:200] or type(cause).__name__
