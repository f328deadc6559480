"""Stale-trial recovery: fail the trials of workers that died and queue them to run again.

A worker that dies (SIGKILL, lost node) leaves its trial RUNNING; its heartbeat stops. Optuna's
`fail_stale_trials` fails such a trial once its heartbeat is older than the grace period, and the
storage's RetryHeartbeatStaleTrialCallback queues a copy (WAITING) for a worker to run. Optuna
does that only when a worker starts a trial; tuner also does it whenever a run or `tuner status`
looks at a study, and a run waits for the study's RUNNING trials before it calls the study
finished (see tuner.search.study.run_trials), so a kill in the last trials is recovered too.
"""

from __future__ import annotations

import warnings
from collections.abc import Container

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RetryFailedTrialCallback
from optuna.trial import FrozenTrial, TrialState

from tuner.storage import _optuna

# Longest pause between two looks at a study's running trials while a run waits for them.
MAX_POLL_SECONDS = 5.0


def settle_stale_trials(study: optuna.Study) -> None:
    """Fail the study's trials whose heartbeat is older than the grace period; queue retries.

    Does nothing on storages without heartbeats (journal files).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # the heartbeat API is experimental
        optuna.storages.fail_stale_trials(study)


def stale_poll_seconds(study: optuna.Study) -> float | None:
    """How often to look for dead workers' trials while waiting for the study's running trials;
    None when its storage has no heartbeats, so a dead worker's trial cannot be told apart."""
    storage = _optuna.study_storage(study)
    if not isinstance(storage, _optuna.HeartbeatStorage):
        return None
    interval = storage.get_heartbeat_interval()
    return None if interval is None else min(float(interval), MAX_POLL_SECONDS)


def queue_order(
    trials: list[FrozenTrial], states: Container[TrialState] | None
) -> list[FrozenTrial]:
    """`trials` as tuner's storages list them: when only WAITING trials were asked for (the
    queue), retries first, each group in trial-number order; any other listing unchanged.

    Optuna's `Study.ask` starts the first listed WAITING trial it can claim (an atomic
    WAITING -> RUNNING in the storage, so each is started once). A retry continues a trial
    already paid for, from its checkpoint; by number alone it would wait behind every trial
    queued before it, such as a new study's whole portfolio. That `ask` takes the listed order
    is Optuna's behaviour, not its API: tests/test_portfolio.py checks it (SQLite, journal).
    """
    if states is None or any((s in states) != (s == TrialState.WAITING) for s in TrialState):
        return trials
    return sorted(trials, key=lambda trial: _retried_number(trial) is None)  # sort is stable


def _retried_number(trial: FrozenTrial) -> int | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # the retry API is experimental
        return RetryFailedTrialCallback.retried_trial_number(trial)
