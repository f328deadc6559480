"""Samplers and pruners by name: the registry study files choose from, and building them.

A new sampler or pruner is one entry here; `tuner.spec` takes the valid names and the options
each constructor accepts from these dicts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import optuna

from tuner.search.space import grid_search_space

if TYPE_CHECKING:
    from tuner.spec import StudySpec

SAMPLERS: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "qmc": optuna.samplers.QMCSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "grid": optuna.samplers.GridSampler,
    "nsga2": optuna.samplers.NSGAIISampler,  # for several objectives (population-based)
}

PRUNERS: dict[str, type[optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "successive-halving": optuna.pruners.SuccessiveHalvingPruner,
    "none": optuna.pruners.NopPruner,
}


def build_sampler(
    name: str,
    seed: int | None,
    options: dict[str, Any],
    grid: dict[str, list[Any]] | None = None,
) -> optuna.samplers.BaseSampler:
    """The sampler registered as `name`; the grid sampler also needs its `grid` of values."""
    if name == "grid":
        if grid is None:
            raise ValueError("the grid sampler needs its grid (see space.grid_search_space)")
        return SAMPLERS[name](grid, seed=seed, **options)
    return SAMPLERS[name](seed=seed, **options)


def build_pruner(name: str, options: dict[str, Any]) -> optuna.pruners.BasePruner:
    """The pruner registered as `name`, with its options."""
    return PRUNERS[name](**options)


def make_sampler(spec: StudySpec, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The study file's sampler. Workers get distinct seeds so they don't sample in lockstep."""
    seed = None if spec.sampler.seed is None else spec.sampler.seed + seed_offset
    grid = grid_search_space(spec) if spec.sampler.name == "grid" else None
    return build_sampler(spec.sampler.name, seed, spec.sampler.options, grid)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The study file's pruner with its options."""
    return build_pruner(spec.pruner.name, spec.pruner.options)
