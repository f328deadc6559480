"""What a model family is: one frozen record that owns everything the rest of tuner asks of it.

A family builds a network for (C, H, W) inputs and `num_classes` from a trial's config, names
the [space] parameters only it samples, its backbone stages (input to output: what `freeze`,
the backbone learning rate and `tuner visualize` act on) and its head (the classifier, always
new and trained at `learning_rate`), says in one line how it was adapted to the data, and
whether it loads a local pretrained weights file. torch is imported when a network is built.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads when a network is built, not when the names are read
    from torch import nn

    from tuner.config import TrialConfig

Shape = tuple[int, int, int]

FREEZE_RULE = "'none', 'backbone' or 'all-but-last-K' (K >= 1 backbone stages stay trainable)"
ALL_BUT_LAST = re.compile(r"all-but-last-([1-9][0-9]{0,2})")


@dataclass(frozen=True)
class Family:
    """One model family: how to build it and what it samples, freezes and shows."""

    name: str
    build: Callable[[TrialConfig, Shape, int], nn.Module]
    stages: Callable[[nn.Module], list[nn.Module]]  # backbone stages, input to output
    head: Callable[[nn.Module], nn.Module]
    adaptation: Callable[[Shape], str]  # one line: how the network was fitted to the data
    # [space] parameters only this family has: sampled only in trials of this family.
    parameters: tuple[str, ...] = ()
    # Whether `[model].pretrained` weights load into it (else its trials train from scratch).
    pretrained: bool = False


def is_freeze(value: str) -> bool:
    """Whether `value` is a valid `freeze` setting (see FREEZE_RULE)."""
    return value in ("none", "backbone") or ALL_BUT_LAST.fullmatch(value) is not None
