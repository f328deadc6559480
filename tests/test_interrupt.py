"""SIGTERM and Ctrl-C to a real `tuner run` process: one line, exit 130, the trial runs again."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from optuna_worker import wait_until

from studies import tiny_study_toml

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]

ROOT = Path(__file__).resolve().parent.parent
# Long enough that the signal always lands inside training.
LONG_STUDY = tiny_study_toml("long", train_subset=400, training="max_epochs = 500\npatience = 0")


def start_run(study: Path, url: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "tuner", "run", "--study", str(study), "--storage", url]
    with open(log, "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def trials(url: str) -> list[FrozenTrial]:
    return optuna.load_study(study_name="long", storage=url).get_trials()


def training(db: Path, number: int) -> bool:
    """Whether trial `number` is RUNNING and has reported an epoch (so it is inside training).

    Read with sqlite3, read-only: opening the file with Optuna would create its schema, racing
    the `tuner run` that is creating it.
    """
    query = (
        "SELECT 1 FROM trials t JOIN trial_intermediate_values v ON v.trial_id = t.trial_id "
        "WHERE t.number = ? AND t.state = 'RUNNING'"
    )
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
            return connection.execute(query, (number,)).fetchone() is not None
    except sqlite3.OperationalError:  # no file or no tables yet
        return False


def interrupt(process: subprocess.Popen, signum: int, log: Path) -> str:
    process.send_signal(signum)
    wait_until(lambda: process.poll() is not None, 60, "tuner run to exit")
    output = log.read_text()
    assert process.returncode == 130, output
    return output


def assert_one_quiet_line(output: str, number: int) -> None:
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert f"Trial {number} failed" not in output  # Optuna's own warnings
    assert (
        f"interrupted: the running trial {number} was marked failed and runs again first; "
        "run the same command to resume study long"
    ) in output.splitlines()


def test_a_stop_signal_prints_one_line_and_the_next_run_retries_the_trial(tmp_path: Path) -> None:
    study = tmp_path / "long.toml"
    study.write_text(LONG_STUDY)
    db = tmp_path / "tuner.db"
    url = f"sqlite:///{db}"

    first = start_run(study, url, tmp_path / "first.log")
    wait_until(lambda: training(db, 0), 120, "trial 0 to train")
    output = interrupt(first, signal.SIGTERM, tmp_path / "first.log")
    assert_one_quiet_line(output, 0)
    # A new study: the portfolio's other configurations wait behind trial 0, its retry last.
    interrupted, *portfolio, retry = trials(url)
    assert interrupted.state == TrialState.FAIL
    assert retry.state == TrialState.WAITING and retry.params == interrupted.params
    assert [t.state for t in portfolio] == [TrialState.WAITING] * len(portfolio)

    second = start_run(study, url, tmp_path / "second.log")
    wait_until(lambda: training(db, retry.number), 120, "the retry to train first")
    running = trials(url)[retry.number]
    assert running.params == interrupted.params  # the same configuration, run again
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(running) == 0
    output = interrupt(second, signal.SIGINT, tmp_path / "second.log")
    assert_one_quiet_line(output, retry.number)
    *before, again = trials(url)
    assert [t.state for t in before] == [TrialState.FAIL, *[TrialState.WAITING] * len(portfolio),
                                         TrialState.FAIL]  # fmt: skip
    assert again.state == TrialState.WAITING
    # Optuna names the first trial of a chain of retries.
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(again) == 0
    assert again.params == interrupted.params
