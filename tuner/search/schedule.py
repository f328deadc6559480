"""What every trial of a run is scheduled to do: one frozen `TrialSchedule`, and its pruner.

A run's schedule used to travel as loose arguments (epochs, reports per epoch, first-result
epochs, the deadline) and its pruner was built in three places. Here it is one object: the
study file gives the first one (`study_schedule`), a budget run narrows it
(`tuner.runner.budget`), and the run holds the current one in `RunSchedule`, where a re-plan
swaps in a new one and the study's pruner with it. The objective asks it as each trial starts.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Protocol

from tuner.search.samplers import PRUNER_ENTRIES
from tuner.spec.schema import PrunerSpec, SamplerSpec

if TYPE_CHECKING:
    import optuna

    from tuner.spec import StudySpec

# Training images per in-epoch report when the study file does not say
# ([training].reports_per_epoch): small datasets report once per epoch, 10,000 images twice,
# 40,000 or more MAX_DEFAULT_STEPS times. An in-epoch report evaluates a fixed validation
# subset (`tuner.engine.train.SLICE_VAL_IMAGES`): cheap against 5,000 training images.
IMAGES_PER_STEP = 5_000
MAX_DEFAULT_STEPS = 8
# A budget run's pruner when the study file has no [pruner] table (`choose_pruner`): each rung keeps
# the best third of the trials that reached it (Hyperband's and ASHA's usual factor).
DEFAULT_REDUCTION_FACTOR = 3
BUDGET_PRUNER = PrunerSpec(
    "successive-halving", {"reduction_factor": DEFAULT_REDUCTION_FACTOR}, default=True
)
# A budget run's sampler when the study file has no [sampler] table (`choose_sampler`): TPE on
# the highest rung enough trials reached (tuner.search.rung_tpe), since successive halving
# prunes most trials and plain TPE would rank them by how far they got, mixing fidelities.
BUDGET_SAMPLER = "rung-tpe"
# At most this many halvings below the full schedule: a first rung at 1/27 of a full trial
# still ranks trials by where they end up; far shorter ones rank by how fast they start.
MAX_HALVINGS = 3


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
    # Epochs of training the run's budget holds, by the plan's estimate (None: no budget);
    # a rung pruner given no first rung places it from this (`first_rung_steps`).
    budget_epochs: float | None = None

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
            options.setdefault(entry.first_rung, self.first_rung_steps(options))
        if entry.last_rung:
            given = options.get(entry.last_rung, self.total_steps)
            options[entry.last_rung] = (
                min(given, self.total_steps) if isinstance(given, int) else given
            )
        return entry.cls(**options)

    def first_rung_steps(self, options: dict[str, Any]) -> int:
        """Where a rung pruner given no first rung judges a trial first, in reports.

        Without a budget: at the first report. With one: successive halving's rungs at
        r, r*eta, r*eta**2, ... up to the full schedule cost about one full trial each when
        they fill up, so the budget's full trials (`budget_epochs` / `max_epochs`) say how
        many rungs it affords, and the first sits that many halvings below the full schedule
        (none: one full trial is all the budget holds, and nothing is cut). The data size
        enters through the reports per epoch (one per ~IMAGES_PER_STEP images).
        """
        if self.budget_epochs is None:
            return 1
        eta = options.get("reduction_factor", DEFAULT_REDUCTION_FACTOR)
        full_trials = math.floor(self.budget_epochs / self.max_epochs)
        halvings = min(max(full_trials - 1, 0), MAX_HALVINGS)
        return max(1, self.total_steps // eta**halvings)


def default_steps_per_epoch(spec: StudySpec, train_count: int) -> int:
    """[training].reports_per_epoch, or one report per ~IMAGES_PER_STEP training images."""
    if spec.training.reports_per_epoch:
        return spec.training.reports_per_epoch
    return max(1, min(MAX_DEFAULT_STEPS, round(train_count / IMAGES_PER_STEP)))


def choose_pruner(spec: StudySpec, budget: float | None = None) -> PrunerSpec:
    """The pruner a run uses: the study file's [pruner] table, the one place that decides.

    When the file has no [pruner] table and the run has a `budget`: asynchronous successive
    halving (`BUDGET_PRUNER`), its first rung placed from the budget and the data size when
    the schedule builds it (`TrialSchedule.first_rung_steps`). The median rule it replaces waits
    for its startup trials before it cuts any (all of them trained in full, a large part of
    a short budget), and with fewer startup trials lets the first long-trained trial be the
    yardstick that cuts every other. Without a budget: the spec's default (median).
    Multi-objective studies are never pruned (Optuna cannot), so theirs stays as it is.
    """
    if budget is not None and spec.pruner.default and not spec.multi_objective:
        return BUDGET_PRUNER
    return spec.pruner


def choose_sampler(spec: StudySpec, budget: float | None = None) -> SamplerSpec:
    """The sampler a run uses: the study file's [sampler] table, beside `choose_pruner`.

    When the file has no [sampler] table and the run has a `budget`: TPE on the highest rung
    that enough trials reached (`BUDGET_SAMPLER`, BOHB's model), with the file's default seed.
    The budget's pruner stops most trials at a low rung, so plain TPE would learn mostly from
    trials ranked by how far they got rather than how good they were. Without a budget: the
    spec's default (TPE). Multi-objective studies report no rungs (Optuna cannot prune them)
    and [constraints] need a sampler that reads them, so theirs stays as it is.
    """
    plain = spec.sampler.default and not spec.multi_objective and not spec.constraints
    if budget is not None and plain:
        return dataclasses.replace(spec.sampler, name=BUDGET_SAMPLER)
    return spec.sampler


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
