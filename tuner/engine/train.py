"""Training: one model, one config, one device -> a stream of per-epoch results.

Knows nothing of Optuna. The data lives on the training device as uint8 tensors; batches are
index permutations of it, normalised on the fly, so no per-sample Python runs per epoch.
Device settings that make small CNNs fast (threads, channels_last, fused optimizers, cuDNN
autotuning, bf16 where it pays) are decided here, once, so callers only pick a device.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tuner.config import TrialConfig
from tuner.data import Splits
from tuner.errors import TunerError

# Evaluation batch size by device type: big batches keep a GPU busy, while on CPU a layer's
# activations for 128 images stay in the L3 cache: 1.2-2.2x faster than 1024 here.
EVAL_BATCH_SIZE = {"cuda": 1024, "cpu": 128}
# oneDNN (CPU) and cuDNN (CUDA) both run convolutions fastest on NHWC tensors: measured 1.2-1.5x
# per training step on this project's MNIST and CIFAR-sized models on CPU (bench/RESULTS.md).
MEMORY_FORMAT = torch.channels_last
PRECISIONS = ("auto", "fp32", "bf16")
# A mean cross-entropy this large is no longer training: a uniform guess over C classes scores
# log(C) (under 7 for 1,000 classes). AdamW's normalised steps can keep an exploding loss finite
# (~1e19 at lr=1e6), so a finite-but-absurd loss counts as diverged too.
DIVERGED_LOSS = 1e4


# The arithmetic a CPU training step needs before bf16 pays: below it, the casts to and from
# bf16 around every op cost more than the faster dot products save. Measured on a Zen 4 CPU
# with AVX512-BF16 (2 threads, bench/precision_crossover.py, bench/RESULTS.md): bf16 steps ran
# 0.70-1.19x the speed of fp32 at 0.7-18 MFLOP per forward batch (mostly 8x8 digits models),
# 1.16-2.22x at 31-8,000 (28x28 and 32x32 models).
CPU_BF16_MIN_BATCH_FLOPS = 30e6


@dataclass(frozen=True)
class EngineOptions:
    """How to train on the device, as opposed to what to train (that is the TrialConfig)."""

    # "auto": bf16 autocast on CUDA (about 2x the conv throughput, no loss scaling needed); on
    # a CPU with native bf16 (AVX512-BF16, AMX) for models big enough to gain from it (see
    # `auto_precision`); fp32 otherwise. "bf16" always autocasts, also on CPUs that emulate
    # bf16 (slower there). "fp32" never autocasts.
    precision: str = "auto"
    # torch.compile the model. On CPU it lost: 35 s to compile, then slower epochs than eager
    # (bench/RESULTS.md). Meant for CUDA and long trials, where compile time is paid back.
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise TunerError(
                f"unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}"
            )

    def resolve(
        self, model: nn.Module, input_shape: tuple[int, ...], batch_size: int, device: torch.device
    ) -> EngineOptions:
        """These options with "auto" decided for this model and batch size: bf16 or fp32."""
        if self.precision != "auto":
            return self
        return replace(self, precision=auto_precision(model, input_shape, batch_size, device))

    def autocast(self, device: torch.device) -> AbstractContextManager:
        """The autocast context for forward passes on `device` (unresolved "auto": bf16 on
        CUDA only)."""
        bf16 = self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda")
        if bf16:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return nullcontext()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 dot products in hardware (AVX512-BF16 or AMX)."""
    # PyTorch's own CPU feature probes; private, hence the fallback to "no".
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def forward_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass of `model` on one image (PyTorch's FLOP counter)."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()  # no dropout draws, no BatchNorm statistics updates
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def auto_precision(
    model: nn.Module, input_shape: tuple[int, ...], batch_size: int, device: torch.device
) -> str:
    """The precision "auto" trains `model` in on `device`: "bf16" or "fp32"."""
    if device.type == "cuda":
        return "bf16"
    if device.type != "cpu" or not cpu_has_native_bf16():
        return "fp32"
    batch_flops = forward_flops(model, input_shape) * batch_size
    return "bf16" if batch_flops >= CPU_BF16_MIN_BATCH_FLOPS else "fp32"


@dataclass(frozen=True)
class EpochResult:
    """Metrics of one finished epoch."""

    epoch: int  # 1-based
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float  # wall time of this epoch, training and validation
    improved: bool  # validation loss improved: these are the weights the model keeps


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite; the run cannot recover."""

    def __init__(self, epoch: int, loss: float) -> None:
        super().__init__(f"training loss is {loss} at epoch {epoch} (diverged)")
        self.epoch = epoch
        self.loss = loss


@dataclass(frozen=True)
class DeviceData:
    """Train/validation tensors resident on the training device."""

    train_images: torch.Tensor  # uint8 (N, C, H, W), channels_last
    train_labels: torch.Tensor  # int64 (N,)
    val_images: torch.Tensor
    val_labels: torch.Tensor
    scale: torch.Tensor  # (1, C, 1, 1): x_norm = x_uint8 * scale - shift
    shift: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        channels, height, width = self.train_images.shape[1:]
        return int(channels), int(height), int(width)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> float, standardised per channel with the training statistics."""
        return images.to(self.scale.dtype).mul_(self.scale).sub_(self.shift)


def pick_device(requested: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU; asking for CUDA without one is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise TunerError(
            f"--device: unknown device {requested!r}; use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TunerError("--device cuda: no CUDA device is available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise TunerError(
                f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
    return device


def available_cpus() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota: the affinity mask is the limit
    return max(1, cpus)


def configure_backend(device: torch.device) -> None:
    """Process-wide PyTorch settings for training on `device`; `to_device` calls it.

    CPU: one intra-op thread per available core. PyTorch's default follows the affinity mask
    but not a cgroup CPU quota (docker --cpus, Kubernetes limits), and OpenMP threads beyond the
    cores the process gets spin at every barrier: steps ran several times slower here when the
    two cores were shared. OMP_NUM_THREADS, when set (to cores / workers when several workers
    share a machine), wins. CUDA: cuDNN autotuning, since every batch has the same shape.
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True  # the few fp32 matmuls outside autocast
        torch.backends.cudnn.allow_tf32 = True
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(available_cpus())


def to_device(splits: Splits, device: torch.device) -> DeviceData:
    """Move a split to the device once (every trial of the process reuses it) and set the
    backend up for training there (`configure_backend`)."""
    configure_backend(device)
    mean = torch.tensor(splits.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(splits.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def move(images: torch.Tensor) -> torch.Tensor:
        # Stored NHWC once, so gathered batches come out NHWC with no per-batch copy.
        return images.to(device).contiguous(memory_format=MEMORY_FORMAT)

    return DeviceData(
        train_images=move(splits.train.images),
        train_labels=splits.train.labels.to(device),
        val_images=move(splits.val.images),
        val_labels=splits.val.labels.to(device),
        scale=1.0 / (255.0 * std),
        shift=mean / std,
        num_classes=splits.num_classes,
    )


def make_optimizer(model: nn.Module, config: TrialConfig) -> torch.optim.Optimizer:
    """AdamW or SGD with momentum, as the config says, as one fused kernel per step.

    The fused kernels compute the same update as the default per-parameter loop, which runs a
    dozen small ops per parameter tensor: 6-13% of a small CNN's step on CPU, measured.
    """
    fused = all(p.device.type in ("cpu", "cuda") for p in model.parameters())
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=config.learning_rate,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.momentum > 0,
            fused=fused,
        )
    return torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, fused=fused
    )


def classify(
    model: nn.Module,
    data: DeviceData,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int | None = None,
    options: EngineOptions = EngineOptions(),
) -> tuple[float, torch.Tensor]:
    """Mean cross-entropy loss of `model` on uint8 `images`, and its predicted classes."""
    model.eval()
    device = images.device
    batch_size = batch_size or EVAL_BATCH_SIZE.get(device.type, 1024)
    total_loss = torch.zeros((), device=device)
    predicted = []
    with torch.inference_mode(), options.autocast(device):
        for start in range(0, len(labels), batch_size):
            batch = data.normalise(images[start : start + batch_size])
            logits = model(batch).float()
            total_loss += F.cross_entropy(
                logits, labels[start : start + batch_size], reduction="sum"
            )
            predicted.append(logits.argmax(dim=1))
    predictions = torch.cat(predicted) if predicted else labels.new_empty(0)
    return total_loss.item() / max(1, len(labels)), predictions


def evaluate(
    model: nn.Module,
    data: DeviceData,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int | None = None,
    options: EngineOptions = EngineOptions(),
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of `model` on uint8 `images`."""
    loss, predictions = classify(model, data, images, labels, batch_size, options)
    return loss, (predictions == labels).sum().item() / max(1, len(labels))


def fit(
    model: nn.Module,
    data: DeviceData,
    config: TrialConfig,
    device: torch.device,
    options: EngineOptions = EngineOptions(),
    on_batch: Callable[[int, int], None] | None = None,
) -> Iterator[EpochResult]:
    """Train `model` on `data`, yielding an `EpochResult` after every epoch.

    Stops early when validation loss has not improved for `config.patience` epochs. When the
    generator ends (finished, early-stopped, or closed by the caller) the model holds the
    weights of its best epoch by validation loss. Raises DivergedError on a NaN/inf loss.
    `options` choose precision and compilation (see EngineOptions), never the results' meaning.
    `on_batch(done, per_epoch)` is called after each training batch, for progress displays.
    """
    generator = torch.Generator(device=device).manual_seed(config.seed)
    augment = None
    if config.augment.enabled:
        from tuner.engine.augment import (
            augment_batch,  # only studies that augment pay for the import
        )

        augment = augment_batch
    # Crop padding is black, a 0 pixel normalised, as torchvision's RandomCrop pads raw images.
    black = -data.shift
    model.to(device, memory_format=MEMORY_FORMAT)
    options = options.resolve(model, data.input_shape, config.batch_size, device)
    forward = torch.compile(model) if options.compile else model
    optimizer = make_optimizer(model, config)
    # Cosine decay over the epoch budget: a robust default that rarely needs its own tuning.
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.max_epochs)
    train_count = len(data.train_labels)
    batches_per_epoch = math.ceil(train_count / config.batch_size)

    best_loss = math.inf
    best_state = copy.deepcopy(model.state_dict())
    epochs_without_improvement = 0
    try:
        for epoch in range(1, config.max_epochs + 1):
            started = time.perf_counter()
            model.train()
            total_loss = torch.zeros((), device=device)
            correct = torch.zeros((), device=device)
            order = torch.randperm(train_count, device=device, generator=generator)
            for batch, start in enumerate(range(0, train_count, config.batch_size), 1):
                indices = order[start : start + config.batch_size]
                if len(indices) < 2 and config.batch_norm:
                    continue  # BatchNorm cannot train on a batch of one
                images = data.normalise(data.train_images[indices])
                targets = data.train_labels[indices]
                if augment is not None:
                    images, targets = augment(
                        images,
                        targets,
                        config.augment,
                        data.num_classes,
                        generator=generator,
                        black=black,
                    )
                with options.autocast(device):
                    logits = forward(images)
                    loss = F.cross_entropy(
                        logits.float(), targets, label_smoothing=config.label_smoothing
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                # Accumulate on the device: a .item() per step would stall a GPU every batch.
                total_loss += loss.detach() * len(indices)
                hard_targets = targets if targets.ndim == 1 else targets.argmax(dim=1)
                correct += (logits.detach().argmax(dim=1) == hard_targets).sum()
                if on_batch is not None:
                    on_batch(batch, batches_per_epoch)
            scheduler.step()

            train_loss = total_loss.item() / train_count
            if not math.isfinite(train_loss) or train_loss > DIVERGED_LOSS:
                raise DivergedError(epoch, train_loss)
            val_loss, val_accuracy = evaluate(
                forward, data, data.val_images, data.val_labels, options=options
            )
            if not math.isfinite(val_loss):
                raise DivergedError(epoch, val_loss)

            improved = val_loss < best_loss
            if improved:
                best_loss = val_loss
                best_state = copy.deepcopy(model.state_dict())
                epochs_without_improvement = 0
            else:
                epochs_without_improvement += 1
            yield EpochResult(
                epoch=epoch,
                train_loss=train_loss,
                train_accuracy=correct.item() / train_count,
                val_loss=val_loss,
                val_accuracy=val_accuracy,
                seconds=time.perf_counter() - started,
                improved=improved,
            )
            if config.patience and epochs_without_improvement >= config.patience:
                break
    finally:
        model.load_state_dict(best_state)
