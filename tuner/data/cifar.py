"""CIFAR-10/100, binary and python (pickle) versions: finding the files and decoding them."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import torch

from tuner.data.idx import read_bytes
from tuner.data.sets import ImageSet
from tuner.errors import TunerError

log = logging.getLogger(__name__)

CIFAR_LAYOUTS = {
    # name: (binary folder, binary train files, binary test files, label bytes, meta file,
    #        python-pickle folder)
    "cifar10": (
        "cifar-10-batches-bin",
        [f"data_batch_{i}.bin" for i in range(1, 6)],
        ["test_batch.bin"],
        1,
        "batches.meta.txt",
        "cifar-10-batches-py",
    ),
    "cifar100": (
        "cifar-100-binary",
        ["train.bin"],
        ["test.bin"],
        2,
        "fine_label_names.txt",
        "cifar-100-python",
    ),
}
META_FILES = ("batches.meta.txt", "fine_label_names.txt", "batches.meta", "meta")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's python batches while refusing anything but plain data and arrays.

    CIFAR's "python version" is a pickle; a plain `pickle.load` would run whatever code a
    tampered file names. Only numpy's array reconstruction is allowed through.
    """

    ALLOWED: frozenset[tuple[str, str]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
        }
    )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise _UnsafePickleError(f"{module}.{name}")


class _UnsafePickleError(pickle.UnpicklingError):
    """The pickle names something other than plain data and numpy arrays."""


def _unpickle(path: Path) -> object:
    try:
        with path.open("rb") as handle:
            return _ArrayUnpickler(handle, encoding="latin1").load()
    except _UnsafePickleError as exc:
        raise TunerError(
            f"{path}: refusing to load this CIFAR batch: it would call {exc}, which a genuine "
            "CIFAR file never does (a tampered or foreign pickle)"
        ) from None
    except OSError as exc:
        raise TunerError(f"{path}: cannot read dataset file: {exc.strerror or exc}") from None
    except Exception as exc:  # a damaged pickle can fail in many ways (EOFError, KeyError, ...)
        detail = " ".join(str(exc).split())
        raise TunerError(
            f"{path}: corrupt CIFAR batch file ({type(exc).__name__}: {detail})"
        ) from None


def _cifar_records(path: Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR's binary version: records of label byte(s) + 3072 pixel bytes."""
    raw = np.frombuffer(read_bytes(path), dtype=np.uint8)
    record = label_bytes + 3072
    if raw.size == 0 or raw.size % record:
        raise TunerError(
            f"{path}: truncated CIFAR binary file ({raw.size} bytes is not a multiple of {record})"
        )
    rows = raw.reshape(-1, record)
    # CIFAR-100 binary stores (coarse, fine); the fine label is the last label byte.
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32), rows[:, label_bytes - 1].astype(np.int64)


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) and labels of one batch of CIFAR's python version."""
    batch = _unpickle(path)
    if not isinstance(batch, dict) or "data" not in batch:
        raise TunerError(f"{path}: not a CIFAR batch (expected a dict with 'data' and labels)")
    key = "labels" if "labels" in batch else "fine_labels"
    if key not in batch:
        raise TunerError(f"{path}: not a CIFAR batch (no 'labels' or 'fine_labels')")
    try:
        images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[key], dtype=np.int64).reshape(-1)
    except (ValueError, TypeError, OverflowError) as exc:
        raise TunerError(f"{path}: not a CIFAR batch ({exc})") from None
    return images, labels


def _cifar_class_names(meta: Path, binary: bool, num_classes: int) -> tuple[str, ...] | None:
    """Class names from the meta file; None (numbers are used) when it doesn't list them."""
    if binary:
        text = read_bytes(meta).decode("utf-8", errors="replace")
        names = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        data = _unpickle(meta)
        data = data if isinstance(data, dict) else {}
        listed = data.get("label_names") or data.get("fine_label_names")
        names = [str(name) for name in listed] if isinstance(listed, list) else []
    if len(names) != num_classes:
        log.warning("%s: no list of %d class names; classes are numbered", meta, num_classes)
        return None
    return tuple(names)


def find_cifar_files(name: str, data_dir: Path) -> list[Path] | None:
    """The binary or python version's files (data files, then the meta file if present)."""
    bin_folder, train_files, test_files, _, meta, py_folder = CIFAR_LAYOUTS[name]
    py_train = [f"data_batch_{i}" for i in range(1, 6)] if name == "cifar10" else ["train"]
    py_test = ["test_batch"] if name == "cifar10" else ["test"]
    py_meta = "batches.meta" if name == "cifar10" else "meta"
    candidates = [
        (folder, data_files, meta_file)
        for subfolder, data_files, meta_file in (
            (bin_folder, train_files + test_files, meta),
            (py_folder, py_train + py_test, py_meta),
        )
        for folder in (data_dir / subfolder, data_dir)
    ]
    for folder, data_files, meta_file in candidates:
        if all((folder / f).is_file() for f in data_files):
            return [folder / f for f in [*data_files, meta_file] if (folder / f).is_file()]
    for folder, data_files, _ in candidates:
        missing = [f for f in data_files if not (folder / f).is_file()]
        if len(missing) < len(data_files):
            raise TunerError(f"{folder}: incomplete {name} dataset, missing {', '.join(missing)}")
    return None


def decode_cifar(
    name: str, sources: list[Path], num_classes: int
) -> tuple[ImageSet, ImageSet, tuple[str, ...]]:
    """(train, test, class names) from the files `find_cifar_files` lists."""
    _, train_files, _, label_bytes, _, _ = CIFAR_LAYOUTS[name]
    binary = sources[0].suffix == ".bin"
    train_count = len(train_files) if binary else (5 if name == "cifar10" else 1)
    data_files = [p for p in sources if p.name not in META_FILES]
    meta_files = [p for p in sources if p not in data_files]
    parts = [_cifar_records(p, label_bytes) if binary else _cifar_batch(p) for p in data_files]
    for path, (images, labels) in zip(data_files, parts, strict=True):
        if len(images) != len(labels):
            raise TunerError(
                f"{path}: corrupt CIFAR data (counts differ: {len(images)} images, "
                f"{len(labels)} labels)"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
            raise TunerError(
                f"{path}: corrupt CIFAR data (labels out of range: must be "
                f"0..{num_classes - 1}, found {bad})"
            )
    class_names = tuple(str(i) for i in range(num_classes))
    if meta_files:
        class_names = _cifar_class_names(meta_files[0], binary, num_classes) or class_names

    def join(chunks: list[tuple[np.ndarray, np.ndarray]]) -> ImageSet:
        images = np.concatenate([c[0] for c in chunks])
        labels = np.concatenate([c[1] for c in chunks])
        return ImageSet(torch.from_numpy(images.copy()), torch.from_numpy(labels))

    return join(parts[:train_count]), join(parts[train_count:]), class_names
