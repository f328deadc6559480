"""The [dataset] table's checks; the dataset names themselves come from tuner.data's registry."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from tuner.checking import Checker, check_seed
from tuner.data.registry import IMAGEFOLDER_PREFIX, dataset_name_problem, imagefolder_path

if TYPE_CHECKING:
    from tuner.spec.schema import DatasetSpec


def validate_dataset(check: Checker, dataset: DatasetSpec) -> DatasetSpec:
    """`dataset` checked; an imagefolder's relative path made absolute from the study file's
    folder, as [model].pretrained is, so a study runs the same from any working directory."""
    problem = dataset_name_problem(dataset.name)
    if problem is not None:
        raise check.fail("[dataset].name", problem)
    folder = imagefolder_path(dataset.name)
    if folder is not None:
        dataset = dataclasses.replace(
            dataset, name=IMAGEFOLDER_PREFIX + str(_resolved(check, folder))
        )
    if not 0 < dataset.val_fraction < 1:
        raise check.fail("[dataset].val_fraction", f"must be in (0, 1), got {dataset.val_fraction}")
    if dataset.train_subset < 0:
        raise check.fail("[dataset].train_subset", "must be >= 0 (0 = all images)")
    check_seed(check, dataset.split_seed, "[dataset].split_seed")
    return dataset


def _resolved(check: Checker, folder: Path) -> Path:
    """The image folder, relative to the study file; one line naming both when it is absent."""
    if not folder.is_absolute():
        folder = (check.path.parent / folder).resolve()
    if not folder.is_dir():
        raise check.fail(
            "[dataset].name",
            f"imagefolder {folder} not found (expected a folder of class folders; a relative "
            "path is taken from the study file's folder)",
        )
    return folder
