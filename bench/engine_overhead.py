"""Engine overhead: training images/s through `fit` against the model's own limit.

    python bench/engine_overhead.py                      # 3 mnist-study configs, 1 epoch, CPU
    git show HEAD:tuner/engine/train.py > /tmp/train_head.py
    python bench/engine_overhead.py --reference-train /tmp/train_head.py   # before/after
    python bench/engine_overhead.py --precision fp32      # both sides in fp32 (auto: as fit)

The limit is a tight loop of forward + loss + backward + step of the same model (same seed,
memory format, optimizer and threads as fit) on pre-normalised float tensors already in
memory, taken in contiguous slices: no shuffling gather, no augmentation, no metrics. Everything
`fit` adds on top (index gather, per-batch normalisation, the study's augmentation, loss and
accuracy sums, LR schedule, best-weights copies) counts against it.

Two comparisons per config:
- train: fit given a one-image validation split (so validation costs nothing) vs the raw steps;
- epoch: fit with the real validation split vs the raw steps plus a raw inference pass over it.
Runs alternate (fit, raw, fit, raw, ...) and the fastest of `--repeats` is kept for each, the
usual way to read a benchmark on a machine whose load comes and goes.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from common import (
    DEFAULT_DATASET_DIR,
    DEFAULT_STUDY,
    describe,
    load_average,
    machine_header,
    sample_configs,
)
from torch import nn

from tuner.config import AugmentSpec, TrialConfig
from tuner.engine import train
from tuner.engine.device import (
    MEMORY_FORMAT,
    PRECISIONS,
    DeviceData,
    EngineOptions,
    pick_device,
)
from tuner.engine.loading import load_device_data
from tuner.engine.train import EVAL_BATCH_SIZE, make_optimizer
from tuner.families import build_model
from tuner.spec import load_spec


def fresh_model(config: TrialConfig, data: DeviceData) -> nn.Module:
    torch.manual_seed(config.seed)
    return build_model(config, data.input_shape, data.num_classes)


def time_fit(fit: Callable, config: TrialConfig, data: DeviceData, device: torch.device) -> float:
    """Seconds for `fit` to run all of `config`'s epochs."""
    model = fresh_model(config, data)
    started = time.perf_counter()
    for _ in fit(model, data, config, device):
        pass
    return time.perf_counter() - started


def time_raw(
    config: TrialConfig, data: DeviceData, validate: bool, options: EngineOptions
) -> float:
    """Seconds for the tight loop: the same steps on pre-normalised, in-order tensors."""
    device = data.train_images.device
    model = fresh_model(config, data).to(device, memory_format=MEMORY_FORMAT)
    images, labels = data.normalise(data.train_images), data.train_labels
    val_images = data.normalise(data.val_images)
    eval_batch = EVAL_BATCH_SIZE.get(device.type, 1024)
    started = time.perf_counter()
    optimizer = make_optimizer(model, config)
    for _ in range(config.max_epochs):
        model.train()
        for start in range(0, len(labels), config.batch_size):
            with options.autocast(device):
                logits = model(images[start : start + config.batch_size])
            loss = F.cross_entropy(logits.float(), labels[start : start + config.batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if validate:
            model.eval()
            with torch.inference_mode(), options.autocast(device):
                for start in range(0, len(val_images), eval_batch):
                    model(val_images[start : start + eval_batch])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def load_module(path: Path) -> ModuleType:
    """Another version of tuner/engine/train.py (e.g. from git show), to compare fit
    before/after."""
    spec = importlib.util.spec_from_file_location("reference_train", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset-dir", type=Path, default=DEFAULT_DATASET_DIR)
    parser.add_argument("--study", type=Path, default=DEFAULT_STUDY)
    parser.add_argument("--configs", type=int, default=3, help="configs sampled from the study")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--no-augment", action="store_true", help="fit without the augmentation")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--reference-train", type=Path, help="another train.py to time as well")
    args = parser.parse_args()
    options = EngineOptions(precision=args.precision)

    spec = load_spec(args.study)
    device = pick_device(args.device)
    data = load_device_data(spec.dataset, device, args.dataset_dir, download=False)
    one_image = replace(data, val_images=data.val_images[:1], val_labels=data.val_labels[:1])
    configs = [config for _, config in sample_configs(spec, args.configs, args.epochs)]
    if args.no_augment:
        configs = [replace(config, augment=AugmentSpec()) for config in configs]
    reference_fit = load_module(args.reference_train).fit if args.reference_train else None

    print("\n".join(machine_header()))
    images = args.epochs * len(data.train_labels)
    totals: dict[tuple[str, str], float] = {}
    for number, config in enumerate(configs):
        # Decided once per config, as the objective does ("auto": maybe bf16); the raw loop
        # trains in the same precision.
        resolved = options.resolve(
            fresh_model(config, data), data.input_shape, config.batch_size, device
        )
        engines: dict[str, Callable] = {"fit": partial(train.fit, options=resolved)}
        if reference_fit is not None:
            engines["reference fit"] = partial(reference_fit, options=resolved)
        print(
            f"\nconfig {number}: {describe(config)}, augment={config.augment.enabled}, "
            f"precision {resolved.precision}"
        )
        for label, fit_data, validate in (("train", one_image, False), ("epoch", data, True)):
            runs: dict[str, Callable[[], float]] = {
                name: partial(time_fit, fit, config, fit_data, device)
                for name, fit in engines.items()
            }
            runs["raw"] = partial(time_raw, config, data, validate, resolved)
            best = dict.fromkeys(runs, math.inf)
            for _ in range(args.repeats):
                for name, run in runs.items():
                    best[name] = min(best[name], run())
            for name, seconds in best.items():
                totals[label, name] = totals.get((label, name), 0.0) + seconds
            line = ", ".join(f"{name} {images / s:6.0f} img/s" for name, s in best.items())
            ratios = ", ".join(f"{name}/raw {best['raw'] / best[name]:.1%}" for name in engines)
            print(f"  {label}: {line}; {ratios} (load {load_average()})", flush=True)

    print("\nall configs (sum of best times):")
    names = ["fit", *(["reference fit"] if reference_fit is not None else [])]
    for label in ("train", "epoch"):
        line = ", ".join(
            f"{name} {totals[label, 'raw'] / totals[label, name]:.1%} of raw" for name in names
        )
        print(f"  {label}: {line}")


if __name__ == "__main__":
    main()
