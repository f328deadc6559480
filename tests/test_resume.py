"""Trials that resume from their last checkpoint: after a crash, a budget cut, a damaged file.

The objective is run in this process; tests/test_resume_kill.py kills a real `tuner run`.
A resumed trial must end with the per-epoch values of a trial that was never interrupted:
on one CPU thread the training is deterministic, so they are compared exactly.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path

import optuna
import pytest
import torch
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from studies import spec_from, tiny_data, tiny_study_toml
from tuner import attrs
from tuner.search.checkpoints import requeue_budget_cut
from tuner.search.objective import TrialHooks, make_objective
from tuner.search.schedule import study_schedule
from tuner.search.study import open_study
from tuner.storage import open_storage
from tuner.storage.artifacts import open_artifacts

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")
EPOCHS = 5
FIELDS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")


class Crash(Exception):
    """Stands for the worker dying after some epochs."""


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    # checkpoint_seconds = 0: a checkpoint after every epoch, however short.
    training = f"max_epochs = {EPOCHS}\npatience = 0\ncheckpoint_seconds = 0"
    # A new study queues the portfolio: trial 0 is its first configuration, and a retry runs
    # before the portfolio trials still queued behind it.
    text = tiny_study_toml(training=training)
    # Dropout draws from torch's global generator: resuming must restore it too.
    text = text.replace("fc_units = 16", "fc_units = 16\ndropout = 0.3")
    return spec_from(tmp_path_factory.mktemp("spec"), text)


@pytest.fixture(scope="module")
def data(spec):
    return tiny_data(spec)


@pytest.fixture(scope="module")
def uninterrupted(spec, data) -> list[dict]:
    """The history of trial 0 trained without a stop, with checkpoints off.

    On one thread, as the tests (`one_torch_thread`, set up after this module's fixtures):
    another thread count sums in another order.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        study = open_study(spec, optuna.storages.InMemoryStorage())
        study.optimize(make_objective(spec, data, CPU), n_trials=1)
    finally:
        torch.set_num_threads(threads)
    return study.trials[0].user_attrs[attrs.HISTORY]


def values(history: list[dict]) -> list[tuple]:
    return [tuple(row[key] for key in FIELDS) for row in history]


def new_study(spec, tmp_path: Path) -> optuna.Study:
    return open_study(spec, open_storage(f"sqlite:///{tmp_path / 'study.db'}"))


def retry_of(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    """The trial that retried trial `number`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retried = RetryHeartbeatStaleTrialCallback.retried_trial_number
        (retry,) = (trial for trial in study.get_trials() if retried(trial) == number)
    return retry


def crash_after(epochs: int) -> TrialHooks:
    def on_epoch(number: int, result) -> None:
        if result.epoch == epochs:
            raise Crash

    return TrialHooks(on_epoch=on_epoch)


def retry_failed(study: optuna.Study) -> None:
    """What the stale check does for a dead worker's trial: fail it and queue a copy."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for trial in study.get_trials(states=(TrialState.FAIL,)):
            RetryHeartbeatStaleTrialCallback(max_retry=None)(study, trial)


def test_a_crashed_trial_resumes_after_its_last_epoch_with_the_same_values(
    spec, data, uninterrupted, tmp_path: Path
) -> None:
    study = new_study(spec, tmp_path)
    artifacts = open_artifacts(str(tmp_path / "artifacts"))
    crashing = make_objective(spec, data, CPU, hooks=crash_after(3), artifacts=artifacts)
    with pytest.raises(Crash):
        study.optimize(crashing, n_trials=1)
    assert study.trials[0].user_attrs[attrs.CHECKPOINT]["epoch"] == 3
    retry_failed(study)

    epochs_trained = []
    hooks = TrialHooks(on_epoch=lambda number, result: epochs_trained.append(result.epoch))
    study.optimize(make_objective(spec, data, CPU, hooks=hooks, artifacts=artifacts), n_trials=1)
    resumed = retry_of(study, 0)
    assert resumed.state == TrialState.COMPLETE
    assert resumed.params == study.trials[0].params
    # It ran before the portfolio trials queued ahead of it, which still wait.
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert waiting and all(trial.number < resumed.number for trial in waiting)
    assert epochs_trained == [4, 5]  # epochs 1-3 were not trained again
    assert resumed.user_attrs[attrs.RESUMED_FROM] == 3
    # It continues trial 0's run: trial 0's seed, not the one its own number would give.
    assert resumed.user_attrs[attrs.SEED] == study.trials[0].user_attrs[attrs.SEED]
    assert resumed.user_attrs[attrs.CONFIG]["seed"] == resumed.user_attrs[attrs.SEED]
    history = resumed.user_attrs[attrs.HISTORY]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5]  # no epoch twice
    assert values(history) == values(uninterrupted)  # bit for bit: tolerance 0
    assert sorted(resumed.intermediate_values) == [1, 2, 3, 4, 5]
    for epoch, row in enumerate(history, 1):
        assert resumed.intermediate_values[epoch] == row[spec.metric]
    # Finished: its checkpoint gave way to its best weights, the only file left.
    assert resumed.user_attrs[attrs.CHECKPOINT] is None
    assert resumed.user_attrs[attrs.BEST_WEIGHTS]["epoch"] == resumed.user_attrs[attrs.BEST_EPOCH]
    assert len(list(artifacts.folder.iterdir())) == 1


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_a_damaged_or_missing_checkpoint_restarts_the_trial_with_one_log_line(
    spec, data, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    study = new_study(spec, tmp_path)
    artifacts = open_artifacts(str(tmp_path / "artifacts"))
    with pytest.raises(Crash):
        study.optimize(
            make_objective(spec, data, CPU, hooks=crash_after(2), artifacts=artifacts),
            n_trials=1,
        )
    (path,) = artifacts.folder.iterdir()
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-1000])
    else:
        path.unlink()
    retry_failed(study)
    trained = []
    hooks = TrialHooks(on_epoch=lambda number, result: trained.append(result.epoch))
    with caplog.at_level(logging.WARNING):
        study.optimize(
            make_objective(spec, data, CPU, hooks=hooks, artifacts=artifacts), n_trials=1
        )
    lines = [r.getMessage() for r in caplog.records if "checkpoint" in r.getMessage()]
    assert len(lines) == 1 and "training from epoch 1" in lines[0], lines
    restarted = retry_of(study, 0)
    assert restarted.state == TrialState.COMPLETE
    assert trained == [1, 2, 3, 4, 5]
    assert restarted.user_attrs.get(attrs.RESUMED_FROM) is None
    assert [row["epoch"] for row in restarted.user_attrs[attrs.HISTORY]] == trained
    # A fresh start is a new trial with a seed of its own, as before checkpoints existed.
    first_seed = study.trials[0].user_attrs[attrs.SEED]
    assert restarted.user_attrs[attrs.SEED] == first_seed + restarted.number


class BatchDeadline:
    """A run's deadline that passes after `batches` polls (fit polls once per batch)."""

    def __init__(self, batches: int) -> None:
        self.left = batches

    def should_stop(self) -> bool:
        self.left -= 1
        return self.left < 0


def test_a_budget_cut_trial_resumes_in_the_next_run(
    spec, data, uninterrupted, tmp_path: Path
) -> None:
    study = new_study(spec, tmp_path)
    artifacts = open_artifacts(str(tmp_path / "artifacts"))
    batches = -(-len(data.train_labels) // 64)  # per epoch, batch_size 64
    cut = dataclasses.replace(
        study_schedule(spec, len(data.train_labels)), deadline=BatchDeadline(2 * batches + 1)
    )
    study.optimize(make_objective(spec, data, CPU, cut, artifacts=artifacts), n_trials=1)
    first = study.trials[0]
    assert first.state == TrialState.PRUNED
    assert first.user_attrs[attrs.STOP_REASON] == attrs.BUDGET_STOP
    assert first.user_attrs[attrs.CHECKPOINT]["epoch"] == 2  # cut inside epoch 3

    assert requeue_budget_cut(study) == [0]  # what the next run does first
    study.optimize(make_objective(spec, data, CPU, artifacts=artifacts), n_trials=1)
    resumed = retry_of(study, 0)
    assert resumed.state == TrialState.COMPLETE
    assert resumed.user_attrs[attrs.RESUMED_FROM] == 2
    assert resumed.user_attrs[attrs.STOP_REASON] is None  # the cut was its predecessor's
    assert values(resumed.user_attrs[attrs.HISTORY]) == values(uninterrupted)


def test_a_pruned_trial_leaves_no_checkpoint(spec, data, tmp_path: Path) -> None:
    study = new_study(spec, tmp_path)
    artifacts = open_artifacts(str(tmp_path / "artifacts"))

    class PruneAtTwo(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return trial.last_step == 2

    study.pruner = PruneAtTwo()
    study.optimize(make_objective(spec, data, CPU, artifacts=artifacts), n_trials=1)
    assert study.trials[0].state == TrialState.PRUNED
    assert list(artifacts.folder.iterdir()) == []
