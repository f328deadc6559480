"""`tuner run --workers K`: K real worker processes share one study and stop at the total."""

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from studies import tiny_study_toml
from tuner import attrs
from tuner.cli import app
from tuner.errors import TunerError
from tuner.runner.parallel import plan_workers, resolve_devices, worker_env, worker_seed_offset

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


def test_workers_are_spread_round_robin_over_devices():
    launches = plan_workers(["--study", "s.toml"], 5, ["cuda:0", "cuda:1"])
    assert [launch.device for launch in launches] == ["cuda:0", "cuda:1"] * 2 + ["cuda:0"]
    assert [launch.index for launch in launches] == [0, 1, 2, 3, 4]
    assert launches[1].argv == ["run", "--study", "s.toml", "--device", "cuda:1"]


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
    assert worker_env(1, 3) == {"TUNER_WORKER_INDEX": "1", "OMP_NUM_THREADS": "2"}
    assert worker_env(0, 16)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert worker_env(0, 2)["OMP_NUM_THREADS"] == "4"


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

    study = optuna.load_study(study_name="tiny-parallel", storage=url)
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    # Each worker stops once the total is reached; the other may finish the trial it had running.
    assert 6 <= len(finished) <= 7
    assert all(t.state.is_finished() for t in trials)
    assert len({t.number for t in trials}) == len(trials)
    assert len({t.user_attrs[attrs.WORKER] for t in finished}) == 2
