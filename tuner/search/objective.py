"""The only place where Optuna meets training: sample, train, report, prune, record."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict

import optuna
import torch

from tuner import attrs
from tuner.engine import (
    BatchCallback,
    DeviceData,
    DivergedError,
    EngineOptions,
    EpochResult,
    SliceResult,
    StopCheck,
    TrainingStopped,
    count_parameters,
    fit,
    prepare_model,
)
from tuner.engine.measure import MEASURES, model_measures
from tuner.search.constraints import broken, set_constraints
from tuner.search.space import suggest
from tuner.spec import StudySpec

EpochCallback = Callable[[int, EpochResult], None]
TRAINING_MEASURES = {name for name, measure in MEASURES.items() if measure.from_training}
# stop_reason of a trial cut by the run's wall-clock budget (tuner run --budget).
BUDGET_STOP = "budget"


def worker_id() -> str:
    """'hostname:pid' of this process, recorded on every trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def make_objective(
    spec: StudySpec,
    data: DeviceData,
    device: torch.device,
    on_epoch: EpochCallback | None = None,
    options: EngineOptions | None = None,
    on_batch: BatchCallback | None = None,
    should_stop: StopCheck | None = None,
    steps_per_epoch: int = 1,
    first_result_epochs: int = 0,
    max_epochs: Callable[[], int] | None = None,
) -> Callable[[optuna.Trial], float | tuple[float, ...]]:
    """Build the Optuna objective for `spec`, training on `data` (already on `device`).

    `options` may leave the precision "auto": each trial decides it once, for its own model,
    records it, and trains in it. `on_epoch(trial number, result)` follows every epoch and
    `on_batch(done, per_epoch)` the batches within one (see `fit`).

    The trial's value is the study metric of the weights the trial keeps (its best epoch by
    validation loss); with several metrics, a tuple in their order (model measures such as
    params come from `model_measures`, taken before training). A configuration that breaks a
    [constraints] limit is not trained: it ends as pruned with stop_reason "constraint: ...".
    A diverging loss or CUDA out-of-memory ends the trial as pruned with the reason in the
    `stop_reason` user attribute, so the study goes on. Multi-objective studies are never
    pruned (Optuna cannot); early stopping still ends their trials.

    Fidelity: the metric is reported `steps_per_epoch` times per epoch (step s covers s /
    steps_per_epoch epochs of data; in-epoch steps on a fixed validation subset, epoch ends on
    the whole set), so a pruner's rungs can judge a trial on a slice of the training set before
    it earns the rest. When `should_stop()` turns True (the run's deadline) the trial is cut
    within its epoch and ends pruned with stop_reason "budget", its reported values kept.

    The short trial of [training].first_result_epochs (marked FIRST_RESULT when it was queued)
    trains `first_result_epochs` epochs and reports nothing: the pruner must not judge the full
    trials by a schedule that decays sooner. With 0 (a budget with no time for it), or once the
    study has a complete trial, it is not trained and ends pruned.

    `max_epochs()`, when given, is asked as each trial starts for the full schedule's epochs
    (a budget run plans them again once it has measured its speed); else the spec's.
    """

    def objective(trial: optuna.Trial) -> float | tuple[float, ...]:
        config = suggest(trial, spec)
        if max_epochs is not None:
            config = dataclasses.replace(config, max_epochs=max_epochs())
        first_result = bool(trial.user_attrs.get(attrs.FIRST_RESULT))
        if first_result:
            _skip_needless_first_result(trial, first_result_epochs)
            config = dataclasses.replace(
                config, max_epochs=min(first_result_epochs, config.max_epochs)
            )
        trial.set_user_attr(attrs.CONFIG, config.to_dict())
        trial.set_user_attr(attrs.SEED, config.seed)
        trial.set_user_attr(attrs.DEVICE, str(device))
        trial.set_user_attr(attrs.WORKER, worker_id())

        torch.manual_seed(config.seed)
        model, loaded = prepare_model(config, data.input_shape, data.num_classes)
        if loaded is not None:
            trial.set_user_attr(attrs.PRETRAINED, loaded.summary())
        trial.set_user_attr(attrs.PARAM_COUNT, count_parameters(model))
        measures = _measure_before_training(trial, spec, model, data, config.batch_size, device)
        # Decided here, once: the precision recorded is the one `fit` trains in.
        engine = (options or EngineOptions()).resolve(
            model, data.input_shape, config.batch_size, device
        )
        trial.set_user_attr(attrs.PRECISION, engine.precision)

        history: list[dict[str, float]] = []
        best: EpochResult | None = None
        started = time.perf_counter()

        train_count = len(data.train_labels)
        images = 0  # training images seen so far: the trial's cost, for budget estimates

        def record(stop_reason: str | None = None) -> None:
            trial.set_user_attr(attrs.TRAIN_IMAGES, images)
            trial.set_user_attr(attrs.STEPS_PER_EPOCH, steps_per_epoch)
            trial.set_user_attr(attrs.HISTORY, history)
            trial.set_user_attr(attrs.EPOCHS_RUN, len(history))
            trial.set_user_attr(attrs.TRAIN_SECONDS, round(time.perf_counter() - started, 3))
            if best is not None:
                trial.set_user_attr(attrs.BEST_EPOCH, best.epoch)
            if stop_reason:
                trial.set_user_attr(attrs.STOP_REASON, stop_reason)

        def report(value: float, step: int, where: str) -> None:
            # Optuna cannot prune multi-objective studies (report raises): skip it; early
            # stopping inside `fit` and the budget still apply.
            if spec.multi_objective or first_result:
                return
            trial.report(value, step)
            if trial.should_prune():
                record(f"pruned at {where} by the {spec.pruner.name} pruner")
                raise optuna.TrialPruned()

        def on_slice(result: SliceResult) -> None:
            nonlocal images
            images = round(((result.epoch - 1) + result.part / result.parts) * train_count)
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
                on_batch=on_batch,
                should_stop=should_stop,
                slices=steps_per_epoch,
                on_slice=on_slice if steps_per_epoch > 1 else None,
            )
        ) as epochs:
            try:
                for result in epochs:
                    images = result.epoch * train_count
                    history.append({k: v for k, v in asdict(result).items() if k != "improved"})
                    if result.improved:
                        best = result
                    if on_epoch is not None:
                        on_epoch(trial.number, result)
                    report(
                        getattr(result, spec.metric),
                        result.epoch * steps_per_epoch,
                        f"epoch {result.epoch}",
                    )
            except TrainingStopped as exc:
                images = (exc.epoch - 1) * train_count + (exc.batch - 1) * config.batch_size
                record(BUDGET_STOP)
                raise optuna.TrialPruned(f"the run's budget ran out in epoch {exc.epoch}") from None
            except DivergedError as exc:
                record(str(exc))
                raise optuna.TrialPruned(str(exc)) from None
            except RuntimeError as exc:
                if not _is_out_of_memory(exc):
                    raise
                out_of_memory = f"out of memory with batch_size={config.batch_size}"
        if out_of_memory:
            # Outside the except block, so no traceback keeps the trial's tensors alive.
            record(out_of_memory)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
            raise optuna.TrialPruned(out_of_memory)

        record(
            None
            if len(history) == config.max_epochs
            else f"early stopping at epoch {len(history)}: no val_loss improvement "
            f"for {config.patience} epochs"
        )
        assert best is not None  # fit yields at least one epoch, and the first one improves
        values = [
            getattr(best, name) if name in TRAINING_MEASURES else measures[name]
            for name in spec.objectives
        ]
        return tuple(values) if spec.multi_objective else values[0]

    return objective


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
