"""Which trials and parameter values the report's figures show, as plain data.

A figure that a study cannot give raises `SkipSection` with a one-line reason. A parameter is
described by a `ParamAxis`: a categorical parameter stays categorical in every figure, also when
its choices are numbers (`kernel_size` 3 or 5), so no figure puts ticks between the choices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from tuner.report.data import format_value

CATEGORICAL = "categorical"
LOG = "log"
LINEAR = "linear"


class SkipSection(Exception):
    """This study cannot give the section's plot; the message says why, in one line."""


def complete_trials(study: optuna.Study, at_least: int) -> list[FrozenTrial]:
    """The complete trials with a finite value; raises SkipSection when fewer than `at_least`."""
    complete = [
        trial
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if trial.value is not None and math.isfinite(trial.value)
    ]
    if len(complete) < at_least:
        raise SkipSection(
            f"needs at least {at_least} complete trial{'s' if at_least > 1 else ''}; "
            f"this study has {len(complete)}"
        )
    return complete


def varying_params(trials: list[FrozenTrial]) -> list[str]:
    """Parameters sampled in every given trial that took more than one value."""
    space = optuna.search_space.intersection_search_space(trials)
    return [name for name in space if len({repr(t.params[name]) for t in trials}) > 1]


@dataclass(frozen=True)
class ParamAxis:
    """One parameter over a list of trials: its kind and each trial's value.

    `values` holds a float for numeric parameters and the choice's label for categorical
    ones; None where a trial did not sample the parameter (e.g. `filters_3` with two blocks).
    """

    name: str
    kind: str  # CATEGORICAL, LOG or LINEAR
    values: tuple[float | str | None, ...]
    categories: tuple[str, ...] = ()  # categorical: every choice's label, in the choices' order
    integer: bool = False  # an IntDistribution: ticks on whole numbers only

    @property
    def categorical(self) -> bool:
        return self.kind == CATEGORICAL

    @property
    def missing(self) -> bool:
        """Whether some trials did not sample this parameter."""
        return any(value is None for value in self.values)

    def present_categories(self) -> tuple[str, ...]:
        """The categories some trial took, in the choices' order."""
        taken = set(self.values)
        return tuple(label for label in self.categories if label in taken)

    def numbers(self) -> list[float]:
        """The numeric values that are present (empty for a categorical parameter)."""
        return [float(v) for v in self.values if v is not None and not isinstance(v, str)]


@dataclass(frozen=True)
class ParamTable:
    """The complete trials as a table: their numbers, objective values and parameter axes."""

    numbers: tuple[int, ...]
    objective: tuple[float, ...]
    direction: str  # "maximize" or "minimize"
    axes: tuple[ParamAxis, ...]  # parameters that took more than one value, by name

    def axis(self, name: str) -> ParamAxis:
        return next(axis for axis in self.axes if axis.name == name)


def param_table(study: optuna.Study, at_least: int = 2) -> ParamTable:
    """The complete trials and every parameter that took more than one value among them."""
    trials = complete_trials(study, at_least)
    names = sorted({name for trial in trials for name in trial.params})
    axes = []
    for name in names:
        axis = param_axis(trials, name)
        if len({value for value in axis.values if value is not None}) > 1:
            axes.append(axis)
    if not axes:
        raise SkipSection("no parameter took more than one value across the complete trials")
    return ParamTable(
        numbers=tuple(trial.number for trial in trials),
        objective=tuple(float(trial.value) for trial in trials),  # type: ignore[arg-type]
        direction=study.direction.name.lower(),
        axes=tuple(axes),
    )


def param_axis(trials: list[FrozenTrial], name: str) -> ParamAxis:
    """`name` over `trials`, typed by its distributions (categorical if any run made it so)."""
    distributions = [trial.distributions[name] for trial in trials if name in trial.distributions]
    choices = [d for d in distributions if isinstance(d, CategoricalDistribution)]
    if choices:
        values: tuple[Any, ...] = tuple(
            category_label(trial.params[name]) if name in trial.params else None for trial in trials
        )
        # Every choice of every run (a resumed study may have changed them), then any value
        # that a run with another distribution gave.
        labels = [category_label(choice) for d in choices for choice in d.choices]
        labels += [value for value in values if value is not None]
        return ParamAxis(name, CATEGORICAL, values, categories=tuple(dict.fromkeys(labels)))
    numeric = [d for d in distributions if isinstance(d, FloatDistribution | IntDistribution)]
    values = tuple(float(trial.params[name]) if name in trial.params else None for trial in trials)
    return ParamAxis(
        name,
        LOG if numeric[0].log else LINEAR,
        values,
        integer=all(isinstance(d, IntDistribution) for d in numeric),
    )


def category_label(choice: Any) -> str:
    """How a categorical choice is written on an axis: `true`, `adamw`, `5`, `0.001`."""
    return format_value(choice)


def number_label(value: float) -> str:
    """A short tick label: 3 significant digits, and 1e-4 rather than 0.0001."""
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:.3g}"
