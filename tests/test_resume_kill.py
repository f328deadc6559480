"""SIGKILL a real `tuner run` mid-trial; a new run resumes the trial from its last checkpoint.

The resumed trial must end with the per-epoch values of the same trial run without a kill, in
another database: both processes train on one CPU thread (OMP_NUM_THREADS=1), where training
is deterministic, so the values are compared exactly (tolerance 0).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import optuna
import pytest
import sqlalchemy
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
EPOCHS = 20  # long enough that the kill lands inside the trial
# Without the portfolio: its queued trials would run before the retry this test follows.
STUDY = "portfolio = false\n" + tiny_study_toml(
    "killed", training=f"max_epochs = {EPOCHS}\npatience = 0\ntrials = 1\ncheckpoint_seconds = 0"
).replace("fc_units = 16", "fc_units = 16\ndropout = 0.3")
FIELDS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")


def tuner_run(study: Path, url: str, artifacts: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "tuner", "run", "--study", str(study), "--storage", url,
               "--artifacts", str(artifacts), "--trials", "1"]  # fmt: skip
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


def kill_then_resume(url: str, tmp_path: Path) -> None:
    study = tmp_path / "killed.toml"
    study.write_text(STUDY)
    artifacts = tmp_path / "artifacts"
    victim = tuner_run(study, url, artifacts, tmp_path / "victim.log")
    engine = sqlalchemy.create_engine(url)
    try:
        wait_until(lambda: checkpoint_epoch(engine) >= 2, 120, "the checkpoint of epoch 2")
        victim.send_signal(signal.SIGKILL)  # no chance to record anything
        assert victim.wait() == -signal.SIGKILL
        saved = checkpoint_epoch(engine)
    finally:
        victim.kill()
        engine.dispose()
    assert 2 <= saved < EPOCHS, "the kill came after the trial had finished"

    # Any worker's stale check fails the dead trial and queues it again (grace shortened).
    storage = open_storage(url, heartbeat_interval=1, grace_period=2)
    stored = optuna.load_study(study_name="killed", storage=storage)

    def retried() -> bool:
        settle_stale_trials(stored)
        return len(stored.get_trials(states=(TrialState.WAITING,))) == 1

    wait_until(retried, 30, "the killed trial to be failed and queued again")

    log = tmp_path / "resume.log"
    output = finished(tuner_run(study, url, artifacts, log), log)
    assert f"trial 1 resumes after epoch {saved} from its checkpoint" in output
    resumed = optuna.load_study(study_name="killed", storage=url).trials[1]
    assert resumed.state == TrialState.COMPLETE
    assert resumed.user_attrs[attrs.RESUMED_FROM] == saved

    baseline_url = f"sqlite:///{tmp_path / 'baseline.db'}"
    log = tmp_path / "baseline.log"
    finished(tuner_run(study, baseline_url, tmp_path / "baseline-artifacts", log), log)
    baseline = optuna.load_study(study_name="killed", storage=baseline_url).trials[0]
    assert [row[0] for row in history(resumed)] == list(range(1, EPOCHS + 1))
    assert history(resumed) == history(baseline)


def test_sigkill_mid_trial_then_a_new_run_resumes_it_sqlite(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kill_then_resume(f"sqlite:///{tmp_path / 'tuner.db'}", tmp_path)


@pytest.mark.postgres
def test_sigkill_mid_trial_then_a_new_run_resumes_it_postgres(
    postgres_url: str, tmp_path: Path
) -> None:
    kill_then_resume(postgres_url, tmp_path)
