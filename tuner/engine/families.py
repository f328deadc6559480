"""Training-side operations on a built model of a registered family (`tuner.families`).

Freezing backbone stages, the optimizer's parameter groups (head vs backbone), and the layers
feature-map hooks and `tuner visualize` read: each asks the family's record for its stages
and head.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuner.config import TrialConfig
from tuner.errors import TunerError
from tuner.families import FREEZE_RULE, build_model, get_family
from tuner.families.family import ALL_BUT_LAST

if TYPE_CHECKING:
    from torch import nn

__all__ = ["apply_freeze", "build_model", "conv_layers", "param_groups", "stage_outputs"]


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
        match = ALL_BUT_LAST.fullmatch(freeze)
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
    from torch import nn

    stages = get_family(family).stages(model)
    # A ModuleList view (resnet's stem) never runs itself: its last layer's output is its own.
    return [stage[-1] if isinstance(stage, nn.ModuleList) else stage for stage in stages]


def conv_layers(model: nn.Module, family: str) -> list[tuple[str, nn.Conv2d]]:
    """(name, layer) of the first conv layer of each backbone stage, input to output.

    These are what `tuner visualize` shows: for the seed CNN one per conv block, for a
    torchvision family the stem's conv and the first conv of each later stage.
    """
    from torch import nn

    names = {module: name for name, module in model.named_modules()}
    layers = []
    for stage in get_family(family).stages(model):
        conv = next((m for m in stage.modules() if isinstance(m, nn.Conv2d)), None)
        if conv is not None:
            layers.append((names.get(conv, "conv"), conv))
    return layers
