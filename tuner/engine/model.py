"""Model size; the seed CNN itself is a family (`tuner.families.seed_cnn`)."""

from __future__ import annotations

from torch import nn

__all__ = ["count_parameters"]


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (frozen ones included: the size of the model)."""
    return sum(p.numel() for p in model.parameters())
