"""Model size; the seed CNN itself is a family (`tuner.families.seed_cnn`)."""

from __future__ import annotations

from torch import nn

# Built through `tuner.families.build_model`; named here for code that imported it from here.
from tuner.families.seed_cnn import build_cnn

__all__ = ["build_cnn", "count_parameters"]


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (frozen ones included: the size of the model)."""
    return sum(p.numel() for p in model.parameters())
