"""[constraints] for Optuna: a trial's violations of each limit, from its pre-training measures.

Optuna 5 reads constraints from the trial itself (`Trial.set_constraint`; a value > 0 means
infeasible), which replaced the samplers' deprecated `constraints_func`. The samplers that use
them are those whose constructor still takes `constraints_func` (TPE, NSGA-II, GP): the spec
refuses [constraints] with any other sampler, since it would silently ignore them.
"""

from __future__ import annotations

import optuna


def violations(measures: dict[str, float], limits: dict[str, float]) -> dict[str, float]:
    """`max_<measure>` -> (value - limit) / limit: > 0 breaks it, relative so scales compare."""
    return {f"max_{name}": (measures[name] - limit) / limit for name, limit in limits.items()}


def broken(measures: dict[str, float], limits: dict[str, float]) -> list[str]:
    """Human lines for each broken limit, e.g. "params 612,010 > max_params 500,000"."""
    return [
        f"{name} {measures[name]:,.6g} > max_{name} {limit:,.6g}"
        for name, limit in limits.items()
        if measures[name] > limit
    ]


def set_constraints(
    trial: optuna.Trial, measures: dict[str, float], limits: dict[str, float]
) -> None:
    """Store the violations on the trial, where the constrained samplers read them."""
    for key, value in violations(measures, limits).items():
        trial.set_constraint(key, value)
