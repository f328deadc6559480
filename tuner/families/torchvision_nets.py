"""torchvision classifiers adapted to the data's shape: resnet18/34 and mobilenet_v3_small.

Built with `weights=None`: nothing is ever downloaded; pretrained weights come from a local
file (`tuner.engine.pretrained`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tuner.families.family import Family, Shape

if TYPE_CHECKING:
    from torch import nn

    from tuner.config import TrialConfig

# Below this side the torchvision stems (stride 2 + max-pool for resnet, stride 2 for
# mobilenet) would shrink 28x28 or 32x32 images to a few pixels before the first stage.
SMALL_IMAGE = 64


def _resnet(name: str) -> Callable[[TrialConfig, Shape, int], nn.Module]:
    def build(config: TrialConfig, input_shape: Shape, num_classes: int) -> nn.Module:
        from torch import nn
        from torchvision import models  # imported when a torchvision family is built

        model = getattr(models, name)(weights=None)
        channels, height, width = input_shape
        if min(height, width) < SMALL_IMAGE:
            # The CIFAR-style stem: 3x3 stride 1, no max-pool, so 28x28 keeps 28x28 features.
            model.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            model.maxpool = nn.Identity()
        elif channels != 3:
            model.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        model.fc = nn.Sequential(
            nn.Dropout(config.dropout), nn.Linear(model.fc.in_features, num_classes)
        )
        return model

    return build


def _resnet_stages(model: nn.Module) -> list[nn.Module]:
    from torch import nn

    stem = nn.ModuleList([model.conv1, model.bn1])  # a view for freezing; not registered
    return [stem, model.layer1, model.layer2, model.layer3, model.layer4]


def _resnet_adaptation(input_shape: Shape) -> str:
    channels, height, width = input_shape
    if min(height, width) < SMALL_IMAGE:
        return (
            f"stem replaced for {channels}x{height}x{width}: 3x3 stride-1 first conv, "
            "no max-pool; head replaced"
        )
    if channels != 3:
        return f"first conv replaced for {channels} input channels; head replaced"
    return "torchvision stem; head replaced"


def _resnet_family(name: str) -> Family:
    return Family(
        name=name,
        build=_resnet(name),
        stages=_resnet_stages,
        head=lambda model: model.fc,
        adaptation=_resnet_adaptation,
        pretrained=True,
    )


def _mobilenet(name: str) -> Callable[[TrialConfig, Shape, int], nn.Module]:
    def build(config: TrialConfig, input_shape: Shape, num_classes: int) -> nn.Module:
        from torch import nn
        from torchvision import models

        model = getattr(models, name)(weights=None)
        channels, height, width = input_shape
        first = model.features[0][0]
        stride = 1 if min(height, width) < SMALL_IMAGE else 2
        if channels != first.in_channels or stride != 2:
            model.features[0][0] = nn.Conv2d(
                channels, first.out_channels, kernel_size=3, stride=stride, padding=1, bias=False
            )
        classifier = model.classifier  # Linear, Hardswish, Dropout, Linear
        classifier[2] = nn.Dropout(config.dropout)
        classifier[3] = nn.Linear(classifier[3].in_features, num_classes)
        return model

    return build


def _mobilenet_adaptation(input_shape: Shape) -> str:
    channels, height, width = input_shape
    if min(height, width) < SMALL_IMAGE:
        return (
            f"first conv replaced for {channels}x{height}x{width}: 3x3 stride 1; "
            "classifier's last layer replaced"
        )
    if channels != 3:
        return f"first conv replaced for {channels} input channels; classifier replaced"
    return "torchvision stem; classifier's last layer replaced"


TORCHVISION_FAMILIES = (
    _resnet_family("resnet18"),
    _resnet_family("resnet34"),
    Family(
        name="mobilenet_v3_small",
        build=_mobilenet("mobilenet_v3_small"),
        stages=lambda model: list(model.features),
        head=lambda model: model.classifier,
        adaptation=_mobilenet_adaptation,
        pretrained=True,
    ),
)
