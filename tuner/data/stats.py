"""Per-channel mean and std of uint8 images, exact and without a float copy of the set."""

from __future__ import annotations

import math

import torch

STATS_CHUNK_VALUES = 1 << 22  # channel_stats counts this many pixel values at a time


def channel_stats(
    images: torch.Tensor, images_per_chunk: int | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and sample std of uint8 images (N, C, H, W), on the 0..1 scale.

    Counts how often each of the 256 values occurs per channel, `images_per_chunk` images at a
    time (None: about STATS_CHUNK_VALUES values), so no float copy of the whole set is made;
    the moments follow from the counts in exact integer arithmetic. A constant channel's std
    is raised to 1e-3 so that normalising never divides by zero.
    """
    if images.dtype != torch.uint8:
        raise ValueError(f"channel_stats needs uint8 images, got {images.dtype}")
    n, channels, height, width = images.shape
    chunk = images_per_chunk or max(1, STATS_CHUNK_VALUES // max(1, channels * height * width))
    counts = torch.zeros(channels, 256, dtype=torch.int64, device=images.device)
    for start in range(0, n, chunk):
        block = images[start : start + chunk]
        for channel in range(channels):
            counts[channel] += torch.bincount(block[:, channel].flatten(), minlength=256)
    values = torch.arange(256, dtype=torch.int64, device=images.device)
    sums = (counts * values).sum(dim=1).tolist()
    sums_of_squares = (counts * values.square()).sum(dim=1).tolist()
    count = n * height * width
    means, stds = [], []
    for total, squares in zip(sums, sums_of_squares, strict=True):
        # sum((x - mean)^2) = (count * sum(x^2) - sum(x)^2) / count, all in Python integers.
        variance = (count * squares - total**2) / (count * (count - 1)) if count > 1 else 0.0
        means.append(total / count / 255 if count else math.nan)
        stds.append(max(math.sqrt(variance) / 255, 1e-3))
    return tuple(means), tuple(stds)
