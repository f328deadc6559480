"""What a study can optimise or constrain: the measure registry (plain names; no torch).

Two kinds of measure: `val_accuracy` / `val_loss` come from training; `params`, `flops`,
`latency_ms` and `memory_mb` are known from the built model alone, so they are measured before
any training (`tuner.engine.measure` measures them).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Measure:
    """One measure: its fixed direction, its unit, and whether training is needed to know it."""

    direction: str  # "maximize" or "minimize"
    unit: str
    from_training: bool


MEASURES: dict[str, Measure] = {
    "val_accuracy": Measure("maximize", "", True),
    "val_loss": Measure("minimize", "", True),
    "params": Measure("minimize", "parameters", False),
    "flops": Measure("minimize", "FLOPs per image", False),
    "latency_ms": Measure("minimize", "ms per image, batch 1", False),
    "memory_mb": Measure("minimize", "MB peak for one training step", False),
}
