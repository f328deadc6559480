"""The datasets by name: where each one's files are, how they decode, and the name checks.

The one list of dataset names: the study file's checks (`spec`), `load_dataset` and its
messages all read it here. A new dataset is one entry in DATASETS.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuner.data.identity import Signature

if TYPE_CHECKING:
    from tuner.data.sets import ImageSet

    Decoded = tuple[ImageSet, ImageSet, tuple[str, ...]]  # train, test, class names

# The format modules (and torch with them) are imported when a dataset is loaded, not here:
# `spec` checks names through this module, and `tuner --help` should not wait for torch.

IMAGEFOLDER_PREFIX = "imagefolder:"


@dataclass(frozen=True)
class Source:
    """How to find a dataset's files and decode them."""

    find: Callable[[Path], list[Path] | None]  # source files in a data dir, or None when absent
    decode: Callable[[list[Path]], Decoded]  # the files `find` listed -> tensors
    expected: str  # where the files are expected, for the error message (DIR: the data dir)
    num_classes: int
    torchvision_class: str | None = None  # used to download when the files are absent
    cached: bool = True  # False: decoding is quicker than reading a cache file


DIGIT_CLASSES = tuple(str(i) for i in range(10))
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

# What the IDX datasets' files look like (`identity`), so that one is not taken for the other.
# Published MD5s: of the .gz files as torchvision downloads them, and for Fashion-MNIST also of
# their contents (../shared/datasets/README.md: Debian recompressed the .gz files).
IDX_SIGNATURES = {
    "mnist": Signature(
        title="MNIST digits",
        image_shape=(28, 28),
        pixel_mean=0.131,
        zero_fraction=0.81,
        published_md5={
            "f68b3c2dcbeaaa9fbdd348bbdeb94873": "train-images-idx3-ubyte.gz",
            "d53e105ee54ea40749a09fcbcd1e9432": "train-labels-idx1-ubyte.gz",
            "9fb629c4189551a2d022fa330f9573f3": "t10k-images-idx3-ubyte.gz",
            "ec29112dd5afa0611ce80d1b7f02629c": "t10k-labels-idx1-ubyte.gz",
        },
    ),
    "fashion-mnist": Signature(
        title="Fashion-MNIST",
        image_shape=(28, 28),
        pixel_mean=0.286,
        zero_fraction=0.50,
        published_md5={
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d": "train-images-idx3-ubyte.gz",
            "25c81989df183df01b3e8a0aad5dffbe": "train-labels-idx1-ubyte.gz",
            "bef4ecab320f06d8554ea6380940ec79": "t10k-images-idx3-ubyte.gz",
            "bb300cfdad3c16e7a12a480ee83cd310": "t10k-labels-idx1-ubyte.gz",
            "f4a8712d7a061bf5bd6d2ca38dc4d50a": "train-images-idx3-ubyte",
            "9018921c3c673c538a1fc5bad174d6f9": "train-labels-idx1-ubyte",
            "8181f5470baa50b63fa0f6fddb340f0a": "t10k-images-idx3-ubyte",
            "15d484375f8d13e6eb1aabb0c3f46965": "t10k-labels-idx1-ubyte",
        },
    ),
}


def _idx_source(name: str, torchvision_class: str, class_names: tuple[str, ...]) -> Source:
    def find(data_dir: Path) -> list[Path] | None:
        from tuner.data import idx

        return idx.find_idx_files(data_dir, torchvision_class)

    def decode(sources: list[Path]) -> Decoded:
        from tuner.data import idx

        return (*idx.decode_idx(sources, name, len(class_names), IDX_SIGNATURES), class_names)

    return Source(
        find=find,
        decode=decode,
        expected=f"the four {IDX_SIGNATURES[name].title} IDX files (train-images-idx3-ubyte[.gz], "
        "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) "
        f"in DIR or DIR/{torchvision_class}/raw",
        num_classes=len(class_names),
        torchvision_class=torchvision_class,
    )


def _cifar_source(name: str, num_classes: int, expected: str, torchvision_class: str) -> Source:
    def find(data_dir: Path) -> list[Path] | None:
        from tuner.data import cifar

        return cifar.find_cifar_files(name, data_dir)

    def decode(sources: list[Path]) -> Decoded:
        from tuner.data import cifar

        return cifar.decode_cifar(name, sources, num_classes)

    return Source(
        find=find,
        decode=decode,
        expected=expected,
        num_classes=num_classes,
        torchvision_class=torchvision_class,
    )


def _decode_digits(sources: list[Path]) -> Decoded:
    from tuner.data.digits import decode_digits

    return (*decode_digits(), DIGIT_CLASSES)


DATASETS: dict[str, Source] = {
    "digits": Source(  # bundled with scikit-learn
        find=lambda data_dir: [],
        decode=_decode_digits,
        expected="",
        num_classes=10,
        cached=False,
    ),
    "mnist": _idx_source("mnist", "MNIST", DIGIT_CLASSES),
    "fashion-mnist": _idx_source("fashion-mnist", "FashionMNIST", FASHION_CLASSES),
    "cifar10": _cifar_source(
        "cifar10",
        10,
        "DIR/cifar-10-batches-bin/*.bin or DIR/cifar-10-batches-py/data_batch_1..5, test_batch",
        "CIFAR10",
    ),
    "cifar100": _cifar_source(
        "cifar100",
        100,
        "DIR/cifar-100-binary/{train,test}.bin or DIR/cifar-100-python/{train,test,meta}",
        "CIFAR100",
    ),
}


def imagefolder_path(name: str) -> Path | None:
    """The folder of an imagefolder:PATH name (~ expanded), None for other names."""
    if name.startswith(IMAGEFOLDER_PREFIX):
        return Path(name.removeprefix(IMAGEFOLDER_PREFIX)).expanduser()
    return None


_SHORT = reprlib.Repr()
_SHORT.maxstring = 80


def dataset_name_problem(name: str) -> str | None:
    """What is wrong with a dataset name, in one line; None when it names a dataset."""
    if name in DATASETS:
        return None
    if name.startswith(IMAGEFOLDER_PREFIX):
        if not name.removeprefix(IMAGEFOLDER_PREFIX):
            return f"{IMAGEFOLDER_PREFIX} needs a path, e.g. {IMAGEFOLDER_PREFIX}./photos"
        return None
    shown = _SHORT.repr(name)  # a long name still fits one line
    return f"unknown dataset {shown}; allowed: {', '.join(DATASETS)}, or {IMAGEFOLDER_PREFIX}PATH"
