"""`family = "timm:NAME"`: any timm model, adapted to the data's shape like torchvision's.

Built with `pretrained=False`: nothing is ever downloaded; weights come from a local file
through `[model].pretrained`. timm is an optional extra (`pip install 'tuner[timm]'`); a study
that names a timm model without it gets one line saying so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuner.errors import TunerError
from tuner.families.family import Family, Shape
from tuner.families.torchvision_nets import SMALL_IMAGE

if TYPE_CHECKING:
    from torch import nn

    from tuner.config import TrialConfig

PREFIX = "timm:"
INSTALL = "timm is not installed; install it with: pip install 'tuner[timm]'"


def timm_model_name(family: str) -> str | None:
    """NAME of a "timm:NAME" family, else None."""
    return (
        family[len(PREFIX) :] if family.startswith(PREFIX) and len(family) > len(PREFIX) else None
    )


def timm_family(family: str) -> Family | None:
    """The Family of a "timm:NAME" name (checked against timm's list), or None."""
    name = timm_model_name(family)
    if name is None:
        return None
    try:
        import timm
    except ImportError:
        raise TunerError(f"{family}: {INSTALL}") from None
    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:5]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise TunerError(f"{family}: timm has no model {name!r}{hint}")
    return Family(
        name=family,
        build=lambda config, shape, classes: _build(name, config, shape, classes),
        stages=_stages,
        head=lambda model: model.get_classifier(),
        adaptation=_adaptation,
        pretrained=True,
    )


def _build(name: str, config: TrialConfig, input_shape: Shape, num_classes: int) -> nn.Module:
    import timm
    from torch import nn

    channels, height, width = input_shape
    options = {"pretrained": False, "num_classes": num_classes, "in_chans": channels}
    try:  # models with a fixed input size (ViTs) take the data's; conv nets refuse the option
        model = timm.create_model(
            name, img_size=(height, width), drop_rate=config.dropout, **options
        )
    except TypeError:
        model = timm.create_model(name, drop_rate=config.dropout, **options)
    if min(height, width) < SMALL_IMAGE:
        # As for torchvision's resnets: a stride-1 first conv and no stem max-pool keep 28x28
        # or 32x32 images from shrinking to a few pixels before the first stage.
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is not None and first.stride != (1, 1) and first.kernel_size != first.stride:
            first.stride = (1, 1)
        for module_name, module in model.named_children():
            if isinstance(module, nn.MaxPool2d):
                setattr(model, module_name, nn.Identity())
                break
    return model


def _stages(model: nn.Module) -> list[nn.Module]:
    """The modules timm lists as its feature stages (input to output)."""
    return [model.get_submodule(info["module"]) for info in model.feature_info]


def _adaptation(input_shape: Shape) -> str:
    channels, height, width = input_shape
    if min(height, width) < SMALL_IMAGE:
        return (
            f"timm, in_chans={channels}; for {height}x{width}: stride-1 first conv, no stem "
            "max-pool; head for the classes"
        )
    return f"timm, in_chans={channels}; head for the classes"
