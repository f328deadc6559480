"""The retrain page: what `tuner retrain` writes next to a model (retrain.html).

The model card (`tuner.trained.card.ModelCard`) is the page's data: the test split's confusion
matrix and per-class accuracy, and the training loss and accuracy per epoch. The functions here
only draw it.
"""

from __future__ import annotations

import math
from pathlib import Path

import plotly.graph_objects as go
import torch

from tuner.families import SEED_CNN
from tuner.files import write_text_atomic
from tuner.report.page import Card, Page, Section, generated_line, render
from tuner.trained.card import ModelCard


def model_source(card: ModelCard) -> str:
    """Where the model's configuration came from, in words."""
    return f"trial {card.trial} of study {card.study}" if card.study else "a config file"


RETRAIN_REPORT_FILE = "retrain.html"


def write_retrain_report(directory: Path, card: ModelCard) -> Path:
    """retrain.html next to the retrained model: its test results and training curve."""
    return write_text_atomic(Path(directory) / RETRAIN_REPORT_FILE, render(retrain_page(card)))


def retrain_page(card: ModelCard) -> Page:
    """The retrain page: summary cards, the confusion matrix, per-class accuracy, training."""
    sections = [
        Section(
            "test",
            "Test split: confusion matrix and accuracy per class",
            "Left: rows are the true classes, columns what the model predicted; the diagonal is "
            "correct, colour is the share of each true class. Right: the share of each class's "
            "test images predicted correctly, against the overall accuracy (dashed).",
            figures=(confusion_figure(card), per_class_figure(card)),
            # Side by side while both stay readable at half width.
            columns=2 if card.num_classes <= 20 else 1,
        )
    ]
    if card.train_loss:
        sections.append(
            Section(
                "training",
                "Training",
                "Loss and accuracy on the training split per epoch, measured in training mode "
                "(with dropout, augmentation and label smoothing, if any). There is no "
                "validation set: the model keeps the last epoch's weights.",
                figures=(training_figure(card),),
            )
        )
    return Page(
        title=f"{card.study or card.dataset} · retrained model",
        subtitle=f"{card.dataset} · configuration from {model_source(card)} · trained on the "
        f"full training split · tested once on {card.test_count:,} held-out images",
        cards=(
            Card("test accuracy", f"{card.test_accuracy:.2%}"),
            Card("test loss", f"{card.test_loss:.4f}"),
            Card("epochs", str(card.epochs)),
            Card("training images", f"{card.train_count:,}"),
            Card("parameters", f"{card.param_count:,}"),
            Card("filters per block", " · ".join(str(f) for f in card.config.filters))
            if card.config.family == SEED_CNN
            else Card("model family", card.config.family),
        ),
        sections=tuple(sections),
        footer=generated_line(),
    )


def confusion_figure(card: ModelCard) -> go.Figure:
    """Heatmap of the confusion matrix, coloured by the share of each true class."""
    counts = torch.tensor(card.confusion_matrix, dtype=torch.float64)
    shares = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
    names = list(card.class_names)
    size = len(names)
    # Zero cells stay blank so the few mistakes stand out.
    text = [[str(int(c)) if c else "" for c in row] for row in counts.tolist()]
    figure = go.Figure(
        go.Heatmap(
            z=shares.tolist(),
            x=names,
            y=names,
            text=text,
            customdata=counts.int().tolist(),
            texttemplate="%{text}" if size <= 20 else None,
            textfont={"size": 11},
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar={"title": {"text": "share"}, "tickformat": ".0%", "thickness": 12},
            hovertemplate="true %{y}, predicted %{x}: %{customdata} images (%{z:.1%})"
            "<extra></extra>",
            xgap=1,
            ygap=1,
        )
    )
    figure.update_layout(
        height=min(900, max(440, 30 * size + 140)),
        xaxis={"title": {"text": "predicted"}, "type": "category", "constrain": "domain"},
        yaxis={
            "title": {"text": "true"},
            "type": "category",
            "autorange": "reversed",
            "scaleanchor": "x",
            "constrain": "domain",
        },
        margin={"t": 20, "r": 10, "b": 50, "l": 60},
    )
    return figure


def per_class_figure(card: ModelCard) -> go.Figure:
    """Bar per class of its test accuracy, with the overall accuracy as a dashed line."""
    names = list(card.per_class_accuracy)
    values = [card.per_class_accuracy[name] for name in names]
    figure = go.Figure(
        [
            go.Bar(
                x=names,
                y=values,
                showlegend=False,
                marker={"color": values, "colorscale": "RdYlGn", "cmin": 0.5, "cmax": 1.0},
                text=[("n/a" if v is None else f"{v:.1%}") for v in values],
                textposition="inside" if len(names) <= 20 else "none",
                insidetextanchor="start",  # at the bars' feet, clear of the overall line
                textangle=0,
                hovertemplate="%{x}: %{y:.2%}<extra></extra>",
            ),
            go.Scatter(
                x=names,
                y=[card.test_accuracy] * len(names),
                name=f"overall {card.test_accuracy:.2%}",
                mode="lines",
                line={"dash": "dash", "color": "#333"},
                hoverinfo="skip",
            ),
        ]
    )
    figure.update_layout(
        height=min(900, max(440, 30 * len(names) + 140)) if len(names) <= 20 else 420,
        xaxis={"title": {"text": "class"}, "type": "category"},
        yaxis={"title": {"text": "accuracy"}, "range": [0, 1.0], "tickformat": ".0%"},
        legend={"orientation": "h", "x": 0.5, "xanchor": "center", "y": -0.15},
        margin={"t": 20, "r": 10, "b": 80, "l": 60},
    )
    return figure


def training_figure(card: ModelCard) -> go.Figure:
    """Training loss and accuracy per epoch, on two y axes."""
    epochs = list(range(1, len(card.train_loss) + 1))
    accuracy = list(card.train_accuracy)
    figure = go.Figure(
        [
            go.Scatter(
                x=epochs,
                y=list(card.train_loss),
                name="train loss",
                mode="lines+markers",
            ),
            go.Scatter(
                x=epochs, y=accuracy, name="train accuracy", mode="lines+markers", yaxis="y2"
            ),
        ]
    )
    figure.update_layout(
        height=340,
        xaxis={"title": {"text": "epoch"}, "dtick": 1 if len(epochs) <= 20 else None},
        yaxis={"title": {"text": "loss"}, "rangemode": "tozero"},
        yaxis2={
            "title": {"text": "accuracy"},
            "overlaying": "y",
            "side": "right",
            "tickformat": ".0%",
            "range": [max(0.0, math.floor(min(accuracy) * 10) / 10), 1.0],
            "showgrid": False,
        },
        legend={"orientation": "h", "x": 0, "y": 1.12},
        margin={"t": 40, "r": 60, "b": 50, "l": 60},
    )
    return figure
