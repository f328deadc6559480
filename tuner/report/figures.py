"""The report's Plotly figures, one drawing function per section.

Optuna's own plots are used where they exist; the learning curves (marked by trial state),
the best trial's train-vs-validation curves and the per-worker timeline are drawn here because
Optuna has no such view. A drawing function raises `SkipSection` with a one-line reason when
the study cannot give that plot (too few trials, a single parameter, missing attributes).
"""

from __future__ import annotations

import datetime
import html
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import optuna
import optuna.visualization as ov
import plotly.graph_objects as go
from optuna.exceptions import ExperimentalWarning
from optuna.importance import (
    BaseImportanceEvaluator,
    FanovaImportanceEvaluator,
    PedAnovaImportanceEvaluator,
)
from optuna.trial import FrozenTrial, TrialState
from plotly.subplots import make_subplots

from tuner import attrs
from tuner.report.data import UNKNOWN_WORKER, format_seconds, history, worker


class SkipSection(Exception):
    """This study cannot give the section's plot; the message says why, in one line."""


@dataclass(frozen=True)
class Figures:
    """What a section shows: its figures, plus notes on anything that went partly wrong."""

    figures: tuple[go.Figure, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class StateStyle:
    label: str
    color: str
    dash: str


STATE_STYLES: dict[TrialState, StateStyle] = {
    TrialState.COMPLETE: StateStyle("complete", "#4c78a8", "solid"),
    TrialState.PRUNED: StateStyle("pruned", "#e45756", "dash"),
    TrialState.FAIL: StateStyle("failed", "#9d9d9d", "dot"),
    TrialState.RUNNING: StateStyle("running", "#54a24b", "solid"),
}

# Seeded, so the same study always gives the same report.
IMPORTANCE_EVALUATORS: dict[str, Callable[[], BaseImportanceEvaluator]] = {
    "fANOVA": lambda: FanovaImportanceEvaluator(seed=0),
    "PED-ANOVA": PedAnovaImportanceEvaluator,
}


def complete_trials(study: optuna.Study, at_least: int) -> list[FrozenTrial]:
    """The complete trials; raises SkipSection when there are fewer than `at_least`."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
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


def optimization_history(study: optuna.Study, target_name: str) -> Figures:
    complete_trials(study, at_least=1)
    return Figures((ov.plot_optimization_history(study, target_name=target_name),))


def param_importances(study: optuna.Study, target_name: str) -> Figures:
    if not varying_params(complete_trials(study, at_least=2)):
        raise SkipSection("no parameter took more than one value across the complete trials")
    figures, notes = [], []
    for name, make_evaluator in IMPORTANCE_EVALUATORS.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                figure = ov.plot_param_importances(
                    study, evaluator=make_evaluator(), target_name=target_name
                )
            except (RuntimeError, ValueError) as exc:  # e.g. fANOVA on a constant objective
                notes.append(f"{name} could not rank the parameters: {exc}")
                continue
        notes += [
            f"{name}: {warning.message}"
            for warning in caught
            if not issubclass(warning.category, ExperimentalWarning | DeprecationWarning)
        ]
        figures.append(figure.update_layout(title=name))
    if not figures:
        raise SkipSection(" ".join(notes))
    return Figures(tuple(figures), tuple(notes))


def parallel_coordinate(study: optuna.Study, target_name: str) -> Figures:
    complete_trials(study, at_least=2)
    return Figures((ov.plot_parallel_coordinate(study, target_name=target_name),))


def slices(study: optuna.Study, target_name: str) -> Figures:
    complete_trials(study, at_least=2)
    return Figures((ov.plot_slice(study, target_name=target_name),))


def contour(study: optuna.Study, target_name: str) -> Figures:
    candidates = varying_params(complete_trials(study, at_least=2))
    if len(candidates) < 2:
        raise SkipSection(
            "needs two parameters that were sampled in every complete trial and took more "
            f"than one value; this study has {len(candidates)}"
        )
    ranked, note = _rank_by_importance(study, candidates)
    figure = ov.plot_contour(study, params=ranked[:2], target_name=target_name)
    return Figures((figure,), (note,) if note else ())


def _rank_by_importance(study: optuna.Study, params: list[str]) -> tuple[list[str], str]:
    """`params` in the order of the fANOVA importance plot, or as given (with a note)."""
    try:
        importances = optuna.importance.get_param_importances(
            study, evaluator=IMPORTANCE_EVALUATORS["fANOVA"]()
        )
    except (RuntimeError, ValueError) as exc:
        return params, f"fANOVA could not rank the parameters ({exc}); showing the first two."
    return sorted(params, key=lambda name: -importances.get(name, 0.0)), ""


def learning_curves(study: optuna.Study, target_name: str) -> Figures:
    """Intermediate values of every trial, one trace per state, pruned ones dashed red."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.intermediate_values]
    if not trials:
        raise SkipSection("no trial reported intermediate values (one per epoch)")
    figure = go.Figure()
    for state, style in STATE_STYLES.items():
        curves = [trial for trial in trials if trial.state == state]
        if curves:
            figure.add_trace(_curves_trace(curves, style))
    pruned = [trial for trial in trials if trial.state == TrialState.PRUNED]
    if pruned:
        last = [max(trial.intermediate_values.items()) for trial in pruned]
        figure.add_scatter(
            x=[step for step, _ in last],
            y=[value for _, value in last],
            text=[_hover_label(trial) for trial in pruned],
            mode="markers",
            marker={"symbol": "x", "size": 8, "color": STATE_STYLES[TrialState.PRUNED].color},
            name="pruned here",
            hovertemplate="%{text}<br>last epoch %{x}: %{y:.4g}<extra>pruned</extra>",
        )
    if any(trial.state == TrialState.COMPLETE for trial in trials):
        best = study.best_trial
        if best.intermediate_values:
            figure.add_trace(_curves_trace([best], StateStyle("best", "#1b1b1b", "solid"), 3))
    return Figures(
        (
            figure.update_layout(
                title="Learning curves",
                xaxis_title="epoch",
                yaxis_title=target_name,
                hovermode="closest",
            ),
        )
    )


def _curves_trace(trials: list[FrozenTrial], style: StateStyle, width: float = 1.5) -> go.Scatter:
    """All trials' curves in one trace, separated by gaps: one legend entry, fast to draw."""
    xs: list[int | None] = []
    ys: list[float | None] = []
    texts: list[str] = []
    for trial in trials:
        steps = sorted(trial.intermediate_values.items())
        xs += [step for step, _ in steps] + [None]
        ys += [value for _, value in steps] + [None]
        texts += [_hover_label(trial)] * (len(steps) + 1)
    name = style.label if style.label != "best" else f"best (trial {trials[0].number})"
    return go.Scatter(
        x=xs,
        y=ys,
        text=texts,
        mode="lines",
        name=name,
        line={"color": style.color, "dash": style.dash, "width": width},
        opacity=1.0 if style.label in ("best", "pruned") else 0.7,
        hovertemplate=f"%{{text}}<br>epoch %{{x}}: %{{y:.4g}}<extra>{style.label}</extra>",
    )


def _hover_label(trial: FrozenTrial) -> str:
    """The hover text of a trial: its number, and why it stopped early if recorded."""
    reason = trial.user_attrs.get(attrs.STOP_REASON)
    # Plotly reads a few HTML tags in hover text, so the free-text reason is escaped.
    return f"trial {trial.number}" + (f"<br>{html.escape(str(reason))}" if reason else "")


def best_trial_curves(study: optuna.Study, target_name: str) -> Figures:
    """Loss and accuracy per epoch of the best trial, training next to validation."""
    complete_trials(study, at_least=1)
    best = study.best_trial
    rows = history(best)
    if not rows:
        raise SkipSection(f"the best trial (#{best.number}) has no per-epoch history attribute")
    figure = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    epochs = [row["epoch"] for row in rows]
    for col, quantity in enumerate(("loss", "accuracy"), start=1):
        for split, color in (("train", "#4c78a8"), ("val", "#f58518")):
            figure.add_scatter(
                x=epochs,
                y=[row.get(f"{split}_{quantity}") for row in rows],
                mode="lines+markers",
                name="training" if split == "train" else "validation",
                legendgroup=split,
                showlegend=col == 1,
                line={"color": color, "dash": "solid" if split == "train" else "dash"},
                row=1,
                col=col,
            )
        figure.update_xaxes(title_text="epoch", row=1, col=col)
    best_epoch = best.user_attrs.get(attrs.BEST_EPOCH)
    if isinstance(best_epoch, int | float):
        figure.add_vline(x=best_epoch, line={"dash": "dot", "color": "#888"})
    return Figures((figure.update_layout(title=f"Trial #{best.number}: training vs validation"),))


def worker_timeline(study: optuna.Study, target_name: str) -> Figures:
    """One row per worker, one bar per trial from its start to its end, coloured by state."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start is not None]
    if not trials:
        raise SkipSection("no trial has started")
    now = datetime.datetime.now()
    figure = go.Figure()
    for state, style in STATE_STYLES.items():
        bars = [trial for trial in trials if trial.state == state]
        if not bars:
            continue
        seconds = [
            max(((trial.datetime_complete or now) - trial.datetime_start).total_seconds(), 1.0)
            for trial in bars
        ]
        figure.add_bar(
            orientation="h",
            y=[worker(trial) for trial in bars],
            base=[trial.datetime_start.isoformat() for trial in bars],
            x=[s * 1000 for s in seconds],  # a date axis measures bar lengths in milliseconds
            text=[f"#{trial.number}" for trial in bars],
            customdata=[format_seconds(s) for s in seconds],
            textposition="inside",
            textangle=0,
            insidetextanchor="middle",
            name=style.label,
            marker={"color": style.color, "line": {"color": "white", "width": 1}},
            hovertemplate="trial %{text} on %{y}<br>ran %{customdata}<extra></extra>",
        )
    workers = {worker(trial) for trial in trials}
    figure.update_layout(
        title="Trials per worker",
        barmode="overlay",
        uniformtext={"mode": "hide", "minsize": 9},
        height=max(260, 140 + 45 * len(workers)),
        xaxis={"type": "date", "title": "time"},
        yaxis={"categoryorder": "category descending", "title": ""},
    )
    note = ()
    if UNKNOWN_WORKER in workers:
        note = (f"Trials without a `{attrs.WORKER}` attribute are shown as {UNKNOWN_WORKER}.",)
    return Figures((figure,), note)
