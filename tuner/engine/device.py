"""Where and how a model trains: the device, its backend settings, the data on it, the precision.

Everything here is decided before the training loop starts, so `train.fit` only runs it:
`pick_device` turns `--device` into a torch.device, `to_device` puts a split on it once (and
sets the backend up there, `configure_backend`), and `EngineOptions.resolve` turns
`--precision auto` into "bf16" or "fp32" for one model and batch size: once per trial.
"""

from __future__ import annotations

import math
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tuner.data import Splits
from tuner.errors import TunerError

# oneDNN (CPU) and cuDNN (CUDA) both run convolutions fastest on NHWC tensors (measured on
# this project's models: bench/RESULTS.md, "Engine overhead").
MEMORY_FORMAT = torch.channels_last
PRECISIONS = ("auto", "fp32", "bf16")
# The arithmetic a CPU training step needs before bf16 pays: below it, the casts to and from
# bf16 around every op cost more than the faster dot products save (measured:
# bench/precision_crossover.py, bench/RESULTS.md "Precision crossover").
CPU_BF16_MIN_BATCH_FLOPS = 30e6


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


@dataclass(frozen=True)
class EngineOptions:
    """How to train on the device, as opposed to what to train (that is the TrialConfig)."""

    # "auto": bf16 autocast on CUDA (about 2x the conv throughput, no loss scaling needed); on
    # a CPU with native bf16 (AVX512-BF16, AMX) for models big enough to gain from it (see
    # `auto_precision`); fp32 otherwise. "bf16" always autocasts, also on CPUs that emulate
    # bf16 (slower there). "fp32" never autocasts. `resolve` decides "auto", once per trial;
    # `fit` takes only resolved options.
    precision: str = "auto"
    # torch.compile the model: meant for CUDA and long trials, where the compile time is paid
    # back; on CPU it lost to eager (bench/RESULTS.md, "Engine overhead").
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise TunerError(
                f"unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}"
            )

    @property
    def resolved(self) -> bool:
        """Whether the precision is decided ("fp32" or "bf16"), as `fit` needs it."""
        return self.precision != "auto"

    def resolve(
        self, model: nn.Module, input_shape: tuple[int, ...], batch_size: int, device: torch.device
    ) -> EngineOptions:
        """These options with "auto" decided for this model and batch size: bf16 or fp32."""
        if self.resolved:
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
