"""A run's wall-clock budget: the deadline, the cost estimate, the epochs and rungs it allows.

The budget is a promise: the run ends at `started + budget`. Trials whose first rung cannot
finish before then are not started; the trial running at the deadline is cut inside its epoch
(`fit`'s should_stop) and ends pruned with stop_reason "budget".
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import statistics
import time
from collections.abc import Callable

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from tuner import attrs
from tuner.config import TrialConfig
from tuner.engine import DeviceData, EngineOptions, TrainingStopped, build_cnn, fit
from tuner.search.samplers import build_pruner
from tuner.search.space import suggest
from tuner.spec import StudySpec, TrainingSpec
from tuner.spec.budget import format_duration
from tuner.spec.enqueue import trial_params

log = logging.getLogger(__name__)

# Before this study has measured anything, a probe times a few batches of the configuration
# the run trains first (the study's first [[enqueue]] table, else TrialConfig()) on this
# machine, now (its load included: the same trial took 9 ms an image on an idle 2-core CPU
# and 17 ms with 8 other jobs). That rate is the guess until trials measure their own. The
# lower quartile of the batch times after a warm-up is the measure: a fresh process runs its
# first batches up to 2x slower than the rest of the epoch (Fashion-MNIST, batch 128: 51, 47,
# 41 ms, then 20-33 ms). Even so the probe stays on the safe side: it guesses 12.5-15 s for the
# known good model's epochs that take ~10.5 s with their validation reports (idle AMD EPYC,
# bench/RESULTS.md), so no safety factor is applied; with the mean of 5 batches times 1.5
# it had guessed 25 s.
# A whole epoch against the probe's guess: 0.7-0.84x on the Zen 4 above, 1.05-1.28x on an
# AVX2-only AMD EPYC (validation and in-epoch reports, which the probe leaves out; the session
# 5 race). Until session 8 the probe trained in fp32 while the trials autocast to bf16 on CPUs
# with native bf16, which explains the Zen 4's figures: on the Xeon with AMX the fp32 probe
# guessed 43 s, the bf16 one 25 s, for a bf16 epoch of 28.7 s (1.15x). A full trial is
# planned to fit in the time left with this margin, so a study whose full_trial_share is near
# 1 still sees its first trial finish.
ESTIMATE_MARGIN = 1.3
# A first result (the short trial of [training].first_result_epochs) is worth its time when
# the full trial after it trains at least twice its epochs: then it arrives in at most a third
# of the time to the full result. With less, the budget goes to the full trial alone.
FIRST_RESULT_MIN_RATIO = 2
PROBE_BATCHES = 32
PROBE_WARMUP_BATCHES = 8  # not timed: a fresh process warms up longer
# Training images per in-epoch report in the default schedule: small datasets report once
# per epoch, 10,000 images twice, Fashion-MNIST's 54,000 eight times (MAX_DEFAULT_STEPS).
# An in-epoch report evaluates SLICE_VAL_IMAGES (1,000) images at ~0.1 of a training image's
# cost each: ~2% on top of 5,000 training images (measured, bench/RESULTS.md).
IMAGES_PER_STEP = 5_000
MAX_DEFAULT_STEPS = 8
# The running trial is cut this long before the deadline: its record and the summary fit.
END_MARGIN_SECONDS = 1.0
RUNG_PRUNERS = ("hyperband", "successive-halving")
# Pruner options a study file writes in epochs: the unit its author thinks in, and the one
# every shipped file was written in before in-epoch reports existed (median's
# n_warmup_steps = 2 meant two epochs, not a quarter of one).
EPOCH_OPTIONS = {
    "median": ("n_warmup_steps", "interval_steps"),
    "hyperband": ("min_resource", "max_resource"),
    "successive-halving": ("min_resource",),
}


def default_steps_per_epoch(spec: StudySpec, train_count: int) -> int:
    """[training].reports_per_epoch, or one report per ~IMAGES_PER_STEP training images."""
    if spec.training.reports_per_epoch:
        return spec.training.reports_per_epoch
    return max(1, min(MAX_DEFAULT_STEPS, round(train_count / IMAGES_PER_STEP)))


def rung_pruner(
    spec: StudySpec, max_epochs: int, steps_per_epoch: int
) -> optuna.pruners.BasePruner:
    """The study file's pruner, its rungs counted in steps: the file's step options count
    epochs (EPOCH_OPTIONS) and become steps; a Hyperband or successive-halving pruner without
    min_resource/max_resource gets 1 step and the full schedule."""
    options = dict(spec.pruner.options)
    for key in EPOCH_OPTIONS.get(spec.pruner.name, ()):
        if isinstance(options.get(key), int):  # "auto" stays Optuna's
            options[key] *= steps_per_epoch
    if spec.pruner.name in RUNG_PRUNERS:
        options.setdefault("min_resource", 1)
        if spec.pruner.name == "hyperband":
            # A budget may fix fewer epochs than the file's max_resource: no trial could reach
            # the rungs beyond, and Hyperband would size its brackets for them.
            schedule = max_epochs * steps_per_epoch
            given = options.get("max_resource", schedule)
            options["max_resource"] = min(given, schedule) if isinstance(given, int) else given
    return build_pruner(spec.pruner.name, options)


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


def first_config(spec: StudySpec) -> TrialConfig:
    """The configuration a new study trains first: its first [[enqueue]] table when that fixes
    every parameter, else the default model (TrialConfig())."""
    if spec.enqueue:
        fixed = optuna.trial.FixedTrial(trial_params(spec.enqueue[0], spec.space))
        try:
            return suggest(fixed, spec)
        except ValueError:  # a partial table: the rest is sampled, the model is unknown
            pass
    return TrialConfig()


def probe_seconds_per_image(
    data: DeviceData,
    device: torch.device,
    config: TrialConfig | None = None,
    options: EngineOptions | None = None,
) -> float:
    """Seconds per training image of `config` (default TrialConfig()) here, in the precision
    the trials train in (`options` resolved for this model, as the objective does): the lower
    quartile of PROBE_BATCHES batches after the warm-up ones."""
    config = dataclasses.replace(config or TrialConfig(), max_epochs=1, patience=0)
    torch.manual_seed(0)
    model = build_cnn(config, data.input_shape, data.num_classes)
    # Not compiled: a probe of 40 batches cannot pay back the compile time (a compiled
    # trial's own measure replaces the guess once it has ended).
    engine = dataclasses.replace(options or EngineOptions(), compile=False).resolve(
        model, data.input_shape, config.batch_size, device
    )
    polls: list[float] = []

    def stop_after_probe() -> bool:
        polls.append(time.perf_counter())
        return len(polls) > PROBE_BATCHES

    try:
        for _ in fit(model, data, config, device, engine, should_stop=stop_after_probe):
            pass  # an epoch shorter than the probe: the polls so far are the measure
    except TrainingStopped:
        pass
    batch_seconds = [later - earlier for earlier, later in itertools.pairwise(polls)]
    timed = batch_seconds[PROBE_WARMUP_BATCHES:] or batch_seconds
    if not timed:
        return 0.0
    quartile = statistics.quantiles(timed, n=4)[0] if len(timed) > 1 else timed[0]
    return quartile / config.batch_size


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
    rather than breaking the deadline, while a guess too slow would skip it (session 8's
    probe, still in fp32, guessed 40 s an epoch for 31 s). Never a cut: a short schedule
    decays its rate sooner and lands under what the study asked for (Fashion-MNIST: 2 epochs
    gave 0.885 where 4 give 0.909-0.913)."""
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


@dataclasses.dataclass
class BudgetPlan:
    """What a budget run trains: a full trial's epochs, the first-result trial's, the clock.

    State: `epochs` is planned again once, from the first result's measured speed, before any
    full trial has started (`replan_after_first_result`).
    """

    epochs: int
    first_result_epochs: int  # 0: the first result is skipped (or none was asked)
    clock: BudgetClock
    training: TrainingSpec  # the study file's, before the budget fixed max_epochs
    train_count: int

    def replan_after_first_result(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """After the first-result trial: plan the full trial's epochs again from its measured
        speed: four whole epochs with validation, against the probe's few batches (1.15x off
        on the Xeon of session 8; the host's speed also swings 2x within an hour). Not when a
        full trial has started (a worker sharing the study): the pruner compares trials of
        one schedule. Whether the epochs changed."""
        if not trial.user_attrs.get(attrs.FIRST_RESULT) or trial.state != TrialState.COMPLETE:
            return False
        others = (t for t in study.get_trials(deepcopy=False) if t.number != trial.number)
        if any(t.state != TrialState.WAITING for t in others):
            return False
        rate = measured_seconds_per_image(study)
        if rate is None:
            return False
        epochs = full_trial_epochs(
            self.training, self.clock.budget, rate * self.train_count, self.clock.left()
        )
        if epochs == self.epochs:
            return False
        log.info(
            "budget: the first result measured %.0fs an epoch: full trials train %d epochs "
            "(the probe's guess planned %d)",
            rate * self.train_count,
            epochs,
            self.epochs,
        )
        self.epochs = epochs
        study.set_user_attr(attrs.STUDY_BUDGET_EPOCHS, epochs)
        return True


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
    schedule; a run with another budget plans again."""
    train_count = len(data.train_labels)
    rate = measured_seconds_per_image(study) or probe_seconds_per_image(
        data, device, first_config(spec), options
    )
    epoch_seconds = rate * train_count
    left = started_at + budget - time.time()  # start-up and the probe came out of it
    asked = spec.training.first_result_epochs if first_result_pending(study) else 0
    stored = study.user_attrs.get(attrs.STUDY_BUDGET_EPOCHS)
    stored_budget = study.user_attrs.get(attrs.STUDY_BUDGET_SECONDS)
    if stored is not None and stored_budget is not None and abs(stored_budget - budget) < 1:
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
    first_rung = math.ceil(train_count / steps_per_epoch)
    clock = BudgetClock(started_at + budget, budget, first_rung, rate)
    return BudgetPlan(epochs, first_result, clock, spec.training, train_count)
