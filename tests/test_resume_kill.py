"""A real `tuner run` stopped mid-trial (SIGKILL, SIGTERM, a storage outage longer than its
retry window); a new run resumes the trial from its last checkpoint.

The resumed trial must end with the per-epoch values of the same trial run without a stop, in
another database: both processes train on one CPU thread (OMP_NUM_THREADS=1), where training
is deterministic, so the values are compared exactly (tolerance 0). The study is new, so it
queues the portfolio: the stopped trial is its first configuration, and the retry runs before
the portfolio trials still queued behind it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
import pg
import pytest
import sqlalchemy
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from optuna_worker import wait_until

from studies import tiny_study_toml
from tuner import attrs
from tuner.storage import open_storage, settle_stale_trials

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 20  # long enough that the stop lands inside the trial
STUDY = tiny_study_toml(
    "killed", training=f"max_epochs = {EPOCHS}\npatience = 0\ntrials = 1\ncheckpoint_seconds = 0"
).replace("fc_units = 16", "fc_units = 16\ndropout = 0.3")
FIELDS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
OUTAGE_WINDOW = 3  # seconds: --storage-retry-seconds of the run whose storage goes away

# How a test stops the first run once it has saved a checkpoint: (process, its log) -> None.
Stop = Callable[[subprocess.Popen, Path], None]


def tuner_run(
    study: Path, url: str, artifacts: Path | str, log: Path, *options: str
) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("TUNER_STORAGE_RETRY_SECONDS", None)
    command = [sys.executable, "-m", "tuner", "run", "--study", str(study), "--storage", url,
               "--artifacts", str(artifacts), "--trials", "1", *options]  # fmt: skip
    with open(log, "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def checkpoint_epoch(engine: sqlalchemy.engine.Engine) -> int:
    """The epoch of trial 0's last checkpoint (0: none yet), read with plain SQL: opening the
    storage with Optuna would race the run that is creating its schema."""
    query = sqlalchemy.text(
        "SELECT a.value_json FROM trial_user_attributes a JOIN trials t "
        "ON a.trial_id = t.trial_id WHERE t.number = 0 AND a.key = :key"
    )
    try:
        with engine.connect() as connection:
            value = connection.execute(query, {"key": attrs.CHECKPOINT}).scalar()
    except sqlalchemy.exc.DBAPIError:  # no tables yet
        return 0
    pointer = json.loads(value) if value else None
    return pointer["epoch"] if pointer else 0


def finished(process: subprocess.Popen, log: Path) -> str:
    wait_until(lambda: process.poll() is not None, 300, "tuner run to finish")
    output = log.read_text()
    assert process.returncode == 0, output
    return output


def history(trial: optuna.trial.FrozenTrial) -> list[tuple]:
    return [tuple(row[key] for key in FIELDS) for row in trial.user_attrs[attrs.HISTORY]]


def retry_of_first(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    retried = RetryHeartbeatStaleTrialCallback.retried_trial_number
    return next((trial for trial in study.get_trials() if retried(trial) == 0), None)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> list[tuple]:
    """The history of the study's first trial run without a stop, in a database of its own."""
    tmp_path = tmp_path_factory.mktemp("baseline")
    study = tmp_path / "killed.toml"
    study.write_text(STUDY)
    url = f"sqlite:///{tmp_path / 'baseline.db'}"
    log = tmp_path / "baseline.log"
    finished(tuner_run(study, url, tmp_path / "artifacts", log), log)
    return history(optuna.load_study(study_name="killed", storage=url).trials[0])


def stop_then_resume(
    url: str,
    tmp_path: Path,
    baseline: list[tuple],
    stop: Stop,
    *options: str,
    artifacts: str | None = None,
) -> None:
    """Run the study, `stop` the run after trial 0's checkpoint of epoch 2, then resume it;
    the checkpoints go to `artifacts` (default: a folder in `tmp_path`)."""
    study = tmp_path / "killed.toml"
    study.write_text(STUDY)
    artifacts = artifacts or str(tmp_path / "artifacts")
    victim_log = tmp_path / "victim.log"
    victim = tuner_run(study, url, artifacts, victim_log, *options)
    engine = sqlalchemy.create_engine(url)
    try:
        wait_until(lambda: checkpoint_epoch(engine) >= 2, 120, "the checkpoint of epoch 2")
        engine.dispose()  # no connection of the test's outlives a stopped server
        stop(victim, victim_log)
        saved = checkpoint_epoch(engine)
    finally:
        victim.kill()
        engine.dispose()
    assert 2 <= saved < EPOCHS, "the stop came after the trial had finished"

    # Any worker's stale check fails a dead run's trial and queues it again (grace shortened);
    # a run stopped by a signal has queued it already.
    storage = open_storage(url, heartbeat_interval=1, grace_period=2)
    stored = optuna.load_study(study_name="killed", storage=storage)

    def retried() -> bool:
        settle_stale_trials(stored)
        return retry_of_first(stored) is not None

    wait_until(retried, 30, "the stopped trial to be failed and queued again")
    portfolio = [t.number for t in stored.get_trials(states=(TrialState.WAITING,))]

    log = tmp_path / "resume.log"
    output = finished(tuner_run(study, url, artifacts, log), log)
    after = optuna.load_study(study_name="killed", storage=url)
    resumed = retry_of_first(after)
    assert f"trial {resumed.number} resumes after epoch {saved} from its checkpoint" in output
    assert resumed.state == TrialState.COMPLETE
    assert resumed.user_attrs[attrs.RESUMED_FROM] == saved
    assert [row[0] for row in history(resumed)] == list(range(1, EPOCHS + 1))
    assert history(resumed) == baseline
    # `--trials 1` ran the retry, numbered after the portfolio trials queued before it; they
    # still wait, for the next run.
    assert len(portfolio) >= 2 and max(portfolio) == resumed.number
    waiting = [t.number for t in after.get_trials(states=(TrialState.WAITING,))]
    assert waiting == [number for number in portfolio if number != resumed.number]
    assert all(after.trials[number].user_attrs[attrs.SOURCE].startswith("portfolio:")
               for number in waiting)  # fmt: skip


def sigkill(victim: subprocess.Popen, log: Path) -> None:
    victim.send_signal(signal.SIGKILL)  # no chance to record anything
    assert victim.wait() == -signal.SIGKILL


def sigterm(victim: subprocess.Popen, log: Path) -> None:
    victim.send_signal(signal.SIGTERM)  # what `docker stop` and Kubernetes send
    wait_until(lambda: victim.poll() is not None, 60, "tuner run to exit")
    output = log.read_text()
    assert victim.returncode == 130, output
    assert "interrupted: the running trial 0 was marked failed" in output, output


def test_sigkill_mid_trial_then_a_new_run_resumes_it_sqlite(
    tmp_path: Path, baseline: list[tuple]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stop_then_resume(f"sqlite:///{tmp_path / 'tuner.db'}", tmp_path, baseline, sigkill)


@pytest.mark.postgres
def test_sigkill_mid_trial_then_a_new_run_resumes_it_postgres(
    postgres_url: str, tmp_path: Path, baseline: list[tuple]
) -> None:
    stop_then_resume(postgres_url, tmp_path, baseline, sigkill)


def test_a_trial_stopped_by_sigterm_resumes_from_its_checkpoint(
    tmp_path: Path, baseline: list[tuple]
) -> None:
    stop_then_resume(f"sqlite:///{tmp_path / 'tuner.db'}", tmp_path, baseline, sigterm)


@pytest.mark.postgres
def test_a_trial_ended_by_the_storage_outage_exit_resumes_from_its_checkpoint(
    tmp_path: Path, baseline: list[tuple]
) -> None:
    """The database goes away for longer than the run's retry window: the run exits with one
    error line, its trial left RUNNING; once the database is back, the stale check retries it."""
    if not pg.postgres_available():
        pytest.skip("PostgreSQL server binaries are not on PATH")
    server = pg.start_postgres()  # its own server: this test stops it

    def outage(victim: subprocess.Popen, log: Path) -> None:
        server.stop("fast")
        wait_until(lambda: victim.poll() is not None, 120, "the run to give up on the storage")
        server.start()
        output = log.read_text()
        assert victim.returncode == 2, output
        assert output.splitlines()[-1].startswith("error: lost the storage for "), output

    try:
        url = server.create_database("outage")
        window = ("--storage-retry-seconds", str(OUTAGE_WINDOW))
        stop_then_resume(url, tmp_path, baseline, outage, *window)
    finally:
        pg.stop_postgres(server)
