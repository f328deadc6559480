"""How a `tuner run` ended, as data (`RunSummary`), and the lines that say it to a person."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table

from tuner import attrs
from tuner.errors import TunerError
from tuner.search.study import count_finished
from tuner.spec.budget import format_duration


class StopReason(enum.StrEnum):
    """Why a run stopped; a new way to stop (a wall-clock budget, say) adds a member here."""

    TRIALS = "trials"  # the study has its --trials finished trials
    TIMEOUT = "timeout"  # --timeout ran out: no new trial was started after it
    BUDGET = "budget"  # the --budget ran out: the running trial was cut, none started after
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM
    ERROR = "error"  # a user or environment error (a lost database, a worker that failed)


# When several workers stop for different reasons, the run reports the most serious one.
_SEVERITY = (
    StopReason.TRIALS,
    StopReason.TIMEOUT,
    StopReason.BUDGET,
    StopReason.INTERRUPTED,
    StopReason.ERROR,
)
EXIT_CODES = {StopReason.INTERRUPTED: 130, StopReason.ERROR: 2}


@dataclass(frozen=True)
class TrialCounts:
    """Trials that ended during one run, by state."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0  # interrupted trials included: they are retried

    @property
    def total(self) -> int:
        return self.complete + self.pruned + self.failed

    def __add__(self, other: TrialCounts) -> TrialCounts:
        return TrialCounts(
            self.complete + other.complete, self.pruned + other.pruned, self.failed + other.failed
        )

    def counted(self, state: TrialState) -> TrialCounts:
        """These counts plus one trial that ended in `state`."""
        if state == TrialState.COMPLETE:
            return replace(self, complete=self.complete + 1)
        if state == TrialState.PRUNED:
            return replace(self, pruned=self.pruned + 1)
        if state == TrialState.FAIL:
            return replace(self, failed=self.failed + 1)
        return self


@dataclass(frozen=True)
class RunSummary:
    """What one `tuner run` did and where the study stands after it."""

    study: str
    reason: StopReason
    ran: TrialCounts  # trials this run ended (all its workers)
    finished: int  # the study's finished (complete + pruned) trials now, all runs together
    target: int | None  # --trials; None: the budget alone ends the run
    seconds: float  # wall time of the run
    report_command: str  # the command that writes the study's report
    metric: str = "value"
    best_value: float | None = None
    best_trial: int | None = None
    best_params: Mapping[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    budget: float | None = None  # --budget (or the study file's) in seconds
    budget_epochs: int | None = None  # the max_epochs the budget chose
    budget_needed: float | None = None  # the budget a first trial of whole epochs needs here
    retried: tuple[int, ...] = ()  # interrupted trials queued to run again, first
    detail: str | None = None  # the error, for StopReason.ERROR

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.reason, 0)

    @property
    def left(self) -> int:
        return 0 if self.target is None else max(0, self.target - self.finished)


def study_state(study: optuna.Study) -> dict[str, Any]:
    """The study-wide fields of a RunSummary, read from storage now."""
    state: dict[str, Any] = {
        "finished": count_finished(study),
        "metric": study.user_attrs.get(attrs.STUDY_METRIC, "value"),
    }
    try:
        if len(study.directions) > 1:  # the Pareto trial with the best first objective
            sign = -1.0 if study.directions[0].name == "MAXIMIZE" else 1.0
            best = min(study.best_trials, key=lambda t: (sign * t.values[0], t.number))
        else:
            best = study.best_trial
    except ValueError:  # no complete trial yet
        return state
    best_fields = {
        "best_value": best.values[0],
        "best_trial": best.number,
        "best_params": best.params,
    }
    return {**state, **best_fields}


@dataclass
class StudyStateSeen:
    """The study-wide fields of a RunSummary as this process last read them (after each trial).

    A run that lost its storage cannot read them at the end; its summary then says what this
    process saw last, rather than "no complete trial yet".
    """

    state: dict[str, Any] = field(default_factory=dict)

    def on_trial_end(self, study: optuna.Study, _trial: FrozenTrial) -> None:
        self.state = study_state(study)

    def now(self, study: optuna.Study) -> dict[str, Any]:
        """`study_state(study)`, or what was seen last when the storage is gone."""
        try:
            return study_state(study)
        except TunerError:
            return self.state


def most_serious(reasons: Iterable[StopReason]) -> StopReason:
    """The reason a run of several workers reports."""
    return max(reasons, key=_SEVERITY.index, default=StopReason.TRIALS)


def plural(count: int, noun: str) -> str:
    """'1 trial', '2 trials'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def summary_lines(summary: RunSummary) -> list[str]:
    """The summary a run ends with: why it stopped, what it did, what is left, what next."""
    s = summary
    lines = [_stop_line(s)]
    ran = s.ran
    lines.append(
        f"this run: {plural(ran.total, 'trial')} in {format_duration(s.seconds)} "
        f"({ran.complete} complete, {ran.pruned} pruned, {ran.failed} failed)"
    )
    best = (
        "no complete trial yet"
        if s.best_value is None
        else f"best {s.metric} {s.best_value:.4f} (trial {s.best_trial})"
    )
    if s.budget is not None:
        epochs = (
            ""
            if s.budget_epochs is None
            else f"; trials train up to {plural(s.budget_epochs, 'epoch')}"
        )
        used, budget = format_duration(s.seconds), format_duration(s.budget)
        lines.append(f"budget: {used} used of {budget}{epochs}")
    finished = (
        plural(s.finished, "finished trial")
        if s.target is None
        else f"{s.finished}/{plural(s.target, 'finished trial')}"
    )
    lines.append(f"study {s.study}: {finished}, {best}")
    if s.reason == StopReason.BUDGET and s.best_value is None and s.budget_needed:
        lines.append(_nothing_finished_line(s.budget or 0, s.budget_needed))
    if s.left:
        lines.append(f"left: {plural(s.left, 'trial')}; run the same command to continue")
    lines.append(f"report: {s.report_command}")
    return lines


def _nothing_finished_line(budget: float, needed: float) -> str:
    """Why a budget run ended without a complete trial: the budget, or the estimate, was short."""
    needed_text = format_duration(math.ceil(needed))
    if needed > budget:
        return (
            f"no trial finished: a first trial needs a budget of about {needed_text} on this "
            "machine now (start-up and one epoch of the first configuration, measured)"
        )
    return (
        f"no trial finished: the first trial took longer than the ~{needed_text} estimated "
        "for it here (the machine slowed, or its configuration costs more); give a longer --budget"
    )


def _stop_line(s: RunSummary) -> str:
    if s.reason == StopReason.INTERRUPTED:
        if not s.retried:
            return f"interrupted: no trial was running; run the same command to resume {s.study}"
        numbers = ", ".join(str(number) for number in s.retried)
        trials, were, run = (
            (f"trial {numbers}", "was", "runs")
            if len(s.retried) == 1
            else (f"trials {numbers}", "were", "run")
        )
        return (
            f"interrupted: the running {trials} {were} marked failed and {run} again first; "
            f"run the same command to resume study {s.study}"
        )
    if s.reason == StopReason.ERROR:
        return "stopped by an error (the `error:` line says which)"
    if s.reason == StopReason.TIMEOUT:
        limit = "" if s.timeout is None else f" of {format_duration(s.timeout)}"
        return (
            f"stopped: the --timeout{limit} ran out, so no new trial was started "
            f"({s.finished} of {s.target if s.target is not None else 'no limit'} finished)"
        )
    if s.reason == StopReason.BUDGET:
        return (
            f"stopped: the budget of {format_duration(s.budget or 0)} ran out (a trial running "
            "at the deadline is cut and pruned; none starts that could not report once in time)"
        )
    if s.ran.total == 0:
        return f"study {s.study} already has {plural(s.finished, 'finished trial')}"
    return f"done: study {s.study} reached {plural(s.target, 'finished trial')}"


def target_text(target: int | None) -> str:
    """How a run's first line states its trial target."""
    if target is None:
        return "trials until the budget ends"
    return f"{plural(target, 'trial')} in total"


def print_best_params(
    console: Console, metric: str, number: int | None, value: float | None, params: Mapping
) -> None:
    """The best trial's value and parameters, or that there is none yet."""
    if number is None or value is None:
        console.print("no trial has completed yet")
        return
    console.print(f"best trial {number}: {metric} = {value:.4f}")
    table = Table("parameter", "value", box=None)
    for name, param in params.items():
        table.add_row(name, f"{param:.4g}" if isinstance(param, float) else str(param))
    console.print(table)


def print_run_end(console: Console, summary: RunSummary) -> None:
    """The best configuration so far, then the summary every `tuner run` ends with."""
    print_best_params(
        console, summary.metric, summary.best_trial, summary.best_value, summary.best_params
    )
    for line in summary_lines(summary):
        console.print(line)
