"""`tuner confirm`: retrain a study's top configurations with new seeds, to tell good from lucky.

Each configuration is trained exactly as its tuned trial was: the same train/validation split
(the study file's [dataset]), the trial's epoch budget (`max_epochs`) and early-stopping
patience, weights kept at the best validation-loss epoch, and the study metric read at that
epoch. Only the seed changes. So a confirm run measures the same thing as the trial's value and
the two can be compared. Every finished run is stored with the study as it finishes (see
`tuner.search.confirmed`), so an interrupted confirm resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import torch

from tuner import attrs
from tuner.checking import MAX_SEED
from tuner.config import TrialConfig
from tuner.engine import (
    DeviceData,
    DivergedError,
    EngineOptions,
    EpochResult,
    fit,
    load_device_data,
    pick_device,
    prepare_model,
)
from tuner.errors import TunerError
from tuner.search.confirmed import ConfirmRun, run_key, store_run, top_trials

if TYPE_CHECKING:
    from tuner.spec import DatasetSpec

log = logging.getLogger(__name__)

# Confirm seeds sit far from the tuning seeds ([training].seed + trial number) so that a
# confirm run never repeats a tuned trial's initialisation.
SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class Job:
    """One confirm run to do (or already done): a tuned trial, its config and a seed."""

    trial: int
    config: TrialConfig
    seed: int
    done: bool


def confirm_seeds(config: TrialConfig, count: int) -> list[int]:
    """`count` new seeds for a configuration: the same ones every time, so runs resume."""
    return [(config.seed + SEED_STRIDE * k) % (MAX_SEED + 1) for k in range(1, count + 1)]


def plan(study: optuna.Study, top: int, seeds: int) -> list[Job]:
    """The confirm runs of the `top` best trials with `seeds` seeds each, best trial first."""
    trials = top_trials(study, top)
    if not trials:
        raise TunerError(f"study {study.study_name!r} has no complete trial to confirm yet")
    stored = study.user_attrs
    jobs = []
    for trial in trials:
        config = TrialConfig.from_dict(trial.user_attrs[attrs.CONFIG])
        for seed in confirm_seeds(config, seeds):
            jobs.append(Job(trial.number, config, seed, run_key(trial.number, seed) in stored))
    return jobs


def run_job(
    job: Job,
    metric: str,
    data: DeviceData,
    device: torch.device,
    options: EngineOptions = EngineOptions(),
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> ConfirmRun:
    """Train `job.config` with `job.seed` as its tuned trial was trained; the run's result."""
    config = replace(job.config, seed=job.seed)
    torch.manual_seed(config.seed)
    model, _ = prepare_model(config, data.input_shape, data.num_classes)  # any family
    engine = options.resolve(model, data.input_shape, config.batch_size, device)
    best: EpochResult | None = None
    epochs_run = 0
    started = time.perf_counter()
    stop_reason = None
    try:
        with contextlib.closing(fit(model, data, config, device, engine)) as epochs:
            for result in epochs:
                epochs_run = result.epoch
                if result.improved:
                    best = result
                if on_epoch is not None:
                    on_epoch(result)
    except DivergedError as exc:
        stop_reason = str(exc)
        best = None
    return ConfirmRun(
        trial=job.trial,
        seed=job.seed,
        value=None if best is None else getattr(best, metric),
        val_accuracy=None if best is None else best.val_accuracy,
        val_loss=None if best is None else best.val_loss,
        epochs_run=epochs_run,
        best_epoch=None if best is None else best.epoch,
        seconds=round(time.perf_counter() - started, 3),
        stop_reason=stop_reason,
    )


def confirm_study(
    study: optuna.Study,
    jobs: list[Job],
    dataset: DatasetSpec,
    device: str = "auto",
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    on_run: Callable[[int, int, ConfirmRun], None] | None = None,
) -> list[ConfirmRun]:
    """`confirm` on the study's own train/validation split, loaded onto `device` ("auto",
    "cpu", "cuda"...) only when a job is left to run."""
    if all(job.done for job in jobs):
        return []
    torch_device = pick_device(device)
    data = load_device_data(dataset, torch_device, data_dir, cache_dir)
    return confirm(study, jobs, data, torch_device, on_run=on_run)


def confirm(
    study: optuna.Study,
    jobs: list[Job],
    data: DeviceData,
    device: torch.device,
    options: EngineOptions = EngineOptions(),
    on_run: Callable[[int, int, ConfirmRun], None] | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> list[ConfirmRun]:
    """Run the jobs not done yet, storing each run with the study as soon as it finishes.

    `on_run(done, total, run)` follows every stored run (done counts earlier runs too).
    """
    metric = study.user_attrs.get(attrs.STUDY_METRIC, "val_accuracy")
    done = sum(job.done for job in jobs)
    runs = []
    for job in jobs:
        if job.done:
            continue
        run = run_job(job, metric, data, device, options, on_epoch)
        store_run(study, run)
        runs.append(run)
        done += 1
        log.debug("confirm: trial %d seed %d -> %s", run.trial, run.seed, run.value)
        if on_run is not None:
            on_run(done, len(jobs), run)
    return runs
