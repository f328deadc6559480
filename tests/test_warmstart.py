"""Warm starts on SQLite: `tuner run --enqueue-from S --top K` and `tuner run --from S`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from typer.testing import CliRunner

from studies import spec_from, tiny_study_toml
from tuner import attrs
from tuner.cli import app
from tuner.search.space import suggest
from tuner.search.study import open_study, run_trials

SOURCE_SPACE = """\
learning_rate = { type = "float", low = 1e-3, high = 3e-2, log = true }
batch_size = 64
num_blocks = { type = "int", low = 1, high = 2 }
filters = { type = "categorical", choices = [4, 8] }
fc_units = 16
"""


@pytest.fixture
def cli_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo what the CLI sets process-wide (logging handlers, Optuna verbosity, threads)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    verbosity = optuna.logging.get_verbosity()
    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    root.handlers[:], root.level = handlers, level
    optuna.logging.set_verbosity(verbosity)
    torch.set_num_threads(threads)


@pytest.fixture
def source(tmp_path: Path) -> str:
    """A SQLite storage holding study 'source' with 6 finished trials (no training)."""
    spec = spec_from(tmp_path, tiny_study_toml("source", space=SOURCE_SPACE), "source.toml")
    url = f"sqlite:///{tmp_path / 'source.db'}"
    study = open_study(spec, url)

    def value(trial: optuna.Trial) -> float:
        config = suggest(trial, spec)
        return config.learning_rate + sum(config.filters) / 100

    run_trials(study, value, 6)
    return url


def write_study(tmp_path: Path, space: str, name: str = "target") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(tiny_study_toml(name, space=space, training="max_epochs = 1\npatience = 0"))
    return path


def invoke(*args: object):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def test_enqueue_from_runs_the_best_configurations_of_another_study_first(
    tmp_path: Path, source: str, cli_state: None
) -> None:
    target = write_study(tmp_path, SOURCE_SPACE)
    storage = f"sqlite:///{tmp_path / 'target.db'}"
    args = ["run", "--study", target, "--storage", storage, "--trials", "2"]
    result = invoke(*args, "--enqueue-from", "source", "--enqueue-storage", source, "--top", "2")
    assert result.exit_code == 0, result.output
    assert "2 best configurations of source" in result.output
    best = sorted(
        optuna.load_study(study_name="source", storage=source).trials,
        key=lambda trial: trial.value,
        reverse=True,
    )[:2]
    ran = optuna.load_study(study_name="target", storage=storage).trials
    assert [trial.params for trial in ran] == [trial.params for trial in best]


def test_from_copies_the_finished_trials_once(tmp_path: Path, source: str, cli_state: None) -> None:
    # The new study samples more than the old one: a wider range, another parameter.
    wider = SOURCE_SPACE.replace("low = 1e-3", "low = 1e-4") + (
        'dropout = { type = "float", low = 0.0, high = 0.5 }\n'
    )
    target = write_study(tmp_path, wider)
    args = ["run", "--study", target, "--storage", source, "--trials", "6", "--from", "source"]
    for _ in range(2):  # the same command again copies nothing more
        result = invoke(*args)
        assert result.exit_code == 0, result.output
    copied = optuna.load_study(study_name="target", storage=source).trials
    old = optuna.load_study(study_name="source", storage=source).trials
    assert len(copied) == 6
    assert [(t.params, t.value) for t in copied] == [(t.params, t.value) for t in old]
    assert all(t.state == TrialState.COMPLETE for t in copied)
    assert copied[0].user_attrs[attrs.WARM_START] == "source trial 0"


@pytest.mark.parametrize(
    ("space", "words"),
    [
        (
            SOURCE_SPACE.replace("high = 3e-2", "high = 1.5e-3"),
            ["learning_rate", "outside the range"],
        ),
        (SOURCE_SPACE.replace("choices = [4, 8]", "choices = [4, 16]"), ["filters", "choices"]),
        (SOURCE_SPACE.replace('{ type = "int", low = 1, high = 2 }', "1"), ["num_blocks", "fixed"]),
    ],
)
@pytest.mark.parametrize("flag", ["--from", "--enqueue-from"])
def test_incompatible_parameters_get_one_line(
    tmp_path: Path, source: str, cli_state: None, space: str, words: list[str], flag: str
) -> None:
    target = write_study(tmp_path, space)
    result = invoke("run", "--study", target, "--storage", source, flag, "source", "--top", "6")
    assert result.exit_code == 2
    line = result.output.strip()
    assert line.startswith("error: study 'source' trial") and "\n" not in line
    for word in [*words, "target.toml"]:
        assert word in line
    assert not [t for t in optuna.load_study(study_name="target", storage=source).trials]


def test_a_missing_source_study_lists_the_studies_there(
    tmp_path: Path, source: str, cli_state: None
) -> None:
    target = write_study(tmp_path, SOURCE_SPACE)
    result = invoke("run", "--study", target, "--storage", source, "--from", "nope")
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: no study 'nope' in {source}; studies there: source")
