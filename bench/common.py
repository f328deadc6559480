"""What the training benchmarks share: the study's data and configs, timing, the machine header.

Both benchmarks draw their trial configs once from the study's search space with a seeded
RandomSampler, so every engine (and every rerun) trains exactly the same list of models.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import optuna
import torch

from tuner.config import TrialConfig
from tuner.data import Splits, load_dataset, split
from tuner.search.space import suggest
from tuner.spec import StudySpec

ROOT = Path(__file__).resolve().parent.parent

# The shared copy of real MNIST next to the repository (see ../shared/datasets/README.md).
DEFAULT_DATASET_DIR = ROOT.parent / "shared" / "datasets" / "mnist-10k"
DEFAULT_STUDY = ROOT / "studies" / "mnist.toml"


def load_splits(spec: StudySpec, dataset_dir: Path, cache_dir: Path | None = None) -> Splits:
    """The study's train/validation split, decoded through tuner's cache (no download)."""
    dataset = load_dataset(spec.dataset.name, dataset_dir, cache_dir, download=False)
    return split(
        dataset,
        val_fraction=spec.dataset.val_fraction,
        split_seed=spec.dataset.split_seed,
        train_subset=spec.dataset.train_subset,
    )


def sample_configs(
    spec: StudySpec, count: int, epochs: int
) -> list[tuple[dict[str, object], TrialConfig]]:
    """`count` (params, config) pairs from the study's space, sampled once with a seeded
    RandomSampler; every config runs all `epochs` (no early stopping, no pruning)."""
    sampler = optuna.samplers.RandomSampler(seed=spec.sampler.seed or 0)
    study = optuna.create_study(sampler=sampler)
    configs = []
    for _ in range(count):
        trial = study.ask()
        config = replace(suggest(trial, spec), max_epochs=epochs, patience=0)
        configs.append((dict(trial.params), config))
        study.tell(trial, 0.0)
    return configs


def describe(config: TrialConfig) -> str:
    """A config in one short line: what decides its cost."""
    filters = "-".join(str(f) for f in config.filters)
    return (
        f"bs={config.batch_size} k={config.kernel_size} filters={filters} fc={config.fc_units}"
        f" lr={config.learning_rate:.1e}"
    )


def machine_header() -> list[str]:
    """Machine, date, command and versions: the lines every RESULTS.md section starts with."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return [
        f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"machine: {cpu}, {len(os.sched_getaffinity(0))} cores available, "
        f"torch threads {torch.get_num_threads()}, load average before: {load}",
        f"versions: python {platform.python_version()}, torch {torch.__version__}, "
        f"optuna {optuna.__version__}",
        "command: python " + shlex.join(sys.argv),
    ]


def load_average() -> str:
    """The 1-minute load average, to show how busy the machine was during a measurement."""
    return f"{os.getloadavg()[0]:.1f}"
