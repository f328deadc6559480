"""`tuner confirm`: top trials retrained with new seeds, stored with the study, ranked by mean."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import optuna
import pytest
import torch
from typer.testing import CliRunner

from studies import tiny_study_toml
from tuner import attrs
from tuner.cli import app
from tuner.config import TrialConfig
from tuner.data import load_dataset, split
from tuner.engine import to_device
from tuner.report.robust import confirmed_table, edge_warnings
from tuner.report.study_report import build_report
from tuner.search.confirmed import ConfirmRun, confirmed_ranking, store_run, stored_runs
from tuner.spec import load_spec
from tuner.trained.confirm import confirm, confirm_seeds, plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STUDY_FILE = tiny_study_toml(
    "tiny-confirm",
    train_subset=200,
    training="max_epochs = 1\npatience = 0\ntrials = 3",
)


class Crash(Exception):
    """Stands for the process dying after some runs."""


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> tuple[Path, str]:
    """A real three-trial study run through the CLI; its folder and storage URL."""
    folder = tmp_path_factory.mktemp("confirm")
    (folder / "tiny.toml").write_text(STUDY_FILE)
    url = f"sqlite:///{folder / 'tuner.db'}"
    torch.set_num_threads(1)
    ran = CliRunner().invoke(
        app, ["run", "--study", str(folder / "tiny.toml"), "--storage", url, "--device", "cpu"]
    )
    assert ran.exit_code == 0, ran.output
    return folder, url


def test_confirm_stores_top_times_seeds_runs_and_resumes(tuned) -> None:
    folder, url = tuned
    study = optuna.load_study(study_name="tiny-confirm", storage=url)
    spec = load_spec(folder / "tiny.toml")
    splits = split(load_dataset("digits"), val_fraction=0.2, split_seed=0, train_subset=200)
    data = to_device(splits, torch.device("cpu"))
    jobs = plan(study, top=2, seeds=2)
    assert len(jobs) == 4 and not any(job.done for job in jobs)

    def crash_after_two(done: int, total: int, run: ConfirmRun) -> None:
        if done == 2:
            raise Crash

    with pytest.raises(Crash):
        confirm(study, jobs, data, torch.device("cpu"), on_run=crash_after_two)
    kept = {run.key: run for run in stored_runs(study)}
    assert len(kept) == 2  # each run is stored as it finishes

    jobs = plan(study, top=2, seeds=2)
    assert sum(job.done for job in jobs) == 2
    seen = []
    confirm(study, jobs, data, torch.device("cpu"), on_run=lambda d, t, run: seen.append(d))
    assert seen == [3, 4]  # only the two runs that were missing
    runs = stored_runs(study)
    assert len(runs) == 4
    assert all(kept[key] == run for run in runs if (key := run.key) in kept)
    for run in runs:
        trial = study.trials[run.trial]
        config = TrialConfig.from_dict(trial.user_attrs[attrs.CONFIG])
        assert run.seed in confirm_seeds(config, 2) and run.seed != config.seed
        assert 0.0 <= run.value <= 1.0 and run.value == run.val_accuracy
        assert run.epochs_run == spec.training.max_epochs
    top = sorted(study.trials, key=lambda trial: -trial.value)[:2]
    assert {run.trial for run in runs} == {trial.number for trial in top}
    assert all(entry.n == 2 for entry in confirmed_ranking(study))


def test_cli_confirm_reports_progress_and_is_idempotent(tuned) -> None:
    folder, url = tuned
    args = ["confirm", "-s", str(folder / "tiny.toml"), "--storage", url, "--device", "cpu"]
    first = CliRunner().invoke(app, [*args, "--top", "1", "--seeds", "3"])
    assert first.exit_code == 0, first.output
    done_before = int(re.search(r"(\d+) already done", first.output).group(1))
    progress = re.findall(r"^\[(\d)/3\] trial #\d+ seed \d+: val_accuracy", first.output, re.M)
    assert progress == [str(n) for n in range(done_before + 1, 4)]
    assert "mean val_accuracy" in first.output  # the ranking table
    again = CliRunner().invoke(app, [*args, "--top", "1", "--seeds", "3"])
    assert again.exit_code == 0, again.output
    assert "3 already done" in again.output and "[1/" not in again.output
    assert "max_epochs = 1" in again.output


def fake_study(tmp_path: Path) -> tuple[optuna.Study, str]:
    """Three tuned trials, #0 the luckiest; confirm runs where #1 has the best mean."""
    url = f"sqlite:///{tmp_path / 'fake.db'}"
    study = optuna.create_study(study_name="fake", storage=url, direction="maximize")
    study.set_user_attr(attrs.STUDY_DATASET, "digits")
    study.set_user_attr(attrs.STUDY_METRIC, "val_accuracy")
    distribution = optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    for value, rate in ((0.95, 1e-2), (0.93, 9.5e-3), (0.90, 1e-3)):
        config = TrialConfig(learning_rate=rate, seed=len(study.trials))
        study.add_trial(
            optuna.trial.create_trial(
                params={"learning_rate": rate},
                distributions={"learning_rate": distribution},
                value=value,
                user_attrs={attrs.CONFIG: config.to_dict(), attrs.BEST_EPOCH: 2},
            )
        )
    for trial, values in ((0, (0.85, 0.91, 0.88)), (1, (0.92, 0.93, 0.91))):
        for seed, value in enumerate(values):
            store_run(study, ConfirmRun(trial, seed, value, value, 0.3, 3, 2, 1.0))
    return study, url


def test_best_ranks_confirmed_configurations_by_mean(tmp_path: Path) -> None:
    study, url = fake_study(tmp_path)
    assert study.best_trial.number == 0
    ranking = confirmed_ranking(study)
    assert [entry.trial for entry in ranking] == [1, 0]
    assert math.isclose(ranking[0].mean, 0.92) and math.isclose(ranking[0].std, 0.01)
    assert (ranking[1].low, ranking[1].high, ranking[1].n) == (0.85, 0.91, 3)

    result = CliRunner().invoke(app, ["best", "-s", "fake", "--storage", url, "-f", "json"])
    assert result.exit_code == 0, result.output
    best = json.loads(result.output)
    assert best["trial"] == 1
    assert best["confirmed"]["seeds"] == 3 and math.isclose(best["confirmed"]["mean"], 0.92)
    toml = CliRunner().invoke(app, ["best", "-s", "fake", "--storage", url])
    assert "trial 1" in toml.output.splitlines()[0] and "mean over 3 confirm seeds" in toml.output
    path = tmp_path / "best.toml"
    path.write_text(toml.output)
    from tuner.trained.export import read_best

    assert read_best(path).confirmed["seeds"] == 3

    table = confirmed_table(study)
    assert table.keys == (1, 0) and table.rows[0][2] == "0.92"


def test_edge_warning_names_the_bound_of_the_best_values(tmp_path: Path) -> None:
    study, _ = fake_study(tmp_path)
    warnings = edge_warnings(study)
    assert [(w.param, w.bound, w.value) for w in warnings] == [("learning_rate", "upper", 1e-2)]
    message = warnings[0].message
    assert message.startswith("learning_rate: best values at the upper bound 0.01")
    assert "the best trial and 2 of the top 3" in message and message.endswith("widen the range")


def test_no_edge_warning_inside_the_range(tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize")
    distribution = optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    for value, rate in ((0.95, 1e-3), (0.93, 2e-3), (0.90, 1.1e-4)):
        study.add_trial(
            optuna.trial.create_trial(
                params={"learning_rate": rate},
                distributions={"learning_rate": distribution},
                value=value,
            )
        )
    assert edge_warnings(study) == []  # one of three near the lower bound, and not the best


def test_report_shows_confirmed_ranking_and_edge_warning(tmp_path: Path) -> None:
    study, _ = fake_study(tmp_path)
    page = build_report(study)
    assert "Confirmed configurations (ranked by mean over new seeds)" in page
    assert "learning_rate: best values at the upper bound 0.01" in page
