"""Figures over the search space: parallel coordinates, slices and the contour of two parameters.

Each figure is collected as plain data (`parallel_data`, `param_table`, `contour_data`), then
drawn with Plotly (`draw_parallel`, `draw_slices`, `draw_contour`). Categorical parameters are
categories in all three, numbers or not; log-scale parameters are drawn on log axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tuner.report.style import OBJECTIVE_SCALE, TRIAL_NUMBER_SCALE, objective_scale_reversed
from tuner.report.trials import (
    LINEAR,
    LOG,
    ParamAxis,
    ParamTable,
    SkipSection,
    complete_trials,
    number_label,
    param_axis,
    varying_params,
)

MISSING_LABEL = "—"  # where a trial did not sample a parameter (e.g. filters_3 with two blocks)
SLICE_COLUMNS = 4
SLICE_ROW_PX = 250
PADDING = 0.05  # share of a numeric contour axis added at each end, as Optuna's contour does


# ---------------------------------------------------------------- parallel coordinates


@dataclass(frozen=True)
class Dimension:
    """One vertical axis: each trial's position on it and where its ticks go."""

    label: str
    values: tuple[float, ...]
    range: tuple[float, float]
    tickvals: tuple[float, ...]
    ticktext: tuple[str, ...]


@dataclass(frozen=True)
class ParallelData:
    """The objective's axis, then one axis per parameter; a line per complete trial."""

    objective: Dimension
    params: tuple[Dimension, ...]
    direction: str


def parallel_data(table: ParamTable) -> ParallelData:
    """Axes for the complete trials in `table`: categories at whole positions, logs as decades."""
    objective = ParamAxis("objective", LINEAR, tuple(table.objective))
    return ParallelData(
        objective=dimension(objective),
        params=tuple(dimension(axis) for axis in table.axes),
        direction=table.direction,
    )


def dimension(axis: ParamAxis) -> Dimension:
    """Where each trial sits on `axis`, with ticks that never fall between two categories."""
    if axis.categorical:
        labels = axis.present_categories()
        offset = 1 if axis.missing else 0  # the missing "category" sits below the others
        positions = {label: index + offset for index, label in enumerate(labels)}
        values = tuple(0.0 if v is None else float(positions[str(v)]) for v in axis.values)
        ticktext = ((MISSING_LABEL,) if axis.missing else ()) + labels
        top = max(len(ticktext) - 1, 1)
        return Dimension(
            axis.name, values, (0.0, float(top)), tuple(map(float, range(len(ticktext)))), ticktext
        )
    numbers = axis.numbers()
    log = axis.kind == LOG
    scaled = [math.log10(n) for n in numbers] if log else numbers
    ticks = (
        log_ticks(min(scaled), max(scaled))
        if log
        else linear_ticks(min(scaled), max(scaled), integer=axis.integer)
    )
    # The axis runs from tick to tick (plotly draws its line only between the outer ticks).
    low, high = min(ticks[0], min(scaled)), max(ticks[-1], max(scaled))
    ticktext = [number_label(10**t if log else t) for t in ticks]
    missing_at = low - 0.15 * ((high - low) or 1.0)
    values = tuple(
        missing_at if v is None else (math.log10(float(v)) if log else float(v))
        for v in axis.values
    )
    if axis.missing:
        ticks, ticktext, low = [missing_at, *ticks], [MISSING_LABEL, *ticktext], missing_at
    return Dimension(axis.name, values, (low, high), tuple(ticks), tuple(ticktext))


def linear_ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    """At most `count` + 1 round ticks (steps of 1, 2, 2.5 or 5 times a power of ten), from the
    last round number at or below `low` to the first at or above `high`."""
    if high <= low:
        return [low]
    power = 10 ** math.floor(math.log10((high - low) / count))
    steps = [m * power * scale for scale in (1, 10, 100) for m in (1, 2, 2.5, 5)]
    if integer:
        steps = [step for step in steps if step >= 1 and step == int(step)] or [1.0]
    for step in steps:
        first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
        if last - first <= count:
            break
    return [round((first + i) * step, 12) for i in range(last - first + 1)]


def log_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Ticks in log10 units, from the last tick at or below `low` to the first at or above
    `high`: 1-2-5 per decade, or 1-3, or decades alone, or every other decade, whichever
    first needs no more than `count` ticks."""
    if high <= low:
        return [low]
    for multiples, every in (((1, 2, 5), 1), ((1, 3), 1), ((1,), 1), ((1,), 2), ((1,), 5)):
        candidates = [
            math.log10(m) + decade
            for decade in range(math.floor(low) - every, math.ceil(high) + every + 1)
            if decade % every == 0
            for m in multiples
        ]
        below = max(t for t in candidates if t <= low + 1e-9)
        above = min(t for t in candidates if t >= high - 1e-9)
        ticks = [t for t in candidates if below - 1e-9 <= t <= above + 1e-9]
        if len(ticks) <= count:
            break
    return ticks


def draw_parallel(data: ParallelData, target_name: str) -> go.Figure:
    """Plotly's parallel coordinates (drag on an axis to filter the lines)."""
    dimensions = [data.objective, *data.params]
    figure = go.Figure(
        go.Parcoords(
            line={
                "color": list(data.objective.values),
                "colorscale": OBJECTIVE_SCALE,
                "reversescale": objective_scale_reversed(data.direction),
                "showscale": True,
                "colorbar": {"title": {"text": target_name}, "thickness": 12},
            },
            dimensions=[
                {
                    "label": target_name if dim is data.objective else dim.label,
                    "values": list(dim.values),
                    "range": list(dim.range),
                    "tickvals": list(dim.tickvals),
                    "ticktext": list(dim.ticktext),
                }
                for dim in dimensions
            ],
            # Names tilt when the axes are close, so neighbours' names don't run into each other.
            labelangle=-20 if len(dimensions) > 7 else 0,
            labelside="top",
            tickfont={"size": 11},
            labelfont={"size": 12},
            rangefont={"size": 1, "color": "rgba(0,0,0,0)"},  # the ticks already show the range
        )
    )
    return figure.update_layout(height=460, margin={"t": 90, "r": 40, "b": 30, "l": 60})


# ---------------------------------------------------------------- slices


def draw_slices(table: ParamTable, target_name: str) -> go.Figure:
    """The objective against each parameter, in a grid of small plots: all visible at once."""
    count = len(table.axes)
    columns = min(SLICE_COLUMNS, count)
    rows = math.ceil(count / columns)
    height = SLICE_ROW_PX * rows + 90
    figure = make_subplots(
        rows=rows,
        cols=columns,
        shared_yaxes=True,
        subplot_titles=[axis.name for axis in table.axes],
        horizontal_spacing=0.03,
        vertical_spacing=min(0.3, 70 / height),
    )
    for index, axis in enumerate(table.axes):
        row, col = index // columns + 1, index % columns + 1
        present = [i for i, value in enumerate(axis.values) if value is not None]
        figure.add_scatter(
            x=[axis.values[i] for i in present],
            y=[table.objective[i] for i in present],
            text=[f"trial {table.numbers[i]}" for i in present],
            mode="markers",
            marker={
                "color": [table.numbers[i] for i in present],
                "colorscale": TRIAL_NUMBER_SCALE,
                "cmin": min(table.numbers),
                "cmax": max(table.numbers),
                "line": {"width": 0.5, "color": "#555"},
                "showscale": index == 0,
                "colorbar": {"title": {"text": "trial"}, "thickness": 12},
            },
            showlegend=False,
            hovertemplate=f"%{{text}}<br>{axis.name} %{{x}}<br>%{{y:.4g}}<extra></extra>",
            row=row,
            col=col,
        )
        if axis.categorical:  # an empty trace, so that choices no trial took still get a place
            figure.add_scatter(
                x=list(axis.categories),
                y=[None] * len(axis.categories),
                showlegend=False,
                hoverinfo="skip",
                row=row,
                col=col,
            )
        figure.update_xaxes(**axis_layout(axis), row=row, col=col)
    figure.update_yaxes(title_text=target_name, col=1)
    figure.update_annotations(font_size=12)
    return figure.update_layout(height=height, margin={"t": 40, "r": 20, "b": 40, "l": 60})


def axis_layout(
    axis: ParamAxis, categories: tuple[str, ...] | None = None, log_ticks_at_most: int = 4
) -> dict[str, object]:
    """A Plotly axis for a parameter: categories in choice order, log, or whole numbers."""
    if axis.categorical:
        order = list(axis.categories if categories is None else categories)
        return {"type": "category", "categoryorder": "array", "categoryarray": order}
    numbers = axis.numbers()
    if axis.kind == LOG:
        low, high = math.log10(min(numbers)), math.log10(max(numbers))
        ticks = [10**t for t in log_ticks(low, high, count=log_ticks_at_most)]
        return {"type": "log", "tickvals": ticks, "ticktext": [number_label(t) for t in ticks]}
    if axis.integer and max(numbers) - min(numbers) <= 12:
        return {"type": "linear", "dtick": 1, "tick0": 0}
    return {"type": "linear", "tickformat": "~g" if axis.integer else ".3~g"}


# ---------------------------------------------------------------- contour


@dataclass(frozen=True)
class ContourData:
    """Two parameters, each trial's point, and the best value found at each grid point."""

    x: ParamAxis
    y: ParamAxis
    numbers: tuple[int, ...]
    objective: tuple[float, ...]
    x_grid: tuple[float | str, ...]  # categories, or sorted values with a margin at each end
    y_grid: tuple[float | str, ...]
    z: tuple[tuple[float | None, ...], ...]  # z[row of y][column of x]; None: no trial there
    direction: str
    note: str = ""  # how the pair was chosen, when not by importance

    @property
    def notes(self) -> tuple[str, ...]:
        return (self.note,) if self.note else ()


def contour_candidates(study: optuna.Study) -> list[str]:
    """Parameters the contour can use: sampled in every complete trial, with two values+."""
    candidates = varying_params(complete_trials(study, at_least=2))
    if len(candidates) < 2:
        raise SkipSection(
            "needs two parameters that were sampled in every complete trial and took more "
            f"than one value; this study has {len(candidates)}"
        )
    return candidates


def contour_data(study: optuna.Study, x_name: str, y_name: str) -> ContourData:
    """The contour of `x_name` against `y_name` over the complete trials."""
    trials = [
        trial
        for trial in complete_trials(study, at_least=2)
        if x_name in trial.params and y_name in trial.params
    ]
    x, y = param_axis(trials, x_name), param_axis(trials, y_name)
    x_grid, y_grid = _grid(x), _grid(y)
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    best: dict[tuple[int, int], float] = {}
    for x_value, y_value, trial in zip(x.values, y.values, trials, strict=True):
        cell = (y_grid.index(y_value), x_grid.index(x_value))  # type: ignore[arg-type]
        value = float(trial.value)  # type: ignore[arg-type]
        if cell not in best or (value > best[cell] if maximize else value < best[cell]):
            best[cell] = value
    z = tuple(
        tuple(best.get((row, col)) for col in range(len(x_grid))) for row in range(len(y_grid))
    )
    return ContourData(
        x=x,
        y=y,
        numbers=tuple(trial.number for trial in trials),
        objective=tuple(float(trial.value) for trial in trials),  # type: ignore[arg-type]
        x_grid=x_grid,
        y_grid=y_grid,
        z=z,
        direction=study.direction.name.lower(),
    )


def _grid(axis: ParamAxis) -> tuple[float | str, ...]:
    if axis.categorical:
        return axis.present_categories()
    values = sorted(set(axis.numbers()))
    if axis.kind == LOG:
        low, high = math.log10(values[0]), math.log10(values[-1])
        pad = (high - low) * PADDING
        return (10 ** (low - pad), *values, 10 ** (high + pad))
    pad = (values[-1] - values[0]) * PADDING
    return (values[0] - pad, *values, values[-1] + pad)


def draw_contour(data: ContourData, target_name: str) -> go.Figure:
    """The objective interpolated between the trials, and the trials themselves as dots."""
    figure = go.Figure()
    figure.add_contour(
        x=list(data.x_grid),
        y=list(data.y_grid),
        z=[[math.nan if v is None else v for v in row] for row in data.z],
        connectgaps=True,
        contours_coloring="heatmap",
        line_smoothing=1.3,
        colorscale=OBJECTIVE_SCALE,
        reversescale=objective_scale_reversed(data.direction),
        colorbar={"title": {"text": target_name}, "thickness": 12},
        hoverinfo="skip",
    )
    figure.add_scatter(
        x=list(data.x.values),
        y=list(data.y.values),
        text=[
            f"trial {number}: {value:.4g}"
            for number, value in zip(data.numbers, data.objective, strict=True)
        ],
        mode="markers",
        marker={"color": "#1b1b1b", "size": 7, "line": {"color": "white", "width": 1}},
        showlegend=False,
        hovertemplate="%{text}<extra></extra>",
    )
    figure.update_xaxes(title_text=data.x.name, **_contour_axis(data.x, data.x_grid))
    figure.update_yaxes(title_text=data.y.name, **_contour_axis(data.y, data.y_grid))
    return figure.update_layout(height=520)


def _contour_axis(axis: ParamAxis, grid: tuple[float | str, ...]) -> dict[str, object]:
    categories = tuple(map(str, grid)) if axis.categorical else None
    layout = axis_layout(axis, categories, log_ticks_at_most=7)
    if axis.categorical:
        return layout
    ends = (float(grid[0]), float(grid[-1]))
    if axis.kind == LOG:
        return {**layout, "range": [math.log10(ends[0]), math.log10(ends[1])]}
    return {**layout, "range": list(ends)}
