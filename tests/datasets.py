"""Tiny datasets written in the real file formats, so tests run the real loading code.

Every writer takes a folder (use pytest's `tmp_path`), writes the files exactly where tuner
(and torchvision) expect them and returns the folder to pass as `data_dir`. Images are made
from their index, so every image is different and a test can tell which ones ended up where:
pixel [0, 0, 0] of image i is `i % 256` and its label is `i % num_classes`.

    write_idx_dataset(tmp_path)                         # MNIST / Fashion-MNIST IDX files
    write_idx_lookalike(tmp_path, "mnist")              # IDX files with MNIST's pixel statistics
    write_cifar_binary(tmp_path, "cifar10")             # cifar-10-batches-bin/*.bin
    write_cifar_python(tmp_path, "cifar100")            # cifar-100-python/{train,test,meta}
    write_imagefolder(tmp_path / "photos", mode="RGB")  # photos/CLASS/*.png
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np

MNIST_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}


def make_images(count: int, shape: tuple[int, ...], num_classes: int) -> tuple[np.ndarray, ...]:
    """`count` distinct uint8 images of `shape` and their labels (see the module docstring)."""
    rng = np.random.default_rng(count)
    images = rng.integers(0, 256, size=(count, *shape), dtype=np.uint8)
    images.reshape(count, -1)[:, 0] = np.arange(count) % 256
    labels = np.arange(count, dtype=np.uint8) % num_classes
    return images, labels


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic 0x0000080N, N big-endian sizes, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx_dataset(
    folder: Path, train: int = 40, test: int = 10, gz: bool = True, size: int = 28
) -> Path:
    """The four MNIST-format IDX files (gzip-compressed unless `gz=False`) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("test", test)):
        images, labels = make_images(count, (size, size), 10)
        for stem, array in zip(MNIST_STEMS[split], (images, labels), strict=True):
            data = idx_bytes(array)
            if gz:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / stem).write_bytes(data)
    return folder


# What a look-alike's pixels are: (fraction of non-zero pixels, their value range, border).
LOOKALIKES = {
    # MNIST: ~19% non-zero (mean ~0.13) strokes, all inside the centre 20x20 box.
    "mnist": (0.37, (100, 256), 4),
    # Fashion-MNIST: ~50% non-zero (mean ~0.29) pixels over most of the image.
    "fashion-mnist": (0.5, (30, 256), 0),
}


def write_idx_lookalike(
    folder: Path, like: str, train: int = 400, test: int = 100, seed: int = 0
) -> Path:
    """The four IDX files (gzip-compressed) of synthetic images with `like`'s pixel statistics.

    `like` is "mnist" (mean ~0.13, ~81% zero pixels, an empty border) or "fashion-mnist" (mean
    ~0.29, ~50% zero pixels): what tuner's content check tells the two datasets apart by.
    Labels cycle through 0..9.
    """
    fraction, (low, high), border = LOOKALIKES[like]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("test", test)):
        images = np.zeros((count, 28, 28), np.uint8)
        inner = (count, 28 - 2 * border, 28 - 2 * border)
        on = rng.random(inner) < fraction
        images[:, border : 28 - border, border : 28 - border] = np.where(
            on, rng.integers(low, high, size=inner), 0
        )
        labels = np.arange(count, dtype=np.uint8) % 10
        for stem, array in zip(MNIST_STEMS[split], (images, labels), strict=True):
            (folder / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(array)))
    return folder


def write_cifar_binary(root: Path, name: str = "cifar10", per_file: int = 6) -> Path:
    """CIFAR's "binary version": records of label byte(s) + 3072 pixel bytes (CHW order).

    CIFAR-10: root/cifar-10-batches-bin/data_batch_1..5.bin, test_batch.bin, batches.meta.txt.
    CIFAR-100: root/cifar-100-binary/train.bin, test.bin (coarse + fine label bytes),
    fine_label_names.txt.
    """
    classes = CIFAR_CLASSES[name]
    if name == "cifar10":
        folder = root / "cifar-10-batches-bin"
        files = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
        meta = "batches.meta.txt"
    else:
        folder = root / "cifar-100-binary"
        files = ["train.bin", "test.bin"]
        meta = "fine_label_names.txt"
    folder.mkdir(parents=True, exist_ok=True)
    for number, file in enumerate(files):
        images, labels = make_images(per_file, (3, 32, 32), classes)
        images.reshape(per_file, -1)[:, 1] = number  # which file an image came from
        # CIFAR-100 records start with two label bytes: (coarse, fine).
        label_columns = [labels // 5, labels] if name == "cifar100" else [labels]
        records = np.column_stack([*label_columns, images.reshape(per_file, -1)])
        (folder / file).write_bytes(records.astype(np.uint8).tobytes())
    (folder / meta).write_text("".join(f"class{i}\n" for i in range(classes)) + "\n")
    return root


class _Python2Pickler(pickle._Pickler):
    """Pickles bytes as Python 2 wrote its `str`, like the published CIFAR batches.

    Python 3 pickles bytes at protocol 2 as `_codecs.encode(...)` calls, which a careful loader
    refuses; Python 2 wrote them as plain (SHORT_)BINSTRING opcodes, which `encoding="latin1"`
    turns into str (and numpy back into array data).
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_python2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str


def cifar_pickle(batch: dict) -> bytes:
    """Pickle a batch dict the way the CIFAR files were: Python 2, protocol 2, numpy 1.x.

    Keys are Python 2 strings and arrays are rebuilt by `numpy.core.multiarray._reconstruct`
    (numpy 2 would write `numpy._core`).
    """
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump({key.encode(): value for key, value in batch.items()})
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_cifar_python(root: Path, name: str = "cifar10", per_file: int = 6) -> Path:
    """CIFAR's "python version": pickled dicts with "data" (N, 3072) and the labels.

    CIFAR-10: root/cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta.
    CIFAR-100: root/cifar-100-python/train, test, meta ("fine_labels", "fine_label_names").
    """
    classes = CIFAR_CLASSES[name]
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        label_key, meta_file, meta_key = "labels", "batches.meta", "label_names"
    else:
        folder = root / "cifar-100-python"
        files = ["train", "test"]
        label_key, meta_file, meta_key = "fine_labels", "meta", "fine_label_names"
    folder.mkdir(parents=True, exist_ok=True)
    for number, file in enumerate(files):
        images, labels = make_images(per_file, (3, 32, 32), classes)
        images.reshape(per_file, -1)[:, 1] = number
        batch = {
            "batch_label": f"{file} of {len(files)}",
            label_key: [int(label) for label in labels],
            "data": images.reshape(per_file, 3072),
            "filenames": [f"img_{number}_{i}.png" for i in range(per_file)],
        }
        if name == "cifar100":
            batch["coarse_labels"] = [int(label) // 5 for label in labels]
        (folder / file).write_bytes(cifar_pickle(batch))
    meta = {meta_key: [f"class{i}" for i in range(classes)]}
    (folder / meta_file).write_bytes(cifar_pickle(meta))
    return root


def write_png(path: Path, pixels: np.ndarray) -> None:
    """Save an (H, W) or (H, W, 3) uint8 array as a PNG."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_image(path: Path, pixels: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Save `pixels` in the PIL mode their array type implies; the format follows the suffix.

    bool (H, W): "1"; uint8 (H, W): "L", or "P" with `palette` as its colours, uint8 (256, 3)
    or (256, 4) (RGBA: a PNG then stores the alpha values as transparency);
    uint8 (H, W, 2): "LA"; uint8 (H, W, 3): "RGB"; uint16 (H, W): "I;16" (16-bit PNG);
    int32 (H, W): "I" (TIFF only).
    """
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if palette is None:
        image = Image.fromarray(pixels)
    else:
        height, width = pixels.shape
        image = Image.frombytes("P", (width, height), np.ascontiguousarray(pixels).tobytes())
        rawmode = "RGBA" if palette.shape[1] == 4 else "RGB"
        image.putpalette(palette.astype(np.uint8).tobytes(), rawmode=rawmode)
    image.save(path)


def write_imagefolder(
    root: Path,
    classes: tuple[str, ...] = ("cat", "dog"),
    per_class: int = 5,
    mode: str = "RGB",
    size: int = 12,
    splits: bool = False,
) -> Path:
    """ROOT/CLASS/NNN.png (or ROOT/train/CLASS/... and ROOT/test/CLASS/... with `splits`).

    `mode` is "L" (grayscale) or "RGB". Images are `size` x `size`, distinct as described above.
    """
    shape = (size, size) if mode == "L" else (size, size, 3)
    for split in ("train", "test") if splits else ("",):
        images, _ = make_images(per_class * len(classes), shape, len(classes))
        if split == "test":
            images = 255 - images
        for index, pixels in enumerate(images):
            class_name = classes[index % len(classes)]
            write_png(root / split / class_name / f"{index:03d}.png", pixels)
    return root


def write_blank_png(path: Path, width: int, height: int) -> Path:
    """A real, valid greyscale PNG of zeros, built row by row: tiny on disk, huge decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    compressor = zlib.compressobj(1)
    rows = b"\x00" * (width + 1) * 1000  # each row: filter type 0, then the pixels
    parts = [
        compressor.compress(rows[: (width + 1) * min(1000, height - start)])
        for start in range(0, height, 1000)
    ]
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", b"".join(parts) + compressor.flush())
        + chunk(b"IEND", b"")
    )
    return path
