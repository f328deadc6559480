"""The usual script's data for any study: PIL images per sample, read as its users read them.

- MNIST-format IDX sets (mnist, fashion-mnist): torchvision.datasets.MNIST / FashionMNIST over
  the same IDX files tuner reads.
- `imagefolder:PATH`: torchvision.datasets.ImageFolder, every image opened and resized from
  disk each epoch (what a user's folder script does; tuner decodes once and caches).
- Any other dataset tuner knows (digits, cifar10, cifar100): tuner's decoded uint8 tensors,
  served one PIL image per sample, as torchvision's MNIST and CIFAR classes serve theirs.

Every kind uses the images tuner trains and validates on: the same held-out test split of a
folder without one, the same seeded train/validation split (`split_indices`).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision import datasets, transforms

from tuner.data import MNIST_FILES, load_dataset
from tuner.data.imagefolder import DEFAULT_IMAGEFOLDER_SIZE, GRAYSCALE_MODES
from tuner.data.registry import imagefolder_path
from tuner.data.splits import HOLD_OUT_FRACTION, HOLD_OUT_SEED
from tuner.spec import StudySpec

# The torchvision dataset class the usual script reads each IDX study's dataset with.
TORCHVISION_DATASETS = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}
STATS_IMAGES = 1000  # training images a folder's mean/std is measured on (each one decoded)
Transform = Callable[[Any], Any] | None
Stats = tuple[tuple[float, ...], tuple[float, ...]]


@dataclass(frozen=True)
class RecipeData:
    """What the usual script trains on: datasets built per trial with the trial's transforms."""

    pool: Callable[[Transform], Dataset]  # the training split tuner splits into train and val
    test: Callable[[Transform], Dataset]  # the test split (only a retrain touches it)
    split: tuple[list[int], list[int]]  # train and validation indices into `pool`
    input_shape: tuple[int, int, int]  # (C, H, W) as the model sees it
    num_classes: int
    stats: Stats  # per channel mean and std of the training images, on the 0..1 scale


def split_indices(spec: StudySpec, total: int) -> tuple[list[int], list[int]]:
    """The train and validation indices `tuner.data.split` uses for the study's split."""
    order = torch.randperm(total, generator=torch.Generator().manual_seed(spec.dataset.split_seed))
    val_count = max(1, round(total * spec.dataset.val_fraction))
    train = order[val_count:]
    if spec.dataset.train_subset:
        train = train[: spec.dataset.train_subset]
    return train.tolist(), order[:val_count].tolist()


def hold_out_indices(total: int) -> tuple[list[int], list[int]]:
    """(train, test) indices of `tuner.data.splits.hold_out`: a folder without a test split."""
    order = torch.randperm(total, generator=torch.Generator().manual_seed(HOLD_OUT_SEED))
    cut = round(total * HOLD_OUT_FRACTION)
    return order[cut:].tolist(), order[:cut].tolist()


def torchvision_root(dataset_class: type, dataset_dir: Path, into: Path) -> Path:
    """A root folder torchvision's MNIST-style classes read: ROOT/<Class>/raw/ with IDX files."""
    raw = into / dataset_class.__name__ / "raw"
    raw.mkdir(parents=True)
    for stem in (stem for pair in MNIST_FILES.values() for stem in pair):
        plain, packed = dataset_dir / stem, dataset_dir / f"{stem}.gz"
        data = plain.read_bytes() if plain.is_file() else gzip.decompress(packed.read_bytes())
        (raw / stem).write_bytes(data)
    return into


class TensorImages(Dataset):
    """uint8 (N, C, H, W) images and labels, one PIL image per sample (torchvision's MNIST
    and CIFAR classes do the same with theirs)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        array = self.images[index].numpy()
        image = Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))
        return (self.transform(image) if self.transform else image), int(self.labels[index])


def tensor_stats(images: torch.Tensor) -> Stats:
    """Per channel mean and std of uint8 (N, C, H, W) images, on the 0..1 scale."""
    scaled = images.float() / 255
    return (
        tuple(scaled.mean(dim=(0, 2, 3)).tolist()),
        tuple(scaled.std(dim=(0, 2, 3)).tolist()),
    )


def _idx_data(spec: StudySpec, dataset_dir: Path, into: Path) -> RecipeData:
    dataset_class = TORCHVISION_DATASETS[spec.dataset.name]
    root = str(torchvision_root(dataset_class, dataset_dir, into))
    images = dataset_class(root, train=True).data
    split = split_indices(spec, len(images))
    return RecipeData(
        pool=lambda transform: dataset_class(root, train=True, transform=transform),
        test=lambda transform: dataset_class(root, train=False, transform=transform),
        split=split,
        input_shape=(1, *images.shape[1:]),
        num_classes=len(dataset_class.classes),
        stats=tensor_stats(images[split[0]].unsqueeze(1)),
    )


def _decoded_data(spec: StudySpec, dataset_dir: Path, into: Path) -> RecipeData:
    loaded = load_dataset(spec.dataset.name, dataset_dir, into / "cache", download=False)
    train, test = loaded.train, loaded.test
    split = split_indices(spec, len(train))
    return RecipeData(
        pool=lambda transform: TensorImages(train.images, train.labels, transform),
        test=lambda transform: TensorImages(test.images, test.labels, transform),
        split=split,
        input_shape=loaded.input_shape,
        num_classes=loaded.num_classes,
        stats=tensor_stats(train.images[split[0]]),
    )


def _folder_data(spec: StudySpec, folder: Path) -> RecipeData:
    """ImageFolder as a user's script opens it: grey when every class's first image is grey
    (tuner's rule, looked up cheaply), resized to tuner's folder size; a folder without
    train/ and test/ holds out tuner's test split."""
    has_splits = (folder / "train").is_dir() and (folder / "test").is_dir()
    train_root, test_root = (folder / "train", folder / "test") if has_splits else (folder, folder)
    probe = datasets.ImageFolder(str(train_root))
    firsts = {label: path for path, label in reversed(probe.samples)}
    grey = all(Image.open(path).mode in GRAYSCALE_MODES for path in firsts.values())
    mode, size = ("L" if grey else "RGB"), DEFAULT_IMAGEFOLDER_SIZE
    resize = transforms.Resize((size, size))

    def loader(path: str) -> Image.Image:
        with Image.open(path) as image:
            return resize(image.convert(mode))

    if has_splits:
        pool_indices = list(range(len(probe)))
        test_indices = list(range(len(datasets.ImageFolder(str(test_root)))))
    else:
        pool_indices, test_indices = hold_out_indices(len(probe))

    def pool(transform: Transform) -> Dataset:
        return Subset(datasets.ImageFolder(str(train_root), transform, loader=loader), pool_indices)

    def test(transform: Transform) -> Dataset:
        return Subset(datasets.ImageFolder(str(test_root), transform, loader=loader), test_indices)

    split = split_indices(spec, len(pool_indices))
    sample = pool(transforms.PILToTensor())
    images = torch.stack([sample[i][0] for i in split[0][:STATS_IMAGES]])
    return RecipeData(
        pool=pool,
        test=test,
        split=split,
        input_shape=(1 if grey else 3, size, size),
        num_classes=len(probe.classes),
        stats=tensor_stats(images),
    )


def recipe_data(spec: StudySpec, dataset_dir: Path, into: Path) -> RecipeData:
    """The study's dataset as the usual script reads it; `into` is a scratch folder."""
    folder = imagefolder_path(spec.dataset.name)
    if folder is not None:
        return _folder_data(spec, folder.resolve())
    if spec.dataset.name in TORCHVISION_DATASETS:
        return _idx_data(spec, dataset_dir, into)
    return _decoded_data(spec, dataset_dir, into)
