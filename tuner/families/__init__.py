"""Model families by name (the public face): what each builds, samples, freezes and shows.

- `family`: the `Family` record and the `freeze` rule
- `registry`: `FAMILIES`, `get_family`, `build_model`: the one list of family names
- `seed_cnn`, `torchvision_nets`: the built-in families, one `Family` entry each
- `user`: families from code (a file, a module, an entry point); `timm_nets`: "timm:NAME"

No torch import until a network is built: the spec reads names and parameters from here.
Training-side operations on a built model (freezing, optimizer groups, feature-map hooks)
live in `tuner.engine.families`.
"""

from tuner.families.family import FREEZE_RULE, Family, Shape, is_freeze
from tuner.families.registry import (
    CODE_FAMILIES,
    FAMILIES,
    build_model,
    family_names,
    family_parameters,
    get_family,
    is_family_name,
)
from tuner.families.seed_cnn import SEED_CNN

__all__ = [
    "CODE_FAMILIES",
    "FAMILIES",
    "FREEZE_RULE",
    "SEED_CNN",
    "Family",
    "Shape",
    "build_model",
    "family_names",
    "family_parameters",
    "get_family",
    "is_family_name",
    "is_freeze",
]
