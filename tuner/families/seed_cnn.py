"""The seed CNN: conv blocks -> flatten -> FC + ReLU -> Dropout -> FC to classes, sized by the
trial's own parameters (the only family with `kernel_size`, `filters`, `fc_units`...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuner.families.family import Family, Shape

if TYPE_CHECKING:
    from torch import nn

    from tuner.config import TrialConfig

SEED_CNN = "seed-cnn"


def build_cnn(config: TrialConfig, input_shape: Shape, num_classes: int) -> nn.Sequential:
    """Build the CNN a trial's config describes, for (C, H, W) inputs of any size.

    Each block is Conv(k x k, same padding) [+ BatchNorm] + ReLU + MaxPool(2). Pooling is
    skipped once the feature map is down to one pixel, so deep configs still fit small images
    (8x8 digits with 4 blocks). The softmax lives in the loss and in prediction.
    """
    from torch import nn

    channels, height, width = input_shape
    blocks = []
    for block_filters in config.filters:
        layers: list[nn.Module] = [
            nn.Conv2d(
                channels,
                block_filters,
                kernel_size=config.kernel_size,
                padding=config.kernel_size // 2,
                bias=not config.batch_norm,  # BatchNorm's shift makes a conv bias redundant
            )
        ]
        if config.batch_norm:
            layers.append(nn.BatchNorm2d(block_filters))
        layers.append(nn.ReLU(inplace=True))
        if height >= 2 and width >= 2:
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        blocks.append(nn.Sequential(*layers))
        channels = block_filters

    return nn.Sequential(
        nn.Sequential(*blocks),  # model[0]: the conv blocks (visualisation reads their outputs)
        nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * height * width, config.fc_units),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.fc_units, num_classes),
        ),
    )


SEED_CNN_FAMILY = Family(
    name=SEED_CNN,
    build=build_cnn,
    stages=lambda model: list(model[0]),
    head=lambda model: model[1],
    adaptation=lambda shape: "conv blocks sized by the trial's parameters",
    parameters=("kernel_size", "num_blocks", "filters", "fc_units", "batch_norm"),
)
