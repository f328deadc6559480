"""The trials-per-worker timeline: collected as plain data (`timeline_data`), drawn with Plotly.

Optuna's timeline has one row per trial; with several workers the question is how busy each
worker was, so here each row is a worker and each bar a trial from its start to its end.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import optuna
import plotly.graph_objects as go
from optuna.trial import TrialState

from tuner import attrs
from tuner.report.data import UNKNOWN_WORKER, format_seconds, worker
from tuner.report.style import STATE_STYLES
from tuner.report.trials import SkipSection


@dataclass(frozen=True)
class Bar:
    """One trial on one worker."""

    worker: str
    trial: int
    state: TrialState
    start: datetime.datetime
    seconds: float  # until it ended, or until now while running (at least 1 s, to be visible)


@dataclass(frozen=True)
class TimelineData:
    bars: tuple[Bar, ...]

    @property
    def workers(self) -> tuple[str, ...]:
        return tuple(sorted({bar.worker for bar in self.bars}))

    @property
    def notes(self) -> tuple[str, ...]:
        if UNKNOWN_WORKER not in self.workers:
            return ()
        return (f"Trials without a `{attrs.WORKER}` attribute are shown as {UNKNOWN_WORKER}.",)


def timeline_data(study: optuna.Study) -> TimelineData:
    """A bar per started trial, on the row of the worker that ran it."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start is not None]
    if not trials:
        raise SkipSection("no trial has started")
    now = datetime.datetime.now()
    return TimelineData(
        tuple(
            Bar(
                worker=worker(trial),
                trial=trial.number,
                state=trial.state,
                start=trial.datetime_start,  # type: ignore[arg-type]
                seconds=max(
                    ((trial.datetime_complete or now) - trial.datetime_start).total_seconds(),
                    1.0,
                ),
            )
            for trial in trials
        )
    )


def draw_timeline(data: TimelineData) -> go.Figure:
    """One row per worker, one bar per trial, coloured by state."""
    figure = go.Figure()
    for state, style in STATE_STYLES.items():
        bars = [bar for bar in data.bars if bar.state == state]
        if not bars:
            continue
        figure.add_bar(
            orientation="h",
            y=[bar.worker for bar in bars],
            base=[bar.start.isoformat() for bar in bars],
            x=[bar.seconds * 1000 for bar in bars],  # a date axis measures lengths in ms
            text=[f"#{bar.trial}" for bar in bars],
            customdata=[format_seconds(bar.seconds) for bar in bars],
            textposition="inside",
            textangle=0,
            insidetextanchor="middle",
            name=style.label,
            marker={"color": style.color, "line": {"color": "white", "width": 1}},
            hovertemplate="trial %{text} on %{y}<br>ran %{customdata}<extra></extra>",
        )
    return figure.update_layout(
        title="Trials per worker",
        barmode="overlay",
        uniformtext={"mode": "hide", "minsize": 9},
        height=max(260, 140 + 45 * len(data.workers)),
        xaxis={"type": "date", "title": "time"},
        yaxis={"categoryorder": "category descending", "title": ""},
    )
