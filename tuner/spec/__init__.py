"""Study files (TOML) -> a validated `StudySpec`.

Every problem is reported as a `TunerError` whose one line names the file, the key and what is
allowed, so a typo never reaches storage. Validation happens once, here; later modules trust
the spec.
"""

from __future__ import annotations

import inspect
import math
import re
import tomllib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from decimal import Decimal
from pathlib import Path
from typing import Any

import optuna

from tuner.config import AugmentSpec
from tuner.data.registry import dataset_name_problem
from tuner.errors import TunerError
from tuner.files import read_text_file

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
                    f"{where}{key}",
                    f"unknown key; allowed: {', '.join(sorted(allowed)) or '(none)'}",
                )

    def typed(self, value: Any, kind: type, key: str) -> Any:
        """Check a scalar's type; ints are accepted where floats are expected."""
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:
                raise self.fail(key, f"must be a finite number, got {value}") from None
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
    text = read_text_file(path, "study file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TunerError(f"{path}: TOML syntax error: {_toml_error(exc, text)}") from None
    return parse_spec(data, path)


def _toml_error(exc: tomllib.TOMLDecodeError, text: str) -> str:
    """tomllib's message, always with a line number, and saying which key is given twice."""
    message = str(exc)
    lines = text.splitlines()
    message = message.replace("(at end of document)", f"(at line {len(lines)}, end of file)")
    if message.startswith("Cannot overwrite a value"):
        # tomllib doesn't say which key; it is the one assigned on the reported line.
        found = re.search(r"\(at line (\d+)", message)
        line = lines[int(found.group(1)) - 1] if found and lines else ""
        assigned = re.match(r"\s*([\w.\-\"' ]+?)\s*=", line)
        message += f" (a key is given twice{': ' + assigned.group(1) if assigned else ''})"
    elif message.startswith(("Cannot declare", "Duplicate")):
        message += " (a table or key is given twice)"
    return message


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
    _trial_run(check, sampler, pruner, space)

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


MAX_SEED = 2**31 - 1  # numpy's RandomState takes < 2**32; leave room for per-worker offsets


def _check_seed(check: _Checker, value: int, key: str) -> None:
    if not 0 <= value <= MAX_SEED:
        raise check.fail(key, f"must be an int from 0 to {MAX_SEED}, got {value}")


def _constructor_options(cls: type) -> dict[str, tuple[type, ...] | None]:
    """Options a study file may give `cls`: parameter name -> the TOML value types it takes.

    The types come from the constructor's annotations (see `_toml_types`).
    """
    params = inspect.signature(cls.__init__).parameters
    return {
        name: _toml_types(param.annotation)
        for name, param in params.items()
        if name not in ("self", "seed", "search_space", "args", "kwargs")
    }


_TOML_TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),  # TOML `1` is a fine float
    "str": (str,),
    "dict": (dict,),
}
_PYTHON_OBJECTS = ("Callable", "Sampler", "Pruner", "FrozenTrial")  # no TOML value is one


def _toml_types(annotation: Any) -> tuple[type, ...] | None:
    """The TOML value types an annotation such as "int | None" accepts.

    Optuna's annotations are often strings naming types imported only for type checkers, so
    they are read as text. () means the parameter takes a Python object; None means unsure
    (the constructor and `_trial_run` judge the value).
    """
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    if any(name in text for name in _PYTHON_OBJECTS):
        return ()
    kinds: list[type] = []
    for part in text.split("|"):
        base = part.strip().split("[")[0]
        if base in ("None", "NoneType"):
            continue
        if base not in _TOML_TYPES:
            return None
        kinds += _TOML_TYPES[base]
    return tuple(dict.fromkeys(kinds)) or None


def _describe_types(kinds: tuple[type, ...]) -> str:
    names = {bool: "true or false", float: "a number", str: "a string", dict: "a table"}
    if float not in kinds:
        names[int] = "an integer"
    return " or ".join(names[kind] for kind in kinds if kind in names)


def _parse_sampler(check: _Checker, data: dict[str, Any]) -> SamplerSpec:
    table = check.table(data, "sampler")
    check.no_unknown(table, {"name", "seed", "options"}, "[sampler].")
    name = check.typed(table.get("name", "tpe"), str, "[sampler].name")
    if name not in SAMPLERS:
        raise check.fail(
            "[sampler].name", f"unknown sampler {name!r}; allowed: {', '.join(SAMPLERS)}"
        )
    seed = check.typed(table.get("seed", 0), int, "[sampler].seed")
    _check_seed(check, seed, "[sampler].seed")
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
    """Options are passed to the Optuna constructor: check their names and value types.

    Their values are checked by `_trial_run`, which builds the sampler or pruner and uses it.
    """
    options = table.get("options", {})
    if not isinstance(options, dict):
        raise check.fail(key, f"must be a table, got {_type_name(options)}")
    if "seed" in options and key.startswith("[sampler]"):
        raise check.fail(f"{key}.seed", "give the seed as [sampler].seed, not as an option")
    allowed = _constructor_options(cls)
    check.no_unknown(options, set(allowed), f"{key}.")
    for option, value in options.items():
        kinds = allowed[option]
        if kinds is None:
            continue
        if not kinds:
            raise check.fail(
                f"{key}.{option}",
                f"cannot be set in a study file ({cls.__name__} expects a Python object here)",
            )
        if not (bool in kinds if isinstance(value, bool) else isinstance(value, kinds)):
            raise check.fail(
                f"{key}.{option}",
                f"must be {_describe_types(kinds)}, got {_type_name(value)} {value!r}",
            )
    return dict(options)


def _distribution(param: ParamSpec) -> optuna.distributions.BaseDistribution:
    if param.type == "categorical":
        return optuna.distributions.CategoricalDistribution(param.choices)
    if param.type == "int":
        return optuna.distributions.IntDistribution(
            param.low, param.high, log=param.log, step=param.step or 1
        )
    return optuna.distributions.FloatDistribution(
        param.low, param.high, log=param.log, step=param.step
    )


def _trial_run(
    check: _Checker, sampler: SamplerSpec, pruner: PrunerSpec, space: dict[str, ParamSpec]
) -> None:
    """Use the sampler and the pruner for a few throwaway trials of an in-memory study.

    Optuna checks some options only when it first uses them: TPESampler(n_ei_candidates=0)
    fails after its startup trials, HyperbandPruner(reduction_factor=1) at its first decision.
    Found here, that is a one-line error now instead of a traceback hours into a study.
    """
    distributions = {
        name: _distribution(param)
        for name, param in space.items()
        if not param.is_fixed and name != "filters"
    }
    if not space["filters"].is_fixed:
        # As space.suggest names them; filters_k for k > the fewest blocks is conditional,
        # so samplers that model the common search space (CMA-ES's x0) never see it.
        blocks = space["num_blocks"]
        fewest = blocks.value if blocks.is_fixed else min(blocks.choices or (blocks.low,))
        for block in range(1, fewest + 1):
            distributions[f"filters_{block}"] = _distribution(space["filters"])
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # no "Trial 0 finished" lines
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental/deprecated: shown when really built
            if sampler.name != "grid":
                startup = sampler.options.get("n_startup_trials", 10)
                trials = min(startup if isinstance(startup, int) else 10, 20) + 2
                if sampler.name == "gp":
                    trials = 2  # fitting a GP takes seconds; its options fail when built
                _try(
                    check,
                    "[sampler].options" if sampler.options else "[sampler].name",
                    SAMPLERS[sampler.name],
                    lambda: SAMPLERS[sampler.name](seed=sampler.seed, **sampler.options),
                    optuna.pruners.NopPruner,
                    distributions,
                    trials,
                )
            _try(
                check,
                "[pruner].options" if pruner.options else "[pruner].name",
                PRUNERS[pruner.name],
                lambda: optuna.samplers.RandomSampler(seed=0),
                lambda: PRUNERS[pruner.name](**pruner.options),
                distributions,
                8,
            )
    finally:
        optuna.logging.set_verbosity(verbosity)


def _try(
    check: _Checker,
    key: str,
    cls: type,
    make_sampler: Callable[[], optuna.samplers.BaseSampler],
    make_pruner: Callable[[], optuna.pruners.BasePruner],
    distributions: dict[str, optuna.distributions.BaseDistribution],
    trials: int,
) -> None:
    try:
        study = optuna.create_study(sampler=make_sampler(), pruner=make_pruner())
        for number in range(trials):
            trial = study.ask(distributions)
            for step in range(1, 6):
                trial.report(float(number % 3 + step), step)
                trial.should_prune()
            study.tell(trial, float(number % 3))
    except Exception as exc:  # whatever Optuna raises, the cause is an option's value
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise check.fail(key, f"rejected by {cls.__name__}: {detail}") from None


def _validate_dataset(check: _Checker, dataset: DatasetSpec) -> None:
    problem = dataset_name_problem(dataset.name)
    if problem is not None:
        raise check.fail("[dataset].name", problem)
    if not 0 < dataset.val_fraction < 1:
        raise check.fail("[dataset].val_fraction", f"must be in (0, 1), got {dataset.val_fraction}")
    if dataset.train_subset < 0:
        raise check.fail("[dataset].train_subset", "must be >= 0 (0 = all images)")
    _check_seed(check, dataset.split_seed, "[dataset].split_seed")


def _validate_training(check: _Checker, training: TrainingSpec) -> None:
    if training.max_epochs < 1:
        raise check.fail("[training].max_epochs", f"must be >= 1, got {training.max_epochs}")
    if training.patience < 0:
        raise check.fail("[training].patience", "must be >= 0 (0 disables early stopping)")
    if training.trials < 1:
        raise check.fail("[training].trials", f"must be >= 1, got {training.trials}")
    _check_seed(check, training.seed, "[training].seed")


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
    if step is not None and _last_step(low, high, step) != high:
        # Optuna would quietly lower `high` to the last step; say so instead.
        raise check.fail(
            f"{key}.step",
            f"high - low must be a multiple of step ({step}); "
            f"use e.g. high = {_last_step(low, high, step)}",
        )
    return ParamSpec(name=name, type=kind, low=low, high=high, log=log, step=step)


def _last_step(low: float, high: float, step: float) -> float:
    """The largest low + k * step <= high, in decimal arithmetic as Optuna computes it."""
    d_low, d_high, d_step = (Decimal(str(value)) for value in (low, high, step))
    return type(high)((d_high - d_low) // d_step * d_step + d_low)


MAX_GRID_POINTS = 100_000  # GridSampler lists every combination up front


def _validate_grid(check: _Checker, space: dict[str, ParamSpec]) -> None:
    points = 1
    for param in space.values():
        if param.type == "float" and param.step is None:
            raise check.fail(
                f"[space].{param.name}",
                "the grid sampler needs finite values: use choices or a float range with step",
            )
        if param.type == "int" and param.log:
            raise check.fail(f"[space].{param.name}", "the grid sampler cannot use log ranges")
        if param.name not in ("num_blocks", "filters"):
            points *= _grid_size(param)
    # As space.grid_search_space builds it: each distinct conv stack once, so a depth of
    # b blocks adds (filter values)**b points, whatever the other depths would use.
    blocks = space["num_blocks"]
    depths = (
        [blocks.value]
        if blocks.is_fixed
        else blocks.choices or range(blocks.low, blocks.high + 1, blocks.step or 1)
    )
    points *= sum(_grid_size(space["filters"]) ** depth for depth in depths)
    if points > MAX_GRID_POINTS:
        raise check.fail(
            "[space]",
            f"the grid has {points} points, more than the grid sampler's limit of "
            f"{MAX_GRID_POINTS}: use fewer choices or larger steps",
        )


def _grid_size(param: ParamSpec) -> int:
    if param.is_fixed:
        return 1
    if param.type == "categorical":
        return len(param.choices)
    step = Decimal(str(param.step or 1))
    return int((Decimal(str(param.high)) - Decimal(str(param.low))) / step) + 1


def find_study_file(name_or_path: str, studies_dir: Path) -> Path:
    """Resolve `--study`: a path to a .toml file, or a name in `studies_dir`.

    A name wins over a file or folder of that name in the working directory (`--study mnist`
    next to an `mnist/` data folder). Raises TunerError listing the available studies when
    nothing matches.
    """
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml":
        # `--study mnist.toml` also finds studies/mnist.toml
        named = studies_dir / candidate.name if candidate.parent == Path() else candidate
        candidates = [candidate, named]
    else:
        named = studies_dir / f"{name_or_path}.toml"
        candidates = [named, candidate]
    for path in candidates:
        if path.is_file():
            return path
    available = ", ".join(p.stem for p in list_study_files(studies_dir)) or "(none)"
    if candidate.suffix == ".toml":
        raise TunerError(f"{candidate}: no such study file; studies in {studies_dir}: {available}")
    if candidate.is_dir():
        raise TunerError(f"{candidate}: is a directory, not a study file or a study name")
    raise TunerError(
        f"unknown study {name_or_path!r}: no {named}; available in {studies_dir}: {available}"
    )


def list_study_files(studies_dir: Path) -> list[Path]:
    """Study files in `studies_dir`, sorted by name."""
    if not studies_dir.is_dir():
        return []
    return sorted(studies_dir.glob("*.toml"))
