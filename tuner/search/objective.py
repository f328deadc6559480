"""The only place where Optuna meets training: sample, train, report, prune, record."""

from __future__ import annotations

import contextlib
import logging
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
    count_parameters,
    fit,
    prepare_model,
)
from tuner.search.space import suggest
from tuner.spec import StudySpec

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, EpochResult], None]


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
) -> Callable[[optuna.Trial], float]:
    """Build the Optuna objective for `spec`, training on `data` (already on `device`).

    `options` may leave the precision "auto": each trial decides it once, for its own model,
    records it, and trains in it. `on_epoch(trial number, result)` follows every epoch and
    `on_batch(done, per_epoch)` the batches within one (see `fit`).

    The trial's value is the study metric of the weights the trial keeps (its best epoch by
    validation loss). A diverging loss or CUDA out-of-memory ends the trial as pruned with the
    reason in the `stop_reason` user attribute, so the study goes on.
    """

    def objective(trial: optuna.Trial) -> float:
        config = suggest(trial, spec)
        trial.set_user_attr(attrs.CONFIG, config.to_dict())
        trial.set_user_attr(attrs.SEED, config.seed)
        trial.set_user_attr(attrs.DEVICE, str(device))
        trial.set_user_attr(attrs.WORKER, worker_id())

        torch.manual_seed(config.seed)
        model, loaded = prepare_model(config, data.input_shape, data.num_classes)
        if loaded is not None:
            trial.set_user_attr(attrs.PRETRAINED, loaded.summary())
        trial.set_user_attr(attrs.PARAM_COUNT, count_parameters(model))
        # Decided here, once: the precision recorded is the one `fit` trains in.
        engine = (options or EngineOptions()).resolve(
            model, data.input_shape, config.batch_size, device
        )
        trial.set_user_attr(attrs.PRECISION, engine.precision)

        history: list[dict[str, float]] = []
        best: EpochResult | None = None
        started = time.perf_counter()

        def record(stop_reason: str | None = None) -> None:
            trial.set_user_attr(attrs.HISTORY, history)
            trial.set_user_attr(attrs.EPOCHS_RUN, len(history))
            trial.set_user_attr(attrs.TRAIN_SECONDS, round(time.perf_counter() - started, 3))
            if best is not None:
                trial.set_user_attr(attrs.BEST_EPOCH, best.epoch)
            if stop_reason:
                trial.set_user_attr(attrs.STOP_REASON, stop_reason)

        out_of_memory = None
        with contextlib.closing(
            fit(model, data, config, device, engine, on_batch=on_batch)
        ) as epochs:
            try:
                for result in epochs:
                    history.append({k: v for k, v in asdict(result).items() if k != "improved"})
                    if result.improved:
                        best = result
                    if on_epoch is not None:
                        on_epoch(trial.number, result)
                    trial.report(getattr(result, spec.metric), result.epoch)
                    if trial.should_prune():
                        record(f"pruned at epoch {result.epoch} by the {spec.pruner.name} pruner")
                        raise optuna.TrialPruned()
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
        return getattr(best, spec.metric)

    return objective
