"""[training].first_result_epochs: the known good configuration first trains a short trial of
its own, so a run has a finished result early, without misleading the pruner."""

from __future__ import annotations

import dataclasses
import io
import logging
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from rich.console import Console

from studies import SMALL_SPACE, spec_from, tiny_data, tiny_study_toml
from tuner import attrs
from tuner.errors import TunerError
from tuner.runner import budget
from tuner.runner.budget import first_result_budget_epochs, plan_budget
from tuner.runner.run import run_study
from tuner.runner.settings import RunSettings
from tuner.search.objective import make_objective
from tuner.search.schedule import RunSchedule, study_schedule
from tuner.search.study import open_study, run_trials

KNOWN = """
[[enqueue]]
learning_rate = 0.01
"""


def study_text(training: str, enqueue: str = KNOWN, pruner: str = 'name = "none"') -> str:
    text = tiny_study_toml(training=training, space=SMALL_SPACE) + enqueue
    return text.replace('[pruner]\nname = "none"', f"[pruner]\n{pruner}")


@pytest.mark.parametrize(
    ("training", "enqueue", "words"),
    [
        ("max_epochs = 3\nfirst_result_epochs = 4", KNOWN, ["max_epochs (3)", "got 4"]),
        ("max_epochs = 3\nfirst_result_epochs = -1", KNOWN, ["0 (off)", "got -1"]),
        ('max_epochs = 3\nfirst_result_epochs = "soon"', KNOWN, ["int"]),
        ("max_epochs = 3\nfirst_result_epochs = 1", "", ["needs an [[enqueue]] table"]),
    ],
)
def test_bad_first_result_keys_name_the_file_and_key(
    tmp_path: Path, training: str, enqueue: str, words: list[str]
) -> None:
    with pytest.raises(TunerError) as error:
        spec_from(tmp_path, study_text(training, enqueue))
    message = str(error.value)
    assert "study.toml" in message and "[training].first_result_epochs" in message
    assert "\n" not in message
    for word in words:
        assert word in message


def test_a_new_study_queues_the_known_configuration_short_then_full(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, study_text("max_epochs = 3\nfirst_result_epochs = 1"))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    open_study(spec, storage)
    study = open_study(spec, storage)  # a resumed run queues nothing again
    queued = study.get_trials(states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in queued] == [{"learning_rate": 0.01}] * 2
    assert [bool(t.user_attrs.get(attrs.FIRST_RESULT)) for t in queued] == [True, False]


def test_without_the_key_the_known_configuration_is_queued_once(tmp_path: Path) -> None:
    study = open_study(spec_from(tmp_path, study_text("max_epochs = 3")), "sqlite://")
    queued = study.get_trials(states=(TrialState.WAITING,))
    assert len(queued) == 1 and attrs.FIRST_RESULT not in queued[0].user_attrs


def test_the_first_result_trains_its_epochs_and_reports_nothing_to_the_pruner(
    tmp_path: Path, one_torch_thread
) -> None:
    # The median pruner with one startup trial: had the short trial reported its (sooner
    # decayed) values, it would be the yardstick of the full trial of the same configuration.
    pruner = 'name = "median"\noptions = { n_startup_trials = 1, n_warmup_steps = 0 }'
    text = study_text("max_epochs = 3\npatience = 0\nfirst_result_epochs = 1", pruner=pruner)
    spec = spec_from(tmp_path, text)
    study = open_study(spec, optuna.storages.InMemoryStorage())
    objective = make_objective(spec, tiny_data(spec), torch.device("cpu"), study_schedule(spec))
    run_trials(study, objective, 2)
    short, full = study.trials
    assert short.state == TrialState.COMPLETE and short.value is not None
    assert short.user_attrs[attrs.EPOCHS_RUN] == 1
    assert short.user_attrs[attrs.CONFIG]["max_epochs"] == 1
    assert short.intermediate_values == {}
    assert attrs.STOP_REASON not in short.user_attrs  # it ran its whole (short) schedule
    assert full.params == short.params
    assert full.state == TrialState.COMPLETE
    assert full.user_attrs[attrs.EPOCHS_RUN] == 3 and sorted(full.intermediate_values) == [1, 2, 3]


def test_a_budget_with_no_room_for_it_ends_the_first_result_untrained(
    tmp_path: Path, one_torch_thread
) -> None:
    spec = spec_from(tmp_path, study_text("max_epochs = 2\npatience = 0\nfirst_result_epochs = 1"))
    study = open_study(spec, optuna.storages.InMemoryStorage())
    schedule = dataclasses.replace(study_schedule(spec), first_result_epochs=0)
    objective = make_objective(spec, tiny_data(spec), torch.device("cpu"), schedule)
    run_trials(study, objective, 2)
    skipped, full = study.trials
    assert skipped.state == TrialState.PRUNED
    assert skipped.user_attrs[attrs.EPOCHS_RUN] == 0
    assert "first result skipped" in skipped.user_attrs[attrs.STOP_REASON]
    assert attrs.HISTORY not in skipped.user_attrs  # not trained at all
    assert full.state == TrialState.COMPLETE and full.user_attrs[attrs.EPOCHS_RUN] == 2


def test_a_retried_first_result_behind_a_finished_trial_is_not_trained(
    tmp_path: Path, one_torch_thread
) -> None:
    """An interrupted short trial is retried at the back of the queue, after the full one."""
    spec = spec_from(tmp_path, study_text("max_epochs = 2\npatience = 0\nfirst_result_epochs = 1"))
    study = open_study(spec, optuna.storages.InMemoryStorage())
    study.enqueue_trial({"learning_rate": 0.02}, user_attrs={attrs.FIRST_RESULT: True})
    objective = make_objective(spec, tiny_data(spec), torch.device("cpu"), study_schedule(spec))
    run_trials(study, objective, 3)
    short, full, retried = study.trials
    assert short.state == full.state == TrialState.COMPLETE
    assert retried.state == TrialState.PRUNED and retried.user_attrs[attrs.EPOCHS_RUN] == 0
    assert "finished trial already" in retried.user_attrs[attrs.STOP_REASON]


@pytest.mark.parametrize(
    ("asked", "full_epochs", "epoch_seconds", "left", "epochs"),
    [
        (4, 10, 22.0, 590.0, 4),  # an Intel Xeon with AMX, 10 minutes: both fit
        (4, 10, 40.0, 590.0, 0),  # 680 s (the full trial's 520 with the margin): skipped
        (4, 8, 40.0, 590.0, 4),  # 576 s
        (4, 10, 48.0, 590.0, 0),  # the full trial alone needs more than is left
        (4, 7, 10.0, 590.0, 0),  # a full trial under twice the short one: not worth it
        (4, 8, 10.0, 590.0, 4),
        (0, 10, 22.0, 590.0, 0),  # off
        (4, 10, 0.0, 590.0, 4),  # nothing measured: as asked
    ],
)
def test_a_budget_gives_the_first_result_all_its_epochs_or_none(
    asked: int, full_epochs: int, epoch_seconds: float, left: float, epochs: int
) -> None:
    assert first_result_budget_epochs(asked, full_epochs, epoch_seconds, left) == epochs


@pytest.mark.parametrize(
    ("epoch_seconds", "finished_before", "full_epochs", "first_epochs"),
    [
        # The probe's guess on the Xeon (34 s): 4 short epochs leave the full trial the
        # floor's 10, as it would have alone.
        (34.0, False, 10, 4),
        # The Xeon's probe of session 8 (40 s for 31 s): 4 short epochs leave 8, twice theirs.
        (40.0, False, 8, 4),
        # An AVX2-only EPYC (~55 s): after 4 short epochs the full trial would get 5: skipped,
        # the full trial gets what fits alone (8 with the margin).
        (55.0, False, 8, 0),
        # A resumed study with a finished trial never trains the short one: nothing reserved.
        (34.0, True, 10, 0),
    ],
)
def test_a_budget_plans_the_full_trial_after_the_first_result(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    epoch_seconds: float,
    finished_before: bool,
    full_epochs: int,
    first_epochs: int,
) -> None:
    training = "max_epochs = 30\nfull_trial_min_epochs = 10\nfirst_result_epochs = 4"
    spec = spec_from(tmp_path, study_text(training))
    data = tiny_data(spec)
    monkeypatch.setattr(
        budget, "probe_seconds_per_image", lambda *_: epoch_seconds / len(data.train_labels)
    )
    study = open_study(spec, optuna.storages.InMemoryStorage())
    if finished_before:
        study.add_trial(optuna.trial.create_trial(value=0.5))
    plan = plan_budget(study, spec, data, torch.device("cpu"), 600.0, time.time(), 1)
    assert (plan.epochs, plan.first_result_epochs) == (full_epochs, first_epochs)
    assert study.user_attrs[attrs.STUDY_BUDGET_EPOCHS] == full_epochs
    # A second worker on the same study and budget trains the same: the stored epochs, and
    # the short trial when it is still queued.
    again = plan_budget(study, spec, data, torch.device("cpu"), 600.0, time.time(), 1)
    assert (again.epochs, again.first_result_epochs) == (full_epochs, first_epochs)


def test_a_run_shows_and_records_the_short_schedule(
    tmp_path: Path, one_torch_thread, caplog: pytest.LogCaptureFixture
) -> None:
    text = study_text("max_epochs = 2\npatience = 0\ntrials = 2\nfirst_result_epochs = 1")
    (tmp_path / "study.toml").write_text(text)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    settings = RunSettings(study_file=tmp_path / "study.toml", storage=storage)
    with caplog.at_level(logging.INFO, logger="tuner.runner.progress"):
        run_study(settings, Console(file=io.StringIO(), force_terminal=False))
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert [t.user_attrs[attrs.EPOCHS_RUN] for t in study.trials] == [1, 2]
    assert study.best_value == max(t.value for t in study.trials)
    epochs_shown = [m for m in caplog.messages if m.startswith("trial ") and " epoch " in m]
    assert epochs_shown[0].startswith("trial 0 epoch 1/1:")
    assert epochs_shown[1].startswith("trial 1 epoch 1/2:")


def finished_first_result(study: optuna.Study, epoch_seconds: float, train_count: int) -> None:
    """The short trial of 4 epochs ends COMPLETE, having measured `epoch_seconds` an epoch."""
    short = study.ask()  # the queued short trial is asked first
    assert short.user_attrs.get(attrs.FIRST_RESULT)
    short.set_user_attr(attrs.TRAIN_IMAGES, 4 * train_count)
    short.set_user_attr(attrs.TRAIN_SECONDS, 4 * epoch_seconds)
    study.tell(short, 0.91)


@pytest.mark.parametrize(
    ("measured", "another_started", "epochs"),
    [
        # The probe guessed 35 s an epoch (8 epochs after the short trial); the short trial ran
        # 27 s an epoch, and ~7.5 minutes are left: 10 epochs (the floor) fit with the margin.
        (27.0, False, 10),
        (45.0, False, 7),  # slower than guessed: fewer, so the full trial still fits
        (27.0, True, 8),  # another worker's full trial runs the 8 planned: kept
    ],
)
def test_the_full_trial_is_planned_again_from_the_first_results_speed(
    tmp_path: Path, measured: float, another_started: bool, epochs: int
) -> None:
    training = "max_epochs = 30\nfull_trial_min_epochs = 10\nfirst_result_epochs = 4"
    spec = spec_from(tmp_path, study_text(training))
    study = open_study(spec, optuna.storages.InMemoryStorage())
    clock = budget.BudgetClock(time.time() + 450, 600.0, 1_000, 35.0 / 1_000)
    plan = budget.BudgetPlan(8, 4, clock, spec.training, train_count=1_000, steps_per_epoch=1)
    planned = plan.schedule(study_schedule(spec))
    finished_first_result(study, measured, 1_000)
    if another_started:
        study.ask()
    short = study.trials[0]
    replanned = plan.replan_after_first_result(study, short, planned)
    assert (replanned is not None) == (epochs != 8)
    assert (replanned or planned).max_epochs == epochs
    if epochs != 8:
        assert study.user_attrs[attrs.STUDY_BUDGET_EPOCHS] == epochs
    # Only the first result's end plans again: a full trial's end keeps the schedule.
    full = study.trials[-1]
    assert plan.replan_after_first_result(study, full, replanned or planned) is None


def test_the_objective_asks_each_trial_its_epochs(tmp_path: Path, one_torch_thread) -> None:
    """A budget run's full trials train the epochs planned when they start, not the probe's."""
    spec = spec_from(tmp_path, study_text("max_epochs = 5\npatience = 0\nfirst_result_epochs = 1"))
    study = open_study(spec, optuna.storages.InMemoryStorage())
    run_schedule = RunSchedule(study, dataclasses.replace(study_schedule(spec), max_epochs=3))

    def replanned(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        run_schedule.swap(dataclasses.replace(run_schedule.current, max_epochs=2))

    objective = make_objective(spec, tiny_data(spec), torch.device("cpu"), run_schedule)
    run_trials(study, objective, 2, callbacks=[replanned])
    short, full = study.trials
    assert short.user_attrs[attrs.EPOCHS_RUN] == 1
    assert (
        full.user_attrs[attrs.EPOCHS_RUN] == 2 and full.user_attrs[attrs.CONFIG]["max_epochs"] == 2
    )


def test_a_budget_run_trains_full_trials_on_the_measured_schedule(
    tmp_path: Path, one_torch_thread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe guesses 10 s an epoch (3 epochs planned); the short trial measures the real
    speed (well under a second on digits), so the full trial trains all 4 epochs of the file."""
    text = study_text("max_epochs = 4\npatience = 0\ntrials = 2\nfirst_result_epochs = 1")
    (tmp_path / "study.toml").write_text(text)
    spec = spec_from(tmp_path, text)
    train_count = len(tiny_data(spec).train_labels)
    monkeypatch.setattr(budget, "probe_seconds_per_image", lambda *_: 10.0 / train_count)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    settings = RunSettings(
        study_file=tmp_path / "study.toml", storage=storage, budget=100.0, trials=2
    )
    summary = run_study(settings, Console(file=io.StringIO(), force_terminal=False))
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert [t.user_attrs[attrs.EPOCHS_RUN] for t in study.trials] == [1, 4]
    assert study.user_attrs[attrs.STUDY_BUDGET_EPOCHS] == summary.budget_epochs == 4
