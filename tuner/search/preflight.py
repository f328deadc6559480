"""The pre-flight step: the checks of a parsed study file that need torch or Optuna.

`tuner.spec` parses a study file and checks names and ranges against registries that load
neither; what is left runs here, once, after parsing and before anything is written to
storage, with the same one-line errors (file, key, what is allowed):

- [sampler] and [pruner]: registered names, options against the constructors, then the
  sampler and pruner used for a few throwaway trials of an in-memory study (Optuna checks
  some options only when it first uses them);
- [constraints]: only samplers that take `constraints_func` can have them;
- [model].pretrained: the weights file read, and its tensors matched to each family's shapes.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from tuner.checking import Checker, shown, type_name
from tuner.search.samplers import PRUNERS, SAMPLERS, build_pruner, build_sampler
from tuner.search.space import common_distributions
from tuner.spec.parse import parse_spec, read_spec

if TYPE_CHECKING:
    from tuner.spec.schema import ParamSpec, PrunerSpec, SamplerSpec, StudySpec

MAX_DETAIL = 300  # characters of Optuna's own message kept in ours
CONSTRAINT_SAMPLERS = tuple(
    name
    for name, cls in SAMPLERS.items()
    if "constraints_func" in inspect.signature(cls).parameters
)
# Any shape will do to see which tensors fit: only the stem depends on the input.
_PROBE_SHAPE = (3, 32, 32)


def load_spec(path: Path, data: Mapping[str, Any] | None = None) -> StudySpec:
    """Read, validate and pre-flight a study file, or `data`: a study given as a dict, which
    `path` names in messages (`read_spec`). Raises TunerError naming file and key."""
    spec = read_spec(path, data)
    preflight(spec)
    return spec


def checked_spec(data: dict[str, Any], path: Path) -> StudySpec:
    """`load_spec` for already-read TOML data (a study given as a dict); `path` names it."""
    spec = parse_spec(data, path)
    preflight(spec)
    return spec


def preflight(spec: StudySpec) -> None:
    """Run the checks that need torch or Optuna on a parsed spec; TunerError on the first."""
    check = Checker(spec.path)
    check_registered(check, "[sampler]", "sampler", spec.sampler.name, SAMPLERS)
    check_options(check, spec.sampler.options, "[sampler].options", SAMPLERS[spec.sampler.name])
    check_registered(check, "[pruner]", "pruner", spec.pruner.name, PRUNERS)
    check_options(check, spec.pruner.options, "[pruner].options", PRUNERS[spec.pruner.name])
    if spec.model.pretrained:
        check_weights(check, Path(spec.model.pretrained), _families(spec))
    trial_run(check, spec.sampler, spec.pruner, spec.space)
    if spec.constraints and spec.sampler.name not in CONSTRAINT_SAMPLERS:
        raise check.fail(
            "[sampler].name",
            f"sampler {spec.sampler.name!r} cannot take [constraints]; samplers that can: "
            f"{', '.join(CONSTRAINT_SAMPLERS)}",
        )


def check_registered(check: Checker, table: str, what: str, name: str, registry: dict) -> None:
    if name not in registry:
        raise check.fail(
            f"{table}.name", f"unknown {what} {shown(name)}; allowed: {', '.join(registry)}"
        )


def _families(spec: StudySpec) -> list[str]:
    family = spec.space.get("family")
    if family is None:
        return []
    return [family.value] if family.is_fixed else list(family.choices)


def check_weights(check: Checker, path: Path, families: list[str]) -> None:
    """The weights file must give tensors to every family that takes weights."""
    # torch loads only for studies that name a weights file: listing studies stays fast.
    import torch

    from tuner.config import TrialConfig
    from tuner.engine.pretrained import WeightsError, fitting_tensors, read_weights
    from tuner.families import get_family

    try:
        state = read_weights(path)
        for name in families:
            family = get_family(name)
            if not family.pretrained:
                continue  # its trials train from scratch
            with torch.device("meta"):  # shapes only: no memory, no initialisation time
                model = family.build(TrialConfig(family=name), _PROBE_SHAPE, 10)
            fitting_tensors(model, name, state)
    except WeightsError as exc:
        raise check.fail("[model].pretrained", f"{path}: {exc}") from None


def constructor_options(cls: type) -> dict[str, tuple[type, ...] | None]:
    """Options a study file may give `cls`: parameter name -> the TOML value types it takes.

    The types come from the constructor's annotations (see `toml_types`).
    """
    params = inspect.signature(cls.__init__).parameters
    return {
        name: toml_types(param.annotation)
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


def toml_types(annotation: Any) -> tuple[type, ...] | None:
    """The TOML value types an annotation such as "int | None" accepts.

    Optuna's annotations are often strings naming types imported only for type checkers, so
    they are read as text. () means the parameter takes a Python object; None means unsure
    (the constructor and `trial_run` judge the value).
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


def check_options(check: Checker, options: dict[str, Any], key: str, cls: type) -> None:
    """Options are passed to the Optuna constructor: check their names and value types.

    Their values are checked by `trial_run`, which builds the sampler or pruner and uses it.
    """
    allowed = constructor_options(cls)
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
                f"must be {_describe_types(kinds)}, got {type_name(value)} {shown(value)}",
            )


def trial_run(
    check: Checker, sampler: SamplerSpec, pruner: PrunerSpec, space: dict[str, ParamSpec]
) -> None:
    """Use the sampler and the pruner for a few throwaway trials of an in-memory study.

    Optuna checks some options only when it first uses them: TPESampler(n_ei_candidates=0)
    fails after its startup trials, HyperbandPruner(reduction_factor=1) at its first decision.
    Found here, that is a one-line error now instead of a traceback hours into a study.
    """
    distributions = common_distributions(space)
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
                    lambda: build_sampler(sampler.name, sampler.seed, sampler.options),
                    optuna.pruners.NopPruner,
                    distributions,
                    trials,
                )
            _try(
                check,
                "[pruner].options" if pruner.options else "[pruner].name",
                PRUNERS[pruner.name],
                lambda: optuna.samplers.RandomSampler(seed=0),
                lambda: build_pruner(pruner.name, pruner.options),
                distributions,
                8,
            )
    finally:
        optuna.logging.set_verbosity(verbosity)


def _try(
    check: Checker,
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
        if len(detail) > MAX_DETAIL:  # Optuna may quote a long option value back
            detail = detail[: MAX_DETAIL - 3] + "..."
        raise check.fail(key, f"rejected by {cls.__name__}: {detail}") from None
