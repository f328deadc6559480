"""tuner.trained.export and `tuner best`: the best configuration as TOML/JSON, read back."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from study_fixtures import make_study, sqlite_url
from typer.testing import CliRunner

from tuner import attrs
from tuner.cli import app
from tuner.config import AugmentSpec, TrialConfig
from tuner.errors import TunerError
from tuner.spec import PARAMETERS
from tuner.trained.export import BestConfig, best_config, read_best, render, to_json, to_toml

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BEST = BestConfig(
    dataset="digits",
    config=TrialConfig(
        learning_rate=0.0031622776601683794,
        batch_size=128,
        kernel_size=3,
        filters=(6, 4),
        fc_units=16,
        dropout=0.125,
        weight_decay=1e-05,
        optimizer="sgd",
        batch_norm=False,
        max_epochs=3,
        seed=7,
        augment=AugmentSpec(rotation_degrees=10.0, horizontal_flip=True, cutout=2),
    ),
    study="digits-quick",
    trial=7,
    value=0.9791666666666666,
    metric="val_accuracy",
    best_epoch=2,
)


@pytest.mark.parametrize(("fmt", "suffix"), [("toml", ".toml"), ("json", ".json")])
def test_round_trip(tmp_path: Path, fmt: str, suffix: str) -> None:
    path = tmp_path / f"best{suffix}"
    path.write_text(render(BEST, fmt))
    assert read_best(path) == BEST


def test_toml_and_json_hold_the_same_data() -> None:
    assert tomllib.loads(to_toml(BEST)) == json.loads(to_json(BEST))


def test_toml_header_and_space_hint() -> None:
    text = to_toml(BEST)
    assert text.startswith("# Best configuration of study 'digits-quick', trial 7")
    assert "tuner retrain --config" in text
    # Every hint line, uncommented, is valid TOML naming a study-file [space] parameter.
    hint = text.split("copy lines into its [space]:\n", 1)[1]
    pinned = tomllib.loads("\n".join(line[1:] for line in hint.splitlines()))
    assert set(pinned) == set(PARAMETERS)
    assert pinned["num_blocks"] == 2 and pinned["learning_rate"] == BEST.config.learning_rate
    assert "this trial: [6, 4]" in text


def test_a_config_file_without_trial_facts_is_enough(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('dataset = "digits"\n[config]\nfilters = [8]\nlearning_rate = 0.01\n')
    best = read_best(path)
    assert best == BestConfig("digits", TrialConfig(filters=(8,), learning_rate=0.01))
    assert "config file" in to_toml(best).splitlines()[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('dataset = "digits"\n[config]\nfilterz = [8]\n', "config.filterz: unknown key"),
        ('dataset = "digits"\n[config]\nfilterz = [8]\n', "did you mean 'filters'?"),
        ('dataset = "digits"\n[config]\nfilters = [8]\nbatch_size = "x"\n', "batch_size: must"),
        ('dataset = "digits"\n[config]\nfilters = []\n', "config.filters"),
        ("[config]\nfilters = [8]\n", "dataset: missing"),
        ('dataset = "digits"\n', "config: missing"),
        ('dataset = "digits"\nextra = 1\n[config]\n', "extra: unknown key"),
        ('dataset = "digits"\n[config]\nfilters = [8]\n[config.augment]\nspin = 1\n', "spin"),
        ("dataset = \n", "TOML syntax error"),
    ],
)
def test_bad_files_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(TunerError, match=str(path)) as error:
        read_best(path)
    assert message in str(error.value)


def test_best_config_of_a_study() -> None:
    study = make_study(12)
    best = best_config(study)
    trial = study.best_trial
    assert best.trial == trial.number and best.value == trial.value
    assert best.config == TrialConfig.from_dict(trial.user_attrs[attrs.CONFIG])
    assert best.dataset == "digits" and best.metric == "val_accuracy"
    assert best.best_epoch == trial.user_attrs[attrs.BEST_EPOCH]


def test_best_config_errors() -> None:
    empty = optuna.create_study(study_name="empty")
    with pytest.raises(TunerError, match="no complete trial"):
        best_config(empty)
    bare = optuna.create_study(study_name="bare", direction="maximize")
    bare.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(TunerError, match="'config' user attribute"):
        best_config(bare)


def test_cli_best_then_retrain_reads_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = sqlite_url(tmp_path)
    study = make_study(10, name="fake", storage=url)
    runner = CliRunner()

    as_json = runner.invoke(app, ["best", "--study", "fake", "--storage", url, "-f", "json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["trial"] == study.best_trial.number

    result = runner.invoke(app, ["best", "-s", "fake", "--storage", url, "-o", "best.toml"])
    assert result.exit_code == 0, result.output
    best = read_best(tmp_path / "best.toml")
    assert best == best_config(study)

    # Shrink the configuration so one epoch on CPU takes a moment, then retrain from the file.
    small = replace(best, config=replace(best.config, filters=(4,), fc_units=8, batch_size=256))
    (tmp_path / "small.json").write_text(to_json(small))
    result = runner.invoke(
        app, ["retrain", "--config", "small.json", "--epochs", "1", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "runs" / "fake" / "model.json").read_text())
    assert card["study"] == "fake" and card["trial"] == best.trial
    assert card["config"]["filters"] == [4] and card["epochs"] == 1


def test_cli_best_unknown_study(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    make_study(3, name="fake", storage=url)
    result = CliRunner().invoke(app, ["best", "--study", "nope", "--storage", url])
    assert result.exit_code == 2
    assert "no study 'nope'" in result.stderr and "fake" in result.stderr


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("kernel_size = 10001", "config.kernel_size: must be an odd int from 1 to 31"),
        ("learning_rate = nan", "config.learning_rate: must be a float > 0"),
        ("weight_decay = inf", "config.weight_decay: must be a float >= 0"),
        ("fc_units = 0", "config.fc_units: must be an int from 1 to 8192"),
        ('optimizer = "lbfgs"', "config.optimizer: must be 'adamw' or 'sgd'"),
        ("max_epochs = 0", "config.max_epochs: must be an int >= 1"),
        ("seed = -1", "config.seed: must be an int from 0"),
        ("filters = [8, 8, 8, 8, 8, 8, 8]", "config.filters: must be a list of ints"),
        ("filters = [8, 100000]", "config.filters[1]: must be an int from 1 to 1024"),
        ("[config.augment]\ncutout = -2", "config.augment.cutout: must be >= 0"),
    ],
)
def test_config_values_outside_their_domains_are_refused(
    tmp_path: Path, line: str, key: str
) -> None:
    path = tmp_path / "bad.toml"
    filters = "" if line.startswith("filters") else "filters = [8]\n"
    path.write_text(f'dataset = "digits"\n[config]\n{filters}{line}\n')
    with pytest.raises(TunerError, match=str(path)) as error:
        read_best(path)
    assert key in str(error.value)
    assert "\n" not in str(error.value)


def test_retrain_of_a_study_named_like_a_path_stays_in_runs(tmp_path: Path, monkeypatch) -> None:
    from tuner.files import study_slug

    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    config = TrialConfig(filters=(4,), fc_units=8, batch_size=256, max_epochs=1, patience=0)
    (work / "best.json").write_text(
        to_json(BestConfig("digits", config, study="../../etc/x", trial=0, best_epoch=1))
    )
    result = CliRunner().invoke(
        app,
        ["retrain", "-c", "best.json", "--device", "cpu", "--cache-dir", str(tmp_path / "c")],
    )
    assert result.exit_code == 0, result.output
    model_dir = work / "runs" / study_slug("../../etc/x")
    assert (model_dir / "model.json").is_file()
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    assert {p for p in written if p.parts[0] != "c"} == {
        Path("a", "b", "best.json"),
        *(Path("a", "b", "runs", model_dir.name, f) for f in ("model.safetensors", "model.json")),
        Path("a", "b", "runs", model_dir.name, "retrain.html"),
    }
