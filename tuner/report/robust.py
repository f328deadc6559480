"""Is the winner robust? Confirmed configurations ranked by mean, and best values at range edges.

Two report sections, each collected as plain data first: `confirmed_table` (what `tuner
confirm` stored: mean, spread and seeds per configuration, best mean first) and `edge_warnings`
(numeric parameters whose best values sit at a bound of their search range, so the optimum may
lie outside it: the Tuning Playbook's first check on a finished study).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial

from tuner.report.data import Table, best_trials, format_value
from tuner.report.page import Section
from tuner.search.confirmed import confirmed_ranking

EDGE_MARGIN = 0.05  # within 5% of the range (of its log for log ranges) counts as at the bound
EDGE_TOP = 5  # look at the best 5 trials, or the best 20% when that is more
EDGE_TOP_FRACTION = 0.2


@dataclass(frozen=True)
class EdgeWarning:
    """A parameter whose best values sit at one bound of its search range."""

    param: str
    bound: str  # "lower" or "upper"
    value: float  # the bound
    near: int  # how many of the top trials are within the margin of it
    top: int  # how many top trials were looked at
    best_is_near: bool  # the single best trial is one of them

    @property
    def message(self) -> str:
        which = f"{self.near} of the top {self.top}"
        if self.best_is_near:
            which = f"the best trial and {which}"
        return (
            f"{self.param}: best values at the {self.bound} bound {format_value(self.value)} "
            f"({which}): widen the range"
        )


def edge_warnings(study: optuna.Study) -> list[EdgeWarning]:
    """Numeric parameters whose best trial, or half of the top trials, sit at a range bound."""
    complete = best_trials(study, limit=len(study.trials))
    if not complete:
        return []
    top = best_trials(study, max(EDGE_TOP, math.ceil(EDGE_TOP_FRACTION * len(complete))))
    warnings = []
    for name, distribution in top[0].distributions.items():
        if not isinstance(distribution, FloatDistribution | IntDistribution):
            continue
        if distribution.high <= distribution.low:
            continue
        for bound in ("lower", "upper"):
            near = [trial for trial in top if _near(trial, name, distribution, bound)]
            best_is_near = near[:1] == top[:1]
            if best_is_near or 2 * len(near) >= len(top):
                edge = distribution.low if bound == "lower" else distribution.high
                warnings.append(EdgeWarning(name, bound, edge, len(near), len(top), best_is_near))
    return warnings


def _near(trial: FrozenTrial, name: str, distribution, bound: str) -> bool:
    """Whether `trial` sampled `name` within EDGE_MARGIN of the range's `bound`."""
    if name not in trial.params:
        return False
    scale = (lambda v: math.log(v)) if distribution.log else (lambda v: v)
    low, high, value = (scale(v) for v in (distribution.low, distribution.high, trial.params[name]))
    margin = EDGE_MARGIN * (high - low)
    return value <= low + margin if bound == "lower" else value >= high - margin


def confirmed_table(study: optuna.Study) -> Table:
    """Confirmed configurations, best mean first: mean, std, min-max, seeds and tuned value."""
    rows, keys = [], []
    for rank, entry in enumerate(confirmed_ranking(study), 1):
        diverged = f" (+{entry.diverged} diverged)" if entry.diverged else ""
        rows.append(
            (
                str(rank),
                f"#{entry.trial}",
                format_value(entry.mean),
                format_value(entry.std),
                f"{format_value(entry.low)}-{format_value(entry.high)}",
                f"{entry.n}{diverged}",
                format_value(entry.tuned_value),
            )
        )
        keys.append(entry.trial)
    headers = ("rank", "trial", "mean", "std", "min-max", "seeds", "tuned value")
    return Table(headers, tuple(rows), tuple(keys))


def robust_sections(study: optuna.Study) -> list[Section]:
    """The confirmed-ranking section (once `tuner confirm` ran) and the range-edge warnings."""
    sections = []
    table = confirmed_table(study)
    if table.rows:
        sections.append(
            Section(
                "confirmed",
                "Confirmed configurations (ranked by mean over new seeds)",
                "`tuner confirm` retrained these trials' configurations with new seeds, each as "
                "its trial was trained. Ranked by the mean of those runs; the tuned value is not "
                "part of it (it was picked for being high, so it flatters). A wide min-max "
                "means the tuned value was partly luck.",
                table=table,
                highlight=table.keys[0],
            )
        )
    warnings = edge_warnings(study)
    if warnings:
        sections.append(
            Section(
                "range-edges",
                "Best values at the edge of the search range",
                f"Numeric parameters whose best trial, or half of the best {EDGE_TOP} trials (or "
                f"best {EDGE_TOP_FRACTION:.0%}), lie within {EDGE_MARGIN:.0%} of a bound of the "
                "range (log scale for log ranges): the best value may lie beyond it.",
                notes=tuple(warning.message for warning in warnings),
            )
        )
    return sections
