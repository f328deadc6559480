"""Development datasets: the sets the portfolio is built and checked on, in the formats users bring.

    python bench/dev_datasets.py                  # write every derived set, print where
    python bench/dev_datasets.py --out DIR        # default: ~/.cache/tuner/dev-datasets

Each entry is a dataset name plus the --data-dir tuner reads it with, unchanged: the built-in
`digits`, the shared real IDX sets, and sets derived from them deterministically (fixed seeds,
so a rerun writes the same bytes): folders of RGB PNGs (`imagefolder:PATH`, which tuner resizes
to 32 px) and IDX files in the MNIST layout. `HELD_OUT` is never used to build the portfolio;
it only checks it (bench/RESULTS.md, "Portfolio, session 9").
"""

from __future__ import annotations

import argparse
import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"
DEFAULT_OUT = Path.home() / ".cache" / "tuner" / "dev-datasets"
FASHION_CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "boot")  # fmt: skip


@dataclass(frozen=True)
class DevDataset:
    """One development dataset: how tuner names it and where its files are."""

    key: str  # short name in the evaluation records
    name: str  # the study file's [dataset].name
    data_dir: Path | None  # --data-dir (None: built in or an image folder)
    what: str  # one line for RESULTS.md


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """One gzip-compressed IDX file (as bench/fetch_fashion_mnist.py writes them)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.GzipFile(path, "wb", mtime=0) as file:  # mtime 0: the same bytes on every rerun
        file.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def shared_split(folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(SHARED / folder / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(SHARED / folder / f"{prefix}-labels-idx1-ubyte.gz")
    return images, labels


def colourise(grey: np.ndarray, size: int, rng: np.random.Generator, angle: float) -> Image.Image:
    """A 28x28 grey image as a `size`-px RGB one: random ink and background colours, rotated."""
    image = Image.fromarray(grey).rotate(angle, resample=Image.BILINEAR)
    image = image.resize((size, size), Image.BILINEAR)
    alpha = np.asarray(image, dtype=np.float32)[..., None] / 255
    # A bright ink on a dark background, both of random colour: the class stays in the shape
    # (random inversions too made 1,000-image subsets unlearnable in 3 epochs).
    ink = rng.integers(110, 256, 3).astype(np.float32)
    background = rng.integers(0, 70, 3).astype(np.float32)
    noise = rng.normal(0, 8, (size, size, 3))
    rgb = alpha * ink + (1 - alpha) * background + noise
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8), mode="RGB")


def write_folder(
    root: Path, images: np.ndarray, labels: np.ndarray, names: tuple[str, ...], size: int,
    seed: int, max_angle: float,
) -> None:  # fmt: skip
    """ROOT/CLASS/NNNNN.png, colourised; classes by `names` (label i -> names[i])."""
    rng = np.random.default_rng(seed)
    for index, (grey, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        angle = float(rng.uniform(-max_angle, max_angle))
        colourise(grey, size, rng, angle).save(folder / f"{index:05d}.png", optimize=False)


def pick_classes(
    images: np.ndarray, labels: np.ndarray, classes: list[int], per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` images of each class in `classes`, relabelled 0..len(classes)-1."""
    rng = np.random.default_rng(seed)
    keep = np.sort(
        np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes])
    )
    relabel = {c: i for i, c in enumerate(classes)}
    return images[keep], np.array([relabel[int(label)] for label in labels[keep]], dtype=np.uint8)


def fashion_colour(out: Path) -> None:
    """6 Fashion-MNIST classes, 600 train images each, RGB PNGs at 36 px, rotated up to 15 deg."""
    images, labels = shared_split("fashion-mnist", "train")
    classes = [0, 1, 2, 5, 7, 8]
    images, labels = pick_classes(images, labels, classes, 600, seed=1)
    names = tuple(FASHION_CLASSES[c] for c in classes)
    write_folder(out, images, labels, names, size=36, seed=2, max_angle=15)


def mnist_rot_noisy(out: Path) -> None:
    """mnist-10k rotated up to 60 degrees, 20% of the training labels replaced at random; IDX."""
    rng = np.random.default_rng(3)
    out.mkdir(parents=True, exist_ok=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = shared_split("mnist-10k", split)
        rotated = np.stack([
            np.asarray(Image.fromarray(image).rotate(float(rng.uniform(-60, 60)), Image.BILINEAR))
            for image in images
        ])  # fmt: skip
        labels = labels.copy()
        if split == "train":
            noisy = rng.random(len(labels)) < 0.2
            labels[noisy] = rng.integers(0, 10, int(noisy.sum()))
        write_idx(out / f"{prefix}-images-idx3-ubyte.gz", rotated)
        write_idx(out / f"{prefix}-labels-idx1-ubyte.gz", labels)


def digits_colour_heldout(out: Path) -> None:
    """HELD OUT: mnist-10k's 2,000 test digits as RGB PNGs at 48 px, rotated up to 30 degrees
    (a small folder of colour images; tuner holds 20% out as its test split)."""
    images, labels = shared_split("mnist-10k", "test")
    write_folder(out, images, labels, tuple(f"digit{i}" for i in range(10)), 48, 4, 30)


BUILDERS = {
    "fashion-colour": fashion_colour,
    "mnist-rot-noisy": mnist_rot_noisy,
    "digits-colour-heldout": digits_colour_heldout,
}


def dev_datasets(out: Path = DEFAULT_OUT) -> dict[str, DevDataset]:
    """Every development dataset by key (the derived ones under `out`)."""
    sets = [
        DevDataset("digits", "digits", None, "scikit-learn digits, 8x8 grey, 1,797 images"),
        DevDataset("mnist-10k", "mnist", SHARED / "mnist-10k", "MNIST subset, 8,000 train, IDX"),
        DevDataset("fashion", "fashion-mnist", SHARED / "fashion-mnist", "Fashion-MNIST, IDX"),
        DevDataset(
            "fashion-colour",
            f"imagefolder:{out / 'fashion-colour'}",
            None,
            "6 Fashion-MNIST classes x 600, RGB PNG 36 px (read at 32), coloured, rotated +-15",
        ),
        DevDataset(
            "mnist-rot-noisy",
            "mnist",
            out / "mnist-rot-noisy",
            "mnist-10k rotated +-60 deg, 20% train labels random, IDX",
        ),
        DevDataset(
            "digits-colour-heldout",
            f"imagefolder:{out / 'digits-colour-heldout'}",
            None,
            "held out: mnist-10k test digits, 2,000 RGB PNG 48 px (read at 32), rotated +-30",
        ),
    ]
    return {dataset.key: dataset for dataset in sets}


HELD_OUT = "digits-colour-heldout"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    for key, build in BUILDERS.items():
        target = args.out / key
        if target.exists():
            print(f"{target}: exists, kept (delete it to rebuild)")
            continue
        partial = args.out / f"{key}.partial"
        build(partial)
        partial.rename(target)
        print(f"{target}: written")
    for dataset in dev_datasets(args.out).values():
        print(f"{dataset.key:24} {dataset.name}  --data-dir {dataset.data_dir or '-'}")


if __name__ == "__main__":
    main()
