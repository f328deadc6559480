"""Plain configuration values shared by the data, model and training modules.

These dataclasses carry concrete values only: no Optuna, no parsing. `tuner.spec` builds them
from study files and `tuner.search.space` fills a `TrialConfig` from a trial's sampled values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tuner.families.seed_cnn import SEED_CNN


@dataclass(frozen=True)
class AugmentSpec:
    """Batched, on-device augmentations applied to training batches only."""

    random_crop_padding: int = 0  # pad by this many pixels, then crop back to size at random
    horizontal_flip: bool = False
    rotation_degrees: float = 0.0  # random rotation in [-d, d]
    translate: float = 0.0  # random shift up to this fraction of width/height
    color_jitter: float = 0.0  # brightness/contrast/saturation factor range [1-j, 1+j]
    cutout: int = 0  # side of a zeroed square, in pixels (0 = off)
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) mixing of image pairs (0 = off)
    cutmix_alpha: float = 0.0  # Beta(alpha, alpha) box pasting between pairs (0 = off)

    @property
    def mixes_labels(self) -> bool:
        """True when targets become soft label mixtures (MixUp or CutMix)."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    @property
    def enabled(self) -> bool:
        return self != AugmentSpec()


@dataclass(frozen=True)
class TrialConfig:
    """Everything needed to build and train one model: the concrete values of one trial."""

    learning_rate: float = 1e-3
    batch_size: int = 64
    kernel_size: int = 3
    filters: tuple[int, ...] = (32, 64)  # output channels of each conv block
    fc_units: int = 128
    dropout: float = 0.25
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    optimizer: str = "adamw"
    momentum: float = 0.9  # used by sgd only
    batch_norm: bool = True
    max_epochs: int = 10
    patience: int = 3  # epochs without val-loss improvement before stopping (0 = never)
    seed: int = 0
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    # The network (tuner.families); kernel_size, filters, fc_units and batch_norm describe
    # the seed CNN only. Old configs without these keys are the seed CNN.
    family: str = SEED_CNN
    pretrained: str = ""  # local weights file loaded into the backbone before training ("" = none)
    freeze: str = "none"  # "none", "backbone" or "all-but-last-K" backbone stages
    backbone_learning_rate: float = 0.0  # 0: the backbone trains at learning_rate
    # A user family's own [space] parameters (tuner.families.user), as sorted (name, value)
    # pairs: a frozen config stays hashable. Empty for the built-in families.
    model_params: tuple[tuple[str, Any], ...] = ()
    # SHA-256 of a user family's Python file when the trial ran: retrain and predict refuse a
    # file that changed since ("" for other families).
    family_sha256: str = ""

    @property
    def num_blocks(self) -> int:
        return len(self.filters)

    def to_dict(self) -> dict[str, Any]:
        """A JSON/TOML-friendly dict (tuples become lists; a family from code's fields only
        for such a family, so other configs read as they always did)."""
        values = asdict(self)
        values["filters"] = list(self.filters)
        values["model_params"] = dict(self.model_params)
        for name in ("model_params", "family_sha256"):
            if not values[name]:
                del values[name]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialConfig:
        """Inverse of `to_dict`; unknown keys raise TypeError."""
        values = dict(values)
        if "filters" in values:
            values["filters"] = tuple(int(f) for f in values["filters"])
        if isinstance(values.get("augment"), dict):
            values["augment"] = AugmentSpec(**values["augment"])
        if isinstance(values.get("model_params"), dict):
            values["model_params"] = tuple(sorted(values["model_params"].items()))
        return cls(**values)
