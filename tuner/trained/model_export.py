"""A saved model as one deployable file: ONNX (`torch.onnx`) or PT2 (`torch.export`).

The file takes raw images: uint8 (N, C, H, W), any batch size N, the pixels `tuner predict`
decodes. The card's normalisation is folded in front of the network (`RawImageModel`), with
the same arithmetic as `ModelCard.normalise`, so no runtime needs the mean and std. Its output
is the logits (N, K); softmax them for probabilities. The model card travels inside the file
(ONNX metadata property `CARD_KEY`, PT2 extra file `CARD_KEY`) so the class names stay with it.

Before the file is renamed into place it is loaded back and run on a batch of random images of
another batch size than the traced one (the batch dimension is dynamic), against the PyTorch
model; the largest absolute difference of the logits is returned, and an export over
PARITY_TOLERANCE is refused. Both formats are fp32, like the saved weights.

ONNX needs the optional packages of the `onnx` extra; PT2 needs only torch. Loading a PT2 file
goes through `torch.export.load`, which may unpickle parts of a file: load only PT2 files you
exported yourself. ONNX files are protobuf and run in onnxruntime.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tuner.errors import TunerError
from tuner.files import atomic_path
from tuner.trained.card import ModelCard, load_model

log = logging.getLogger(__name__)

CARD_KEY = "tuner/model.json"
INPUT_NAME, OUTPUT_NAME = "images", "logits"
# Largest absolute logit difference an export may show against the PyTorch model. Both run
# fp32; a different order of the same additions moves logits by about 1e-6 to 1e-5, while a
# wrong normalisation or a broken graph moves them by 0.1 or more.
PARITY_TOLERANCE = 1e-3
TRACE_BATCH = 2  # the example batch the graph is traced with
PARITY_BATCH = 5  # another size, so the check also shows the batch dimension is dynamic
ONNX_INSTALL = "pip install 'tuner[onnx]' (onnx, onnxscript, onnxruntime)"

Logits = Callable[[torch.Tensor], torch.Tensor]


class RawImageModel(nn.Module):
    """uint8 images (N, C, H, W) -> logits: a model with its card's normalisation in front."""

    def __init__(self, model: nn.Module, card: ModelCard) -> None:
        super().__init__()
        self.model = model
        std = torch.tensor(card.std, dtype=torch.float32).view(1, -1, 1, 1)
        mean = torch.tensor(card.mean, dtype=torch.float32).view(1, -1, 1, 1)
        # ModelCard.normalise's two constants, computed the same way: the same results.
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", mean / std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.to(torch.float32) * self.scale - self.shift)


@dataclass(frozen=True)
class ExportedModel:
    """A loaded export: `logits(uint8 images on the CPU)` and the card the file carries."""

    path: Path
    format: str
    card: ModelCard
    logits: Logits

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float  # largest logit difference, file against PyTorch, on PARITY_BATCH images
    tolerance: float
    card: ModelCard


@dataclass(frozen=True)
class ExportFormat:
    """How to write one format, and how to load it back."""

    suffix: str
    write: Callable[[RawImageModel, torch.Tensor, str, Path], None]  # model, example, card JSON
    load: Callable[[Path], tuple[Logits, str]]  # -> logits, card JSON


def _batch_dim() -> dict[int, torch.export.Dim]:
    return {0: torch.export.Dim("batch")}


def _write_pt2(model: RawImageModel, example: torch.Tensor, card_json: str, path: Path) -> None:
    program = torch.export.export(model, (example,), dynamic_shapes=(_batch_dim(),))
    torch.export.save(program, path, extra_files={CARD_KEY: card_json})


def _load_pt2(path: Path) -> tuple[Logits, str]:
    extra = {CARD_KEY: ""}
    try:
        program = torch.export.load(path, extra_files=extra)
    except Exception as exc:  # a zip, JSON and tensor reader: anything it raises means "not pt2"
        raise TunerError(f"{path}: not a PT2 file written by torch.export ({exc})") from None
    module = program.module()

    def logits(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(images)

    return logits, extra[CARD_KEY]


def _onnx_modules() -> None:
    """Fail with the install line when the `onnx` extra is missing."""
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            raise TunerError(f"ONNX export needs {name}; install it with: {ONNX_INSTALL}") from None


def _write_onnx(model: RawImageModel, example: torch.Tensor, card_json: str, path: Path) -> None:
    _onnx_modules()
    with warnings.catch_warnings():
        # torch.onnx's exporter warns about its own internals on every call.
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            dynamic_shapes=(_batch_dim(),),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            verbose=False,
        )
    program.model.metadata_props[CARD_KEY] = card_json
    program.save(path)


def _load_onnx(path: Path) -> tuple[Logits, str]:
    _onnx_modules()
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for unreadable models
        raise TunerError(f"{path}: not an ONNX model ({exc})") from None
    card_json = session.get_modelmeta().custom_metadata_map.get(CARD_KEY, "")

    def logits(images: torch.Tensor) -> torch.Tensor:
        (output,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.cpu().numpy()})
        return torch.from_numpy(output)

    return logits, card_json


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat(".onnx", _write_onnx, _load_onnx),
    "pt2": ExportFormat(".pt2", _write_pt2, _load_pt2),
}


def get_format(name: str) -> ExportFormat:
    try:
        return FORMATS[name]
    except KeyError:
        allowed = ", ".join(FORMATS)
        raise TunerError(f"unknown export format {name!r}; allowed: {allowed}") from None


def export_model(
    model_path: Path, fmt: str, out: Path, tolerance: float = PARITY_TOLERANCE
) -> ExportResult:
    """Export the saved model at `model_path` (directory, weights or card) to `out`.

    Raises TunerError when the model cannot be read, the format's packages are missing, or the
    written file's logits differ from the PyTorch model's by more than `tolerance`; `out` is
    then left as it was.
    """
    exporter = get_format(fmt)
    model, card = load_model(model_path)
    raw = RawImageModel(model, card).eval()
    generator = torch.Generator().manual_seed(0)
    example = torch.randint(
        0, 256, (TRACE_BATCH, *card.input_shape), dtype=torch.uint8, generator=generator
    )
    check = torch.randint(
        0, 256, (PARITY_BATCH, *card.input_shape), dtype=torch.uint8, generator=generator
    )
    card_json = json.dumps(card.to_dict())
    out = Path(out)
    # The temporary file keeps the suffix: onnx names external data after it, pt2 wants a zip.
    with atomic_path(out) as tmp:
        staged = tmp.with_suffix(exporter.suffix)
        try:
            exporter.write(raw, example, card_json, staged)
            logits, _ = exporter.load(staged)
            with torch.inference_mode():
                expected = raw(check)
            difference = float((logits(check).float() - expected).abs().max())
            if not difference <= tolerance:  # NaN fails too
                raise TunerError(
                    f"{out}: parity check failed: the {fmt} file's logits differ from the "
                    f"PyTorch model's by up to {difference:.3g} (tolerance {tolerance:g}); "
                    "not written"
                )
            staged.replace(tmp)
        finally:
            staged.unlink(missing_ok=True)
    log.debug("exported %s to %s (max abs difference %.3g)", model_path, out, difference)
    return ExportResult(out, fmt, difference, tolerance, card)


def is_exported(path: Path) -> bool:
    """Whether `path` names an exported file (by its suffix) rather than a saved model."""
    return any(Path(path).suffix == spec.suffix for spec in FORMATS.values())


def load_exported(path: Path) -> ExportedModel:
    """Load an exported .onnx or .pt2 file with the card it carries. Raises TunerError."""
    path = Path(path)
    name = next((n for n, spec in FORMATS.items() if spec.suffix == path.suffix), None)
    if name is None:
        suffixes = ", ".join(spec.suffix for spec in FORMATS.values())
        raise TunerError(f"{path}: not an exported model (expected one of {suffixes})")
    if not path.is_file():
        raise TunerError(f"{path}: no such exported model")
    logits, card_json = FORMATS[name].load(path)
    if not card_json:
        raise TunerError(f"{path}: no tuner model card inside (not exported by `tuner export`)")
    try:
        values = json.loads(card_json)
    except json.JSONDecodeError as exc:
        raise TunerError(f"{path}: unreadable model card inside ({exc})") from None
    return ExportedModel(path, name, ModelCard.from_dict(values, f"{path}:{CARD_KEY}"), logits)
