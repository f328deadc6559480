"""Measuring a built model: the measures of `tuner.measures` known before any training.

A configuration that breaks a constraint on one of them need not be trained at all.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tuner.measures import MEASURES, Measure

__all__ = ["MEASURES", "Measure", "model_measures"]

if TYPE_CHECKING:  # torch loads when a model is measured
    import torch
    from torch import nn

# Latency: a few untimed passes first (allocator, cuDNN autotuning, lazy init), then the fastest
# of the timed ones: other load only ever adds time, and on a busy shared CPU even the median
# of 10 passes was 100x off now and then (OpenMP threads waiting for cores).
WARMUP_PASSES = 3
TIMED_PASSES = 10


def model_measures(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """params, flops, latency_ms and memory_mb of `model` (already on `device`), untrained.

    - flops: forward FLOPs for one image (torch's FlopCounterMode; a multiply-add counts 2).
    - latency_ms: the fastest of 10 timed forward passes of ONE image (batch 1) on `device`, in
      eval mode without gradients: the deployment case, independent of the trial's batch size.
    - memory_mb: peak memory of one training step (forward + backward) at the trial's
      `batch_size`. On CUDA measured (max_memory_allocated); on CPU estimated as weights +
      gradients + two optimizer-state copies + every layer's output at that batch size.
    The model's weights, buffers and mode are left as they were (gradients are cleared).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tuner.engine.model import count_parameters

    was_training = model.training
    image = torch.zeros(1, *input_shape, device=device)
    model.eval()
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            model(image)
        flops = counter.get_total_flops()
        latency_ms = _latency_ms(model, image, device)
    memory_mb = _training_step_memory_mb(model, input_shape, batch_size, device)
    model.train(was_training)
    return {
        "params": float(count_parameters(model)),
        "flops": float(flops),
        "latency_ms": round(latency_ms, 4),
        "memory_mb": round(memory_mb, 3),
    }


def _synchronize(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _latency_ms(model: nn.Module, image: torch.Tensor, device: torch.device) -> float:
    for _ in range(WARMUP_PASSES):
        model(image)
    _synchronize(device)
    times = []
    for _ in range(TIMED_PASSES):
        start = time.perf_counter()
        model(image)
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times) * 1000.0


def _training_step_memory_mb(
    model: nn.Module, input_shape: tuple[int, int, int], batch_size: int, device: torch.device
) -> float:
    # Eval mode, so BatchNorm's running statistics are not moved by this zero batch.
    import torch

    batch = torch.zeros(batch_size, *input_shape, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        model(batch).sum().backward()
        peak = torch.cuda.max_memory_allocated(device)
        model.zero_grad(set_to_none=True)
        return peak / 2**20
    output_bytes = 0

    def count(_module: nn.Module, _inputs: object, output: object) -> None:
        nonlocal output_bytes
        if isinstance(output, torch.Tensor):
            output_bytes += output.numel() * output.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [leaf.register_forward_hook(count) for leaf in leaves]
    try:
        with torch.no_grad():
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    # weights + gradients + AdamW's two moment buffers, plus the activations kept for backward
    return (4 * weight_bytes + output_bytes) / 2**20
