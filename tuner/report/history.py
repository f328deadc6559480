"""Figures over time: the optimisation history, every trial's learning curve, the best trial's
training and validation curves.

Each is collected as plain data (`history_data`, `curves_data`, `best_curves_data`), then drawn
with Plotly (`draw_history`, `draw_learning_curves`, `draw_best_curves`). Optuna's history plot
leaves pruned trials out, and it has no learning-curve or train-vs-validation view, so all
three are drawn here.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import optuna
import plotly.graph_objects as go
from optuna.trial import TrialState
from plotly.subplots import make_subplots

from tuner import attrs
from tuner.report.data import history
from tuner.report.style import BEST_STYLE, STATE_STYLES, StateStyle
from tuner.report.trials import SkipSection, complete_trials

# ---------------------------------------------------------------- optimisation history


@dataclass(frozen=True)
class HistoryData:
    """Complete trials' values, the best so far, and where each pruned trial stopped."""

    complete: tuple[tuple[int, float], ...]  # (trial number, value)
    best_so_far: tuple[tuple[int, float], ...]  # (trial number, best value up to it)
    pruned: tuple[tuple[int, int, float], ...]  # (trial number, last epoch, last reported value)
    failed: int  # failed trials have no value to show

    @property
    def notes(self) -> tuple[str, ...]:
        if not self.failed:
            return ()
        return (f"{self.failed} failed trial{'s' if self.failed > 1 else ''} reported no value.",)


def history_data(study: optuna.Study) -> HistoryData:
    """The history of values, complete trials and pruned ones (at their last reported value)."""
    complete = complete_trials(study, at_least=1)
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    best_so_far: list[tuple[int, float]] = []
    for trial in complete:
        value = float(trial.value)  # type: ignore[arg-type]
        if best_so_far:
            previous = best_so_far[-1][1]
            value = max(previous, value) if maximize else min(previous, value)
        best_so_far.append((trial.number, value))
    pruned = tuple(
        (trial.number, *max(trial.intermediate_values.items()))
        for trial in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
        if trial.intermediate_values
    )
    return HistoryData(
        complete=tuple((t.number, float(t.value)) for t in complete),  # type: ignore[arg-type]
        best_so_far=tuple(best_so_far),
        pruned=pruned,
        failed=len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))),
    )


def draw_history(data: HistoryData, target_name: str) -> go.Figure:
    """Dots for complete trials, crosses for pruned ones, a step line for the best so far."""
    complete, pruned = STATE_STYLES[TrialState.COMPLETE], STATE_STYLES[TrialState.PRUNED]
    figure = go.Figure()
    figure.add_scatter(
        x=[number for number, _ in data.complete],
        y=[value for _, value in data.complete],
        mode="markers",
        name="complete",
        marker={"color": complete.color, "size": 8},
        hovertemplate="trial %{x}: %{y:.4g}<extra>complete</extra>",
    )
    if data.pruned:
        figure.add_scatter(
            x=[number for number, _, _ in data.pruned],
            y=[value for _, _, value in data.pruned],
            customdata=[epoch for _, epoch, _ in data.pruned],
            mode="markers",
            name="pruned (last reported value)",
            marker={"color": pruned.color, "symbol": "x", "size": 7, "opacity": 0.75},
            hovertemplate="trial %{x}: pruned after epoch %{customdata}, at %{y:.4g}"
            "<extra>pruned</extra>",
        )
    figure.add_scatter(
        x=[number for number, _ in data.best_so_far],
        y=[value for _, value in data.best_so_far],
        mode="lines",
        name="best so far",
        line={"color": BEST_STYLE.color, "shape": "hv", "width": 2},
        hovertemplate="best after trial %{x}: %{y:.4g}<extra></extra>",
    )
    return figure.update_layout(
        title="Optimisation history",
        xaxis={"title": {"text": "trial"}, "rangemode": "tozero"},
        yaxis={"title": {"text": target_name}},
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
        hovermode="closest",
    )


# ---------------------------------------------------------------- learning curves


@dataclass(frozen=True)
class Curve:
    """One trial's reported value per epoch."""

    number: int
    state: TrialState
    steps: tuple[int, ...]
    values: tuple[float, ...]
    stop_reason: str | None = None


@dataclass(frozen=True)
class CurvesData:
    curves: tuple[Curve, ...]
    best: Curve | None  # the best complete trial's curve


def curves_data(study: optuna.Study) -> CurvesData:
    """Every trial's intermediate values (one per epoch), in trial order."""
    curves = []
    for trial in study.get_trials(deepcopy=False):
        if not trial.intermediate_values:
            continue
        steps = sorted(trial.intermediate_values.items())
        reason = trial.user_attrs.get(attrs.STOP_REASON)
        curves.append(
            Curve(
                trial.number,
                trial.state,
                tuple(step for step, _ in steps),
                tuple(value for _, value in steps),
                None if reason is None else str(reason),
            )
        )
    if not curves:
        raise SkipSection("no trial reported intermediate values (one per epoch)")
    best = None
    if any(curve.state == TrialState.COMPLETE for curve in curves):
        best_number = study.best_trial.number
        best = next((curve for curve in curves if curve.number == best_number), None)
    return CurvesData(tuple(curves), best)


def draw_learning_curves(data: CurvesData, target_name: str) -> go.Figure:
    """One trace per state (pruned ones dashed red, an x where each stopped), the best in black."""
    figure = go.Figure()
    for state, style in STATE_STYLES.items():
        curves = [curve for curve in data.curves if curve.state == state]
        if curves:
            figure.add_trace(_curves_trace(curves, style))
    pruned = [curve for curve in data.curves if curve.state == TrialState.PRUNED]
    if pruned:
        figure.add_scatter(
            x=[curve.steps[-1] for curve in pruned],
            y=[curve.values[-1] for curve in pruned],
            text=[_hover_label(curve) for curve in pruned],
            mode="markers",
            marker={"symbol": "x", "size": 8, "color": STATE_STYLES[TrialState.PRUNED].color},
            name="pruned here",
            hovertemplate="%{text}<br>last epoch %{x}: %{y:.4g}<extra>pruned</extra>",
        )
    if data.best is not None:
        figure.add_trace(_curves_trace([data.best], BEST_STYLE, 3))
    return figure.update_layout(
        title="Learning curves",
        xaxis_title="epoch",
        yaxis_title=target_name,
        hovermode="closest",
    )


def _curves_trace(curves: list[Curve], style: StateStyle, width: float = 1.5) -> go.Scatter:
    """All curves in one trace, separated by gaps: one legend entry, fast to draw."""
    xs: list[int | None] = []
    ys: list[float | None] = []
    texts: list[str] = []
    for curve in curves:
        xs += [*curve.steps, None]
        ys += [*curve.values, None]
        texts += [_hover_label(curve)] * (len(curve.steps) + 1)
    name = style.label if style is not BEST_STYLE else f"best (trial {curves[0].number})"
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


def _hover_label(curve: Curve) -> str:
    """The hover text of a trial: its number, and why it stopped early if recorded."""
    # Plotly reads a few HTML tags in hover text, so the free-text reason is escaped.
    reason = f"<br>{html.escape(curve.stop_reason)}" if curve.stop_reason else ""
    return f"trial {curve.number}{reason}"


# ---------------------------------------------------------------- best trial: train vs val


@dataclass(frozen=True)
class BestCurves:
    """The best trial's per-epoch training and validation numbers."""

    trial: int
    epochs: tuple[int, ...]
    train_loss: tuple[float | None, ...]
    val_loss: tuple[float | None, ...]
    train_accuracy: tuple[float | None, ...]
    val_accuracy: tuple[float | None, ...]
    best_epoch: int | None
    regularisers: tuple[str, ...]  # what made training-mode numbers worse, e.g. "dropout 0.3"

    @property
    def training_looks_worse(self) -> bool:
        """Training loss above validation loss at the kept epoch (or at the last one)."""
        index = self.epochs.index(self.best_epoch) if self.best_epoch in self.epochs else -1
        train, val = self.train_loss[index], self.val_loss[index]
        return train is not None and val is not None and train > val

    @property
    def notes(self) -> tuple[str, ...]:
        if not self.training_looks_worse:
            return ()
        used = f" (this trial: {', '.join(self.regularisers)})" if self.regularisers else ""
        return (
            "Training loss above validation loss is expected here, not a bug: training numbers "
            f"are averaged over each epoch in training mode{used} while the weights still "
            "change; validation numbers come after the epoch, without any of it.",
        )


def best_curves_data(study: optuna.Study) -> BestCurves:
    """The best complete trial's `history` attribute, and the regularisers it trained with."""
    complete_trials(study, at_least=1)
    best = study.best_trial
    rows = history(best)
    if not rows:
        raise SkipSection(f"the best trial (#{best.number}) has no per-epoch history attribute")
    best_epoch = best.user_attrs.get(attrs.BEST_EPOCH)

    def column(key: str) -> tuple[float | None, ...]:
        return tuple(row.get(key) for row in rows)

    return BestCurves(
        trial=best.number,
        epochs=tuple(row["epoch"] for row in rows),
        train_loss=column("train_loss"),
        val_loss=column("val_loss"),
        train_accuracy=column("train_accuracy"),
        val_accuracy=column("val_accuracy"),
        best_epoch=best_epoch if isinstance(best_epoch, int) else None,
        regularisers=regularisers(best.user_attrs.get(attrs.CONFIG)),
    )


def regularisers(config: object) -> tuple[str, ...]:
    """The training-only effects in a trial's `config` attribute that are switched on."""
    if not isinstance(config, dict):
        return ()
    found = []
    for key, label in (("dropout", "dropout"), ("label_smoothing", "label smoothing")):
        value = config.get(key)
        if isinstance(value, int | float) and value > 0:
            found.append(f"{label} {value:.2g}")
    augment = config.get("augment")
    if isinstance(augment, dict):
        used = [
            name.replace("_", " ")
            for name, value in augment.items()
            if not isinstance(value, str) and value
        ]
        if used:
            found.append("augmentation: " + ", ".join(used))
    return tuple(found)


def draw_best_curves(data: BestCurves) -> go.Figure:
    """Loss and accuracy side by side; solid = training (train mode), dashed = validation."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    series = {
        ("train", "loss"): data.train_loss,
        ("val", "loss"): data.val_loss,
        ("train", "accuracy"): data.train_accuracy,
        ("val", "accuracy"): data.val_accuracy,
    }
    for col, quantity in enumerate(("loss", "accuracy"), start=1):
        for split, color in (("train", "#4c78a8"), ("val", "#f58518")):
            figure.add_scatter(
                x=list(data.epochs),
                y=list(series[split, quantity]),
                mode="lines+markers",
                name="training (train mode)" if split == "train" else "validation",
                legendgroup=split,
                showlegend=col == 1,
                line={"color": color, "dash": "solid" if split == "train" else "dash"},
                row=1,
                col=col,
            )
        figure.update_xaxes(title_text="epoch", row=1, col=col)
    if data.best_epoch is not None:
        figure.add_vline(x=data.best_epoch, line={"dash": "dot", "color": "#888"})
    return figure.update_layout(title=f"Trial #{data.trial}: training vs validation")
