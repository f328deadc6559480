"""A trained model on disk: `model.safetensors` (weights) + `model.json` (its model card).

The card says everything needed to rebuild and feed the network (config, input shape, class
names, normalisation) and how well it did on the test split. Loading never unpickles: weights
are read with safetensors only, and the model is rebuilt with `build_model` (the card config's
family; cards without one are the seed CNN) from the card, after
every card field has been checked and the weights' shapes compared with the network the card
describes (built on the meta device, which allocates nothing). Files are written to a
temporary name and renamed, so an interrupted save never leaves a partial file.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from tuner.checking import Checker, is_fraction, is_int, is_number, short
from tuner.config import TrialConfig
from tuner.engine.model import count_parameters
from tuner.errors import TunerError
from tuner.families import build_model
from tuner.files import atomic_path, read_text_file
from tuner.trained.export import parse_config

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model.json"
CARD_FORMAT = "tuner-model/1"
INPUT_CHANNELS = (1, 3)  # grey or RGB: all the data loaders produce
TRAINED_ON = ("", "train", "train+validation")
MAX_INPUT_SIDE = 1024  # pixels; trained inputs are far smaller (digits 8, CIFAR 32)


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
    # How config.family was fitted to input_shape (e.g. resnet18's stem on 28x28 images), as
    # words for people; the network itself is rebuilt from config.family ("": not recorded).
    adaptation: str = ""
    # The data the weights were trained on: "train+validation" (`tuner retrain`), or "train"
    # (a tuned trial's own weights, `tuner best --model`: the validation split held out and
    # used to pick its best epoch); "": not recorded.
    trained_on: str = ""
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
    def from_dict(cls, values: Any, source: Path | str = CARD_FILE) -> ModelCard:
        """Inverse of `to_dict`, every field checked; raises TunerError naming `source` and key.

        Checked before anything is built from the card: the input shape (1 or 3 channels, at
        most MAX_INPUT_SIDE pixels a side), one finite mean and one std > 0 per channel, at
        least two distinct class names that also key the per-class accuracies and size the
        confusion matrix, and the config's values in their study-file domains.
        """
        return _parse_card(values, Path(source))

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
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TunerError(f"{card_path}: unreadable model card ({exc})") from None
    except RecursionError:
        raise TunerError(f"{card_path}: unreadable model card (nested too deeply)") from None
    return ModelCard.from_dict(values, card_path)


def load_model(path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCard]:
    """Rebuild a saved model from its card and weights; returns it in eval mode.

    `path` is the model directory, its .safetensors file or its card. Raises TunerError naming
    the file when it is not a tuner model (no card, not safetensors, wrong keys or shapes).
    Nothing is allocated before the card's fields and the weights' shapes have been checked
    against each other, so a tampered card cannot ask for terabytes.
    """
    card = load_card(path)
    weights_path, card_path = model_paths(path)
    if not weights_path.is_file():
        raise TunerError(f"{weights_path}: model weights missing (the card {card_path} exists)")
    shapes = _weight_shapes(weights_path)
    if card.weights_sha256 and card.weights_sha256 != _sha256(weights_path):
        raise TunerError(
            f"{weights_path}: weights do not match the model card {card_path.name} "
            "(checksum differs; the files come from different runs)"
        )
    _check_fit(card, shapes, weights_path, card_path)
    # safetensors stores raw tensors and a JSON header; nothing in the file can run code.
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise TunerError(f"{weights_path}: not a safetensors weights file ({exc})") from None
    model = build_model(card.config, card.input_shape, card.num_classes)
    model.load_state_dict(state, strict=True)  # _check_fit compared every key and shape
    return model.to(device).eval(), card


def _weight_shapes(weights_path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape from a safetensors header, without reading the tensors."""
    try:
        with safe_open(str(weights_path), framework="pt") as weights:
            names = weights.keys()  # a safe_open handle is not a mapping: no `in weights`
            return {name: tuple(weights.get_slice(name).get_shape()) for name in names}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise TunerError(f"{weights_path}: not a safetensors weights file ({exc})") from None


def _check_fit(
    card: ModelCard, shapes: dict[str, tuple[int, ...]], weights_path: Path, card_path: Path
) -> None:
    """The card's network on PyTorch's meta device (shapes only, no memory) against the weights.

    Checks the classifier head against the class names, then every key and shape, then the
    card's parameter count.
    """
    with torch.device("meta"):
        skeleton = build_model(card.config, card.input_shape, card.num_classes)
    expected_params = count_parameters(skeleton)
    linear = [name for name, module in skeleton.named_modules() if isinstance(module, nn.Linear)]
    head_shape = shapes.get(f"{linear[-1]}.weight")
    if head_shape and head_shape[0] != card.num_classes:
        raise TunerError(
            f"{card_path}: class_names: {card.num_classes} names, but the weights' "
            f"classifier head in {weights_path.name} has {head_shape[0]} classes"
        )
    try:
        # assign: the meta tensors replace the skeleton's (copying into meta ones warns).
        skeleton.load_state_dict(
            {key: torch.empty(shape, device="meta") for key, shape in shapes.items()},
            strict=True,
            assign=True,
        )
    except RuntimeError as exc:
        raise TunerError(
            f"{weights_path}: weights do not fit the model its card describes: {_describe(exc)}"
        ) from None
    if card.param_count != expected_params:
        raise TunerError(
            f"{card_path}: param_count: {card.param_count}, but the model it describes has "
            f"{expected_params} parameters"
        )


# ---------------------------------------------------------------- checking a card's fields


def _parse_card(values: Any, path: Path) -> ModelCard:
    """Every field of a card read from JSON, checked; a TunerError names `path` and the key."""
    check = Checker(path)
    if not isinstance(values, dict) or values.get("format") != CARD_FORMAT:
        found = values.get("format") if isinstance(values, dict) else type(values).__name__
        raise TunerError(
            f"{path}: not a tuner model card (format: {found!r}, expected {CARD_FORMAT!r})"
        )
    known = {f.name: f for f in fields(ModelCard)}
    check.no_unknown(values, set(known), "")
    for key, field in known.items():
        if key not in values and field.default is MISSING:
            raise check.fail(key, "missing")
    shape = _input_shape(check, values["input_shape"])
    names = values["class_names"]
    if not (isinstance(names, list) and all(isinstance(n, str) and n for n in names)):
        raise check.fail("class_names", "must be a list of non-empty strings")
    if len(names) < 2 or len(set(names)) != len(names):
        raise check.fail(
            "class_names", f"must name at least 2 distinct classes, got {short(names)}"
        )
    stats = {key: check.numbers(values[key], key, shape[0], 1.0) for key in ("mean", "std")}
    if min(stats["std"]) <= 0:
        raise check.fail("std", f"every channel's std must be > 0, got {list(stats['std'])}")
    _check_scores(check, values, names)
    _check_facts(check, values)
    curves = {
        key: check.numbers(values.get(key, []), key, None, high)
        for key, high in (
            ("train_loss", math.inf),
            ("train_accuracy", 1.0),
            ("train_sample_loss", math.inf),
            ("train_sample_accuracy", 1.0),
        )
    }
    return ModelCard(
        **{key: values[key] for key in ("study", "trial", "dataset", "tuner_version", "created")},
        **{key: values[key] for key in ("epochs", "train_count", "test_count", "param_count")},
        input_shape=shape,
        class_names=tuple(names),
        mean=stats["mean"],
        std=stats["std"],
        config=parse_config(values["config"], path, "config"),
        test_accuracy=float(values["test_accuracy"]),
        test_loss=float(values["test_loss"]),
        per_class_accuracy={name: values["per_class_accuracy"][name] for name in names},
        confusion_matrix=tuple(tuple(row) for row in values["confusion_matrix"]),
        train_loss=curves["train_loss"],
        train_accuracy=curves["train_accuracy"],
        weights_sha256=values.get("weights_sha256", ""),
        adaptation=values.get("adaptation", ""),
        trained_on=values.get("trained_on", ""),
        kept_epoch=values.get("kept_epoch", 0),
        precision=values.get("precision", ""),
        train_sample_count=values.get("train_sample_count", 0),
        train_sample_loss=curves["train_sample_loss"],
        train_sample_accuracy=curves["train_sample_accuracy"],
    )


def _input_shape(check: Checker, shape: Any) -> tuple[int, int, int]:
    if not (isinstance(shape, list) and len(shape) == 3 and all(is_int(v) for v in shape)):
        raise check.fail("input_shape", f"must be [channels, height, width], got {short(shape)}")
    channels, height, width = shape
    if channels not in INPUT_CHANNELS:
        raise check.fail("input_shape", f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if not (1 <= height <= MAX_INPUT_SIDE and 1 <= width <= MAX_INPUT_SIDE):
        raise check.fail(
            "input_shape",
            f"height and width must be 1 to {MAX_INPUT_SIDE} pixels, got {height}x{width}",
        )
    return channels, height, width


def _check_scores(check: Checker, values: dict[str, Any], names: list[str]) -> None:
    """The test results: per-class accuracies, the confusion matrix, accuracy and loss."""
    classes = len(names)
    per_class = values["per_class_accuracy"]
    if not (isinstance(per_class, dict) and set(per_class) == set(names)):
        raise check.fail("per_class_accuracy", "must have one entry per class name")
    for name, accuracy in per_class.items():
        if accuracy is not None and not is_fraction(accuracy):
            raise check.fail(
                f"per_class_accuracy.{name}", f"must be 0 to 1 or null, got {accuracy!r}"
            )
    matrix = values["confusion_matrix"]
    rows_ok = isinstance(matrix, list) and len(matrix) == classes
    if not rows_ok or not all(
        isinstance(row, list) and len(row) == classes and all(is_int(v) and v >= 0 for v in row)
        for row in matrix
    ):
        raise check.fail(
            "confusion_matrix", f"must be {classes}x{classes} counts (one row per class)"
        )
    if not is_fraction(values["test_accuracy"]):
        raise check.fail("test_accuracy", f"must be 0 to 1, got {short(values['test_accuracy'])}")
    if not (is_number(values["test_loss"]) and values["test_loss"] >= 0):
        raise check.fail("test_loss", f"must be a number >= 0, got {short(values['test_loss'])}")


def _check_facts(check: Checker, values: dict[str, Any]) -> None:
    """Where the model came from and how it was trained: names, counts, precision, hash."""
    for key in ("study", "tuner_version", "created", "dataset"):
        value = values.get(key)
        if not (isinstance(value, str) or (key == "study" and value is None)):
            raise check.fail(key, f"must be a string, got {short(value)}")
    if not values["dataset"]:
        raise check.fail("dataset", "must name the dataset the model was trained on")
    for key, low in (("trial", 0), ("epochs", 1), ("train_count", 0), ("test_count", 0)):
        value = values[key]
        if not ((is_int(value) and value >= low) or (key == "trial" and value is None)):
            raise check.fail(key, f"must be an int >= {low}, got {short(value)}")
    if not is_int(values["param_count"]) or values["param_count"] < 1:
        raise check.fail("param_count", f"must be an int >= 1, got {short(values['param_count'])}")
    for key in ("kept_epoch", "train_sample_count"):
        value = values.get(key, 0)
        if not (is_int(value) and value >= 0):
            raise check.fail(key, f"must be an int >= 0, got {short(value)}")
    precision = values.get("precision", "")
    if precision not in ("", "fp32", "bf16"):
        raise check.fail("precision", f"must be fp32 or bf16, got {short(precision)}")
    if not isinstance(values.get("adaptation", ""), str):
        raise check.fail("adaptation", f"must be a string, got {short(values.get('adaptation'))}")
    if values.get("trained_on", "") not in TRAINED_ON:
        raise check.fail(
            "trained_on",
            f"must be one of {', '.join(map(repr, TRAINED_ON))}, got {short(values['trained_on'])}",
        )
    digest = values.get("weights_sha256", "")
    if not (isinstance(digest, str) and re.fullmatch(r"([0-9a-f]{64})?", digest)):
        raise check.fail("weights_sha256", "must be empty or 64 lowercase hex digits")


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
