"""The tensors every dataset decodes to: image sets, datasets and a trial's train/val splits."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ImageSet:
    """Images as uint8 (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[indices], self.labels[indices])


@dataclass(frozen=True)
class Dataset:
    """A dataset's official train and test splits plus its class names."""

    name: str
    train: ImageSet
    test: ImageSet
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        channels, height, width = self.train.images.shape[1:]
        return int(channels), int(height), int(width)


@dataclass(frozen=True)
class Splits:
    """What a trial trains and validates on; the test split stays with the Dataset."""

    train: ImageSet
    val: ImageSet
    num_classes: int
    mean: tuple[float, ...]  # per channel, on the 0..1 scale, from the training split
    std: tuple[float, ...]
