"""bench/race_contenders.py: what the search race reads back from each contender's run."""

from __future__ import annotations

import datetime
import importlib
import time
from pathlib import Path

import optuna
import pytest
from datasets import write_idx_dataset

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def contenders():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ROOT / "bench"))  # it imports its bench neighbours
        yield importlib.import_module("race_contenders")


def frozen(state, history, ended, value=None):
    trial = optuna.trial.create_trial(
        state=state, value=value, user_attrs={"history": history} if history else {}
    )
    trial.datetime_complete = ended
    return trial


def test_tuner_epoch_points_count_back_from_the_trial_end(contenders):
    start = datetime.datetime(2026, 12, 2, 12, 0, 0)
    states = optuna.trial.TrialState
    epochs = [{"seconds": 10.0, "val_accuracy": 0.85}, {"seconds": 12.0, "val_accuracy": 0.9}]
    trials = [
        frozen(states.COMPLETE, epochs, start + datetime.timedelta(seconds=100), value=0.9),
        # A pruned trial's epochs count too; one with no epoch yet, or no end, adds nothing.
        frozen(states.PRUNED, epochs[:1], start + datetime.timedelta(seconds=130)),
        frozen(states.PRUNED, [], start + datetime.timedelta(seconds=140)),
    ]
    assert contenders.tuner_epoch_points(trials, start) == [
        [88.0, 0.85],
        [100.0, 0.9],
        [130.0, 0.85],
    ]


def test_usual_script_logs_each_epoch_and_the_race_reads_it(contenders, tmp_path: Path):
    data = write_idx_dataset(tmp_path / "fashion", train=96, test=10)
    study = ROOT / "studies" / "fashion-mnist.toml"
    spec = contenders.race_spec(study, seed=0, train_limit=64, max_epochs=2)
    log = tmp_path / contenders.EPOCH_LOG
    url = f"sqlite:///{tmp_path / 'trials.db'}"
    started_at, started = datetime.datetime.now(), time.time()
    usual = contenders.usual_script(spec, data, tmp_path / "torchvision", log)
    contenders.run_optuna("optuna-recipe", usual, seed=0, budget=600, url=url, trials=1)
    elapsed = time.time() - started

    log.write_text(log.read_text() + '{"trial": 1, "epo', encoding="utf-8")  # a cut last line
    run = contenders.read_optuna_run(url, started_at, 600, log)
    assert run["trials"]["finished"] == 1
    assert len(run["epoch_points"]) == 2  # both epochs, the cut line skipped
    times = [seconds for seconds, _ in run["epoch_points"]]
    assert 0 < times[0] < times[1] <= run["points"][0][0] + 1 <= elapsed + 1
    assert all(0 <= value <= 1 for _, value in run["epoch_points"])
