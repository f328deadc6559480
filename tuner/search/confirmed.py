"""Confirm runs stored with a study, and the ranking of configurations by their mean over seeds.

`tuner confirm` retrains a study's top trials with new seeds. Each finished run is one study
user attribute, `confirm:TRIAL:SEED` -> the run as JSON-ready data. Why study attributes, and
not extra trials of the same study: a trial would be learned from by the sampler (TPE, CMA-ES
and GP treat every complete trial as a fresh sample of the objective, so a configuration
confirmed five times would weigh five times), would count towards `--trials`, could become
`study.best_trial`, and every report figure would need to filter it out. A study attribute is
stored in the same database by Optuna's public API, is ignored by samplers, and one key per run
means concurrent or resumed confirm runs never overwrite each other's results.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner import attrs

CONFIRM_PREFIX = "confirm:"


@dataclass(frozen=True)
class ConfirmRun:
    """One retraining of a tuned trial's configuration with a new seed."""

    trial: int  # the tuned trial whose configuration was retrained
    seed: int
    value: float | None  # the study metric at the kept epoch; None when training diverged
    val_accuracy: float | None
    val_loss: float | None
    epochs_run: int
    best_epoch: int | None
    seconds: float
    stop_reason: str | None = None

    @property
    def key(self) -> str:
        return run_key(self.trial, self.seed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Confirmed:
    """A configuration's confirm runs summarised: mean, spread and the tuned value."""

    trial: int
    tuned_value: float | None  # the tuned trial's own value (not part of the mean)
    values: tuple[float, ...]  # finished confirm runs' values, by seed
    diverged: int  # confirm runs that diverged (no value)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation (0 for a single seed)."""
        return statistics.stdev(self.values) if self.n > 1 else 0.0

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def stats(self) -> dict[str, float | int]:
        """What `tuner best` writes: mean, std, min, max and the number of seeds."""
        return {
            "mean": self.mean,
            "std": self.std,
            "min": self.low,
            "max": self.high,
            "seeds": self.n,
        }


def run_key(trial: int, seed: int) -> str:
    """The study user attribute holding the confirm run of `trial` with `seed`."""
    return f"{CONFIRM_PREFIX}{trial}:{seed}"


def store_run(study: optuna.Study, run: ConfirmRun) -> None:
    study.set_user_attr(run.key, run.to_dict())


def stored_runs(study: optuna.Study) -> list[ConfirmRun]:
    """Every confirm run stored with `study`, by trial then seed."""
    runs = [
        ConfirmRun(**value)
        for key, value in study.user_attrs.items()
        if key.startswith(CONFIRM_PREFIX) and isinstance(value, dict)
    ]
    return sorted(runs, key=lambda run: (run.trial, run.seed))


def top_trials(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The `top` best complete trials run by tuner (with a config), best first."""
    complete = [
        trial
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if attrs.CONFIG in trial.user_attrs and trial.value is not None
    ]
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return sorted(complete, key=lambda trial: (sign * trial.value, trial.number))[:top]


def confirmed_ranking(study: optuna.Study) -> list[Confirmed]:
    """Configurations with at least one finished confirm run, best mean first.

    The tuned trial's own value is left out of the mean: it was chosen for being the best, so
    it is biased upwards (the winner's curse); the confirm seeds are not.
    """
    by_trial: dict[int, list[ConfirmRun]] = {}
    for run in stored_runs(study):
        by_trial.setdefault(run.trial, []).append(run)
    values = {trial.number: trial.value for trial in study.get_trials(deepcopy=False)}
    ranking = [
        Confirmed(
            trial=number,
            tuned_value=values.get(number),
            values=tuple(run.value for run in runs if _finite(run.value)),
            diverged=sum(1 for run in runs if not _finite(run.value)),
        )
        for number, runs in by_trial.items()
    ]
    ranking = [entry for entry in ranking if entry.n]
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    # More diverged seeds rank lower at equal means: a configuration that fails is less robust.
    return sorted(ranking, key=lambda entry: (sign * entry.mean, entry.diverged, entry.trial))


def _finite(value: float | None) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
