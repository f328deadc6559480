"""The family registry: every family by name, asked by every module that needs the names.

A new family is one `Family` entry in `FAMILIES` (with its builder in its own module); a
family from a user's code (`tuner.families.user`) or timm (`timm_nets`) is made when named. The
spec checks names and the families' own parameters against it, `search.space` samples a
family's parameters only for its trials, and `build_model` is how every caller builds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuner.errors import TunerError
from tuner.families.family import Family, Shape
from tuner.families.seed_cnn import SEED_CNN_FAMILY
from tuner.families.timm_nets import timm_family, timm_model_name
from tuner.families.torchvision_nets import TORCHVISION_FAMILIES
from tuner.families.user import ENTRY_POINT_GROUP, family_from_code, is_code_family

if TYPE_CHECKING:
    from torch import nn

    from tuner.config import TrialConfig

FAMILIES: dict[str, Family] = {
    family.name: family for family in (SEED_CNN_FAMILY, *TORCHVISION_FAMILIES)
}


def family_names() -> str:
    """The registered names, quoted and comma-separated (for messages)."""
    return ", ".join(repr(name) for name in FAMILIES)


CODE_FAMILIES = (
    "a 'file.py:function' or 'package.module:function' reference, 'timm:NAME' or an "
    f"entry point of group {ENTRY_POINT_GROUP!r}"
)


def is_family_name(name: str) -> bool:
    """Whether `name` is a registered family or names one in code (not imported here)."""
    return name in FAMILIES or timm_model_name(name) is not None or is_code_family(name)


def get_family(name: str) -> Family:
    """The family `name`: registered, "timm:NAME", or from code (a reference or an entry
    point of `tuner.families`, imported here). TunerError listing the valid names otherwise."""
    if name in FAMILIES:
        return FAMILIES[name]
    family = timm_family(name) or family_from_code(name)
    if family is None:
        raise TunerError(
            f"unknown model family {name!r}; allowed: {family_names()}, or {CODE_FAMILIES}"
        )
    return family


def family_parameters() -> dict[str, tuple[str, ...]]:
    """Each family-only [space] parameter -> the families that sample it."""
    owners: dict[str, tuple[str, ...]] = {}
    for family in FAMILIES.values():
        for name in family.parameters:
            owners[name] = (*owners.get(name, ()), family.name)
    return owners


def build_model(config: TrialConfig, input_shape: Shape, num_classes: int) -> nn.Module:
    """The network of `config.family` for (C, H, W) inputs, freshly initialised."""
    return get_family(config.family).build(config, tuple(input_shape), num_classes)
