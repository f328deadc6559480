"""A tuner-like worker process for the multi-worker tests, and helpers to start and watch it.

    python tests/optuna_worker.py --storage URL --study NAME --max-complete N [--sleep S]
        [--hang-marker PATH] [--heartbeat I --grace G]

It opens the storage with `tuner.storage.open_storage`, loads the study and optimizes `x**2`
(each trial sleeping `--sleep` s) until the study has N COMPLETE trials. With `--hang-marker`,
the first trial of this process writes its number to PATH and then hangs, for the test to kill
or signal it. Exit code 130 after SIGINT/SIGTERM.
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
    storage: str, study: str, max_complete: int, log: Path, **options: object
) -> subprocess.Popen:
    """Start a worker process; its stderr (warnings, tracebacks) goes to `log`."""
    command = [sys.executable, str(Path(__file__)), "--storage", storage, "--study", study,
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
    parser.add_argument("--study", required=True)
    parser.add_argument("--max-complete", type=int, required=True)
    parser.add_argument("--sleep", type=float, default=0.05)
    parser.add_argument("--hang-marker", type=Path)
    parser.add_argument("--heartbeat", type=int, default=30)
    parser.add_argument("--grace", type=int, default=90)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")

    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from tuner.runner.signals import interrupt_on_signals
    from tuner.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(args.storage, heartbeat_interval=args.heartbeat, grace_period=args.grace)
    study = optuna.load_study(
        study_name=args.study, storage=storage, sampler=optuna.samplers.RandomSampler()
    )
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

    stop_at_n = MaxTrialsCallback(args.max_complete, states=(TrialState.COMPLETE,))
    try:
        with interrupt_on_signals():
            study.optimize(objective, callbacks=[stop_at_n])
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
