"""Tiny study files for the tests that tune for real: digits, a seeded random sampler, no pruner.

tiny_study_toml()                        # 2 epochs on 300 images, one block of 4 filters
tiny_study_toml(train_subset=200, training="max_epochs = 1\\ntrials = 2")
spec_from(tmp_path, text)                # text -> tmp_path/study.toml -> StudySpec
"""

from __future__ import annotations

from pathlib import Path

import torch

from tuner.data import load_dataset, split
from tuner.engine import DeviceData, to_device
from tuner.spec import StudySpec, load_spec

TWO_EPOCHS = """\
max_epochs = 2
patience = 0
"""

SMALL_SPACE = """\
learning_rate = { type = "float", low = 1e-3, high = 3e-2, log = true }
batch_size = 64
num_blocks = 1
filters = 4
fc_units = 16
"""


def tiny_study_toml(
    name: str = "tiny",
    *,
    description: str | None = None,
    train_subset: int = 300,
    training: str = TWO_EPOCHS,
    space: str = SMALL_SPACE,
) -> str:
    """A study file's text; `training` and `space` are the bodies of those tables."""
    header = f'name = "{name}"\n'
    if description is not None:
        header += f'description = "{description}"\n'
    return f"""\
{header}[sampler]
name = "random"
seed = 0
[pruner]
name = "none"
[dataset]
name = "digits"
train_subset = {train_subset}
[training]
{training.rstrip()}
[space]
{space.rstrip()}
"""


def spec_from(tmp_path: Path, text: str, name: str = "study.toml") -> StudySpec:
    """`text` written to `tmp_path / name`, loaded as a study spec."""
    path = tmp_path / name
    path.write_text(text)
    return load_spec(path)


def tiny_data(spec: StudySpec) -> DeviceData:
    """The digits splits `spec`'s [dataset] asks for, on the CPU."""
    splits = split(
        load_dataset("digits"),
        val_fraction=spec.dataset.val_fraction,
        split_seed=spec.dataset.split_seed,
        train_subset=spec.dataset.train_subset,
    )
    return to_device(splits, torch.device("cpu"))
