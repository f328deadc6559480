"""Image files -> class probabilities from a saved model or an exported one (`tuner export`).

Each file is decoded with Pillow, converted to the model's channel count (L or RGB), resized
to its input size and normalised with the card's statistics, the way training images were. A
file that cannot be read is reported and skipped; the others are still predicted. An image
whose header declares more than MAX_IMAGE_PIXELS is refused before its pixels are decoded: a
531 KB PNG can declare 13000x13000 pixels and take gigabytes once decoded.

`exit_code` is the rule `tuner predict` exits by: 0 when every file was predicted; 2 when a
named file does not exist or no file could be predicted (a mistake in the command, like every
usage error); 1 when some files were predicted and others exist but are not readable images.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from tuner.data.imagefolder import check_image_pixels
from tuner.errors import TunerError
from tuner.trained.card import ModelCard, load_model
from tuner.trained.model_export import ExportedModel, is_exported, load_exported

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

BATCH_SIZE = 256


class MissingImageError(TunerError):
    """A file named for prediction does not exist."""


@dataclass(frozen=True)
class Prediction:
    """The top classes for one file (most likely first), or why the file was not predicted."""

    path: Path | None  # None for pixels given from Python (tuner.predict)
    top: tuple[tuple[str, float], ...] = ()  # (class name, probability)
    error: str | None = None
    missing: bool = False  # the file does not exist (a usage error, see `exit_code`)


def exit_code(results: Sequence[Prediction]) -> int:
    """0: every file predicted; 2: a file missing or none predicted; 1: some unreadable."""
    if any(result.missing for result in results) or all(result.error for result in results):
        return 2
    return 1 if any(result.error for result in results) else 0


def load_predictor(path: Path) -> tuple[nn.Module | ExportedModel, ModelCard]:
    """A saved model (directory, weights or card) or an exported .onnx/.pt2 file, with its card."""
    if is_exported(path):
        exported = load_exported(path)
        return exported, exported.card
    return load_model(path)


def read_image(path: Path, card: ModelCard) -> torch.Tensor:
    """Decode an image file into uint8 (C, H, W) for the model. Raises TunerError naming it."""
    from PIL import Image

    channels, height, width = card.input_shape
    try:
        with warnings.catch_warnings():
            # Image.open warns above Pillow's own limit (raises above twice it); _decode then
            # refuses anything above MAX_IMAGE_PIXELS, which is lower. A warning while decoding
            # (a format whose size grows on load) is an error.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            array = _decode(opened, (width, height), "L" if channels == 1 else "RGB")
    except TunerError as exc:
        raise TunerError(f"{path}: {exc}") from None
    except FileNotFoundError:
        raise MissingImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TunerError(f"{path}: is a directory, not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TunerError(f"{path}: image too large to decode safely ({exc})") from None
    except Exception as exc:  # Pillow raises many types for bad files; all mean "not readable"
        raise TunerError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    array = array[None] if channels == 1 else array.transpose(2, 0, 1)  # -> (C, H, W)
    return torch.from_numpy(np.ascontiguousarray(array))


def _decode(image: Image.Image, size: tuple[int, int], mode: str) -> np.ndarray:
    """Pixels of an opened image as uint8 (H, W[, C]) of `size` and `mode`; closes the image.

    Image.open has read only the header: the size is checked before any pixel is decoded.
    """
    from PIL import ImageOps

    with image:
        check_image_pixels(image.width, image.height)
        image = ImageOps.exif_transpose(image)  # phone photos store rotation as a tag
        image = image.convert(mode)
        # Squashed to the input size without keeping the aspect ratio, like imagefolder
        # datasets were, so the model sees what it was trained on.
        if image.size != size:
            image = image.resize(size)
        return np.array(image, dtype=np.uint8)  # a writable copy, for torch


def probabilities(
    model: nn.Module | ExportedModel, card: ModelCard, images: torch.Tensor
) -> torch.Tensor:
    """Softmax class probabilities (N, K) for uint8 images (N, C, H, W).

    `model` is a saved network (fed images normalised with the card's statistics) or an
    exported file (`tuner export`: its normalisation is inside, it takes the raw images).
    """
    if isinstance(model, nn.Module):
        device = next(model.parameters()).device
        model.eval()

        def logits(batch: torch.Tensor) -> torch.Tensor:
            return model(card.normalise(batch.to(device)))
    else:
        logits = model
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), BATCH_SIZE):
            chunks.append(
                torch.softmax(logits(images[start : start + BATCH_SIZE]).float(), 1).cpu()
            )
    if not chunks:
        return torch.empty(0, card.num_classes)
    return torch.cat(chunks)


def top_k(probs: torch.Tensor, class_names: Sequence[str], k: int) -> tuple[tuple[str, float], ...]:
    """The `k` most likely classes of one probability vector, most likely first."""
    values, indices = probs.topk(min(k, len(class_names)))
    return tuple((class_names[int(i)], float(v)) for v, i in zip(values, indices, strict=True))


def predict_files(
    model: nn.Module | ExportedModel, card: ModelCard, paths: Sequence[Path], k: int = 3
) -> list[Prediction]:
    """Predict every readable file; unreadable ones get a Prediction with `error` set."""
    images: list[torch.Tensor] = []
    readable: list[int] = []
    results: list[Prediction] = []
    for index, path in enumerate(paths):
        try:
            images.append(read_image(Path(path), card))
            readable.append(index)
            results.append(Prediction(Path(path)))
        except TunerError as exc:
            log.debug("skipping %s: %s", path, exc)
            missing = isinstance(exc, MissingImageError)
            results.append(Prediction(Path(path), error=str(exc), missing=missing))
    if images:
        probs = probabilities(model, card, torch.stack(images))
        for row, index in enumerate(readable):
            results[index] = Prediction(results[index].path, top_k(probs[row], card.class_names, k))
    return results
