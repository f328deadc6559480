"""Datasets by name -> uint8 image tensors, decoded once and cached on disk.

Every dataset becomes an `ImageSet`: `images` uint8 (N, C, H, W) and `labels` int64 (N,). The
decoded tensors are cached as safetensors files keyed by the dataset and a fingerprint of its
source files, so a second process loads them in a fraction of a second and no file format is
parsed twice; a file made stale by changed sources, or left in the naming of cache format 1,
is deleted when its successor is written.
The split into train/validation is seeded; the test split is never used while tuning.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import logging
import math
import os
import pickle
import re
import socket
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tuner.errors import TunerError
from tuner.files import atomic_path
from tuner.spec import DatasetSpec

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

log = logging.getLogger(__name__)

# PIL modes of grayscale images, alpha ("LA", "La") or not; all others load as RGB.
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
DEFAULT_IMAGEFOLDER_SIZE = 32
# 2: entry and version in the file name; imagefolder reads LA, P and 16-bit images correctly.
# Files named as by format 1 are deleted (`_format_1_files`).
CACHE_FORMAT_VERSION = "2"
DOWNLOAD_TIMEOUT = 15.0  # seconds a download may wait for a connection or for data
STATS_CHUNK_VALUES = 1 << 22  # channel_stats counts this many pixel values at a time


@dataclass(frozen=True)
class ImageSet:
    """Images as uint8 (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[indices], self.labels[indices])


@dataclass(frozen=True)
class Dataset:
    """A dataset's official train and test splits plus its class names."""

    name: str
    train: ImageSet
    test: ImageSet
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        channels, height, width = self.train.images.shape[1:]
        return int(channels), int(height), int(width)


@dataclass(frozen=True)
class Splits:
    """What a trial trains and validates on; the test split stays with the Dataset."""

    train: ImageSet
    val: ImageSet
    num_classes: int
    mean: tuple[float, ...]  # per channel, on the 0..1 scale, from the training split
    std: tuple[float, ...]


def default_data_dir() -> Path:
    """`TUNER_DATA_DIR`, else ~/.cache/tuner/data."""
    return Path(os.environ.get("TUNER_DATA_DIR", Path.home() / ".cache" / "tuner" / "data"))


def default_cache_dir() -> Path:
    """`TUNER_CACHE_DIR`, else ~/.cache/tuner/tensors."""
    return Path(os.environ.get("TUNER_CACHE_DIR", Path.home() / ".cache" / "tuner" / "tensors"))


# ---------------------------------------------------------------- readers of the file formats


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST's format), gzip-compressed or not."""
    raw = _read_bytes(path)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise TunerError(f"{path}: corrupt gzip file ({exc})") from None
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
    return np.frombuffer(raw, dtype=np.uint8, offset=header_end).reshape(shape)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TunerError(f"{path}: cannot read dataset file: {exc.strerror or exc}") from None


def _find_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _mnist_dir(data_dir: Path, torchvision_folder: str) -> Path | None:
    """The folder holding the IDX files: data_dir itself, or torchvision's layout below it."""
    for folder in (data_dir, data_dir / torchvision_folder / "raw", data_dir / "raw"):
        if _find_file(folder, MNIST_FILES["train"][0]):
            return folder
    return None


def _idx_sources(data_dir: Path, torchvision_folder: str) -> list[Path] | None:
    folder = _mnist_dir(data_dir, torchvision_folder)
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


def _decode_idx(sources: list[Path]) -> tuple[ImageSet, ImageSet]:
    train_images, train_labels, test_images, test_labels = (_read_idx(p) for p in sources)
    sets = []
    for images, labels, source, label_source in (
        (train_images, train_labels, sources[0], sources[1]),
        (test_images, test_labels, sources[2], sources[3]),
    ):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise TunerError(
                f"{source}: image and label files disagree: "
                f"{images.shape} images, {labels.shape} labels"
            )
        if len(labels) and labels.max() >= 10:
            raise TunerError(f"{label_source}: labels must be 0..9, found {int(labels.max())}")
        sets.append(
            ImageSet(
                torch.from_numpy(images.copy()).unsqueeze(1),
                torch.from_numpy(labels.astype(np.int64)),
            )
        )
    return sets[0], sets[1]


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
    raw = np.frombuffer(_read_bytes(path), dtype=np.uint8)
    record = label_bytes + 3072
    if raw.size == 0 or raw.size % record:
        raise TunerError(
            f"{path}: truncated CIFAR binary file ({raw.size} bytes is not a multiple of {record})"
        )
    rows = raw.reshape(-1, record)
    # CIFAR-100 binary stores (coarse, fine); the fine label is the last label byte.
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32), rows[:, label_bytes - 1].astype(np.int64)


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


def _cifar_sources(name: str, data_dir: Path) -> list[Path] | None:
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


def _decode_cifar(name: str, sources: list[Path]) -> tuple[ImageSet, ImageSet, tuple[str, ...]]:
    _, train_files, _, label_bytes, _, _ = CIFAR_LAYOUTS[name]
    num_classes = 10 if name == "cifar10" else 100
    binary = sources[0].suffix == ".bin"
    train_count = len(train_files) if binary else (5 if name == "cifar10" else 1)
    data_files = [
        p
        for p in sources
        if p.name not in ("batches.meta.txt", "fine_label_names.txt", "batches.meta", "meta")
    ]
    meta_files = [p for p in sources if p not in data_files]
    parts = []
    for path in data_files:
        parts.append(_cifar_records(path, label_bytes) if binary else _cifar_batch(path))
    for path, (images, labels) in zip(data_files, parts, strict=True):
        if len(images) != len(labels) or (
            len(labels) and (labels.min() < 0 or labels.max() >= num_classes)
        ):
            raise TunerError(f"{path}: corrupt CIFAR data (labels out of range or counts differ)")
    train = [p for p in parts[:train_count]]
    test = parts[train_count:]
    class_names = tuple(str(i) for i in range(num_classes))
    if meta_files:
        class_names = _cifar_class_names(meta_files[0], binary, num_classes) or class_names

    def join(chunks: list[tuple[np.ndarray, np.ndarray]]) -> ImageSet:
        images = np.concatenate([c[0] for c in chunks])
        labels = np.concatenate([c[1] for c in chunks])
        return ImageSet(torch.from_numpy(images.copy()), torch.from_numpy(labels))

    return join(train), join(test), class_names


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
        text = _read_bytes(meta).decode("utf-8", errors="replace")
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


def _imagefolder_sources(root: Path) -> list[Path]:
    if not root.is_dir():
        raise TunerError(
            f"{root}: imagefolder dataset not found (expected a folder of class folders)"
        )
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _grey_or_rgb(image: PILImage) -> PILImage:
    """`image` in mode "L" when its mode is a grayscale one, else in mode "RGB"; alpha dropped.

    Palette images ("P", "PA") count as colour, whatever their palette. Integer images ("I;16",
    "I") hold 16-bit values: they are scaled to 0..255, where PIL's own conversion would clip
    everything above 255 (values outside 0..65535 are clipped). "F" images are taken as 0..255,
    as PIL converts them.
    """
    from PIL import Image

    if image.mode == "I" or image.mode.startswith("I;16"):
        values = np.asarray(image.convert("I"), dtype=np.int64).clip(0, 65535)
        return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8))  # round(v / 257)
    if image.mode in GRAYSCALE_MODES:
        return image.convert("L")
    if image.mode in ("P", "PA"):
        # Through RGBA: PIL warns when a palette with transparency goes straight to RGB.
        return image.convert("RGBA").convert("RGB")
    return image.convert("RGB")


def _decode_imagefolder(
    root: Path, image_size: int
) -> tuple[ImageSet, ImageSet | None, tuple[str, ...]]:
    """Decode ROOT/class/*.png (or ROOT/train/class/... and ROOT/test/class/...)."""
    from PIL import Image, UnidentifiedImageError

    has_splits = (root / "train").is_dir() and (root / "test").is_dir()
    split_roots = (
        {"train": root / "train", "test": root / "test"} if has_splits else {"train": root}
    )
    class_names = sorted(p.name for p in split_roots["train"].iterdir() if p.is_dir())
    if len(class_names) < 2:
        hint = (
            "; for your own test split, put the class folders in both train/ and test/"
            if class_names in (["train"], ["test"])
            else ""
        )
        raise TunerError(
            f"{split_roots['train']}: an imagefolder dataset needs at least 2 class folders, "
            f"found {len(class_names)} ({', '.join(class_names) or 'none'}){hint}"
        )
    empty = [
        c
        for c in class_names
        if not any(
            p.suffix.lower() in IMAGE_SUFFIXES for p in (split_roots["train"] / c).rglob("*")
        )
    ]
    if empty:
        raise TunerError(
            f"{split_roots['train']}: class folders with no images: {', '.join(empty)}"
        )

    decoded: dict[str, ImageSet] = {}
    modes: set[str] = set()
    for split, split_root in split_roots.items():
        files = []
        for label, class_name in enumerate(class_names):
            for path in sorted((split_root / class_name).rglob("*")):
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    files.append((path, label))
        images, labels, skipped = [], [], 0
        for path, label in files:
            try:
                with Image.open(path) as image:
                    image.load()
                    converted = _grey_or_rgb(image)
                    modes.add(converted.mode)
                    images.append(converted.resize((image_size, image_size)))
                    labels.append(label)
            except (
                UnidentifiedImageError,
                Image.DecompressionBombError,
                OSError,
                ValueError,
            ) as exc:
                skipped += 1
                log.warning("skipping unreadable image %s: %s", path, exc)
        if skipped:
            log.warning("%s: skipped %d unreadable image(s) of %d", split_root, skipped, len(files))
        if not images:
            raise TunerError(f"{split_root}: no readable images")
        decoded[split] = (images, labels)  # type: ignore[assignment]

    channels = 1 if modes == {"L"} else 3  # one colour image makes the whole dataset RGB
    result = {}
    for split, (images, labels) in decoded.items():  # type: ignore[misc]
        arrays = [
            np.asarray(img if channels == 1 else img.convert("RGB"), dtype=np.uint8)
            for img in images
        ]
        stacked = np.stack(arrays)
        stacked = stacked[:, None] if channels == 1 else stacked.transpose(0, 3, 1, 2)
        result[split] = ImageSet(
            torch.from_numpy(np.ascontiguousarray(stacked)), torch.tensor(labels, dtype=torch.int64)
        )
    return result["train"], result.get("test"), tuple(class_names)


def _hold_out(data: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """Split off a fixed test set for datasets that ship without one."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    cut = round(len(data) * fraction)
    return data.subset(order[cut:]), data.subset(order[:cut])


def _decode_digits() -> tuple[ImageSet, ImageSet, tuple[str, ...]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 8x8 images with values 0..16, stored as uint8 0..255 like every other dataset.
    images = torch.from_numpy(np.round(digits.images * (255 / 16)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    train, test = _hold_out(ImageSet(images, labels), 0.2, seed=0)
    return train, test, tuple(str(i) for i in range(10))


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class _Source:
    """How to find a dataset's files and decode them."""

    find: Callable[[Path], list[Path] | None]  # source files, or None when absent
    decode: Callable[[list[Path]], tuple[ImageSet, ImageSet, tuple[str, ...]]]
    expected: str  # where the files are expected, for the error message
    torchvision_class: str | None  # used to download when the files are absent


FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

DATASETS: dict[str, _Source] = {
    "mnist": _Source(
        find=lambda d: _idx_sources(d, "MNIST"),
        decode=lambda s: (*_decode_idx(s), tuple(str(i) for i in range(10))),
        expected="train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
        "t10k-images-idx3-ubyte[.gz], "
        "t10k-labels-idx1-ubyte[.gz] in DIR or DIR/MNIST/raw",
        torchvision_class="MNIST",
    ),
    "fashion-mnist": _Source(
        find=lambda d: _idx_sources(d, "FashionMNIST"),
        decode=lambda s: (*_decode_idx(s), FASHION_CLASSES),
        expected="the four Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz], ...) in DIR or "
        "DIR/FashionMNIST/raw",
        torchvision_class="FashionMNIST",
    ),
    "cifar10": _Source(
        find=lambda d: _cifar_sources("cifar10", d),
        decode=lambda s: _decode_cifar("cifar10", s),
        expected="DIR/cifar-10-batches-bin/*.bin or "
        "DIR/cifar-10-batches-py/data_batch_1..5, test_batch",
        torchvision_class="CIFAR10",
    ),
    "cifar100": _Source(
        find=lambda d: _cifar_sources("cifar100", d),
        decode=lambda s: _decode_cifar("cifar100", s),
        expected="DIR/cifar-100-binary/{train,test}.bin or DIR/cifar-100-python/{train,test,meta}",
        torchvision_class="CIFAR100",
    ),
}


def _cache_path(
    cache_dir: Path, name: str, location: Path, extra: str, sources: list[Path]
) -> Path:
    """cache_dir/NAME-ENTRY-VERSION.safetensors for a dataset found in `location`.

    ENTRY digests what the cache entry is (dataset, resolved folder, options such as the image
    size); VERSION digests the cache format and the source files (path, size, modification
    time). A change to the sources gives the same ENTRY a new VERSION; `_stale_versions` then
    finds the old one.
    """
    entry = hashlib.sha256(f"{name}|{location.resolve()}|{extra}".encode()).hexdigest()
    version = _digest_sources(CACHE_FORMAT_VERSION, sources)
    return cache_dir / f"{_safe_name(name)}-{entry[:12]}-{version[:16]}.safetensors"


def _safe_name(name: str) -> str:
    """`name` in a file name: characters but letters, digits, - and _ replaced, cut to 60."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:60]


def _digest_sources(prefix: str, sources: list[Path]) -> str:
    """sha256 hex digest of `prefix` and each source file's path, size and modification time."""
    digest = hashlib.sha256(prefix.encode())
    for path in sources:
        stat = path.stat()
        digest.update(f"|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _stale_versions(current: Path) -> list[Path]:
    """The cache files of `current`'s entry (`_cache_path`) other than `current`.

    Files of other datasets, folders or options have another NAME-ENTRY and are not listed.
    """
    entry_prefix = current.name.removesuffix(".safetensors")[:-16]  # "NAME-ENTRY-"
    version_of_entry = re.compile(re.escape(entry_prefix) + r"[0-9a-f]{16}\.safetensors")
    candidates = current.parent.glob(f"{glob.escape(entry_prefix)}*.safetensors")
    return [p for p in candidates if p.name != current.name and version_of_entry.fullmatch(p.name)]


def _format_1_files(cache_dir: Path, name: str, extra: str, sources: list[Path]) -> list[Path]:
    """This dataset's files in `cache_dir` named as by cache format 1, which nothing reads now.

    Format 1 named a file NAME-FINGERPRINT.safetensors: NAME is `_safe_name(name)`, FINGERPRINT
    16 hex digits digesting "1|name|extra" and the sources (`_digest_sources`). A built-in
    dataset's NAME is its name and no other dataset's NAME (imagefolder_...) is the same, so
    every file of exactly that form is listed, whatever sources it was made from. An
    imagefolder:PATH name had characters replaced and may have been cut, so another folder's
    files may share its NAME: only the file that the current sources gave is listed, found by
    its FINGERPRINT, which digests the full name.
    """
    safe_name = _safe_name(name)
    if name in DATASETS:
        format_1_name = re.compile(re.escape(safe_name) + r"-[0-9a-f]{16}\.safetensors")
        candidates = cache_dir.glob(f"{glob.escape(safe_name)}-*.safetensors")
        return [p for p in candidates if format_1_name.fullmatch(p.name)]
    try:
        fingerprint = _digest_sources(f"1|{name}|{extra}", sources)[:16]
    except OSError:  # a source vanished since it was read: a file to clean up next time
        return []
    path = cache_dir / f"{safe_name}-{fingerprint}.safetensors"
    return [path] if path.is_file() else []


def _remove_cache_files(paths: Iterable[Path], kind: str) -> None:
    """Delete `paths`, dataset cache files of the given `kind` ("stale", ...) for the log.

    Never raises: another process may have deleted a file first or still have it open.
    """
    for path in paths:
        try:
            path.unlink()
            log.debug("removed %s dataset cache %s", kind, path)
        except OSError as exc:  # FileNotFoundError, PermissionError (open elsewhere), ...
            log.debug("could not remove %s dataset cache %s: %s", kind, path, exc)


def _load_cached(path: Path, name: str) -> Dataset | None:
    try:
        tensors = load_file(path)
        with open(path, "rb") as handle:  # class names live in the safetensors header
            header_len = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(header_len))
        class_names = tuple(json.loads(header["__metadata__"]["class_names"]))
    except Exception as exc:  # a damaged cache is rebuilt, never fatal
        log.warning("ignoring unreadable cache %s: %s", path, exc)
        return None
    return Dataset(
        name=name,
        train=ImageSet(tensors["train_images"], tensors["train_labels"]),
        test=ImageSet(tensors["test_images"], tensors["test_labels"]),
        class_names=class_names,
    )


def _save_cached(path: Path, dataset: Dataset) -> None:
    tensors = {
        "train_images": dataset.train.images.contiguous(),
        "train_labels": dataset.train.labels.contiguous(),
        "test_images": dataset.test.images.contiguous(),
        "test_labels": dataset.test.labels.contiguous(),
    }
    # Write then rename, so a concurrent worker never reads a half-written cache file.
    with atomic_path(path) as tmp:
        metadata = {"class_names": json.dumps(list(dataset.class_names))}
        save_file(tensors, str(tmp), metadata=metadata)


def _download(source: _Source, name: str, data_dir: Path) -> list[Path] | None:
    """Try torchvision's download; return the source files, or None when offline."""
    import torchvision

    dataset_class = getattr(torchvision.datasets, source.torchvision_class or "", None)
    if dataset_class is None:
        return None
    log.info("%s not found in %s; trying to download it with torchvision", name, data_dir)
    # torchvision opens URLs without a timeout: where packets are dropped instead of refused
    # (firewalls, air-gapped networks) a connect would hang for minutes. The default socket
    # timeout bounds every connect and read; it is restored right after.
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:
        for train in (True, False):
            dataset_class(root=str(data_dir), train=train, download=True)
    except Exception as exc:  # offline, DNS failure, HTTP error: all mean "not available"
        log.info("download of %s failed: %s", name, " ".join(str(exc).split()))
        return None
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return source.find(data_dir)


def load_dataset(
    name: str,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    image_size: int = DEFAULT_IMAGEFOLDER_SIZE,
    download: bool = True,
) -> Dataset:
    """Load a dataset by name (see spec.BUILTIN_DATASETS, or imagefolder:PATH).

    Decoded tensors are cached in `cache_dir`; the cache is reused while the source files are
    unchanged. Raises TunerError saying where the files are expected when they are missing.
    """
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    if name == "digits":
        # Bundled with scikit-learn: decoding takes milliseconds, no cache needed.
        train, test, class_names = _decode_digits()
        return Dataset(name, train, test, class_names)

    spec = DatasetSpec(name=name)
    folder = spec.imagefolder_path
    if folder is not None:
        sources = _imagefolder_sources(folder)
        location, extra = folder, f"size={image_size}"
    elif name in DATASETS:
        source = DATASETS[name]
        sources = source.find(data_dir) if data_dir.is_dir() else None
        if sources is None and download:
            sources = _download(source, name, data_dir)
        if sources is None:
            raise TunerError(
                f"dataset {name!r} not found in {data_dir}: expected "
                f"{source.expected.replace('DIR', str(data_dir))}. Download it on a machine with "
                "internet access and pass --data-dir (or set TUNER_DATA_DIR)"
            )
        location, extra = data_dir, ""
    else:
        raise TunerError(
            f"unknown dataset {name!r}; known: digits, {', '.join(DATASETS)} or imagefolder:PATH"
        )

    cache_path = _cache_path(cache_dir, name, location, extra, sources)
    if cache_path.is_file():
        cached = _load_cached(cache_path, name)
        if cached is not None:
            log.debug("loaded %s from cache %s", name, cache_path)
            return cached

    if folder is not None:
        train, test, class_names = _decode_imagefolder(folder, image_size)
        if test is None:
            train, test = _hold_out(train, 0.2, seed=0)
    else:
        train, test, class_names = DATASETS[name].decode(sources)
    dataset = Dataset(name, train, test, class_names)
    try:
        _save_cached(cache_path, dataset)
    except OSError as exc:  # a read-only cache dir slows the next start but breaks nothing
        log.warning("could not write dataset cache %s: %s", cache_path, exc)
    else:
        _remove_cache_files(_stale_versions(cache_path), "stale")
        _remove_cache_files(_format_1_files(cache_dir, name, extra, sources), "format 1")
    return dataset


def split(dataset: Dataset, spec: DatasetSpec) -> Splits:
    """Seeded train/validation split of the official train split (test stays untouched)."""
    full = dataset.train
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(spec.split_seed))
    val_count = max(1, round(len(full) * spec.val_fraction))
    val_indices, train_indices = order[:val_count], order[val_count:]
    if spec.train_subset:
        train_indices = train_indices[: spec.train_subset]
    if len(train_indices) == 0:
        raise TunerError(
            f"dataset {dataset.name!r} has too few images for a train/validation split"
        )
    train = full.subset(train_indices)
    mean, std = channel_stats(train.images)
    return Splits(train, full.subset(val_indices), dataset.num_classes, mean, std)


def channel_stats(
    images: torch.Tensor, images_per_chunk: int | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and sample std of uint8 images (N, C, H, W), on the 0..1 scale.

    Counts how often each of the 256 values occurs per channel, `images_per_chunk` images at a
    time (None: about STATS_CHUNK_VALUES values), so no float copy of the whole set is made;
    the moments follow from the counts in exact integer arithmetic. A constant channel's std
    is raised to 1e-3 so that normalising never divides by zero.
    """
    if images.dtype != torch.uint8:
        raise ValueError(f"channel_stats needs uint8 images, got {images.dtype}")
    n, channels, height, width = images.shape
    chunk = images_per_chunk or max(1, STATS_CHUNK_VALUES // max(1, channels * height * width))
    counts = torch.zeros(channels, 256, dtype=torch.int64, device=images.device)
    for start in range(0, n, chunk):
        block = images[start : start + chunk]
        for channel in range(channels):
            counts[channel] += torch.bincount(block[:, channel].flatten(), minlength=256)
    values = torch.arange(256, dtype=torch.int64, device=images.device)
    sums = (counts * values).sum(dim=1).tolist()
    sums_of_squares = (counts * values.square()).sum(dim=1).tolist()
    count = n * height * width
    means, stds = [], []
    for total, squares in zip(sums, sums_of_squares, strict=True):
        # sum((x - mean)^2) = (count * sum(x^2) - sum(x)^2) / count, all in Python integers.
        variance = (count * squares - total**2) / (count * (count - 1)) if count > 1 else 0.0
        means.append(total / count / 255 if count else math.nan)
        stds.append(max(math.sqrt(variance) / 255, 1e-3))
    return tuple(means), tuple(stds)
