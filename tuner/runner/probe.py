"""One probe of training speed, for the budget's plan and for `--workers auto`.

It trains the model a trial of the configuration builds (its family's `build_model`, frozen
as the configuration says), in the precision the trial would train in, at its batch size,
through the trials' own loop (`fit`), and times a few batches after a warm-up. Both callers
plan from it, so a resnet18 study is planned as a resnet18, never as the seed CNN.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import time
from collections.abc import Callable

import optuna
import torch

from tuner.config import TrialConfig
from tuner.engine import DeviceData, EngineOptions, TrainingStopped, fit
from tuner.engine.device import MEMORY_FORMAT
from tuner.engine.families import apply_freeze, build_model
from tuner.search.space import suggest
from tuner.spec import StudySpec

PROBE_BATCHES = 32  # timed and warm-up batches together
PROBE_WARMUP_BATCHES = 8  # not timed: a fresh process runs its first batches slower


def time_batches(
    data: DeviceData,
    device: torch.device,
    config: TrialConfig,
    options: EngineOptions | None = None,
    *,
    batches: int | None = None,
    warmup: int | None = None,
    max_seconds: float | None = None,
    barrier: Callable[[], object] | None = None,
) -> list[float]:
    """Seconds of each timed training batch of `config`'s model on `data` (after `warmup`
    batches; `barrier()` is called between them and the timed ones; timing ends after
    `batches` batches in all, or once `max_seconds` of timed batches have passed). Fewer
    when an epoch of `data` is shorter. By default PROBE_BATCHES with PROBE_WARMUP_BATCHES."""
    batches = PROBE_BATCHES if batches is None else batches
    warmup = PROBE_WARMUP_BATCHES if warmup is None else warmup
    config = dataclasses.replace(config, max_epochs=1, patience=0)
    torch.manual_seed(0)
    model = build_model(config, data.input_shape, data.num_classes)
    apply_freeze(model, config.family, config.freeze)
    # Not compiled: a probe of a few dozen batches cannot pay back the compile time (a
    # compiled trial's own measure replaces the guess once it has ended).
    engine = dataclasses.replace(options or EngineOptions(), compile=False).resolve(
        model, data.input_shape, config.batch_size, device
    )
    polls: list[float] = []  # polls[k]: before batch k + 1

    def stop_after_probe() -> bool:
        if len(polls) == warmup and barrier is not None:
            barrier()
        polls.append(time.perf_counter())
        timed = polls[warmup:]
        if max_seconds is not None and len(timed) > 1 and timed[-1] - timed[0] >= max_seconds:
            return True
        return len(polls) > batches

    try:
        for _ in fit(model, data, config, device, engine, should_stop=stop_after_probe):
            pass  # an epoch shorter than the probe: the polls so far are the measure
    except TrainingStopped:
        pass
    seconds = [later - earlier for earlier, later in itertools.pairwise(polls)]
    return seconds[warmup:] or seconds


def first_config(spec: StudySpec) -> TrialConfig:
    """The configuration the probes time: what a new study trains first, its first [[enqueue]]
    table or else its first portfolio configuration (`first_queued_params`), with the
    parameters that leaves to the sampler (or all, with neither) at the middle of their ranges
    (`typical_params`), its family included."""
    from tuner.runner.plan import typical_params
    from tuner.search.study import first_queued_params

    known = first_queued_params(spec)
    return suggest(optuna.trial.FixedTrial(typical_params(spec.space, known)), spec)


def probe_seconds_per_image(
    data: DeviceData,
    device: torch.device,
    config: TrialConfig | None = None,
    options: EngineOptions | None = None,
) -> float:
    """Seconds per training image of `config` (default TrialConfig()) here, in the precision
    the trials train in (`options` resolved for this model, as the objective does).

    The lower quartile of the timed batches: the probe's first batches after a warm-up still
    run slower than the rest of an epoch (bench/RESULTS.md, "First epoch vs later epochs").
    """
    config = config or TrialConfig()
    timed = time_batches(data, device, config, options)
    if not timed:
        return 0.0
    # "inclusive" stays within the timed values; the default extrapolates past the fastest
    # batch when few were timed (a negative time from two batches).
    quartile = (
        statistics.quantiles(timed, n=4, method="inclusive")[0] if len(timed) > 1 else timed[0]
    )
    return quartile / config.batch_size


def random_data(
    input_shape: tuple[int, int, int], num_classes: int, images: int, device: torch.device
) -> DeviceData:
    """`images` random uint8 training images shaped like a dataset's (and one validation
    image): enough for a probe when the dataset itself is not loaded."""
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (images + 1, *input_shape), generator=generator)
    pixels = pixels.to(torch.uint8).to(device).contiguous(memory_format=MEMORY_FORMAT)
    labels = torch.randint(0, num_classes, (images + 1,), generator=generator).to(device)
    channels = input_shape[0]
    return DeviceData(
        train_images=pixels[:images],
        train_labels=labels[:images],
        val_images=pixels[images:],
        val_labels=labels[images:],
        scale=torch.full((1, channels, 1, 1), 1 / 255.0, device=device),
        shift=torch.zeros((1, channels, 1, 1), device=device),
        num_classes=num_classes,
    )
