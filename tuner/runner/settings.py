"""What `tuner run` was asked to do, as one frozen value handed to every worker process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuner.spec import StudySpec

import logging
import os
import socket
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from tuner.errors import TunerError
from tuner.spec.schema import DEFAULT_TRIALS

WORKER_INDEX_ENV = "TUNER_WORKER_INDEX"
# Seconds a `tuner` process may take to import before `run` starts (torch's import, cold: ~5).
IMPORT_SECONDS_AT_MOST = 30.0


def worker_seed_offset() -> int:
    """This process's sampler seed offset: $TUNER_WORKER_INDEX, 'auto' (from the host), or 0.

    Replicas of one command line (Compose, a Kubernetes Indexed Job) differ only in this.
    """
    value = os.environ.get(WORKER_INDEX_ENV, "0").strip()
    if value == "auto":
        # Compose replicas share one command line; their hostnames differ.
        return zlib.crc32(socket.gethostname().encode()) % 100_000
    try:
        return int(value)
    except ValueError:
        raise TunerError(f"${WORKER_INDEX_ENV}={value!r}: must be an integer or 'auto'") from None


def process_started_at() -> float:
    """time.time() when this process started (Linux /proc), else now: a budget counts from it.

    The command's start includes Python's and torch's imports, a second or more before any
    tuner code runs. A process older than IMPORT_SECONDS_AT_MOST is a host calling the CLI in
    process (a test, a notebook): its budget counts from now.
    """
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return time.time()
    now = time.time()
    started = now - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    return started if now - started <= IMPORT_SECONDS_AT_MOST else now


@dataclass(frozen=True)
class WorkerSlot:
    """One of several worker processes that one `tuner run --workers K` starts on this machine."""

    index: int  # 0..count-1, added to the sampler seed offset
    count: int  # workers sharing the machine (and the trials left)
    threads: int  # torch threads of this worker: the machine's cores split between the workers
    log_level: int = logging.INFO  # the parent's, so `tuner -v run` is verbose in workers too


@dataclass(frozen=True)
class RunSettings:
    """The options of one `tuner run`.

    The storage URL lives here, never on a command line or in the environment: a worker process
    gets this object as the argument of its entry function.
    """

    study_file: Path  # or, for a study given as a dict, what names it (spec.DICT_STUDY)
    storage: str  # a resolved URL (tuner.storage.resolve_storage_url), maybe with a password
    storage_given: bool = False  # --storage was on the command line (so hints repeat it)
    # Where trials checkpoint (tuner.storage.artifacts.resolve_artifacts); None: no checkpoints
    artifacts: str | None = None
    trials: int | None = None  # the study's finished-trial total; None: the study file's
    device: str = "auto"
    data_dir: Path | None = None
    cache_dir: Path | None = None
    timeout: float | None = None  # seconds after which no new trial starts
    budget: float | None = None  # --budget seconds (None: the study file's [training].budget)
    started_at: float | None = None  # time.time() the command started: the budget counts from it
    storage_retry_seconds: float | None = None  # outage window; None: env or the default
    force: bool = False  # resume although the search space changed
    precision: str = "auto"
    compile: bool = False
    workers: int = 1  # worker processes to start on this machine
    devices: str | None = None  # comma-separated devices the workers are spread over
    jobs_per_device: int | None = None  # trials at once per device (workers = this x devices)
    seed_offset: int | None = None  # None: from $TUNER_WORKER_INDEX (replicas, cluster jobs)
    slot: WorkerSlot | None = None  # set for the workers `--workers` starts
    study_data: dict[str, Any] | None = None  # the study's tables when given as a dict, not a file

    @property
    def parallel(self) -> bool:
        """Whether this run starts worker processes instead of training itself."""
        return self.slot is None and (self.workers > 1 or self.jobs_per_device is not None)

    def load_spec(self) -> StudySpec:
        """The validated study: its file, or the dict it was given as."""
        from tuner.spec import load_spec

        return load_spec(self.study_file, self.study_data)


def run_budget(settings: RunSettings, spec: StudySpec) -> float | None:
    """The run's wall-clock budget in seconds: --budget, else the study file's
    [training].budget, else None."""
    return settings.budget or spec.training.budget


def trial_target(trials: int | None, spec: StudySpec, budget: float | None) -> int | None:
    """The finished-trial total a run aims for; None when a budget alone ends it.

    `--trials` wins. With a budget (the flag or [training].budget) and no `--trials`, the
    user chose time, not a count: the run uses the whole budget. Else the study file's count.
    """
    if trials is not None:
        return trials
    if budget is not None:
        return None
    return spec.training.trials or DEFAULT_TRIALS


def unused_trials_note(trials: int | None, spec: StudySpec, budget: float | None) -> str | None:
    """The line a run starts with when the study file's trial count gives way to its budget."""
    if trials is not None or budget is None or spec.training.trials is None:
        return None
    count = spec.training.trials
    return (
        f"{spec.path.name}: [training] trials = {count} is not used with a budget: the run "
        f"starts trials until the budget ends; add --trials {count} to stop at {count} "
        "finished trials"
    )
