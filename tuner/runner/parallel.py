"""Several worker processes on one machine, sharing one study through its storage.

`tuner run --workers K` starts K child processes of `tuner run` (one trial at a time each) and
waits for them. Each child gets its own device from `--devices` (round robin, so K workers on D
GPUs run K/D trials per GPU) and its own worker index, which offsets the sampler seed so workers
don't propose the same configurations in lockstep.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass

import torch

from tuner.engine import available_cpus
from tuner.errors import TunerError

log = logging.getLogger(__name__)

WORKER_INDEX_ENV = "TUNER_WORKER_INDEX"


def worker_seed_offset() -> int:
    """This process's sampler seed offset: $TUNER_WORKER_INDEX, 'auto' (from the host), or 0."""
    value = os.environ.get(WORKER_INDEX_ENV, "0").strip()
    if value == "auto":
        # Compose replicas share one command line; their hostnames differ.
        return zlib.crc32(socket.gethostname().encode()) % 100_000
    try:
        return int(value)
    except ValueError:
        raise TunerError(f"${WORKER_INDEX_ENV}={value!r}: must be an integer or 'auto'") from None


def resolve_devices(devices: str | None, device: str) -> list[str]:
    """The devices workers are spread over: `--devices a,b`, else every GPU, else `--device`."""
    if devices:
        return [d.strip() for d in devices.split(",") if d.strip()]
    if device == "auto" and torch.cuda.is_available():
        return [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    return [device]


@dataclass(frozen=True)
class WorkerLaunch:
    """One child process to start."""

    index: int
    device: str
    argv: list[str]  # arguments after `tuner`


def plan_workers(run_args: list[str], workers: int, devices: list[str]) -> list[WorkerLaunch]:
    """Spread `workers` children over `devices`; each runs `tuner run RUN_ARGS --device D`."""
    if workers < 1:
        raise TunerError(f"--workers must be >= 1, got {workers}")
    return [
        WorkerLaunch(
            index=index,
            device=devices[index % len(devices)],
            argv=["run", *run_args, "--device", devices[index % len(devices)]],
        )
        for index in range(workers)
    ]


def worker_env(index: int, workers: int) -> dict[str, str]:
    """Environment variables for worker `index` of `workers` on this machine.

    The CPU cores are split between the workers (OMP_NUM_THREADS, unless already set): each
    PyTorch process otherwise starts one thread per core, and oversubscribed OpenMP threads spin
    at every barrier: on 2 cores, 2 workers x 2 threads took 2.3-3.2x as long for the same 6
    trials as 2 workers x 1 thread (bench/RESULTS.md).
    """
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, available_cpus() // workers))
    return {WORKER_INDEX_ENV: str(index), "OMP_NUM_THREADS": threads}


def run_workers(launches: list[WorkerLaunch]) -> int:
    """Start the workers, forward SIGINT/SIGTERM to them, wait; return the worst exit code.

    A child that was interrupted marks its running trial FAIL itself (see tuner.runner.signals).
    """
    children: list[subprocess.Popen] = []
    for launch in launches:
        env = {**os.environ, **worker_env(launch.index, len(launches))}
        command = [sys.executable, "-m", "tuner", *launch.argv]
        log.info("starting worker %d on %s", launch.index, launch.device)
        # A session of its own: a Ctrl-C in the terminal reaches the parent only, which then
        # sends each child exactly one SIGTERM (a second signal could cut short the FAIL write).
        children.append(subprocess.Popen(command, env=env, start_new_session=True))

    def forward(_signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while any(child.poll() is None for child in children):
            time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    codes = [child.returncode for child in children]
    failed = [(launch.index, code) for launch, code in zip(launches, codes, strict=True) if code]
    for index, code in failed:
        log.warning("worker %d exited with code %d", index, code)
    return max(codes, key=abs) if failed else 0
