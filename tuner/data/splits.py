"""Seeded splits: a trial's train/validation split, and a test split for sets without one."""

from __future__ import annotations

import torch

from tuner.data.sets import Dataset, ImageSet, Splits
from tuner.data.stats import channel_stats
from tuner.errors import TunerError

HOLD_OUT_FRACTION = 0.2  # of a dataset that ships without a test split
HOLD_OUT_SEED = 0


def split(
    dataset: Dataset, *, val_fraction: float, split_seed: int, train_subset: int = 0
) -> Splits:
    """Seeded train/validation split of the official train split (test stays untouched).

    `val_fraction` of the images validate; of the rest at most `train_subset` train (0: all).
    The normalisation statistics come from the images that train.
    """
    full = dataset.train
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(split_seed))
    val_count = max(1, round(len(full) * val_fraction))
    val_indices, train_indices = order[:val_count], order[val_count:]
    if train_subset:
        train_indices = train_indices[:train_subset]
    if len(train_indices) == 0:
        raise TunerError(
            f"dataset {dataset.name!r} has too few images for a train/validation split"
        )
    train = full.subset(train_indices)
    mean, std = channel_stats(train.images)
    return Splits(train, full.subset(val_indices), dataset.num_classes, mean, std)


def hold_out(data: ImageSet) -> tuple[ImageSet, ImageSet]:
    """(train, test): a fixed test split for datasets that ship without one."""
    generator = torch.Generator().manual_seed(HOLD_OUT_SEED)
    order = torch.randperm(len(data), generator=generator)
    cut = round(len(data) * HOLD_OUT_FRACTION)
    return data.subset(order[cut:]), data.subset(order[:cut])
