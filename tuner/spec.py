"""Study files (TOML) -> a validated `StudySpec`.

Every problem is reported as a `TunerError` whose one line names the file, the key and what is
allowed, so a typo never reaches storage. Validation happens once, here; later modules trust
the spec.
"""

from __future__ import annotations

import inspect
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import optuna

from tuner.config import AugmentSpec
from tuner.errors import TunerError

SAMPLERS: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "qmc": optuna.samplers.QMCSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "grid": optuna.samplers.GridSampler,
}

PRUNERS: dict[str, type[optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "successive-halving": optuna.pruners.SuccessiveHalvingPruner,
    "none": optuna.pruners.NopPruner,
}

BUILTIN_DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100")
IMAGEFOLDER_PREFIX = "imagefolder:"

METRICS = {"val_accuracy": "maximize", "val_loss": "minimize"}


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
    "kernel_size": ParamDomain(int, 3, lambda v: v >= 1 and v % 2 == 1, "an odd int >= 1"),
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


@dataclass(frozen=True)
class PrunerSpec:
    name: str = "median"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    name: str = "digits"
    val_fraction: float = 0.2
    split_seed: int = 0
    train_subset: int = 0  # use at most this many training images (0 = all), for quick studies

    @property
    def imagefolder_path(self) -> Path | None:
        if self.name.startswith(IMAGEFOLDER_PREFIX):
            return Path(self.name[len(IMAGEFOLDER_PREFIX) :])
        return None


@dataclass(frozen=True)
class TrainingSpec:
    max_epochs: int = 10
    patience: int = 3
    trials: int = 20  # default `--trials` for this study
    seed: int = 0  # trial k trains with seed + k


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
}


class _Checker:
    """Builds error messages that name the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, message: str) -> TunerError:
        return TunerError(f"{self.path}: {key}: {message}")

    def table(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table ([{key}]), got {_type_name(value)}")
        return value

    def no_unknown(self, table: dict[str, Any], allowed: set[str] | list[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(
                    f"{where}{key}", f"unknown key; allowed: {', '.join(sorted(allowed))}"
                )

    def typed(self, value: Any, kind: type, key: str) -> Any:
        """Check a scalar's type; ints are accepted where floats are expected."""
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            raise self.fail(key, f"must be {_kind_name(kind)}, got {_type_name(value)} {value!r}")
        if kind is float and not math.isfinite(value):
            raise self.fail(key, f"must be a finite number, got {value!r}")
        return value

    def dataclass_section(self, data: dict[str, Any], key: str, cls: type) -> Any:
        """Parse a flat table into a dataclass, checking keys and value types."""
        table = self.table(data, key)
        names = {f.name: f for f in fields(cls)}
        self.no_unknown(table, set(names), f"[{key}].")
        values = {}
        for name, value in table.items():
            default = getattr(cls(), name)
            kind = type(default) if default is not None else int
            values[name] = self.typed(value, kind, f"[{key}].{name}")
        return cls(**values)


def _type_name(value: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _kind_name(kind: type) -> str:
    return {float: "a number", int: "an integer", str: "a string", bool: "true or false"}[kind]


def load_spec(path: Path) -> StudySpec:
    """Read and validate a study file. Raises TunerError naming the file and the key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TunerError(f"{path}: no such study file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TunerError(f"{path}: cannot read study file: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        hint = " (a key is given twice)" if "overwrite" in str(exc).lower() else ""
        raise TunerError(f"{path}: TOML syntax error: {exc}{hint}") from None
    return parse_spec(data, path)


def parse_spec(data: dict[str, Any], path: Path) -> StudySpec:
    """Validate already-parsed TOML data; `path` is used for messages and the default name."""
    check = _Checker(path)
    check.no_unknown(data, TOP_LEVEL_KEYS, "")

    name = check.typed(data.get("name", path.stem), str, "name")
    if not name.strip():
        raise check.fail("name", "must not be empty")
    description = check.typed(data.get("description", ""), str, "description")

    metric = check.typed(data.get("metric", "val_accuracy"), str, "metric")
    if metric not in METRICS:
        raise check.fail("metric", f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
    direction = check.typed(data.get("direction", METRICS[metric]), str, "direction")
    if direction != METRICS[metric]:
        raise check.fail("direction", f"{metric} is optimised with direction = {METRICS[metric]!r}")

    sampler = _parse_sampler(check, data)
    pruner = _parse_pruner(check, data)
    dataset = check.dataclass_section(data, "dataset", DatasetSpec)
    _validate_dataset(check, dataset)
    training = check.dataclass_section(data, "training", TrainingSpec)
    _validate_training(check, training)
    augment = check.dataclass_section(data, "augment", AugmentSpec)
    _validate_augment(check, augment)
    space = _parse_space(check, check.table(data, "space"))
    if sampler.name == "grid":
        _validate_grid(check, space)

    return StudySpec(
        name=name,
        path=path,
        description=description,
        metric=metric,
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        dataset=dataset,
        training=training,
        augment=augment,
        space=space,
    )


def _constructor_options(cls: type) -> set[str]:
    params = inspect.signature(cls.__init__).parameters
    return {p for p in params if p not in ("self", "seed", "search_space", "args", "kwargs")}


def _parse_sampler(check: _Checker, data: dict[str, Any]) -> SamplerSpec:
    table = check.table(data, "sampler")
    check.no_unknown(table, {"name", "seed", "options"}, "[sampler].")
    name = check.typed(table.get("name", "tpe"), str, "[sampler].name")
    if name not in SAMPLERS:
        raise check.fail(
            "[sampler].name", f"unknown sampler {name!r}; allowed: {', '.join(SAMPLERS)}"
        )
    seed = table.get("seed", 0)
    if seed is not None:
        seed = check.typed(seed, int, "[sampler].seed")
    options = _check_options(check, table, "[sampler].options", SAMPLERS[name])
    return SamplerSpec(name=name, seed=seed, options=options)


def _parse_pruner(check: _Checker, data: dict[str, Any]) -> PrunerSpec:
    table = check.table(data, "pruner")
    check.no_unknown(table, {"name", "options"}, "[pruner].")
    name = check.typed(table.get("name", "median"), str, "[pruner].name")
    if name not in PRUNERS:
        raise check.fail("[pruner].name", f"unknown pruner {name!r}; allowed: {', '.join(PRUNERS)}")
    options = _check_options(check, table, "[pruner].options", PRUNERS[name])
    return PrunerSpec(name=name, options=options)


def _check_options(check: _Checker, table: dict[str, Any], key: str, cls: type) -> dict[str, Any]:
    """Options are passed to the Optuna constructor; check names now and values by trying."""
    options = table.get("options", {})
    if not isinstance(options, dict):
        raise check.fail(key, f"must be a table, got {_type_name(options)}")
    allowed = _constructor_options(cls)
    check.no_unknown(options, allowed, f"{key}.")
    if cls is not optuna.samplers.GridSampler:
        try:
            cls(**options)
        except (TypeError, ValueError) as exc:
            raise check.fail(key, f"rejected by {cls.__name__}: {exc}") from None
    return dict(options)


def _validate_dataset(check: _Checker, dataset: DatasetSpec) -> None:
    if dataset.name not in BUILTIN_DATASETS and not dataset.name.startswith(IMAGEFOLDER_PREFIX):
        raise check.fail(
            "[dataset].name",
            f"unknown dataset {dataset.name!r}; allowed: {', '.join(BUILTIN_DATASETS)}, "
            f"or {IMAGEFOLDER_PREFIX}PATH",
        )
    if dataset.imagefolder_path is not None and not str(dataset.imagefolder_path):
        raise check.fail("[dataset].name", "imagefolder: needs a path, e.g. imagefolder:./photos")
    if not 0 < dataset.val_fraction < 1:
        raise check.fail("[dataset].val_fraction", f"must be in (0, 1), got {dataset.val_fraction}")
    if dataset.train_subset < 0:
        raise check.fail("[dataset].train_subset", "must be >= 0 (0 = all images)")


def _validate_training(check: _Checker, training: TrainingSpec) -> None:
    if training.max_epochs < 1:
        raise check.fail("[training].max_epochs", f"must be >= 1, got {training.max_epochs}")
    if training.patience < 0:
        raise check.fail("[training].patience", "must be >= 0 (0 disables early stopping)")
    if training.trials < 1:
        raise check.fail("[training].trials", f"must be >= 1, got {training.trials}")


def _validate_augment(check: _Checker, augment: AugmentSpec) -> None:
    ranges = {
        "random_crop_padding": (0, 64),
        "rotation_degrees": (0, 180),
        "translate": (0, 0.5),
        "color_jitter": (0, 1),
        "cutout": (0, 1024),
        "mixup_alpha": (0, 100),
        "cutmix_alpha": (0, 100),
    }
    for key, (low, high) in ranges.items():
        value = getattr(augment, key)
        if not low <= value <= high:
            raise check.fail(f"[augment].{key}", f"must be in [{low}, {high}], got {value}")


def _parse_space(check: _Checker, table: dict[str, Any]) -> dict[str, ParamSpec]:
    check.no_unknown(table, set(PARAMETERS), "[space].")
    space: dict[str, ParamSpec] = {}
    for name, domain in PARAMETERS.items():
        key = f"[space].{name}"
        declaration = table.get(name, domain.default)
        if isinstance(declaration, dict):
            space[name] = _parse_param(check, name, domain, declaration, key)
        else:
            value = check.typed(declaration, domain.kind, key)
            if not domain.check(value):
                raise check.fail(key, f"must be {domain.allowed}, got {value!r}")
            space[name] = ParamSpec(name=name, type="fixed", value=value)
    if all(param.is_fixed for param in space.values()):
        raise check.fail(
            "[space]",
            "nothing to tune: declare at least one parameter as a range or choices, e.g. "
            'learning_rate = { type = "float", low = 1e-4, high = 1e-1, log = true }',
        )
    return space


def _parse_param(
    check: _Checker, name: str, domain: ParamDomain, decl: dict[str, Any], key: str
) -> ParamSpec:
    kind = decl.get("type")
    numeric = {"float": float, "int": int}
    # A parameter's range type follows its domain; str/bool parameters can only be choices.
    allowed_types = [*{float: ["float"], int: ["int"]}.get(domain.kind, []), "categorical"]
    if kind not in allowed_types:
        raise check.fail(
            f"{key}.type", f"must be one of {', '.join(map(repr, allowed_types))}, got {kind!r}"
        )
    if kind == "categorical":
        check.no_unknown(decl, {"type", "choices"}, f"{key}.")
        choices = decl.get("choices")
        if not isinstance(choices, list) or not choices:
            raise check.fail(f"{key}.choices", "must be a non-empty array")
        checked = []
        for index, choice in enumerate(choices):
            value = check.typed(choice, domain.kind, f"{key}.choices[{index}]")
            if not domain.check(value):
                raise check.fail(
                    f"{key}.choices[{index}]", f"must be {domain.allowed}, got {value!r}"
                )
            checked.append(value)
        if len(set(checked)) != len(checked):
            raise check.fail(f"{key}.choices", f"has duplicate values: {checked}")
        return ParamSpec(name=name, type="categorical", choices=tuple(checked))

    check.no_unknown(decl, {"type", "low", "high", "log", "step"}, f"{key}.")
    value_kind = numeric[kind]
    for bound in ("low", "high"):
        if bound not in decl:
            raise check.fail(f"{key}.{bound}", "is required for a range")
    low = check.typed(decl["low"], value_kind, f"{key}.low")
    high = check.typed(decl["high"], value_kind, f"{key}.high")
    log = check.typed(decl.get("log", False), bool, f"{key}.log")
    step = decl.get("step")
    if step is not None:
        step = check.typed(step, value_kind, f"{key}.step")
        if step <= 0:
            raise check.fail(f"{key}.step", f"must be > 0, got {step}")
        if log:
            raise check.fail(f"{key}.step", "cannot be combined with log = true")
    if low > high:
        raise check.fail(f"{key}.low", f"low ({low}) must be <= high ({high})")
    if log and low <= 0:
        raise check.fail(f"{key}.low", f"must be > 0 when log = true, got {low}")
    for bound, value in (("low", low), ("high", high)):
        if not domain.check(value):
            raise check.fail(f"{key}.{bound}", f"must be {domain.allowed}, got {value!r}")
    if name == "kernel_size":
        raise check.fail(
            f"{key}.type", "kernel_size must be categorical (odd sizes), e.g. choices = [3, 5]"
        )
    return ParamSpec(name=name, type=kind, low=low, high=high, log=log, step=step)


def _validate_grid(check: _Checker, space: dict[str, ParamSpec]) -> None:
    for param in space.values():
        if param.type == "float" and param.step is None:
            raise check.fail(
                f"[space].{param.name}",
                "the grid sampler needs finite values: use choices or a float range with step",
            )
        if param.type == "int" and param.log:
            raise check.fail(f"[space].{param.name}", "the grid sampler cannot use log ranges")


def find_study_file(name_or_path: str, studies_dir: Path) -> Path:
    """Resolve `--study`: a path to a .toml file, or a name in `studies_dir`.

    Raises TunerError listing the available studies when nothing matches.
    """
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        if candidate.is_file():
            return candidate
        raise TunerError(f"{candidate}: no such study file")
    named = studies_dir / f"{name_or_path}.toml"
    if named.is_file():
        return named
    available = ", ".join(p.stem for p in list_study_files(studies_dir)) or "(none)"
    raise TunerError(
        f"unknown study {name_or_path!r}: no {named}; available in {studies_dir}: {available}"
    )


def list_study_files(studies_dir: Path) -> list[Path]:
    """Study files in `studies_dir`, sorted by name."""
    if not studies_dir.is_dir():
        return []
    return sorted(studies_dir.glob("*.toml"))
