"""The only place where Optuna meets training: sample, train, report, prune, record."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict

import optuna
import torch

from tuner import attrs
from tuner.config import TrialConfig
from tuner.engine import (
    BatchCallback,
    DeviceData,
    DivergedError,
    EngineOptions,
    EpochResult,
    SliceResult,
    TrainingStopped,
    count_parameters,
    fit,
    prepare_model,
)
from tuner.engine.checkpoint import TrainingState
from tuner.engine.measure import MEASURES, model_measures
from tuner.search.checkpoints import TrialCheckpoints, run_identity
from tuner.search.constraints import broken, set_constraints
from tuner.search.schedule import RunSchedule, TrialSchedule, study_schedule
from tuner.search.space import suggest
from tuner.spec import StudySpec
from tuner.storage.artifacts import Artifacts

EpochCallback = Callable[[int, EpochResult], None]
TRAINING_MEASURES = {name for name, measure in MEASURES.items() if measure.from_training}
# stop_reason of a trial cut by the run's wall-clock budget (tuner run --budget).
BUDGET_STOP = attrs.BUDGET_STOP
log = logging.getLogger(__name__)


def worker_id() -> str:
    """'hostname:pid' of this process, recorded on every trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


@dataclasses.dataclass(frozen=True)
class TrialHooks:
    """What a run watches of each trial: `on_epoch(trial number, result)` after every epoch,
    `on_batch(done, per_epoch)` within one (see `fit`)."""

    on_epoch: EpochCallback | None = None
    on_batch: BatchCallback | None = None


def make_objective(
    spec: StudySpec,
    data: DeviceData,
    device: torch.device,
    schedule: TrialSchedule | RunSchedule | None = None,
    options: EngineOptions | None = None,
    hooks: TrialHooks | None = None,
    artifacts: Artifacts | None = None,
) -> Callable[[optuna.Trial], float | tuple[float, ...]]:
    """The Optuna objective for `spec`, training on `data` (already on `device`) as `schedule`
    says (default: the study file's for `data`, `study_schedule`); a `RunSchedule` is asked as
    each trial starts, so a re-plan reaches the trials that start after it. `options` may
    leave the precision "auto": each trial decides it for its own model (see `run_trial`).
    With `artifacts`, trials checkpoint each epoch there and resume from it (`run_trial`)."""
    if schedule is None:
        schedule = study_schedule(spec, len(data.train_labels))
    engine = options or EngineOptions()
    hooks = hooks or TrialHooks()

    def objective(trial: optuna.Trial) -> float | tuple[float, ...]:
        current = schedule.current if isinstance(schedule, RunSchedule) else schedule
        return run_trial(trial, spec, data, device, current, engine, hooks, artifacts)

    return objective


def run_trial(
    trial: optuna.Trial,
    spec: StudySpec,
    data: DeviceData,
    device: torch.device,
    schedule: TrialSchedule,
    options: EngineOptions,
    hooks: TrialHooks,
    artifacts: Artifacts | None = None,
) -> float | tuple[float, ...]:
    """Sample, build, measure and train one trial; record it on `trial`; return its value.

    The value is the study metric of the weights the trial keeps (its best epoch by
    validation loss); with several metrics, a tuple in their order (model measures such as
    params come from `model_measures`, taken before training). A configuration that breaks a
    [constraints] limit is not trained: it ends as pruned with stop_reason "constraint: ...".
    A diverging loss or out-of-memory ends the trial as pruned with the reason in the
    `stop_reason` user attribute, so the study goes on. Multi-objective studies are never
    pruned (Optuna cannot); early stopping still ends their trials.

    Fidelity: the metric is reported `schedule.steps_per_epoch` times per epoch (step s covers
    s / steps_per_epoch epochs of data; in-epoch steps on a fixed validation subset, epoch ends
    on the whole set), so a pruner's rungs can judge a trial on a slice of the training set
    before it earns the rest. When the schedule's deadline passes the trial is cut within its
    epoch and ends pruned with stop_reason "budget", its reported values kept.

    The short trial of [training].first_result_epochs (marked FIRST_RESULT when it was queued)
    trains `schedule.first_result_epochs` epochs and reports nothing: the pruner must not judge
    the full trials by a schedule that decays sooner. With 0 (a budget with no time for it), or
    once the study has a complete trial, it is not trained and ends pruned.

    Checkpoints (with `artifacts`): the trial saves its state after each epoch; a trial that
    a dead worker, a signal, the storage-outage exit or a budget left unfinished is retried
    with its checkpoint and continues after its last saved epoch (`attrs.RESUMED_FROM`), its
    earlier epochs re-reported from the checkpoint. A finished trial keeps its best weights
    instead; a pruned, diverged or out-of-memory one drops its checkpoint.
    """
    config = _sample(trial, spec, schedule, device)
    data = _epoch_data(trial, data, schedule.train_images)
    torch.manual_seed(config.seed)
    model = _build(trial, config, data)
    measures = _measure_before_training(trial, spec, model, data, config.batch_size, device)
    engine = _precision(trial, options, model, data, config, device)
    checkpoints = None
    if artifacts is not None:
        identity = run_identity(
            {**config.to_dict(), "steps_per_epoch": schedule.steps_per_epoch},
            len(data.train_labels),
        )
        checkpoints = TrialCheckpoints(
            artifacts, trial, identity, config.seed, spec.training.checkpoint_seconds
        )
    best = _train(trial, spec, schedule, model, data, config, device, engine, hooks, checkpoints)
    values = [
        getattr(best, name) if name in TRAINING_MEASURES else measures[name]
        for name in spec.objectives
    ]
    return tuple(values) if spec.multi_objective else values[0]


def _sample(
    trial: optuna.Trial, spec: StudySpec, schedule: TrialSchedule, device: torch.device
) -> TrialConfig:
    """The trial's configuration, with the schedule's epochs, recorded on the trial."""
    config = dataclasses.replace(suggest(trial, spec), max_epochs=schedule.max_epochs)
    if trial.user_attrs.get(attrs.FIRST_RESULT):
        _skip_needless_first_result(trial, schedule.first_result_epochs)
        config = dataclasses.replace(
            config, max_epochs=min(schedule.first_result_epochs, config.max_epochs)
        )
    trial.set_user_attr(attrs.CONFIG, config.to_dict())
    trial.set_user_attr(attrs.SEED, config.seed)
    trial.set_user_attr(attrs.DEVICE, str(device))
    trial.set_user_attr(attrs.WORKER, worker_id())
    return config


def _epoch_data(trial: optuna.Trial, data: DeviceData, images: int | None) -> DeviceData:
    """`data` with its first `images` training images only (the split is already shuffled),
    recorded on the trial; all of it when `images` is None or not fewer."""
    if images is None or images >= len(data.train_labels):
        return data
    trial.set_user_attr(attrs.EPOCH_IMAGES, images)
    return dataclasses.replace(
        data, train_images=data.train_images[:images], train_labels=data.train_labels[:images]
    )


def _build(trial: optuna.Trial, config: TrialConfig, data: DeviceData) -> torch.nn.Module:
    """The configuration's model, pretrained weights loaded and frozen as it says."""
    model, loaded = prepare_model(config, data.input_shape, data.num_classes)
    if loaded is not None:
        trial.set_user_attr(attrs.PRETRAINED, loaded.summary())
    trial.set_user_attr(attrs.PARAM_COUNT, count_parameters(model))
    return model


def _precision(
    trial: optuna.Trial,
    options: EngineOptions,
    model: torch.nn.Module,
    data: DeviceData,
    config: TrialConfig,
    device: torch.device,
) -> EngineOptions:
    """The options `fit` trains in, "auto" decided once for this model: the precision
    recorded is the one the trial trains in."""
    engine = options.resolve(model, data.input_shape, config.batch_size, device)
    trial.set_user_attr(attrs.PRECISION, engine.precision)
    return engine


class _TrialRecord:
    """What a trial has trained so far, written to its user attributes as it ends.

    State: the history, the best epoch and the images seen grow while `fit` runs.
    """

    def __init__(self, trial: optuna.Trial, steps_per_epoch: int, train_count: int) -> None:
        self.trial = trial
        self.steps_per_epoch = steps_per_epoch
        self.train_count = train_count
        self.history: list[dict[str, float]] = []
        self.best: EpochResult | None = None
        self.images = 0  # training images seen so far: the trial's cost, for budget estimates
        self.started = time.perf_counter()

    def resume(self, state: TrainingState) -> None:
        """Continue the record of the run that saved `state`: its epochs, best and time."""
        self.history = [{k: v for k, v in row.items() if k != "improved"} for row in state.history]
        if state.best_epoch:
            self.best = EpochResult(**state.history[state.best_epoch - 1])
        self.images = state.epoch * self.train_count
        self.started -= sum(row["seconds"] for row in state.history)

    def add(self, result: EpochResult) -> None:
        self.images = result.epoch * self.train_count
        self.history.append({k: v for k, v in asdict(result).items() if k != "improved"})
        if result.improved:
            self.best = result

    def write(self, stop_reason: str | None = None) -> None:
        trial = self.trial
        trial.set_user_attr(attrs.TRAIN_IMAGES, self.images)
        trial.set_user_attr(attrs.STEPS_PER_EPOCH, self.steps_per_epoch)
        trial.set_user_attr(attrs.HISTORY, self.history)
        trial.set_user_attr(attrs.EPOCHS_RUN, len(self.history))
        trial.set_user_attr(attrs.TRAIN_SECONDS, round(time.perf_counter() - self.started, 3))
        if self.best is not None:
            trial.set_user_attr(attrs.BEST_EPOCH, self.best.epoch)
        if stop_reason:
            trial.set_user_attr(attrs.STOP_REASON, stop_reason)


def _train(
    trial: optuna.Trial,
    spec: StudySpec,
    schedule: TrialSchedule,
    model: torch.nn.Module,
    data: DeviceData,
    config: TrialConfig,
    device: torch.device,
    engine: EngineOptions,
    hooks: TrialHooks,
    checkpoints: TrialCheckpoints | None = None,
) -> EpochResult:
    """Train the model, reporting to the pruner; the best epoch, or TrialPruned with the
    reason recorded (pruned, the deadline, a diverged loss, out of memory)."""
    steps = schedule.steps_per_epoch
    record = _TrialRecord(trial, steps, len(data.train_labels))
    judged = not (spec.multi_objective or trial.user_attrs.get(attrs.FIRST_RESULT))
    resume = _resume(trial, checkpoints, record, config)
    if resume is not None and judged:
        # The retry is a new Optuna trial: the pruner sees the epochs it continues from again.
        for row in record.history:
            trial.report(row[spec.metric], row["epoch"] * steps)

    def drop_and_prune(reason: str, message: str | None = None) -> optuna.TrialPruned:
        record.write(reason)
        if checkpoints is not None:
            checkpoints.drop()  # a pruned, diverged or out-of-memory trial never resumes
        return optuna.TrialPruned(message)

    def report(value: float, step: int, where: str) -> None:
        # Optuna cannot prune multi-objective studies (report raises): skip it; early
        # stopping inside `fit` and the budget still apply.
        if not judged:
            return
        trial.report(value, step)
        if trial.should_prune():
            raise drop_and_prune(f"pruned at {where} by the {schedule.pruner.name} pruner")

    def on_slice(result: SliceResult) -> None:
        epochs_done = (result.epoch - 1) + result.part / result.parts
        record.images = round(epochs_done * record.train_count)
        step = (result.epoch - 1) * result.parts + result.part
        where = f"step {step} (epoch {result.epoch}, slice {result.part}/{result.parts})"
        report(getattr(result, spec.metric), step, where)

    out_of_memory = None
    with contextlib.closing(
        fit(
            model,
            data,
            config,
            device,
            engine,
            on_batch=hooks.on_batch,
            should_stop=None if schedule.deadline is None else schedule.deadline.should_stop,
            slices=steps,
            on_slice=on_slice if steps > 1 else None,
            resume=resume,
            on_checkpoint=None if checkpoints is None else checkpoints.save,
        )
    ) as epochs:
        try:
            for result in epochs:
                record.add(result)
                if hooks.on_epoch is not None:
                    hooks.on_epoch(trial.number, result)
                report(getattr(result, spec.metric), result.epoch * steps, f"epoch {result.epoch}")
        except TrainingStopped as exc:
            in_epoch = (exc.batch - 1) * config.batch_size
            record.images = (exc.epoch - 1) * record.train_count + in_epoch
            record.write(BUDGET_STOP)  # its checkpoint stays: the next run resumes it
            raise optuna.TrialPruned(f"the run's budget ran out in epoch {exc.epoch}") from None
        except DivergedError as exc:
            raise drop_and_prune(str(exc), str(exc)) from None
        except RuntimeError as exc:
            if not _is_out_of_memory(exc):
                raise
            out_of_memory = f"out of memory with batch_size={config.batch_size}"
    if out_of_memory:
        # Outside the except block, so no traceback keeps the trial's tensors alive.
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
        raise drop_and_prune(out_of_memory, out_of_memory)
    record.write(
        None
        if len(record.history) == config.max_epochs
        else f"early stopping at epoch {len(record.history)}: no val_loss improvement "
        f"for {config.patience} epochs"
    )
    assert record.best is not None  # fit yields at least one epoch, and the first one improves
    if checkpoints is not None:
        # `fit` has ended: the model holds its best epoch's weights.
        checkpoints.keep(model.state_dict(), record.best.epoch)
    return record.best


def _resume(
    trial: optuna.Trial,
    checkpoints: TrialCheckpoints | None,
    record: _TrialRecord,
    config: TrialConfig,
) -> TrainingState | None:
    """The checkpoint this trial continues from, its record restored; None to start afresh.

    A retry inherits its predecessor's user attributes: the record of how that one ended is
    not this trial's, so it is cleared. A resumed trial continues its predecessor's run, so
    it records that run's seed.
    """
    for key in (attrs.STOP_REASON, attrs.RESUMED_FROM):
        if trial.user_attrs.get(key) is not None:
            trial.set_user_attr(key, None)
    found = None if checkpoints is None else checkpoints.resume()
    if found is None:
        return None
    resume, seed = found
    if seed != config.seed:
        trial.set_user_attr(attrs.CONFIG, dataclasses.replace(config, seed=seed).to_dict())
        trial.set_user_attr(attrs.SEED, seed)
    record.resume(resume)
    trial.set_user_attr(attrs.RESUMED_FROM, resume.epoch)
    log.info("trial %d resumes after epoch %d from its checkpoint", trial.number, resume.epoch)
    return resume


def _skip_needless_first_result(trial: optuna.Trial, first_result_epochs: int) -> None:
    """End the first-result trial untrained when the run's budget left it no epoch, or when
    the study has a finished trial already (a retry of an interrupted short trial is queued
    behind the full one)."""
    if first_result_epochs < 1:
        why = "the budget has time for the full trial only"
    elif trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        why = "the study has a finished trial already"
    else:
        return
    reason = f"first result skipped: {why} (not trained)"
    trial.set_user_attr(attrs.STOP_REASON, reason)
    trial.set_user_attr(attrs.EPOCHS_RUN, 0)
    raise optuna.TrialPruned(reason)


def _measure_before_training(
    trial: optuna.Trial,
    spec: StudySpec,
    model: torch.nn.Module,
    data: DeviceData,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """Measure the built model when the study needs it; end the trial if it breaks a limit.

    The trial ends as PRUNED, not FAIL: failed trials are retried by the runner and do not
    count towards the budget, while this configuration is known bad and must not be retried.
    TPE and GP read the violations stored on pruned trials (`set_constraints`), and NSGA-II
    only breeds from complete trials, so the sampler does not come back to it.
    """
    needed = bool(spec.constraints) or any(n not in TRAINING_MEASURES for n in spec.objectives)
    if not needed:
        return {}
    measures = model_measures(model.to(device), data.input_shape, batch_size, device)
    trial.set_user_attr(attrs.MEASURES, measures)
    set_constraints(trial, measures, spec.constraints)
    problems = broken(measures, spec.constraints)
    if problems:
        reason = f"constraint: {'; '.join(problems)} (not trained)"
        trial.set_user_attr(attrs.STOP_REASON, reason)
        trial.set_user_attr(attrs.EPOCHS_RUN, 0)
        raise optuna.TrialPruned(reason)
    return measures
