"""What every trial of a run is scheduled to do: one frozen `TrialSchedule`, and its pruner.

A run's schedule used to travel as loose arguments (epochs, reports per epoch, first-result
epochs, the deadline) and its pruner was built in three places. Here it is one object: the
study file gives the first one (`study_schedule`), a budget run narrows it
(`tuner.runner.budget`), and the run holds the current one in `RunSchedule`, where a re-plan
swaps in a new one and the study's pruner with it. The objective asks it as each trial starts.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Protocol

from tuner.search.samplers import PRUNER_ENTRIES

if TYPE_CHECKING:
    import optuna

    from tuner.spec import StudySpec
    from tuner.spec.schema import PrunerSpec

# Training images per in-epoch report when the study file does not say
# ([training].reports_per_epoch): small datasets report once per epoch, 10,000 images twice,
# 40,000 or more MAX_DEFAULT_STEPS times. An in-epoch report evaluates a fixed validation
# subset (`tuner.engine.train.SLICE_VAL_IMAGES`): cheap against 5,000 training images.
IMAGES_PER_STEP = 5_000
MAX_DEFAULT_STEPS = 8


class Deadline(Protocol):
    """The run's deadline as a trial sees it (tuner.runner.budget.BudgetClock)."""

    def should_stop(self) -> bool: ...


@dataclasses.dataclass(frozen=True)
class TrialSchedule:
    """What a trial of this run trains and how often it reports.

    `max_epochs` is the full schedule (a budget may fix fewer than the study file's);
    `steps_per_epoch` reports per epoch, the pruner's unit; `first_result_epochs` the short
    trial of [training].first_result_epochs (0: skipped or none asked); `train_images` the
    training images an epoch uses (None: the whole training split; a budget too short for one
    epoch trains its first trial on the first N of the shuffled split); `deadline` the run's
    budget, polled per batch (None: no budget).
    """

    max_epochs: int
    pruner: PrunerSpec
    steps_per_epoch: int = 1
    first_result_epochs: int = 0
    train_images: int | None = None
    deadline: Deadline | None = None

    @property
    def total_steps(self) -> int:
        """The report a trial that trains the full schedule ends with."""
        return self.max_epochs * self.steps_per_epoch

    def build_pruner(self) -> optuna.pruners.BasePruner:
        """The pruner of this schedule, its step options counted in reports.

        The registry entry says which options the study file wrote in epochs
        (`PrunerEntry.epoch_options`); "auto" and other non-integers stay Optuna's.
        """
        entry = PRUNER_ENTRIES[self.pruner.name]
        options = dict(self.pruner.options)
        for key in entry.epoch_options:
            value = options.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                options[key] = value * self.steps_per_epoch
        if entry.first_rung:
            options.setdefault(entry.first_rung, 1)
        if entry.last_rung:
            given = options.get(entry.last_rung, self.total_steps)
            options[entry.last_rung] = (
                min(given, self.total_steps) if isinstance(given, int) else given
            )
        return entry.cls(**options)


def default_steps_per_epoch(spec: StudySpec, train_count: int) -> int:
    """[training].reports_per_epoch, or one report per ~IMAGES_PER_STEP training images."""
    if spec.training.reports_per_epoch:
        return spec.training.reports_per_epoch
    return max(1, min(MAX_DEFAULT_STEPS, round(train_count / IMAGES_PER_STEP)))


def choose_pruner(spec: StudySpec, budget: float | None = None) -> PrunerSpec:
    """The pruner a run uses: the study file's [pruner] table.

    When the file has none, the spec holds its default (median); a run with a `budget` may
    choose another here, the one place that decides.
    """
    return spec.pruner


def study_schedule(
    spec: StudySpec, train_count: int | None = None, budget: float | None = None
) -> TrialSchedule:
    """The schedule the study file asks for, before any budget narrows it: its max_epochs,
    reports per epoch for `train_count` training images (the file's count, else one when
    `train_count` is unknown), its first result."""
    steps = default_steps_per_epoch(spec, train_count) if train_count is not None else None
    return TrialSchedule(
        max_epochs=spec.training.max_epochs,
        pruner=choose_pruner(spec, budget),
        steps_per_epoch=steps or spec.training.reports_per_epoch or 1,
        first_result_epochs=spec.training.first_result_epochs,
    )


class RunSchedule:
    """The schedule a run's trials start with now, and the study it prunes.

    State: a re-plan swaps in a new schedule, here only; the study's pruner is rebuilt with
    it, so trials and pruner never count different schedules.
    """

    def __init__(self, study: optuna.Study, schedule: TrialSchedule) -> None:
        self.study = study
        self.current = schedule
        study.pruner = schedule.build_pruner()

    def swap(self, schedule: TrialSchedule) -> None:
        """Trials started from now on train `schedule`, judged by its pruner."""
        self.current = schedule
        self.study.pruner = schedule.build_pruner()
