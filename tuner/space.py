"""Sampling: a trial + the study's search space -> a concrete `TrialConfig`."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import optuna

from tuner.config import TrialConfig
from tuner.spec import ParamSpec, StudySpec


def _suggest_one(trial: optuna.Trial, name: str, param: ParamSpec) -> Any:
    if param.type == "fixed":
        return param.value
    if param.type == "categorical":
        return trial.suggest_categorical(name, list(param.choices))
    if param.type == "int":
        return trial.suggest_int(name, param.low, param.high, step=param.step or 1, log=param.log)
    return trial.suggest_float(name, param.low, param.high, step=param.step, log=param.log)


def suggest(trial: optuna.Trial, spec: StudySpec) -> TrialConfig:
    """Sample every declared parameter; fixed ones are taken as they are.

    `filters` is sampled once per conv block (`filters_1`, `filters_2`, ...), so the number of
    filter parameters follows `num_blocks`.
    """
    values = {
        name: _suggest_one(trial, name, param)
        for name, param in spec.space.items()
        if name != "filters"
    }
    num_blocks = values.pop("num_blocks")
    filters = tuple(
        _suggest_one(trial, f"filters_{block}", spec.space["filters"])
        for block in range(1, num_blocks + 1)
    )
    return TrialConfig(
        **values,
        filters=filters,
        max_epochs=spec.training.max_epochs,
        patience=spec.training.patience,
        seed=spec.training.seed + trial.number,
        augment=spec.augment,
    )


def grid_search_space(spec: StudySpec) -> dict[str, list[Any]]:
    """The finite grid of every sampled parameter, for optuna's GridSampler."""
    grid: dict[str, list[Any]] = {}
    max_blocks = spec.space["num_blocks"]
    blocks = max_blocks.value if max_blocks.is_fixed else max(_values(max_blocks))
    for name, param in spec.space.items():
        if param.is_fixed:
            continue
        if name == "filters":
            for block in range(1, blocks + 1):
                grid[f"filters_{block}"] = _values(param)
        else:
            grid[name] = _values(param)
    return grid


def _values(param: ParamSpec) -> list[Any]:
    if param.type == "categorical":
        return list(param.choices)
    if param.type == "int":
        return list(range(param.low, param.high + 1, param.step or 1))
    # Decimal steps give 0.3, not 0.30000000000000004, and never step past `high`.
    low, high, step = (Decimal(str(value)) for value in (param.low, param.high, param.step))
    return [float(low + i * step) for i in range(int((high - low) / step) + 1)]
