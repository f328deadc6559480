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
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import optuna

from tuner import __version__, attrs
from tuner.config import AugmentSpec, TrialConfig
from tuner.errors import TunerError
from tuner.files import read_text_file
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


def best_config(study: optuna.Study) -> BestConfig:
    """The study's best configuration: the best mean over confirm seeds where `tuner confirm`
    ran, else the best complete trial. Raises TunerError if there is none or it lacks a config.
    """
    ranking = confirmed_ranking(study)
    if ranking:
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
        value=best.value,
        metric=study.user_attrs.get(attrs.STUDY_METRIC),
        best_epoch=None if best_epoch is None else int(best_epoch),
        confirmed=ranking[0].stats() if ranking else None,
    )


def to_json(best: BestConfig) -> str:
    """The best configuration as indented JSON."""
    return json.dumps(best.to_dict(), indent=2) + "\n"


def to_toml(best: BestConfig) -> str:
    """The best configuration as TOML: a comment header, the trial's facts, then [config]."""
    values = best.to_dict()
    config = values.pop("config")
    augment = config.pop("augment")
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
        *(f"{key} = {_toml_value(value)}" for key, value in values.items()),
        "",
        *(
            ["[confirmed]", *(f"{key} = {_toml_value(v)}" for key, v in confirmed.items()), ""]
            if confirmed
            else []
        ),
        "[config]",
        *(f"{key} = {_toml_value(value)}" for key, value in config.items()),
        "",
        "[config.augment]",
        *(f"{key} = {_toml_value(value)}" for key, value in augment.items()),
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
            lines.append(f"#   {name} = {_toml_value(getattr(config, name))}")
    return lines


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest text that reads back as the same float
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a TOML value")


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
    known = {f.name for f in fields(BestConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TunerError(f"{path}: {unknown[0]}: unknown key; allowed: {', '.join(sorted(known))}")
    for key in ("dataset", "config"):
        if key not in data:
            raise TunerError(f"{path}: {key}: missing (see `tuner best` for the format)")
    if not isinstance(data["dataset"], str):
        raise TunerError(f"{path}: dataset: must be a string")
    config = parse_config(data["config"], path, "config")
    checked = {
        "study": (str, data.get("study")),
        "trial": (int, data.get("trial")),
        "value": (float, data.get("value")),
        "metric": (str, data.get("metric")),
        "best_epoch": (int, data.get("best_epoch")),
    }
    for key, (kind, value) in checked.items():
        if value is not None and not _is_kind(value, kind):
            raise TunerError(f"{path}: {key}: must be {kind.__name__}, got {value!r}")
    confirmed = data.get("confirmed")
    if confirmed is not None and not (
        isinstance(confirmed, dict) and all(_is_kind(v, float) for v in confirmed.values())
    ):
        raise TunerError(f"{path}: confirmed: must be a table of numbers (mean, std, ...)")
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
    if not isinstance(values, dict):
        raise TunerError(f"{path}: {where}: must be a table")
    _check_fields(values, TrialConfig, path, where)
    augment = values.get("augment", {})
    if not isinstance(augment, dict):
        raise TunerError(f"{path}: {where}.augment: must be a table")
    _check_fields(augment, AugmentSpec, path, f"{where}.augment")
    filters = values.get("filters")
    blocks = PARAMETERS["num_blocks"]
    if not (isinstance(filters, list) and filters and blocks.check(len(filters))):
        raise TunerError(
            f"{path}: {where}.filters: must be a list of ints, one per conv block "
            f"(the number of blocks is {blocks.allowed})"
        )
    for index, value in enumerate(filters):
        _check_domain(value, "filters", path, f"{where}.filters[{index}]")
    for name in PARAMETERS.keys() - {"num_blocks", "filters"}:
        if name in values:
            _check_domain(values[name], name, path, f"{where}.{name}")
    for name, domain in MODEL_PARAMETERS.items():  # family, freeze, backbone_learning_rate
        value = values.get(name, domain.default)
        if not (_is_kind(value, domain.kind) and domain.check(value)):
            raise TunerError(f"{path}: {where}.{name}: must be {domain.allowed}, got {value!r}")
    for name, (check, allowed) in _TRAINING_DOMAINS.items():
        if name in values and not check(values[name]):
            raise TunerError(f"{path}: {where}.{name}: must be {allowed}, got {values[name]!r}")
    for name, value in augment.items():
        if _is_kind(value, float) and not (math.isfinite(value) and value >= 0):
            raise TunerError(f"{path}: {where}.augment.{name}: must be >= 0, got {value!r}")
    return TrialConfig.from_dict(values)


def _check_domain(value: Any, name: str, path: Path, key: str) -> None:
    domain = PARAMETERS[name]
    finite = not isinstance(value, float) or math.isfinite(value)
    if not (_is_kind(value, domain.kind) and finite and domain.check(value)):
        raise TunerError(f"{path}: {key}: must be {domain.allowed}, got {value!r}")


def _check_fields(values: dict[str, Any], cls: type, path: Path, where: str) -> None:
    """Each key must be a field of `cls` whose default has the same type (ints pass as floats)."""
    defaults = cls()
    names = {f.name for f in fields(cls)}
    for key, value in values.items():
        if key not in names:
            raise TunerError(
                f"{path}: {where}.{key}: unknown key; allowed: {', '.join(sorted(names))}"
            )
        kind = type(getattr(defaults, key))
        if kind in (int, float, bool, str) and not _is_kind(value, kind):
            raise TunerError(f"{path}: {where}.{key}: must be {kind.__name__}, got {value!r}")


def _is_kind(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)
