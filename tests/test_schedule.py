"""The run's schedule: one TrialSchedule, the pruner built from it, a re-plan swapped in."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import optuna
import pytest

from studies import spec_from, tiny_study_toml
from tuner.runner.summary import RunSummary, StopReason, TrialCounts, summary_lines
from tuner.search.samplers import PRUNER_ENTRIES
from tuner.search.schedule import RunSchedule, TrialSchedule, study_schedule
from tuner.search.study import open_study
from tuner.spec.schema import PrunerSpec

# Constructor options that count steps (reports) in Optuna's pruners.
STEP_OPTION = re.compile(r"(_steps|_resource)$")


@pytest.mark.parametrize("name", sorted(PRUNER_ENTRIES))
def test_every_step_option_of_a_registered_pruner_is_declared_in_epochs(name: str) -> None:
    """A pruner whose step options were not declared would count reports where the study file
    meant epochs: its registry entry must list them all."""
    entry = PRUNER_ENTRIES[name]
    options = set(inspect.signature(entry.cls.__init__).parameters)
    assert {option for option in options if STEP_OPTION.search(option)} == set(entry.epoch_options)
    assert {entry.first_rung, entry.last_rung} - {None} <= set(entry.epoch_options)


def test_the_median_pruner_counts_the_file_s_epochs_in_reports() -> None:
    pruner = PrunerSpec("median", {"n_warmup_steps": 2, "interval_steps": 1})
    built = TrialSchedule(10, pruner, steps_per_epoch=4).build_pruner()
    assert (built._n_warmup_steps, built._interval_steps) == (8, 4)


def test_a_study_file_schedule_follows_its_training_table(tmp_path: Path) -> None:
    training = "max_epochs = 7\npatience = 0\nfirst_result_epochs = 2\nreports_per_epoch = 3"
    known = "[[enqueue]]\nlearning_rate = 0.005\n"
    spec = spec_from(tmp_path, tiny_study_toml(training=training) + known)
    schedule = study_schedule(spec, train_count=300)
    assert (schedule.max_epochs, schedule.steps_per_epoch, schedule.first_result_epochs) == (
        7,
        3,
        2,
    )
    assert schedule.pruner == spec.pruner and schedule.deadline is None
    assert study_schedule(spec).steps_per_epoch == 3  # the file's count needs no train count


def test_a_swapped_schedule_brings_its_pruner(tmp_path: Path) -> None:
    text = tiny_study_toml().replace('name = "none"', 'name = "hyperband"')
    spec = spec_from(tmp_path, text)
    study = open_study(spec, optuna.storages.InMemoryStorage())
    run = RunSchedule(study, TrialSchedule(8, spec.pruner, steps_per_epoch=2))
    assert study.pruner._max_resource == 16
    run.swap(dataclasses.replace(run.current, max_epochs=5))
    assert run.current.max_epochs == 5 and study.pruner._max_resource == 10


@pytest.mark.parametrize(
    ("needed", "says"),
    [(190.0, "a first trial needs a budget of about 3m 10s"), (90.0, "took longer than")],
)
def test_a_budget_run_with_nothing_finished_says_why(needed: float, says: str) -> None:
    summary = RunSummary(
        study="s",
        reason=StopReason.BUDGET,
        ran=TrialCounts(pruned=1),
        finished=1,
        target=None,
        seconds=121.0,
        report_command="tuner report --study s",
        budget=120.0,
        budget_epochs=1,
        budget_needed=needed,
    )
    (line,) = [line for line in summary_lines(summary) if line.startswith("no trial finished")]
    assert says in line
