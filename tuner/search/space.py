"""Sampling: a trial + the study's search space -> a concrete `TrialConfig`.

Also the space as Optuna sees it (parameter names, distributions, the grid), so the pre-flight
step (`tuner.search.preflight`) tries the sampler on exactly what `suggest` will sample. The
grid's arithmetic lives with the spec (`tuner.spec.grid`), which counts it without Optuna.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import optuna

from tuner.config import AugmentSpec, TrialConfig
from tuner.families import SEED_CNN, family_parameters, get_family
from tuner.spec.grid import (
    FILTERS_PER_BLOCK,
    filter_param_name,
    grid_values,
)

if TYPE_CHECKING:
    from tuner.spec import ParamSpec, StudySpec

# Space parameters that are augmentations: they land in TrialConfig.augment.
AUGMENT_NAMES = frozenset(field.name for field in dataclasses.fields(AugmentSpec))
CONFIG_FIELDS = frozenset(field.name for field in dataclasses.fields(TrialConfig))
# Parameters only some families have (the seed CNN's `filters`...) -> the families that do.
FAMILY_ONLY = family_parameters()


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
    filter parameters follows `num_blocks`. Grid studies instead sample `num_blocks` and the
    filters together as one `filters_per_block` parameter (see `grid_search_space`).
    Augmentations declared in [space] replace the study's fixed [augment] values.
    """
    stacks = _filter_stacks(spec) if _stack_is_one_param(spec) else None
    # The family first: a family's own parameters are sampled only for its trials.
    family = spec.space.get("family")
    values = {"family": _suggest_one(trial, "family", family)} if family else {}
    chosen = get_family(values.get("family", SEED_CNN))
    values.update(
        (name, _suggest_one(trial, name, param))
        for name, param in spec.space.items()
        if name not in ("filters", "family")
        and not (stacks and name == "num_blocks")
        and (name not in FAMILY_ONLY or name in chosen.parameters)
    )
    model = {"pretrained": spec.model.pretrained} if chosen.pretrained else {}
    if "filters" not in chosen.parameters:
        filters = TrialConfig().filters
    elif stacks:
        filters = tuple(json.loads(trial.suggest_categorical(FILTERS_PER_BLOCK, stacks)))
    else:
        num_blocks = values.pop("num_blocks")
        filters = tuple(
            _suggest_one(trial, filter_param_name(block), spec.space["filters"])
            for block in range(1, num_blocks + 1)
        )
    augment = {name: values.pop(name) for name in AUGMENT_NAMES & values.keys()}
    # A build function's own parameters (tuner.families.user) are no TrialConfig fields.
    own = sorted((name, values.pop(name)) for name in values.keys() - CONFIG_FIELDS)
    if own or spec.model.family_sha256:
        model.update(model_params=tuple(own), family_sha256=spec.model.family_sha256)
    return TrialConfig(
        **values,
        **model,
        filters=filters,
        max_epochs=spec.training.max_epochs,
        patience=spec.training.patience,
        seed=spec.training.seed + trial.number,
        augment=dataclasses.replace(spec.augment, **augment),
    )


def distribution(param: ParamSpec) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution `suggest` samples a (not fixed) parameter from."""
    if param.type == "categorical":
        return optuna.distributions.CategoricalDistribution(param.choices)
    if param.type == "int":
        return optuna.distributions.IntDistribution(
            param.low, param.high, log=param.log, step=param.step or 1
        )
    return optuna.distributions.FloatDistribution(
        param.low, param.high, log=param.log, step=param.step
    )


def common_distributions(
    params: Mapping[str, ParamSpec],
) -> dict[str, optuna.distributions.BaseDistribution]:
    """What every trial of a (non-grid) study samples, by the names `suggest` gives them.

    `filters_k` for k above the fewest blocks is conditional (only deeper models have it), so
    it is left out, as samplers that model the common search space (CMA-ES's x0) never see it.
    """
    # With a sampled family, the families' own parameters are conditional too.
    family = params.get("family")
    conditional = set(FAMILY_ONLY) if family is not None and not family.is_fixed else set()
    distributions = {
        name: distribution(param)
        for name, param in params.items()
        if not param.is_fixed and name != "filters" and name not in conditional
    }
    if not params["filters"].is_fixed and not conditional:
        blocks = params["num_blocks"]
        fewest = blocks.value if blocks.is_fixed else min(grid_values(blocks))
        for block in range(1, fewest + 1):
            distributions[filter_param_name(block)] = distribution(params["filters"])
    return distributions


def grid_search_space(spec: StudySpec) -> dict[str, list[Any]]:
    """The finite grid of a grid study's sampled parameters, for optuna's GridSampler.

    GridSampler runs every combination of a fixed dict of value lists. With `filters_1`,
    `filters_2`, ... as separate lists, a point with fewer blocks would be run once for each
    value of every filter it doesn't use: the same model, trained again. So a sampled `filters`
    becomes one categorical parameter, `filters_per_block`, whose choices are the distinct conv
    stacks ("[16, 32]": one value per block, for every `num_blocks`), and the grid holds each
    model exactly once. (Pruning repeats instead would still spend a grid point and a counted
    trial on each, and would race between workers.)
    """
    grid: dict[str, list[Any]] = {}
    for name, param in spec.space.items():
        if param.is_fixed or (name == "num_blocks" and _stack_is_one_param(spec)):
            continue
        if name == "filters":
            grid[FILTERS_PER_BLOCK] = _filter_stacks(spec)
        else:
            grid[name] = grid_values(param)
    return grid


def _stack_is_one_param(spec: StudySpec) -> bool:
    """Whether `num_blocks` and `filters` are sampled as one `filters_per_block` parameter."""
    return spec.sampler.name == "grid" and not spec.space["filters"].is_fixed


def _filter_stacks(spec: StudySpec) -> list[str]:
    """Every distinct conv stack, fewest blocks first, as JSON text: '[16]', '[16, 32]', ...

    Text because Optuna's categorical choices must be plain scalars, not tuples.
    """
    blocks = spec.space["num_blocks"]
    filters = grid_values(spec.space["filters"])
    return [
        json.dumps(list(stack))
        for num_blocks in ([blocks.value] if blocks.is_fixed else grid_values(blocks))
        for stack in itertools.product(filters, repeat=num_blocks)
    ]
