"""A tuner-like worker process for the multi-worker tests, and helpers to start and watch it.

    python tests/optuna_worker.py --storage URL (--study NAME | --study-file PATH)
        --max-complete N [--sleep S] [--hang-marker PATH] [--heartbeat I --grace G]
        [--retry-seconds S] [--start-when PATH]

It opens the storage with `tuner.storage.open_storage`, loads the study (or, with
`--study-file`, creates or resumes it from a study file with `tuner.search.study.open_study`, as
`tuner run` does) and optimizes `x**2` (each trial sleeping `--sleep` s) with
`tuner.search.study.run_trials` until the study has N finished trials. With `--hang-marker`,
the first trial of this process writes its number to PATH and then hangs, for the test to kill
or signal it. With `--start-when`, it waits for PATH to exist before opening the storage, so
that many workers start at the same moment (it first creates PATH.PID.ready, so that the test
knows when all of them are waiting). Exit code 130 after SIGINT/SIGTERM; 2 with an
`error:` line for a TunerError, as `tuner run`.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def spawn(
    storage: str, study: str | Path, max_complete: int, log: Path, **options: object
) -> subprocess.Popen:
    """Start a worker process on the study named `study`, or on the study file at that Path;
    its stderr (warnings, tracebacks) goes to `log`."""
    which = ["--study-file", str(study)] if isinstance(study, Path) else ["--study", study]
    command = [sys.executable, str(Path(__file__)), "--storage", storage, *which,
               "--max-complete", str(max_complete)]  # fmt: skip
    for name, value in options.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "w") as stderr:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `condition` every 50 ms until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--storage", required=True)
    study_arg = parser.add_mutually_exclusive_group(required=True)
    study_arg.add_argument("--study")
    study_arg.add_argument("--study-file", type=Path)
    parser.add_argument("--max-complete", type=int, required=True)
    parser.add_argument("--sleep", type=float, default=0.05)
    parser.add_argument("--hang-marker", type=Path)
    parser.add_argument("--heartbeat", type=int, default=30)
    parser.add_argument("--grace", type=int)
    parser.add_argument("--retry-seconds", type=float)
    parser.add_argument("--start-when", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")

    import optuna

    from tuner.errors import TunerError
    from tuner.runner.signals import interrupt_on_signals
    from tuner.search.study import open_study, run_trials
    from tuner.spec import load_spec
    from tuner.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.start_when:
        Path(f"{args.start_when}.{os.getpid()}.ready").touch()
        while not args.start_when.exists():
            time.sleep(0.001)
    try:
        storage = open_storage(
            args.storage,
            heartbeat_interval=args.heartbeat,
            grace_period=args.grace,
            outage_timeout=args.retry_seconds,
        )
        if args.study_file:
            study = open_study(load_spec(args.study_file), storage, seed_offset=os.getpid())
        else:
            study = optuna.load_study(
                study_name=args.study, storage=storage, sampler=optuna.samplers.RandomSampler()
            )
    except TunerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    hang = [args.hang_marker] if args.hang_marker else []

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", os.getpid())
        x = trial.suggest_float("x", -10, 10)
        if hang:
            marker = hang.pop()
            marker.with_suffix(".tmp").write_text(str(trial.number))
            marker.with_suffix(".tmp").replace(marker)  # the test never reads half a file
            time.sleep(600)
        time.sleep(args.sleep)
        return x**2

    try:
        with interrupt_on_signals():
            run_trials(study, objective, args.max_complete)
    except KeyboardInterrupt:
        return 130
    except TunerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
