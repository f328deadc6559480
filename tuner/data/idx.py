"""The IDX format of MNIST and Fashion-MNIST: finding the four files and decoding them."""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tuner.data import identity
from tuner.data.sets import ImageSet
from tuner.errors import TunerError

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class IdxFile:
    """One decoded IDX file and the MD5s that tell whether it is a published one."""

    path: Path
    array: np.ndarray
    md5s: frozenset[str]  # of the file as stored and, when gzip-compressed, of its contents


def read_bytes(path: Path) -> bytes:
    """The bytes of a dataset file; an unreadable one is a TunerError naming it."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TunerError(f"{path}: cannot read dataset file: {exc.strerror or exc}") from None


def read_idx_file(path: Path) -> IdxFile:
    """Read an IDX file of unsigned bytes, gzip-compressed or not."""
    stored = read_bytes(path)
    md5s = {hashlib.md5(stored, usedforsecurity=False).hexdigest()}
    raw = stored
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise TunerError(f"{path}: corrupt gzip file ({exc})") from None
        md5s.add(hashlib.md5(raw, usedforsecurity=False).hexdigest())
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise TunerError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise TunerError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(shape)  # exact: a corrupt header can name absurd sizes
    if len(raw) - header_end != expected:
        raise TunerError(
            f"{path}: truncated or corrupt IDX data: header says {expected} bytes, "
            f"file has {len(raw) - header_end}"
        )
    array = np.frombuffer(raw, dtype=np.uint8, offset=header_end).reshape(shape)
    return IdxFile(path, array, frozenset(md5s))


def read_idx(path: Path) -> np.ndarray:
    """The array an IDX file holds."""
    return read_idx_file(path).array


def _find_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_dir(data_dir: Path, torchvision_folder: str) -> Path | None:
    """The folder holding the IDX files: data_dir itself, or torchvision's layout below it."""
    for folder in (data_dir, data_dir / torchvision_folder / "raw", data_dir / "raw"):
        if _find_file(folder, MNIST_FILES["train"][0]):
            return folder
    return None


def find_idx_files(data_dir: Path, torchvision_folder: str) -> list[Path] | None:
    """The four files (train images, train labels, test images, test labels), or None.

    Raises TunerError when some but not all of them are there.
    """
    folder = _idx_dir(data_dir, torchvision_folder)
    if folder is None:
        return None
    stems = [stem for pair in MNIST_FILES.values() for stem in pair]
    files = [_find_file(folder, stem) for stem in stems]
    absent = [stem for stem, found in zip(stems, files, strict=True) if found is None]
    if absent:
        raise TunerError(
            f"{folder}: incomplete MNIST-format dataset, missing {', '.join(absent)}[.gz]"
        )
    return [f for f in files if f is not None]


def decode_idx(
    sources: list[Path],
    name: str,
    num_classes: int,
    signatures: dict[str, identity.Signature],
) -> tuple[ImageSet, ImageSet]:
    """(train, test) from the four files `find_idx_files` lists, checked to hold dataset `name`.

    Every image file needs one label per image, each below `num_classes`; files that are (or
    look like) another of the `signatures`' datasets are refused (`identity`).
    """
    files = [read_idx_file(path) for path in sources]
    sets = []
    for images, labels in (files[0:2], files[2:4]):
        if (
            images.array.ndim != 3
            or labels.array.ndim != 1
            or len(images.array) != len(labels.array)
        ):
            raise TunerError(
                f"{images.path}: image and label files disagree: "
                f"{images.array.shape} images, {labels.array.shape} labels"
            )
        if len(labels.array) and labels.array.max() >= num_classes:
            raise TunerError(
                f"{labels.path}: labels must be 0..{num_classes - 1}, "
                f"found {int(labels.array.max())}"
            )
        sets.append(
            ImageSet(
                torch.from_numpy(images.array.copy()).unsqueeze(1),
                torch.from_numpy(labels.array.astype(np.int64)),
            )
        )
    identity.check_idx_identity(name, files, signatures)
    return sets[0], sets[1]
