"""The decoded-tensor cache: one safetensors file per dataset entry, checked when read.

A file is named NAME-ENTRY-VERSION.safetensors: ENTRY digests what the entry is (dataset,
resolved folder, options such as the image size), VERSION the cache format and the source
files (path, size, modification time). Changed sources give the same ENTRY a new VERSION and
the old file is deleted when the new one is written; so are files named as by cache format 1.
A file is trusted on nothing: its tensors' names, dtypes, shapes, counts, label range and
class names are checked on every read, and so is a SHA-256 of its tensors and class names
written with it (a file changed in place, its header intact, fails only that check); a file that
fails is ignored with one warning and rewritten from its sources.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tuner.data.sets import Dataset, ImageSet
from tuner.files import atomic_path

log = logging.getLogger(__name__)

# 2: entry and version in the file name; imagefolder reads LA, P and 16-bit images correctly.
# 3: MNIST and Fashion-MNIST files are checked to be what their name says (a format-2 file may
#    hold one under the other's name). Files named as by format 1 are deleted
#    (`_format_1_files`); a format-2 file is an older version of its entry.
# 4: the metadata holds a SHA-256 of the contents (`contents_digest`), checked on every read.
CACHE_FORMAT_VERSION = "4"
TENSOR_NAMES = ("train_images", "train_labels", "test_images", "test_labels")


def cache_path(cache_dir: Path, name: str, location: Path, extra: str, sources: list[Path]) -> Path:
    """cache_dir/NAME-ENTRY-VERSION.safetensors for a dataset found in `location`."""
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


def read_cached(path: Path, name: str, num_classes: int | None) -> Dataset | None:
    """The dataset cached in `path`, or None (with a warning) when the file is unusable.

    `num_classes`: how many classes the dataset has, None where only the file can say
    (imagefolder). A file that is unreadable or wrong inside is ignored, never fatal.
    """
    try:
        with safe_open(path, framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
            metadata = handle.metadata() or {}
    except Exception as exc:  # a damaged file can fail in many ways
        log.warning("ignoring unreadable cache %s: %s", path, " ".join(str(exc).split()))
        return None
    class_names = _class_names(metadata.get("class_names"))
    problem = _contents_problem(tensors, class_names, num_classes)
    if problem is None and metadata.get("sha256") != contents_digest(tensors, class_names):
        problem = "its SHA-256 does not match: changed after it was written"
    if problem is not None or class_names is None:
        log.warning("ignoring cache %s with wrong contents (%s); rebuilding it", path, problem)
        return None
    return Dataset(
        name=name,
        train=ImageSet(tensors["train_images"], tensors["train_labels"]),
        test=ImageSet(tensors["test_images"], tensors["test_labels"]),
        class_names=class_names,
    )


def contents_digest(tensors: dict[str, torch.Tensor], class_names: Iterable[str] | None) -> str:
    """SHA-256 hex digest of the tensors (name, dtype, shape, bytes) and the class names."""
    digest = hashlib.sha256(json.dumps(list(class_names or ())).encode())
    for key in sorted(tensors):
        tensor = tensors[key].contiguous()
        digest.update(f"|{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy())
    return digest.hexdigest()


def _class_names(text: str | None) -> tuple[str, ...] | None:
    """The class names stored in the file's metadata: a JSON list of strings, else None."""
    try:
        names = json.loads(text) if text is not None else None
    except ValueError:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None
    return tuple(names)


def _contents_problem(
    tensors: dict[str, torch.Tensor],
    class_names: tuple[str, ...] | None,
    num_classes: int | None,
) -> str | None:
    """What makes these tensors and class names not a dataset, in a few words; None if nothing."""
    if sorted(tensors) != sorted(TENSOR_NAMES):
        return f"tensors {', '.join(sorted(tensors)) or 'none'}, expected {', '.join(TENSOR_NAMES)}"
    if class_names is None:
        return "no list of class names"
    classes = len(class_names)
    if classes < 2 or (num_classes is not None and classes != num_classes):
        return f"{classes} class names, expected {num_classes or 'at least 2'}"
    for part in ("train", "test"):
        images, labels = tensors[f"{part}_images"], tensors[f"{part}_labels"]
        if images.dtype != torch.uint8 or images.dim() != 4:
            found = f"{images.dtype} {tuple(images.shape)}"
            return f"{part}_images {found}, expected uint8 (N, C, H, W)"
        if labels.dtype != torch.int64 or labels.dim() != 1:
            return f"{part}_labels {labels.dtype} {tuple(labels.shape)}, expected int64 (N,)"
        if len(images) != len(labels):
            return f"{len(images)} {part} images but {len(labels)} labels"
        low, high = (int(labels.min()), int(labels.max())) if len(labels) else (0, 0)
        if low < 0 or high >= classes:
            return f"{part} label {low if low < 0 else high} outside 0..{classes - 1}"
    train_shape, test_shape = (tuple(tensors[f"{p}_images"].shape[1:]) for p in ("train", "test"))
    if train_shape != test_shape:
        return f"train images {train_shape} but test images {test_shape}"
    return None


def write_cached(path: Path, dataset: Dataset) -> None:
    """Write `dataset` to `path`; OSError when the cache folder cannot be written."""
    tensors = {
        "train_images": dataset.train.images.contiguous(),
        "train_labels": dataset.train.labels.contiguous(),
        "test_images": dataset.test.images.contiguous(),
        "test_labels": dataset.test.labels.contiguous(),
    }
    # Write then rename, so a concurrent worker never reads a half-written cache file.
    with atomic_path(path) as tmp:
        metadata = {
            "class_names": json.dumps(list(dataset.class_names)),
            "sha256": contents_digest(tensors, dataset.class_names),
        }
        save_file(tensors, str(tmp), metadata=metadata)


def remove_outdated(
    current: Path, name: str, extra: str, sources: list[Path], builtin: bool
) -> None:
    """Delete the files that `current` replaces: older versions and format-1 files of its entry.

    `builtin`: `name` is a built-in dataset's (not imagefolder:PATH).
    """
    _remove_cache_files(_stale_versions(current), "stale")
    _remove_cache_files(_format_1_files(current.parent, name, extra, sources, builtin), "format 1")


def _stale_versions(current: Path) -> list[Path]:
    """The cache files of `current`'s entry (`cache_path`) other than `current`.

    Files of other datasets, folders or options have another NAME-ENTRY and are not listed.
    """
    entry_prefix = current.name.removesuffix(".safetensors")[:-16]  # "NAME-ENTRY-"
    version_of_entry = re.compile(re.escape(entry_prefix) + r"[0-9a-f]{16}\.safetensors")
    candidates = current.parent.glob(f"{glob.escape(entry_prefix)}*.safetensors")
    return [p for p in candidates if p.name != current.name and version_of_entry.fullmatch(p.name)]


def _format_1_files(
    cache_dir: Path, name: str, extra: str, sources: list[Path], builtin: bool
) -> list[Path]:
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
    if builtin:
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
