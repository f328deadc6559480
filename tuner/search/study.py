"""A StudySpec + storage -> an Optuna study: sampler, pruner, resume checks, the trial budget."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from tuner import attrs
from tuner.errors import TunerError
from tuner.search.samplers import make_pruner, make_sampler
from tuner.spec import StudySpec

log = logging.getLogger(__name__)

# Trials that count towards `--trials N`: failed trials are retried, so they do not count.
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)

TrialCallback = Callable[[optuna.Study, FrozenTrial], None]


class BudgetGate(Protocol):
    """What run_trials asks of a wall-clock budget (tuner.runner.budget.BudgetClock)."""

    def left(self) -> float: ...
    def first_rung_fits(self) -> bool: ...
    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None: ...


def _normalised(value: Any) -> Any:
    """Round-trip through JSON, as the storage does, so stored and fresh spaces compare."""
    return json.loads(json.dumps(value))


def space_changes(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between a stored search space and the study file's."""
    changes = []
    for name in sorted(set(stored) | set(current)):
        before, after = stored.get(name), current.get(name)
        if before != after:
            changes.append(f"{name}: {json.dumps(before)} -> {json.dumps(after)}")
    return changes


def open_study(
    spec: StudySpec,
    storage: str | optuna.storages.BaseStorage,
    *,
    seed_offset: int = 0,
    force: bool = False,
) -> optuna.Study:
    """Create the study, or resume it when it exists (`load_if_exists`).

    Resuming with a study file whose search space differs from the stored one is refused
    with a diff, unless `force` is set (then the stored space is replaced).
    """
    current_space = _normalised(spec.space_dict())
    study = optuna.create_study(
        storage=storage,
        study_name=spec.name,
        direction=spec.direction,
        sampler=make_sampler(spec, seed_offset),
        pruner=make_pruner(spec),
        load_if_exists=True,
    )
    existing_trials = len(study.get_trials(deepcopy=False))
    if existing_trials and spec.sampler.seed is not None:
        # A resumed study must not replay the first run's random draws: offset the seed by the
        # trials already there (still reproducible for the same storage state).
        study.sampler = make_sampler(spec, seed_offset + existing_trials)
    stored_space = study.user_attrs.get(attrs.STUDY_SPACE)
    if stored_space is not None and stored_space != current_space:
        changes = space_changes(stored_space, current_space)
        if not force:
            raise TunerError(
                f"{spec.path}: the search space differs from the one study {spec.name!r} was "
                f"run with ({'; '.join(changes)}); use --force to continue anyway, or give "
                "the study a new name"
            )
        log.warning("search space of %s changed (--force): %s", spec.name, "; ".join(changes))
    if study.direction.name.lower() != spec.direction:
        raise TunerError(
            f"{spec.path}: direction: study {spec.name!r} in storage is "
            f"{study.direction.name.lower()}, the file says {spec.direction}"
        )
    if stored_space != current_space:
        study.set_user_attr(attrs.STUDY_SPACE, current_space)
    if study.metric_names != [spec.metric]:
        # optuna-dashboard and Optuna's plots label the value by this name, not "Objective 0".
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            study.set_metric_names([spec.metric])
    if attrs.STUDY_DATASET not in study.user_attrs:
        study.set_user_attr(attrs.STUDY_DATASET, spec.dataset.name)
        study.set_user_attr(attrs.STUDY_METRIC, spec.metric)
        study.set_user_attr(attrs.STUDY_FILE, str(spec.path))
    return study


def count_finished(study: optuna.Study) -> int:
    """Trials that count towards the study's total (complete or pruned)."""
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))


@dataclass(frozen=True)
class RunOutcome:
    """What one `run_trials` call did."""

    finished_before: int
    finished_after: int
    total_target: int


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    total_trials: int,
    *,
    timeout: float | None = None,
    callbacks: list[TrialCallback] | None = None,
    gc_after_trial: bool = False,
    budget: BudgetGate | None = None,
) -> RunOutcome:
    """Run trials until the study has `total_trials` finished trials, across all workers.

    Every worker checks the shared count after each of its trials (`MaxTrialsCallback`), so
    the total overshoots by at most the trials other workers already had running.

    With a `budget`, no trial starts whose first rung would not fit before its deadline (by
    its estimate, checked before the first trial and after each one).
    """
    finished_before = count_finished(study)
    budget_callbacks = [] if budget is None else [budget.after_trial]
    if finished_before < total_trials and (budget is None or budget.first_rung_fits()):
        if budget is not None:
            # Optuna's timeout also stops starting trials at the deadline itself.
            left = max(0.0, budget.left())
            timeout = left if timeout is None else min(timeout, left)
        study.optimize(
            objective,
            n_trials=None,
            timeout=timeout,
            callbacks=[
                MaxTrialsCallback(total_trials, states=FINISHED_STATES),
                *(callbacks or []),
                *budget_callbacks,
            ],
            gc_after_trial=gc_after_trial,
        )
    return RunOutcome(finished_before, count_finished(study), total_trials)
