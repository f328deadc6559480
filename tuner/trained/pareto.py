"""`tuner best --pareto`: the Pareto-optimal trials of a multi-objective study, TOML or JSON.

One entry per trial on the front (complete and within [constraints]), with its values by
measure name, its measures of the built model, and its full config (retrain one with
`tuner retrain --study S --trial N`).
"""

from __future__ import annotations

import json
from typing import Any

import optuna

from tuner import attrs
from tuner.errors import TunerError
from tuner.files import toml_value
from tuner.trained.export import FORMATS


def objective_names(study: optuna.Study) -> list[str]:
    """The study's objectives by measure name ("values_0", ... for studies tuner didn't name)."""
    names = study.metric_names or []
    return [
        names[i] if i < len(names) and names[i] else f"values_{i}"
        for i in range(len(study.directions))
    ]


def pareto_entries(study: optuna.Study) -> list[dict[str, Any]]:
    """The front as plain data, best first objective first."""
    if len(study.directions) < 2:
        raise TunerError(
            f"--pareto: study {study.study_name!r} has one objective; use `tuner best` "
            "(a Pareto front needs a study with several metrics)"
        )
    names = objective_names(study)
    sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    front = sorted(study.best_trials, key=lambda t: (sign * t.values[0], t.number))
    if not front:
        raise TunerError(f"study {study.study_name!r} has no complete feasible trial yet")
    entries = []
    for trial in front:
        entry: dict[str, Any] = {"trial": trial.number}
        entry["values"] = dict(zip(names, trial.values, strict=True))
        if attrs.MEASURES in trial.user_attrs:
            entry["measures"] = trial.user_attrs[attrs.MEASURES]
        if attrs.CONFIG in trial.user_attrs:
            entry["config"] = trial.user_attrs[attrs.CONFIG]
        entries.append(entry)
    return entries


def render_pareto(study: optuna.Study, fmt: str) -> str:
    """The Pareto front in `fmt` ("toml" or "json")."""
    entries = pareto_entries(study)
    names = objective_names(study)
    if fmt == "json":
        data = {"study": study.study_name, "metrics": names, "pareto": entries}
        return json.dumps(data, indent=2) + "\n"
    if fmt != "toml":
        raise TunerError(f"--format: unknown format {fmt!r}; use {' or '.join(FORMATS)}")
    lines = [
        f"# Pareto-optimal trials of study {study.study_name!r} ({', '.join(names)}),",
        f"# best {names[0]} first. Retrain one: tuner retrain --study {study.study_name} --trial N",
        f"study = {toml_value(study.study_name)}",
        f"metrics = {toml_value(names)}",
    ]
    for entry in entries:
        lines += ["", "[[pareto]]", f"trial = {entry['trial']}"]
        for table in ("values", "measures"):
            if table in entry:
                lines += ["", f"[pareto.{table}]"]
                lines += [f"{k} = {toml_value(float(v))}" for k, v in entry[table].items()]
        if "config" in entry:
            config = dict(entry["config"])
            augment = config.pop("augment", {})
            lines += ["", "[pareto.config]"]
            lines += [f"{k} = {toml_value(v)}" for k, v in config.items()]
            lines += ["", "[pareto.config.augment]"]
            lines += [f"{k} = {toml_value(v)}" for k, v in augment.items()]
    return "\n".join(lines) + "\n"
