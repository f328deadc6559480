"""A study's data on the device it trains on: load (through the cache), split, move, once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tuner.data import load_dataset, split
from tuner.engine.device import DeviceData, to_device

if TYPE_CHECKING:
    import torch

    from tuner.spec import DatasetSpec


def load_device_data(
    dataset: DatasetSpec,
    device: torch.device,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    download: bool = True,
) -> DeviceData:
    """The study's seeded train/validation split of `dataset`, on `device`.

    The same images every trial, `confirm` run and benchmark trains and validates on.
    Raises TunerError saying where the files are expected when they are missing.
    """
    loaded = load_dataset(dataset.name, data_dir, cache_dir, download=download)
    splits = split(
        loaded,
        val_fraction=dataset.val_fraction,
        split_seed=dataset.split_seed,
        train_subset=dataset.train_subset,
    )
    return to_device(splits, device)
