"""The [augment] table and the augmentation parameters' domains, fixed there or sampled in [space].

Each field of `AugmentSpec` is a tunable parameter like `learning_rate`: fixed in [augment]
(as before) or declared in [space] as a range or choices (`mixup_alpha = { type = "float",
low = 0.0, high = 0.4 }`). One key in both places is an error: which one wins would be a guess.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from tuner.checking import Checker, shown
from tuner.config import AugmentSpec
from tuner.spec.schema import ParamDomain

# The largest padding any shipped dataset can use (CIFAR's 32-pixel side; 28 for MNIST):
# padding wider than the image crops mostly padding.
MAX_PADDING = 32

AUGMENT_PARAMETERS: dict[str, ParamDomain] = {
    "random_crop_padding": ParamDomain(
        int, 0, lambda v: 0 <= v < MAX_PADDING, f"an int from 0 to {MAX_PADDING - 1}"
    ),
    "horizontal_flip": ParamDomain(bool, False, lambda v: True, "true or false"),
    "rotation_degrees": ParamDomain(float, 0.0, lambda v: 0 <= v <= 180, "a float in [0, 180]"),
    "translate": ParamDomain(float, 0.0, lambda v: 0 <= v <= 0.5, "a float in [0, 0.5]"),
    "color_jitter": ParamDomain(float, 0.0, lambda v: 0 <= v <= 1, "a float in [0, 1]"),
    "cutout": ParamDomain(int, 0, lambda v: 0 <= v <= 1024, "an int from 0 to 1024"),
    "mixup_alpha": ParamDomain(float, 0.0, lambda v: 0 <= v <= 100, "a float in [0, 100]"),
    "cutmix_alpha": ParamDomain(float, 0.0, lambda v: 0 <= v <= 100, "a float in [0, 100]"),
}
assert set(AUGMENT_PARAMETERS) == {f.name for f in fields(AugmentSpec)}  # one list, two views


def parse_augment(check: Checker, data: dict[str, Any]) -> AugmentSpec:
    """The fixed augmentations of [augment], each in its domain, none also sampled in [space]."""
    augment = check.dataclass_section(data, "augment", AugmentSpec)
    fixed = check.table(data, "augment")
    space = data.get("space")
    for name in fixed:
        if isinstance(space, dict) and name in space:
            raise check.fail(
                f"[augment].{name}",
                f"is also declared as [space].{name}: keep one (fixed in [augment], "
                "or fixed/sampled in [space])",
            )
        value = getattr(augment, name)
        domain = AUGMENT_PARAMETERS[name]
        if not domain.check(value):
            raise check.fail(f"[augment].{name}", f"must be {domain.allowed}, got {shown(value)}")
    return augment
