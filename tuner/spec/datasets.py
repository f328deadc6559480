"""The [dataset] table's checks; the dataset names themselves come from tuner.data's registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuner.checking import Checker, check_seed
from tuner.data.registry import dataset_name_problem

if TYPE_CHECKING:
    from tuner.spec.schema import DatasetSpec


def validate_dataset(check: Checker, dataset: DatasetSpec) -> None:
    problem = dataset_name_problem(dataset.name)
    if problem is not None:
        raise check.fail("[dataset].name", problem)
    if not 0 < dataset.val_fraction < 1:
        raise check.fail("[dataset].val_fraction", f"must be in (0, 1), got {dataset.val_fraction}")
    if dataset.train_subset < 0:
        raise check.fail("[dataset].train_subset", "must be >= 0 (0 = all images)")
    check_seed(check, dataset.split_seed, "[dataset].split_seed")
