"""The Pareto front of a multi-objective study: collected as plain data, then drawn and tabled.

`pareto_data` reads the study (complete trials, which of them are Pareto-optimal and feasible,
and the configurations that broke a [constraints] limit and were never trained); `draw_pareto`
and `pareto_table` turn that data into a Plotly figure and the page's table.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
import plotly.graph_objects as go
from optuna.trial import TrialState

from tuner import attrs
from tuner.report.data import Table, format_value
from tuner.report.style import BEST_STYLE, STATE_STYLES
from tuner.report.trials import SkipSection

MEASURE_COLUMNS = ("params", "flops", "latency_ms", "memory_mb")


@dataclass(frozen=True)
class ParetoPoint:
    """One complete trial: its objective values and pre-training measures."""

    number: int
    values: tuple[float, ...]
    measures: dict[str, float]
    epochs: int | None
    on_front: bool
    feasible: bool


@dataclass(frozen=True)
class ParetoData:
    names: tuple[str, ...]  # the objectives, in order
    directions: tuple[str, ...]
    points: tuple[ParetoPoint, ...]
    untrained: tuple[tuple[int, str], ...]  # (trial, why) for constraint-breaking configs

    @property
    def front(self) -> tuple[ParetoPoint, ...]:
        """The Pareto-optimal trials, best first objective first."""
        sign = -1.0 if self.directions[0] == "maximize" else 1.0
        return tuple(
            sorted(
                (p for p in self.points if p.on_front), key=lambda p: (sign * p.values[0], p.number)
            )
        )

    @property
    def notes(self) -> tuple[str, ...]:
        notes = []
        if self.untrained:
            notes.append(
                f"{len(self.untrained)} configuration(s) broke a [constraints] limit when "
                f"measured before training and were not trained (e.g. trial "
                f"#{self.untrained[0][0]}: {self.untrained[0][1]})."
            )
        if any(not p.feasible for p in self.points):
            notes.append("Trials outside [constraints] are never on the front.")
        return tuple(notes)


def pareto_data(study: optuna.Study) -> ParetoData:
    """The study's complete trials and its front (Optuna's `best_trials`, feasible ones only)."""
    if len(study.directions) < 2:
        raise SkipSection("the study has one objective")
    count = len(study.directions)
    names = list(study.metric_names or [])
    names = [names[i] if i < len(names) else f"objective {i}" for i in range(count)]
    front = {trial.number for trial in study.best_trials}
    points, untrained = [], []
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.COMPLETE and trial.values is not None:
            points.append(
                ParetoPoint(
                    number=trial.number,
                    values=tuple(trial.values),
                    measures=dict(trial.user_attrs.get(attrs.MEASURES, {})),
                    epochs=trial.user_attrs.get(attrs.EPOCHS_RUN),
                    on_front=trial.number in front,
                    feasible=all(v <= 0 for v in trial.constraints.values()),
                )
            )
        reason = str(trial.user_attrs.get(attrs.STOP_REASON, ""))
        if trial.state == TrialState.PRUNED and reason.startswith("constraint"):
            untrained.append((trial.number, reason.removeprefix("constraint: ")))
    if not points:
        raise SkipSection("no trial has completed yet")
    return ParetoData(
        tuple(names),
        tuple(d.name.lower() for d in study.directions),
        tuple(points),
        tuple(untrained),
    )


def _label(name: str, direction: str) -> str:
    return (
        f"{name.replace('_', ' ')} ({'higher' if direction == 'maximize' else 'lower'} is better)"
    )


def draw_pareto(data: ParetoData) -> go.Figure:
    """Two objectives: a scatter with the front joined up; more: a scatter matrix."""
    others = [p for p in data.points if not p.on_front]
    front = data.front
    hover = "trial #%{customdata}<extra></extra>"
    figure = go.Figure()
    if len(data.names) == 2:
        # The first objective (usually accuracy) on y, the cost (size, latency) on x.
        for group, label, style, mode in (
            (others, "dominated", STATE_STYLES[TrialState.COMPLETE], "markers"),
            (sorted(front, key=lambda p: p.values[1]), "Pareto front", BEST_STYLE, "lines+markers"),
        ):
            figure.add_trace(
                go.Scatter(
                    x=[p.values[1] for p in group],
                    y=[p.values[0] for p in group],
                    customdata=[p.number for p in group],
                    mode=mode,
                    name=label,
                    line={"shape": "hv", "color": style.color},
                    marker={"color": style.color, "size": 9},
                    hovertemplate=hover,
                )
            )
        figure.update_layout(
            xaxis_title=_label(data.names[1], data.directions[1]),
            yaxis_title=_label(data.names[0], data.directions[0]),
        )
    else:
        dimensions = [
            {"label": name.replace("_", " "), "values": [p.values[i] for p in data.points]}
            for i, name in enumerate(data.names)
        ]
        colors = [BEST_STYLE.color if p.on_front else "#c5d4e6" for p in data.points]
        figure.add_trace(
            go.Splom(
                dimensions=dimensions,
                customdata=[p.number for p in data.points],
                marker={"color": colors, "size": 7},
                hovertemplate=hover,
                diagonal_visible=False,
                showupperhalf=False,
            )
        )
    figure.update_layout(height=480, legend={"orientation": "h"})
    return figure


def pareto_table(data: ParetoData) -> Table:
    """The Pareto-optimal trials: objective values, then the pre-training measures."""
    measures = [m for m in MEASURE_COLUMNS if m not in data.names]
    headers = ("trial", *(n.replace("_", " ") for n in data.names), *measures, "epochs")
    rows = tuple(
        (
            f"#{p.number}",
            *(format_value(v) for v in p.values),
            *(format_value(p.measures.get(m)) for m in measures),
            format_value(p.epochs),
        )
        for p in data.front
    )
    return Table(
        tuple(h.replace("_", " ") for h in headers), rows, tuple(p.number for p in data.front)
    )
