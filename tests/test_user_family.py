"""Families from the user's code: `[model] family = "models.py:build"`, modules, entry points,
and `timm:NAME`; tuned, retrained, predicted and visualised by the CLI and from Python."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import torch
from model_fixtures import FORMAT_PARAMS
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

import tuner
from studies import tiny_data
from tuner.cli import app
from tuner.engine.train import evaluate
from tuner.errors import TunerError
from tuner.spec import load_spec
from tuner.trained.model_export import PARITY_TOLERANCE, load_exported

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RESIDUAL_CNN = '''\
"""A small residual CNN whose width tuner samples."""

from torch import nn


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
        )

    def forward(self, x):
        return (x + self.body(x)).relu()


def build(params, input_shape, num_classes):
    width = params["width"]
    return nn.Sequential(
        nn.Conv2d(input_shape[0], width, 3, padding=1),
        *[Block(width) for _ in range(params["blocks"])],
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(params["dropout"]),
        nn.Linear(width, num_classes),
    )
'''

STUDY = """\
name = "{name}"
[sampler]
name = "random"
seed = 0
[pruner]
name = "none"
[dataset]
name = "digits"
train_subset = 300
[training]
max_epochs = 2
patience = 0
trials = 2
[model]
family = "{family}"
[space]
learning_rate = {{ type = "float", low = 1e-3, high = 3e-2, log = true }}
width = {{ type = "int", low = 8, high = 16, step = 8 }}
blocks = 1
batch_size = 64
"""


def write_study(folder: Path, code: str = RESIDUAL_CNN, family: str = "models.py:build") -> Path:
    (folder / "models.py").write_text(code)
    path = folder / "study.toml"
    path.write_text(STUDY.format(name="resid", family=family))
    return path


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def cli(*args: str) -> object:
    return CliRunner().invoke(app, list(args))


def test_the_spec_keeps_the_file_absolute_with_its_hash(tmp_path: Path) -> None:
    spec = load_spec(write_study(tmp_path))
    assert spec.space["family"].value == f"{tmp_path / 'models.py'}:build"
    assert len(spec.model.family_sha256) == 64
    assert not spec.space["width"].is_fixed and spec.space["blocks"].value == 1


def test_own_parameters_are_for_families_from_code_only(tmp_path: Path) -> None:
    path = write_study(tmp_path, family="resnet18")
    with pytest.raises(TunerError) as raised:
        load_spec(path)
    assert str(raised.value).startswith(f"{path}: [space].width: unknown key; allowed: ")


def test_a_family_from_code_is_named_in_model(tmp_path: Path) -> None:
    (tmp_path / "models.py").write_text(RESIDUAL_CNN)
    text = (
        STUDY.format(name="resid", family="seed-cnn")
        .replace(
            "blocks = 1\n",
            'blocks = 1\nfamily = { type = "categorical", choices = ["models.py:build"] }\n',
        )
        .replace('[model]\nfamily = "seed-cnn"\n', "")
    )
    path = tmp_path / "study.toml"
    path.write_text(text)
    with pytest.raises(TunerError) as raised:
        load_spec(path)
    assert str(raised.value) == (
        f"{path}: [space].family: 'models.py:build' is not built in: a family from code is "
        "named in [model].family, one per study"
    )


# Each problem of a build function: the one line `tuner run` prints (after "error: ").
BROKEN = {
    "no file": (None, "{file}: no such file"),
    "no function": (
        "def make(params, input_shape, num_classes):\n    pass\n",
        "{ref}: the file has no 'build'",
    ),
    "not callable": ("build = 3\n", "{ref}: is int, not a function"),
    "wrong return type": (
        "def build(params, input_shape, num_classes):\n    return [1, 2]\n",
        "{ref}: build returned list, not a torch.nn.Module",
    ),
    "exception inside build": (
        "def build(params, input_shape, num_classes):\n    raise ValueError('width too small')\n",
        "{ref}: build raised ValueError: width too small",
    ),
    "a parameter the space lacks": (
        "def build(params, input_shape, num_classes):\n    return params['depth']\n",
        "{ref}: build reads params['depth'], which [space] does not declare",
    ),
    "wrong output shape": (
        "from torch import nn\n"
        "def build(params, input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 5))\n",
        "{ref}: the network's output for a batch of 2 1x8x8 images is (2, 5); it must be "
        "(2, 10): one score per class",
    ),
    "forward fails": (
        "from torch import nn\n"
        "def build(params, input_shape, num_classes):\n"
        "    return nn.Linear(3, num_classes)\n",
        "{ref}: the network's forward pass on a batch of 2 1x8x8 images raised RuntimeError: "
        "mat1 and mat2 shapes cannot be multiplied (16x8 and 3x10)",
    ),
    "running the file fails": (
        "import no_such_module_here\n",
        "{file}: running it raised ModuleNotFoundError: No module named 'no_such_module_here'",
    ),
}


@pytest.mark.parametrize("problem", list(BROKEN))
def test_each_problem_is_one_line_and_nothing_is_stored(tmp_path: Path, problem: str) -> None:
    code, expected = BROKEN[problem]
    path = write_study(tmp_path, code=code or RESIDUAL_CNN)
    file = tmp_path / "models.py"
    if code is None:
        file.unlink()
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    result = cli("run", "--study", str(path), "--storage", storage)
    line = expected.format(file=file, ref=f"{file}:build")
    assert result.exit_code == 2
    assert result.stderr == f"error: {path}: [model].family: {line}\n"
    assert not (tmp_path / "tuner.db").exists()


def test_tuned_on_a_budget_retrained_predicted_visualised_by_the_cli(tmp_path: Path) -> None:
    path = write_study(tmp_path)
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    ran = cli("run", "--study", str(path), "--storage", storage, "--budget", "2m", "--trials", "2")
    assert ran.exit_code == 0, ran.output
    assert "best val_accuracy" in ran.output
    out = tmp_path / "model"
    trained = cli(
        "retrain", "--study", str(path), "--storage", storage, "--epochs", "1", "--out", str(out)
    )
    assert trained.exit_code == 0, trained.output
    card = tuner.load_model(out)[1]
    assert card.config.family == f"{tmp_path / 'models.py'}:build"
    assert card.config.family_sha256 == load_spec(path).model.family_sha256
    assert dict(card.config.model_params)["width"] in (8, 16)
    assert card.adaptation == f"{card.config.family}: as the build function made it for 1x8x8"
    seen = cli("visualize", "--model", str(out))
    assert seen.exit_code == 0, seen.output
    page = (out / "viz.html").read_text()
    assert page.count("<h2") >= 3  # the stem conv and the block's two convs, found by walking
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (8, 8), 128).save(image)
    predicted = cli("predict", "--model", str(out), "--json", str(image))
    assert predicted.exit_code == 0, predicted.output

    # The file changes (or goes): retrain and predict refuse in one line.
    (tmp_path / "models.py").write_text(RESIDUAL_CNN + "# edited\n")
    for result in (
        cli("predict", "--model", str(out), str(image)),
        cli("retrain", "--study", str(path), "--storage", storage, "--out", str(out)),
    ):
        assert result.exit_code == 2
        assert result.stderr.splitlines()[-1].startswith(
            f"error: {tmp_path / 'models.py'}: changed since this configuration was tuned "
            "(SHA-256 differs from "
        )
    (tmp_path / "models.py").unlink()
    gone = cli("predict", "--model", str(out), str(image))
    assert gone.exit_code == 2 and gone.stderr == f"error: {tmp_path / 'models.py'}: no such file\n"


@dataclass(frozen=True)
class Kept:
    """A user-family study that ran, and the best trial's kept weights saved by `best --model`."""

    study: Path
    storage: str
    model: Path


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Kept:
    folder = tmp_path_factory.mktemp("user-best")
    path = write_study(folder)
    storage = f"sqlite:///{folder / 'tuner.db'}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests (one_torch_thread): the accuracy is compared exactly
    try:
        ran = cli("run", "--study", str(path), "--storage", storage)
    finally:
        torch.set_num_threads(threads)
    assert ran.exit_code == 0, ran.output
    out = folder / "kept"
    saved = cli("best", "--study", str(path), "--storage", storage, "--model", str(out))
    assert saved.exit_code == 0, saved.output
    assert "trained on the training split only" in saved.stdout
    return Kept(path, storage, out)


def test_best_model_saves_the_user_models_own_weights(kept: Kept) -> None:
    """No retraining: the user's network with the best trial's weights scores its value."""
    model, card = tuner.load_model(kept.model)
    study = optuna.load_study(study_name="resid", storage=kept.storage)
    assert card.trial == study.best_trial.number and card.trained_on == "train"
    assert card.config.family == f"{kept.study.parent / 'models.py'}:build"
    assert dict(card.config.model_params)["width"] == study.best_params["width"]
    data = tiny_data(load_spec(kept.study))
    _, accuracy = evaluate(model, data, data.val_images, data.val_labels)
    assert accuracy == study.best_value


@pytest.mark.parametrize("fmt", FORMAT_PARAMS)
def test_the_kept_user_model_exports_with_parity(kept: Kept, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"resid.{fmt}"
    result = cli("export", "--card", str(kept.model), "--format", fmt, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "max abs difference" in result.stdout
    model, card = tuner.load_model(kept.model)
    exported = load_exported(out)
    assert exported.card == card
    generator = torch.Generator().manual_seed(3)
    for batch in (1, 5):  # raw uint8 images, any batch size
        images = torch.randint(0, 256, (batch, *card.input_shape), dtype=torch.uint8,
                               generator=generator)  # fmt: skip
        with torch.inference_mode():
            expected = model(card.normalise(images))
        assert torch.allclose(exported(images), expected, rtol=0, atol=PARITY_TOLERANCE)
    image = tmp_path / "x.png"
    Image.new("L", (8, 8), 200).save(image)
    by_file = cli("predict", "--model", str(out), "--json", str(image))
    by_model = cli("predict", "--model", str(kept.model), "--json", str(image))
    assert by_file.exit_code == 0 and by_model.exit_code == 0, by_file.output + by_model.output
    top = [json.loads(run.stdout)[0]["predictions"][0]["class"] for run in (by_file, by_model)]
    assert top[0] == top[1]


def test_from_python_with_a_dict_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dict study's file is relative to the working directory; the API runs the same path."""
    (tmp_path / "models.py").write_text(RESIDUAL_CNN)
    monkeypatch.chdir(tmp_path)
    import tomllib

    study = tomllib.loads(STUDY.format(name="resid-py", family="models.py:build"))
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    result = tuner.run(study, storage=storage, console=quiet())
    assert result.ran.complete == 2 and set(result.best_params) >= {"width"}
    table = tuner.trials(study, storage)
    assert "params_width" in table.columns
    saved = tuner.retrain(study, storage=storage, epochs=1, out="m", console=quiet())
    model, card = tuner.load_model(saved.directory)
    from tuner.data import load_dataset

    predictions = tuner.predict((model, card), load_dataset("digits").test.images[:3])
    assert len(predictions) == 3
    assert tuner.visualize(saved.directory).is_file()
    from tuner.trained import render

    assert "[config.model_params]" in render(tuner.best(study, storage), "toml")


def test_worker_processes_build_it_too(tmp_path: Path) -> None:
    path = write_study(tmp_path)
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    result = tuner.run(path, storage=storage, workers=2, console=quiet())
    assert result.reason == "trials" and result.finished >= 2 and result.ran.failed == 0


def test_an_entry_point_names_a_family(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A package declares `[project.entry-points."tuner.families"] resid = "resid_models:build"`."""
    site = tmp_path / "site"
    (site / "resid_models.py").parent.mkdir()
    (site / "resid_models.py").write_text(RESIDUAL_CNN)
    info = site / "resid_models-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: resid-models\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[tuner.families]\nresid = resid_models:build\n")
    monkeypatch.syspath_prepend(str(site))
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(name="resid-ep", family="resid"))
    spec = load_spec(path)
    assert spec.space["family"].value == "resid" and spec.model.family_sha256 == ""
    result = tuner.run(path, storage=f"sqlite:///{tmp_path / 't.db'}", console=quiet())
    assert result.ran.complete == 2


def test_a_module_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "resid_module.py").write_text(RESIDUAL_CNN)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(name="resid-mod", family="resid_module:build"))
    result = tuner.run(path, storage=f"sqlite:///{tmp_path / 't.db'}", console=quiet(), trials=1)
    assert result.ran.complete == 1
    path.write_text(STUDY.format(name="resid-mod", family="no_such_module:build"))
    with pytest.raises(TunerError) as raised:
        tuner.run(path, storage=f"sqlite:///{tmp_path / 't.db'}", console=quiet())
    assert str(raised.value) == (
        f"{path}: [model].family: no_such_module:build: no module 'no_such_module' "
        "(is it installed or on PYTHONPATH?)"
    )


TIMM_STUDY = ROOT / "studies" / "digits-timm.toml"


def test_timm_without_timm_says_how_to_install_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    with pytest.raises(TunerError) as raised:
        tuner.run(TIMM_STUDY, storage=f"sqlite:///{tmp_path / 't.db'}", console=quiet())
    assert str(raised.value) == (
        f"{TIMM_STUDY}: [model].family: timm:resnet10t: timm is not installed; install it "
        "with: pip install 'tuner[timm]'"
    )
    assert not (tmp_path / "t.db").exists()


def test_a_timm_model_is_adapted_to_small_images(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    import torch

    from tuner.config import TrialConfig
    from tuner.families import get_family

    family = get_family("timm:resnet10t")
    model = family.build(TrialConfig(family="timm:resnet10t"), (1, 8, 8), 10)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert len(family.stages(model)) == 5 and family.head(model).out_features == 10
    assert "stride-1 first conv" in family.adaptation((1, 8, 8))
    result = tuner.run(
        TIMM_STUDY, trials=1, storage=f"sqlite:///{tmp_path / 't.db'}", console=quiet()
    )
    assert result.ran.complete == 1
    with pytest.raises(TunerError, match=r"^timm:resnet_nope: timm has no model 'resnet_nope'"):
        get_family("timm:resnet_nope")


def test_the_user_family_module_loads_no_torch() -> None:
    """The spec reads family references through it: parsing a study stays torch-free."""
    code = "import sys, tuner.families.user\nprint('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "False", out.stderr
