"""What a validated study file holds: `StudySpec` and its parts, and the tunable parameters.

Plain frozen dataclasses, built by `tuner.spec.parse`; later stages trust them as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.config import AugmentSpec
from tuner.measures import MEASURES

# Measures a study may optimise: name -> fixed direction (the registry is MEASURES).
METRICS = {name: measure.direction for name, measure in MEASURES.items()}


@dataclass(frozen=True)
class ParamDomain:
    """What values a tunable parameter may take at all (checked against every declaration)."""

    kind: type  # float, int, str or bool
    default: Any
    check: Callable[[Any], bool]
    allowed: str  # human description used in error messages


PARAMETERS: dict[str, ParamDomain] = {
    "learning_rate": ParamDomain(float, 1e-3, lambda v: v > 0, "a float > 0"),
    "batch_size": ParamDomain(int, 64, lambda v: v >= 1, "an int >= 1"),
    "kernel_size": ParamDomain(
        int, 3, lambda v: 1 <= v <= 31 and v % 2 == 1, "an odd int from 1 to 31"
    ),
    "num_blocks": ParamDomain(int, 2, lambda v: 1 <= v <= 6, "an int from 1 to 6"),
    "filters": ParamDomain(int, 32, lambda v: 1 <= v <= 1024, "an int from 1 to 1024"),
    "fc_units": ParamDomain(int, 128, lambda v: 1 <= v <= 8192, "an int from 1 to 8192"),
    "dropout": ParamDomain(float, 0.25, lambda v: 0 <= v < 1, "a float in [0, 1)"),
    "weight_decay": ParamDomain(float, 0.0, lambda v: v >= 0, "a float >= 0"),
    "label_smoothing": ParamDomain(float, 0.0, lambda v: 0 <= v < 1, "a float in [0, 1)"),
    "optimizer": ParamDomain(str, "adamw", lambda v: v in ("adamw", "sgd"), "'adamw' or 'sgd'"),
    "momentum": ParamDomain(float, 0.9, lambda v: 0 <= v < 1, "a float in [0, 1)"),
    "batch_norm": ParamDomain(bool, True, lambda v: True, "true or false"),
}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of the search space: sampled (float/int/categorical) or fixed."""

    name: str
    type: str  # "float", "int", "categorical" or "fixed"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    value: Any = None

    @property
    def is_fixed(self) -> bool:
        return self.type == "fixed"

    def to_dict(self) -> dict[str, Any]:
        """The declaration as stored with the study, to detect a changed space on resume."""
        if self.type == "fixed":
            return {"type": "fixed", "value": self.value}
        if self.type == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class SamplerSpec:
    name: str = "tpe"
    seed: int | None = 0
    options: dict[str, Any] = field(default_factory=dict)
    # The study file has no [sampler] table: a budget run may choose another (search.schedule)
    default: bool = False


@dataclass(frozen=True)
class PrunerSpec:
    name: str = "median"
    options: dict[str, Any] = field(default_factory=dict)
    # The study file has no [pruner] table: a budget run may choose another (search.schedule)
    default: bool = False


@dataclass(frozen=True)
class DatasetSpec:
    name: str = "digits"
    val_fraction: float = 0.2
    split_seed: int = 0
    train_subset: int = 0  # use at most this many training images (0 = all), for quick studies


DEFAULT_TRIALS = 20  # finished trials a run aims for without --trials, budget or trials key


@dataclass(frozen=True)
class TrainingSpec:
    max_epochs: int = 10
    patience: int = 3
    trials: int | None = None  # default `--trials` without a budget; None: DEFAULT_TRIALS
    seed: int = 0  # trial k trains with seed + k
    budget: float | None = None  # wall-clock seconds for a run (tuner.spec.budget)
    # With a budget: the most of it one full-length trial may take; the epochs follow.
    full_trial_share: float = 0.3
    # With a budget: a full trial gets at least this many epochs when they fit (0: the share
    # alone decides); a slow machine then trains the known good configuration long enough.
    full_trial_min_epochs: int = 0
    # The first [[enqueue]] configuration first trains this many epochs as a trial of its own
    # (0: off), so the run has a finished result early; then it trains the full schedule.
    first_result_epochs: int = 0
    reports_per_epoch: int = 0  # pruning rungs per epoch; 0: from the dataset size
    # Finished trials whose best weights stay in the artifact store (`tuner best --model`)
    keep_weights: int = 5
    # A trial saves a checkpoint at an epoch's end once its last one is this many seconds old
    checkpoint_seconds: float = 10.0


@dataclass(frozen=True)
class ModelSpec:
    """What [model] says beyond the tunable parameters: the pretrained weights file, and the
    hash of a family's Python file (`family = "models.py:build"`)."""

    pretrained: str = ""  # absolute path, or "" for none
    family_sha256: str = ""  # of [model].family's Python file, for a family from a file


@dataclass(frozen=True)
class StudySpec:
    """A validated study file."""

    name: str
    path: Path
    description: str = ""
    metric: str = "val_accuracy"
    direction: str = "maximize"
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    pruner: PrunerSpec = field(default_factory=PrunerSpec)
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    space: dict[str, ParamSpec] = field(default_factory=dict)
    model: ModelSpec = field(default_factory=ModelSpec)
    enqueue: tuple[dict[str, Any], ...] = ()  # [[enqueue]]: parameter sets to try first
    # Without [[enqueue]], the shipped portfolio's configurations run first (tuner.search.portfolio)
    portfolio: bool = True
    # All objectives in order (metric is the first); several make a multi-objective study.
    metrics: tuple[str, ...] = ()
    constraints: dict[str, float] = field(default_factory=dict)  # measure -> upper limit

    @property
    def objectives(self) -> tuple[str, ...]:
        return self.metrics or (self.metric,)

    @property
    def directions(self) -> list[str]:
        return [METRICS[name] for name in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def space_dict(self) -> dict[str, dict[str, Any]]:
        """The search space as plain data (stored as a study attribute)."""
        return {name: param.to_dict() for name, param in self.space.items()}


TOP_LEVEL_KEYS = {
    "name",
    "description",
    "metric",
    "direction",
    "sampler",
    "pruner",
    "dataset",
    "training",
    "augment",
    "space",
    "model",
    "enqueue",
    "portfolio",
    "constraints",
}
