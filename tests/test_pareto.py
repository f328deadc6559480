"""Several objectives and [constraints]: measures, multi-objective studies, the Pareto front."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import optuna
import pytest
import torch
from study_fixtures import sqlite_url
from typer.testing import CliRunner

from tuner import attrs
from tuner.cli import app
from tuner.config import TrialConfig
from tuner.data import load_dataset, split
from tuner.engine import count_parameters, to_device
from tuner.engine.measure import MEASURES, model_measures
from tuner.errors import TunerError
from tuner.families import build_model
from tuner.report.pareto import draw_pareto, pareto_data, pareto_table
from tuner.report.study_report import build_report
from tuner.search.objective import make_objective
from tuner.search.preflight import checked_spec
from tuner.search.study import open_study, run_trials
from tuner.spec import parse_spec

SPACE = {
    "learning_rate": 5e-3,
    "batch_size": 64,
    "num_blocks": 1,
    "filters": {"type": "int", "low": 4, "high": 32, "step": 4},
    "fc_units": 16,
}


def study_data(**changes) -> dict:
    data = {
        "name": "two",
        "metric": ["val_accuracy", "params"],
        "sampler": {"name": "tpe", "seed": 1, "options": {"n_startup_trials": 2}},
        "dataset": {"name": "digits", "train_subset": 150},
        "training": {"max_epochs": 1, "patience": 0},
        "space": SPACE,
    }
    return {**data, **changes}


@pytest.fixture(scope="module")
def data():
    return to_device(
        split(load_dataset("digits"), val_fraction=0.2, split_seed=0, train_subset=150),
        torch.device("cpu"),
    )


@pytest.fixture(scope="module")
def stored(data, tmp_path_factory) -> tuple[optuna.Study, str]:
    """One 3-trial two-objective study in SQLite, shared by the tests that only read it."""
    url = sqlite_url(tmp_path_factory.mktemp("pareto"))
    return run(study_data(), data, 3, storage=url), url


def run(spec_data: dict, data, trials: int, storage=None) -> optuna.Study:
    spec = parse_spec(spec_data, Path("two.toml"))
    study = open_study(spec, storage or optuna.storages.InMemoryStorage())
    run_trials(study, make_objective(spec, data, torch.device("cpu")), trials)
    return study


def test_measures_of_a_built_model() -> None:
    config = TrialConfig(filters=(8,), fc_units=16)
    model = build_model(config, (1, 8, 8), 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measures = model_measures(model, (1, 8, 8), 32, torch.device("cpu"))
    assert set(measures) == {n for n, m in MEASURES.items() if not m.from_training}
    assert measures["params"] == count_parameters(model)
    # conv 8x8x(1*9*8) + fc 128*16 + 16*10 multiply-adds, 2 FLOPs each (plus nothing else)
    assert measures["flops"] == 2 * (64 * 9 * 8 + 128 * 16 + 16 * 10)
    assert measures["latency_ms"] > 0 and measures["memory_mb"] > 0
    # Measuring neither trains the model nor moves its BatchNorm statistics.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("changes", "key", "message"),
    [
        ({"metric": ["val_accuracy", "size"]}, "metric[1]", "unknown metric 'size'"),
        ({"metric": ["val_accuracy", "size"]}, "metric[1]", "latency_ms, memory_mb"),
        ({"metric": ["params", "flops"]}, "metric", "needs val_accuracy or val_loss"),
        ({"metric": ["val_accuracy", "val_accuracy"]}, "metric", "listed twice"),
        ({"direction": "maximize"}, "direction", "each measure has its fixed direction"),
        ({"constraints": {"max_size": 3}}, "[constraints].max_size", "max_params, max_flops"),
        ({"constraints": {"max_val_loss": 3}}, "[constraints].max_val_loss", "unknown"),
        ({"constraints": {"max_params": 0}}, "[constraints].max_params", "must be > 0"),
        (
            {"constraints": {"max_params": 10}, "sampler": {"name": "random"}},
            "[sampler].name",
            "cannot take [constraints]; samplers that can: tpe, gp, nsga2",
        ),
    ],
)
def test_bad_objectives_and_constraints_are_one_line_errors(changes, key, message) -> None:
    with pytest.raises(TunerError) as error:
        checked_spec(study_data(**changes), Path("two.toml"))
    text = str(error.value)
    assert text.startswith(f"two.toml: {key}: ") and message in text and "\n" not in text


def test_two_objective_study_runs_unpruned_with_directions_and_names(stored) -> None:
    study = stored[0]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_accuracy", "params"]
    assert study.user_attrs[attrs.STUDY_METRICS] == ["val_accuracy", "params"]
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 3
    for trial in trials:
        history = trial.user_attrs[attrs.HISTORY]
        kept = history[trial.user_attrs[attrs.BEST_EPOCH] - 1]
        assert trial.values == [kept["val_accuracy"], trial.user_attrs[attrs.PARAM_COUNT]]
        assert trial.user_attrs[attrs.MEASURES]["params"] == trial.values[1]
        assert trial.intermediate_values == {}  # Optuna cannot prune these: nothing reported


def test_constraint_breaking_config_is_never_trained(data, monkeypatch) -> None:
    import tuner.search.objective

    real_fit = tuner.search.objective.fit
    trained_filters = []

    def recording_fit(model, data, config, *args, **kwargs):
        trained_filters.append(config.filters[0])
        yield from real_fit(model, data, config, *args, **kwargs)

    monkeypatch.setattr(tuner.search.objective, "fit", recording_fit)
    limit = 3000  # 8x8 digits, 1 block: filters 4 gives 2,814 parameters, 8 gives 5,594
    # The seeded sampler's own draws (the portfolio's sizes would not follow the comment).
    spec_data = study_data(constraints={"max_params": limit}, portfolio=False)
    study = run(spec_data, data, 4)

    broken = [t for t in study.trials if t.user_attrs[attrs.MEASURES]["params"] > limit]
    kept = [t for t in study.trials if t.user_attrs[attrs.MEASURES]["params"] <= limit]
    assert broken and kept  # the seeded sampler draws both
    for trial in broken:
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert trial.user_attrs[attrs.STOP_REASON].startswith("constraint: params ")
        assert trial.user_attrs[attrs.EPOCHS_RUN] == 0
        assert trial.constraints["max_params"] > 0  # what the samplers read: infeasible
    for trial in kept:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.constraints["max_params"] <= 0
    assert trained_filters == [t.params["filters_1"] for t in kept]
    assert all(f == 4 for f in trained_filters)


def test_pareto_data_table_figure_and_report(stored) -> None:
    study = stored[0]
    collected = pareto_data(study)
    front_numbers = {t.number for t in study.best_trials}
    assert {p.number for p in collected.front} == front_numbers
    accuracies = [p.values[0] for p in collected.front]
    assert accuracies == sorted(accuracies, reverse=True)  # best first objective first
    table = pareto_table(collected)
    assert table.headers[:3] == ("trial", "val accuracy", "params")
    assert set(table.keys) == front_numbers
    figure = draw_pareto(collected)
    assert figure.layout.xaxis.title.text == "params (lower is better)"
    page = build_report(study)
    assert "Pareto front" in page
    assert "Pruning is off: Optuna cannot prune multi-objective studies" in page


def test_cli_best_pareto_and_best_by_first_objective(stored, data) -> None:
    study, url = stored
    runner = CliRunner()
    as_json = runner.invoke(app, ["best", "-s", "two", "--storage", url, "--pareto", "-f", "json"])
    assert as_json.exit_code == 0, as_json.output
    listed = json.loads(as_json.stdout)
    assert listed["metrics"] == ["val_accuracy", "params"]
    assert {e["trial"] for e in listed["pareto"]} == {t.number for t in study.best_trials}
    entry = listed["pareto"][0]
    assert list(entry["values"]) == ["val_accuracy", "params"] and "config" in entry

    as_toml = runner.invoke(app, ["best", "-s", "two", "--storage", url, "--pareto"])
    assert tomllib.loads(as_toml.stdout)["pareto"] == [
        {**e, "values": {k: float(v) for k, v in e["values"].items()}} for e in listed["pareto"]
    ]
    best = runner.invoke(app, ["best", "-s", "two", "--storage", url, "-f", "json"])
    assert json.loads(best.stdout)["trial"] == entry["trial"]  # the best val_accuracy on the front

    single = run(study_data(name="one", metric="val_accuracy"), data, 1, storage=url)
    refused = runner.invoke(app, ["best", "-s", single.study_name, "--storage", url, "--pareto"])
    assert refused.exit_code == 2 and "has one objective" in refused.output
