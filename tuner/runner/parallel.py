"""Several worker processes on one machine, sharing one study through its storage.

`tuner run --workers K` starts K worker processes (one trial at a time each) and waits for them.
Each worker is a fresh Python process ('spawn') whose entry function gets its `RunSettings` as
an argument: its own device from `--devices` (round robin, so K workers on D GPUs run K/D
trials per GPU), its share of the CPU cores, and its own index, which offsets the sampler seed
so workers don't propose the same configurations in lockstep. Nothing travels on a command line
or in the environment, so the storage URL (maybe with a password) never shows in `ps`.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import torch
from rich.console import Console

from tuner import attrs
from tuner.engine import available_cpus
from tuner.errors import TunerError
from tuner.runner.settings import (
    RunSettings,
    WorkerSlot,
    run_budget,
    trial_target,
    worker_seed_offset,
)
from tuner.runner.signals import STOP_SIGNALS
from tuner.runner.summary import (
    RunSummary,
    StopReason,
    TrialCounts,
    most_serious,
    study_state,
    target_text,
)
from tuner.runner.worker import report_command, run_worker

log = logging.getLogger(__name__)

# Seed offsets of local workers lie this far apart. A resumed study also offsets the seed by the
# trials it has (tuner.search.study.open_study): with offsets 0, 1, ... worker 1 opening an empty
# study and worker 0 opening it one trial later drew the same configurations.
WORKER_SEED_STRIDE = 1_000_003


def resolve_devices(devices: str | None, device: str) -> list[str]:
    """The devices workers are spread over: `--devices a,b`, else every GPU, else `--device`."""
    if devices:
        return [d.strip() for d in devices.split(",") if d.strip()]
    if device == "auto" and torch.cuda.is_available():
        return [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    return [device]


def worker_threads(workers: int) -> int:
    """Torch threads per worker when `workers` share this machine: $OMP_NUM_THREADS, if set.

    Otherwise the CPU cores are split between the workers: each PyTorch process starts one
    thread per core, and oversubscribed OpenMP threads spin at every barrier (measured in
    bench/RESULTS.md).
    """
    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) > 0:
        return int(given)
    return max(1, available_cpus() // workers)


@dataclass(frozen=True)
class WorkerLaunch:
    """One worker process to start, and the settings its entry function gets."""

    index: int
    settings: RunSettings


def plan_workers(settings: RunSettings, workers: int, devices: list[str]) -> list[WorkerLaunch]:
    """Spread `workers` workers over `devices`, each with its seed offset and thread count."""
    if workers < 1:
        raise TunerError(f"--workers must be >= 1, got {workers}")
    threads = worker_threads(workers)
    base = worker_seed_offset() if settings.seed_offset is None else settings.seed_offset
    level = logging.getLogger("tuner").getEffectiveLevel()  # the root's, unless tuner.run set it
    return [
        WorkerLaunch(
            index,
            dataclasses.replace(
                settings,
                device=devices[index % len(devices)],
                seed_offset=base + index * WORKER_SEED_STRIDE,
                slot=WorkerSlot(index, workers, threads, level),
            ),
        )
        for index in range(workers)
    ]


def run_parallel(settings: RunSettings, console: Console) -> RunSummary:
    """`tuner run --workers K`: prepare once, run the workers, and sum up what they did."""
    from tuner.data import load_dataset
    from tuner.engine import pick_device
    from tuner.search.study import open_study
    from tuner.storage import check_local_workers, mask_url, open_storage
    from tuner.storage.artifacts import open_artifacts

    started = time.monotonic()
    spec = settings.load_spec()
    budget = run_budget(settings, spec)
    total = trial_target(settings.trials, spec, budget)
    devices = resolve_devices(settings.devices, settings.device)
    for name in devices:
        pick_device(name)  # fail here, once, rather than in every worker
    per_device = settings.jobs_per_device
    count = per_device * len(devices) if per_device else settings.workers
    check_local_workers(settings.storage, count)
    if settings.artifacts is not None:
        # A bucket that is not there: once, not in every worker (a folder: they make it).
        open_artifacts(settings.artifacts, create=False)
    # Decode the dataset into the cache and create the study once, before the workers race.
    load_dataset(spec.dataset.name, settings.data_dir, settings.cache_dir)
    study = open_study(
        spec,
        open_storage(settings.storage, outage_timeout=settings.storage_retry_seconds),
        force=settings.force,
    )
    console.print(
        f"study [bold]{spec.name}[/bold]: {count} workers on {', '.join(devices)}, "
        f"{target_text(total)}, storage {mask_url(settings.storage)}"
    )
    launches = plan_workers(settings, count, devices)
    outcomes, interrupted = run_workers(launches)
    reasons, details = [StopReason.INTERRUPTED] if interrupted else [], []
    ran, retried = TrialCounts(), ()
    try:
        state = study_state(study)
    except TunerError:  # the storage is gone: the latest view a worker had (most finished)
        seen = [summary for _code, summary in outcomes if summary is not None]
        latest = max(seen, key=lambda summary: summary.finished, default=None)
        state = {} if latest is None else _study_fields(latest)
    for launch, (code, summary) in zip(launches, outcomes, strict=True):
        if summary is not None:
            reasons.append(summary.reason)
            ran, retried = ran + summary.ran, retried + summary.retried
            if summary.detail:
                details.append(f"worker {launch.index}: {summary.detail}")
        elif code in (130, -signal.SIGTERM, -signal.SIGINT):
            reasons.append(StopReason.INTERRUPTED)
        elif code:
            reasons.append(StopReason.ERROR)
            details.append(worker_ended(launch.index, code))
    reason = most_serious(reasons)
    return RunSummary(
        study=spec.name,
        reason=reason,
        ran=ran,
        target=total,
        seconds=time.monotonic() - started,
        report_command=report_command(spec.name, settings),
        timeout=settings.timeout,
        budget=budget,
        budget_epochs=None if budget is None else study.user_attrs.get(attrs.STUDY_BUDGET_EPOCHS),
        budget_needed=None if budget is None else study.user_attrs.get(attrs.STUDY_BUDGET_NEEDED),
        retried=tuple(sorted(retried)),
        detail="; ".join(details) if reason == StopReason.ERROR else None,
        **{"finished": 0, **state},
    )


def _study_fields(summary: RunSummary) -> dict[str, object]:
    """The study-wide fields of a worker's summary (see tuner.runner.summary.study_state)."""
    fields = ("finished", "metric", "best_value", "best_trial", "best_params")
    return {name: getattr(summary, name) for name in fields}


def run_workers(
    launches: list[WorkerLaunch],
) -> tuple[list[tuple[int, RunSummary | None]], bool]:
    """Start the workers, forward SIGINT/SIGTERM to them, wait for them.

    Returns each worker's exit code and summary (None when it ended before it could send
    one), and whether this process received a stop signal. An interrupted worker marks its
    running trial FAIL and queues it again itself (see tuner.runner.signals).
    """
    context = multiprocessing.get_context("spawn")
    processes: list[multiprocessing.process.BaseProcess] = []
    receivers: list[Connection] = []
    stop_received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        stop_received.append(signum)
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    try:
        # Workers start with the stop signals blocked and unblock them once their handlers are
        # in place (interrupt_on_signals), so a signal during their start-up is not lost.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            for launch in launches:
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(
                    target=worker_main,
                    args=(launch.settings, sender),
                    name=f"tuner-worker-{launch.index}",
                )
                log.info("starting worker %d on %s", launch.index, launch.settings.device)
                process.start()
                sender.close()  # the worker holds its own end
                processes.append(process)
                receivers.append(receiver)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        summaries = _wait_for_workers(launches, processes, receivers, stop_received)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    outcomes = [
        (process.exitcode or 0, summary)
        for process, summary in zip(processes, summaries, strict=True)
    ]
    return outcomes, bool(stop_received)


def _wait_for_workers(
    launches: list[WorkerLaunch],
    processes: list[multiprocessing.process.BaseProcess],
    receivers: list[Connection],
    stop_received: list[int],
) -> list[RunSummary | None]:
    """Wait for every worker; say in one line, as it happens, that one died, and go on."""
    summaries: list[RunSummary | None] = [None] * len(processes)
    waiting = dict(enumerate(processes))
    while waiting:
        ended = multiprocessing.connection.wait([p.sentinel for p in waiting.values()])
        for index, process in list(waiting.items()):
            if process.sentinel not in ended:
                continue
            process.join()
            del waiting[index]
            summaries[index] = _received(receivers[index])
            code = process.exitcode or 0
            stopped = stop_received and code in (130, -signal.SIGTERM, -signal.SIGINT)
            if summaries[index] is None and code and not stopped:
                others = "; the other workers go on" if waiting else ""
                log.warning("%s%s", worker_ended(launches[index].index, code), others)
    return summaries


def _received(receiver: Connection) -> RunSummary | None:
    """A worker's summary, or None when it ended without sending one.

    A worker killed (kill -9, the out-of-memory killer) closes its end of the pipe unsent:
    `poll()` is then True and `recv()` raises EOFError.
    """
    try:
        return receiver.recv() if receiver.poll() else None
    except (EOFError, OSError):
        return None
    finally:
        receiver.close()


def worker_ended(index: int, code: int) -> str:
    """How worker `index` that exited with `code` (negative: killed by that signal) ended."""
    if code >= 0:
        return f"worker {index} exited with code {code} (see its output)"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    why = " (kill -9 or the out-of-memory killer)" if -code == signal.SIGKILL else ""
    return f"worker {index} was killed by {name}{why}; a trial it ran is retried when stale"


def worker_main(settings: RunSettings, results: Connection) -> None:
    """A worker process's entry: run trials with `settings`, send the summary to the parent."""
    from tuner.runner.console import configure_logging, make_console
    from tuner.runner.host import registered, registry_folder

    # A session of its own: a Ctrl-C in the terminal reaches the parent only, which then
    # sends each worker one SIGTERM (a second signal could cut short the FAIL write).
    os.setsid()
    assert settings.slot is not None
    configure_logging(settings.slot.log_level)
    try:
        with registered(registry_folder(settings.cache_dir)):  # other runs here count it
            summary = run_worker(settings, make_console())
    except TunerError as exc:
        print(f"error: worker {settings.slot.index}: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)  # stopped before its first trial: nothing to say
    results.send(summary)
    results.close()
    sys.exit(summary.exit_code)
