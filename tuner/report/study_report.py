"""`tuner report`: one self-contained HTML page that explains a study.

The page has a header (counts, best value, time spent), the best configurations and one section
per plot. Each plot is collected as plain data first, then drawn (see `params`, `importance`,
`history`, `timeline`). A plot that a study cannot give (too few trials, one parameter, missing
attributes) becomes a one-line note instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go

from tuner.errors import TunerError
from tuner.files import write_text_atomic
from tuner.report import history, importance, params, pareto, timeline
from tuner.report.data import (
    StudySummary,
    TrialCounts,
    best_table,
    format_metric,
    format_seconds,
    summarize,
)
from tuner.report.page import Card, Page, Section, generated_line, render
from tuner.report.robust import robust_sections
from tuner.report.trials import SkipSection, param_table

logger = logging.getLogger(__name__)

TOP_TRIALS = 10


@dataclass(frozen=True)
class Drawn:
    """What a plot section shows: its figures, and notes on what to make of them."""

    figures: tuple[go.Figure, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlotSection:
    """A section of the page: its words, how to collect its data, and how to draw that."""

    anchor: str
    title: str
    how_to_read: str
    collect: Callable[[], Any]  # raises SkipSection when the study cannot give this plot
    draw: Callable[[Any, str], Drawn]  # (collected data, the metric's label)


HOW_TO_READ = {
    "history": "Each dot is a complete trial's objective value, each x a pruned trial at the "
    "last value it reported before it was stopped; the line is the best value so far.",
    "importance": "How much each parameter explains the objective, by two methods: fANOVA "
    "(variance explained by a random forest) and PED-ANOVA (how the top 10% of trials differ "
    "from the rest). Bars use all complete trials; whiskers show the middle 80% over "
    f"{importance.RESAMPLES} bootstrap resamples of the trials. Both charts list the parameters "
    "in the same order, by their average importance. Trust what both rank high, with short "
    "whiskers.",
    "parallel": "Each line is a complete trial passing through its parameter values; the colour "
    "is its objective value. Look for the ranges that the best-coloured lines share; drag along "
    "an axis to keep only the lines that pass there. — marks a parameter a trial did not use.",
    "slice": "The objective against each parameter that varied, one small plot each; each dot is "
    "a complete trial, coloured by trial number (darker = later). Categorical parameters are "
    "categories, in the order of their choices.",
    "contour": "The objective interpolated over the two parameters that fANOVA and PED-ANOVA rank "
    "highest on average; dots are the trials that were run.",
    "learning-curves": "Each line is a trial's reported value per epoch: blue = complete, dashed "
    "red = pruned (an x where it stopped), dotted grey = failed, green = running, black = best "
    "trial.",
    "best-trial": "Loss and accuracy per epoch of the best trial, solid = training, dashed = "
    "validation. Training numbers are averaged over each epoch in training mode, with dropout, "
    "augmentation and label smoothing on; validation numbers are measured after the epoch "
    "without them. So training loss above validation loss, or validation accuracy above "
    "training accuracy, is expected, not a bug. Validation loss rising while training loss "
    "falls is overfitting; the dotted line marks the epoch whose weights were kept.",
    "pareto": "Each dot is a complete trial; the black line joins the Pareto-optimal ones, "
    "which no other trial beats on every objective at once. The table lists them, best first "
    "objective first, with what was measured on the built model before training.",
    "timeline": "Each row is a worker process, each bar a trial from start to end, coloured by "
    "state; gaps between bars are idle time.",
}


def plot_sections(study: optuna.Study) -> tuple[PlotSection, ...]:
    """The report's plot sections, in page order."""
    # Computed once: the importance section draws it, the contour picks its pair from it.
    importances = _attempt(lambda: importance.importance_data(study))

    def contour() -> params.ContourData:
        candidates = params.contour_candidates(study)
        ranked = importances if isinstance(importances, importance.ImportanceData) else None
        (x_name, y_name), note = importance.contour_pair(ranked, candidates)
        return replace(params.contour_data(study, x_name, y_name), note=note)

    def returned(value: Any) -> Any:
        if isinstance(value, Exception):
            raise value
        return value

    return (
        PlotSection(
            "history",
            "Optimisation history",
            HOW_TO_READ["history"],
            lambda: history.history_data(study),
            lambda data, target: Drawn((history.draw_history(data, target),), data.notes),
        ),
        PlotSection(
            "importance",
            "Hyperparameter importance",
            HOW_TO_READ["importance"],
            lambda: returned(importances),
            lambda data, target: Drawn(importance.draw_importances(data, target), data.notes),
        ),
        PlotSection(
            "parallel",
            "Parallel coordinates",
            HOW_TO_READ["parallel"],
            lambda: params.parallel_data(param_table(study)),
            lambda data, target: Drawn((params.draw_parallel(data, target),)),
        ),
        PlotSection(
            "slice",
            "Slice plots",
            HOW_TO_READ["slice"],
            lambda: param_table(study),
            lambda data, target: Drawn((params.draw_slices(data, target),)),
        ),
        PlotSection(
            "contour",
            "Contour of the two most important parameters",
            HOW_TO_READ["contour"],
            contour,
            lambda data, target: Drawn((params.draw_contour(data, target),), data.notes),
        ),
        PlotSection(
            "learning-curves",
            "Learning curves",
            HOW_TO_READ["learning-curves"],
            lambda: history.curves_data(study),
            lambda data, target: Drawn((history.draw_learning_curves(data, target),)),
        ),
        best_trial_section(study),
        timeline_section(study),
    )


def timeline_section(study: optuna.Study) -> PlotSection:
    """Trials per worker over time."""
    return PlotSection(
        "timeline",
        "Trials per worker",
        HOW_TO_READ["timeline"],
        lambda: timeline.timeline_data(study),
        lambda data, target: Drawn((timeline.draw_timeline(data),), data.notes),
    )


def best_trial_section(study: optuna.Study) -> PlotSection:
    """The best trial's training vs validation curves (shown from the first complete trial)."""
    return PlotSection(
        "best-trial",
        "Best trial: training vs validation",
        HOW_TO_READ["best-trial"],
        lambda: history.best_curves_data(study),
        lambda data, target: Drawn((history.draw_best_curves(data),), data.notes),
    )


def build_report(study: optuna.Study) -> str:
    """The report of `study` as one self-contained HTML page.

    A multi-objective study gets the Pareto front and its table instead of the figures that
    rank trials by one value (see `multi_objective_sections`).
    """
    summary = summarize(study)
    counts = summary.counts
    if len(study.directions) > 1:
        sections = multi_objective_sections(study, summary) if counts.finished else []
    else:
        sections = _single_objective_sections(study, summary)
    return render(
        Page(
            title=summary.name,
            subtitle=f"Optuna study report · {summary.dataset} · {_objectives(study, summary)}",
            cards=summary_cards(summary),
            banner=_banner(counts),
            nav=True,
            sections=tuple(sections),
            footer=generated_line(),
            browser_title=f"{summary.name} · tuner report",
        )
    )


def _single_objective_sections(study: optuna.Study, summary: StudySummary) -> list[Section]:
    counts = summary.counts
    sections = (
        [_best_configurations(study, summary), *robust_sections(study)] if counts.finished else []
    )
    if counts.finished >= 2:
        sections += [_plot_section(spec, summary) for spec in plot_sections(study)]
    elif counts.complete:
        sections.append(_plot_section(best_trial_section(study), summary))
    return sections


def _objectives(study: optuna.Study, summary: StudySummary) -> str:
    if len(study.directions) == 1:
        return f"{summary.metric} ({summary.direction})"
    pairs = zip(study.metric_names or [], study.directions, strict=False)
    return ", ".join(f"{name} ({direction.name.lower()})" for name, direction in pairs)


def multi_objective_sections(study: optuna.Study, summary: StudySummary) -> list[Section]:
    """The Pareto front and its trials, the timeline, and what does not apply, and why."""
    collected = _attempt(lambda: pareto.pareto_data(study))
    how = HOW_TO_READ["pareto"]
    if isinstance(collected, Exception):
        front = Section("pareto", "Pareto front", how, notes=(f"Not shown: {collected}.",))
    else:
        front = Section(
            "pareto",
            "Pareto front",
            how,
            figures=(pareto.draw_pareto(collected),),
            table=pareto.pareto_table(collected),
            highlight=summary.best_trial,
            notes=collected.notes,
        )
    skipped = Section(
        "single-objective",
        "Not shown for several objectives",
        "Why some parts of the single-objective report are missing here.",
        notes=(
            "Pruning is off: Optuna cannot prune multi-objective studies (trials still stop "
            "early when val_loss stops improving).",
            "Optimisation history, parameter importance, parallel coordinates, slices, contour, "
            "learning curves and the best trial's curves rank trials by one value; they are "
            "skipped. `tuner best` picks the Pareto trial with the best first objective; "
            "`tuner best --pareto` lists them all.",
        ),
    )
    sections = [front, skipped]
    if summary.counts.finished >= 2:
        sections.append(_plot_section(timeline_section(study), summary))
    return sections


def write_report(study: optuna.Study, out_path: Path) -> Path:
    """Write `build_report(study)` to `out_path` atomically (temp file, then rename).

    Creates missing parent folders. Raises TunerError when the file cannot be written.
    """
    out_path = Path(out_path)
    text = build_report(study)
    try:
        write_text_atomic(out_path, text)
    except OSError as exc:
        raise TunerError(f"{out_path}: cannot write the report: {exc.strerror or exc}") from None
    logger.debug("wrote report of study %r to %s", study.study_name, out_path)
    return out_path


def summary_cards(summary: StudySummary) -> tuple[Card, ...]:
    """Best value, trials by state, dataset, metric, compute time and wall clock."""
    counts = summary.counts
    states = [
        (counts.complete, "complete"),
        (counts.pruned, "pruned"),
        (counts.failed, "failed"),
        (counts.running, "running"),
        *([(counts.waiting, "waiting")] if counts.waiting else []),
    ]
    better = "higher" if summary.direction == "maximize" else "lower"
    if summary.best_value is not None:
        best = Card(
            "best " + summary.metric_label,
            format_metric(summary.best_value),
            (f"trial #{summary.best_trial}",),
        )
    else:
        best = Card("best " + summary.metric_label, "—", ("no complete trial yet",))
    workers = f"{summary.workers} worker{'s' if summary.workers != 1 else ''}"
    if summary.processes > summary.workers:  # runs one after another are not parallel workers
        workers = f"{summary.processes} worker processes, at most {summary.workers} at once"
    return (
        best,
        Card("trials", str(counts.total), tuple(f"{n} {label}" for n, label in states)),
        Card("dataset", summary.dataset, (summary.study_file,) if summary.study_file else ()),
        Card("metric", summary.metric, (f"{summary.direction} ({better} is better)",)),
        Card(
            "compute time", format_seconds(summary.compute_seconds), ("sum over finished trials",)
        ),
        Card("wall clock", format_seconds(summary.wall_seconds), (workers,)),
    )


def _attempt(collect: Callable[[], Any]) -> Any:
    """What `collect` returns, or the exception it raised (for the section to report)."""
    try:
        return collect()
    except (SkipSection, RuntimeError, ValueError) as exc:
        return exc


def _banner(counts: TrialCounts) -> str:
    running = f" ({counts.running} running)" if counts.running else ""
    later = "The plots appear once at least two trials have finished; build the report again then."
    if counts.finished == 0:
        return f"No trial has finished yet{running}. {later}"
    if counts.finished == 1:
        return f"Only one trial has finished{running}, so there is nothing to compare yet. {later}"
    if counts.complete == 0:
        return (
            "No trial has completed: every finished trial was pruned or failed, so there is no "
            "best value yet. Plots that need complete trials are skipped."
        )
    return ""


def _best_configurations(study: optuna.Study, summary: StudySummary) -> Section:
    anchor, title = "best", "Best configurations"
    how = (
        f"Up to {TOP_TRIALS} best complete trials, best first: sampled parameters, conv filters "
        "per block, epochs trained, model size and training time."
    )
    table = best_table(study, summary.metric, limit=TOP_TRIALS)
    if not table.rows:
        return Section(anchor, title, how, notes=("No trial has completed yet.",))
    return Section(anchor, title, how, table=table, highlight=summary.best_trial)


def _plot_section(spec: PlotSection, summary: StudySummary) -> Section:
    try:
        drawn = spec.draw(spec.collect(), summary.metric_label)
    except SkipSection as exc:
        logger.debug("report: skipping %s: %s", spec.title, exc)
        return Section(spec.anchor, spec.title, spec.how_to_read, notes=(f"Not shown: {exc}.",))
    except (RuntimeError, ValueError) as exc:  # Optuna or Plotly refusing an unusual study
        logger.debug("report: %s failed", spec.title, exc_info=True)
        note = f"Not shown: this plot could not be drawn ({exc})."
        return Section(spec.anchor, spec.title, spec.how_to_read, notes=(note,))
    return Section(
        spec.anchor, spec.title, spec.how_to_read, figures=drawn.figures, notes=drawn.notes
    )
