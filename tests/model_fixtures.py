"""Saved models for the artifacts, predict and visualize tests, without any training.

`save_untrained_model` builds a model with `build_model` (seeded random weights), writes a card
that describes it and saves both, the way `tuner retrain` does. The card's test numbers are
made up; what matters to these tests is that the model, its card and its files agree.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tuner import __version__
from tuner.config import TrialConfig
from tuner.engine.model import count_parameters
from tuner.families import build_model
from tuner.trained.card import ModelCard, save_model

CLASSES = ("cat", "dog", "bird")


def has_onnx() -> bool:
    """Whether the onnx extra (`pip install 'tuner[onnx]'`) is installed."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


# `tuner export` formats, onnx only where its extra is installed.
FORMAT_PARAMS = [
    pytest.param("pt2"),
    pytest.param(
        "onnx",
        marks=pytest.mark.skipif(not has_onnx(), reason="the onnx extra is not installed"),
    ),
]


def untrained_card(
    channels: int = 1,
    size: int = 8,
    filters: tuple[int, ...] = (4, 6),
    class_names: tuple[str, ...] = CLASSES,
    dataset: str = "digits",
    family: str = "seed-cnn",
) -> ModelCard:
    """A card for a small `family` network on `channels` x `size` x `size` images."""
    config = TrialConfig(
        family=family, filters=filters, fc_units=8, kernel_size=3, max_epochs=1, patience=0
    )
    k = len(class_names)
    return ModelCard(
        study="tiny",
        trial=0,
        dataset=dataset,
        input_shape=(channels, size, size),
        class_names=class_names,
        mean=tuple(0.3 + 0.1 * c for c in range(channels)),
        std=tuple(0.25 + 0.05 * c for c in range(channels)),
        config=config,
        epochs=1,
        train_count=100,
        test_count=10 * k,
        test_accuracy=0.5,
        test_loss=1.0,
        per_class_accuracy=dict.fromkeys(class_names, 0.5),
        confusion_matrix=tuple(tuple(5 for _ in range(k)) for _ in range(k)),
        param_count=count_parameters(build_model(config, (channels, size, size), k)),
        tuner_version=__version__,
        created="2026-01-01T00:00:00+00:00",
    )


def save_untrained_model(
    directory: Path, seed: int = 0, **card_options
) -> tuple[nn.Module, ModelCard]:
    """Save a seeded untrained model and its card into `directory`; returns both."""
    card = untrained_card(**card_options)
    torch.manual_seed(seed)
    model = build_model(card.config, card.input_shape, card.num_classes)
    with torch.no_grad():  # BatchNorm's running stats start at 0/1; make them non-trivial
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    save_model(directory, model, card)
    return model.eval(), card
