"""Several worker processes on one study: exact trial counts, dead workers, stop signals,
many workers starting at once on an empty database.

The workers are real processes (tests/optuna_worker.py) running tuner's trial loop
(`tuner.search.study.run_trials`) on `tuner.storage.open_storage`, as `tuner run` does on
several machines.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from optuna_worker import spawn, wait_until

from studies import tiny_study_toml
from tuner.runner.signals import interrupt_on_signals
from tuner.storage import open_storage

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def create_study(url: str) -> str:
    name = "workers"
    optuna.create_study(study_name=name, storage=open_storage(url))
    return name


def load_trials(url: str, study: str) -> list[FrozenTrial]:
    return optuna.load_study(study_name=study, storage=open_storage(url)).get_trials()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file that does not exist yet, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/study.db"
    return request.getfixturevalue("postgres_url")


def wait_all(procs: list[subprocess.Popen], timeout: float = 60) -> list[int]:
    wait_until(lambda: all(p.poll() is not None for p in procs), timeout, "workers to exit")
    return [p.returncode for p in procs]


def logs(tmp_path: Path) -> str:
    return "".join(log.read_text() for log in sorted(tmp_path.glob("*.log")))


def count(trials: list[FrozenTrial], state: TrialState) -> int:
    return sum(t.state == state for t in trials)


def assert_consistent(trials: list[FrozenTrial], n: int, workers_alive: int) -> None:
    """Every trial finished, numbers unique, and N complete trials plus at most W-1 extra.

    MaxTrialsCallback stops a worker when, after one of its trials ends, it sees >= N COMPLETE.
    From the commit of the N-th COMPLETE on, each other live worker can still finish the trial it
    is running (or one it started before its check saw the N-th), and the worker that committed
    the N-th sees it and stops: so N <= complete <= N + (live workers - 1).
    """
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)), "duplicate trial numbers"
    assert sorted(numbers) == list(range(len(numbers)))
    unfinished = [(t.number, t.state.name) for t in trials if not t.state.is_finished()]
    assert not unfinished, f"trials left unfinished: {unfinished}"
    complete = count(trials, TrialState.COMPLETE)
    assert n <= complete <= n + workers_alive - 1, (complete, n, workers_alive)


@pytest.mark.slow
@pytest.mark.parametrize(
    "scheme", [pytest.param("postgres", marks=pytest.mark.postgres), "sqlite", "journal"]
)
def test_four_workers_stop_at_n_complete(
    scheme: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = {
        "postgres": lambda: request.getfixturevalue("postgres_url"),
        "sqlite": lambda: f"sqlite:///{tmp_path}/study.db",
        "journal": lambda: f"journal:{tmp_path}/j.log",
    }[scheme]()
    study, n, workers = create_study(url), 20, 4
    procs = [spawn(url, study, n, tmp_path / f"w{i}.log") for i in range(workers)]

    assert wait_all(procs) == [0] * workers, logs(tmp_path)
    trials = load_trials(url, study)
    assert_consistent(trials, n, workers)
    assert count(trials, TrialState.FAIL) == 0
    assert "database is locked" not in logs(tmp_path)
    if scheme == "postgres":  # on a file one early worker may run all 20 before others start
        assert len({t.user_attrs["worker"] for t in trials}) > 1  # the work was really shared


@pytest.mark.postgres
@pytest.mark.slow
def test_killed_worker_trial_fails_and_is_retried(postgres_url: str, tmp_path: Path) -> None:
    study, n = create_study(postgres_url), 10
    beat = {"heartbeat": 1, "grace": 3}  # a dead worker's trial is stale 3 s after its last beat
    marker = tmp_path / "victim.marker"
    victim = spawn(postgres_url, study, n, tmp_path / "victim.log", hang_marker=marker, **beat)
    wait_until(marker.exists, 30, "the victim to start its trial")
    killed = int(marker.read_text())
    victim.send_signal(signal.SIGKILL)  # dies inside the trial: no chance to record anything
    assert load_trials(postgres_url, study)[killed].state == TrialState.RUNNING

    # Survivors would fail the trial at their next trial start, whenever that is; starting them
    # once it is stale makes the test independent of how fast they would otherwise reach N.
    storage = open_storage(postgres_url, heartbeat_interval=1, grace_period=3)
    loaded = optuna.load_study(study_name=study, storage=storage)
    killed_id = loaded.trials[killed]._trial_id
    wait_until(
        lambda: killed_id in storage._get_stale_trial_ids(loaded._study_id),
        30,
        "the killed trial's heartbeat to go stale",
    )
    survivors = [
        spawn(postgres_url, study, n, tmp_path / f"w{i}.log", sleep=0.1, **beat) for i in (1, 2)
    ]

    assert wait_all(survivors) == [0, 0], logs(tmp_path)
    assert victim.wait() == -signal.SIGKILL
    trials = load_trials(postgres_url, study)
    assert trials[killed].state == TrialState.FAIL
    retried_from = RetryHeartbeatStaleTrialCallback.retried_trial_number
    retries = [t for t in trials if retried_from(t) == killed]
    assert [t.state for t in retries] == [TrialState.COMPLETE]
    assert retries[0].params == trials[killed].params  # the same configuration, run again
    assert count(trials, TrialState.FAIL) == 1
    assert_consistent(trials, n, workers_alive=2)


@pytest.mark.slow
def test_eight_workers_started_at_once_on_an_empty_database_all_run(
    database_url: str, tmp_path: Path
) -> None:
    """The first run of `docker compose --scale worker=8`: all create the tables and the study."""
    study_file = tmp_path / "race.toml"
    study_file.write_text(tiny_study_toml("race"))
    go, workers, n = tmp_path / "go", 8, 8
    procs = [
        spawn(database_url, study_file, n, tmp_path / f"w{i}.log", start_when=go)
        for i in range(workers)
    ]

    def all_waiting() -> bool:
        exited = any(p.poll() is not None for p in procs)
        return exited or len(list(tmp_path.glob("go.*.ready"))) == workers

    wait_until(all_waiting, 60, "the workers to wait at the start line")
    go.touch()  # released together, each opening the empty database

    assert wait_all(procs) == [0] * workers, logs(tmp_path)
    trials = load_trials(database_url, "race")
    assert_consistent(trials, n, workers)
    assert count(trials, TrialState.FAIL) == 0


@pytest.mark.slow
def test_a_kill_in_the_last_trials_is_retried_before_the_workers_stop(
    database_url: str, tmp_path: Path
) -> None:
    """The study reaches N while a killed worker's trial is RUNNING: it must not stay so."""
    study, n = create_study(database_url), 4
    beat = {"heartbeat": 1, "grace": 3}
    marker = tmp_path / "victim.marker"
    victim = spawn(database_url, study, n, tmp_path / "victim.log", hang_marker=marker, **beat)
    wait_until(marker.exists, 30, "the victim to start its trial")
    killed = int(marker.read_text())
    survivor = spawn(database_url, study, n, tmp_path / "survivor.log", **beat)

    def complete() -> int:
        return count(load_trials(database_url, study), TrialState.COMPLETE)

    wait_until(lambda: complete() >= n or survivor.poll() is not None, 60, "N complete trials")
    victim.send_signal(signal.SIGKILL)  # dies in the last trial still running, beating till now

    assert wait_all([survivor]) == [0], logs(tmp_path)
    trials = load_trials(database_url, study)
    assert trials[killed].state == TrialState.FAIL
    retried_from = RetryHeartbeatStaleTrialCallback.retried_trial_number
    retries = [t for t in trials if retried_from(t) == killed]
    assert [t.state for t in retries] == [TrialState.COMPLETE]
    assert retries[0].params == trials[killed].params  # the same configuration, run again
    assert_consistent(trials, n + 1, workers_alive=1)  # the retry runs on top of the N


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_mid_trial_leaves_no_trial_running(signum: int, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/study.db"
    study = create_study(url)
    marker = tmp_path / "trial.marker"
    worker = spawn(url, study, 10, tmp_path / "w.log", hang_marker=marker)
    wait_until(marker.exists, 30, "the worker to start its trial")

    worker.send_signal(signum)

    assert wait_all([worker], timeout=30) == [130], logs(tmp_path)
    trials = load_trials(url, study)
    assert [t.state for t in trials] == [TrialState.FAIL]


def test_interrupt_on_signals_turns_sigterm_into_keyboard_interrupt() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), interrupt_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        wait_until(lambda: False, 5, "SIGTERM to interrupt")  # interrupted by the handler
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
