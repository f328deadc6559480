"""The seed architecture: conv blocks -> flatten -> FC + ReLU -> Dropout -> FC to classes."""

from __future__ import annotations

from torch import nn

from tuner.config import TrialConfig


def build_cnn(
    config: TrialConfig, input_shape: tuple[int, int, int], num_classes: int
) -> nn.Sequential:
    """Build the CNN a trial's config describes, for (C, H, W) inputs of any size.

    Each block is Conv(k x k, same padding) [+ BatchNorm] + ReLU + MaxPool(2). Pooling is
    skipped once the feature map is down to one pixel, so deep configs still fit small images
    (8x8 digits with 4 blocks). The softmax lives in the loss and in prediction.
    """
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


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (frozen ones included: the size of the model)."""
    return sum(p.numel() for p in model.parameters())
