"""How much each parameter matters, by fANOVA and PED-ANOVA, and how sure those numbers are.

Both evaluators run on all complete trials, then again on bootstrap resamples of them (fANOVA
with a new forest seed each time); the spread over resamples is drawn as whiskers. A study with
too few trials for its parameters says so. The contour's two parameters are the two that rank
highest on average over both evaluators (`ImportanceData.ranking`), not one evaluator's pick.
"""

from __future__ import annotations

import random
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import optuna
import plotly.graph_objects as go
from optuna.exceptions import ExperimentalWarning
from optuna.importance import (
    BaseImportanceEvaluator,
    FanovaImportanceEvaluator,
    PedAnovaImportanceEvaluator,
)
from optuna.trial import FrozenTrial

from tuner.report.trials import SkipSection, complete_trials, varying_params

# Seeded, so the same study always gives the same report. The argument is the resample number:
# 0 is the run on all trials (Optuna's default forest); a resample grows a smaller forest, four
# times faster, whose own noise then widens the whiskers a little.
IMPORTANCE_EVALUATORS: dict[str, Callable[[int], BaseImportanceEvaluator]] = {
    "fANOVA": lambda seed: FanovaImportanceEvaluator(n_trees=64 if seed == 0 else 16, seed=seed),
    "PED-ANOVA": lambda seed: PedAnovaImportanceEvaluator(),
}
RESAMPLES = 10
MIN_TRIALS_TO_RESAMPLE = 5  # fewer trials than this give resamples of two or three trials
MIN_TRIALS = 10  # below this no ranking is more than a guess ...
TRIALS_PER_PARAM = 2  # ... nor with fewer complete trials than this per parameter


@dataclass(frozen=True)
class Importance:
    """One parameter's importance on all trials, and its spread over resamples."""

    param: str
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class EvaluatorResult:
    """One evaluator's importances (highest first), or why it could not rank."""

    evaluator: str
    importances: tuple[Importance, ...] = ()
    top_kept: int = 0  # resamples in which the top parameter stayed on top
    resamples: int = 0  # resamples the evaluator could rank
    problems: tuple[str, ...] = ()  # errors and warnings, one line each

    @property
    def top(self) -> str | None:
        return self.importances[0].param if self.importances else None


@dataclass(frozen=True)
class ImportanceData:
    """Both evaluators' results, how many trials they had, and the combined ranking."""

    trials: int
    params: int
    results: tuple[EvaluatorResult, ...]
    ranking: tuple[str, ...]  # by mean importance over the evaluators that could rank

    @property
    def needed(self) -> int:
        """Complete trials below which the ranking is called a guess."""
        return max(MIN_TRIALS, TRIALS_PER_PARAM * self.params)

    @property
    def too_few(self) -> bool:
        return self.trials < self.needed

    @property
    def notes(self) -> tuple[str, ...]:
        """What the page says about how far to trust the importances."""
        notes: list[str] = []
        if self.too_few:
            notes.append(
                f"Only {self.trials} complete trials for {self.params} parameters: too few to "
                f"rank them (about {self.needed} needed); read the order as a guess."
            )
        ranked = [result for result in self.results if result.importances]
        tops = {result.evaluator: result.top for result in ranked}
        if len(set(tops.values())) > 1:
            named = ", ".join(f"{name} ranks {top} first" for name, top in tops.items())
            notes.append(f"The two methods disagree ({named}): neither ranking is settled yet.")
        for result in ranked:
            if result.resamples:
                notes.append(
                    f"{result.evaluator}: {result.top} came first in {result.top_kept} of "
                    f"{result.resamples} resamples of the trials."
                )
        for result in self.results:
            notes += [f"{result.evaluator}{problem}" for problem in result.problems]
        return tuple(notes)


def importance_data(study: optuna.Study, resamples: int = RESAMPLES) -> ImportanceData:
    """fANOVA and PED-ANOVA importances with their spread over `resamples` bootstraps.

    Raises SkipSection when fewer than two complete trials or no parameter varied.
    """
    trials = complete_trials(study, at_least=2)
    if not varying_params(trials):
        raise SkipSection("no parameter took more than one value across the complete trials")
    samples = _bootstrap(trials, resamples if len(trials) >= MIN_TRIALS_TO_RESAMPLE else 0)
    results = tuple(
        _evaluate(name, make, study, samples) for name, make in IMPORTANCE_EVALUATORS.items()
    )
    if not any(result.importances for result in results):
        raise SkipSection(" ".join(f"{r.evaluator}{p}" for r in results for p in r.problems))
    all_params = {name for trial in trials for name in trial.params}
    return ImportanceData(
        trials=len(trials),
        params=len([name for name in all_params if _any_varies(trials, {name})]),
        results=results,
        ranking=combined_ranking(results),
    )


def _any_varies(trials: list[FrozenTrial], names: set[str]) -> bool:
    return any(
        len({repr(t.params[name]) for t in trials if name in t.params}) > 1 for name in names
    )


def _bootstrap(trials: list[FrozenTrial], count: int) -> list[list[FrozenTrial]]:
    """`count` resamples of the trials, with replacement, the same for every report."""
    rng = random.Random(0)
    return [[rng.choice(trials) for _ in trials] for _ in range(count)]


def _evaluate(
    name: str,
    make: Callable[[int], BaseImportanceEvaluator],
    study: optuna.Study,
    samples: list[list[FrozenTrial]],
) -> EvaluatorResult:
    """One evaluator on all trials, then on each resample (a throwaway in-memory study)."""
    problems: list[str] = []
    full = _importances(make(0), study, None, problems)
    if full is None:
        return EvaluatorResult(name, problems=tuple(problems))
    params = list(full)
    runs: list[dict[str, float]] = []
    for number, sample in enumerate(samples, start=1):
        scratch = optuna.create_study(direction=study.direction)
        scratch.add_trials(sample)
        # A conditional parameter (filters_3) may be in no trial of a resample: rank the rest.
        sampled = [param for param in params if any(param in t.params for t in sample)]
        ranked = _importances(make(number), scratch, sampled, [])  # a failed one is skipped
        if ranked is not None:
            runs.append(ranked)
    importances = tuple(
        Importance(
            param, full[param], *_spread([run[param] for run in runs if param in run], full[param])
        )
        for param in params
    )
    top = params[0]
    kept = sum(1 for run in runs if run and max(run, key=run.__getitem__) == top)
    return EvaluatorResult(name, importances, kept, len(runs), tuple(problems))


def _importances(
    evaluator: BaseImportanceEvaluator,
    study: optuna.Study,
    params: list[str] | None,
    problems: list[str],
) -> dict[str, float] | None:
    """Importances, highest first, or None (with the reason appended to `problems`)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = optuna.importance.get_param_importances(
                study, evaluator=evaluator, params=params
            )
        except (RuntimeError, ValueError) as exc:  # e.g. fANOVA on a constant objective
            problems.append(f" could not rank the parameters: {exc}")
            return None
    problems += [
        f": {warning.message}"
        for warning in caught
        if not issubclass(warning.category, ExperimentalWarning | DeprecationWarning)
    ]
    return {param: float(value) for param, value in result.items()}


def _spread(values: list[float], value: float) -> tuple[float, float]:
    """The 10th and 90th percentiles of `values`, widened to include `value` itself."""
    if len(values) < 2:
        return value, value
    cuts = statistics.quantiles(values, n=10, method="inclusive")
    return min(cuts[0], value), max(cuts[-1], value)


def combined_ranking(results: tuple[EvaluatorResult, ...]) -> tuple[str, ...]:
    """Parameters by their mean importance over the evaluators that ranked them."""
    scores: dict[str, list[float]] = {}
    for result in results:
        for importance in result.importances:
            scores.setdefault(importance.param, []).append(importance.value)
    return tuple(sorted(scores, key=lambda param: -statistics.fmean(scores[param])))


def contour_pair(data: ImportanceData | None, candidates: list[str]) -> tuple[list[str], str]:
    """The contour's two parameters: the candidates both methods rank highest on average.

    Without a ranking, the first two candidates, with a note saying so.
    """
    ranked = [name for name in (data.ranking if data else ()) if name in candidates]
    if len(ranked) >= 2:
        return ranked[:2], ""
    if data is not None:
        problems = [p for r in data.results for p in (f"{r.evaluator}{q}" for q in r.problems)]
        reason = "; ".join(problems) or "no ranking"
    else:
        reason = "no importances"
    return candidates[:2], f"Could not rank the parameters ({reason}); showing the first two."


def draw_importances(data: ImportanceData, target_name: str) -> tuple[go.Figure, ...]:
    """One bar chart per evaluator that could rank, parameters in the same (combined) order."""
    figures = []
    for result in data.results:
        if not result.importances:
            continue
        by_param = {importance.param: importance for importance in result.importances}
        order = [p for p in data.ranking if p in by_param][::-1]  # plotly draws bottom-up
        bars = [by_param[p] for p in order]
        figure = go.Figure(
            go.Bar(
                x=[bar.value for bar in bars],
                y=order,
                orientation="h",
                marker={"color": "#4c78a8"},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [max(bar.high - bar.value, 0.0) for bar in bars],
                    "arrayminus": [max(bar.value - bar.low, 0.0) for bar in bars],
                    "color": "#333",
                    "thickness": 1.2,
                },
                customdata=[[bar.low, bar.high] for bar in bars],
                hovertemplate="%{y}: %{x:.3f}<br>middle 80% of resamples: "
                "%{customdata[0]:.3f} to %{customdata[1]:.3f}<extra></extra>",
            )
        )
        # The value, written past the whisker so that neither hides the other.
        figure.add_scatter(
            x=[bar.high for bar in bars],
            y=order,
            text=[f"{bar.value:.2f}" if bar.value >= 0.01 else "<0.01" for bar in bars],
            mode="text",
            textposition="middle right",
            textfont={"size": 11},
            hoverinfo="skip",
        )
        right = max(bar.high for bar in bars) * 1.18 or 1.0
        figure.update_layout(
            title=result.evaluator,
            xaxis={"title": {"text": f"importance for {target_name}"}, "range": [0, right]},
            yaxis={"automargin": True},
            height=max(300, 120 + 34 * len(order)),
            showlegend=False,
        )
        figures.append(figure)
    return tuple(figures)
