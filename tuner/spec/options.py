"""The [sampler] and [pruner] tables: a registered name, and options its constructor accepts.

Names and constructors come from the registry (`tuner.search.samplers`); this module only
checks a study file against them and words the errors. Options are then tried for real on a
throwaway in-memory study (`trial_run`), as Optuna checks some only when it first uses them.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna

from tuner.search.samplers import PRUNERS, SAMPLERS, build_pruner, build_sampler
from tuner.search.space import common_distributions
from tuner.spec.checker import Checker, check_seed, shown, type_name
from tuner.spec.schema import PrunerSpec, SamplerSpec

if TYPE_CHECKING:
    from tuner.spec.schema import ParamSpec

MAX_DETAIL = 300  # characters of Optuna's own message kept in ours


def parse_sampler(check: Checker, data: dict[str, Any]) -> SamplerSpec:
    table = check.table(data, "sampler")
    check.no_unknown(table, {"name", "seed", "options"}, "[sampler].")
    name = check.typed(table.get("name", "tpe"), str, "[sampler].name")
    if name not in SAMPLERS:
        raise check.fail(
            "[sampler].name", f"unknown sampler {shown(name)}; allowed: {', '.join(SAMPLERS)}"
        )
    seed = check.typed(table.get("seed", 0), int, "[sampler].seed")
    check_seed(check, seed, "[sampler].seed")
    options = check_options(check, table, "[sampler].options", SAMPLERS[name])
    return SamplerSpec(name=name, seed=seed, options=options)


def parse_pruner(check: Checker, data: dict[str, Any]) -> PrunerSpec:
    table = check.table(data, "pruner")
    check.no_unknown(table, {"name", "options"}, "[pruner].")
    name = check.typed(table.get("name", "median"), str, "[pruner].name")
    if name not in PRUNERS:
        raise check.fail(
            "[pruner].name", f"unknown pruner {shown(name)}; allowed: {', '.join(PRUNERS)}"
        )
    options = check_options(check, table, "[pruner].options", PRUNERS[name])
    return PrunerSpec(name=name, options=options)


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


def check_options(check: Checker, table: dict[str, Any], key: str, cls: type) -> dict[str, Any]:
    """Options are passed to the Optuna constructor: check their names and value types.

    Their values are checked by `trial_run`, which builds the sampler or pruner and uses it.
    """
    options = table.get("options", {})
    if not isinstance(options, dict):
        raise check.fail(key, f"must be a table, got {type_name(options)}")
    if "seed" in options and key.startswith("[sampler]"):
        raise check.fail(f"{key}.seed", "give the seed as [sampler].seed, not as an option")
    allowed = constructor_options(cls)
    check.no_unknown(options, set(allowed), f"{key}.")
    for option, value in options.items():
        if isinstance(value, int) and not isinstance(value, bool):
            check.toml_int(value, f"{key}.{option}")
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
    return dict(options)


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
