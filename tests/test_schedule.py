"""The run's schedule: one TrialSchedule, the pruner built from it, a re-plan swapped in."""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
from pathlib import Path

import optuna
import pytest
import torch
from rich.console import Console

from studies import spec_from, tiny_data, tiny_study_toml
from tuner import attrs
from tuner.runner.summary import RunSummary, StopReason, TrialCounts, summary_lines
from tuner.search.objective import make_objective
from tuner.search.samplers import PRUNER_ENTRIES
from tuner.search.schedule import (
    BUDGET_PRUNER,
    BUDGET_SAMPLER,
    RunSchedule,
    TrialSchedule,
    choose_sampler,
    study_schedule,
)
from tuner.search.study import open_study, run_trials
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


def no_pruner_study(pruner: str = "") -> str:
    """A tiny study file whose [pruner] table is `pruner` (none at all when empty)."""
    text = tiny_study_toml().replace('[pruner]\nname = "none"\n', pruner)
    assert "[pruner]" not in text or pruner
    return text


def test_a_budget_run_whose_file_names_no_pruner_halves_successively(tmp_path: Path) -> None:
    plain = spec_from(tmp_path, no_pruner_study())
    assert plain.pruner.default
    assert study_schedule(plain, 54_000, budget=600.0).pruner == BUDGET_PRUNER
    built = TrialSchedule(13, BUDGET_PRUNER, 8, budget_epochs=43.0).build_pruner()
    assert isinstance(built, optuna.pruners.SuccessiveHalvingPruner)
    # Without a budget the file's default stays; a pruner the file names is kept either way.
    assert study_schedule(plain, 54_000).pruner.name == "median"
    named = spec_from(tmp_path, no_pruner_study('[pruner]\nname = "median"\n'))
    assert study_schedule(named, 54_000, budget=600.0).pruner == named.pruner
    # Options alone are the median's (the name's default): the file has chosen it.
    options_only = no_pruner_study("[pruner]\noptions = { n_startup_trials = 2 }\n")
    median = spec_from(tmp_path, options_only)
    assert study_schedule(median, 54_000, budget=600.0).pruner == median.pruner


def no_sampler_study(sampler: str = "", extra: str = "") -> str:
    """A tiny study file whose [sampler] table is `sampler` (none at all when empty)."""
    text = tiny_study_toml().replace('[sampler]\nname = "random"\nseed = 0\n', sampler)
    assert "[sampler]" not in text or sampler
    return extra + text


def test_a_budget_run_whose_file_names_no_sampler_models_on_the_rungs(tmp_path: Path) -> None:
    plain = spec_from(tmp_path, no_sampler_study())
    assert plain.sampler.default
    chosen = choose_sampler(plain, budget=600.0)
    assert chosen.name == BUDGET_SAMPLER == "rung-tpe" and chosen.seed == plain.sampler.seed
    # Without a budget: TPE, as before.
    assert choose_sampler(plain).name == "tpe"
    # A sampler the file names wins.
    for table in ('[sampler]\nname = "tpe"\n', "[sampler]\noptions = { n_startup_trials = 4 }\n"):
        named = spec_from(tmp_path, no_sampler_study(table))
        assert choose_sampler(named, budget=600.0) == named.sampler
    # A table that only sets the seed names none: the budget's sampler, with that seed.
    seeded = choose_sampler(spec_from(tmp_path, no_sampler_study("[sampler]\nseed = 3\n")), 600.0)
    assert (seeded.name, seeded.seed) == (BUDGET_SAMPLER, 3)
    # Several objectives report no rungs; constraints need a sampler that reads them.
    pareto = spec_from(tmp_path, no_sampler_study(extra='metric = ["val_accuracy", "params"]\n'))
    assert choose_sampler(pareto, budget=600.0) == pareto.sampler
    limited = spec_from(tmp_path, no_sampler_study() + "[constraints]\nmax_params = 300_000\n")
    assert choose_sampler(limited, budget=600.0) == limited.sampler


def test_a_budget_run_samples_with_the_budget_sampler(tmp_path: Path, monkeypatch) -> None:
    """The worker (`tuner run`, each of --workers N, `tuner.run`) opens the study with the
    sampler `choose_sampler` picks. The run starts no trial: a stored trial says one costs
    far more than the budget."""
    from tuner.runner import worker
    from tuner.runner.run import run_study
    from tuner.runner.settings import RunSettings
    from tuner.search.rung_tpe import RungTPESampler

    path = tmp_path / "study.toml"
    path.write_text("portfolio = false\n" + no_sampler_study())
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(spec_from(tmp_path, path.read_text()), storage)
    study.add_trial(
        optuna.trial.create_trial(
            value=0.5,
            params={"learning_rate": 0.01},
            distributions={
                "learning_rate": optuna.distributions.FloatDistribution(1e-3, 3e-2, log=True)
            },
            user_attrs={attrs.TRAIN_SECONDS: 3000.0, attrs.TRAIN_IMAGES: 300},
        )
    )
    samplers = []

    def spy(*args, **kwargs):
        opened = open_study(*args, **kwargs)
        samplers.append(opened.sampler)
        return opened

    monkeypatch.setattr(worker, "open_study", spy)
    quiet = Console(file=io.StringIO())
    run_study(RunSettings(study_file=path, storage=storage, trials=3, budget=60.0), quiet)
    run_study(RunSettings(study_file=path, storage=storage, trials=0), quiet)
    assert [type(sampler) for sampler in samplers] == [
        RungTPESampler,
        optuna.samplers.TPESampler,
    ]


@pytest.mark.parametrize(
    ("epochs", "steps", "budget_epochs", "first_rung"),
    [
        (13, 8, 43.0, 11),  # 3 full trials fit: two halvings below 104 reports
        (13, 8, 20.0, 104),  # one full trial fits: nothing to compare it with, nothing cut
        (20, 1, 70.0, 2),  # a small dataset reports once an epoch: its first rung, 2 epochs
        (30, 8, 1e4, 8),  # a long budget: at most three halvings (240 // 27)
        (13, 8, None, 1),  # no budget: the first report, as before
    ],
)
def test_the_first_rung_follows_the_budget_and_the_data_size(
    epochs: int, steps: int, budget_epochs: float | None, first_rung: int
) -> None:
    schedule = TrialSchedule(epochs, BUDGET_PRUNER, steps, budget_epochs=budget_epochs)
    assert schedule.build_pruner()._min_resource == first_rung


def run_curve(study: optuna.Study, curve: list[float]) -> optuna.trial.FrozenTrial:
    """One trial reporting `curve` (a value per report) until the pruner stops it."""
    trial = study.ask()
    for step, value in enumerate(curve, 1):
        trial.report(value, step)
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return study.trials[trial.number]
    study.tell(trial, curve[-1])
    return study.trials[trial.number]


def test_the_budget_pruner_stops_a_bad_trial_early_and_keeps_a_slow_starter() -> None:
    # 9 reports, a budget of 3 full trials: rungs at reports 1, 3 and 9.
    schedule = TrialSchedule(9, BUDGET_PRUNER, 1, budget_epochs=30.0)
    study = optuna.create_study(direction="maximize", pruner=schedule.build_pruner())
    fast = run_curve(study, [0.80, 0.82, 0.83, 0.835, 0.84, 0.84, 0.84, 0.84, 0.84])
    mediocre = [run_curve(study, [0.5 + 0.02 * i] * 9) for i in range(5)]
    bad = run_curve(study, [0.10] * 9)
    # Behind the fast starter at the first rung (second of 8), ahead from the second on.
    slow = run_curve(study, [0.75, 0.80, 0.84, 0.86, 0.87, 0.88, 0.89, 0.90, 0.91])
    assert fast.state == optuna.trial.TrialState.COMPLETE
    assert bad.state == optuna.trial.TrialState.PRUNED and bad.last_step == 1
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in mediocre)
    assert slow.state == optuna.trial.TrialState.COMPLETE and slow.value == 0.91
    assert study.best_trial.number == slow.number


def test_a_pruned_trial_names_the_pruner_that_judged_it(tmp_path: Path) -> None:
    # The file has no [pruner] table (median by default); the run's schedule brings another.
    spec = spec_from(tmp_path, "portfolio = false\n" + no_pruner_study())
    schedule = TrialSchedule(2, BUDGET_PRUNER, 1, budget_epochs=60.0)
    study = open_study(spec, optuna.storages.InMemoryStorage())
    run = RunSchedule(study, schedule)
    study.enqueue_trial({"learning_rate": 3e-2})
    study.enqueue_trial({"learning_rate": 1e-3})  # far slower on 300 images: cut at epoch 1
    run_trials(study, make_objective(spec, tiny_data(spec), torch.device("cpu"), run), 2)
    good, slow = study.trials
    assert good.value > slow.intermediate_values[1]
    assert slow.user_attrs[attrs.STOP_REASON] == (
        "pruned at epoch 1 by the successive-halving pruner"
    )
