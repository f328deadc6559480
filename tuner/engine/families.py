"""Model families by name: the seed CNN and torchvision classifiers adapted to the data's shape.

One registry, `FAMILIES`. Each family builds a network for (C, H, W) inputs and `num_classes`,
names its backbone stages (input to output; what `freeze` and the backbone learning rate act on)
and its head (the classifier, always new and trained at `learning_rate`), and says in one line
how it was adapted to the data. torchvision models are built with `weights=None`: nothing is
ever downloaded; pretrained weights come from a local file (`tuner.engine.pretrained`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from tuner.config import TrialConfig
from tuner.engine.model import build_cnn
from tuner.errors import TunerError

SEED_CNN = "seed-cnn"
# Below this side the torchvision stems (stride 2 + max-pool for resnet, stride 2 for
# mobilenet) would shrink 28x28 or 32x32 images to a few pixels before the first stage.
SMALL_IMAGE = 64

FREEZE_RULE = "'none', 'backbone' or 'all-but-last-K' (K >= 1 backbone stages stay trainable)"
_ALL_BUT_LAST = re.compile(r"all-but-last-([1-9][0-9]{0,2})")

Shape = tuple[int, int, int]


@dataclass(frozen=True)
class Family:
    """How to build one family and where its backbone and head are."""

    build: Callable[[TrialConfig, Shape, int], nn.Module]
    stages: Callable[[nn.Module], list[nn.Module]]  # backbone stages, input to output
    head: Callable[[nn.Module], nn.Module]
    adaptation: Callable[[Shape], str]  # one line: how the network was fitted to the data


def _seed_stages(model: nn.Module) -> list[nn.Module]:
    return list(model[0])


def _resnet(name: str) -> Callable[[TrialConfig, Shape, int], nn.Module]:
    def build(config: TrialConfig, input_shape: Shape, num_classes: int) -> nn.Module:
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


def _mobilenet(name: str) -> Callable[[TrialConfig, Shape, int], nn.Module]:
    def build(config: TrialConfig, input_shape: Shape, num_classes: int) -> nn.Module:
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


FAMILIES: dict[str, Family] = {
    SEED_CNN: Family(
        build=build_cnn,
        stages=_seed_stages,
        head=lambda model: model[1],
        adaptation=lambda shape: "conv blocks sized by the trial's parameters",
    ),
    "resnet18": Family(_resnet("resnet18"), _resnet_stages, lambda m: m.fc, _resnet_adaptation),
    "resnet34": Family(_resnet("resnet34"), _resnet_stages, lambda m: m.fc, _resnet_adaptation),
    "mobilenet_v3_small": Family(
        _mobilenet("mobilenet_v3_small"),
        lambda m: list(m.features),
        lambda m: m.classifier,
        _mobilenet_adaptation,
    ),
}


def family_names() -> str:
    return ", ".join(repr(name) for name in FAMILIES)


def get_family(name: str) -> Family:
    """The registered family `name`; TunerError listing the valid names otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise TunerError(f"unknown model family {name!r}; allowed: {family_names()}") from None


def build_model(config: TrialConfig, input_shape: Shape, num_classes: int) -> nn.Module:
    """The network of `config.family` for (C, H, W) inputs, freshly initialised."""
    return get_family(config.family).build(config, tuple(input_shape), num_classes)


def is_freeze(value: str) -> bool:
    """Whether `value` is a valid `freeze` setting (see FREEZE_RULE)."""
    return value in ("none", "backbone") or _ALL_BUT_LAST.fullmatch(value) is not None


def apply_freeze(model: nn.Module, family: str, freeze: str) -> int:
    """Stop gradients of the frozen backbone stages; returns how many stages are frozen.

    "backbone" freezes every stage (only the head trains); "all-but-last-K" leaves the last
    K stages and the head trainable. BatchNorm statistics of frozen stages still follow the
    data in training mode (only parameters are frozen).
    """
    stages = get_family(family).stages(model)
    if freeze == "none":
        frozen = []
    elif freeze == "backbone":
        frozen = stages
    else:
        match = _ALL_BUT_LAST.fullmatch(freeze)
        if match is None:
            raise TunerError(f"freeze {freeze!r}: must be {FREEZE_RULE}")
        frozen = stages[: max(0, len(stages) - int(match.group(1)))]
    for stage in frozen:
        stage.requires_grad_(False)
    return len(frozen)


def param_groups(model: nn.Module, config: TrialConfig) -> list[dict]:
    """Optimizer groups: the head at `learning_rate`, the backbone at `backbone_learning_rate`.

    Frozen parameters are left out; with backbone_learning_rate 0 all share one group.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not config.backbone_learning_rate:
        return [{"params": trainable, "lr": config.learning_rate}]
    head_ids = {id(p) for p in get_family(config.family).head(model).parameters()}
    head = [p for p in trainable if id(p) in head_ids]
    backbone = [p for p in trainable if id(p) not in head_ids]
    groups = [{"params": head, "lr": config.learning_rate}]
    if backbone:
        groups.append({"params": backbone, "lr": config.backbone_learning_rate})
    return groups


def stage_outputs(model: nn.Module, family: str) -> list[nn.Module]:
    """The module whose output is each backbone stage's output (for feature-map hooks)."""
    stages = get_family(family).stages(model)
    # A ModuleList view (resnet's stem) never runs itself: its last layer's output is its own.
    return [stage[-1] if isinstance(stage, nn.ModuleList) else stage for stage in stages]


def conv_layers(model: nn.Module, family: str) -> list[tuple[str, nn.Conv2d]]:
    """(name, layer) of the first conv layer of each backbone stage, input to output.

    These are what `tuner visualize` shows: for the seed CNN one per conv block, for a
    torchvision family the stem's conv and the first conv of each later stage.
    """
    names = {module: name for name, module in model.named_modules()}
    layers = []
    for stage in get_family(family).stages(model):
        conv = next((m for m in stage.modules() if isinstance(m, nn.Conv2d)), None)
        if conv is not None:
            layers.append((names.get(conv, "conv"), conv))
    return layers
