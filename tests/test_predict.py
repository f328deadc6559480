"""tuner.trained.predict and `tuner predict`: any image file -> class probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import write_blank_png
from model_fixtures import CLASSES, save_untrained_model
from PIL import Image
from typer.testing import CliRunner

from tuner.cli import app
from tuner.data.imagefolder import MAX_IMAGE_PIXELS
from tuner.errors import TunerError
from tuner.trained.predict import (
    exit_code,
    predict_files,
    probabilities,
    read_image,
    top_k,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def gray_model(tmp_path: Path):
    directory = tmp_path / "gray"
    model, card = save_untrained_model(directory, channels=1, size=8)
    return directory, model, card


def write_images(folder: Path) -> dict[str, Path]:
    """Images of different sizes and modes, plus a text file that is not an image."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = {
        "rgb.png": Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8), "RGB"),
        "gray.jpg": Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L"),
        "rgba.png": Image.fromarray(rng.integers(0, 256, (12, 7, 4), dtype=np.uint8), "RGBA"),
        "palette.gif": Image.fromarray(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)).convert(
            "P"
        ),
    }
    for name, image in paths.items():
        image.save(folder / name)
    (folder / "notes.txt").write_text("not an image\n")
    return {name: folder / name for name in [*paths, "notes.txt"]}


def test_read_image_converts_any_mode_and_size(tmp_path: Path, gray_model) -> None:
    _, _, card = gray_model
    images = write_images(tmp_path / "images")
    for name in ("rgb.png", "gray.jpg", "rgba.png", "palette.gif"):
        pixels = read_image(images[name], card)
        assert pixels.shape == (1, 8, 8) and pixels.dtype == torch.uint8
    _, rgb_card = save_untrained_model(tmp_path / "rgb", channels=3, size=16)
    assert read_image(images["gray.jpg"], rgb_card).shape == (3, 16, 16)


def test_read_image_keeps_an_exact_size_image_unchanged(tmp_path: Path, gray_model) -> None:
    _, _, card = gray_model
    array = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    Image.fromarray(array, "L").save(tmp_path / "exact.png")
    assert torch.equal(read_image(tmp_path / "exact.png", card)[0], torch.from_numpy(array))


def test_unreadable_files_raise_naming_the_file(tmp_path: Path, gray_model) -> None:
    _, _, card = gray_model
    images = write_images(tmp_path / "images")
    with pytest.raises(TunerError, match=f"{images['notes.txt']}: not a readable image"):
        read_image(images["notes.txt"], card)
    with pytest.raises(TunerError, match="no such file"):
        read_image(tmp_path / "missing.png", card)


def test_probabilities_sum_to_one_and_top_k_is_ordered(gray_model) -> None:
    _, model, card = gray_model
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    probs = probabilities(model, card, images)
    assert probs.shape == (6, len(CLASSES))
    assert torch.allclose(probs.sum(dim=1), torch.ones(6), atol=1e-6)
    for row in probs:
        top = top_k(row, card.class_names, 2)
        assert len(top) == 2
        assert top[0][1] >= top[1][1]
        assert top[0] == (CLASSES[int(row.argmax())], pytest.approx(float(row.max())))
    assert len(top_k(probs[0], card.class_names, 10)) == len(CLASSES)  # k capped at K


def test_predict_files_skips_bad_files_and_predicts_the_rest(tmp_path: Path, gray_model) -> None:
    _, model, card = gray_model
    images = write_images(tmp_path / "images")
    paths = list(images.values())
    results = predict_files(model, card, paths, k=3)
    assert [r.path for r in results] == paths  # order kept
    for result in results:
        if result.path.name == "notes.txt":
            assert result.error and not result.top
        else:
            assert result.error is None
            assert sum(p for _, p in result.top) == pytest.approx(1.0, abs=1e-5)
            probs = [p for _, p in result.top]
            assert probs == sorted(probs, reverse=True)


def test_cli_table_errors_and_exit_code(tmp_path: Path, gray_model) -> None:
    directory, _, _ = gray_model
    images = write_images(tmp_path / "images")
    args = ["predict", "--model", str(directory), "--top-k", "2"]
    result = CliRunner().invoke(
        app, [*args, str(images["rgb.png"]), str(images["notes.txt"]), str(images["gray.jpg"])]
    )
    assert result.exit_code == 1, result.output
    error_lines = result.stderr.strip().splitlines()
    assert len(error_lines) == 1 and "notes.txt" in error_lines[0]
    assert "rgb.png" in result.stdout and "gray.jpg" in result.stdout
    assert "%" in result.stdout

    ok = CliRunner().invoke(app, [*args, str(images["rgba.png"])])
    assert ok.exit_code == 0, ok.output


def test_cli_json(tmp_path: Path, gray_model) -> None:
    directory, _, _ = gray_model
    images = write_images(tmp_path / "images")
    pair = [str(images["palette.gif"]), str(images["notes.txt"])]
    result = CliRunner().invoke(
        app,
        ["predict", "--model", str(directory), "--json", "-k", "3", *pair],
    )
    assert result.exit_code == 1
    rows = json.loads(result.stdout)
    assert rows[0]["image"].endswith("palette.gif")
    assert [p["class"] for p in rows[0]["predictions"]] != []
    assert sum(p["probability"] for p in rows[0]["predictions"]) == pytest.approx(1.0, abs=1e-5)
    assert "error" in rows[1]


def test_cli_bad_model_is_a_usage_error(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    Image.new("L", (8, 8)).save(image)
    result = CliRunner().invoke(app, ["predict", "--model", str(tmp_path / "none"), str(image)])
    assert result.exit_code == 2
    assert "no such model" in result.stderr


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(
    tmp_path: Path, gray_model
) -> None:
    directory, model, card = gray_model
    bomb = write_blank_png(tmp_path / "bomb.png", 13000, 13000)
    assert bomb.stat().st_size < 2_000_000  # the file: 531 KB, 169 megapixels
    assert MAX_IMAGE_PIXELS < 13000 * 13000  # the premise of this test
    images = write_images(tmp_path / "images")
    results = predict_files(model, card, [bomb, images["rgb.png"]])
    assert results[0].error == (
        f"{bomb}: 13000x13000 pixels is over the limit of {MAX_IMAGE_PIXELS:,}; "
        "shrink the image first"
    )
    assert results[1].error is None and results[1].top
    cli = CliRunner().invoke(
        app, ["predict", "-m", str(directory), str(bomb), str(images["gray.jpg"])]
    )
    assert cli.exit_code == 1, cli.output
    assert cli.stderr.strip() == f"error: {results[0].error}"


def test_pillows_own_bomb_check_is_a_per_file_error(
    tmp_path: Path, gray_model, monkeypatch
) -> None:
    from PIL import Image

    _, model, card = gray_model
    images = write_images(tmp_path / "images")  # rgb.png: 50x30 = 1500 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # Pillow raises above twice this
    results = predict_files(model, card, [images["rgb.png"], images["gray.jpg"]])
    assert results[0].error.startswith(f"{images['rgb.png']}: image too large to decode safely")
    assert "\n" not in results[0].error
    assert results[1].error is None


@pytest.mark.parametrize(
    ("names", "code"),
    [
        (["rgb.png", "gray.jpg"], 0),
        (["rgb.png", "notes.txt"], 1),  # some predicted, one exists but is no image
        (["notes.txt"], 2),  # nothing could be predicted
        (["rgb.png", "missing.png"], 2),  # a file that does not exist: a usage error
        (["missing.png"], 2),
    ],
)
def test_exit_codes(tmp_path: Path, gray_model, names: list[str], code: int) -> None:
    directory, model, card = gray_model
    images = write_images(tmp_path / "images")
    paths = [images.get(name, tmp_path / name) for name in names]
    assert exit_code(predict_files(model, card, paths)) == code
    result = CliRunner().invoke(app, ["predict", "-m", str(directory), *map(str, paths)])
    assert result.exit_code == code, result.output
    if "rgb.png" in names:
        assert "rgb.png" in result.stdout  # the readable files are still predicted
    if "missing.png" in names:
        assert f"error: {tmp_path / 'missing.png'}: no such file" in result.stderr
