"""The best trial of a study as a file people can keep: TOML or JSON, read back by `retrain`.

Both formats hold the same data: a few facts about the trial (study, trial number, value,
dataset, best epoch) and `config`, the trial's full `TrialConfig`. The TOML version starts with
a comment header and shows which lines can pin values in a study file's `[space]`.

Once `tuner confirm` has retrained the top trials with new seeds, "best" is the confirmed
configuration with the best mean, and `confirmed` holds its spread (mean, std, min, max, seeds).
"""

from __future__ import annotations

import datetime
import json
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import optuna

from tuner import __version__, attrs
from tuner.checking import Checker, is_kind
from tuner.config import AugmentSpec, TrialConfig
from tuner.errors import TunerError
from tuner.files import read_text_file, toml_value
from tuner.search.confirmed import confirmed_ranking
from tuner.spec import MAX_SEED, PARAMETERS
from tuner.spec.model import MODEL_PARAMETERS

FORMATS = ("toml", "json")


@dataclass(frozen=True)
class BestConfig:
    """A trial's configuration and where it came from."""

    dataset: str
    config: TrialConfig
    study: str | None = None
    trial: int | None = None
    value: float | None = None
    metric: str | None = None
    best_epoch: int | None = None  # epoch whose weights the trial kept
    # mean/std/min/max of the metric over `tuner confirm`'s seeds, and "seeds" (their number)
    confirmed: dict[str, float | int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data; keys whose value is None are left out (TOML has no null)."""
        values = {
            "study": self.study,
            "trial": self.trial,
            "metric": self.metric,
            "value": self.value,
            "dataset": self.dataset,
            "best_epoch": self.best_epoch,
            "confirmed": self.confirmed,
            "config": self.config.to_dict(),
        }
        return {key: value for key, value in values.items() if value is not None}


def best_config(study: optuna.Study, trial: int | None = None) -> BestConfig:
    """The study's best configuration, or trial number `trial`; TunerError if it can't be used.

    Where `tuner confirm` ran, the best mean over its seeds wins; else the best complete trial.
    A multi-objective study has no single best trial: its Pareto-optimal trials (all listed by
    `tuner best --pareto`) are ranked by the first objective, and the best of them is taken.
    """
    single = trial is None and len(study.directions) == 1
    ranking = confirmed_ranking(study) if single else []
    if trial is not None:
        best = _numbered_trial(study, trial)
    elif len(study.directions) > 1:
        best = best_by_first_objective(study)
    elif ranking:
        number = ranking[0].trial
        best = next(trial for trial in study.get_trials(deepcopy=False) if trial.number == number)
    else:
        try:
            best = study.best_trial
        except ValueError:
            raise TunerError(f"study {study.study_name!r} has no complete trial yet") from None
    if attrs.CONFIG not in best.user_attrs:
        raise TunerError(
            f"study {study.study_name!r}: trial {best.number} has no {attrs.CONFIG!r} user "
            "attribute (was it run by tuner?)"
        )
    dataset = study.user_attrs.get(attrs.STUDY_DATASET)
    if not dataset:
        raise TunerError(
            f"study {study.study_name!r} does not record its dataset (was it created by tuner?)"
        )
    best_epoch = best.user_attrs.get(attrs.BEST_EPOCH)
    return BestConfig(
        dataset=str(dataset),
        config=TrialConfig.from_dict(best.user_attrs[attrs.CONFIG]),
        study=study.study_name,
        trial=best.number,
        value=best.values[0] if best.values else None,
        metric=study.user_attrs.get(attrs.STUDY_METRIC),
        best_epoch=None if best_epoch is None else int(best_epoch),
        confirmed=ranking[0].stats() if ranking else None,
    )


def best_by_first_objective(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The Pareto-optimal trial with the best first objective (ties: the lower number)."""
    front = study.best_trials
    if not front:
        raise TunerError(f"study {study.study_name!r} has no complete feasible trial yet")
    sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return min(front, key=lambda t: (sign * t.values[0], t.number))


def _numbered_trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise TunerError(
            f"--trial: study {study.study_name!r} has trials 0 to {len(trials) - 1}, not {number}"
        )
    chosen = trials[number]
    if chosen.state != optuna.trial.TrialState.COMPLETE:
        raise TunerError(
            f"--trial: trial {number} of study {study.study_name!r} is "
            f"{chosen.state.name.lower()}, not complete; pick a complete one (tuner best --pareto)"
        )
    return chosen


def to_json(best: BestConfig) -> str:
    """The best configuration as indented JSON."""
    return json.dumps(best.to_dict(), indent=2) + "\n"


def to_toml(best: BestConfig) -> str:
    """The best configuration as TOML: a comment header, the trial's facts, then [config]."""
    values = best.to_dict()
    config = values.pop("config")
    augment = config.pop("augment")
    own = config.pop("model_params", {})  # a build function's own parameters
    confirmed = values.pop("confirmed", None)
    source = f"study {best.study!r}, trial {best.trial}" if best.study else "a config file"
    score = f": {best.metric} = {best.value:.6g}" if best.value is not None else ""
    if confirmed:
        score += (
            f"; mean over {confirmed['seeds']} confirm seeds {confirmed['mean']:.6g} "
            f"(std {confirmed['std']:.2g}, min {confirmed['min']:.6g}, max {confirmed['max']:.6g})"
        )
    lines = [
        f"# Best configuration of {source}{score}",
        f"# Written by tuner {__version__} on {datetime.date.today().isoformat()}.",
        "# Retrain it on the full training split with:  tuner retrain --config THIS_FILE",
        "",
        *(f"{key} = {toml_value(value)}" for key, value in values.items()),
        "",
        *(
            ["[confirmed]", *(f"{key} = {toml_value(v)}" for key, v in confirmed.items()), ""]
            if confirmed
            else []
        ),
        "[config]",
        *(f"{key} = {toml_value(value)}" for key, value in config.items()),
        "",
        *(
            ["[config.model_params]", *(f"{key} = {toml_value(v)}" for key, v in own.items()), ""]
            if own
            else []
        ),
        "[config.augment]",
        *(f"{key} = {toml_value(value)}" for key, value in augment.items()),
        "",
        *_space_hint(best.config),
    ]
    return "\n".join(lines) + "\n"


def _space_hint(config: TrialConfig) -> list[str]:
    """Commented lines that pin these values in a study file's [space]."""
    lines = ["# To pin some of these values in a study file, copy lines into its [space]:"]
    for name in PARAMETERS:
        if name == "num_blocks":
            lines.append(f"#   num_blocks = {config.num_blocks}")
        elif name == "filters":
            # A study file samples one `filters` value per block; a fixed value is used by all.
            note = (
                ""
                if len(set(config.filters)) == 1
                else f"  # for every block; this trial: {list(config.filters)}"
            )
            lines.append(f"#   filters = {max(config.filters)}{note}")
        else:
            lines.append(f"#   {name} = {toml_value(getattr(config, name))}")
    lines += [f"#   {name} = {toml_value(value)}" for name, value in config.model_params]
    return lines


def render(best: BestConfig, fmt: str) -> str:
    """The best configuration in `fmt` ("toml" or "json")."""
    if fmt == "toml":
        return to_toml(best)
    if fmt == "json":
        return to_json(best)
    raise TunerError(f"--format: unknown format {fmt!r}; use {' or '.join(FORMATS)}")


def read_best(path: Path) -> BestConfig:
    """Read a file written by `tuner best` (TOML or JSON, by suffix). Raises TunerError."""
    path = Path(path)
    text = read_text_file(path, "config file")
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise TunerError(f"{path}: {kind} syntax error: {exc}") from None
    if not isinstance(data, dict):
        raise TunerError(f"{path}: expected an object with 'dataset' and 'config'")
    return _parse(data, path)


def _parse(data: dict[str, Any], path: Path) -> BestConfig:
    check = Checker(path)
    known = {f.name for f in fields(BestConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise check.fail(unknown[0], f"unknown key; allowed: {', '.join(sorted(known))}")
    for key in ("dataset", "config"):
        if key not in data:
            raise check.fail(key, "missing (see `tuner best` for the format)")
    if not isinstance(data["dataset"], str):
        raise check.fail("dataset", "must be a string")
    config = parse_config(data["config"], path, "config")
    checked = {
        "study": (str, data.get("study")),
        "trial": (int, data.get("trial")),
        "value": (float, data.get("value")),
        "metric": (str, data.get("metric")),
        "best_epoch": (int, data.get("best_epoch")),
    }
    for key, (kind, value) in checked.items():
        if value is not None and not is_kind(value, kind):
            raise check.fail(key, f"must be {kind.__name__}, got {value!r}")
    confirmed = data.get("confirmed")
    if confirmed is not None and not (
        isinstance(confirmed, dict) and all(is_kind(v, float) for v in confirmed.values())
    ):
        raise check.fail("confirmed", "must be a table of numbers (mean, std, ...)")
    return BestConfig(
        dataset=data["dataset"],
        config=config,
        confirmed=confirmed,
        study=data.get("study"),
        trial=data.get("trial"),
        value=None if data.get("value") is None else float(data["value"]),
        metric=data.get("metric"),
        best_epoch=data.get("best_epoch"),
    )


# What a config value may be beyond the [space] parameters' domains (spec.PARAMETERS).
_TRAINING_DOMAINS: dict[str, tuple[Callable[[int], bool], str]] = {
    "max_epochs": (lambda v: v >= 1, "an int >= 1"),
    "patience": (lambda v: v >= 0, "an int >= 0 (0 = no early stopping)"),
    "seed": (lambda v: 0 <= v <= MAX_SEED, f"an int from 0 to {MAX_SEED}"),
}


def parse_config(values: Any, path: Path, where: str) -> TrialConfig:
    """A `TrialConfig` from its `to_dict()` form read from a file, every value checked.

    Keys and types follow TrialConfig and AugmentSpec; values must lie in the domains a study
    file's [space] allows (spec.PARAMETERS), so a hand-edited file cannot ask for a
    10001-pixel kernel. Raises TunerError naming `path` and the key (`where.name`).
    """
    check = Checker(path)
    if not isinstance(values, dict):
        raise check.fail(where, "must be a table")
    check.fields_of(values, TrialConfig, where)
    augment = values.get("augment", {})
    if not isinstance(augment, dict):
        raise check.fail(f"{where}.augment", "must be a table")
    check.fields_of(augment, AugmentSpec, f"{where}.augment")
    filters = values.get("filters")
    blocks = PARAMETERS["num_blocks"]
    if not (isinstance(filters, list) and filters and blocks.check(len(filters))):
        raise check.fail(
            f"{where}.filters",
            "must be a list of ints, one per conv block "
            f"(the number of blocks is {blocks.allowed})",
        )
    for index, value in enumerate(filters):
        _check_domain(check, value, "filters", f"{where}.filters[{index}]")
    for name in PARAMETERS.keys() - {"num_blocks", "filters"}:
        if name in values:
            _check_domain(check, values[name], name, f"{where}.{name}")
    for name, domain in MODEL_PARAMETERS.items():  # family, freeze, backbone_learning_rate
        value = values.get(name, domain.default)
        if not (is_kind(value, domain.kind) and domain.check(value)):
            raise check.fail(f"{where}.{name}", f"must be {domain.allowed}, got {value!r}")
    for name, (valid, allowed) in _TRAINING_DOMAINS.items():
        if name in values and not valid(values[name]):
            raise check.fail(f"{where}.{name}", f"must be {allowed}, got {values[name]!r}")
    for name, value in augment.items():
        if is_kind(value, float) and not (math.isfinite(value) and value >= 0):
            raise check.fail(f"{where}.augment.{name}", f"must be >= 0, got {value!r}")
    own = values.get("model_params", {})
    if not isinstance(own, dict) or not all(
        isinstance(v, bool | int | float | str) for v in own.values()
    ):
        raise check.fail(f"{where}.model_params", "must be a table of numbers, strings or booleans")
    digest = values.get("family_sha256", "")
    if digest and re.fullmatch(r"[0-9a-f]{64}", digest) is None:
        raise check.fail(f"{where}.family_sha256", f"must be 64 hex digits, got {digest!r}")
    return TrialConfig.from_dict(values)


def _check_domain(check: Checker, value: Any, name: str, key: str) -> None:
    domain = PARAMETERS[name]
    finite = not isinstance(value, float) or math.isfinite(value)
    if not (is_kind(value, domain.kind) and finite and domain.check(value)):
        raise check.fail(key, f"must be {domain.allowed}, got {value!r}")
