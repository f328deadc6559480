"""`tuner run --workers K`: K real worker processes share one study and stop at the total."""

import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from optuna_worker import wait_until
from typer.testing import CliRunner

from studies import tiny_study_toml
from tuner import attrs
from tuner.cli import app
from tuner.errors import TunerError
from tuner.runner.parallel import (
    WORKER_SEED_STRIDE,
    plan_workers,
    resolve_devices,
    worker_threads,
)
from tuner.runner.settings import RunSettings, worker_seed_offset
from tuner.storage import open_storage

TINY_STUDY = tiny_study_toml(
    "tiny-parallel",
    train_subset=400,
    training="max_epochs = 3\npatience = 0",
    space="""\
learning_rate = { type = "float", low = 1e-3, high = 1e-2, log = true }
num_blocks = 1
filters = { type = "int", low = 4, high = 8, step = 4 }
fc_units = 16
""",
)


ROOT = Path(__file__).resolve().parent.parent
SETTINGS = RunSettings(study_file=Path("s.toml"), storage="sqlite:///t.db")


def test_workers_are_spread_round_robin_over_devices(monkeypatch):
    monkeypatch.delenv("TUNER_WORKER_INDEX", raising=False)
    launches = plan_workers(SETTINGS, 5, ["cuda:0", "cuda:1"])
    assert [launch.settings.device for launch in launches] == ["cuda:0", "cuda:1"] * 2 + ["cuda:0"]
    assert [launch.index for launch in launches] == [0, 1, 2, 3, 4]
    second = launches[1].settings
    assert (second.study_file, second.storage, second.device) == (
        Path("s.toml"),
        "sqlite:///t.db",
        "cuda:1",
    )
    offsets = [launch.settings.seed_offset for launch in launches]
    assert offsets == [index * WORKER_SEED_STRIDE for index in range(5)]


def test_devices_default_to_the_single_device_without_cuda(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert resolve_devices(None, "auto") == ["auto"]
    assert resolve_devices("cpu, cpu", "auto") == ["cpu", "cpu"]


def test_worker_index_offsets_the_sampler_seed(monkeypatch):
    monkeypatch.setenv("TUNER_WORKER_INDEX", "3")
    assert worker_seed_offset() == 3
    monkeypatch.setenv("TUNER_WORKER_INDEX", "auto")
    assert worker_seed_offset() == worker_seed_offset() >= 0
    monkeypatch.setenv("TUNER_WORKER_INDEX", "x")
    with pytest.raises(TunerError, match="TUNER_WORKER_INDEX"):
        worker_seed_offset()


def test_workers_split_the_cpu_cores_unless_omp_num_threads_is_set(monkeypatch):
    monkeypatch.setattr("tuner.runner.parallel.available_cpus", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("TUNER_WORKER_INDEX", raising=False)
    slot = plan_workers(SETTINGS, 3, ["cpu"])[1].settings.slot
    assert (slot.index, slot.count, slot.threads) == (1, 3, 2)
    assert worker_threads(16) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert worker_threads(2) == 4


def test_two_worker_processes_share_the_study_and_stop_at_the_total(tmp_path):
    study_file = tmp_path / "tiny.toml"
    study_file.write_text(TINY_STUDY)
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    result = CliRunner().invoke(
        app,
        ["run", "--study", str(study_file), "--trials", "6", "--workers", "2",
         "--storage", url, "--device", "cpu", "--cache-dir", str(tmp_path / "cache")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # The workers got the URL as an argument: not in this process's environment (nor on their
    # command lines, which multiprocessing's 'spawn' builds without any of tuner's options).
    assert os.environ.get("TUNER_STORAGE") != url
    assert f"report: tuner report --study tiny-parallel --storage {url}" in result.stdout
    assert "done: study tiny-parallel reached 6 finished trials" in result.stdout
    ran = re.search(
        r"this run: ([67]) trials in [^()]+ \((\d+) complete, (\d+) pruned, 0 failed\)",
        result.stdout,
    )
    assert ran and int(ran[1]) == int(ran[2]) + int(ran[3]), result.stdout

    study = optuna.load_study(study_name="tiny-parallel", storage=url)
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    # Each worker stops once the total is reached; the other may finish the trial it had running.
    assert 6 <= len(finished) <= 7
    assert all(t.state.is_finished() for t in trials)
    assert len({t.number for t in trials}) == len(trials)
    assert len({t.user_attrs[attrs.WORKER] for t in finished}) == 2


def running_worker_pid(url: str) -> int | None:
    """The pid of a worker whose trial is RUNNING and has reported an epoch."""
    try:
        study = optuna.load_study(study_name="tiny-parallel", storage=open_storage(url))
    except KeyError:  # not created yet
        return None
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.intermediate_values and attrs.WORKER in trial.user_attrs:
            return int(trial.user_attrs[attrs.WORKER].rsplit(":", 1)[1])
    return None


@pytest.mark.slow
def test_a_killed_worker_is_reported_in_one_line_and_the_others_finish(tmp_path):
    study_file = tmp_path / "tiny.toml"
    study_file.write_text(TINY_STUDY.replace("max_epochs = 3", "max_epochs = 8"))
    # A journal file has no heartbeats, so the other worker need not wait for the dead one's
    # trial to go stale before it stops.
    url = f"journal:{tmp_path / 'tuner.journal'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "tuner", "run", "--study", str(study_file), "--trials", "3",
               "--workers", "2", "--storage", url, "--device", "cpu",
               "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        parent = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(lambda: running_worker_pid(url) is not None, 180, "a worker to train")
        os.kill(running_worker_pid(url), signal.SIGKILL)  # as the out-of-memory killer does
        wait_until(lambda: parent.poll() is not None, 300, "tuner run to exit")
    finally:
        if parent.poll() is None:
            parent.kill()
    output = log.read_text()
    assert parent.returncode == 2, output
    assert "Aborted" not in output and "Traceback" not in output, output
    killed = [line for line in output.splitlines() if "was killed by SIGKILL" in line]
    assert killed and "the other workers go on" in killed[0], output
    assert re.search(r"^error: worker \d was killed by SIGKILL", output, re.M), output
    assert "this run: " in output  # the summary is printed
    finished = [
        t
        for t in optuna.load_study(study_name="tiny-parallel", storage=open_storage(url)).trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    ]
    assert len(finished) >= 3  # the other worker finished the study


def test_workers_that_lost_the_storage_are_summed_up_from_what_they_saw(tmp_path, monkeypatch):
    """The parent cannot read the study at the end: the latest view a worker sent is used."""
    from rich.console import Console

    from tuner.runner import parallel
    from tuner.runner.summary import RunSummary, StopReason, TrialCounts

    study_file = tmp_path / "tiny.toml"
    study_file.write_text(TINY_STUDY)

    def worker_summary(finished: int, best: float, trial: int) -> RunSummary:
        return RunSummary(
            study="tiny-parallel", reason=StopReason.ERROR, ran=TrialCounts(complete=8),
            finished=finished, target=40, seconds=1.0, report_command="", metric="val_accuracy",
            best_value=best, best_trial=trial, best_params={"fc_units": 16}, detail="lost",
        )  # fmt: skip

    outcomes = [(2, worker_summary(15, 0.91, 9)), (2, worker_summary(16, 0.93, 15))]
    monkeypatch.setattr(parallel, "run_workers", lambda launches: (outcomes, False))

    def lost(study):
        raise TunerError("lost the storage for 60 s")

    monkeypatch.setattr(parallel, "study_state", lost)
    settings = RunSettings(
        study_file=study_file,
        storage=f"sqlite:///{tmp_path / 'tuner.db'}",
        trials=40,
        device="cpu",
        cache_dir=tmp_path / "cache",
        workers=2,
    )
    summary = parallel.run_parallel(settings, Console(file=io.StringIO()))
    assert (summary.finished, summary.best_trial, summary.best_value) == (16, 15, 0.93)
    assert summary.ran.complete == 16 and summary.metric == "val_accuracy"
