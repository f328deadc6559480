"""The model pages: tuner.report.visualize and `tuner visualize` (filters and feature maps on
one page), and the retrain page, both on the study report's page shell."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from model_fixtures import save_untrained_model
from PIL import Image
from typer.testing import CliRunner

from tuner.cli import app
from tuner.report import render, retrain_page
from tuner.report.page import Card
from tuner.report.visualize import (
    MAX_FEATURE_MAPS,
    MAX_FIRST_LAYER_FILTERS,
    feature_map_figure,
    feature_maps,
    first_layer_figure,
    input_figure,
    visualization_page,
    write_visualization,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PLOT_DIV = 'class="plotly-graph-div"'
PLOTLY_JS_MARKER = "plotly.js v"  # the banner at the top of the embedded library


def expected_plots(blocks: int) -> int:
    """Input + one feature-map grid per block + one filter figure per block."""
    return 1 + 2 * blocks


@pytest.mark.parametrize(("channels", "size", "filters"), [(1, 8, (4, 6)), (3, 16, (5, 20, 3))])
def test_page_has_input_feature_maps_and_filters(
    tmp_path: Path, channels: int, size: int, filters: tuple[int, ...]
) -> None:
    model, card = save_untrained_model(tmp_path, channels=channels, size=size, filters=filters)
    image = torch.randint(0, 256, (channels, size, size), dtype=torch.uint8)
    out = write_visualization(tmp_path / "viz.html", model, card, image, "random image")
    page = out.read_text()
    assert page.count(PLOT_DIV) == expected_plots(len(filters))
    assert page.count(PLOTLY_JS_MARKER) == 1  # embedded once: the page works offline
    assert "<script src=" not in page
    assert "random image" in page
    first_layer_trace = '"type":"image"' if channels == 3 else '"type":"heatmap"'
    assert first_layer_trace in page


def test_feature_maps_follow_the_blocks() -> None:
    from model_fixtures import untrained_card

    from tuner.families import build_model

    card = untrained_card(channels=3, size=16, filters=(5, 7, 9))
    model = build_model(card.config, card.input_shape, card.num_classes)
    maps = feature_maps(model, card, torch.zeros(3, 16, 16, dtype=torch.uint8))
    assert [tuple(m.shape) for m in maps] == [(5, 8, 8), (7, 4, 4), (9, 2, 2)]


def test_counts_are_capped(tmp_path: Path) -> None:
    model, card = save_untrained_model(tmp_path, channels=3, size=8, filters=(40,))
    assert len(first_layer_figure(model[0][0][0]).data) == MAX_FIRST_LAYER_FILTERS
    page = visualization_page(model, card, torch.zeros(3, 8, 8, dtype=torch.uint8), "zeros")
    feature_section = page.sections[1]
    assert len(feature_section.figures[0].data) == MAX_FEATURE_MAPS


def test_cli_with_an_image_of_another_size_and_mode(tmp_path: Path) -> None:
    save_untrained_model(tmp_path / "model", channels=1, size=8)
    image = tmp_path / "photo.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (45, 31, 4), dtype=np.uint8), "RGBA").save(image)
    out = tmp_path / "viz.html"
    result = CliRunner().invoke(
        app,
        ["visualize", "--model", str(tmp_path / "model"), "--image", str(image), "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert page.count(PLOT_DIV) == expected_plots(2)
    assert "photo.png" in page


def test_cli_uses_a_test_image_of_the_dataset(tmp_path: Path) -> None:
    # digits: 1x8x8, classes "0".."9", bundled with scikit-learn (no files needed)
    classes = tuple(str(i) for i in range(10))
    save_untrained_model(tmp_path / "model", channels=1, size=8, class_names=classes)
    out = tmp_path / "viz.html"
    result = CliRunner().invoke(
        app, ["visualize", "-m", str(tmp_path / "model"), "--index", "3", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "test image 3 (class " in out.read_text()


def test_cli_without_image_or_dataset_is_a_clear_error(tmp_path: Path) -> None:
    save_untrained_model(
        tmp_path / "model", channels=1, size=8, dataset=f"imagefolder:{tmp_path / 'gone'}"
    )
    result = CliRunner().invoke(
        app, ["visualize", "-m", str(tmp_path / "model"), "-o", str(tmp_path / "v.html")]
    )
    assert result.exit_code == 2
    assert "--image" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "v.html").exists()


def test_retrain_page_is_drawn_from_the_model_card() -> None:
    from model_fixtures import untrained_card

    card = untrained_card(class_names=("cat", "<dog>"))
    page = retrain_page(card)
    assert Card("test accuracy", "50.00%") in page.cards
    assert [section.anchor for section in page.sections] == ["test"]  # no training history yet
    html = render(page)
    assert html.count(PLOT_DIV) == 2  # confusion matrix and accuracy per class
    assert html.count(PLOTLY_JS_MARKER) == 1
    assert '<section id="test">' in html
    assert "<dog>" not in html  # class names are escaped, in the page and in the plots' JSON


def test_one_pixel_maps_of_a_small_input_are_bars_of_their_activations() -> None:
    """8x8 digits pooled three times give 1x1 maps: heatmaps of those were identical squares."""
    maps = torch.arange(6, dtype=torch.float32).reshape(6, 1, 1)  # channel c activates c
    figure = feature_map_figure(maps, block=3)
    assert [trace.type for trace in figure.data] == ["bar"]
    bars = figure.data[0]
    assert list(bars.y) == [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]  # strongest first
    assert list(bars.x) == ["ch 6", "ch 5", "ch 4", "ch 3", "ch 2", "ch 1"]
    assert "1 silent" in figure.layout.title.text


def test_heatmaps_of_a_block_share_one_colour_scale() -> None:
    maps = torch.stack([torch.full((4, 4), value) for value in (0.5, 2.0, 8.0)])
    figure = feature_map_figure(maps, block=1)
    scales = {(trace.zmin, trace.zmax) for trace in figure.data}
    assert scales == {(0.0, 8.0)}  # a weak channel looks weak next to a strong one
    assert [trace.showscale for trace in figure.data] == [True, False, False]


def test_every_top_guess_bar_has_its_percentage() -> None:
    guesses = (("3", 0.97), ("8", 0.02), ("5", 0.004), ("9", 0.0009), ("1", 0.0001))
    figure = input_figure(torch.zeros(1, 8, 8, dtype=torch.uint8), "test image", guesses)
    bars = next(trace for trace in figure.data if trace.type == "bar")
    assert list(bars.text) == ["97.0%", "2.0%", "0.4%", "0.1%", "0.0%"]
    assert bars.textposition == "outside"  # "auto" hides a label that does not fit its bar


def test_a_page_for_8x8_digits_shows_bars_for_its_last_block(tmp_path: Path) -> None:
    model, card = save_untrained_model(tmp_path, channels=1, size=8, filters=(4, 6, 8))
    page = visualization_page(model, card, torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8), "x")
    last_block = page.sections[1].figures[-1]
    assert [trace.type for trace in last_block.data] == ["bar"] and len(last_block.data[0].y) == 8
