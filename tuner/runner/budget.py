"""A run's wall-clock budget: the deadline, the cost estimate, the epochs and rungs it allows.

The budget is a promise: the run ends at `started + budget`. Trials whose first rung cannot
finish before then are not started; the trial running at the deadline is cut inside its epoch
(`fit`'s should_stop) and ends pruned with stop_reason "budget".
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from collections.abc import Callable

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from tuner import attrs
from tuner.engine import DeviceData, EngineOptions
from tuner.runner.probe import first_config, probe_seconds_per_image
from tuner.search.schedule import TrialSchedule
from tuner.spec import StudySpec, TrainingSpec
from tuner.spec.budget import format_duration

log = logging.getLogger(__name__)

# Before this study has measured anything, the probe (`tuner.runner.probe`) times a few
# batches of the configuration the run trains first (`first_config`) on this machine, now,
# its load included; trials replace the guess with their own measure. Whole epochs came out
# within this margin of the probe's guess on the CPUs tried (bench/RESULTS.md, "The budget's
# probe against whole epochs"): a full trial is planned to fit in the time left with it, so a
# study whose full_trial_share is near 1 still sees its first trial finish.
ESTIMATE_MARGIN = 1.3
# A first result (the short trial of [training].first_result_epochs) is worth its time when
# the full trial after it trains at least twice its epochs: then it arrives in at most a third
# of the time to the full result. With less, the budget goes to the full trial alone.
FIRST_RESULT_MIN_RATIO = 2
# The running trial is cut this long before the deadline: its record and the summary fit.
END_MARGIN_SECONDS = 1.0
# A budget too short for one epoch of the first configuration trains the first trial on the
# part of the training split that fits, when that is at least this share of it (less says
# little about the configuration). An evaluated image is counted as a third of a trained one
# (a forward pass, no backward): on the safe side of what an in-epoch report measured.
MIN_EPOCH_SHARE = 0.1
EVAL_IMAGE_COST = 1 / 3


def measured_seconds_per_image(study: optuna.Study) -> float | None:
    """The median seconds per training image of this study's ended trials, if any measured."""
    rates = [
        trial.user_attrs[attrs.TRAIN_SECONDS] / trial.user_attrs[attrs.TRAIN_IMAGES]
        for trial in study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)
        )
        if trial.user_attrs.get(attrs.TRAIN_IMAGES) and attrs.TRAIN_SECONDS in trial.user_attrs
    ]
    return statistics.median(rates) if rates else None


def budget_epochs(
    budget: float,
    epoch_seconds: float,
    max_epochs: int,
    share: float,
    left: float | None = None,
    min_epochs: int = 0,
) -> int:
    """Epochs a full-fidelity trial may take: `share` of the budget, or `min_epochs` if more,
    and no more than fit in the `left` seconds with the estimate's margin; 1..max_epochs."""
    if epoch_seconds <= 0:
        return max_epochs
    epochs = max(math.floor(share * budget / epoch_seconds), min_epochs)
    if left is not None:
        epochs = min(epochs, math.floor(left / (ESTIMATE_MARGIN * epoch_seconds)))
    return max(1, min(max_epochs, epochs))


def full_trial_epochs(
    training: TrainingSpec, budget: float, epoch_seconds: float, left: float
) -> int:
    """`budget_epochs` with the study file's [training] keys: its max_epochs,
    full_trial_share and full_trial_min_epochs."""
    return budget_epochs(
        budget,
        epoch_seconds,
        training.max_epochs,
        training.full_trial_share,
        left=left,
        min_epochs=training.full_trial_min_epochs,
    )


def first_result_budget_epochs(
    asked: int, full_epochs: int, epoch_seconds: float, left: float
) -> int:
    """Epochs of the first-result trial in a budget run: all `asked`, or 0 (skipped). It runs
    when the full trial of `full_epochs` trains at least FIRST_RESULT_MIN_RATIO times as many
    and both fit in the `left` seconds, the full trial with the estimate's margin. The short
    trial's own time needs none: it is measured before the full trial is planned for good
    (`BudgetPlan.replan_after_first_result`), so a guess too fast shortens the full trial then
    rather than breaking the deadline, while a guess too slow would skip it. Never a cut: a
    short schedule decays its rate sooner and lands under what the study asked for
    (bench/RESULTS.md, the search races)."""
    if asked == 0 or full_epochs < FIRST_RESULT_MIN_RATIO * asked:
        return 0
    if epoch_seconds <= 0:
        return asked
    needed = epoch_seconds * (asked + ESTIMATE_MARGIN * full_epochs)
    return asked if needed <= left else 0


def first_result_pending(study: optuna.Study) -> bool:
    """Whether the study's queued first-result trial will train: it waits, and no trial has
    finished (a retry queued behind a finished trial is skipped, see the objective)."""
    trials = study.get_trials(deepcopy=False)
    if any(trial.state == TrialState.COMPLETE for trial in trials):
        return False
    return any(
        trial.state == TrialState.WAITING and trial.user_attrs.get(attrs.FIRST_RESULT)
        for trial in trials
    )


@dataclasses.dataclass
class BudgetClock:
    """The deadline of one run and whether it stopped the run (state: set by the stopper)."""

    deadline: float  # time.time() at which the run must have ended
    budget: float  # seconds
    first_rung_images: int  # training images a new trial needs before its first report
    seconds_per_image: float  # the estimate when the run started, updated as trials end
    clock: Callable[[], float] = time.time
    exhausted: bool = False

    def left(self) -> float:
        return self.deadline - self.clock()

    def should_stop(self) -> bool:
        """For `fit`: cut the running trial now (polled per batch)."""
        if self.left() <= END_MARGIN_SECONDS:
            self.exhausted = True
            return True
        return False

    def first_rung_fits(self) -> bool:
        """Whether a new trial's first rung can finish before the deadline, by the estimate."""
        needed = self.first_rung_images * self.seconds_per_image
        left = self.left() - END_MARGIN_SECONDS
        if needed < left:
            return True
        log.warning(
            "budget: no new trial starts: %s, and a new trial needs about %s before its first "
            "report (%d training images at %.1f ms each, as measured here)",
            f"only {format_duration(left)} of the budget is left"
            if left >= 0.05
            else "the budget is used up",
            format_duration(needed),
            self.first_rung_images,
            1e3 * self.seconds_per_image,
        )
        self.exhausted = True
        return False

    def after_trial(self, study: optuna.Study, _trial: FrozenTrial) -> None:
        """An Optuna callback: re-estimate the cost, and stop starting trials that won't fit."""
        self.seconds_per_image = measured_seconds_per_image(study) or self.seconds_per_image
        if not self.first_rung_fits():
            study.stop()


@dataclasses.dataclass(frozen=True)
class BudgetPlan:
    """What a budget run trains: a full trial's epochs, the first-result trial's, the clock;
    `schedule` applies it to the study file's schedule."""

    epochs: int
    first_result_epochs: int  # 0: the first result is skipped (or none was asked)
    clock: BudgetClock
    training: TrainingSpec  # the study file's, before the budget fixed max_epochs
    train_count: int
    steps_per_epoch: int
    # Training images per epoch when a whole epoch does not fit (None: the whole split).
    epoch_images: int | None = None
    # The budget a first trial of whole epochs needs here (start-up and probe included).
    needed: float = 0.0

    def schedule(self, base: TrialSchedule) -> TrialSchedule:
        """The study file's schedule narrowed to this plan, with its deadline."""
        epoch_seconds = self.clock.seconds_per_image * (self.epoch_images or self.train_count)
        return dataclasses.replace(
            base,
            max_epochs=self.epochs,
            steps_per_epoch=self.steps_per_epoch,
            first_result_epochs=self.first_result_epochs,
            train_images=self.epoch_images,
            deadline=self.clock,
            budget_epochs=self.clock.budget / epoch_seconds if epoch_seconds > 0 else None,
        )

    def replan_after_first_result(
        self, study: optuna.Study, trial: FrozenTrial, current: TrialSchedule
    ) -> TrialSchedule | None:
        """After the first-result trial: the `current` schedule with the full trial's epochs
        planned again from its measured speed: whole epochs with validation, against the
        probe's few batches (the host's speed also swings within an hour). Not when a full
        trial has started (a worker sharing the study): the pruner compares trials of one
        schedule. None when the epochs stay."""
        if not trial.user_attrs.get(attrs.FIRST_RESULT) or trial.state != TrialState.COMPLETE:
            return None
        others = (t for t in study.get_trials(deepcopy=False) if t.number != trial.number)
        if any(t.state != TrialState.WAITING for t in others):
            return None
        rate = measured_seconds_per_image(study)
        if rate is None:
            return None
        epochs = full_trial_epochs(
            self.training, self.clock.budget, rate * self.train_count, self.clock.left()
        )
        if epochs == current.max_epochs:
            return None
        log.info(
            "budget: the first result measured %.0fs an epoch: full trials train %d epochs "
            "(the probe's guess planned %d)",
            rate * self.train_count,
            epochs,
            current.max_epochs,
        )
        study.set_user_attr(attrs.STUDY_BUDGET_EPOCHS, epochs)
        budget_epochs = self.clock.budget / (rate * self.train_count)
        return dataclasses.replace(current, max_epochs=epochs, budget_epochs=budget_epochs)


def plan_budget(
    study: optuna.Study,
    spec: StudySpec,
    data: DeviceData,
    device: torch.device,
    budget: float,
    started_at: float,
    steps_per_epoch: int,
    options: EngineOptions | None = None,
) -> BudgetPlan:
    """The max_epochs a `budget` run trains (`[training].full_trial_share` of the budget per
    full trial, at least `full_trial_min_epochs`, from the study's measured cost or the guess),
    the epochs of a pending first-result trial, and the run's clock.

    The first result comes first: its asked epochs are taken out of the time the full trial is
    planned in, as long as the full trial keeps FIRST_RESULT_MIN_RATIO times as many (else it is
    skipped and the full trial has the budget). The study keeps the epochs with the budget that
    chose them: later runs with the same budget (and workers sharing the study) train the same
    schedule; a run with another budget plans again.

    When not even one epoch of the first configuration fits and the study has no complete
    trial, the run trains one epoch on the part of the training split that fits
    (`short_epoch_images`), so it ends with a finished trial; the log says so in one line,
    with the budget a whole epoch needs here.
    """
    train_count = len(data.train_labels)
    rate = measured_seconds_per_image(study) or probe_seconds_per_image(
        data, device, first_config(spec), options
    )
    epoch_seconds = rate * train_count
    now = time.time()
    left = started_at + budget - now  # start-up and the probe came out of it
    val_seconds = EVAL_IMAGE_COST * rate * len(data.val_labels)
    needed = (now - started_at) + ESTIMATE_MARGIN * (epoch_seconds + val_seconds)
    needed += END_MARGIN_SECONDS
    study.set_user_attr(attrs.STUDY_BUDGET_NEEDED, round(needed, 1))
    asked = spec.training.first_result_epochs if first_result_pending(study) else 0
    epoch_images = None
    if needed > budget and not _has_complete_trial(study):
        epoch_images = short_epoch_images(rate, train_count, len(data.val_labels), left)
        _say_too_short(budget, needed, epoch_seconds, epoch_images, train_count)
    stored = study.user_attrs.get(attrs.STUDY_BUDGET_EPOCHS)
    stored_budget = study.user_attrs.get(attrs.STUDY_BUDGET_SECONDS)
    if epoch_images is not None:
        epochs, first_result, asked = 1, 0, 0
        steps_per_epoch = 1  # a trial this short has no rungs to be judged at
        study.set_user_attr(attrs.STUDY_BUDGET_EPOCHS, epochs)
        study.set_user_attr(attrs.STUDY_BUDGET_SECONDS, budget)
    elif stored is not None and stored_budget is not None and abs(stored_budget - budget) < 1:
        epochs = min(int(stored), spec.training.max_epochs)
        first_result = first_result_budget_epochs(asked, epochs, epoch_seconds, left)
    else:
        epochs = full_trial_epochs(spec.training, budget, epoch_seconds, left)
        after_first = full_trial_epochs(
            spec.training, budget, epoch_seconds, left - epoch_seconds * asked
        )
        first_result = first_result_budget_epochs(asked, after_first, epoch_seconds, left)
        if first_result:
            epochs = after_first
        if stored is not None and stored != epochs:
            # Trials of the earlier budget keep their schedule; the pruner compares this
            # run's with theirs step by step, which favours the shorter schedules a little.
            log.warning(
                "budget: trials now train up to %d epochs (the earlier budget%s chose %d)",
                epochs,
                "" if stored_budget is None else f" of {format_duration(stored_budget)}",
                stored,
            )
        study.set_user_attr(attrs.STUDY_BUDGET_EPOCHS, epochs)
        study.set_user_attr(attrs.STUDY_BUDGET_SECONDS, budget)
    if asked and not first_result:
        log.info(
            "budget: no first result: %d epochs beside a full trial of %d do not fit in %s "
            "(~%.0fs an epoch here)",
            asked,
            epochs,
            format_duration(max(0.0, left)),
            epoch_seconds,
        )
    images = train_count if epoch_images is None else epoch_images
    first_rung = math.ceil(images / steps_per_epoch)
    clock = BudgetClock(started_at + budget, budget, first_rung, rate)
    return BudgetPlan(
        epochs,
        first_result,
        clock,
        spec.training,
        train_count,
        steps_per_epoch,
        epoch_images,
        needed,
    )


def short_epoch_images(rate: float, train_count: int, val_count: int, left: float) -> int | None:
    """Training images of one epoch, with its validation, that fit in `left` seconds with the
    estimate's margin; None when that is under MIN_EPOCH_SHARE of the `train_count`."""
    if rate <= 0:
        return None
    fits = (left - END_MARGIN_SECONDS) / (ESTIMATE_MARGIN * rate) - EVAL_IMAGE_COST * val_count
    images = min(train_count, math.floor(fits))
    return images if images >= MIN_EPOCH_SHARE * train_count else None


def _say_too_short(
    budget: float, needed: float, epoch_seconds: float, epoch_images: int | None, train_count: int
) -> None:
    """One line at the start: what a first trial of whole epochs needs here, and what is done."""
    what = (
        f"the first trial trains 1 epoch on {epoch_images} of the {train_count} training images"
        if epoch_images is not None
        else "no trial can finish"
    )
    log.warning(
        "budget: %s is too short for one epoch here (~%s of training, measured now): %s; "
        "--budget %s or more trains whole epochs",
        format_duration(budget),
        format_duration(epoch_seconds),
        what,
        format_duration(math.ceil(needed)),
    )


def _has_complete_trial(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
