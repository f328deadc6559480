"""`tuner run --workers auto`: the plan follows the measurement, cached per machine and study."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch
from typer.testing import CliRunner

from studies import spec_from, tiny_study_toml
from tuner import engine
from tuner.cli import app
from tuner.data import load_dataset
from tuner.runner.plan import (
    CACHE_FILE,
    ThreadPlan,
    Workload,
    auto_plan,
    candidate_plans,
    measure_plan,
    study_workload,
    typical_params,
)

SPACE = """\
learning_rate = { type = "float", low = 1e-4, high = 1e-2, log = true }
batch_size = 32
num_blocks = { type = "int", low = 1, high = 3 }
filters = { type = "int", low = 4, high = 12, step = 4 }
fc_units = 16
"""

TINY = Workload(
    {"filters": [4], "fc_units": 8, "batch_size": 16, "learning_rate": 1e-3},
    (1, 8, 8),
    10,
)


def IDLE() -> float:  # a load average: nothing else on the cores
    return 0.0


def test_candidates_use_every_core_once() -> None:
    assert candidate_plans(2) == [ThreadPlan(1, 2), ThreadPlan(2, 1)]
    assert candidate_plans(4) == [ThreadPlan(1, 4), ThreadPlan(2, 2), ThreadPlan(4, 1)]
    assert candidate_plans(4, threads_given=2) == [ThreadPlan(2, 2)]


@pytest.mark.parametrize(
    ("rates", "chosen"),
    [
        ({ThreadPlan(1, 2): 900.0, ThreadPlan(2, 1): 1500.0}, ThreadPlan(2, 1)),
        ({ThreadPlan(1, 2): 1500.0, ThreadPlan(2, 1): 900.0}, ThreadPlan(1, 2)),
        ({ThreadPlan(1, 2): 1000.0, ThreadPlan(2, 1): 1000.0}, ThreadPlan(1, 2)),  # tie: fewer
    ],
)
def test_the_plan_is_the_measured_fastest_and_is_cached(
    tmp_path: Path, rates: dict[ThreadPlan, float], chosen: ThreadPlan
) -> None:
    measured: list[ThreadPlan] = []

    def measure(plan: ThreadPlan, workload: Workload) -> float:
        measured.append(plan)
        return rates[plan]

    first = auto_plan(TINY, tmp_path, 2, measure=measure, load_average=IDLE)
    assert (first.plan, first.cached, sorted(measured, key=str)) == (
        chosen,
        False,
        sorted(rates, key=str),
    )
    again = auto_plan(TINY, tmp_path, 2, measure=measure, load_average=IDLE)
    assert (again.plan, again.cached, len(measured)) == (chosen, True, 2)
    assert str(chosen) in again.describe() and "cached" in again.describe()
    # Another study shape is measured anew.
    bigger = Workload({**TINY.config, "batch_size": 64}, TINY.input_shape, 10)
    auto_plan(bigger, tmp_path, 2, measure=measure, load_average=IDLE)
    assert len(measured) == 4


def test_a_measurement_under_load_is_used_but_not_cached(tmp_path: Path) -> None:
    """Other jobs on the cores change which plan wins: that run uses what it measured, the
    next run on a quieter machine measures again instead of inheriting it."""
    rates = {ThreadPlan(1, 2): 500.0, ThreadPlan(2, 1): 900.0}
    loaded = auto_plan(TINY, tmp_path, 2, measure=lambda p, _: rates[p], load_average=lambda: 3.2)
    assert loaded.plan == ThreadPlan(2, 1) and not loaded.cached
    assert "under load 3.2, not cached" in loaded.describe()
    rates = {ThreadPlan(1, 2): 1500.0, ThreadPlan(2, 1): 900.0}
    quiet = auto_plan(TINY, tmp_path, 2, measure=lambda p, _: rates[p], load_average=IDLE)
    assert (quiet.plan, quiet.cached, quiet.busy_load) == (ThreadPlan(1, 2), False, None)
    again = auto_plan(TINY, tmp_path, 2, measure=lambda p, _: 0.0, load_average=lambda: 3.2)
    assert (again.plan, again.cached) == (ThreadPlan(1, 2), True)  # the quiet one, cached


def test_a_corrupt_cache_is_measured_again(tmp_path: Path) -> None:
    (tmp_path / CACHE_FILE).write_text("{not json")
    plan = auto_plan(
        TINY, tmp_path, 2, measure=lambda plan, _: float(plan.processes), load_average=IDLE
    )
    assert plan.plan == ThreadPlan(2, 1) and not plan.cached


def test_measuring_runs_every_process_of_a_plan(one_torch_thread: None) -> None:
    assert measure_plan(ThreadPlan(2, 1), TINY) > 0
    assert measure_plan(ThreadPlan(1, 1), TINY) > 0
    assert torch.get_num_threads() == 1  # the threads of this process are given back


def test_the_typical_model_is_the_first_enqueued_one_else_mid_range(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, tiny_study_toml(space=SPACE))
    assert typical_params(spec.space, None) == pytest.approx(
        {"learning_rate": 1e-3, "num_blocks": 2, "filters_1": 8, "filters_2": 8}
    )
    known = spec_from(tmp_path, tiny_study_toml(space=SPACE) + "[[enqueue]]\nfilters = [12]\n")
    workload = study_workload(known, (1, 8, 8), 10)
    assert workload.config["filters"] == [12] and workload.config["batch_size"] == 32


@pytest.fixture
def cli_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    verbosity = optuna.logging.get_verbosity()
    threads = torch.get_num_threads()
    yield
    root.handlers[:], root.level = handlers, level
    optuna.logging.set_verbosity(verbosity)
    torch.set_num_threads(threads)


def test_run_shows_the_chosen_plan_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_state: None
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(engine, "available_cpus", lambda: 2)
    study = tmp_path / "tiny.toml"
    study.write_text(tiny_study_toml(space=SPACE, training="max_epochs = 1\ntrials = 1"))
    digits = load_dataset("digits", cache_dir=tmp_path)
    key = study_workload(
        spec_from(tmp_path, study.read_text(), "tiny.toml"), digits.input_shape, 10
    )
    # A measurement made earlier on "this machine": one process with both threads won.
    rates = [({"processes": 1, "threads": 2}, 700.0), ({"processes": 2, "threads": 1}, 600.0)]
    (tmp_path / CACHE_FILE).write_text(
        json.dumps({key.key(2): [{"plan": plan, "rate": rate} for plan, rate in rates]})
    )
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--study",
            str(study),
            "--storage",
            f"sqlite:///{tmp_path / 'db'}",
            "--cache-dir",
            str(tmp_path),
            "--workers",
            "auto",
        ],
    )
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("--workers auto: 1 process x 2 threads (cached measurement")


def test_workers_must_be_a_count_or_auto() -> None:
    result = CliRunner().invoke(app, ["run", "--workers", "many"])
    assert (
        result.exit_code == 2
        and "'many' is neither 'auto' nor a number greater than or equal to 1" in result.output
    )
