"""What the report says in words and numbers: the study summary and the best-trials table.

Plain data only (no HTML, no Plotly). Trials written by older versions, failed trials and
running trials may lack any user attribute, so every read here has a fallback.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner import attrs
from tuner.spec.budget import format_duration

MISSING = "—"  # shown where a trial has no value for a column
UNKNOWN_WORKER = "(unknown worker)"


@dataclass(frozen=True)
class TrialCounts:
    """How many trials a study has in each state."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed

    @property
    def total(self) -> int:
        return self.finished + self.running + self.waiting


@dataclass(frozen=True)
class StudySummary:
    """The header of the report."""

    name: str
    dataset: str
    metric: str  # user attr `metric`, e.g. "val_accuracy"
    direction: str  # "maximize" or "minimize"
    counts: TrialCounts
    best_value: float | None
    best_trial: int | None
    compute_seconds: float  # summed over finished trials
    wall_seconds: float  # first start to last finish
    workers: int  # the most worker processes that ran trials at the same time
    processes: int  # worker processes that ran trials, one after another or side by side
    study_file: str

    @property
    def metric_label(self) -> str:
        return self.metric.replace("_", " ")


@dataclass(frozen=True)
class Table:
    """Formatted cells, row by row; `keys` identifies each row (the trial number)."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    keys: tuple[int, ...]
    pinned: int = 0  # leading columns that stay in view when the table scrolls sideways


def summarize(study: optuna.Study) -> StudySummary:
    """Counts, best value and time spent, from the trials and the study's user attributes."""
    trials = study.get_trials(deepcopy=False)
    states = [trial.state for trial in trials]
    counts = TrialCounts(
        complete=states.count(TrialState.COMPLETE),
        pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL),
        running=states.count(TrialState.RUNNING),
        waiting=states.count(TrialState.WAITING),
    )
    best = best_trials(study, limit=1)
    finished = [trial for trial in trials if trial.state.is_finished()]
    starts = [trial.datetime_start for trial in trials if trial.datetime_start is not None]
    ends = [trial.datetime_complete for trial in finished if trial.datetime_complete is not None]
    if counts.running:
        ends.append(datetime.datetime.now())
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    return StudySummary(
        name=study.study_name,
        dataset=str(study.user_attrs.get(attrs.STUDY_DATASET, MISSING)),
        metric=str(study.user_attrs.get(attrs.STUDY_METRIC) or _metric_name(study)),
        direction=study.directions[0].name.lower(),
        counts=counts,
        best_value=best[0].values[0] if best else None,
        best_trial=best[0].number if best else None,
        compute_seconds=sum(trial_seconds(trial) or 0.0 for trial in finished),
        wall_seconds=max(wall, 0.0),
        workers=concurrent_workers(trials),
        processes=len({worker(trial) for trial in trials if attrs.WORKER in trial.user_attrs}),
        study_file=str(study.user_attrs.get(attrs.STUDY_FILE, "")),
    )


def concurrent_workers(trials: Iterable[FrozenTrial]) -> int:
    """The most worker processes with a trial running at the same moment.

    Three runs made one after another are three processes but one worker at a time.
    """
    now = datetime.datetime.now()
    events = []
    for trial in trials:
        if attrs.WORKER in trial.user_attrs and trial.datetime_start is not None:
            end = trial.datetime_complete or now
            events += [(trial.datetime_start, 1, worker(trial)), (end, -1, worker(trial))]
    running: Counter[str] = Counter()
    peak = 0
    for _, step, name in sorted(events, key=lambda event: (event[0], event[1])):  # ends first
        running[name] += step
        peak = max(peak, sum(1 for count in running.values() if count > 0))
    return peak


def _metric_name(study: optuna.Study) -> str:
    """The name `set_metric_names` gave the value, for studies without tuner's attribute."""
    names = study.metric_names
    return names[0] if names else "objective value"


def best_trials(study: optuna.Study, limit: int) -> list[FrozenTrial]:
    """The `limit` best complete trials, best first (ties: earlier trial first).

    For several objectives: the Pareto-optimal trials, ranked by the first objective.
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(study.directions) > 1:  # several objectives: the Pareto front, by the first one
        complete = study.best_trials
    sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return sorted(complete, key=lambda trial: (sign * trial.values[0], trial.number))[:limit]


def trial_seconds(trial: FrozenTrial) -> float | None:
    """Training seconds from the `train_seconds` attribute, else the trial's wall duration."""
    seconds = trial.user_attrs.get(attrs.TRAIN_SECONDS)
    if isinstance(seconds, int | float):
        return float(seconds)
    if trial.duration is not None:
        return trial.duration.total_seconds()
    return None


def worker(trial: FrozenTrial) -> str:
    """The `worker` attribute ("hostname:pid"), or a placeholder when it is missing."""
    return str(trial.user_attrs.get(attrs.WORKER, UNKNOWN_WORKER))


def trial_source(trial: FrozenTrial) -> str:
    """Where the trial's configuration came from: its `source` attribute ("portfolio:2",
    "enqueue", ...), "copied: ..." for a trial `--from` copied in, else the sampler."""
    if attrs.SOURCE in trial.user_attrs:
        return str(trial.user_attrs[attrs.SOURCE])
    if attrs.WARM_START in trial.user_attrs:
        return f"copied: {trial.user_attrs[attrs.WARM_START]}"
    return attrs.SOURCE_SAMPLER


def history(trial: FrozenTrial) -> list[dict[str, Any]]:
    """The per-epoch `history` attribute, keeping only well-formed rows."""
    rows = trial.user_attrs.get(attrs.HISTORY)
    if not isinstance(rows, list):
        return []
    return [row for row in rows if isinstance(row, dict) and "epoch" in row]


def best_table(study: optuna.Study, metric: str, limit: int = 10) -> Table:
    """The best complete trials with their sampled parameters and training facts.

    `filters_1`, `filters_2`, ... are shown as one `filters` list (taken from the `config`
    attribute, which also covers a fixed `filters` value).
    """
    trials = best_trials(study, limit)
    params = _ordered_unique(
        name for trial in trials for name in trial.params if not name.startswith("filters_")
    )
    filters = [_filters(trial) for trial in trials]
    show_filters = any(value is not None for value in filters)
    show_val_accuracy = metric != "val_accuracy"
    # Only studies that queued configurations have any other source than the sampler.
    show_source = any(trial_source(trial) != attrs.SOURCE_SAMPLER for trial in trials)

    headers = ["trial", metric.replace("_", " ")]
    if show_val_accuracy:
        headers.append("val accuracy")
    if show_source:
        headers.append("source")
    headers += params
    if show_filters:
        headers.append("filters")
    headers += ["epochs", "best epoch", "parameters", "train time"]
    # Train times compare only within one precision: "auto" picks bf16 for some models only.
    show_precision = any(attrs.PRECISION in trial.user_attrs for trial in trials)
    if show_precision:
        headers.append("precision")

    rows = []
    for trial, trial_filters in zip(trials, filters, strict=True):
        row = [f"#{trial.number}", format_metric(trial.value)]
        if show_val_accuracy:
            row.append(format_metric(_best_epoch_row(trial).get("val_accuracy")))
        if show_source:
            row.append(trial_source(trial))
        row += [format_value(trial.params.get(name)) for name in params]
        if show_filters:
            row.append(format_value(trial_filters))
        user = trial.user_attrs
        row += [
            format_value(user.get(attrs.EPOCHS_RUN)),
            format_value(user.get(attrs.BEST_EPOCH)),
            format_count(user.get(attrs.PARAM_COUNT)),
            format_seconds(trial_seconds(trial)),
        ]
        if show_precision:
            row.append(format_value(user.get(attrs.PRECISION)))
        rows.append(tuple(row))
    # Trial and value stay in view: a wide space scrolls the parameters sideways.
    return Table(tuple(headers), tuple(rows), tuple(t.number for t in trials), pinned=2)


def _ordered_unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _filters(trial: FrozenTrial) -> list[Any] | None:
    config = trial.user_attrs.get(attrs.CONFIG)
    if isinstance(config, dict) and isinstance(config.get("filters"), list):
        return config["filters"]
    sampled = sorted(
        (int(name.removeprefix("filters_")), value)
        for name, value in trial.params.items()
        if name.startswith("filters_") and name.removeprefix("filters_").isdigit()
    )
    return [value for _, value in sampled] or None


def _best_epoch_row(trial: FrozenTrial) -> dict[str, Any]:
    best_epoch = trial.user_attrs.get(attrs.BEST_EPOCH)
    return next((row for row in history(trial) if row["epoch"] == best_epoch), {})


def format_value(value: Any) -> str:
    """Short text for a parameter or metric value (floats to 4 significant digits)."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    return str(value)


def format_metric(value: float | None) -> str:
    """A metric value as the run's lines show it: 1.0 -> "1.0000", not "1"; counts such as
    params or flops (1000 and more) as whole numbers, 1234567.0 -> "1,234,567"."""
    if value is None:
        return MISSING
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4f}"


def format_count(value: Any) -> str:
    """1234567 -> "1.23M", 45300 -> "45.3k"."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return MISSING
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:g}"


def format_seconds(seconds: float | None) -> str:
    """format_duration, with MISSING for a time that is not known."""
    return MISSING if seconds is None else format_duration(seconds)
