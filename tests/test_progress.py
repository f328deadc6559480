"""tuner.runner.progress: the live view and log lines of a running study, and its estimates."""

from __future__ import annotations

import datetime
import io
import logging
from datetime import timedelta

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.logging import RichHandler

from tuner.engine import EpochResult
from tuner.runner.progress import TrialProgress


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=100, highlight=False), out


@pytest.fixture
def rich_log_handler():
    """A RichHandler on a console of its own, as configure_logging sets up on a terminal."""
    console, out = terminal()
    handler = RichHandler(console=console, show_path=False)
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler, out
    root.removeHandler(handler)


def test_a_warning_during_the_live_view_gets_a_line_of_its_own(rich_log_handler) -> None:
    handler, handler_out = rich_log_handler
    console, out = terminal()
    study = optuna.create_study()
    with TrialProgress(console, study, total_trials=3, max_epochs=2) as progress:
        assert progress.live is not None
        progress.live.refresh()
        logging.getLogger("tuner.runner.budget").warning("budget: no new trial starts")
        progress.live.refresh()
    lines = out.getvalue().replace("\r", "\n").splitlines()
    warned = [line for line in lines if "no new trial starts" in line]
    assert warned, out.getvalue()
    assert all(study.study_name not in line for line in warned)  # not glued to the live line
    assert handler.console.file is handler_out  # the handler's own console back afterwards


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def epoch_result(seconds: float) -> EpochResult:
    return EpochResult(1, 1.0, 0.5, 1.0, 0.5, seconds=seconds, improved=True)


def add_trial(study: optuna.Study, seconds: float, state: TrialState) -> FrozenTrial:
    start = datetime.datetime(2026, 1, 1)
    trial = optuna.trial.create_trial(
        state=state,
        value=0.5 if state == TrialState.COMPLETE else None,
        intermediate_values={1: 0.5},
    )
    trial.datetime_start, trial.datetime_complete = start, start + timedelta(seconds=seconds)
    study.add_trial(trial)
    return study.trials[-1]


def study_fact(progress: TrialProgress, now: float) -> str | None:
    facts = progress._study_facts(now)
    return next((fact for fact in facts if fact.startswith("study ")), None)


def test_no_study_estimate_from_the_first_epochs_of_the_first_trial() -> None:
    """A full-length guess from one epoch said 32 minutes for a study that took 88 s."""
    clock = FakeClock()
    study = optuna.create_study()
    progress = TrialProgress(Console(file=io.StringIO()), study, 30, 20, live=False, clock=clock)
    progress.on_epoch(0, epoch_result(seconds=5.0))
    assert study_fact(progress, clock.now) is None


def test_study_estimate_is_a_range_from_what_finished_trials_cost_pruned_ones_included() -> None:
    clock = FakeClock()
    study = optuna.create_study()
    progress = TrialProgress(Console(file=io.StringIO()), study, 10, 20, live=False, clock=clock)
    for seconds, state in ((2.0, TrialState.PRUNED), (2.0, TrialState.PRUNED)):
        progress.on_trial_end(study, add_trial(study, seconds, state))
    assert study_fact(progress, clock.now) is None  # two trials say too little
    for seconds in (6.0, 10.0):
        progress.on_trial_end(study, add_trial(study, seconds, TrialState.COMPLETE))
    # 6 trials left; the middle half of the costs is 2 s to 7 s a trial.
    assert study_fact(progress, clock.now) == "study 12.0s to 42.0s left"
    for seconds in (2.0, 2.0, 2.0, 2.0, 2.0):
        progress.on_trial_end(study, add_trial(study, seconds, TrialState.PRUNED))
    progress.watch(lambda trial: 0.0)(study.ask())  # the last trial runs: no "0s to ..."
    progress.on_epoch(9, epoch_result(seconds=1.0))
    assert study_fact(progress, clock.now) == "study ~2.0s left"


def test_elapsed_counts_from_the_start_of_the_command_as_the_budget_does() -> None:
    clock = FakeClock()
    progress = TrialProgress(
        Console(file=io.StringIO()),
        optuna.create_study(),
        None,
        2,
        live=False,
        clock=clock,
        started=clock.now - 30.0,  # data loading and the budget probe took 30 s
        deadline=clock.now + 90.0,
    )
    facts = progress._study_facts(clock.now)
    assert "elapsed 30.0s" in facts and "budget 1m 30s left" in facts
