"""A StudySpec + storage -> an Optuna study: sampler, pruner, resume checks, the trial budget."""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from tuner import attrs
from tuner.errors import TunerError
from tuner.search.portfolio import SOURCE_PREFIX, load_portfolio, place_portfolio
from tuner.search.samplers import make_sampler
from tuner.search.schedule import study_schedule
from tuner.spec import StudySpec
from tuner.spec.enqueue import trial_params
from tuner.storage import settle_stale_trials, stale_poll_seconds, storage_lost

log = logging.getLogger(__name__)

# Trials that count towards `--trials N`: failed trials are retried, so they do not count.
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)

TrialCallback = Callable[[optuna.Study, FrozenTrial], None]

MIN_FIRST_TIMEOUT = 1e-3  # seconds: lets Optuna start one trial when the time is already up
FIRST_WAIT_SECONDS = 0.25  # first pause while waiting for other workers' running trials


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
    portfolio: bool = True,
) -> optuna.Study:
    """Create the study, or resume it when it exists (`load_if_exists`).

    A new study queues its [[enqueue]] sets first, or without them the shipped portfolio
    (unless the study file or `portfolio=False`, a warm start's own first trials, says no).

    Resuming with a study file whose search space differs from the stored one is refused
    with a diff, unless `force` is set (then the stored space is replaced). Its pruner is the
    study file's schedule's (`study_schedule`); a run installs its own (`RunSchedule`).
    """
    current_space = _normalised(spec.space_dict())
    study = optuna.create_study(
        storage=storage,
        study_name=spec.name,
        directions=spec.directions,
        sampler=make_sampler(spec, seed_offset),
        pruner=study_schedule(spec).build_pruner(),
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
    stored_directions = [d.name.lower() for d in study.directions]
    if stored_directions != spec.directions:
        raise TunerError(
            f"{spec.path}: metric: study {spec.name!r} in storage optimises "
            f"{', '.join(stored_directions)}, the file says {', '.join(spec.directions)}"
        )
    if stored_space is None:  # a new study: once, not again on resume or per worker
        enqueue_known(study, spec)
        if portfolio and spec.portfolio and not spec.enqueue and spec.sampler.name != "grid":
            enqueue_portfolio(study, spec)
    if stored_space != current_space:
        study.set_user_attr(attrs.STUDY_SPACE, current_space)
    if study.metric_names != list(spec.objectives):
        # optuna-dashboard and Optuna's plots label the value by this name, not "Objective 0".
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            study.set_metric_names(list(spec.objectives))
    if attrs.STUDY_DATASET not in study.user_attrs:
        study.set_user_attr(attrs.STUDY_DATASET, spec.dataset.name)
        study.set_user_attr(attrs.STUDY_METRIC, spec.metric)
        study.set_user_attr(attrs.STUDY_FILE, str(spec.path.resolve()))  # `run --study NAME`
    if spec.multi_objective and attrs.STUDY_METRICS not in study.user_attrs:
        study.set_user_attr(attrs.STUDY_METRICS, list(spec.objectives))
    if spec.constraints and attrs.STUDY_CONSTRAINTS not in study.user_attrs:
        study.set_user_attr(attrs.STUDY_CONSTRAINTS, spec.constraints)
    return study


def enqueue_known(study: optuna.Study, spec: StudySpec) -> None:
    """Queue the study file's [[enqueue]] parameter sets as the study's first trials.

    With [training].first_result_epochs, the first set is queued twice: first marked
    FIRST_RESULT (the objective trains it short), then as a full trial. `skip_if_exists` keeps
    two processes creating the study at the same moment (replicas of one command) from queueing
    a set twice; the short copy is queued only into an empty study, for the same reason.
    """
    known = [trial_params(values, spec.space) for values in spec.enqueue]
    source = {attrs.SOURCE: attrs.SOURCE_ENQUEUE}
    if known and spec.training.first_result_epochs and not study.get_trials(deepcopy=False):
        study.enqueue_trial(known[0], user_attrs={attrs.FIRST_RESULT: True, **source})
        study.enqueue_trial(known[0], user_attrs=source)  # skip_if_exists would see the short copy
        known = known[1:]
    for params in known:
        study.enqueue_trial(params, user_attrs=source, skip_if_exists=True)
    if spec.enqueue:
        log.info("%s: %d known configurations queued first", spec.name, len(spec.enqueue))


def first_queued_params(spec: StudySpec) -> dict[str, Any] | None:
    """Trial parameters of the first trial a new study of `spec` queues: its first [[enqueue]]
    set, else the first portfolio configuration placed in its space; None when it queues none
    (`portfolio = false`, a grid study, nothing placed)."""
    if spec.enqueue:
        return trial_params(spec.enqueue[0], spec.space)
    if not spec.portfolio or spec.sampler.name == "grid":
        return None
    placed = place_portfolio(spec.space, load_portfolio(), log_skipped=False)
    return trial_params(placed[0].values, spec.space) if placed else None


def enqueue_portfolio(study: optuna.Study, spec: StudySpec) -> None:
    """Queue the shipped portfolio (tuner.search.portfolio), projected into the study's space,
    as the study's first trials; each records its place in the portfolio as its `source`.
    A stopped trial's retry, queued later, still runs before them (the storage lists the
    queue retries first: tuner.storage.stale.queue_order)."""
    placed = place_portfolio(spec.space, load_portfolio())
    for one in placed:
        study.enqueue_trial(
            trial_params(one.values, spec.space),
            user_attrs={attrs.SOURCE: one.source},
            skip_if_exists=True,
        )
    log.info("%s: %d portfolio configurations queued first", spec.name, len(placed))


def count_finished(study: optuna.Study) -> int:
    """Trials that count towards the study's total (complete or pruned)."""
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))


@dataclass(frozen=True)
class RunOutcome:
    """What one `run_trials` call did."""

    finished_before: int
    finished_after: int
    total_target: int | None  # None: no count, a budget or timeout ends the run


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    total_trials: int | None,
    *,
    timeout: float | None = None,
    callbacks: list[TrialCallback] | None = None,
    gc_after_trial: bool = False,
    budget: BudgetGate | None = None,
) -> RunOutcome:
    """Run trials until the study has `total_trials` finished trials, across all workers.

    Every worker checks the shared count after each of its trials, so the total overshoots by
    at most the trials other workers already had running. A study is done only when no trial
    is left behind: the trial of a worker that died is failed once its heartbeat is older than
    the grace period and queued to run again (before the first trial, before each trial, and
    while this worker waits for the study's RUNNING trials to end once the count is reached),
    and queued trials are run even when the count is reached (all but the portfolio's, which
    wait for a run that wants them: `_must_run`). `timeout` bounds the waiting too.

    A storage lost for longer than its retry window raises StorageLostError (a TunerError).
    """
    finished_before = count_finished(study)
    if budget is not None:
        # Optuna's timeout also stops starting trials at the budget's deadline itself.
        left = max(0.0, budget.left())
        timeout = left if timeout is None else min(timeout, left)
    deadline = None if timeout is None else time.monotonic() + timeout
    budget_callbacks = [] if budget is None else [budget.after_trial]
    poll_seconds = stale_poll_seconds(study)
    stop_when_done = _stop_when_done(total_trials)
    pause = FIRST_WAIT_SECONDS  # short at first: the other workers' trials often end soon
    waiting_logged = optimized = False
    while True:
        settle_stale_trials(study)
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            if optimized:
                break
            # As Optuna's own timeout: the first trial of a run starts however short it is.
            left = MIN_FIRST_TIMEOUT
        # Optimize once for the count, then again only for queued trials: something else may
        # have stopped the study (the grid sampler, when its grid is done).
        if _queued(study) or not (optimized or _done(study, total_trials)):
            if budget is not None and not budget.first_rung_fits():
                break  # not even a first rung fits before the deadline: start nothing
            optimized = True
            _optimize(
                study,
                objective,
                timeout=left,
                callbacks=[stop_when_done, *(callbacks or []), *budget_callbacks],
                gc_after_trial=gc_after_trial,
            )
            continue
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running or poll_seconds is None:
            break
        if not waiting_logged:
            waiting_logged = True
            log.info(
                "waiting for %d running trial(s) of other workers; the trial of a worker that "
                "died is failed once its heartbeat is stale, and run again",
                len(running),
            )
        time.sleep(pause if left is None else min(pause, left))
        pause = min(pause * 2, poll_seconds)
    return RunOutcome(finished_before, count_finished(study), total_trials)


def _done(study: optuna.Study, total_trials: int | None) -> bool:
    """Enough finished trials, and none queued (a dead worker's trial waiting for its retry)."""
    if total_trials is None:  # no count: a budget or timeout ends the run
        return False
    trials = study.get_trials(deepcopy=False)
    finished = sum(trial.state in FINISHED_STATES for trial in trials)
    return finished >= total_trials and not any(_must_run(trial) for trial in trials)


def _queued(study: optuna.Study) -> bool:
    """A trial is waiting to be run: a dead worker's trial to retry, or one enqueued."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return any(_must_run(trial) for trial in waiting)


def _must_run(trial: FrozenTrial) -> bool:
    """A waiting trial that keeps a run going past its count: a retry, an [[enqueue]] set.

    A queued portfolio configuration is a default, not something the user asked for: it runs
    first while the run wants trials (`--trials 2` runs two), and waits for the next run.
    """
    if trial.state != TrialState.WAITING:
        return False
    portfolio = str(trial.user_attrs.get(attrs.SOURCE, "")).startswith(SOURCE_PREFIX)
    if not portfolio:
        return True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # retried_trial_number is
        return optuna.storages.RetryFailedTrialCallback.retried_trial_number(trial) is not None


def _stop_when_done(total_trials: int | None) -> TrialCallback:
    """Optuna's MaxTrialsCallback, except that a queued retry keeps the worker going."""

    def stop(study: optuna.Study, _trial: FrozenTrial) -> None:
        if _done(study, total_trials):
            study.stop()

    return stop


def _optimize(
    study: optuna.Study, objective: Callable[[optuna.Trial], float], **options: Any
) -> None:
    """`study.optimize`; a lost storage ends it with StorageLostError, not with the error Optuna
    raises when it cannot record the end of the running trial (UnboundLocalError)."""
    try:
        study.optimize(objective, n_trials=None, **options)
    except Exception as exc:
        lost = storage_lost(exc)
        if lost is None or lost is exc:
            raise
        raise lost from None
