"""Folders of images (ROOT/CLASS/*.png, optionally under train/ and test/) -> image sets."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from tuner.data.sets import ImageSet
from tuner.errors import TunerError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

log = logging.getLogger(__name__)

# PIL modes of grayscale images, alpha ("LA", "La") or not; all others load as RGB.
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
DEFAULT_IMAGEFOLDER_SIZE = 32
# One limit for image folders and `tuner predict`, checked on the header before any pixel is
# decoded: a 48-megapixel phone photo passes; an image at the limit takes about 200 MB (RGB).
MAX_IMAGE_PIXELS = 64_000_000


def check_image_pixels(width: int, height: int) -> None:
    """TunerError when an image of `width` x `height` is over MAX_IMAGE_PIXELS."""
    if width * height > MAX_IMAGE_PIXELS:
        raise TunerError(
            f"{width}x{height} pixels is over the limit of {MAX_IMAGE_PIXELS:,}; "
            "shrink the image first"
        )


def find_images(root: Path) -> list[Path]:
    """Every image file below `root`, sorted; TunerError when `root` is not a folder."""
    if not root.is_dir():
        raise TunerError(
            f"{root}: imagefolder dataset not found (expected a folder of class folders)"
        )
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _grey_or_rgb(image: PILImage) -> PILImage:
    """`image` in mode "L" when its mode is a grayscale one, else in mode "RGB"; alpha dropped.

    Palette images ("P", "PA") count as colour, whatever their palette. Integer images ("I;16",
    "I") hold 16-bit values: they are scaled to 0..255, where PIL's own conversion would clip
    everything above 255 (values outside 0..65535 are clipped). "F" images are taken as 0..255,
    as PIL converts them.
    """
    from PIL import Image

    if image.mode == "I" or image.mode.startswith("I;16"):
        values = np.asarray(image.convert("I"), dtype=np.int64).clip(0, 65535)
        return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8))  # round(v / 257)
    if image.mode in GRAYSCALE_MODES:
        return image.convert("L")
    if image.mode in ("P", "PA"):
        # Through RGBA: PIL warns when a palette with transparency goes straight to RGB.
        return image.convert("RGBA").convert("RGB")
    return image.convert("RGB")


def decode_imagefolder(
    root: Path, image_size: int
) -> tuple[ImageSet, ImageSet | None, tuple[str, ...]]:
    """Decode ROOT/class/*.png (or ROOT/train/class/... and ROOT/test/class/...)."""
    from PIL import Image, UnidentifiedImageError

    has_splits = (root / "train").is_dir() and (root / "test").is_dir()
    split_roots = (
        {"train": root / "train", "test": root / "test"} if has_splits else {"train": root}
    )
    class_names = sorted(p.name for p in split_roots["train"].iterdir() if p.is_dir())
    if len(class_names) < 2:
        hint = (
            "; for your own test split, put the class folders in both train/ and test/"
            if class_names in (["train"], ["test"])
            else ""
        )
        raise TunerError(
            f"{split_roots['train']}: an imagefolder dataset needs at least 2 class folders, "
            f"found {len(class_names)} ({', '.join(class_names) or 'none'}){hint}"
        )
    empty = [
        c
        for c in class_names
        if not any(
            p.suffix.lower() in IMAGE_SUFFIXES for p in (split_roots["train"] / c).rglob("*")
        )
    ]
    if empty:
        raise TunerError(
            f"{split_roots['train']}: class folders with no images: {', '.join(empty)}"
        )

    decoded: dict[str, ImageSet] = {}
    modes: set[str] = set()
    for split, split_root in split_roots.items():
        files = []
        for label, class_name in enumerate(class_names):
            for path in sorted((split_root / class_name).rglob("*")):
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    files.append((path, label))
        images, labels, skipped = [], [], 0
        for path, label in files:
            try:
                with warnings.catch_warnings():
                    # Pillow warns from ~89 megapixels; MAX_IMAGE_PIXELS, lower, refuses first.
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    image = Image.open(path)
            except Image.DecompressionBombError as exc:  # over twice Pillow's own limit
                raise TunerError(f"{path}: image too large to decode safely ({exc})") from None
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                skipped += 1
                log.warning("skipping unreadable image %s: %s", path, exc)
                continue
            try:
                with image:
                    try:
                        check_image_pixels(image.width, image.height)
                    except TunerError as exc:
                        raise TunerError(f"{path}: {exc}") from None
                    image.load()
                    converted = _grey_or_rgb(image)
                    modes.add(converted.mode)
                    images.append(converted.resize((image_size, image_size)))
                    labels.append(label)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                skipped += 1
                log.warning("skipping unreadable image %s: %s", path, exc)
        if skipped:
            log.warning("%s: skipped %d unreadable image(s) of %d", split_root, skipped, len(files))
        if not images:
            raise TunerError(f"{split_root}: no readable images")
        decoded[split] = (images, labels)  # type: ignore[assignment]

    channels = 1 if modes == {"L"} else 3  # one colour image makes the whole dataset RGB
    result = {}
    for split, (images, labels) in decoded.items():  # type: ignore[misc]
        arrays = [
            np.asarray(img if channels == 1 else img.convert("RGB"), dtype=np.uint8)
            for img in images
        ]
        stacked = np.stack(arrays)
        stacked = stacked[:, None] if channels == 1 else stacked.transpose(0, 3, 1, 2)
        result[split] = ImageSet(
            torch.from_numpy(np.ascontiguousarray(stacked)), torch.tensor(labels, dtype=torch.int64)
        )
    return result["train"], result.get("test"), tuple(class_names)
