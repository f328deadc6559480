"""tuner from Python (tuner.api): studies as dicts, run, trials, best, retrain, predict, docs."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

import tuner
from studies import tiny_study_toml
from tuner.errors import TunerError
from tuner.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {
    "name": "tiny-dict",
    "sampler": {"name": "random", "seed": 0},
    "pruner": {"name": "none"},
    "dataset": {"name": "digits", "train_subset": 300},
    "training": {"max_epochs": 2, "patience": 0, "trials": 2},
    "space": {
        "learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
        "batch_size": 64,
        "num_blocks": 1,
        "filters": 4,
        "fc_units": 16,
    },
}


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def test_import_tuner_loads_neither_torch_nor_optuna() -> None:
    """`import tuner` and looking up its functions stay fast: no torch, no Optuna."""
    code = (
        "import sys, tuner\n"
        "functions = [tuner.run, tuner.trials, tuner.best, tuner.retrain, tuner.load_model,\n"
        "             tuner.predict, tuner.write_report, tuner.visualize]\n"
        "print(sorted(m for m in ('torch', 'optuna', 'pandas', 'plotly') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert out.stdout.strip() == "[]"
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "optuna" not in imported


def test_a_dict_study_gets_the_file_checks_and_messages(tmp_path: Path) -> None:
    """The same mistake in a file and in a dict: the same message, naming <dict>."""
    path = tmp_path / "study.toml"
    path.write_text(tiny_study_toml(training="max_epochs = 0"))
    with pytest.raises(TunerError) as from_file:
        load_spec(path)
    with pytest.raises(TunerError) as from_dict:
        tuner.run({**TINY, "training": {"max_epochs": 0}}, storage="sqlite:///:memory:")
    assert str(from_file.value) == f"{path}: [training].max_epochs: must be 1 to 10,000, got 0"
    assert str(from_dict.value) == "<dict>: [training].max_epochs: must be 1 to 10,000, got 0"


def test_a_dict_study_names_itself_and_is_a_dict() -> None:
    unnamed = {key: value for key, value in TINY.items() if key != "name"}
    with pytest.raises(TunerError, match=r"^<dict>: name: required in a study given as a dict"):
        tuner.run(unnamed)
    with pytest.raises(TunerError, match=r"^study: a study file's path, a study name or a dict"):
        tuner.run(42)  # type: ignore[arg-type]
    with pytest.raises(TunerError, match=r"^unknown study 'no-such-study'"):
        tuner.run("no-such-study")


def test_wrong_options_are_user_errors_before_storage(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 't.db'}"
    for options, message in (
        ({"trials": 0}, "trials: must be an integer >= 1, got 0"),
        ({"workers": "many"}, "workers: must be 'auto' or an integer >= 1, got 'many'"),
        ({"budget": "soon"}, "budget: got 'soon'"),
        ({"precision": "fp8"}, "unknown precision 'fp8'"),
        ({"from_study": "a", "enqueue_from": "b"}, "--from and --enqueue-from"),
    ):
        with pytest.raises(TunerError) as raised:
            tuner.run(TINY, storage=storage, console=quiet(), **options)
        assert str(raised.value).startswith(message)
    assert not (tmp_path / "t.db").exists()


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> tuple[str, object]:
    """TINY run once from Python into its own storage."""
    folder = tmp_path_factory.mktemp("api")
    storage = f"sqlite:///{folder / 'tuner.db'}"
    return storage, tuner.run(TINY, storage=storage, console=quiet())


def test_run_returns_the_summary(ran) -> None:
    _, result = ran
    assert result.study == "tiny-dict"
    assert result.reason == "trials"
    assert (result.ran.complete, result.ran.pruned, result.ran.failed) == (2, 0, 0)
    assert result.finished == 2
    assert 0.0 <= result.best_value <= 1.0
    assert set(result.best_params) == {"learning_rate"}
    with pytest.raises(AttributeError):
        result.study = "other"  # frozen


def test_trials_is_one_row_a_trial_with_tuners_attributes(ran) -> None:
    storage, result = ran
    # The trials that ran (a new study also holds the portfolio's, queued: WAITING).
    table = tuner.trials(TINY, storage).query("state != 'WAITING'")
    assert list(table["number"]) == [0, 1]
    assert list(table["state"]) == ["COMPLETE", "COMPLETE"]
    assert list(table.columns[:5]) == [
        "number",
        "state",
        "value_val_accuracy",
        "duration",
        "params_learning_rate",
    ]
    assert list(table["epochs_run"]) == [2, 2]
    assert set(table["precision"]) <= {"fp32", "bf16"}
    assert (table["param_count"] > 0).all()
    assert table["value_val_accuracy"].max() == pytest.approx(result.best_value)
    assert not any(column.startswith("user_attrs_") for column in table.columns)
    assert "config" not in table.columns
    by_name = tuner.trials("tiny-dict", storage).query("state != 'WAITING'")  # its stored name
    assert by_name.shape == table.shape


def test_trials_without_pandas_says_how_to_get_it(ran, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` raises ImportError
    with pytest.raises(TunerError, match=r"pip install 'tuner\[pandas\]'$"):
        tuner.trials(TINY, ran[0])


def test_best_retrain_load_predict(ran, tmp_path: Path) -> None:
    storage, result = ran
    best = tuner.best(TINY, storage)
    assert (best.trial, best.value) == (result.best_trial, result.best_value)
    saved = tuner.retrain(TINY, storage=storage, epochs=1, out=tmp_path / "m", console=quiet())
    assert saved.weights == tmp_path / "m" / "model.safetensors" and saved.report.is_file()
    model, card = tuner.load_model(saved.directory)
    assert card == saved.card and not model.training

    from tuner.data import load_dataset

    test = load_dataset("digits").test
    batch = tuner.predict((model, card), test.images[:4], top_k=2)
    assert [len(p.top) for p in batch] == [2] * 4 and batch[0].path is None
    one = tuner.predict(saved.directory, test.images[0].numpy())  # a path; numpy (C, H, W)
    assert one[0].top[0][0] == batch[0].top[0][0]
    assert one[0].top[0][1] == pytest.approx(batch[0].top[0][1], abs=1e-6)  # batch of 1 vs 4
    with pytest.raises(TunerError, match=r"^images: uint8 pixels shaped \(N, 1, 8, 8\)"):
        tuner.predict((model, card), test.images[:2].float())
    with pytest.raises(TunerError, match=r"^model: a saved model's path, or the \(model, card\)"):
        tuner.predict(model, test.images[:2])
    page = tuner.visualize(saved.directory)
    assert page == tmp_path / "m" / "viz.html" and page.is_file()
    report = tuner.write_report(TINY, tmp_path / "r.html", storage)
    assert report.is_file()


def test_a_dict_study_runs_in_worker_processes(tmp_path: Path) -> None:
    """Worker processes get the dict with their settings: no study file is needed."""
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    result = tuner.run(
        {**TINY, "name": "tiny-workers"}, storage=storage, workers=2, console=quiet()
    )
    # two workers may both start a trial while one is missing: the total is at least 2
    assert result.reason == "trials" and result.finished >= 2 and result.ran.failed == 0


def test_progress_shows_as_plain_lines_in_a_fresh_python(tmp_path: Path) -> None:
    """As in a notebook: logging not configured, stdout not a terminal -> plain lines."""
    code = (
        "import tuner\n"
        f"study = {TINY!r}\n"
        "study['training'] = dict(study['training'], trials=1)\n"
        "tuner.run(study, storage='sqlite:///t.db')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert re.search(r"^trial 0 epoch 2/2: val_accuracy \d\.\d{4}", out.stdout, re.M)
    assert re.search(r"^trial 0 complete value \d\.\d+; best so far", out.stdout, re.M)
    assert "done: study tiny-dict reached 1 finished trial" in out.stdout
    assert "Trial 0 finished" not in out.stdout + out.stderr  # Optuna's own line, quieted


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, re.S | re.M)


def test_the_python_guide_runs(tmp_path: Path) -> None:
    """docs/python.md's code blocks, in order, in a fresh interpreter (as a notebook runs them)."""
    blocks = python_blocks((ROOT / "docs" / "python.md").read_text())
    assert len(blocks) >= 5
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "TUNER_STORAGE": f"sqlite:///{tmp_path / 'tuner.db'}",
    }
    out = subprocess.run(
        [sys.executable, "-c", "\n".join(blocks)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "<dict>: [training].max_epochs: must be 1 to 10,000, got 0" in out.stdout
    assert (tmp_path / "runs" / "digits-notebook" / "model.safetensors").is_file()
    assert (tmp_path / "runs" / "digits-notebook" / "viz.html").is_file()
    assert (tmp_path / "runs" / "report-digits-notebook.html").is_file()
