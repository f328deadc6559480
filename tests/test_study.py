"""Studies on SQLite with real, tiny training: resume, pruning, diverged trials, changed spaces."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from studies import spec_from, tiny_study_toml
from tuner import attrs
from tuner.data import Dataset, load_dataset, split
from tuner.engine import DeviceData, to_device
from tuner.errors import TunerError
from tuner.search.objective import make_objective
from tuner.search.study import count_finished, open_study, run_trials
from tuner.spec import StudySpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")

TINY = tiny_study_toml()

# Half of this learning-rate range cannot learn anything in two epochs: the median pruner
# (deciding from epoch 1 on, after two complete trials) must stop those trials early.
MEDIAN = 'name = "median"\noptions = { n_startup_trials = 2, n_warmup_steps = 0 }'
PRUNED = (
    TINY.replace('name = "none"', MEDIAN)
    .replace("low = 1e-3, high = 3e-2", "low = 1e-7, high = 1e-2")
    .replace("batch_size = 64", "batch_size = 16")
    .replace("filters = 4\nfc_units = 16", "filters = 8\nfc_units = 32")
)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def device_data(spec: StudySpec, digits: Dataset) -> DeviceData:
    return to_device(
        split(
            digits,
            val_fraction=spec.dataset.val_fraction,
            split_seed=spec.dataset.split_seed,
            train_subset=spec.dataset.train_subset,
        ),
        CPU,
    )


def run(spec: StudySpec, storage: str, digits: Dataset, total: int) -> optuna.Study:
    """What `tuner run` does: open (or resume) the study and run it up to `total` trials."""
    study = open_study(spec, storage)
    run_trials(study, make_objective(spec, device_data(spec, digits), CPU), total)
    return study


def states(study: optuna.Study) -> list[TrialState]:
    return [trial.state for trial in study.get_trials(deepcopy=False)]


def test_study_completes_and_a_second_run_resumes_it(tmp_path: Path, digits) -> None:
    spec = spec_from(tmp_path, TINY)
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    first = run(spec, storage, digits, 3)
    assert states(first) == [TrialState.COMPLETE] * 3

    second = run(spec, storage, digits, 6)  # a new process would do exactly this
    assert optuna.get_all_study_names(storage) == ["tiny"]
    assert second._study_id == first._study_id
    trials = optuna.load_study(study_name="tiny", storage=storage).get_trials()
    assert [t.number for t in trials] == list(range(6))
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    for trial in trials:
        assert trial.user_attrs[attrs.EPOCHS_RUN] == 2
        assert trial.user_attrs[attrs.CONFIG]["learning_rate"] == trial.params["learning_rate"]

    again = open_study(spec, storage)
    outcome = run_trials(again, make_objective(spec, device_data(spec, digits), CPU), 6)
    assert (outcome.finished_before, outcome.finished_after) == (6, 6)  # nothing left to do


def test_resumed_study_samples_new_points(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, TINY)
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    for total in (3, 6):  # two processes, no training needed to see the sampled values
        study = open_study(spec, storage)
        run_trials(study, lambda trial: trial.suggest_float("learning_rate", 1e-3, 3e-2), total)
    assert len({t.params["learning_rate"] for t in study.trials}) == 6


def test_pruner_stops_hopeless_trials(tmp_path: Path, digits) -> None:
    spec = spec_from(tmp_path, PRUNED)
    study = run(spec, f"sqlite:///{tmp_path / 'tuner.db'}", digits, 5)
    assert count_finished(study) == 5
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert pruned, "the median pruner pruned nothing"
    for trial in pruned:
        epochs = trial.user_attrs[attrs.EPOCHS_RUN]
        assert trial.user_attrs[attrs.STOP_REASON].startswith(f"pruned at epoch {epochs} ")
    assert any(t.user_attrs[attrs.EPOCHS_RUN] < spec.training.max_epochs for t in pruned)
    best = max(complete, key=lambda t: t.value)
    assert all(t.params["learning_rate"] < best.params["learning_rate"] for t in pruned)


def diverging_study(tmp_path: Path, optimizer: str) -> StudySpec:
    # Its own two trials run first (run_diverging), not the shipped portfolio.
    text = "portfolio = false\n" + TINY.replace(
        'learning_rate = { type = "float", low = 1e-3, high = 3e-2, log = true }',
        'learning_rate = { type = "categorical", choices = [1e6, 1e-2] }',
    ).replace("fc_units = 16", f'fc_units = 16\noptimizer = "{optimizer}"')
    return spec_from(tmp_path, text)


def run_diverging(
    spec: StudySpec, tmp_path: Path, digits: Dataset
) -> list[optuna.trial.FrozenTrial]:
    study = open_study(spec, f"sqlite:///{tmp_path / 'tuner.db'}")
    study.enqueue_trial({"learning_rate": 1e6})
    study.enqueue_trial({"learning_rate": 1e-2})
    run_trials(study, make_objective(spec, device_data(spec, digits), CPU), 2)
    return study.get_trials()


def test_nan_loss_prunes_the_trial_and_the_study_goes_on(tmp_path: Path, digits) -> None:
    diverged, healthy = run_diverging(diverging_study(tmp_path, "sgd"), tmp_path, digits)
    assert diverged.state == TrialState.PRUNED
    reason = diverged.user_attrs[attrs.STOP_REASON]
    assert "nan" in reason or "diverged" in reason
    assert healthy.state == TrialState.COMPLETE and math.isfinite(healthy.value)


def test_exploding_adamw_loss_counts_as_diverged(tmp_path: Path, digits) -> None:
    diverged, _ = run_diverging(diverging_study(tmp_path, "adamw"), tmp_path, digits)
    assert diverged.state == TrialState.PRUNED


def test_changed_search_space_is_refused_unless_forced(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    original = spec_from(tmp_path, TINY)
    open_study(original, storage)
    open_study(original, storage)  # the same space resumes silently

    changed = spec_from(tmp_path, TINY.replace("high = 3e-2", "high = 1e-1"), "changed.toml")
    with pytest.raises(TunerError) as caught:
        open_study(changed, storage)
    message = str(caught.value)
    assert "\n" not in message
    assert str(changed.path) in message and "learning_rate" in message and "--force" in message
    assert "0.03" in message and "0.1" in message  # the old and the new range

    study = open_study(changed, storage, force=True)
    assert study.user_attrs[attrs.STUDY_SPACE]["learning_rate"]["high"] == 0.1
    open_study(changed, storage)  # the new space is now the stored one
    with pytest.raises(TunerError, match="learning_rate"):
        open_study(original, storage)


def test_direction_of_a_stored_study_must_match(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    open_study(spec_from(tmp_path, TINY), storage)
    by_loss = spec_from(tmp_path, 'metric = "val_loss"\n' + TINY, "loss.toml")
    with pytest.raises(TunerError, match="direction"):
        open_study(by_loss, storage)
