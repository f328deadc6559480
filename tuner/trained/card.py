"""A trained model on disk: `model.safetensors` (weights) + `model.json` (its model card).

The card says everything needed to rebuild and feed the network (config, input shape, class
names, normalisation) and how well it did on the test split. Loading never unpickles: weights
are read with safetensors only, and the model is rebuilt with `build_cnn` from the card. Files
are written to a temporary name and renamed, so an interrupted save never leaves a partial file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tuner.config import TrialConfig
from tuner.engine.model import build_cnn
from tuner.errors import TunerError
from tuner.files import atomic_path, read_text_file

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model.json"
CARD_FORMAT = "tuner-model/1"


@dataclass(frozen=True)
class ModelCard:
    """What a saved model is, how to feed it, and how it scored on the held-out test split."""

    study: str | None  # None when retrained from a config file without a study
    trial: int | None
    dataset: str
    input_shape: tuple[int, int, int]  # (C, H, W)
    class_names: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, 0..1 scale, of the training images
    std: tuple[float, ...]
    config: TrialConfig
    epochs: int  # epochs trained on the full training split
    train_count: int  # training images
    test_count: int
    test_accuracy: float
    test_loss: float
    per_class_accuracy: dict[str, float | None]  # None for a class absent from the test split
    confusion_matrix: tuple[tuple[int, ...], ...]  # rows: true class, columns: predicted
    param_count: int
    tuner_version: str
    created: str  # ISO 8601, UTC
    train_loss: tuple[float, ...] = ()  # per epoch, on the (augmented) training batches
    train_accuracy: tuple[float, ...] = ()
    kept_epoch: int = 0  # the epoch whose weights were saved: the last one (0: not recorded)
    precision: str = ""  # what training ran in, "fp32" or "bf16" ("": not recorded)
    # Retraining holds nothing out. After each epoch it scores this many of its own training
    # images in eval mode (no augmentation, no dropout): progress on data the model trains on,
    # never a validation score, and used for nothing else (no early stopping, no selection).
    train_sample_count: int = 0
    train_sample_loss: tuple[float, ...] = ()
    train_sample_accuracy: tuple[float, ...] = ()
    weights_sha256: str = ""  # of model.safetensors: a card and weights from different runs fail
    format: str = CARD_FORMAT

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values; the config as `TrialConfig.to_dict()`."""
        values = asdict(self)
        values["config"] = self.config.to_dict()
        values["input_shape"] = list(self.input_shape)
        values["confusion_matrix"] = [list(row) for row in self.confusion_matrix]
        values["train_loss"] = list(self.train_loss)
        values["train_accuracy"] = list(self.train_accuracy)
        values["train_sample_loss"] = list(self.train_sample_loss)
        values["train_sample_accuracy"] = list(self.train_sample_accuracy)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelCard:
        """Inverse of `to_dict`; raises KeyError, TypeError or ValueError on a malformed card."""
        if values.get("format") != CARD_FORMAT:
            raise ValueError(f"format is {values.get('format')!r}, expected {CARD_FORMAT!r}")
        values = dict(values)
        values["config"] = TrialConfig.from_dict(values["config"])
        shape = tuple(int(v) for v in values["input_shape"])
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"input_shape must be [C, H, W], got {values['input_shape']}")
        values["input_shape"] = shape
        values["class_names"] = tuple(str(name) for name in values["class_names"])
        values["mean"] = tuple(float(v) for v in values["mean"])
        values["std"] = tuple(float(v) for v in values["std"])
        if not len(values["mean"]) == len(values["std"]) == shape[0]:
            raise ValueError("mean and std need one value per input channel")
        values["confusion_matrix"] = tuple(tuple(row) for row in values["confusion_matrix"])
        for key in ("train_loss", "train_accuracy", "train_sample_loss", "train_sample_accuracy"):
            values[key] = tuple(float(v) for v in values.get(key, ()))
        return cls(**values)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float32, standardised exactly as during training."""
        # The same arithmetic as engine.DeviceData.normalise, so predictions match bit for bit.
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        return images.to(torch.float32).mul_(1.0 / (255.0 * std)).sub_(mean / std)


def save_model(directory: Path, model: nn.Module, card: ModelCard) -> Path:
    """Write the weights and the card into `directory`; returns the weights' path.

    Both files are complete before either is renamed into place, and the weights come last:
    if `model.safetensors` exists, its card does too.
    """
    directory = Path(directory)
    weights_path, card_path = directory / WEIGHTS_FILE, directory / CARD_FILE
    state = {
        name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
    }
    with atomic_path(weights_path) as weights_tmp, atomic_path(card_path) as card_tmp:
        save_file(state, str(weights_tmp), metadata={"format": CARD_FORMAT})
        card = replace(card, weights_sha256=_sha256(weights_tmp))
        card_tmp.write_text(json.dumps(card.to_dict(), indent=2) + "\n", encoding="utf-8")
    # Leaving the `with` renames the card first (inner context), then the weights.
    return weights_path


def model_paths(path: Path) -> tuple[Path, Path]:
    """(weights, card) for a model directory, its .safetensors file or its .json card."""
    path = Path(path)
    if path.is_dir():
        return path / WEIGHTS_FILE, path / CARD_FILE
    if path.suffix == ".json":
        return path.with_suffix(".safetensors"), path
    return path, path.with_suffix(".json")


def load_card(path: Path) -> ModelCard:
    """Read the model card of a model directory or file. Raises TunerError naming the file."""
    weights_path, card_path = model_paths(path)
    if not card_path.is_file():
        if not weights_path.exists():
            raise TunerError(
                f"{path}: no such model (expected a directory with {WEIGHTS_FILE} and "
                f"{CARD_FILE}, or a .safetensors file)"
            )
        raise TunerError(
            f"{weights_path}: not a tuner model: its model card {card_path.name} is missing"
        )
    text = read_text_file(card_path, "model card")
    try:
        return ModelCard.from_dict(json.loads(text))
    except json.JSONDecodeError as exc:
        raise TunerError(f"{card_path}: unreadable model card ({exc})") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TunerError(f"{card_path}: not a tuner model card ({_describe(exc)})") from None


def load_model(path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCard]:
    """Rebuild a saved model from its card and weights; returns it in eval mode.

    `path` is the model directory, its .safetensors file or its card. Raises TunerError naming
    the file when it is not a tuner model (no card, not safetensors, wrong keys or shapes).
    """
    card = load_card(path)
    weights_path, card_path = model_paths(path)
    if not weights_path.is_file():
        raise TunerError(f"{weights_path}: model weights missing (the card {card_path} exists)")
    try:
        # safetensors stores raw tensors and a JSON header; nothing in the file can run code.
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise TunerError(f"{weights_path}: not a safetensors weights file ({exc})") from None
    if card.weights_sha256 and card.weights_sha256 != _sha256(weights_path):
        raise TunerError(
            f"{weights_path}: weights do not match the model card {card_path.name} "
            "(checksum differs; the files come from different runs)"
        )
    model = build_cnn(card.config, card.input_shape, card.num_classes)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise TunerError(
            f"{weights_path}: weights do not fit the model its card describes: {_describe(exc)}"
        ) from None
    return model.to(device).eval(), card


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _describe(exc: BaseException) -> str:
    """An exception as one short line (load_state_dict's messages span many lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines) if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
