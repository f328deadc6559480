"""The shipped portfolio: projected into a study's [space], queued first, switched off, shown."""

from __future__ import annotations

import logging
import math
import tomllib
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from studies import spec_from, tiny_study_toml
from tuner import attrs
from tuner.checking import Checker
from tuner.errors import TunerError
from tuner.report.data import best_table
from tuner.search.portfolio import (
    PORTFOLIO_FILE,
    CannotPlace,
    load_portfolio,
    place_portfolio,
    project,
)
from tuner.search.space import suggest
from tuner.search.study import open_study, run_trials
from tuner.spec import load_spec
from tuner.spec.enqueue import check_values
from tuner.storage import open_storage

WIDE = """\
learning_rate = { type = "float", low = 1e-4, high = 1e-2, log = true }
batch_size = { type = "categorical", choices = [64, 128, 256] }
kernel_size = { type = "categorical", choices = [3, 5] }
num_blocks = { type = "int", low = 1, high = 3 }
filters = { type = "int", low = 16, high = 128, step = 16 }
fc_units = { type = "categorical", choices = [64, 128, 256] }
dropout = { type = "float", low = 0.0, high = 0.5 }
weight_decay = { type = "float", low = 1e-6, high = 1e-2, log = true }
label_smoothing = { type = "float", low = 0.0, high = 0.15 }
optimizer = { type = "categorical", choices = ["adamw", "sgd"] }
batch_norm = { type = "categorical", choices = [true, false] }
"""

NARROW = """\
learning_rate = { type = "float", low = 1e-3, high = 3e-2, log = true }
batch_size = 64
num_blocks = { type = "int", low = 1, high = 2 }
filters = { type = "int", low = 8, high = 32, step = 8 }
dropout = { type = "float", low = 0.0, high = 0.3, step = 0.1 }
kernel_size = { type = "categorical", choices = [3, 7] }
optimizer = { type = "categorical", choices = ["adamw", "sgd"] }
fc_units = 16
"""

CONFIG = {
    "learning_rate": 2e-3,
    "batch_size": 128,
    "kernel_size": 5,
    "num_blocks": 3,
    "filters": [32, 64, 128],
    "fc_units": 256,
    "dropout": 0.45,
    "weight_decay": 1e-4,
    "label_smoothing": 0.05,
    "optimizer": "adamw",
    "batch_norm": True,
    "momentum": 0.9,
}


def space_of(tmp_path: Path, space: str):
    return spec_from(tmp_path, tiny_study_toml(space=space)).space


def test_a_configuration_inside_the_space_is_kept_as_it_is(tmp_path: Path) -> None:
    space = space_of(tmp_path, WIDE)
    projected = project(CONFIG, space)
    assert projected == {k: v for k, v in CONFIG.items() if k != "momentum"}


def test_projection_takes_the_nearest_allowed_value_and_fixed_values_win(tmp_path: Path) -> None:
    space = space_of(tmp_path, NARROW)
    projected = project(CONFIG, space)
    # batch_size is fixed to 64, so the learning rate follows it (linear scaling rule): 1e-3;
    # 3 blocks -> at most 2, the stack cut to its first two blocks and each filter count
    # clipped to the range; 0.45 -> 0.3 on the step grid; kernel 5 -> the nearer choice (3
    # and 7 are as near: the smaller); fc_units fixed, not queued; momentum not in the space.
    assert projected["learning_rate"] == pytest.approx(1e-3)
    assert projected["num_blocks"] == 2
    assert projected["filters"] == [32, 32]
    assert projected["dropout"] == pytest.approx(0.3)
    assert projected["kernel_size"] == 3
    assert projected["optimizer"] == "adamw"
    for gone in ("batch_size", "fc_units", "momentum", "weight_decay", "batch_norm"):
        assert gone not in projected
    # What the study file's own [[enqueue]] check would accept.
    assert check_values(Checker(Path("study.toml")), projected, dict(space), "x") == projected


def test_log_ranges_clip_in_log_space_and_steps_round_to_the_grid(tmp_path: Path) -> None:
    space = space_of(tmp_path, NARROW)
    assert project({"learning_rate": 1e-6}, space)["learning_rate"] == pytest.approx(1e-3)
    assert project({"learning_rate": 5.0}, space)["learning_rate"] == pytest.approx(3e-2)
    assert project({"dropout": 0.17}, space)["dropout"] == pytest.approx(0.2)
    assert project({"num_blocks": 1, "filters": [13]}, space)["filters"] == [16]
    # A shallower stack than the space allows is extended by its last block.
    deep = space_of(tmp_path, NARROW.replace("low = 1, high = 2", "low = 3, high = 4"))
    assert project({"filters": [8, 24]}, deep)["filters"] == [8, 24, 24]


def test_a_configuration_that_cannot_be_placed_is_skipped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    space = space_of(tmp_path, NARROW.replace('choices = ["adamw", "sgd"]', 'choices = ["adamw"]'))
    with pytest.raises(CannotPlace, match="optimizer"):
        project({**CONFIG, "optimizer": "sgd"}, space)
    with caplog.at_level(logging.INFO, logger="tuner.search.portfolio"):
        placed = place_portfolio(space, ({**CONFIG, "optimizer": "sgd"}, CONFIG))
    assert [one.number for one in placed] == [2]
    assert [one.source for one in placed] == ["portfolio:2"]
    assert "portfolio configuration 1 skipped" in caplog.text


def test_a_configuration_is_skipped_when_the_trial_would_train_another_optimizer(
    tmp_path: Path,
) -> None:
    # Its learning rate was chosen for its own optimizer: under another it means nothing.
    fixed_sgd = space_of(
        tmp_path, WIDE.replace('{ type = "categorical", choices = ["adamw", "sgd"] }', '"sgd"')
    )
    with pytest.raises(CannotPlace, match="optimizer is 'adamw', the study trains 'sgd'"):
        project(CONFIG, fixed_sgd)
    # A space without an optimizer trains the default (AdamW): an SGD configuration is skipped,
    # an AdamW one placed.
    no_optimizer = space_of(
        tmp_path,
        NARROW.replace('optimizer = { type = "categorical", choices = ["adamw", "sgd"] }\n', ""),
    )
    with pytest.raises(CannotPlace, match="optimizer is 'sgd', the study trains 'adamw'"):
        project({**CONFIG, "optimizer": "sgd"}, no_optimizer)
    assert "optimizer" not in project(CONFIG, no_optimizer)
    fixed_adamw = space_of(
        tmp_path, WIDE.replace('{ type = "categorical", choices = ["adamw", "sgd"] }', '"adamw"')
    )
    assert project(CONFIG, fixed_adamw)["learning_rate"] == CONFIG["learning_rate"]


def test_another_family_places_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = tiny_study_toml(space=NARROW) + '[model]\nfamily = "resnet18"\n'
    text = text.replace('num_blocks = { type = "int", low = 1, high = 2 }\n', "")
    text = text.replace('filters = { type = "int", low = 8, high = 32, step = 8 }\n', "")
    text = text.replace('kernel_size = { type = "categorical", choices = [3, 7] }\n', "")
    text = text.replace("fc_units = 16\n", "")
    space = spec_from(tmp_path, text).space
    with caplog.at_level(logging.INFO, logger="tuner.search.portfolio"):
        assert place_portfolio(space, (CONFIG, CONFIG)) == []
    # One line says why, not one per configuration.
    assert caplog.messages == ["portfolio not used: the study's family is 'resnet18', not seed-cnn"]
    caplog.clear()
    assert place_portfolio(space, (CONFIG,), log_skipped=False) == [] and not caplog.messages


def test_the_shipped_portfolio_has_its_provenance_and_fits_the_shipped_spaces() -> None:
    provenance = tomllib.loads(PORTFOLIO_FILE.read_text())["provenance"]
    for key in ("datasets", "fidelity", "configurations", "cpu", "date", "command"):
        assert provenance[key]
    configurations = load_portfolio()
    assert 3 <= len(configurations) <= 8
    root = Path(__file__).resolve().parent.parent / "studies"
    for name in ("digits-quick", "fashion-mnist", "mnist"):
        spec = load_spec(root / f"{name}.toml")
        placed = place_portfolio(spec.space, configurations)
        assert placed, name
        for one in placed:
            check_values(Checker(spec.path), one.values, dict(spec.space), "portfolio")


def _value(trial: optuna.Trial, spec) -> float:
    config = suggest(trial, spec)
    return -abs(math.log(config.learning_rate) - math.log(3e-3))


def test_a_plain_study_runs_the_portfolio_first_once_and_reports_where_each_came_from(
    tmp_path: Path,
) -> None:
    spec = spec_from(tmp_path, tiny_study_toml(space=WIDE))
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    placed = place_portfolio(spec.space, load_portfolio())
    first = open_study(spec, url)
    open_study(spec, url, seed_offset=1_000_003)  # a second worker: nothing queued again
    # A run that wants one trial runs one (the portfolio's first); the rest wait for the next.
    run_trials(first, lambda trial: _value(trial, spec), 1)
    states = [trial.state for trial in first.get_trials(deepcopy=False)]
    assert states == [TrialState.COMPLETE] + [TrialState.WAITING] * (len(placed) - 1)
    resumed = open_study(spec, url)  # a later run of the same study queues nothing more
    run_trials(resumed, lambda trial: _value(trial, spec), len(placed) + 2)
    trials = resumed.get_trials(deepcopy=False)
    assert len(trials) == len(placed) + 2
    sources = [trial.user_attrs.get(attrs.SOURCE) for trial in trials]
    assert sources == [one.source for one in placed] + [None, None]
    for one, trial in zip(placed, trials, strict=False):
        assert trial.params["learning_rate"] == pytest.approx(one.values["learning_rate"])
    table = best_table(resumed, "val_accuracy", limit=len(trials))
    column = table.headers.index("source")
    shown = {number: row[column] for number, row in zip(table.keys, table.rows, strict=True)}
    expected = zip(trials, sources, strict=True)
    assert shown == {trial.number: source or "sampler" for trial, source in expected}


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # study.ask, on purpose
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_dead_trials_retry_runs_before_the_portfolio_trials_still_queued(
    tmp_path: Path, kind: str
) -> None:
    spec = spec_from(tmp_path, tiny_study_toml(space=WIDE))
    url = f"sqlite:///{tmp_path / 'db.sqlite'}" if kind == "sqlite" else f"journal:{tmp_path / 'j'}"
    study = open_study(spec, open_storage(url))
    placed = place_portfolio(spec.space, load_portfolio())
    assert len(placed) >= 2
    # The first portfolio trial's worker dies; the stale check fails it and queues its retry,
    # numbered after the whole portfolio.
    dead = study.ask()
    study.tell(dead, state=TrialState.FAIL)
    RetryHeartbeatStaleTrialCallback(max_retry=None)(study, study.trials[dead.number])

    run_trials(study, lambda trial: _value(trial, spec), 1)
    trials = study.get_trials(deepcopy=False)
    retry = trials[len(placed)]
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == dead.number
    assert retry.state == TrialState.COMPLETE
    assert retry.params["learning_rate"] == pytest.approx(placed[0].values["learning_rate"])
    assert retry.user_attrs[attrs.SOURCE] == placed[0].source
    assert [trial.state for trial in trials[1 : len(placed)]] == [TrialState.WAITING] * (
        len(placed) - 1
    )
    # The rest of the portfolio runs next, in its order, each once.
    run_trials(study, lambda trial: _value(trial, spec), len(placed))
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == len(placed) + 1
    assert all(trial.state == TrialState.COMPLETE for trial in trials[1:])
    assert [trial.user_attrs[attrs.SOURCE] for trial in trials[1:]] == [
        one.source for one in placed[1:]
    ] + [placed[0].source]


def test_portfolio_false_turns_it_off_and_enqueue_replaces_it(tmp_path: Path) -> None:
    off = spec_from(tmp_path, "portfolio = false\n" + tiny_study_toml(space=WIDE))
    assert off.portfolio is False
    study = open_study(off, f"sqlite:///{tmp_path / 'off.sqlite'}")
    assert study.get_trials(deepcopy=False) == []
    known = tiny_study_toml(space=WIDE) + "\n[[enqueue]]\nlearning_rate = 0.002\n"
    study = open_study(spec_from(tmp_path, known), f"sqlite:///{tmp_path / 'known.sqlite'}")
    waiting = study.get_trials(deepcopy=False)
    assert [trial.user_attrs[attrs.SOURCE] for trial in waiting] == ["enqueue"]


def test_a_bad_portfolio_key_gets_one_line(tmp_path: Path) -> None:
    with pytest.raises(TunerError) as error:
        spec_from(tmp_path, 'portfolio = "no"\n' + tiny_study_toml())
    message = str(error.value)
    assert "\n" not in message and "study.toml: portfolio: must be true or false" in message
