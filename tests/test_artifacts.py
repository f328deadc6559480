"""tuner.trained.card: saving and loading a model + card, and refusing files that are not one."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import pytest
import torch
from model_fixtures import save_untrained_model, untrained_card
from safetensors.torch import save_file

from tuner.errors import TunerError
from tuner.trained.card import CARD_FILE, WEIGHTS_FILE, ModelCard, load_card, load_model, save_model


@pytest.fixture
def saved(tmp_path: Path):
    directory = tmp_path / "model"
    model, card = save_untrained_model(directory)
    return directory, model, card


def test_round_trip_gives_identical_logits(saved) -> None:
    directory, model, card = saved
    images = torch.randint(0, 256, (5, *card.input_shape), dtype=torch.uint8)
    with torch.inference_mode():
        expected = model(card.normalise(images))
    for path in (directory, directory / WEIGHTS_FILE, directory / CARD_FILE):
        loaded, loaded_card = load_model(path)
        with torch.inference_mode():
            assert torch.equal(loaded(loaded_card.normalise(images)), expected)
        assert not loaded.training


def test_card_round_trips_through_json(saved) -> None:
    directory, _, card = saved
    loaded = load_card(directory)
    assert loaded.weights_sha256  # filled in by save_model
    assert loaded == ModelCard(**{**card.__dict__, "weights_sha256": loaded.weights_sha256})
    data = json.loads((directory / CARD_FILE).read_text())
    assert data["format"] == "tuner-model/1"
    assert data["input_shape"] == [1, 8, 8]
    assert data["config"]["filters"] == [4, 6]


def test_normalise_matches_training_arithmetic() -> None:
    from tuner.data import ImageSet, Splits
    from tuner.engine import to_device

    card = untrained_card(channels=3)
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    labels = torch.zeros(4, dtype=torch.int64)
    data = to_device(
        Splits(ImageSet(images, labels), ImageSet(images, labels), 3, card.mean, card.std),
        torch.device("cpu"),
    )
    assert torch.equal(card.normalise(images), data.normalise(images))


def test_garbage_bytes_are_refused_naming_the_file(saved) -> None:
    directory, _, _ = saved
    weights = directory / WEIGHTS_FILE
    weights.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(TunerError, match=str(weights)) as error:
        load_model(directory)
    assert "safetensors" in str(error.value)
    assert "\n" not in str(error.value)


class _Evil:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_a_malicious_pickle_is_never_executed(saved, tmp_path: Path, writer: str) -> None:
    directory, _, _ = saved
    marker = tmp_path / "pwned"
    weights = directory / WEIGHTS_FILE
    if writer == "pickle":
        weights.write_bytes(pickle.dumps(_Evil(marker)))
    else:
        buffer = io.BytesIO()
        torch.save({"model": _Evil(marker)}, buffer)
        weights.write_bytes(buffer.getvalue())
    with pytest.raises(TunerError, match=str(weights)):
        load_model(weights)
    assert not marker.exists()


def test_a_pickled_state_dict_renamed_is_refused(saved) -> None:
    directory, model, _ = saved
    weights = directory / WEIGHTS_FILE
    torch.save(model.state_dict(), weights)
    with pytest.raises(TunerError, match="not a safetensors weights file"):
        load_model(directory)


def test_missing_card(saved) -> None:
    directory, _, _ = saved
    (directory / CARD_FILE).unlink()
    with pytest.raises(TunerError, match=f"{directory / WEIGHTS_FILE}: not a tuner model"):
        load_model(directory / WEIGHTS_FILE)


def test_no_such_model(tmp_path: Path) -> None:
    with pytest.raises(TunerError, match="no such model"):
        load_model(tmp_path / "nothing")


def test_malformed_card(saved) -> None:
    directory, _, _ = saved
    card = directory / CARD_FILE
    card.write_text("{not json")
    with pytest.raises(TunerError, match=f"{card}: unreadable model card"):
        load_model(directory)
    card.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(TunerError, match=f"{card}: not a tuner model card"):
        load_model(directory)


def test_shape_mismatch_names_the_file(saved) -> None:
    directory, _, _ = saved
    card_path = directory / CARD_FILE
    data = json.loads(card_path.read_text())
    data["config"]["filters"] = [5, 6]  # the weights were saved for [4, 6]
    card_path.write_text(json.dumps(data))
    with pytest.raises(TunerError, match=f"{directory / WEIGHTS_FILE}: weights do not fit") as e:
        load_model(directory)
    assert "size mismatch" in str(e.value)
    assert "\n" not in str(e.value)


def test_wrong_keys_are_refused(tmp_path: Path) -> None:
    directory = tmp_path / "model"
    save_untrained_model(directory)
    save_file({"something.else": torch.zeros(3)}, str(directory / WEIGHTS_FILE))
    data = json.loads((directory / CARD_FILE).read_text())
    data["weights_sha256"] = ""  # a hand-made card without checksum
    (directory / CARD_FILE).write_text(json.dumps(data))
    with pytest.raises(TunerError, match="Missing key"):
        load_model(directory)


def test_weights_from_another_run_are_refused(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    save_untrained_model(first, seed=1)
    save_untrained_model(second, seed=2)
    (first / WEIGHTS_FILE).write_bytes((second / WEIGHTS_FILE).read_bytes())
    with pytest.raises(TunerError, match="checksum differs"):
        load_model(first)


def test_save_is_atomic_when_interrupted(tmp_path: Path, monkeypatch) -> None:
    directory = tmp_path / "model"
    model, card = save_untrained_model(tmp_path / "first")

    def interrupted(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr("tuner.trained.card.save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_model(directory, model, card)
    assert list(directory.iterdir()) == []  # no partial file, no temporary file


def test_saved_files_are_readable_by_others(saved) -> None:
    directory, _, _ = saved
    for name in (WEIGHTS_FILE, CARD_FILE):
        assert (directory / name).stat().st_mode & 0o044 == 0o044


def _edit_card(directory: Path, **changes) -> Path:
    path = directory / CARD_FILE
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"input_shape": [1, 100000, 100000]}, "input_shape: height and width must be 1 to 1024"),
        ({"input_shape": [2, 8, 8]}, "input_shape: channels must be 1 (grey) or 3 (RGB)"),
        ({"input_shape": [1, 8]}, "input_shape: must be [channels, height, width]"),
        ({"input_shape": [1, 8, 8.5]}, "input_shape: must be [channels, height, width]"),
        ({"std": [0.0]}, "std: every channel's std must be > 0"),
        ({"std": [0.2, 0.2, 0.2]}, "std: must be a list of 1 (one per input channel)"),
        ({"mean": [float("nan")]}, "mean[0]: must be a finite number from 0 to 1"),
        ({"mean": ["0.1"]}, "mean[0]: must be a finite number"),
        ({"class_names": ["cat", "cat", "dog"]}, "class_names: must name at least 2 distinct"),
        ({"class_names": ["cat", "dog"]}, "per_class_accuracy: must have one entry per class"),
        ({"confusion_matrix": [[1, 2], [3, 4]]}, "confusion_matrix: must be 3x3 counts"),
        ({"per_class_accuracy": {"cat": 2.0, "dog": 0, "bird": None}}, "per_class_accuracy.cat"),
        (
            {"config": {"filters": [4, 6], "kernel_size": 1001}},
            "config.kernel_size: must be an odd",
        ),
        ({"config": {"filters": [4, 6], "dropout": 1.5}}, "config.dropout: must be a float in"),
        ({"config": {"filters": [4, 6], "speed": 3}}, "config.speed: unknown key"),
        ({"trial": -1}, "trial: must be an int >= 0"),
        ({"epochs": "3"}, "epochs: must be an int >= 1"),
        ({"test_accuracy": 1.5}, "test_accuracy: must be 0 to 1"),
        ({"train_accuracy": [0.5, 2.0]}, "train_accuracy[1]: must be a finite number from 0 to 1"),
        ({"dataset": ""}, "dataset: must name the dataset"),
        ({"weights_sha256": "../x"}, "weights_sha256: must be empty or 64 lowercase hex"),
        ({"colour": "red"}, "colour: unknown key"),
    ],
)
def test_every_card_field_is_checked_before_the_model_is_built(
    saved, changes: dict, message: str
) -> None:
    directory, _, _ = saved
    card_path = _edit_card(directory, **changes)
    with pytest.raises(TunerError) as error:
        load_model(directory)
    assert str(error.value).startswith(f"{card_path}: ")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_missing_card_field_is_named(saved) -> None:
    directory, _, _ = saved
    card_path = directory / CARD_FILE
    data = json.loads(card_path.read_text())
    del data["std"]
    card_path.write_text(json.dumps(data))
    with pytest.raises(TunerError, match=f"^{card_path}: std: missing$"):
        load_card(directory)


def test_class_names_must_match_the_weights_head(saved) -> None:
    directory, _, _ = saved
    names = ["cat", "dog", "bird", "fish"]
    card_path = _edit_card(
        directory,
        class_names=names,
        per_class_accuracy=dict.fromkeys(names, 0.5),
        confusion_matrix=[[1] * 4] * 4,
        weights_sha256="",
    )
    with pytest.raises(TunerError, match=f"^{card_path}: class_names: 4 names, but the weights'"):
        load_model(directory)


def test_param_count_must_match_the_model(saved) -> None:
    directory, model, _ = saved
    card_path = _edit_card(directory, param_count=5)
    with pytest.raises(TunerError) as error:
        load_model(directory)
    actual = sum(p.numel() for p in model.parameters())
    assert str(error.value) == (
        f"{card_path}: param_count: 5, but the model it describes has {actual} parameters"
    )


def test_a_deeply_nested_card_is_one_line(saved) -> None:
    directory, _, _ = saved
    card_path = directory / CARD_FILE
    card_path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(TunerError, match=f"^{card_path}: unreadable model card"):
        load_card(directory)


def test_model_pages_default_to_the_model_folder(saved, tmp_path: Path, monkeypatch) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from tuner.cli import app

    directory, _, _ = saved
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    Image.new("L", (8, 8)).save(work / "a.png")
    for model in (directory, directory / WEIGHTS_FILE):
        (directory / "viz.html").unlink(missing_ok=True)
        result = CliRunner().invoke(app, ["visualize", "-m", str(model), "-i", "a.png"])
        assert result.exit_code == 0, result.output
        assert (directory / "viz.html").is_file()
        assert sorted(p.name for p in work.iterdir()) == ["a.png"]


def test_the_trained_package_names_what_callers_use_and_imports_it_lazily() -> None:
    import subprocess
    import sys

    import tuner.trained
    from tuner.trained import card, export, model_export, predict, retrain

    expected = {
        "ModelCard": card.ModelCard,
        "load_card": card.load_card,
        "load_model": card.load_model,
        "save_model": card.save_model,
        "model_paths": card.model_paths,
        "BestConfig": export.BestConfig,
        "best_config": export.best_config,
        "read_best": export.read_best,
        "render": export.render,
        "Prediction": predict.Prediction,
        "predict_files": predict.predict_files,
        "read_image": predict.read_image,
        "exit_code": predict.exit_code,
        "load_predictor": predict.load_predictor,
        "export_model": model_export.export_model,
        "load_exported": model_export.load_exported,
        "retrain_model": retrain.retrain,
        "save_retrained": retrain.save,
        "epochs_for": retrain.epochs_for,
    }
    assert sorted(tuner.trained.__all__) == sorted(expected)
    for name, value in expected.items():
        assert getattr(tuner.trained, name) is value
    # Importing the package alone loads none of the heavy modules: a verb pays for what it uses.
    code = (
        "import sys, tuner.trained; print(sorted({'torch', 'plotly', 'optuna'} & set(sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"
