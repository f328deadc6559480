"""Seeing through the network's eyes: one page of a saved model's filters and feature maps.

The page shows the input image as the network receives it (with the model's top guesses), the
activations after each conv block for that image, and the learned filters: the first layer's as
small images (RGB for colour inputs), deeper layers' as a grid of kernels (output x input
channel). Counts are capped so the page stays readable and light.
"""

from __future__ import annotations

import math
from pathlib import Path

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import nn

from tuner.engine.families import conv_layers as family_conv_layers
from tuner.engine.families import stage_outputs
from tuner.errors import TunerError
from tuner.families import SEED_CNN, get_family
from tuner.files import write_text_atomic
from tuner.report.page import Page, Section, generated_line, render
from tuner.trained.card import ModelCard
from tuner.trained.predict import probabilities, top_k

MAX_FIRST_LAYER_FILTERS = 32
MAX_KERNEL_CHANNELS = 16  # output and input channels shown per deeper layer
MAX_FEATURE_MAPS = 16  # per block: the most active channels for the image
SMALL_MAP_PIXELS = 4  # maps of this many pixels or fewer (2x2, 1x1) are drawn as bars
MAX_ACTIVATION_BARS = 64
GRID_COLUMNS = 8
CELL_PX = 130  # height of one row of small images


def conv_layers(model: nn.Module, family: str = SEED_CNN) -> list[nn.Conv2d]:
    """The first conv layer of each block (backbone stage) of a `family` model, in order."""
    return [layer for _, layer in family_conv_layers(model, family)]


def feature_maps(model: nn.Module, card: ModelCard, image: torch.Tensor) -> list[torch.Tensor]:
    """The activations after each conv block, (channels, h, w) each, for one uint8 image.

    Read with forward hooks on each backbone stage, so every family shows its own stages.
    """
    device = next(model.parameters()).device
    model.eval()
    maps: list[torch.Tensor] = []
    hooks = [
        stage.register_forward_hook(lambda _m, _i, out: maps.append(out[0].float().cpu()))
        for stage in stage_outputs(model, card.config.family)
    ]
    try:
        with torch.inference_mode():
            model(card.normalise(image.unsqueeze(0).to(device)))
    finally:
        for hook in hooks:
            hook.remove()
    return maps


def visualization_page(
    model: nn.Module, card: ModelCard, image: torch.Tensor, image_label: str
) -> Page:
    """The page for one uint8 (C, H, W) image, which must match the model's input shape."""
    maps = feature_maps(model, card, image)
    guesses = top_k(probabilities(model, card, image.unsqueeze(0))[0], card.class_names, 5)
    layers = conv_layers(model, card.config.family)
    filter_figures = [first_layer_figure(layers[0])] + [
        kernel_grid_figure(layer, number) for number, layer in enumerate(layers[1:], start=2)
    ]
    channels, height, width = card.input_shape
    return Page(
        title=f"{card.study or card.dataset} · through the network's eyes",
        subtitle=f"{card.dataset} · input {channels}x{height}x{width} · "
        f"{_architecture(card, len(layers))} · "
        f"test accuracy {card.test_accuracy:.2%}",
        sections=(
            Section(
                "input",
                "Input",
                "The image exactly as the network receives it (resized to its input size), "
                "and the model's most likely classes for it.",
                figures=(input_figure(image, image_label, guesses),),
            ),
            Section(
                "feature-maps",
                "Feature maps",
                "What each conv block passes on for this image (after ReLU and pooling): one "
                f"heatmap per channel, the {MAX_FEATURE_MAPS} most active channels of each "
                "block, on one colour scale per block (bright = strong activation). Maps of "
                f"{SMALL_MAP_PIXELS} pixels or fewer are bars: each channel's mean activation.",
                figures=tuple(
                    feature_map_figure(block_maps, number)
                    for number, block_maps in enumerate(maps, start=1)
                ),
            ),
            Section(
                "filters",
                "Filters",
                "Learned convolution kernels. Block 1: each filter as a small image, stretched "
                "to its own full range. Deeper blocks: one kernel per output (row) and input "
                "(column) channel; red is positive, blue negative.",
                figures=tuple(filter_figures),
            ),
        ),
        footer=generated_line(),
    )


def test_image(
    card: ModelCard, index: int = 0, data_dir: Path | None = None, cache_dir: Path | None = None
) -> tuple[torch.Tensor, str]:
    """Image `index` of the test split of the card's dataset, and a label naming its class.

    Raises TunerError (suggesting --image) when the dataset cannot be loaded here.
    """
    from tuner.data import load_dataset

    try:
        dataset = load_dataset(
            card.dataset, data_dir, cache_dir, image_size=card.input_shape[1], download=False
        )
    except TunerError as exc:
        raise TunerError(
            f"cannot load the model's dataset for a test image ({exc}); pass --image FILE"
        ) from None
    if dataset.input_shape != card.input_shape:
        raise TunerError(
            f"dataset {card.dataset!r} now has images of {dataset.input_shape}, the model "
            f"expects {card.input_shape}; pass --image FILE"
        )
    if not 0 <= index < len(dataset.test):
        raise TunerError(f"--index: the test split has {len(dataset.test)} images, got {index}")
    label = dataset.class_names[int(dataset.test.labels[index])]
    return dataset.test.images[index], f"test image {index} (class {label})"


def write_visualization(
    out: Path, model: nn.Module, card: ModelCard, image: torch.Tensor, image_label: str
) -> Path:
    """Write the page to `out` (atomically); returns `out`."""
    return write_text_atomic(Path(out), render(visualization_page(model, card, image, image_label)))


# ---------------------------------------------------------------- figures


def _grid(count: int) -> tuple[int, int]:
    columns = min(GRID_COLUMNS, count)
    return math.ceil(count / columns), columns


def _square_cells(figure: go.Figure, count: int, columns: int) -> None:
    """Square pixels, no ticks, row 0 of an image at the top, for every subplot."""
    for index in range(1, count + 1):
        suffix = "" if index == 1 else str(index)
        row, col = (index - 1) // columns + 1, (index - 1) % columns + 1
        figure.update_xaxes(visible=False, constrain="domain", row=row, col=col)
        figure.update_yaxes(
            visible=False,
            autorange="reversed",
            scaleanchor=f"x{suffix}",
            constrain="domain",
            row=row,
            col=col,
        )


def _stretch(values: torch.Tensor) -> torch.Tensor:
    """Rescale to 0..1 by the tensor's own minimum and maximum (constant -> 0.5)."""
    low, high = values.min(), values.max()
    if high - low < 1e-12:
        return torch.full_like(values, 0.5)
    return (values - low) / (high - low)


def _architecture(card: ModelCard, blocks: int) -> str:
    """The network in a few words: the seed CNN's filters, or the family and its adaptation."""
    config = card.config
    if config.family == SEED_CNN:
        return f"{blocks} conv blocks ({', '.join(str(f) for f in config.filters)} filters)"
    adaptation = get_family(config.family).adaptation(card.input_shape)
    return f"{config.family} ({adaptation}); the first conv of each of its {blocks} stages shown"


def first_layer_figure(conv: nn.Conv2d) -> go.Figure:
    """The first conv layer's filters as small images: RGB for 3 input channels, else gray."""
    weight = conv.weight.detach().float().cpu()[:MAX_FIRST_LAYER_FILTERS]
    count = weight.shape[0]
    rows, columns = _grid(count)
    figure = make_subplots(
        rows=rows,
        cols=columns,
        subplot_titles=[f"filter {i + 1}" for i in range(count)],
        horizontal_spacing=0.02,
        vertical_spacing=0.12 / rows,
    )
    for index, kernel in enumerate(weight):
        row, col = index // columns + 1, index % columns + 1
        if kernel.shape[0] == 3:
            pixels = (_stretch(kernel) * 255).round().to(torch.uint8).permute(1, 2, 0)
            trace: go.BaseTraceType = go.Image(z=pixels.numpy(), hoverinfo="skip")
        else:
            trace = go.Heatmap(
                z=_stretch(kernel.mean(dim=0)).tolist(),
                colorscale="gray",
                zmin=0,
                zmax=1,
                showscale=False,
                hovertemplate="(%{x}, %{y}): %{z:.2f}<extra></extra>",
            )
        figure.add_trace(trace, row=row, col=col)
    _square_cells(figure, count, columns)
    figure.update_annotations(font_size=11)
    figure.update_layout(
        title={
            "text": f"Block 1: {conv.out_channels} filters of {conv.kernel_size[0]}x"
            f"{conv.kernel_size[1]}"
            + _notes(f"the first {count} shown" if count < conv.out_channels else "")
        },
        height=CELL_PX * rows + 80,
        margin={"t": 70, "r": 10, "b": 10, "l": 10},
    )
    return figure


def kernel_grid_figure(conv: nn.Conv2d, block: int) -> go.Figure:
    """A deeper layer's kernels as one heatmap: row = output channel, column = input channel."""
    weight = conv.weight.detach().float().cpu()
    outs = min(MAX_KERNEL_CHANNELS, weight.shape[0])
    ins = min(MAX_KERNEL_CHANNELS, weight.shape[1])
    k_h, k_w = weight.shape[2:]
    # Kernels tiled with a one-cell gap (NaN, drawn blank) so their borders are visible.
    tiled = torch.full((outs * (k_h + 1) - 1, ins * (k_w + 1) - 1), math.nan)
    for out_channel in range(outs):
        for in_channel in range(ins):
            top, left = out_channel * (k_h + 1), in_channel * (k_w + 1)
            tiled[top : top + k_h, left : left + k_w] = weight[out_channel, in_channel]
    limit = float(weight[:outs, :ins].abs().max()) or 1.0
    figure = go.Figure(
        go.Heatmap(
            z=tiled.tolist(),
            colorscale="RdBu",
            reversescale=True,
            zmin=-limit,
            zmax=limit,
            colorbar={"title": {"text": "weight"}, "thickness": 12},
            hoverongaps=False,
            hovertemplate="weight %{z:.3f}<extra></extra>",
        )
    )
    figure.update_xaxes(
        tickvals=[c * (k_w + 1) + (k_w - 1) / 2 for c in range(ins)],
        ticktext=[str(c + 1) for c in range(ins)],
        title={"text": "input channel"},
        showgrid=False,
        zeroline=False,
        constrain="domain",
    )
    figure.update_yaxes(
        tickvals=[r * (k_h + 1) + (k_h - 1) / 2 for r in range(outs)],
        ticktext=[str(r + 1) for r in range(outs)],
        title={"text": "output channel"},
        autorange="reversed",
        scaleanchor="x",
        showgrid=False,
        zeroline=False,
        constrain="domain",
    )
    shown = f" (first {outs} x {ins} shown)" if (outs, ins) != tuple(weight.shape[:2]) else ""
    figure.update_layout(
        title={
            "text": f"Block {block}: {weight.shape[0]} filters x {weight.shape[1]} input "
            f"channels of {k_h}x{k_w}{shown}"
        },
        height=min(900, max(320, 22 * outs * (k_h + 1) // 2 + 120)),
        margin={"t": 60, "r": 10, "b": 50, "l": 60},
    )
    return figure


def input_figure(
    image: torch.Tensor, label: str, guesses: tuple[tuple[str, float], ...]
) -> go.Figure:
    """The input image next to a bar chart of the model's top guesses."""
    figure = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.35, 0.65],
        subplot_titles=[label, "model's top guesses"],
        horizontal_spacing=0.12,
    )
    figure.add_trace(_image_trace(image), row=1, col=1)
    names = [name for name, _ in guesses]
    figure.add_trace(
        go.Bar(
            x=[p for _, p in guesses],
            y=names,
            orientation="h",
            text=[f"{p:.1%}" for _, p in guesses],
            textposition="outside",  # "auto" drops the label of a bar too short to hold it
            cliponaxis=False,
            marker={"color": "#4c78a8"},
            hovertemplate="%{y}: %{x:.2%}<extra></extra>",
        ),
        row=1,
        col=2,
    )
    figure.update_xaxes(visible=False, constrain="domain", row=1, col=1)
    figure.update_yaxes(
        visible=False, autorange="reversed", scaleanchor="x", constrain="domain", row=1, col=1
    )
    figure.update_xaxes(
        range=[0, 1.15], tickvals=[0, 0.25, 0.5, 0.75, 1], tickformat=".0%", row=1, col=2
    )
    figure.update_yaxes(type="category", autorange="reversed", row=1, col=2)
    figure.update_layout(height=320, showlegend=False, margin={"t": 40, "r": 20, "b": 30, "l": 20})
    return figure


def _image_trace(image: torch.Tensor) -> go.BaseTraceType:
    if image.shape[0] == 3:
        return go.Image(z=image.permute(1, 2, 0).numpy(), hoverinfo="skip")
    return go.Heatmap(
        z=image[0].tolist(),
        colorscale="gray",
        zmin=0,
        zmax=255,
        showscale=False,
        hovertemplate="(%{x}, %{y}): %{z}<extra></extra>",
    )


def feature_map_figure(maps: torch.Tensor, block: int) -> go.Figure:
    """One block's most active channels for the image, as heatmaps on the block's one colour
    scale (bright means the same in every map); maps too small to show a shape, as bars."""
    _, height, width = maps.shape
    if height * width <= SMALL_MAP_PIXELS:
        return _activation_bars(maps, block)
    strength = maps.flatten(1).mean(dim=1)
    count = min(MAX_FEATURE_MAPS, maps.shape[0])
    channels = strength.argsort(descending=True)[:count].tolist()
    # From zero, so a channel that stays silent for this image is dark, not mid-scale.
    zmin = min(0.0, float(maps[channels].min()))
    zmax = max(float(maps[channels].max()), zmin + 1e-6)
    rows, columns = _grid(count)
    figure = make_subplots(
        rows=rows,
        cols=columns,
        subplot_titles=[f"channel {c + 1}" for c in channels],
        horizontal_spacing=0.02,
        vertical_spacing=0.12 / rows,
    )
    for index, channel in enumerate(channels):
        figure.add_trace(
            go.Heatmap(
                z=maps[channel].tolist(),
                colorscale="Viridis",
                zmin=zmin,
                zmax=zmax,
                showscale=index == 0,  # one bar: the scale is the block's
                colorbar={"title": {"text": "activation"}, "thickness": 12},
                hovertemplate=f"channel {channel + 1} " + "(%{x}, %{y}): %{z:.3f}<extra></extra>",
            ),
            row=index // columns + 1,
            col=index % columns + 1,
        )
    _square_cells(figure, count, columns)
    figure.update_annotations(font_size=11)
    silent = int((maps.flatten(1).amax(dim=1) <= 0).sum())
    figure.update_layout(
        title={
            "text": f"Block {block}: {maps.shape[0]} channels of {height}x{width}"
            + _notes(
                f"the {count} most active shown" if count < maps.shape[0] else "",
                f"{silent} silent (all zero) for this image" if silent else "",
            )
        },
        height=CELL_PX * rows + 80,
        margin={"t": 70, "r": 10, "b": 10, "l": 10},
    )
    return figure


def _activation_bars(maps: torch.Tensor, block: int) -> go.Figure:
    """Maps of a pixel or a few (a small input after pooling) as one bar per channel: its mean
    activation, strongest first; a heatmap of one pixel would only show a colour."""
    strength = maps.flatten(1).mean(dim=1)
    order = strength.argsort(descending=True)[:MAX_ACTIVATION_BARS].tolist()
    _, height, width = maps.shape
    figure = go.Figure(
        go.Bar(
            x=[f"ch {c + 1}" for c in order],
            y=[float(strength[c]) for c in order],
            marker={"color": "#4c78a8"},
            hovertemplate="%{x}: %{y:.3f}<extra></extra>",
        )
    )
    silent = int((maps.flatten(1).amax(dim=1) <= 0).sum())
    figure.update_xaxes(type="category", title={"text": "channel, strongest first"})
    figure.update_yaxes(title={"text": "mean activation"})
    figure.update_layout(
        title={
            "text": f"Block {block}: {maps.shape[0]} channels of {height}x{width}, as bars"
            + _notes(
                f"the {len(order)} strongest shown" if len(order) < maps.shape[0] else "",
                f"{silent} silent (all zero) for this image" if silent else "",
            )
        },
        height=320,
        margin={"t": 60, "r": 10, "b": 50, "l": 60},
    )
    return figure


def _notes(*notes: str) -> str:
    """ " (a; b)" for the non-empty notes, or nothing."""
    shown = [note for note in notes if note]
    return f" ({'; '.join(shown)})" if shown else ""
