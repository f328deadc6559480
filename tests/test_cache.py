"""The decoded-tensor cache: reused while the sources are unchanged, rebuilt when they change
or when the cache file is damaged."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from datasets import idx_bytes, write_idx_dataset

from tuner import data
from tuner.data import load_dataset


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the IDX decodes: one entry per call of the real decoder."""
    calls: list[int] = []
    real: Callable = data._decode_idx

    def counting(sources):
        calls.append(1)
        return real(sources)

    monkeypatch.setattr(data, "_decode_idx", counting)
    return calls


def load(source: Path, cache: Path) -> data.Dataset:
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


def test_a_changed_source_file_rebuilds_the_cache(tmp_path: Path, decodes: list[int]) -> None:
    source, cache = write_idx_dataset(tmp_path / "mnist"), tmp_path / "cache"
    before = load(source, cache)
    old_cache = cache_files(cache)

    labels_file = source / "train-labels-idx1-ubyte.gz"
    new_labels = (before.train.labels.numpy() + 1) % 10  # same size, different content
    labels_file.write_bytes(gzip.compress(idx_bytes(new_labels)))
    stat = labels_file.stat()  # a different mtime even where the clock is coarse
    os.utime(labels_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    after = load(source, cache)
    assert len(decodes) == 2
    assert torch.equal(after.train.labels, torch.from_numpy(new_labels).long())
    assert len(cache_files(cache)) == 2 and cache_files(cache) != old_cache

    load(source, cache)
    assert len(decodes) == 2, "the rebuilt cache should be reused"


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
