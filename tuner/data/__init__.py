"""Datasets by name -> uint8 image tensors, decoded once and cached on disk (the public face).

Every dataset becomes a `Dataset` of `ImageSet`s: `images` uint8 (N, C, H, W) and `labels`
int64 (N,). The modules below, one job each:

    registry       the dataset names, where each one's files are and how they decode
    idx, cifar, imagefolder, digits      the file formats
    identity       MNIST and Fashion-MNIST told apart by content
    cache          the decoded-tensor cache, checked on every read
    load           load_dataset: registry -> files -> cache or decode
    splits, stats  the seeded train/validation split and its normalisation statistics

The split into train/validation is seeded; the test split is never used while tuning.
The names below are imported on first use, so that `spec` can read the registry without
importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tuner.data.idx import MNIST_FILES
    from tuner.data.load import default_cache_dir, default_data_dir, load_dataset
    from tuner.data.sets import Dataset, ImageSet, Splits
    from tuner.data.splits import split
    from tuner.data.stats import channel_stats

_HOMES = {
    "MNIST_FILES": "tuner.data.idx",
    "Dataset": "tuner.data.sets",
    "ImageSet": "tuner.data.sets",
    "Splits": "tuner.data.sets",
    "channel_stats": "tuner.data.stats",
    "default_cache_dir": "tuner.data.load",
    "default_data_dir": "tuner.data.load",
    "load_dataset": "tuner.data.load",
    "split": "tuner.data.splits",
}
__all__ = [
    "MNIST_FILES",
    "Dataset",
    "ImageSet",
    "Splits",
    "channel_stats",
    "default_cache_dir",
    "default_data_dir",
    "load_dataset",
    "split",
]


def __getattr__(name: str) -> object:
    """The public names, from the module that defines each (PEP 562)."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
