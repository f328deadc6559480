"""First epoch against later ones: is there a warm-up that every trial pays, and where is it?

    OMP_NUM_THREADS=1 python bench/first_epoch.py          # 10,000 images, 3 epochs, 3 trials
    python bench/first_epoch.py --same-config --train-images 20000

Trains `--trials` configs of a study one after the other in one process, as a `tuner run`
worker does (the first configs its seeded RandomSampler draws, as bench/common does; with
`--same-config`, the first one every time), with `fit`, on the first `--train-images` images of
the real Fashion-MNIST training split, for `--epochs` epochs each. The first trial shows what a
process pays once, the later ones what every new config pays.

Per epoch it prints wall time and process CPU time, and from a forward pre-hook on the model
the time of every training batch: the first batches against the epoch's median batch show a
warm-up inside the epoch. Process CPU time, unlike wall time, barely moves when other processes
share the cores (with one torch thread; with more, OpenMP's spin-waiting counts as CPU time).
Loading and decoding the dataset is timed apart: it is not part of any epoch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from common import ROOT, describe, machine_header, sample_configs

from tuner.data import load_dataset, split
from tuner.engine import PRECISIONS, EngineOptions, fit, to_device
from tuner.families import build_model
from tuner.spec import load_spec

CPU = torch.device("cpu")
FIRST = 5  # first training batches of an epoch, printed one by one


def stamp(stamps: list[tuple[float, bool]], module: torch.nn.Module, _: object) -> None:
    """Forward pre-hook: when each batch's forward starts, and whether it is training."""
    stamps.append((time.perf_counter(), module.training))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset-dir", type=Path, default=ROOT.parent / "shared" / "datasets" / "fashion-mnist"
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="tuner's tensor cache")
    parser.add_argument("--study", type=Path, default=ROOT / "studies" / "fashion-mnist.toml")
    parser.add_argument("--train-images", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--trials", type=int, default=3, help="models trained in this process")
    parser.add_argument("--same-config", action="store_true", help="config 0 for every trial")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    args = parser.parse_args()

    spec = load_spec(args.study)
    started = time.perf_counter()
    dataset = load_dataset(spec.dataset.name, args.dataset_dir, args.cache_dir, download=False)
    dataset = replace(dataset, train=dataset.train.subset(torch.arange(args.train_images)))
    data = to_device(
        split(dataset, val_fraction=spec.dataset.val_fraction, split_seed=spec.dataset.split_seed),
        CPU,
    )
    loading = time.perf_counter() - started
    configs = [config for _, config in sample_configs(spec, args.trials, args.epochs)]
    if args.same_config:
        configs = [configs[0]] * args.trials

    print("\n".join(machine_header()))
    print(
        f"data: {len(data.train_labels):,} train / {len(data.val_labels):,} validation images "
        f"(loading, decoding, splitting: {loading:.1f} s, outside every epoch)"
    )
    rows: dict[tuple[int, int], tuple[float, float]] = {}
    for trial, config in enumerate(configs):
        torch.manual_seed(config.seed)
        model = build_model(config, data.input_shape, data.num_classes)
        options = EngineOptions(args.precision).resolve(
            model, data.input_shape, config.batch_size, CPU
        )
        print(f"\ntrial {trial}: {describe(config)}, augment={config.augment.enabled}")
        print(
            f"{'epoch':>5} {'precision':>9} {'wall s':>7} {'cpu s':>6} {'train s':>7} "
            f"{'val s':>6} {'median batch ms':>15}  first {FIRST} batches ms   load"
        )
        stamps: list[tuple[float, bool]] = []
        model.register_forward_pre_hook(partial(stamp, stamps))
        cpu_before = time.process_time()
        for result in fit(model, data, config, CPU, options):
            cpu_now, wall_now = time.process_time(), time.perf_counter()
            cpu, cpu_before = cpu_now - cpu_before, cpu_now
            train = [at for at, training in stamps if training]
            val_start = next((at for at, training in stamps if not training), wall_now)
            # Batch i's time: from its forward to the next batch's (the last's, to validation).
            batches = [b - a for a, b in zip(train, [*train[1:], val_start], strict=True)]
            rows[trial, result.epoch] = (result.seconds, cpu)
            print(
                f"{result.epoch:>5} {options.precision:>9} {result.seconds:7.2f} {cpu:6.2f} "
                f"{val_start - (wall_now - result.seconds):7.2f} {wall_now - val_start:6.2f} "
                f"{statistics.median(batches) * 1e3:15.1f}  "
                f"{' '.join(f'{b * 1e3:.0f}' for b in batches[:FIRST]):<20}  "
                f"{os.getloadavg()[0]:.1f}",
                flush=True,
            )
            stamps.clear()

    print("\nepoch 1 / median of later epochs (wall, cpu):")
    for trial in range(len(configs)):
        later = [rows[trial, epoch] for epoch in range(2, args.epochs + 1)]
        wall, cpu = rows[trial, 1]
        wall_later = statistics.median(w for w, _ in later)
        cpu_later = statistics.median(c for _, c in later)
        print(
            f"  trial {trial}: {wall / wall_later:.2f}x, {cpu / cpu_later:.2f}x "
            f"(cpu {cpu - cpu_later:+.2f} s)"
        )


if __name__ == "__main__":
    main()
