"""fit's contract: per-epoch results, early stopping, best weights kept, divergence, devices."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch

from tuner.config import AugmentSpec, TrialConfig
from tuner.data import ImageSet, Splits, channel_stats
from tuner.errors import TunerError
from tuner.model import build_cnn
from tuner.train import (
    DeviceData,
    DivergedError,
    EngineOptions,
    available_cpus,
    configure_backend,
    fit,
    pick_device,
    to_device,
)

CPU = torch.device("cpu")
SMALL = TrialConfig(
    learning_rate=1e-2,
    batch_size=16,
    filters=(4,),
    fc_units=16,
    dropout=0.0,
    batch_norm=False,
    max_epochs=3,
    patience=0,
)


def quadrant_images(count: int, channels: int = 1, seed: int = 0) -> ImageSet:
    """8x8 images of 4 classes: class k has its k-th quadrant bright, over uniform noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 4
    images = torch.randint(0, 100, (count, channels, 8, 8), generator=generator)
    for k in range(4):
        top, left = 4 * (k // 2), 4 * (k % 2)
        images[labels == k, :, top : top + 4, left : left + 4] += 150
    return ImageSet(images.to(torch.uint8), labels)


def quadrant_data(channels: int = 1) -> DeviceData:
    train, val = quadrant_images(192, channels, seed=0), quadrant_images(32, channels, seed=1)
    mean, std = channel_stats(train.images)
    return to_device(Splits(train, val, 4, mean, std), CPU)


def new_model(config: TrialConfig, data: DeviceData) -> torch.nn.Module:
    torch.manual_seed(config.seed)
    return build_cnn(config, data.input_shape, data.num_classes)


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def test_fit_yields_one_sane_result_per_epoch() -> None:
    data = quadrant_data()
    results = list(fit(new_model(SMALL, data), data, SMALL, CPU))

    assert [r.epoch for r in results] == [1, 2, 3]
    assert results[0].improved
    for r in results:
        assert 0 < r.train_loss < 10 and 0 < r.val_loss < 10
        assert 0 <= r.train_accuracy <= 1 and 0 <= r.val_accuracy <= 1
        assert r.seconds > 0
    assert results[-1].val_accuracy > 0.9, "an easy task should be learnt in 3 epochs"


def test_early_stopping_after_patience_epochs_without_improvement() -> None:
    # Learning rate 0 (and no BatchNorm statistics) keeps the validation loss exactly constant,
    # so only epoch 1 counts as an improvement.
    data = quadrant_data()
    config = replace(SMALL, learning_rate=0.0, max_epochs=10, patience=2)
    results = list(fit(new_model(config, data), data, config, CPU))

    assert [r.epoch for r in results] == [1, 2, 3]
    assert [r.improved for r in results] == [True, False, False]


def test_closing_early_restores_the_best_epochs_weights() -> None:
    data = quadrant_data()
    config = replace(SMALL, max_epochs=5)
    model = new_model(config, data)
    epochs = fit(model, data, config, CPU)
    first = next(epochs)
    best_weights = params(model)
    with torch.no_grad():  # ruin the weights: epoch 2 starts from (and ends at) a worse model
        for value in model.parameters():
            value.mul_(50)
    second = next(epochs)
    epochs.close()

    assert first.improved and not second.improved
    for name, value in model.state_dict().items():
        assert torch.equal(value, best_weights[name]), name


def test_a_huge_learning_rate_raises_diverged_error() -> None:
    data = quadrant_data()
    config = replace(SMALL, learning_rate=1e30)
    with pytest.raises(DivergedError) as caught:
        list(fit(new_model(config, data), data, config, CPU))
    assert caught.value.epoch == 1


def test_three_channel_images_with_soft_targets_train() -> None:
    # The channels_last layout really differs from the default one with 3 channels, and
    # MixUp/CutMix turn the targets into (N, classes) floats.
    data = quadrant_data(channels=3)
    assert data.train_images.is_contiguous(memory_format=torch.channels_last)
    augment = AugmentSpec(
        random_crop_padding=1, horizontal_flip=True, mixup_alpha=0.4, cutmix_alpha=1.0
    )
    config = replace(SMALL, batch_norm=True, augment=augment)
    results = list(fit(new_model(config, data), data, config, CPU))
    assert len(results) == 3 and all(0 < r.val_loss < 10 for r in results)


def test_bf16_autocast_trains_on_cpu_too_and_unknown_precisions_are_refused() -> None:
    data = quadrant_data()
    options = EngineOptions(precision="bf16")
    results = list(fit(new_model(SMALL, data), data, SMALL, CPU, options))
    assert results[-1].val_accuracy > 0.9
    with pytest.raises(TunerError, match="unknown precision 'fp8'"):
        EngineOptions(precision="fp8")


def test_pick_device() -> None:
    assert pick_device("cpu") == CPU
    with pytest.raises(TunerError, match="unknown device"):
        pick_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(TunerError, match="no CUDA device"):
            pick_device("cuda")
        assert pick_device("auto") == CPU


def test_threads_follow_the_cores_available_unless_omp_num_threads_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    configure_backend(CPU)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    configure_backend(CPU)
    assert calls == [available_cpus()]
