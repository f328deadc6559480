"""Dataset files in their real formats -> tensors; every broken file is a one-line TunerError."""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import socket
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import (
    cifar_pickle,
    idx_bytes,
    make_images,
    write_blank_png,
    write_cifar_binary,
    write_cifar_python,
    write_idx_dataset,
    write_image,
    write_imagefolder,
    write_png,
)

from tuner.data import Dataset, channel_stats, load_dataset, split
from tuner.data import stats as stats_module
from tuner.data.imagefolder import MAX_IMAGE_PIXELS
from tuner.data.load import DOWNLOAD_TIMEOUT
from tuner.errors import TunerError


def load(name: str, data_dir: Path | None = None, **kwargs) -> Dataset:
    """load_dataset offline, with the cache next to the data."""
    root = data_dir or Path(name.removeprefix("imagefolder:")).parent
    return load_dataset(name, data_dir, cache_dir=root / "cache", download=False, **kwargs)


def load_error(name: str, data_dir: Path | None = None) -> str:
    with pytest.raises(TunerError) as caught:
        load(name, data_dir)
    message = str(caught.value)
    assert "\n" not in message
    return message


def assert_images(dataset: Dataset, shape: tuple[int, int, int], train: int, test: int) -> None:
    assert dataset.input_shape == shape
    assert (len(dataset.train), len(dataset.test)) == (train, test)
    assert dataset.train.images.dtype == torch.uint8 and dataset.train.labels.dtype == torch.int64


# ---------------------------------------------------------------- each format loads


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_files_load(tmp_path: Path, name: str, gz: bool) -> None:
    write_idx_dataset(tmp_path, train=40, test=10, gz=gz)
    dataset = load(name, tmp_path)
    assert_images(dataset, (1, 28, 28), 40, 10)
    images, labels = make_images(40, (28, 28), 10)
    assert torch.equal(dataset.train.images[:, 0], torch.from_numpy(images))
    assert dataset.train.labels.tolist() == labels.tolist()
    assert dataset.num_classes == 10
    assert dataset.class_names[0] == ("0" if name == "mnist" else "T-shirt/top")


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")]
)
def test_idx_files_in_torchvision_layout(tmp_path: Path, name: str, folder: str) -> None:
    write_idx_dataset(tmp_path / folder / "raw", train=20, test=5)
    assert_images(load(name, tmp_path), (1, 28, 28), 20, 5)


@pytest.mark.parametrize(
    "write", [write_cifar_binary, write_cifar_python], ids=["binary", "python"]
)
@pytest.mark.parametrize(("name", "train_files"), [("cifar10", 5), ("cifar100", 1)])
def test_cifar_loads(tmp_path: Path, write, name: str, train_files: int) -> None:
    write(tmp_path, name, per_file=4)
    dataset = load(name, tmp_path)
    assert_images(dataset, (3, 32, 32), 4 * train_files, 4)
    assert dataset.num_classes == (10 if name == "cifar10" else 100)
    assert dataset.class_names[:2] == ("class0", "class1")
    # Pixel 1 says which file an image came from: train files first, the test file last.
    assert dataset.train.images[:, 0, 0, 1].tolist() == [
        f for f in range(train_files) for _ in range(4)
    ]
    assert set(dataset.test.images[:, 0, 0, 1].tolist()) == {train_files}
    images, labels = make_images(4, (3, 32, 32), dataset.num_classes)
    images.reshape(4, -1)[:, 1] = 0
    assert torch.equal(dataset.train.images[:4], torch.from_numpy(images))
    assert dataset.train.labels[:4].tolist() == labels.tolist()  # the fine label for CIFAR-100


def test_cifar_files_directly_in_the_data_dir(tmp_path: Path) -> None:
    write_cifar_binary(tmp_path, per_file=2)
    for path in (tmp_path / "cifar-10-batches-bin").iterdir():
        path.rename(tmp_path / path.name)
    assert_images(load("cifar10", tmp_path), (3, 32, 32), 10, 2)


@pytest.mark.parametrize(("mode", "channels"), [("RGB", 3), ("L", 1)])
def test_imagefolder_loads_with_a_held_out_test_split(
    tmp_path: Path, mode: str, channels: int
) -> None:
    root = write_imagefolder(
        tmp_path / "photos", classes=("cat", "dog", "fox"), per_class=5, mode=mode
    )
    dataset = load(f"imagefolder:{root}")
    assert dataset.class_names == ("cat", "dog", "fox")
    assert_images(dataset, (channels, 32, 32), 12, 3)  # 20% held out as the test split
    labels = torch.cat([dataset.train.labels, dataset.test.labels])
    assert torch.bincount(labels).tolist() == [5, 5, 5]


def test_imagefolder_with_train_and_test_folders(tmp_path: Path) -> None:
    root = write_imagefolder(tmp_path / "photos", per_class=3, splits=True, size=8)
    dataset = load(f"imagefolder:{root}", image_size=8)
    assert_images(dataset, (3, 8, 8), 6, 6)
    assert dataset.class_names == ("cat", "dog")


@pytest.mark.parametrize(("width", "height"), [(9000, 9000), (13000, 13000)])
def test_an_image_over_the_pixel_limit_of_predict_refuses_the_folder(
    tmp_path: Path, width: int, height: int
) -> None:
    """81 MP (under Pillow's warning) and 169 MP (Pillow only warned): one limit, as predict."""
    root = write_imagefolder(tmp_path / "photos", per_class=2, size=4)
    bomb = write_blank_png(root / "cat" / "bomb.png", width, height)
    with pytest.raises(TunerError) as caught:
        load(f"imagefolder:{root}", image_size=4)
    assert str(caught.value) == (
        f"{bomb}: {width}x{height} pixels is over the limit of {MAX_IMAGE_PIXELS:,}; "
        "shrink the image first"
    )


def test_imagefolder_path_may_start_with_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    write_imagefolder(tmp_path / "photos", per_class=2, size=4)
    dataset = load_dataset("imagefolder:~/photos", cache_dir=tmp_path / "cache", image_size=4)
    assert dataset.class_names == ("cat", "dog")


def test_imagefolder_with_mixed_modes_is_rgb(tmp_path: Path) -> None:
    root = write_imagefolder(tmp_path / "photos", per_class=2, mode="L")
    write_png(root / "dog" / "colour.png", np.zeros((5, 7, 3), np.uint8))
    assert load(f"imagefolder:{root}").input_shape == (3, 32, 32)


GREY = make_images(1, (4, 4), 1)[0][0]
COLOURS = make_images(1, (256, 4), 1)[0][0]  # a palette: RGB + alpha
INDICES = np.arange(0, 256, 16, dtype=np.uint8).reshape(4, 4)
SIXTEEN_BIT = np.array(  # around the 8-bit steps (multiples of 257) and both ends
    [0, 1, 128, 129, 256, 257, 1000, 32767, 32896, 40000, 60000, 65150, 65279, 65280, 65534, 65535],
    dtype=np.uint16,
).reshape(4, 4)
EIGHT_BIT = np.round(SIXTEEN_BIT / 257).astype(np.uint8)  # 65535 / 255 = 257 exactly

IMAGE_MODES = {
    # PIL mode: (file name, pixels, palette, expected tensor (C, H, W))
    "1": ("a.png", GREY > 127, None, np.where(GREY > 127, 255, 0)[None]),
    "L": ("a.png", GREY, None, GREY[None]),
    "LA": ("a.png", np.stack([GREY, 255 - GREY], axis=-1), None, GREY[None]),
    "I;16": ("a.png", SIXTEEN_BIT, None, EIGHT_BIT[None]),
    "I": ("a.tif", SIXTEEN_BIT.astype(np.int32), None, EIGHT_BIT[None]),
    "P": ("a.png", INDICES, COLOURS[:, :3], COLOURS[INDICES, :3].transpose(2, 0, 1)),
    "P+alpha": ("a.png", INDICES, COLOURS, COLOURS[INDICES, :3].transpose(2, 0, 1)),
    "RGB": ("a.png", COLOURS[INDICES, :3], None, COLOURS[INDICES, :3].transpose(2, 0, 1)),
}


@pytest.mark.filterwarnings("error")  # PIL warns when a palette with alpha goes straight to RGB
@pytest.mark.parametrize("mode", IMAGE_MODES)
def test_imagefolder_reads_every_image_mode(tmp_path: Path, mode: str) -> None:
    """Grayscale modes load as one channel (alpha dropped, 16-bit scaled to 8), others as RGB."""
    from PIL import Image

    file, pixels, palette, expected = IMAGE_MODES[mode]
    root = tmp_path / "photos"
    for folder in ("train", "test"):
        for class_name in ("a", "b"):
            write_image(root / folder / class_name / file, pixels, palette)
    with Image.open(root / "train" / "a" / file) as written:
        assert written.mode == mode.removesuffix("+alpha")
    dataset = load(f"imagefolder:{root}", image_size=4)
    for images in (dataset.train.images, dataset.test.images):
        assert images.shape == (2, *expected.shape)
        assert torch.equal(images, torch.from_numpy(expected.astype(np.uint8)).expand_as(images))


def test_one_palette_image_makes_a_grayscale_folder_rgb(tmp_path: Path) -> None:
    root = write_imagefolder(tmp_path / "photos", per_class=2, mode="L", size=4)
    write_image(root / "dog" / "palette.png", INDICES, COLOURS[:, :3])
    write_image(root / "dog" / "grey-alpha.png", np.stack([GREY, GREY], axis=-1))
    dataset = load(f"imagefolder:{root}", image_size=4)
    images = torch.cat([dataset.train.images, dataset.test.images])
    assert images.shape[1] == 3
    palette_image = torch.from_numpy(COLOURS[INDICES, :3].transpose(2, 0, 1).copy())
    is_palette_image = (images == palette_image).flatten(1).all(dim=1)
    assert int(is_palette_image.sum()) == 1
    greys = images[~is_palette_image]
    assert torch.equal(greys, greys[:, :1].expand_as(greys))  # grey images: R = G = B
    assert any(torch.equal(image[0], torch.from_numpy(GREY)) for image in greys)


def test_decoded_tensors_are_cached_and_refreshed_when_files_change(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, train=20, test=5)
    first = load("mnist", tmp_path)
    assert len(list((tmp_path / "cache").glob("mnist-*.safetensors"))) == 1
    assert torch.equal(load("mnist", tmp_path).train.images, first.train.images)
    write_idx_dataset(tmp_path, train=30, test=5)
    assert len(load("mnist", tmp_path).train) == 30


def test_damaged_cache_is_rebuilt(tmp_path: Path, caplog) -> None:
    write_idx_dataset(tmp_path, train=20, test=5)
    expected = load("mnist", tmp_path).train.images
    (cache,) = (tmp_path / "cache").glob("mnist-*.safetensors")
    cache.write_bytes(cache.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="tuner.data"):
        assert torch.equal(load("mnist", tmp_path).train.images, expected)
    assert "ignoring unreadable cache" in caplog.text
    assert torch.equal(load("mnist", tmp_path).train.images, expected)  # rewritten


def test_unwritable_cache_is_not_an_error(tmp_path: Path, caplog) -> None:
    write_idx_dataset(tmp_path, train=20, test=5)
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="tuner.data"):
        assert len(load("mnist", tmp_path).train) == 20
    assert "could not write dataset cache" in caplog.text


# ---------------------------------------------------------------- missing and broken files


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mnist", "train-images-idx3-ubyte[.gz]"),
        ("fashion-mnist", "FashionMNIST/raw"),
        ("cifar10", "cifar-10-batches-bin"),
        ("cifar100", "cifar-100-python"),
    ],
)
def test_missing_dataset_says_where_the_files_are_expected(
    tmp_path: Path, name: str, expected: str
) -> None:
    message = load_error(name, tmp_path)
    assert f"dataset {name!r} not found in {tmp_path}" in message
    assert expected in message and "--data-dir" in message


def test_incomplete_idx_dataset_names_the_missing_file(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    assert "missing t10k-labels-idx1-ubyte" in load_error("mnist", tmp_path)


def test_incomplete_cifar_dataset_names_the_missing_file(tmp_path: Path) -> None:
    write_cifar_binary(tmp_path, per_file=1)
    (tmp_path / "cifar-10-batches-bin" / "data_batch_4.bin").unlink()
    message = load_error("cifar10", tmp_path)
    assert "cifar-10-batches-bin" in message and "missing data_batch_4.bin" in message


def corrupt(path: Path, how: str) -> None:
    raw = path.read_bytes()
    if how == "truncated gzip":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "bad gzip checksum":
        path.write_bytes(raw[:-8] + bytes(8))
    elif how == "truncated idx":
        path.write_bytes(gzip.compress(gzip.decompress(raw)[:-100]))
    elif how == "not idx":
        path.write_bytes(gzip.compress(b"<html>404 Not Found</html>"))
    elif how == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize(
    ("how", "fragment"),
    [
        ("truncated gzip", "corrupt gzip file"),
        ("bad gzip checksum", "corrupt gzip file"),
        ("truncated idx", "truncated or corrupt IDX data"),
        ("not idx", "bad magic number"),
        ("empty", "bad magic number"),
    ],
)
def test_corrupt_idx_file(tmp_path: Path, how: str, fragment: str) -> None:
    write_idx_dataset(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    corrupt(path, how)
    message = load_error("mnist", tmp_path)
    assert message.startswith(f"{path}: ") and fragment in message


def test_idx_label_files_must_match_their_images(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, train=10)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.zeros(9, np.uint8))))
    assert "image and label files disagree" in load_error("mnist", tmp_path)
    labels.write_bytes(gzip.compress(idx_bytes(np.full(10, 200, np.uint8))))
    assert load_error("mnist", tmp_path) == f"{labels}: labels must be 0..9, found 200"


def test_8000_images_with_10_labels_or_a_label_of_99_name_the_file(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, train=8000, test=10, gz=False)
    images, labels = tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(np.zeros(10, np.uint8)))
    assert load_error("mnist", tmp_path) == (
        f"{images}: image and label files disagree: (8000, 28, 28) images, (10,) labels"
    )
    write_idx_dataset(tmp_path, train=20, test=10, gz=False)
    test_labels = tmp_path / "t10k-labels-idx1-ubyte"
    test_labels.write_bytes(idx_bytes(np.full(10, 99, np.uint8)))
    assert load_error("mnist", tmp_path) == f"{test_labels}: labels must be 0..9, found 99"


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [([0] * 3, "counts differ: 6 images, 3 labels"), ([99] * 6, "must be 0..9, found 99")],
    ids=["counts", "range"],
)
def test_cifar_batch_labels_must_fit_its_images(tmp_path: Path, labels, fragment: str) -> None:
    write_cifar_python(tmp_path, per_file=6)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(cifar_pickle({"data": np.zeros((6, 3072), np.uint8), "labels": labels}))
    message = load_error("cifar10", tmp_path)
    assert message.startswith(f"{path}: corrupt CIFAR data") and fragment in message


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_truncated_cifar_binary(tmp_path: Path, name: str) -> None:
    write_cifar_binary(tmp_path, name, per_file=2)
    path = next((tmp_path).rglob("test*.bin"))
    path.write_bytes(path.read_bytes()[:-10])
    message = load_error(name, tmp_path)
    assert message.startswith(f"{path}: truncated CIFAR binary file")


def test_cifar_labels_out_of_range(tmp_path: Path) -> None:
    write_cifar_binary(tmp_path, per_file=2)
    path = tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin"
    raw = bytearray(path.read_bytes())
    raw[0] = 10
    path.write_bytes(bytes(raw))
    assert "labels out of range" in load_error("cifar10", tmp_path)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (lambda good: good[: len(good) // 2], "corrupt CIFAR batch file"),
        (lambda good: b"garbage" * 10, "corrupt CIFAR batch file"),
        (lambda good: cifar_pickle({"labels": [1]}), "not a CIFAR batch"),
        (lambda good: pickle.dumps([1, 2, 3], protocol=2), "not a CIFAR batch"),
        (lambda good: cifar_pickle({"data": [[700] * 3072], "labels": [0]}), "not a CIFAR batch"),
    ],
    ids=["truncated", "garbage", "no data", "not a dict", "pixels out of range"],
)  # fmt: skip
def test_corrupt_cifar_pickle(tmp_path: Path, content, fragment: str) -> None:
    write_cifar_python(tmp_path, per_file=2)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(content(path.read_bytes()))
    message = load_error("cifar10", tmp_path)
    assert message.startswith(f"{path}: ") and fragment in message


class _RunsCode:
    """Unpickling this calls os.mkdir(marker): what a tampered dataset file could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_malicious_cifar_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    write_cifar_python(tmp_path, per_file=2)
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"data": _RunsCode(marker), "labels": [0]}, protocol=2)
    pickle.loads(pickle.dumps(_RunsCode(tmp_path / "proof")))  # the payload does run code...
    assert (tmp_path / "proof").is_dir()
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(evil)
    message = load_error("cifar10", tmp_path)
    assert message.startswith(f"{path}: refusing to load") and "posix.mkdir" in message
    assert not marker.exists()  # ...but not here


def test_malicious_meta_file_is_refused(tmp_path: Path) -> None:
    write_cifar_python(tmp_path, "cifar100", per_file=2)
    marker = tmp_path / "pwned"
    (tmp_path / "cifar-100-python" / "meta").write_bytes(pickle.dumps(_RunsCode(marker)))
    assert "refusing to load" in load_error("cifar100", tmp_path)
    assert not marker.exists()


def test_unusable_meta_file_falls_back_to_numbered_classes(tmp_path: Path, caplog) -> None:
    write_cifar_binary(tmp_path, per_file=1)
    (tmp_path / "cifar-10-batches-bin" / "batches.meta.txt").write_bytes(bytes(range(256)))
    with caplog.at_level(logging.WARNING, logger="tuner.data"):
        assert load("cifar10", tmp_path).class_names == tuple(str(i) for i in range(10))
    assert "classes are numbered" in caplog.text


def test_imagefolder_skips_unreadable_images_with_a_warning(tmp_path: Path, caplog) -> None:
    root = write_imagefolder(tmp_path / "photos", per_class=5)
    (root / "cat" / "broken.png").write_bytes(b"not a png")
    good = (root / "dog" / "001.png").read_bytes()
    (root / "dog" / "truncated.png").write_bytes(good[: len(good) // 3])
    with caplog.at_level(logging.WARNING, logger="tuner.data"):
        dataset = load(f"imagefolder:{root}")
    assert len(dataset.train) + len(dataset.test) == 10
    assert "skipped 2 unreadable image(s) of 12" in caplog.text


def one_empty_class(root: Path) -> None:
    write_imagefolder(root)
    (root / "fox").mkdir()


def no_readable_image(root: Path) -> None:
    for path in write_imagefolder(root, per_class=1).rglob("*.png"):
        path.write_bytes(b"not a png")


IMAGEFOLDER_ERRORS = {
    "one class": (
        lambda root: write_imagefolder(root, classes=("cat",)),
        "at least 2 class folders",
    ),
    "empty class": (one_empty_class, "class folders with no images: fox"),
    "only empty classes": (lambda root: [(root / c).mkdir(parents=True) for c in "ab"], "a, b"),
    "missing": (lambda root: None, "imagefolder dataset not found"),
    "a file": (lambda root: root.write_text("a file"), "imagefolder dataset not found"),
    "no readable image": (no_readable_image, "no readable images"),
    "train without test": (lambda root: write_imagefolder(root / "train"), "train/ and test/"),
}


@pytest.mark.parametrize(("make", "fragment"), IMAGEFOLDER_ERRORS.values(), ids=IMAGEFOLDER_ERRORS)
def test_imagefolder_errors(tmp_path: Path, make, fragment: str) -> None:
    root = tmp_path / "photos"
    make(root)
    message = load_error(f"imagefolder:{root}")
    assert str(root) in message and fragment in message


def test_unknown_dataset_name(tmp_path: Path) -> None:
    assert "imagefolder:PATH" in load_error("svhn", tmp_path)


# ---------------------------------------------------------------- download


def test_offline_download_fails_fast_with_the_clear_message(tmp_path: Path, monkeypatch) -> None:
    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    started = time.monotonic()
    with pytest.raises(TunerError, match="--data-dir") as caught:
        load_dataset("cifar10", tmp_path / "data", cache_dir=tmp_path / "cache")
    assert time.monotonic() - started < 30
    assert "not found in" in str(caught.value)


def test_download_attempts_are_bounded_by_a_socket_timeout(tmp_path: Path, monkeypatch) -> None:
    timeouts = []

    class Unreachable:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            timeouts.append(socket.getdefaulttimeout())
            raise urllib.error.URLError("timed out")

    monkeypatch.setattr("torchvision.datasets.MNIST", Unreachable)
    before = socket.getdefaulttimeout()
    with pytest.raises(TunerError, match="not found"):
        load_dataset("mnist", tmp_path, cache_dir=tmp_path / "cache")
    assert timeouts == [DOWNLOAD_TIMEOUT]
    assert socket.getdefaulttimeout() == before  # restored for everything else


# ---------------------------------------------------------------- splits


@pytest.fixture(scope="module")
def unique_images(tmp_path_factory) -> Dataset:
    """An imagefolder dataset of 60 distinct 4x4 images, 20% held out as its test split."""
    folder = tmp_path_factory.mktemp("split") / "photos"
    root = write_imagefolder(folder, classes=("a", "b", "c"), per_class=20, size=4)
    return load(f"imagefolder:{root}", image_size=4)


def rows(images: torch.Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


def test_same_seed_same_split_and_another_seed_another(unique_images: Dataset) -> None:
    first = split(unique_images, val_fraction=0.25, split_seed=3)
    again = split(unique_images, val_fraction=0.25, split_seed=3)
    other = split(unique_images, val_fraction=0.25, split_seed=4)
    assert torch.equal(first.train.images, again.train.images)
    assert torch.equal(first.val.labels, again.val.labels)
    assert rows(first.val.images) != rows(other.val.images)


def test_splits_never_overlap(unique_images: Dataset) -> None:
    splits = split(unique_images, val_fraction=0.25, split_seed=0)
    train, val, test = (rows(s.images) for s in (splits.train, splits.val, unique_images.test))
    assert len(train) == len(splits.train) and len(val) == len(splits.val)  # all distinct
    assert not train & val and not train & test and not val & test
    assert train | val == rows(unique_images.train.images)
    assert (len(splits.train), len(splits.val), len(test)) == (36, 12, 12)


def test_train_subset_limits_training_images_only(unique_images: Dataset) -> None:
    full = split(unique_images, val_fraction=0.25, split_seed=0)
    subset = split(unique_images, val_fraction=0.25, split_seed=0, train_subset=10)
    assert len(subset.train) == 10 and torch.equal(subset.val.images, full.val.images)
    assert rows(subset.train.images) <= rows(full.train.images)
    assert (
        len(split(unique_images, val_fraction=0.2, split_seed=0, train_subset=10_000).train) == 38
    )


def test_channel_statistics_come_from_the_training_split(unique_images: Dataset) -> None:
    splits = split(unique_images, val_fraction=0.25, split_seed=0)
    expected = splits.train.images.float().div(255).mean(dim=(0, 2, 3))
    assert torch.allclose(torch.tensor(splits.mean), expected, atol=1e-5)


def assert_plain_stats(images: torch.Tensor, mean: tuple, std: tuple) -> None:
    """`mean` and `std` are the per-channel mean and sample std computed the plain way."""
    scaled = images.double().div(255).transpose(0, 1).flatten(1)
    expected = torch.stack([scaled.mean(dim=1), scaled.std(dim=1)])
    actual = torch.tensor([mean, std], dtype=torch.float64)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=0)


def random_images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    images = torch.randint(
        0, 256, (count, 3, size, size), generator=torch.Generator().manual_seed(seed)
    )
    images[:, 1] //= 4  # channels with different statistics
    return images.to(torch.uint8)


@pytest.mark.parametrize("images_per_chunk", [None, 1, 3, 10, 100])
def test_channel_stats_equal_the_plain_float_computation(images_per_chunk: int | None) -> None:
    images = random_images(10, 5)
    assert_plain_stats(images, *channel_stats(images, images_per_chunk))


def test_channel_stats_read_the_images_in_chunks(monkeypatch) -> None:
    monkeypatch.setattr(stats_module, "STATS_CHUNK_VALUES", 2 * 3 * 8 * 8)  # 2 images a chunk
    counted: list[int] = []
    bincount = torch.bincount
    monkeypatch.setattr(
        torch, "bincount", lambda x, **kw: counted.append(x.numel()) or bincount(x, **kw)
    )
    images = random_images(7, 8)  # 4 chunks, the last one short
    assert_plain_stats(images, *channel_stats(images))
    assert sorted(set(counted)) == [8 * 8, 2 * 8 * 8]  # never more than a chunk at once


def test_a_constant_channel_gets_a_small_nonzero_std() -> None:
    images = torch.full((4, 2, 3, 3), 51, dtype=torch.uint8)
    images[:, 1] = torch.arange(9, dtype=torch.uint8).view(3, 3)
    mean, std = channel_stats(images)
    assert mean[0] == pytest.approx(0.2) and std[0] == 1e-3
    assert std[1] == pytest.approx(images[:, 1].double().div(255).std().item(), rel=1e-12)


def test_too_few_images_for_a_split(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, train=1, test=1)
    with pytest.raises(TunerError, match="too few images"):
        split(load("mnist", tmp_path), val_fraction=0.5, split_seed=0)


class FailingAfterMakingFolders:
    """torchvision's MNIST as it fails: its raw/ folder is made before the download breaks."""

    def __init__(self, root: str, train: bool, download: bool) -> None:
        (Path(root) / "FashionMNIST" / "raw").mkdir(parents=True, exist_ok=True)
        raise urllib.error.URLError("Name or service not known")


class DownloadingBoth:
    """torchvision's MNIST as it succeeds: each split's IDX files under FashionMNIST/raw/."""

    def __init__(self, root: str, train: bool, download: bool) -> None:
        raw = Path(root) / "FashionMNIST" / "raw"
        if not (raw / "train-images-idx3-ubyte").exists():
            write_idx_dataset(raw, train=20, test=5, gz=False)


def test_a_failed_download_leaves_nothing_in_the_users_data_folder(
    tmp_path: Path, monkeypatch
) -> None:
    users = tmp_path / "my-data"
    users.mkdir()
    monkeypatch.setattr("torchvision.datasets.FashionMNIST", FailingAfterMakingFolders)
    with pytest.raises(TunerError, match="not found"):
        load_dataset("fashion-mnist", users, cache_dir=tmp_path / "cache")
    assert list(users.iterdir()) == []


def test_a_download_lands_in_the_data_folder_once_it_has_succeeded(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr("torchvision.datasets.FashionMNIST", DownloadingBoth)
    dataset = load_dataset("fashion-mnist", tmp_path / "data", cache_dir=tmp_path / "cache")
    assert_images(dataset, (1, 28, 28), 20, 5)
    assert (tmp_path / "data" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()
