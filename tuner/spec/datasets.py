"""The [dataset] table: which dataset names a study file may give, and its checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuner.spec.checker import Checker, check_seed, shown

if TYPE_CHECKING:
    from tuner.spec.schema import DatasetSpec

BUILTIN_DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100")
IMAGEFOLDER_PREFIX = "imagefolder:"


def validate_dataset(check: Checker, dataset: DatasetSpec) -> None:
    if dataset.name not in BUILTIN_DATASETS and not dataset.name.startswith(IMAGEFOLDER_PREFIX):
        raise check.fail(
            "[dataset].name",
            f"unknown dataset {shown(dataset.name)}; allowed: {', '.join(BUILTIN_DATASETS)}, "
            f"or {IMAGEFOLDER_PREFIX}PATH",
        )
    if dataset.imagefolder_path is not None and not dataset.name[len(IMAGEFOLDER_PREFIX) :]:
        raise check.fail("[dataset].name", "imagefolder: needs a path, e.g. imagefolder:./photos")
    if not 0 < dataset.val_fraction < 1:
        raise check.fail("[dataset].val_fraction", f"must be in (0, 1), got {dataset.val_fraction}")
    if dataset.train_subset < 0:
        raise check.fail("[dataset].train_subset", "must be >= 0 (0 = all images)")
    check_seed(check, dataset.split_seed, "[dataset].split_seed")
