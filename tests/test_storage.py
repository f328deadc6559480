"""tuner.storage: URL resolution, one-line errors, heartbeats, pool size, outage retries,
trials left without an owner by an outage, stale trials at the end of a study, and the fence
around Optuna's private parts."""

from __future__ import annotations

import abc
import importlib.util
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pg
import psycopg
import pytest
import sqlalchemy.exc
from net import free_port
from optuna.storages import (
    BaseStorage,
    JournalStorage,
    RetryHeartbeatStaleTrialCallback,
    fail_stale_trials,
)
from optuna.trial import TrialState
from optuna_worker import ROOT, spawn, wait_until

from studies import tiny_study_toml
from tuner.errors import TunerError
from tuner.search.study import run_trials
from tuner.storage import (
    DEFAULT_STORAGE_URL,
    RetryingStorage,
    StorageLostError,
    check_local_workers,
    mask_url,
    open_storage,
    resolve_retry_seconds,
    resolve_storage_url,
    settle_stale_trials,
)
from tuner.storage import _optuna as optuna_private

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def open_error(url: str, **options: object) -> str:
    """The TunerError message open_storage gives for `url`; checks it is one line."""
    with pytest.raises(TunerError) as caught:
        open_storage(url, **options)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- resolving and masking URLs ---


def test_resolve_prefers_flag_then_environment_then_default(monkeypatch) -> None:
    monkeypatch.delenv("TUNER_STORAGE", raising=False)
    assert resolve_storage_url(None) == DEFAULT_STORAGE_URL == "sqlite:///tuner.db"
    monkeypatch.setenv("TUNER_STORAGE", "journal:env.log")
    assert resolve_storage_url(None) == "journal:env.log"
    assert resolve_storage_url("sqlite:///flag.db") == "sqlite:///flag.db"


def test_mask_url_hides_the_password() -> None:
    assert (
        mask_url("postgresql://tuner:s3cret@db:5432/tuner")
        == "postgresql://tuner:***@db:5432/tuner"
    )
    assert "s3cret" not in mask_url("weird://tuner:s3cret@db/x y")
    assert mask_url("sqlite:///tuner.db") == "sqlite:///tuner.db"
    assert mask_url("postgresql://u:s3cret@db:notaport/x") == "postgresql://u:***@db:notaport/x"


def test_mask_url_hides_a_password_in_the_query_or_with_unencoded_characters() -> None:
    assert (
        mask_url("postgresql://tuner@127.0.0.1:54329/db?password=SECRET")
        == "postgresql://tuner@127.0.0.1:54329/db?password=***"
    )
    assert "SECRET" not in mask_url("postgresql://tuner@h/db?sslmode=require&PassWord=SECRET")
    # An unencoded '@', ':' or '/' in the password: hidden up to the last '@' before the host.
    assert mask_url("postgresql://tuner:p@ss:w/rd@host/db") == "postgresql://tuner:***@host/db"
    assert mask_url("postgresql://tuner:p@ss@host:5432/db") == "postgresql://tuner:***@host:5432/db"
    assert mask_url("journal:some@file") == "journal:some@file"  # no password there


def test_an_unencoded_at_in_the_password_is_refused_pointing_to_percent_encoding() -> None:
    for url in ("postgresql://tuner:p@ss:w/rd@host/db", "postgresql://tuner:p@ss@host/db"):
        message = open_error(url)
        assert "p@ss" not in message and "ss@host" not in message and "w/rd" not in message
        assert "percent-encode '@' as %40" in message, message


def test_the_storage_url_can_come_from_a_file_named_by_the_environment(
    monkeypatch, tmp_path: Path
) -> None:
    """A docker or Kubernetes secret file keeps the password off every command line."""
    secret = tmp_path / "storage-url"
    secret.write_text("postgresql://tuner:s3cret@db/tuner\n")
    monkeypatch.delenv("TUNER_STORAGE", raising=False)
    monkeypatch.setenv("TUNER_STORAGE_FILE", str(secret))
    assert resolve_storage_url(None) == "postgresql://tuner:s3cret@db/tuner"
    assert resolve_storage_url("sqlite:///flag.db") == "sqlite:///flag.db"
    monkeypatch.setenv("TUNER_STORAGE", "journal:env.log")
    with pytest.raises(TunerError, match=r"TUNER_STORAGE and \$TUNER_STORAGE_FILE are both set"):
        resolve_storage_url(None)
    monkeypatch.delenv("TUNER_STORAGE")
    secret.write_text("\n")
    with pytest.raises(TunerError, match="the file is empty"):
        resolve_storage_url(None)
    monkeypatch.setenv("TUNER_STORAGE_FILE", str(tmp_path / "missing"))
    with pytest.raises(TunerError, match=r"TUNER_STORAGE_FILE=.*cannot read"):
        resolve_storage_url(None)


def test_retry_window_prefers_flag_then_environment_then_60_s(monkeypatch) -> None:
    monkeypatch.delenv("TUNER_STORAGE_RETRY_SECONDS", raising=False)
    assert resolve_retry_seconds(None) == 60
    monkeypatch.setenv("TUNER_STORAGE_RETRY_SECONDS", "180")
    assert resolve_retry_seconds(None) == 180
    assert resolve_retry_seconds(5) == 5
    for bad in ("soon", "0", "-3", "nan"):
        monkeypatch.setenv("TUNER_STORAGE_RETRY_SECONDS", bad)
        with pytest.raises(TunerError, match=r"TUNER_STORAGE_RETRY_SECONDS=.*number of seconds"):
            resolve_retry_seconds(None)


def test_the_grace_period_outlasts_the_retry_window(tmp_path: Path) -> None:
    """Workers that rode out an outage must not find each other's trials stale afterwards."""
    url = f"sqlite:///{tmp_path}/t.db"
    assert open_storage(url, outage_timeout=30).rdb.grace_period == 90
    assert open_storage(url).rdb.grace_period == 100  # 60 s window + 30 s heartbeat + 10 s
    assert open_storage(url, outage_timeout=300).rdb.grace_period == 340
    assert open_storage(url, heartbeat_interval=1, grace_period=3).rdb.grace_period == 3


# --- one-line errors ---


def test_unknown_scheme_and_non_url_are_rejected() -> None:
    message = open_error("mysql://root:hunter2@db/tuner")
    assert "unsupported storage URL scheme 'mysql'" in message and "hunter2" not in message
    assert "did you mean sqlite:///tuner.db?" in open_error("tuner.db")


def test_unreachable_postgres_names_host_and_port() -> None:
    port = free_port()
    message = open_error(f"postgresql://tuner:hunter2@127.0.0.1:{port}/tuner")
    assert f"127.0.0.1:{port} is not reachable" in message
    assert "hunter2" not in message


def test_postgres_url_spellings_all_use_psycopg3() -> None:
    port = free_port()
    for scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        assert "is not reachable" in open_error(f"{scheme}://tuner:pw@127.0.0.1:{port}/tuner")
    if importlib.util.find_spec("psycopg2") is None:
        message = open_error(f"postgresql+psycopg2://tuner:pw@127.0.0.1:{port}/tuner")
        assert "driver for 'postgresql+psycopg2' is not installed" in message


@pytest.mark.postgres
def test_wrong_postgres_password_is_reported_without_the_password(
    postgres_server: pg.PostgresServer,
) -> None:
    message = open_error(postgres_server.url(password="hunter2"))
    assert "wrong user name or password" in message and "'tuner'" in message
    assert "hunter2" not in message and postgres_server.password not in message
    in_query = f"postgresql://tuner@127.0.0.1:{postgres_server.port}/postgres?password=hunter2"
    message = open_error(in_query)
    assert "wrong user name or password" in message and "hunter2" not in message


@pytest.mark.postgres
def test_missing_postgres_database_is_named(postgres_server: pg.PostgresServer) -> None:
    assert 'database "nope" does not exist' in open_error(postgres_server.url("nope"))


def test_sqlite_in_missing_directory(tmp_path: Path) -> None:
    message = open_error(f"sqlite:///{tmp_path}/missing/tuner.db")
    assert f"directory {tmp_path}/missing does not exist" in message


def test_journal_in_missing_directory(tmp_path: Path) -> None:
    assert "does not exist" in open_error(f"journal:{tmp_path}/missing/tuner.journal")


def test_grace_period_must_exceed_heartbeat_interval(tmp_path: Path) -> None:
    message = open_error(f"sqlite:///{tmp_path}/t.db", heartbeat_interval=30, grace_period=30)
    assert "grace_period" in message


def unprivileged(check: Callable[[], str]) -> str:
    """Run `check` as a user that file permissions apply to (root ignores them).

    As root, `check` runs in a forked child that switched to `nobody`; its result comes back
    through a pipe. Everything it needs must already be imported (nobody cannot read /root).
    """
    if os.geteuid() != 0:
        return check()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            result = check()
        except BaseException as exc:
            result = f"child failed: {exc!r}"
        os.write(write_end, result.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        result = pipe.read()
    os.waitpid(pid, 0)
    return result


def error_or_none(url: str) -> Callable[[], str]:
    def check() -> str:
        try:
            open_storage(url)
        except TunerError as exc:
            return str(exc)
        return "no error"

    return check


def test_sqlite_in_read_only_directory() -> None:
    with tempfile.TemporaryDirectory() as tmp:  # not under pytest's root-only tmp dir
        os.chmod(tmp, 0o555)
        message = unprivileged(error_or_none(f"sqlite:///{tmp}/tuner.db"))
        os.chmod(tmp, 0o755)
    assert message == (
        f"SQLite storage {tmp}/tuner.db: directory {tmp} is read-only "
        "(SQLite writes the database and its -wal/-shm files there)"
    )


def test_read_only_sqlite_file() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sqlite3.connect(f"{tmp}/tuner.db").close()
        os.chmod(f"{tmp}/tuner.db", 0o444)
        os.chmod(tmp, 0o777)
        message = unprivileged(error_or_none(f"sqlite:///{tmp}/tuner.db"))
    assert message == f"SQLite storage {tmp}/tuner.db: the file is read-only"


def test_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_text("not a database" * 100)
    assert "file is not a database" in open_error(f"sqlite:///{tmp_path}/notes.db")


def damaged_study_file(path: Path) -> None:
    """A study database with an intact header and schema page, and one data page overwritten."""
    study = optuna.create_study(study_name="s", storage=open_storage(f"sqlite:///{path}"))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(path, "r+b") as file:
        page_size = 4096
        assert path.stat().st_size > 3 * page_size
        file.seek(2 * page_size)
        file.write(bytes(range(256)) * (page_size // 256))


def tuner_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "tuner", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("damaged", "the file is damaged (database disk image is malformed)"),
        ("bad port", "storage URL postgresql://u:***@db:notaport/x: port 'notaport' is not a"),
    ],
)
def test_unusable_storage_is_one_line_exit_2(tmp_path: Path, kind: str, expected: str) -> None:
    if kind == "damaged":
        damaged_study_file(tmp_path / "tuner.db")
        url = f"sqlite:///{tmp_path}/tuner.db"
    else:
        url = "postgresql://u:s3cret@db:notaport/x"
    result = tuner_cli("status", "--study", "s", "--storage", url)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and expected in line and "s3cret" not in line


# --- what open_storage sets up ---


def test_sqlite_storage_uses_wal_heartbeats_and_retry(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/tuner.db", max_retry=5)
    assert isinstance(storage, RetryingStorage)
    assert storage.get_heartbeat_interval() == 30
    callback = storage.get_heartbeat_stale_trial_callback()
    assert isinstance(callback, RetryHeartbeatStaleTrialCallback) and callback._max_retry == 5
    with sqlite3.connect(tmp_path / "tuner.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    study = optuna.create_study(storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2


def test_journal_storage(tmp_path: Path) -> None:
    storage = open_storage(f"journal:{tmp_path}/tuner.journal")
    assert isinstance(storage, JournalStorage)
    optuna.create_study(study_name="s", storage=storage).optimize(lambda t: 1.0, n_trials=2)
    reopened = open_storage(f"journal:{tmp_path}/tuner.journal")
    assert len(optuna.load_study(study_name="s", storage=reopened).trials) == 2


def test_check_local_workers(tmp_path: Path) -> None:
    check_local_workers(f"sqlite:///{tmp_path}/tuner.db", 4)  # WAL + busy timeout: fine
    check_local_workers(f"journal:{tmp_path}/tuner.journal", 4)
    check_local_workers("postgresql://u:p@db/tuner", 32)
    check_local_workers("sqlite://", 1)
    with pytest.raises(TunerError, match="in-memory"):
        check_local_workers("sqlite:///:memory:", 2)


@pytest.mark.postgres
def test_a_postgres_worker_holds_at_most_two_connections(
    postgres_server: pg.PostgresServer, postgres_url: str
) -> None:
    """Main thread + heartbeat thread: 32 workers need at most 64 of max_connections=100."""
    storage = open_storage(postgres_url, heartbeat_interval=1, grace_period=2)
    database = sqlalchemy.engine.make_url(postgres_url).database
    seen: list[int] = []
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name='tuner'"
    with psycopg.connect(postgres_server.url(database).replace("+psycopg", "")) as watcher:

        def objective(trial: optuna.Trial) -> float:
            seen.append(watcher.execute(query, (database,)).fetchone()[0])
            return trial.suggest_float("x", 0, 1)

        optuna.create_study(storage=storage).optimize(objective, n_trials=5)
        seen.append(watcher.execute(query, (database,)).fetchone()[0])
    assert 1 <= max(seen) <= 2


# --- retrying through an outage ---


def connection_lost() -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionError("server closed"))


def failing(call: Callable, times: int, after: bool = False) -> Callable:
    """`call` that raises a connection error `times` times (after running it, if `after`)."""
    left = [times]

    def flaky(*args, **kwargs):
        if left[0] and not after:
            left[0] -= 1
            raise connection_lost()
        result = call(*args, **kwargs)
        if left[0]:
            left[0] -= 1
            raise connection_lost()
        return result

    return flaky


def fast_retrying(
    tmp_path: Path, outage_timeout: float = 5.0, url: str | None = None, **options: int
) -> RetryingStorage:
    url = url or f"sqlite:///{tmp_path}/tuner.db"
    storage = open_storage(url, outage_timeout=outage_timeout, **options)
    assert isinstance(storage, RetryingStorage)
    storage.first_delay = 0.01
    return storage


def test_transient_errors_are_retried(tmp_path: Path, monkeypatch, caplog) -> None:
    storage = fast_retrying(tmp_path)
    study = optuna.create_study(storage=storage)
    backend = storage.backend
    monkeypatch.setattr(backend, "create_new_trial", failing(backend.create_new_trial, 3))
    study.optimize(lambda trial: 1.0, n_trials=1)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    assert "storage unavailable (server closed)" in caplog.text
    assert "storage reachable again" in caplog.text


def test_a_long_outage_ends_in_a_tuner_error(tmp_path: Path, monkeypatch) -> None:
    storage = fast_retrying(tmp_path, outage_timeout=0.3)
    study = optuna.create_study(storage=storage)
    backend = storage.backend
    monkeypatch.setattr(backend, "get_all_trials", failing(backend.get_all_trials, 10**6))
    with pytest.raises(TunerError, match="lost the storage for 0 s: server closed"):
        study.trials  # noqa: B018


def test_other_errors_are_not_retried(tmp_path: Path, monkeypatch) -> None:
    storage = fast_retrying(tmp_path)
    calls = []

    def broken(*args):
        calls.append(args)
        raise sqlalchemy.exc.OperationalError("", {}, sqlite3.OperationalError("no such table"))

    monkeypatch.setattr(storage.backend, "get_all_studies", broken)
    with pytest.raises(sqlalchemy.exc.OperationalError):
        storage.get_all_studies()
    assert len(calls) == 1


def test_a_result_stored_before_the_connection_dropped_counts(tmp_path: Path, monkeypatch) -> None:
    storage = fast_retrying(tmp_path)
    study = optuna.create_study(storage=storage)
    real = storage.backend.set_trial_state_values
    monkeypatch.setattr(storage.backend, "set_trial_state_values", failing(real, 1, after=True))
    study.optimize(lambda trial: 1.0, n_trials=1)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tuner.db"
    return request.getfixturevalue("postgres_url")


def test_a_trial_created_before_the_connection_dropped_does_not_stay_running(
    tmp_path: Path, database_url: str, monkeypatch
) -> None:
    """The database commits a new trial, then the reply is lost: the retry creates another.

    The first trial has no owner and never beats; the stale check must fail and re-queue it.
    """
    storage = fast_retrying(tmp_path, url=database_url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage)
    real = storage.backend.create_new_trial
    monkeypatch.setattr(storage.backend, "create_new_trial", failing(real, 1, after=True))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    orphan, owned = study.trials
    assert (orphan.state, owned.state) == (TrialState.RUNNING, TrialState.COMPLETE)

    fail_stale_trials(study)  # what each worker does before each trial: first notice
    assert study.trials[0].state == TrialState.RUNNING  # it gets the whole grace period

    def orphan_failed() -> bool:
        fail_stale_trials(study)
        return storage.get_trial(orphan._trial_id).state == TrialState.FAIL

    wait_until(orphan_failed, 15, "the orphan trial to be failed")
    [retry] = study.get_trials(states=(TrialState.WAITING,))
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == orphan.number
    assert retry.params == {}  # a fresh trial, not a copy of a trained configuration
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]


def test_one_outage_has_one_window_for_all_calls(tmp_path: Path, monkeypatch) -> None:
    """Once the window has passed, later calls give up at once instead of waiting again."""
    storage = fast_retrying(tmp_path, outage_timeout=0.3)
    study = optuna.create_study(storage=storage)
    backend = storage.backend
    monkeypatch.setattr(backend, "get_all_trials", failing(backend.get_all_trials, 10**6))
    with pytest.raises(StorageLostError):
        study.trials  # noqa: B018
    attempts = []

    def unreachable(*args: object) -> None:
        attempts.append(args)
        raise connection_lost()

    monkeypatch.setattr(backend, "get_study_user_attrs", unreachable)
    with pytest.raises(StorageLostError, match=r"retry window, --storage-retry-seconds 0\.3"):
        study.user_attrs  # noqa: B018
    assert len(attempts) == 1


def test_a_lost_storage_mid_trial_ends_the_run_with_one_error(tmp_path: Path, monkeypatch) -> None:
    """Optuna cannot record the trial's end either; its UnboundLocalError must not surface."""
    storage = fast_retrying(tmp_path, outage_timeout=0.2, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage)
    backend = storage.backend

    def objective(trial: optuna.Trial) -> float:
        for name in ("set_trial_intermediate_value", "set_trial_state_values", "get_trial"):
            monkeypatch.setattr(backend, name, failing(getattr(backend, name), 10**6))
        trial.report(0.5, step=1)
        return 1.0

    with pytest.raises(StorageLostError):
        run_trials(study, objective, 3)
    monkeypatch.undo()
    reopened = optuna.load_study(
        study_name=study.study_name, storage=open_storage(storage_url(storage))
    )
    # The trial stays RUNNING: the stale check of the workers that come back fails and retries it.
    assert [t.state for t in reopened.trials] == [TrialState.RUNNING]


def storage_url(storage: RetryingStorage) -> str:
    return storage.rdb.engine.url.render_as_string(hide_password=False)


def test_a_heartbeat_during_a_long_outage_is_skipped(tmp_path: Path, monkeypatch, caplog) -> None:
    storage = fast_retrying(tmp_path, outage_timeout=0.1)
    monkeypatch.setattr(storage.backend, "record_heartbeat", failing(lambda trial_id: None, 10**6))
    storage.record_heartbeat(1)  # logs, does not raise: the heartbeat thread must survive
    assert "missed a heartbeat of trial id 1" in caplog.text


@pytest.mark.postgres
@pytest.mark.slow
def test_worker_rides_out_a_postgres_restart(tmp_path: Path) -> None:
    if not pg.postgres_available():
        pytest.skip("PostgreSQL server binaries are not on PATH")
    server = pg.start_postgres()  # its own server: this test stops it
    try:
        url = server.create_database("outage")
        optuna.create_study(study_name="outage", storage=open_storage(url))
        log = tmp_path / "worker.log"
        worker = spawn(url, "outage", 12, log, sleep=0.25)
        study = optuna.load_study(study_name="outage", storage=open_storage(url))
        wait_until(lambda: len(study.get_trials(states=(TrialState.COMPLETE,))) >= 3, 30,
                   "the worker to complete 3 trials")  # fmt: skip

        server.stop("fast")  # terminates the worker's connections, refuses new ones
        wait_until(lambda: "storage unavailable" in log.read_text(), 30, "the worker to notice")
        server.start()

        wait_until(lambda: worker.poll() is not None, 60, "the worker to finish")
        assert worker.returncode == 0, log.read_text()
        assert "storage reachable again" in log.read_text()
        trials = optuna.load_study(study_name="outage", storage=open_storage(url)).get_trials()
        assert all(t.state.is_finished() for t in trials)
        assert sum(t.state == TrialState.COMPLETE for t in trials) == 12
    finally:
        pg.stop_postgres(server)


# --- stale trials when the study has its trials ---


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used:UserWarning")
def test_a_run_of_a_finished_study_fails_a_stale_trial_and_runs_its_retry(
    tmp_path: Path, database_url: str
) -> None:
    """N finished trials and one RUNNING trial of a dead worker: the study is not finished."""
    storage = open_storage(database_url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    dead = study.ask()  # a worker that died inside its trial: no heartbeat thread, no result
    dead.suggest_float("x", 0, 1)
    storage.record_heartbeat(dead._trial_id)

    outcome = run_trials(study, lambda trial: trial.suggest_float("x", 0, 1), 2)

    trials = study.get_trials()
    assert trials[dead.number].state == TrialState.FAIL
    retried_from = RetryHeartbeatStaleTrialCallback.retried_trial_number
    [retry] = [t for t in trials if retried_from(t) == dead.number]
    assert retry.state == TrialState.COMPLETE and retry.params == trials[dead.number].params
    assert (outcome.finished_before, outcome.finished_after) == (2, 3)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used:UserWarning")
@pytest.mark.parametrize("verb", ["status", "studies"])
def test_status_fails_a_dead_workers_trial_and_queues_its_retry(tmp_path: Path, verb: str) -> None:
    url = f"sqlite:///{tmp_path}/tuner.db"
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    dead = study.ask()
    dead.suggest_float("x", 0, 1)
    with sqlite3.connect(tmp_path / "tuner.db") as connection:  # its last beat: an hour ago
        an_hour_ago = "datetime('now', '-1 hour')"
        connection.execute(
            f"INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES (?, {an_hour_ago})",
            (dead._trial_id,),
        )
    study_args = ("--study", "s") if verb == "status" else ()
    result = tuner_cli(verb, *study_args, "--storage", url)
    assert result.returncode == 0, result.stderr
    if verb == "status":
        assert "study s (?): 2 complete, 1 fail, 1 waiting" in result.stdout
    else:  # the storage table: s, 2 complete, 0 pruned, 1 failed, 0 running
        assert re.search(r"\bs\s*│\s*2\s*│\s*0\s*│\s*1\s*│\s*0\s*│", result.stdout)
    assert study.trials[dead.number].state == TrialState.FAIL


# --- Optuna's private parts, fenced in tuner.storage._optuna ---


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used:UserWarning")
def test_optuna_private_parts_are_still_there(tmp_path: Path) -> None:
    """Fails by name when an Optuna release moves what tuner.storage._optuna relies on."""
    heartbeat = optuna_private.HeartbeatStorage
    assert isinstance(heartbeat, abc.ABCMeta), "optuna.storages._heartbeat.BaseHeartbeat moved"
    assert heartbeat.__abstractmethods__ == {
        "record_heartbeat",
        "_get_stale_trial_ids",
        "get_heartbeat_interval",
        "get_heartbeat_stale_trial_callback",
    }, "BaseHeartbeat's methods changed: check RetryingStorage"
    storage = open_storage(f"sqlite:///{tmp_path}/t.db", heartbeat_interval=1, grace_period=2)
    assert isinstance(storage, heartbeat)
    assert isinstance(storage.backend, BaseStorage) and isinstance(storage.backend, heartbeat)
    study = optuna.create_study(storage=storage)
    assert optuna_private.study_storage(study) is storage, "Study._storage moved"
    # The schema the orphan query reads.
    inspector = sqlalchemy.inspect(storage.rdb.engine)
    for table, columns in (
        (optuna_private.TRIALS_TABLE, optuna_private.TRIALS_COLUMNS),
        (optuna_private.HEARTBEATS_TABLE, optuna_private.HEARTBEATS_COLUMNS),
    ):
        found = {column["name"] for column in inspector.get_columns(table)}
        assert set(columns) <= found, f"Optuna's {table} table changed: {sorted(found)}"
    trial = study.ask()
    never_beaten = optuna_private.never_beaten_trial_ids
    assert never_beaten(storage.rdb.engine, study._study_id, lambda exc: False) == [trial._trial_id]


def test_a_damaged_sqlite_file_is_not_taken_for_a_schema_change(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    """`tuner status` on a damaged file: one error line, not first a schema-change warning."""
    storage = open_storage(f"sqlite:///{tmp_path}/t.db", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage)
    study.ask()  # a running trial, for the stale check to look at

    def damaged() -> None:
        malformed = sqlite3.DatabaseError("database disk image is malformed")
        raise sqlalchemy.exc.DatabaseError("SELECT ...", {}, malformed)

    monkeypatch.setattr(storage.rdb.engine, "connect", damaged)
    with pytest.raises(TunerError, match=r"the file is damaged \(database disk image is malformed"):
        settle_stale_trials(study)
    assert "schema may have changed" not in caplog.text


def test_the_orphan_check_degrades_when_the_schema_changes(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    """A query that no longer fits Optuna's tables warns once; trials still run."""
    renamed = optuna_private.NEVER_BEATEN_SQL.replace("trial_heartbeats", "heartbeats_v9")
    monkeypatch.setattr(optuna_private, "NEVER_BEATEN_SQL", renamed)
    storage = open_storage(f"sqlite:///{tmp_path}/t.db", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    warnings = [r for r in caplog.records if "schema may have changed" in r.getMessage()]
    assert len(warnings) == 1 and "heartbeats_v9" in warnings[0].getMessage()


# --- a real PostgreSQL outage longer than the window, through `tuner run` ---


@pytest.mark.postgres
@pytest.mark.slow
def test_an_outage_longer_than_the_window_ends_tuner_run_with_one_line(tmp_path: Path) -> None:
    if not pg.postgres_available():
        pytest.skip("PostgreSQL server binaries are not on PATH")
    window = 4
    study_file = tmp_path / "outage.toml"
    study_file.write_text(
        tiny_study_toml("outage", train_subset=100, training="max_epochs = 1\ntrials = 500")
    )
    server = pg.start_postgres()  # its own server: this test stops it
    try:
        url = server.create_database("outage")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        env |= {"TUNER_CACHE_DIR": str(tmp_path / "cache"), "TUNER_DATA_DIR": str(tmp_path)}
        env.pop("TUNER_STORAGE_RETRY_SECONDS", None)
        command = [sys.executable, "-m", "tuner", "run", "--study", str(study_file),
                   "--storage", url, "--storage-retry-seconds", str(window)]  # fmt: skip
        with open(tmp_path / "stderr", "w") as stderr:
            worker = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        watcher = open_storage(url)

        def completed() -> int:
            if "outage" not in optuna.get_all_study_names(watcher):
                return 0
            study = optuna.load_study(study_name="outage", storage=watcher)
            return len(study.get_trials(states=(TrialState.COMPLETE,)))

        wait_until(lambda: worker.poll() is not None or completed() >= 2, 120, "2 trials")
        server.stop("fast")
        stopped = time.monotonic()
        log_file = tmp_path / "stderr"
        wait_until(lambda: "\nerror: " in f"\n{log_file.read_text()}", 120, "an error line")
        gave_up_after = time.monotonic() - stopped
        wait_until(lambda: worker.poll() is not None, 120, "the worker to exit")
        server.start()
        log = log_file.read_text()
        assert worker.returncode == 2, log
        assert "Traceback" not in log and "UnboundLocalError" not in log
        last = log.splitlines()[-1]
        assert re.fullmatch(r"error: lost the storage for \d+ s: .*", last), last
        assert int(re.search(r"for (\d+) s", last).group(1)) >= window - 1  # rounding
        # One window for the whole outage, not one per call waiting on the database.
        assert log.count("storage unavailable") == 1, log
        print(f"window {window} s: the worker gave up {gave_up_after:.1f} s after the stop")
        assert gave_up_after < window + 60  # a hang guard only; the figure is printed above

        trials = optuna.load_study(study_name="outage", storage=open_storage(url)).get_trials()
        states = [t.state for t in trials]
        # Nothing was marked failed: the trial it was running is left to the stale check (the
        # portfolio's queued trials still wait).
        assert set(states) <= {TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING}, states
        assert states.count(TrialState.RUNNING) <= 1
    finally:
        pg.stop_postgres(server)
