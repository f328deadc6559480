"""`tuner report`: one self-contained HTML page that explains a study.

The page has a header (counts, best value, time spent), the best configurations and one section
per plot. plotly.js is embedded once, so the file opens offline. A plot that a study cannot give
(too few trials, one parameter, missing attributes) becomes a one-line note instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna

from tuner.errors import TunerError
from tuner.files import write_text_atomic
from tuner.report import figures
from tuner.report.data import StudySummary, TrialCounts, best_table, summarize
from tuner.report.html import Section, figures_html, render_page, table_html

logger = logging.getLogger(__name__)

TOP_TRIALS = 10


@dataclass(frozen=True)
class PlotSection:
    """A section of the page: its words, and the function that draws its figures."""

    anchor: str
    title: str
    how_to_read: str
    draw: Callable[[optuna.Study, str], figures.Figures]


BEST_TRIAL_CURVES = PlotSection(
    "best-trial",
    "Best trial: training vs validation",
    "Loss and accuracy per epoch of the best trial, solid = training, dashed = validation. "
    "Validation loss rising while training loss falls is overfitting; the dotted line marks "
    "the epoch whose weights were kept.",
    figures.best_trial_curves,
)

PLOT_SECTIONS = (
    PlotSection(
        "history",
        "Optimisation history",
        "Each dot is a complete trial's objective value; the line is the best value so far.",
        figures.optimization_history,
    ),
    PlotSection(
        "importance",
        "Hyperparameter importance",
        "How much each parameter explains the objective, by two methods: fANOVA (variance "
        "explained by a random forest) and PED-ANOVA (how the top 10% of trials differ from "
        "the rest). Trust what both rank high.",
        figures.param_importances,
    ),
    PlotSection(
        "parallel",
        "Parallel coordinates",
        "Each line is a complete trial passing through its parameter values; the colour is "
        "its objective value. Look for the ranges that the best-coloured lines share.",
        figures.parallel_coordinate,
    ),
    PlotSection(
        "slice",
        "Slice plots",
        "The objective against one parameter at a time; each dot is a complete trial, "
        "coloured by trial number (darker = later).",
        figures.slices,
    ),
    PlotSection(
        "contour",
        "Contour of the two most important parameters",
        "The objective interpolated over the two parameters fANOVA ranks highest; dots are "
        "the trials that were run.",
        figures.contour,
    ),
    PlotSection(
        "learning-curves",
        "Learning curves",
        "Each line is a trial's reported value per epoch: blue = complete, dashed red = pruned "
        "(an x where it stopped), dotted grey = failed, green = running, black = best trial.",
        figures.learning_curves,
    ),
    BEST_TRIAL_CURVES,
    PlotSection(
        "timeline",
        "Trials per worker",
        "Each row is a worker process, each bar a trial from start to end, coloured by state; "
        "gaps between bars are idle time.",
        figures.worker_timeline,
    ),
)


def build_report(study: optuna.Study) -> str:
    """The report of `study` as one self-contained HTML page.

    Raises TunerError for multi-objective studies, which tuner does not create.
    """
    if len(study.directions) != 1:
        raise TunerError(
            f"study {study.study_name!r} has {len(study.directions)} objectives; "
            "tuner reports single-objective studies only"
        )
    summary = summarize(study)
    counts = summary.counts
    sections = [_best_configurations(study, summary)] if counts.finished else []
    if counts.finished >= 2:
        sections += [_plot_section(spec, study, summary) for spec in PLOT_SECTIONS]
    elif counts.complete:
        sections.append(_plot_section(BEST_TRIAL_CURVES, study, summary))
    return render_page(summary, _banner(counts), sections)


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
    return Section(anchor, title, how, body=table_html(table, highlight=summary.best_trial))


def _plot_section(spec: PlotSection, study: optuna.Study, summary: StudySummary) -> Section:
    try:
        drawn = spec.draw(study, summary.metric_label)
    except figures.SkipSection as exc:
        logger.debug("report: skipping %s: %s", spec.title, exc)
        return Section(spec.anchor, spec.title, spec.how_to_read, notes=(f"Not shown: {exc}.",))
    except (RuntimeError, ValueError) as exc:  # an Optuna plot refusing an unusual study
        logger.debug("report: %s failed", spec.title, exc_info=True)
        note = f"Not shown: Optuna could not draw this plot ({exc})."
        return Section(spec.anchor, spec.title, spec.how_to_read, notes=(note,))
    body = figures_html(drawn.figures, spec.anchor)
    return Section(spec.anchor, spec.title, spec.how_to_read, body=body, notes=drawn.notes)
