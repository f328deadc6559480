"""fit's contract: per-epoch results, early stopping, best weights kept, divergence, devices."""

from __future__ import annotations

import math
import os
from dataclasses import replace

import pytest
import torch

from tuner.config import AugmentSpec, TrialConfig
from tuner.data import ImageSet, Splits, channel_stats
from tuner.engine import checkpoint, device, train
from tuner.engine.device import (
    CPU_BF16_MIN_BATCH_FLOPS,
    DeviceData,
    EngineOptions,
    auto_precision,
    available_cpus,
    configure_backend,
    forward_flops,
    pick_device,
    to_device,
)
from tuner.engine.train import DivergedError, fit
from tuner.errors import TunerError
from tuner.families import build_model

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
    return build_model(config, data.input_shape, data.num_classes)


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


def test_keep_last_leaves_the_last_epochs_weights() -> None:
    data = quadrant_data()
    config = replace(SMALL, max_epochs=5)
    model = new_model(config, data)
    epochs = fit(model, data, config, CPU, keep="last")
    first = next(epochs)
    with torch.no_grad():  # ruin the weights: epoch 2 ends at a worse model than epoch 1
        for value in model.parameters():
            value.mul_(50)
    second = next(epochs)
    last_weights = params(model)
    epochs.close()

    assert first.improved and not second.improved
    for name, value in model.state_dict().items():
        assert torch.equal(value, last_weights[name]), name
    with pytest.raises(ValueError, match="keep"):
        next(fit(model, data, config, CPU, keep="worst"))


@pytest.mark.parametrize("keep", ["best", "last"])
def test_a_run_resumed_from_a_checkpoint_continues_exactly_as_it_would_have(keep: str) -> None:
    """Every generator, the optimizer and the schedule come back: epochs 3-4 repeat bit for bit."""
    data = quadrant_data(channels=3)
    augment = AugmentSpec(random_crop_padding=1, horizontal_flip=True, mixup_alpha=0.4)
    config = replace(SMALL, dropout=0.3, batch_norm=True, augment=augment, max_epochs=4)
    saved: list[bytes] = []
    model = new_model(config, data)
    on_checkpoint = lambda state: saved.append(checkpoint.to_bytes(state))  # noqa: E731
    whole = list(fit(model, data, config, CPU, keep=keep, on_checkpoint=on_checkpoint))
    assert [checkpoint.from_bytes(b).epoch for b in saved] == [1, 2, 3, 4]

    torch.manual_seed(12345)  # another process: nothing but the checkpoint carries over
    state = checkpoint.from_bytes(saved[1])
    resumed_model = new_model(config, data)
    resumed = list(fit(resumed_model, data, config, CPU, keep=keep, resume=state))

    def values(result: train.EpochResult) -> tuple:
        return (result.epoch, result.train_loss, result.train_accuracy, result.val_loss,
                result.val_accuracy, result.improved)  # fmt: skip

    assert [values(r) for r in resumed] == [values(r) for r in whole[2:]]
    for name, value in resumed_model.state_dict().items():
        assert torch.equal(value, model.state_dict()[name]), name
    assert [row["epoch"] for row in state.history] == [1, 2]


def test_a_run_resumed_after_early_stopping_has_no_epochs_left() -> None:
    data = quadrant_data()
    config = replace(SMALL, learning_rate=0.0, max_epochs=10, patience=2)
    saved: list[bytes] = []
    on_checkpoint = lambda state: saved.append(checkpoint.to_bytes(state))  # noqa: E731
    assert (
        len(list(fit(new_model(config, data), data, config, CPU, on_checkpoint=on_checkpoint))) == 3
    )
    state = checkpoint.from_bytes(saved[-1])
    assert list(fit(new_model(config, data), data, config, CPU, resume=state)) == []


def test_fit_trains_only_in_a_decided_precision() -> None:
    # "auto" is decided once per trial, before fit (EngineOptions.resolve), not inside it.
    data = quadrant_data()
    with pytest.raises(ValueError, match="decided precision"):
        next(fit(new_model(SMALL, data), data, SMALL, CPU, EngineOptions()))


@pytest.mark.parametrize("every", [0.0, math.inf])
def test_on_batch_reports_batches_within_each_epoch_and_at_its_end(
    monkeypatch: pytest.MonkeyPatch, every: float
) -> None:
    data = quadrant_data()  # 192 training images in batches of 16: 12 per epoch
    monkeypatch.setattr(train, "PROGRESS_SECONDS", every)
    calls: list[tuple[int, int]] = []
    results = list(
        fit(new_model(SMALL, data), data, SMALL, CPU, on_batch=lambda *c: calls.append(c))
    )

    # The first batch always shows that an epoch began; then at most one call per interval.
    per_epoch = [(done, 12) for done in range(1, 13)] if every == 0 else [(1, 12), (12, 12)]
    assert calls == per_epoch * len(results)


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


def test_a_stray_nan_in_a_bf16_gradient_does_not_reach_the_weights() -> None:
    """PyTorch's CPU bf16 depthwise-conv backward sometimes leaves one uninitialised NaN in a
    weight gradient while the loss is finite; stepped in, every fp32 prediction became NaN.
    The hook plants such a NaN in every backward pass."""
    data = quadrant_data()
    model = new_model(SMALL, data)
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))

    def plant_nan(gradient: torch.Tensor) -> torch.Tensor:
        gradient = gradient.clone()
        gradient[0, 0, 0, 0] = math.nan
        return gradient

    first_conv.weight.register_hook(plant_nan)
    results = list(fit(model, data, SMALL, CPU, EngineOptions(precision="bf16")))
    assert len(results) == SMALL.max_epochs and results[-1].val_accuracy > 0.9
    assert all(torch.isfinite(value).all() for value in model.state_dict().values())


def test_forward_flops_count_one_images_convolutions_and_matmuls() -> None:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 10)
    )
    conv = 2 * (8 * 8 * 4) * (1 * 3 * 3)  # a multiply and an add per weight per output pixel
    linear = 2 * (4 * 8 * 8) * 10
    assert forward_flops(model, (1, 8, 8)) == conv + linear


def test_counting_flops_leaves_the_model_as_it_was() -> None:
    model = build_model(replace(SMALL, batch_norm=True, dropout=0.5), (1, 8, 8), 4)
    model.train()
    before = params(model)
    rng_before = torch.get_rng_state()
    assert forward_flops(model, (1, 8, 8)) > 0
    assert model.training
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert all(torch.equal(before[name], value) for name, value in params(model).items())


def test_auto_precision_uses_bf16_only_where_it_pays(monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = build_model(TrialConfig(filters=(8,), fc_units=32), (1, 8, 8), 10)  # a digits model
    big = build_model(TrialConfig(filters=(32, 64), fc_units=128), (1, 28, 28), 10)  # MNIST-sized
    assert forward_flops(tiny, (1, 8, 8)) * 64 < CPU_BF16_MIN_BATCH_FLOPS
    assert forward_flops(big, (1, 28, 28)) * 64 >= CPU_BF16_MIN_BATCH_FLOPS

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert auto_precision(tiny, (1, 8, 8), 64, CPU) == "fp32"
    assert auto_precision(big, (1, 28, 28), 64, CPU) == "bf16"
    assert auto_precision(tiny, (1, 8, 8), 64, torch.device("cuda")) == "bf16"

    # Without hardware bf16 the CPU would emulate it: slower at every size.
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert auto_precision(big, (1, 28, 28), 64, CPU) == "fp32"


def test_resolve_decides_auto_and_keeps_a_forced_precision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    big = build_model(TrialConfig(filters=(32, 64), fc_units=128), (1, 28, 28), 10)
    resolved = EngineOptions(compile=True).resolve(big, (1, 28, 28), 64, CPU)
    assert resolved == EngineOptions(precision="bf16", compile=True)
    assert EngineOptions("fp32").resolve(big, (1, 28, 28), 64, CPU).precision == "fp32"
    tiny = build_model(SMALL, (1, 8, 8), 4)
    assert EngineOptions("bf16").resolve(tiny, (1, 8, 8), 16, CPU).precision == "bf16"


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
