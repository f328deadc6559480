"""One process runs trials of a study on one device until the total, the timeout or a signal."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

import torch
from rich.console import Console

from tuner.errors import TunerError
from tuner.runner import host
from tuner.runner.budget import default_steps_per_epoch, plan_budget, rung_pruner
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

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial


def report_command(study_name: str, settings: RunSettings) -> str:
    """The `tuner report` command for this run's study (the URL masked, if it was given)."""
    from tuner.storage import mask_url

    storage = f" --storage {mask_url(settings.storage)}" if settings.storage_given else ""
    return f"tuner report --study {study_name}{storage}"


def run_worker(settings: RunSettings, console: Console) -> RunSummary:
    """Run trials in this process, showing progress on `console`; say how it ended.

    Every finished trial is in storage as it finishes. On SIGINT/SIGTERM the running trial is
    marked failed and queued to run again, and the summary says INTERRUPTED. A TunerError while
    trials run (the database lost for longer than the retry window) ends the run with ERROR;
    one before the first trial is raised. KeyboardInterrupt before the study is open is raised.
    """
    from tuner.data import load_dataset, split
    from tuner.engine import EngineOptions, pick_device, to_device
    from tuner.search.objective import make_objective
    from tuner.search.study import open_study, run_trials
    from tuner.spec import load_spec
    from tuner.storage import mask_url, open_storage

    started = time.monotonic()
    started_at = time.time()
    spec = load_spec(settings.study_file)
    budget = run_budget(settings, spec)
    total = trial_target(settings.trials, spec, budget)
    engine = EngineOptions(precision=settings.precision, compile=settings.compile)
    slot = settings.slot
    with interrupt_on_signals():
        device = pick_device(settings.device)
        dataset = load_dataset(spec.dataset.name, settings.data_dir, settings.cache_dir)
        splits = split(
            dataset,
            val_fraction=spec.dataset.val_fraction,
            split_seed=spec.dataset.split_seed,
            train_subset=spec.dataset.train_subset,
        )
        data = to_device(splits, device)
        if slot is not None:
            torch.set_num_threads(slot.threads)  # the machine's cores, split between workers
        # Other `tuner run` processes on this machine: a share of the cores, before each trial.
        share_cores = None if slot is not None else host.share_cores(settings.cache_dir)
        seed_offset = worker_seed_offset() if settings.seed_offset is None else settings.seed_offset
        study = open_study(
            spec,
            open_storage(settings.storage, outage_timeout=settings.storage_retry_seconds),
            seed_offset=seed_offset,
            force=settings.force,
        )
        # The schedule: rungs per epoch, and with a budget the epochs it allows and its clock.
        steps = default_steps_per_epoch(spec, len(data.train_labels))
        clock = plan = None
        first_result_epochs = spec.training.first_result_epochs
        if budget is not None:
            plan = plan_budget(
                study,
                spec,
                data,
                device,
                budget,
                settings.started_at or started_at,
                steps,
                engine,
            )
            clock, first_result_epochs = plan.clock, plan.first_result_epochs
            spec = dataclasses.replace(
                spec, training=dataclasses.replace(spec.training, max_epochs=plan.epochs)
            )
        study.pruner = rung_pruner(spec, spec.training.max_epochs, steps)
        worker = "" if slot is None else f"worker {slot.index}: "
        console.print(
            f"{worker}study [bold]{spec.name}[/bold]: {spec.dataset.name} {dataset.input_shape} "
            f"on {device}, {target_text(total)}, storage {mask_url(settings.storage)}"
        )
        progress = TrialProgress(
            console,
            study,
            total,
            spec.training.max_epochs,
            live=slot is None,  # workers share the terminal: log lines, not live views
            workers=1 if slot is None else slot.count,
            deadline=None if clock is None else started + (clock.deadline - started_at),
            first_result_epochs=first_result_epochs,
        )
        retried: tuple[int, ...] = ()
        detail = None
        with progress:
            objective = make_objective(
                spec,
                data,
                device,
                on_epoch=progress.on_epoch,
                on_batch=progress.on_batch,
                options=engine,
                should_stop=None if clock is None else clock.should_stop,
                steps_per_epoch=steps,
                first_result_epochs=first_result_epochs,
                max_epochs=None if plan is None else lambda: plan.epochs,
            )
            seen = StudyStateSeen(study_state(study))
            callbacks = [progress.on_trial_end, seen.on_trial_end]
            if share_cores is not None:
                callbacks.append(share_cores)
            if plan is not None:

                def replan(study: optuna.Study, trial: FrozenTrial) -> None:
                    if plan.replan_after_first_result(study, trial):
                        progress.max_epochs = plan.epochs
                        study.pruner = rung_pruner(spec, plan.epochs, steps)

                callbacks.append(replan)
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
                short = total is None or outcome.finished_after < total
                timed_out = settings.timeout is not None and short
                reason = StopReason.TIMEOUT if timed_out else StopReason.TRIALS
                if clock is not None and clock.exhausted and short:
                    reason = StopReason.BUDGET
            except KeyboardInterrupt:
                # Optuna has marked the running trial FAIL; every finished trial is stored.
                reason = StopReason.INTERRUPTED
                number = retry_interrupted(study, progress.current_trial)
                retried = () if number is None else (number,)
            except TunerError as exc:
                reason, detail = StopReason.ERROR, str(exc)
        ran = progress.ran
        if retried or (detail and progress.current_trial is not None):
            ran = dataclasses.replace(ran, failed=ran.failed + 1)  # the trial cut short
        state = seen.now(study)  # what this process saw last, if the storage is gone
        return RunSummary(
            study=spec.name,
            reason=reason,
            ran=ran,
            target=total,
            seconds=time.time() - (settings.started_at or started_at),
            report_command=report_command(spec.name, settings),
            timeout=settings.timeout,
            budget=budget,
            budget_epochs=None if plan is None else plan.epochs,
            retried=retried,
            detail=detail,
            **state,
        )
