"""Samplers and pruners by name: the registry study files choose from, and building them.

A new sampler or pruner is one entry here; `tuner.spec` takes the valid names and the options
each constructor accepts from these dicts. A pruner's entry also says which of its options a
study file writes in epochs: `tuner.search.schedule` turns them into reports (steps), the one
place that does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna

from tuner.search.rung_tpe import RungTPESampler
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
    # TPE on the highest rung enough trials reached (BOHB): a budget run's default
    "rung-tpe": RungTPESampler,
}


@dataclass(frozen=True)
class PrunerEntry:
    """A registered pruner: its class and what its step options count.

    Trials report several times an epoch, so a pruner's steps are reports. A study file
    writes step options in epochs (the unit its author thinks in): `epoch_options` lists them,
    and the schedule multiplies them by the reports per epoch. A rung pruner's `first_rung`
    option defaults to one report (Optuna's "auto" would guess from the first trial), and its
    `last_rung` option defaults to, and is capped at, the schedule's last report (a budget may
    plan fewer epochs than the file's, and no trial could reach the rungs beyond).
    """

    cls: type[optuna.pruners.BasePruner]
    epoch_options: tuple[str, ...] = ()
    first_rung: str | None = None
    last_rung: str | None = None


PRUNER_ENTRIES: dict[str, PrunerEntry] = {
    "median": PrunerEntry(
        optuna.pruners.MedianPruner, epoch_options=("n_warmup_steps", "interval_steps")
    ),
    "hyperband": PrunerEntry(
        optuna.pruners.HyperbandPruner,
        epoch_options=("min_resource", "max_resource"),
        first_rung="min_resource",
        last_rung="max_resource",
    ),
    "successive-halving": PrunerEntry(
        optuna.pruners.SuccessiveHalvingPruner,
        epoch_options=("min_resource",),
        first_rung="min_resource",
    ),
    "none": PrunerEntry(optuna.pruners.NopPruner),
}
# name -> class, for the spec's checks of names and options
PRUNERS: dict[str, type[optuna.pruners.BasePruner]] = {
    name: entry.cls for name, entry in PRUNER_ENTRIES.items()
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
    """The pruner registered as `name`, with its options as given (in steps: a study's pruner
    comes from its schedule, `TrialSchedule.build_pruner`, which converts epochs first)."""
    return PRUNERS[name](**options)


def make_sampler(spec: StudySpec, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The study file's sampler. Workers get distinct seeds so they don't sample in lockstep."""
    seed = None if spec.sampler.seed is None else spec.sampler.seed + seed_offset
    grid = grid_search_space(spec) if spec.sampler.name == "grid" else None
    return build_sampler(spec.sampler.name, seed, spec.sampler.options, grid)
