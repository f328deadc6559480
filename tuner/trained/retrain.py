"""Retrain a chosen configuration on the full training split, then test it once.

Tuning holds out part of the official training split for validation; once a configuration is
chosen, that data is better spent on training. There is nothing left to early-stop on, so the
model trains for a fixed number of epochs (by default the epoch at which the tuned trial did
best) and keeps its final weights (`fit(..., keep="last")`). What `fit` evaluates after each
epoch is a fixed sample of the training images, in eval mode: a progress measure, recorded on
the model card as such (`train_sample_*`), never a validation score. The test split is used
exactly once, after training, for the numbers on the model card; it never influences training
or weight selection.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuner import __version__
from tuner.config import TrialConfig
from tuner.data import Dataset, Splits, channel_stats
from tuner.engine import (
    DeviceData,
    DivergedError,
    EngineOptions,
    EpochResult,
    classify,
    count_parameters,
    fit,
    prepare_model,
    to_device,
)
from tuner.errors import TunerError
from tuner.families import get_family
from tuner.trained.card import ModelCard, save_model
from tuner.trained.export import BestConfig

log = logging.getLogger(__name__)

# Training images that `fit` scores in eval mode after each epoch, in place of the validation
# set retraining does not have. They only show progress (the final weights are kept regardless,
# and nothing stops early), so a sample keeps epochs cheap. The card records them as such.
PROGRESS_SAMPLE = 2048


@dataclass(frozen=True)
class Retrained:
    """A model trained on the full training split, its card and its training history."""

    model: nn.Module
    card: ModelCard
    history: tuple[EpochResult, ...]


def epochs_for(best: BestConfig, epochs: int | None) -> int:
    """`epochs` when given, else the epoch the tuned trial kept, else its epoch budget."""
    if epochs is not None:
        return epochs
    if best.best_epoch is not None and best.best_epoch >= 1:
        return best.best_epoch
    log.warning(
        "no best epoch recorded for this configuration; training for max_epochs = %d",
        best.config.max_epochs,
    )
    return best.config.max_epochs


def retrain(
    best: BestConfig,
    dataset: Dataset,
    device: torch.device,
    epochs: int | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
    options: EngineOptions = EngineOptions(),
) -> Retrained:
    """Train `best.config` on all of `dataset.train` for a fixed number of epochs, test once."""
    epochs = epochs_for(best, epochs)
    # patience 0: no early stopping; max_epochs also sets the length of the cosine schedule.
    config = replace(best.config, max_epochs=epochs, patience=0)
    splits = _full_train_splits(dataset, config.seed)
    data = to_device(splits, device)

    torch.manual_seed(config.seed)
    model, _ = prepare_model(config, dataset.input_shape, dataset.num_classes)
    options = options.resolve(model, dataset.input_shape, config.batch_size, device)
    history: list[EpochResult] = []

    def progress(result: EpochResult) -> None:
        history.append(result)
        log.info(
            "epoch %d/%d: train_loss %.4f train_accuracy %.4f, on %d training images in eval "
            "mode %.4f (%.1fs)",
            result.epoch,
            epochs,
            result.train_loss,
            result.train_accuracy,
            len(splits.val),
            result.val_accuracy,
            result.seconds,
        )
        if on_epoch is not None:
            on_epoch(result)

    try:
        _train_final(model, data, config, device, options, progress)
    except DivergedError as exc:
        raise TunerError(
            f"retraining the configuration of {_source(best)} failed: {exc}; "
            "try fewer --epochs or another trial's configuration"
        ) from None

    card = tested_card(
        model,
        data,
        splits,
        dataset,
        config,
        study=best.study,
        trial=best.trial,
        epochs=epochs,
        train_count=len(dataset.train),
        train_loss=tuple(result.train_loss for result in history),
        train_accuracy=tuple(result.train_accuracy for result in history),
        kept_epoch=history[-1].epoch if history else 0,
        precision=options.precision,
        trained_on="train+validation",
        train_sample_count=len(splits.val),
        train_sample_loss=tuple(result.val_loss for result in history),
        train_sample_accuracy=tuple(result.val_accuracy for result in history),
    )
    log.debug("test accuracy %.4f on %d images", card.test_accuracy, card.test_count)
    return Retrained(model.cpu(), card, tuple(history))


def _train_final(
    model: nn.Module,
    data: DeviceData,
    config: TrialConfig,
    device: torch.device,
    options: EngineOptions,
    progress: Callable[[EpochResult], None],
) -> None:
    """Run `fit` for all of `config.max_epochs`; the model keeps the last epoch's weights.

    `data`'s validation images are a sample of its training images: `fit` must not pick
    weights by them (keep="last"), and with patience 0 they stop nothing.
    """
    with contextlib.closing(fit(model, data, config, device, options, keep="last")) as results:
        for result in results:
            progress(result)


def _source(best: BestConfig) -> str:
    return f"trial {best.trial} of study {best.study}" if best.study else "a config file"


def _full_train_splits(dataset: Dataset, seed: int) -> Splits:
    """All training images to train on, and PROGRESS_SAMPLE of them again in the `val` slot,
    which `fit` scores after each epoch: a progress measure, not held-out data."""
    mean, std = channel_stats(dataset.train.images)
    order = torch.randperm(len(dataset.train), generator=torch.Generator().manual_seed(seed))
    sample = dataset.train.subset(order[:PROGRESS_SAMPLE])
    return Splits(dataset.train, sample, dataset.num_classes, mean, std)


@dataclass(frozen=True)
class TestResult:
    """The one evaluation on the test split."""

    loss: float
    confusion: torch.Tensor  # int64 (K, K): rows true class, columns predicted

    @property
    def accuracy(self) -> float:
        total = int(self.confusion.sum())
        return float(self.confusion.trace()) / total if total else 0.0

    def per_class(self, class_names: tuple[str, ...]) -> dict[str, float | None]:
        counts = self.confusion.sum(dim=1).tolist()
        correct = self.confusion.diagonal().tolist()
        return {
            name: (hit / count if count else None)
            for name, hit, count in zip(class_names, correct, counts, strict=True)
        }

    def confusion_rows(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(row) for row in self.confusion.tolist())


def tested_card(
    model: nn.Module,
    data: DeviceData,
    splits: Splits,
    dataset: Dataset,
    config: TrialConfig,
    **fields: Any,
) -> ModelCard:
    """The card of `model` (trained with `config` on `splits`, on the device as `data`),
    scored once on the test split. The fields every saved model shares are filled here; the
    ones that tell how it was trained (study, trial, epochs, curves, trained_on) come as
    `fields`, so `retrain` and `best --model` write the same card."""
    test = score_on_test(model, data, dataset)
    return ModelCard(
        dataset=dataset.name,
        input_shape=dataset.input_shape,
        class_names=dataset.class_names,
        mean=splits.mean,
        std=splits.std,
        config=config,
        test_count=len(dataset.test),
        test_accuracy=test.accuracy,
        test_loss=test.loss,
        per_class_accuracy=test.per_class(dataset.class_names),
        confusion_matrix=test.confusion_rows(),
        param_count=count_parameters(model),
        tuner_version=__version__,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        adaptation=f"{config.family}: {get_family(config.family).adaptation(dataset.input_shape)}",
        **fields,
    )


def score_on_test(model: nn.Module, data: DeviceData, dataset: Dataset) -> TestResult:
    """Loss and confusion matrix on the test split, in float32 like `tuner predict`."""
    images = dataset.test.images.to(data.scale.device)
    labels = dataset.test.labels.to(data.scale.device)
    loss, predicted = classify(model, data, images, labels, options=EngineOptions(precision="fp32"))
    num_classes = dataset.num_classes
    confusion = torch.bincount(labels * num_classes + predicted, minlength=num_classes**2)
    return TestResult(
        loss=loss,
        confusion=confusion.view(num_classes, num_classes).cpu(),
    )


def save(directory: Path, retrained: Retrained) -> Path:
    """Write model.safetensors and model.json into `directory`; the weights' path. (The page
    about them is the report package's: tuner.report.write_retrain_report.)"""
    return save_model(directory, retrained.model, retrained.card)
