"""Where bf16 starts to pay on this CPU: fp32 vs bf16-autocast training steps, by model size.

    python bench/precision_crossover.py

`--precision auto` trains in bf16 on a CPU with native bf16 only when a forward batch needs at
least `tuner.engine.device.CPU_BF16_MIN_BATCH_FLOPS`; this benchmark is where that number comes
from.
For a fixed list of models of the shipped studies' shapes (8x8 digits, 28x28 MNIST, 32x32x3
CIFAR) it times training steps (forward, loss, backward, fused AdamW step, channels_last, as
`fit` runs them) on random tensors in fp32 and under bf16 autocast, and prints the
forward FLOPs per batch next to the speed ratio and what "auto" picks for that model.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from common import load_average, machine_header

from tuner.config import TrialConfig
from tuner.engine.device import (
    CPU_BF16_MIN_BATCH_FLOPS,
    MEMORY_FORMAT,
    EngineOptions,
    auto_precision,
    configure_backend,
    cpu_has_native_bf16,
    forward_flops,
)
from tuner.engine.train import make_optimizer
from tuner.families import build_model

CPU = torch.device("cpu")
# (input shape, filters per block, batch size, kernel size): small to large per dataset shape.
MODELS = [
    ((1, 8, 8), (8,), 16, 3),
    ((1, 8, 8), (8,), 64, 3),
    ((1, 8, 8), (8, 16), 64, 3),
    ((1, 8, 8), (16, 32, 16), 32, 5),
    ((1, 8, 8), (64, 16), 16, 5),
    ((1, 8, 8), (64, 64, 64), 128, 5),
    ((1, 28, 28), (8,), 16, 3),
    ((1, 28, 28), (16,), 16, 3),
    ((1, 28, 28), (16, 16), 32, 3),
    ((1, 28, 28), (16, 64, 16), 64, 5),
    ((1, 28, 28), (32, 48), 64, 3),
    ((1, 28, 28), (64, 64, 32), 64, 5),
    ((1, 28, 28), (96, 48), 128, 5),
    ((3, 32, 32), (16,), 16, 3),
    ((3, 32, 32), (32,), 32, 3),
    ((3, 32, 32), (64, 128), 64, 3),
    ((3, 32, 32), (128, 32, 128), 256, 3),
]


def step_seconds(
    config: TrialConfig, input_shape: tuple[int, int, int], precision: str, steps: int
) -> float:
    """Mean seconds per training step of `config`'s model on random data, after a warm-up."""
    torch.manual_seed(0)
    model = build_model(config, input_shape, 10).to(memory_format=MEMORY_FORMAT)
    optimizer = make_optimizer(model, config)
    images = torch.randn(config.batch_size, *input_shape).contiguous(memory_format=MEMORY_FORMAT)
    labels = torch.randint(0, 10, (config.batch_size,))
    options = EngineOptions(precision=precision)

    def step() -> None:
        with options.autocast(CPU):
            loss = F.cross_entropy(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs, fastest kept")
    args = parser.parse_args()
    configure_backend(CPU)

    print("\n".join(machine_header()))
    print(
        f"native bf16: {cpu_has_native_bf16()}; auto picks bf16 from "
        f"{CPU_BF16_MIN_BATCH_FLOPS / 1e6:.0f} MFLOP per forward batch\n"
    )
    print(
        f"{'input':<10} {'filters':<14} {'batch':>5} {'k':>2} {'MFLOP/batch':>12} "
        f"{'fp32 ms':>8} {'bf16 ms':>8} {'bf16 speed-up':>13}  auto   load"
    )
    for input_shape, filters, batch_size, kernel_size in MODELS:
        config = TrialConfig(filters=filters, batch_size=batch_size, kernel_size=kernel_size)
        model = build_model(config, input_shape, 10)
        batch_flops = forward_flops(model, input_shape) * batch_size
        best = {"fp32": float("inf"), "bf16": float("inf")}
        for _ in range(args.repeats):
            for precision in best:
                best[precision] = min(
                    best[precision], step_seconds(config, input_shape, precision, args.steps)
                )
        shape = "x".join(str(side) for side in input_shape)
        print(
            f"{shape:<10} {'-'.join(map(str, filters)):<14} {batch_size:>5} {kernel_size:>2} "
            f"{batch_flops / 1e6:12.1f} {best['fp32'] * 1e3:8.2f} {best['bf16'] * 1e3:8.2f} "
            f"{best['fp32'] / best['bf16']:12.2f}x  "
            f"{auto_precision(model, input_shape, batch_size, CPU):<5}  {load_average()}",
            flush=True,
        )


if __name__ == "__main__":
    main()
