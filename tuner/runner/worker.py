"""One process runs trials of a study on one device until the total, the timeout or a signal."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console

from tuner.errors import TunerError
from tuner.runner import host
from tuner.runner.budget import BudgetPlan, plan_budget
from tuner.runner.progress import TrialProgress
from tuner.runner.settings import RunSettings, run_budget, trial_target, worker_seed_offset
from tuner.runner.signals import interrupt_on_signals, retry_interrupted
from tuner.runner.summary import (
    RunSummary,
    StopReason,
    StudyStateSeen,
    study_state,
    target_text,
)
from tuner.search.checkpoints import requeue_budget_cut, tidy
from tuner.search.objective import TrialHooks, make_objective
from tuner.search.schedule import RunSchedule, choose_sampler, study_schedule
from tuner.search.study import open_study, run_trials
from tuner.storage import mask_url
from tuner.storage.artifacts import open_artifacts

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from tuner.engine import DeviceData
    from tuner.spec import StudySpec


def report_command(study_name: str, settings: RunSettings) -> str:
    """The `tuner report` command for this run's study (the URL masked, if it was given)."""
    storage = f" --storage {mask_url(settings.storage)}" if settings.storage_given else ""
    return f"tuner report --study {study_name}{storage}"


def run_worker(settings: RunSettings, console: Console) -> RunSummary:
    """Run trials in this process, showing progress on `console`; say how it ended.

    Every finished trial is in storage as it finishes. On SIGINT/SIGTERM the running trial is
    marked failed and queued to run again, and the summary says INTERRUPTED. A TunerError while
    trials run (the database lost for longer than the retry window) ends the run with ERROR;
    one before the first trial is raised. KeyboardInterrupt before the study is open is raised.
    """
    from tuner.engine import EngineOptions

    started, now = time.monotonic(), time.time()
    started_at = settings.started_at or now  # the command's start: the budget counts from it
    spec = settings.load_spec()
    budget = run_budget(settings, spec)
    # The budget's sampler when the file names none; the pruner is chosen with the schedule.
    spec = dataclasses.replace(spec, sampler=choose_sampler(spec, budget))
    total = trial_target(settings.trials, spec, budget)
    engine = EngineOptions(precision=settings.precision, compile=settings.compile)
    with interrupt_on_signals():
        device, data = _load(spec, settings)
        # Other `tuner run` processes on this machine: a share of the cores, before each trial.
        share_cores = None if settings.slot is not None else host.share_cores(settings.cache_dir)
        # A bucket that is not there stops the run before the study is created; a folder is
        # made once the storage has proved usable (by default it sits next to the database).
        store = None if settings.artifacts is None else open_artifacts(settings.artifacts, False)
        study = _open(spec, settings)
        artifacts = None if store is None else store.made()
        if artifacts is not None:
            requeue_budget_cut(study)  # what a budget cut left resumes first
        schedule = study_schedule(spec, len(data.train_labels), budget)
        plan = None
        if budget is not None:
            steps = schedule.steps_per_epoch
            plan = plan_budget(study, spec, data, device, budget, started_at, steps, engine)
            schedule = plan.schedule(schedule)
        run_schedule = RunSchedule(study, schedule)
        worker = "" if settings.slot is None else f"worker {settings.slot.index}: "
        console.print(
            f"{worker}study [bold]{spec.name}[/bold]: {spec.dataset.name} {data.input_shape} "
            f"on {device}, {target_text(total)}, storage {mask_url(settings.storage)}"
        )
        progress = TrialProgress(
            console,
            study,
            total,
            schedule.max_epochs,
            live=settings.slot is None,  # workers share the terminal: log lines, not live views
            workers=1 if settings.slot is None else settings.slot.count,
            deadline=None if plan is None else started + (plan.clock.deadline - now),
            first_result_epochs=schedule.first_result_epochs,
            started=started - (now - started_at),  # elapsed counts as the budget does
        )
        with progress:
            objective = make_objective(
                spec,
                data,
                device,
                run_schedule,
                engine,
                TrialHooks(on_epoch=progress.on_epoch, on_batch=progress.on_batch),
                artifacts,
            )
            seen = StudyStateSeen(study_state(study))
            callbacks = [progress.on_trial_end, seen.on_trial_end]
            if share_cores is not None:
                callbacks.append(share_cores)
            if artifacts is not None:
                keep = spec.training.keep_weights
                callbacks.append(lambda study, _: tidy(artifacts, study, keep))
            if plan is not None:

                def replan(study: optuna.Study, trial: FrozenTrial) -> None:
                    new = plan.replan_after_first_result(study, trial, run_schedule.current)
                    if new is not None:
                        run_schedule.swap(new)
                        progress.max_epochs = new.max_epochs

                callbacks.append(replan)
            reason, retried, detail = _run(
                study, progress, objective, total, settings, callbacks, device, plan
            )
        ran = progress.ran
        if retried or (detail and progress.current_trial is not None):
            ran = dataclasses.replace(ran, failed=ran.failed + 1)  # the trial cut short
        state = seen.now(study)  # what this process saw last, if the storage is gone
        return RunSummary(
            study=spec.name,
            reason=reason,
            ran=ran,
            target=total,
            seconds=time.time() - started_at,
            report_command=report_command(spec.name, settings),
            timeout=settings.timeout,
            budget=budget,
            budget_epochs=None if plan is None else run_schedule.current.max_epochs,
            budget_needed=None if plan is None else plan.needed,
            retried=retried,
            detail=detail,
            **state,
        )


def _load(spec: StudySpec, settings: RunSettings) -> tuple[torch.device, DeviceData]:
    """The device and the study's split on it (this worker's threads set)."""
    from tuner.engine import load_device_data, pick_device

    device = pick_device(settings.device)
    data = load_device_data(spec.dataset, device, settings.data_dir, settings.cache_dir)
    if settings.slot is not None:
        torch.set_num_threads(settings.slot.threads)  # the machine's cores, split between workers
    return device, data


def _open(spec: StudySpec, settings: RunSettings) -> optuna.Study:
    """The study in storage, created or resumed, with this worker's sampler seed."""
    from tuner.storage import open_storage

    seed_offset = worker_seed_offset() if settings.seed_offset is None else settings.seed_offset
    return open_study(
        spec,
        open_storage(settings.storage, outage_timeout=settings.storage_retry_seconds),
        seed_offset=seed_offset,
        force=settings.force,
    )


def _run(
    study: optuna.Study,
    progress: TrialProgress,
    objective: Callable[[optuna.Trial], Any],
    total: int | None,
    settings: RunSettings,
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]],
    device: torch.device,
    plan: BudgetPlan | None,
) -> tuple[StopReason, tuple[int, ...], str | None]:
    """Run trials until the target, the timeout, the budget or a signal: why it stopped, the
    interrupted trial queued again, and the error of a run that stopped on one."""
    clock = None if plan is None else plan.clock
    try:
        outcome = run_trials(
            study,
            progress.watch(objective),
            total,
            timeout=settings.timeout,
            callbacks=callbacks,
            gc_after_trial=device.type == "cuda",
            budget=clock,
        )
    except KeyboardInterrupt:
        # Optuna has marked the running trial FAIL; every finished trial is stored.
        number = retry_interrupted(study, progress.current_trial)
        return StopReason.INTERRUPTED, () if number is None else (number,), None
    except TunerError as exc:
        return StopReason.ERROR, (), str(exc)
    short = total is None or outcome.finished_after < total
    if clock is not None and clock.exhausted and short:
        return StopReason.BUDGET, (), None
    timed_out = settings.timeout is not None and short
    return StopReason.TIMEOUT if timed_out else StopReason.TRIALS, (), None
