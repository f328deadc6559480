"""The objective records what reports rely on and turns bad trials into pruned ones."""

from pathlib import Path

import optuna
import pytest
import torch

from tuner import attrs
from tuner.data import load_dataset, split
from tuner.engine import to_device
from tuner.search.objective import TrialHooks, make_objective
from tuner.search.study import open_study, run_trials
from tuner.spec import parse_spec

TINY_STUDY = {
    "name": "tiny",
    "sampler": {"name": "random", "seed": 1},
    "pruner": {"name": "none"},
    "dataset": {"name": "digits", "train_subset": 300},
    "training": {"max_epochs": 2, "patience": 0},
    "space": {
        "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        "batch_size": 64,
        "num_blocks": 1,
        "filters": {"type": "int", "low": 4, "high": 8, "step": 4},
        "fc_units": 16,
    },
}


@pytest.fixture(scope="module")
def spec():
    return parse_spec(TINY_STUDY, Path("tiny.toml"))


@pytest.fixture(scope="module")
def data(spec):
    return to_device(
        split(
            load_dataset("digits"),
            val_fraction=spec.dataset.val_fraction,
            split_seed=spec.dataset.split_seed,
            train_subset=spec.dataset.train_subset,
        ),
        torch.device("cpu"),
    )


def test_completed_trial_records_config_history_and_costs(spec, data):
    study = open_study(spec, optuna.storages.InMemoryStorage())
    seen_epochs, seen_batches = [], []
    objective = make_objective(
        spec,
        data,
        torch.device("cpu"),
        hooks=TrialHooks(
            on_epoch=lambda n, r: seen_epochs.append((n, r.epoch)),
            on_batch=lambda done, per_epoch: seen_batches.append((done, per_epoch)),
        ),
    )
    run_trials(study, objective, 1)

    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    user = trial.user_attrs
    assert user[attrs.EPOCHS_RUN] == 2
    assert [row["epoch"] for row in user[attrs.HISTORY]] == [1, 2]
    assert set(user[attrs.HISTORY][0]) == {
        "epoch",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "seconds",
    }
    assert user[attrs.CONFIG]["filters"] == [trial.params["filters_1"]]
    assert user[attrs.CONFIG]["learning_rate"] == trial.params["learning_rate"]
    assert user[attrs.PARAM_COUNT] > 0
    assert user[attrs.DEVICE] == "cpu"
    assert user[attrs.PRECISION] == "fp32"  # "auto" on CPU: an 8x8 model too small for bf16
    assert user[attrs.SEED] == spec.training.seed + trial.number
    assert user[attrs.TRAIN_SECONDS] > 0
    assert ":" in user[attrs.WORKER]
    # The value is the accuracy of the kept (best val-loss) epoch, reported per epoch too.
    best_epoch = user[attrs.BEST_EPOCH]
    assert trial.value == pytest.approx(user[attrs.HISTORY][best_epoch - 1]["val_accuracy"])
    assert sorted(trial.intermediate_values) == [1, 2]
    assert seen_epochs == [(0, 1), (0, 2)]
    per_epoch = -(-len(data.train_labels) // 64)  # batch_size 64
    assert seen_batches.count((per_epoch, per_epoch)) == 2  # each epoch's end, at least
    assert all(1 <= done <= total == per_epoch for done, total in seen_batches)
    assert study.user_attrs[attrs.STUDY_DATASET] == "digits"


def test_out_of_memory_prunes_the_trial_and_the_study_goes_on(spec, data, monkeypatch):
    import tuner.search.objective

    real_fit = tuner.search.objective.fit
    calls = {"count": 0}

    def fit_that_runs_out_of_memory_once(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        yield from real_fit(*args, **kwargs)

    monkeypatch.setattr(tuner.search.objective, "fit", fit_that_runs_out_of_memory_once)
    study = open_study(spec, optuna.storages.InMemoryStorage())
    run_trials(study, make_objective(spec, data, torch.device("cpu")), 2)

    first, second = study.trials[:2]
    assert first.state == optuna.trial.TrialState.PRUNED
    assert "out of memory" in first.user_attrs[attrs.STOP_REASON]
    assert "batch_size=64" in first.user_attrs[attrs.STOP_REASON]
    assert second.state == optuna.trial.TrialState.COMPLETE
