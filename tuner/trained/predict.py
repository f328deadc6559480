"""Image files -> class probabilities from a saved model.

Each file is decoded with Pillow, converted to the model's channel count (L or RGB), resized
to its input size and normalised with the card's statistics, the way training images were. A
file that cannot be read is reported and skipped; the others are still predicted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tuner.errors import TunerError
from tuner.trained.card import ModelCard

log = logging.getLogger(__name__)

BATCH_SIZE = 256


@dataclass(frozen=True)
class Prediction:
    """The top classes for one file (most likely first), or why the file was not predicted."""

    path: Path
    top: tuple[tuple[str, float], ...] = ()  # (class name, probability)
    error: str | None = None


def read_image(path: Path, card: ModelCard) -> torch.Tensor:
    """Decode an image file into uint8 (C, H, W) for the model. Raises TunerError naming it."""
    from PIL import Image, ImageOps

    channels, height, width = card.input_shape
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)  # phone photos store rotation as a tag
            image = image.convert("L" if channels == 1 else "RGB")
            # Squashed to the input size without keeping the aspect ratio, like imagefolder
            # datasets were, so the model sees what it was trained on.
            if image.size != (width, height):
                image = image.resize((width, height))
            array = np.array(image, dtype=np.uint8)  # a writable copy, for torch
    except FileNotFoundError:
        raise TunerError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TunerError(f"{path}: is a directory, not an image") from None
    except Exception as exc:  # Pillow raises many types for bad files; all mean "not readable"
        raise TunerError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    array = array[None] if channels == 1 else array.transpose(2, 0, 1)  # -> (C, H, W)
    return torch.from_numpy(np.ascontiguousarray(array))


def probabilities(model: nn.Module, card: ModelCard, images: torch.Tensor) -> torch.Tensor:
    """Softmax class probabilities (N, K) for uint8 images (N, C, H, W)."""
    device = next(model.parameters()).device
    model.eval()
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), BATCH_SIZE):
            batch = card.normalise(images[start : start + BATCH_SIZE].to(device))
            chunks.append(torch.softmax(model(batch).float(), dim=1).cpu())
    if not chunks:
        return torch.empty(0, card.num_classes)
    return torch.cat(chunks)


def top_k(probs: torch.Tensor, class_names: Sequence[str], k: int) -> tuple[tuple[str, float], ...]:
    """The `k` most likely classes of one probability vector, most likely first."""
    values, indices = probs.topk(min(k, len(class_names)))
    return tuple((class_names[int(i)], float(v)) for v, i in zip(values, indices, strict=True))


def predict_files(
    model: nn.Module, card: ModelCard, paths: Sequence[Path], k: int = 3
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
            results.append(Prediction(Path(path), error=str(exc)))
    if images:
        probs = probabilities(model, card, torch.stack(images))
        for row, index in enumerate(readable):
            results[index] = Prediction(results[index].path, top_k(probs[row], card.class_names, k))
    return results
