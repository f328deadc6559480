"""tuner.trained.model_export and `tuner export`: ONNX and PT2 files that take raw images."""

from __future__ import annotations

import builtins
import copy
import json
from pathlib import Path

import pytest
import torch
from model_fixtures import FORMAT_PARAMS, save_untrained_model
from PIL import Image
from typer.testing import CliRunner

from tuner.cli import app
from tuner.errors import TunerError
from tuner.trained.model_export import (
    FORMATS,
    PARITY_TOLERANCE,
    ExportFormat,
    export_model,
    load_exported,
)
from tuner.trained.predict import load_predictor, probabilities

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Each family on small images: resnet18 and mobilenet take their small-image stems here.
FAMILIES = [
    ("seed-cnn", {"channels": 1, "size": 8}),
    ("resnet18", {"channels": 3, "size": 12}),
    ("mobilenet_v3_small", {"channels": 1, "size": 8}),
]


def raw_images(card, count: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (count, *card.input_shape)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize("fmt", FORMAT_PARAMS)
@pytest.mark.parametrize(("family", "shape"), FAMILIES, ids=[f for f, _ in FAMILIES])
def test_export_matches_the_saved_model_on_raw_images(
    tmp_path: Path, fmt: str, family: str, shape: dict
) -> None:
    """The file takes uint8 images of any batch size and gives the saved model's logits."""
    directory = tmp_path / "model"
    model, card = save_untrained_model(directory, family=family, **shape)
    out = tmp_path / f"model.{fmt}"
    result = export_model(directory, fmt, out)
    assert out.is_file() and result.max_abs_diff <= PARITY_TOLERANCE

    exported = load_exported(out)
    assert exported.card == load_predictor(directory)[1]  # the card travels inside the file
    for batch in (1, 7):  # neither is the traced batch size
        images = raw_images(card, batch)
        with torch.inference_mode():
            expected = model(card.normalise(images))
        logits = exported(images)
        assert logits.shape == (batch, card.num_classes)
        assert torch.allclose(logits, expected, rtol=0, atol=PARITY_TOLERANCE)
    images = raw_images(card, 4, seed=2)
    assert torch.allclose(
        probabilities(exported, exported.card, images),
        probabilities(model, card, images),
        rtol=0,
        atol=1e-5,
    )


def test_a_file_that_fails_the_parity_check_is_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "model"
    save_untrained_model(directory)
    pt2 = FORMATS["pt2"]

    def write_other_weights(model, example, card_json, path) -> None:
        other = copy.deepcopy(model)  # the check compares against `model` itself
        with torch.no_grad():
            for parameter in other.parameters():
                parameter.add_(0.5)
        pt2.write(other, example, card_json, path)

    monkeypatch.setitem(FORMATS, "pt2", ExportFormat(".pt2", write_other_weights, pt2.load))
    out = tmp_path / "model.pt2"
    out.write_bytes(b"an earlier export")
    with pytest.raises(TunerError, match=r"parity check failed.*tolerance 0\.001\); not written"):
        export_model(directory, "pt2", out)
    assert out.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.pt2"]  # no leftovers


def test_missing_onnx_packages_give_the_install_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "model"
    save_untrained_model(directory)
    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name.split(".")[0] == "onnxruntime":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    result = CliRunner().invoke(
        app, ["export", "--card", str(directory), "--format", "onnx", "--out", "m.onnx"]
    )
    assert result.exit_code == 2, result.output
    assert "pip install 'tuner[onnx]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_file_without_a_card_is_refused(tmp_path: Path) -> None:
    program = torch.export.export(torch.nn.Linear(2, 2), (torch.ones(1, 2),))
    path = tmp_path / "bare.pt2"
    torch.export.save(program, path)
    with pytest.raises(TunerError, match="no tuner model card inside"):
        load_exported(path)
    with pytest.raises(TunerError, match="no such exported model"):
        load_exported(tmp_path / "absent.onnx")


@pytest.mark.parametrize("fmt", FORMAT_PARAMS)
def test_cli_export_then_predict_with_the_file(tmp_path: Path, fmt: str) -> None:
    """`tuner export` prints the parity figure; `tuner predict` reads the file like the model."""
    directory = tmp_path / "model"
    save_untrained_model(directory, channels=3, size=8)
    image = tmp_path / "a.png"
    Image.new("RGB", (20, 12), (200, 30, 90)).save(image)

    result = CliRunner().invoke(app, ["export", "--card", str(directory), "--format", fmt])
    assert result.exit_code == 0, result.output
    out = directory / f"model.{fmt}"
    assert f"written to {out}" in result.stdout.replace("\n", "")
    assert "max abs difference" in result.stdout and "uint8 (batch, 3, 8, 8)" in result.stdout

    def predicted(model: Path) -> list[dict]:
        run = CliRunner().invoke(app, ["predict", "--model", str(model), "--json", str(image)])
        assert run.exit_code == 0, run.output
        return json.loads(run.stdout)[0]["predictions"]

    from_file, from_model = predicted(out), predicted(directory)
    assert [p["class"] for p in from_file] == [p["class"] for p in from_model]
    for a, b in zip(from_file, from_model, strict=True):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)
