"""The decoded-tensor cache: reused while the sources are unchanged, rebuilt when they change
or when the cache file is damaged."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from datasets import idx_bytes, write_idx_dataset, write_imagefolder
from safetensors.torch import save_file

from tuner.data import Dataset, idx, load_dataset
from tuner.data.imagefolder import find_images


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the IDX decodes: one entry per call of the real decoder."""
    calls: list[int] = []
    real: Callable = idx.decode_idx

    def counting(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(idx, "decode_idx", counting)
    return calls


def load(source: Path, cache: Path) -> Dataset:
    return load_dataset("mnist", source, cache, download=False)


def cache_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.safetensors"))


def test_unchanged_sources_reuse_the_cache(tmp_path: Path, decodes: list[int]) -> None:
    source, cache = write_idx_dataset(tmp_path / "mnist"), tmp_path / "cache"
    first = load(source, cache)
    assert len(decodes) == 1 and len(cache_files(cache)) == 1

    second = load(source, cache)
    assert len(decodes) == 1, "the cache should have been read instead of decoding"
    assert torch.equal(second.train.images, first.train.images)
    assert torch.equal(second.test.labels, first.test.labels)
    assert second.class_names == first.class_names


def change_train_labels(source: Path) -> torch.Tensor:
    """Rewrite the train labels of the IDX dataset in `source`; returns the new labels."""
    labels_file = source / "train-labels-idx1-ubyte.gz"
    old_labels = idx.read_idx(labels_file)
    new_labels = (old_labels + 1) % 10  # same size, different content
    labels_file.write_bytes(gzip.compress(idx_bytes(new_labels)))
    stat = labels_file.stat()  # a different mtime even where the clock is coarse
    os.utime(labels_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    return torch.from_numpy(new_labels).long()


def test_a_changed_source_file_rebuilds_the_cache(tmp_path: Path, decodes: list[int]) -> None:
    source, cache = write_idx_dataset(tmp_path / "mnist"), tmp_path / "cache"
    load(source, cache)
    (old_cache,) = cache_files(cache)

    new_labels = change_train_labels(source)
    after = load(source, cache)
    assert len(decodes) == 2
    assert torch.equal(after.train.labels, new_labels)
    (new_cache,) = cache_files(cache)  # the stale file is gone, not kept forever
    assert new_cache != old_cache

    load(source, cache)
    assert len(decodes) == 2, "the rebuilt cache should be reused"


def test_a_rebuild_deletes_only_the_stale_file_of_the_same_dataset_and_folder(
    tmp_path: Path,
) -> None:
    source, other_source = write_idx_dataset(tmp_path / "a"), write_idx_dataset(tmp_path / "b")
    cache = tmp_path / "cache"
    load(source, cache)
    (mnist_old,) = cache_files(cache)
    load(other_source, cache)  # the same dataset in another folder
    load_dataset("fashion-mnist", source, cache, download=False)  # the same files, another name
    photos = write_imagefolder(tmp_path / "photos", size=4)
    load_dataset(f"imagefolder:{photos}", cache_dir=cache, image_size=4)
    others = set(cache_files(cache)) - {mnist_old}
    assert len(others) == 3

    change_train_labels(source)
    load(source, cache)
    assert mnist_old not in cache_files(cache)
    assert others < set(cache_files(cache)), "another dataset's cache file was deleted"
    assert len(cache_files(cache)) == 4

    # fashion-mnist read the changed file too: its own next load replaces its stale file.
    load_dataset("fashion-mnist", source, cache, download=False)
    assert len(cache_files(cache)) == 4


def test_files_named_as_by_cache_format_1_are_deleted_for_the_same_dataset_only(
    tmp_path: Path,
) -> None:
    source, cache = write_idx_dataset(tmp_path / "mnist"), tmp_path / "cache"
    cache.mkdir()
    # Format 1 named a file NAME-FINGERPRINT.safetensors, FINGERPRINT 16 hex digits: all of
    # mnist's go, whichever sources they were made from.
    format_1 = [
        cache / "mnist-0123456789abcdef.safetensors",
        cache / "mnist-fedcba9876543210.safetensors",
    ]
    others = [
        cache / "fashion-mnist-0123456789abcdef.safetensors",  # another dataset
        cache / "cifar10-0123456789abcdef.safetensors",
        cache / "my-mnist-0123456789abcdef.safetensors",  # not tuner's
        cache / "mnist-0123456789ABCDEF.safetensors",
        cache / "mnist-0123456789abcde.safetensors",
        cache / "mnist-0123456789abcdef0.safetensors",
        cache / "mnist-0123456789abcdef.safetensors.bak",
        cache / "mnist-notes.txt",
    ]
    for path in format_1 + others:
        path.write_bytes(b"not read")
    load(source, cache)
    assert not any(path.exists() for path in format_1)
    assert all(path.exists() for path in others)


def format_1_file(cache: Path, folder: Path, image_size: int) -> Path:
    """Where cache format 1 kept imagefolder:FOLDER: NAME-FINGERPRINT.safetensors."""
    name = f"imagefolder:{folder}"
    digest = hashlib.sha256(f"1|{name}|size={image_size}".encode())
    for path in find_images(folder):
        stat = path.stat()
        digest.update(f"|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    safe_name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:60]
    return cache / f"{safe_name}-{digest.hexdigest()[:16]}.safetensors"


def test_an_imagefolder_deletes_only_its_own_format_1_file(tmp_path: Path) -> None:
    # NAME was cut to 60 characters: these two folders' format 1 files share it.
    parent = tmp_path / ("long" * 15)
    ours, theirs = (write_imagefolder(parent / f"photos_{x}", size=4) for x in "ab")
    cache = tmp_path / "cache"
    cache.mkdir()
    own, their = format_1_file(cache, ours, 4), format_1_file(cache, theirs, 4)
    assert own.name[:61] == their.name[:61] and own != their  # "NAME-", then the fingerprints
    unknown = cache / f"{own.name[:61]}0123456789abcdef.safetensors"  # older sources, or theirs
    for path in (own, their, unknown):
        path.write_bytes(b"not read")

    load_dataset(f"imagefolder:{ours}", cache_dir=cache, image_size=4)
    assert not own.exists()
    assert their.exists() and unknown.exists()


@pytest.mark.parametrize("error", [FileNotFoundError, PermissionError])
def test_a_stale_file_that_cannot_be_deleted_does_not_fail_the_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, error: type
) -> None:
    source, cache = write_idx_dataset(tmp_path / "mnist"), tmp_path / "cache"
    load(source, cache)
    (old_cache,) = cache_files(cache)

    def refuse(path: Path, missing_ok: bool = False) -> None:
        raise error(13, "deleted by another process, or still open there", str(path))

    monkeypatch.setattr(Path, "unlink", refuse)
    new_labels = change_train_labels(source)
    with caplog.at_level(logging.DEBUG, logger="tuner.data"):
        assert torch.equal(load(source, cache).train.labels, new_labels)
    assert f"could not remove stale dataset cache {old_cache}" in caplog.text


def test_a_corrupt_cache_file_is_ignored_and_rebuilt(tmp_path: Path, decodes: list[int]) -> None:
    source, cache = write_idx_dataset(tmp_path / "mnist"), tmp_path / "cache"
    good = load(source, cache)
    (cache_file,) = cache_files(cache)
    cache_file.write_bytes(cache_file.read_bytes()[:100])  # truncated, as by a full disk

    rebuilt = load(source, cache)
    assert len(decodes) == 2
    assert torch.equal(rebuilt.train.images, good.train.images)

    load(source, cache)
    assert len(decodes) == 2, "the rewritten cache file should be valid again"


def test_a_cache_file_changed_in_place_is_rebuilt_with_a_warning(
    tmp_path: Path, decodes: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    """Every train pixel set to 255, the safetensors header intact: only the checksum tells."""
    source, cache = write_idx_dataset(tmp_path / "mnist"), tmp_path / "cache"
    good = load(source, cache)
    (cache_file,) = cache_files(cache)
    data = bytearray(cache_file.read_bytes())
    header_size = int.from_bytes(data[:8], "little")
    start, end = json.loads(data[8 : 8 + header_size])["train_images"]["data_offsets"]
    offset = 8 + header_size
    data[offset + start : offset + end] = b"\xff" * (end - start)
    cache_file.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="tuner.data"):
        rebuilt = load(source, cache)
    assert len(decodes) == 2, "the changed cache file should have been rebuilt"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "SHA-256 does not match" in warnings[0], warnings
    assert torch.equal(rebuilt.train.images, good.train.images)
    load(source, cache)
    assert len(decodes) == 2, "the rewritten cache file should be valid again"


def good_tensors(dataset: Dataset) -> dict[str, torch.Tensor]:
    return {
        "train_images": dataset.train.images,
        "train_labels": dataset.train.labels,
        "test_images": dataset.test.images,
        "test_labels": dataset.test.labels,
    }


def without(tensors: dict, key: str) -> dict:
    return {k: v for k, v in tensors.items() if k != key}


def replaced(tensors: dict, key: str, value: torch.Tensor) -> dict:
    return {**tensors, key: value}


# Cache files that are valid safetensors but wrong inside: (tensors, class names) from the good
# ones. 40 train and 10 test images of 10 classes (write_idx_dataset's defaults).
WRONG_INSIDE = {
    "missing key": (lambda t: without(t, "test_labels"), None),
    "extra key": (lambda t: replaced(t, "weights", torch.zeros(3)), None),
    "labels not int64": (lambda t: replaced(t, "train_labels", t["train_labels"].int()), None),
    "images not uint8": (lambda t: replaced(t, "test_images", t["test_images"].float()), None),
    "images not 4-d": (lambda t: replaced(t, "train_images", t["train_images"][:, 0]), None),
    "labels not 1-d": (lambda t: replaced(t, "test_labels", t["test_labels"][:, None]), None),
    "train and test shapes differ": (
        lambda t: replaced(t, "test_images", t["test_images"][:, :, :14]),
        None,
    ),
    "10 labels for 40 images": (
        lambda t: replaced(t, "train_labels", t["train_labels"][:10]),
        None,
    ),
    "label 99 of 10 classes": (
        lambda t: replaced(t, "train_labels", torch.full((40,), 99, dtype=torch.int64)),
        None,
    ),
    "negative label": (
        lambda t: replaced(t, "test_labels", torch.full((10,), -1, dtype=torch.int64)),
        None,
    ),
    "3 class names for 10 classes": (lambda t: t, json.dumps(["a", "b", "c"])),
    "class names not a list": (lambda t: t, json.dumps({"a": 1})),
    "class names not json": (lambda t: t, "[not json"),
    "no class names": (lambda t: t, ""),
}


@pytest.mark.parametrize(("change", "class_names"), WRONG_INSIDE.values(), ids=WRONG_INSIDE)
def test_a_cache_file_wrong_inside_is_rebuilt_with_a_warning(
    tmp_path: Path,
    decodes: list[int],
    caplog: pytest.LogCaptureFixture,
    change: Callable,
    class_names: str | None,
) -> None:
    source, cache = write_idx_dataset(tmp_path / "mnist"), tmp_path / "cache"
    good = load(source, cache)
    (cache_file,) = cache_files(cache)
    names = json.dumps(list(good.class_names)) if class_names is None else class_names
    metadata = {"class_names": names} if names else None
    tensors = {key: tensor.contiguous() for key, tensor in change(good_tensors(good)).items()}
    save_file(tensors, str(cache_file), metadata=metadata)

    with caplog.at_level(logging.WARNING, logger="tuner.data"):
        rebuilt = load(source, cache)
    assert len(decodes) == 2, "the wrong cache file should have been rebuilt from the sources"
    assert "ignoring" in caplog.text and f"cache {cache_file}" in caplog.text
    for key, tensor in good_tensors(rebuilt).items():
        assert torch.equal(tensor, good_tensors(good)[key]), key
    assert rebuilt.class_names == good.class_names

    load(source, cache)
    assert len(decodes) == 2, "the rewritten cache file should be valid again"


def test_a_cached_imagefolder_checks_labels_against_its_own_class_names(tmp_path: Path) -> None:
    photos = write_imagefolder(tmp_path / "photos", classes=("a", "b", "c"), size=4)
    name, cache = f"imagefolder:{photos}", tmp_path / "cache"
    good = load_dataset(name, cache_dir=cache, image_size=4)
    (cache_file,) = cache_files(cache)
    labels = good.train.labels.clone()
    labels[0] = 3  # a fourth class that the three class names do not have
    tensors = replaced(good_tensors(good), "train_labels", labels)
    save_file(tensors, str(cache_file), metadata={"class_names": json.dumps(["a", "b", "c"])})

    rebuilt = load_dataset(name, cache_dir=cache, image_size=4)
    assert torch.equal(rebuilt.train.labels, good.train.labels)
