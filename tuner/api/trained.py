"""Trained models from Python and the CLI: best, retrain, report, visualize, load, predict."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.api.study import StudyLike, stored_study_name
from tuner.errors import TunerError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from rich.console import Console
    from torch import nn

    from tuner.trained import BestConfig, ModelCard, Prediction

# A saved model: its folder (or .safetensors / .json file), or what `load_model` returned.
ModelLike = str | os.PathLike[str] | tuple[Any, Any]


@dataclass(frozen=True)
class SavedModel:
    """What `retrain` wrote: the model's folder, its weights, its report and its card."""

    directory: Path
    weights: Path
    report: Path
    card: ModelCard


def best(
    study: StudyLike,
    storage: str | None = None,
    *,
    trial: int | None = None,
    studies_dir: Path | str | None = None,
) -> BestConfig:
    """The best trial's configuration (or trial number `trial`'s) of a stored study.

    Where `tuner confirm` ran, the best mean over its seeds wins; a multi-objective study
    gives its Pareto trial with the best first objective. `render(best, "toml")` from
    `tuner.trained` writes it as `tuner best` prints it.
    """
    from tuner.storage import load_stored_study, resolve_storage_url
    from tuner.trained import best_config

    name = stored_study_name(study, studies_dir)
    return best_config(load_stored_study(name, resolve_storage_url(storage)), trial)


def retrain(
    study: StudyLike | None = None,
    *,
    config: BestConfig | Path | str | None = None,
    trial: int | None = None,
    epochs: int | None = None,
    out: Path | str | None = None,
    storage: str | None = None,
    data_dir: Path | str | None = None,
    cache_dir: Path | str | None = None,
    device: str = "auto",
    studies_dir: Path | str | None = None,
    console: Console | None = None,
) -> SavedModel:
    """Train the best configuration of `study` (or `config`: a `best` result or a file
    written by `tuner best`) on train+validation, test it once, save model, card and report.

    `out` defaults to runs/STUDY (runs/STUDY-trial-N for a chosen `trial`); `epochs` to the
    tuned trial's best epoch. Says what it trains and how it scored on `console`.
    """
    from tuner.data import load_dataset
    from tuner.engine import pick_device
    from tuner.files import study_slug
    from tuner.report import write_retrain_report
    from tuner.runner.console import lines_for_python, make_console
    from tuner.trained import epochs_for, load_card, read_best, retrain_model, save_retrained

    if study is not None and config is not None:
        raise TunerError("give either --study or --config, not both")
    if study is None and config is None:
        raise TunerError("--study NAME or --config FILE is required")
    if config is None:
        chosen = best(study, storage, trial=trial, studies_dir=studies_dir)
    elif isinstance(config, str | os.PathLike):
        chosen = read_best(Path(config))
    else:
        chosen = config
    torch_device = pick_device(device)
    dataset = load_dataset(
        chosen.dataset,
        None if data_dir is None else Path(data_dir),
        None if cache_dir is None else Path(cache_dir),
    )
    from_file = isinstance(config, str | os.PathLike)
    default_name = study_slug(chosen.study or (Path(config).stem if from_file else "model"))
    if trial is not None:  # a chosen trial (e.g. one end of a Pareto front) gets its own folder
        default_name += f"-trial-{trial}"
    out_dir = Path(out) if out is not None else Path("runs") / default_name
    source = f"trial {chosen.trial} of {chosen.study}" if chosen.study else str(config)
    shown = console or make_console()
    shown.print(
        f"retraining {source}: {dataset.name}, {len(dataset.train)} training images, "
        f"{epochs_for(chosen, epochs)} epochs on {torch_device}"
    )
    with lines_for_python(shown):
        result = retrain_model(chosen, dataset, torch_device, epochs)
    weights = save_retrained(out_dir, result)
    report = write_retrain_report(out_dir, result.card)
    shown.print(
        f"test accuracy {result.card.test_accuracy:.4f} on {result.card.test_count} held-out "
        f"images\nmodel: {weights}\nreport: {report}"
    )
    return SavedModel(out_dir, weights, report, load_card(weights))  # with the weights' hash


def write_report(
    study: StudyLike,
    out: Path | str | None = None,
    storage: str | None = None,
    *,
    studies_dir: Path | str | None = None,
) -> Path:
    """Write a study's self-contained HTML report (default: report-STUDY.html); its path."""
    from tuner.files import study_slug
    from tuner.report import write_report as write
    from tuner.storage import load_stored_study, resolve_storage_url

    name = stored_study_name(study, studies_dir)
    stored = load_stored_study(name, resolve_storage_url(storage))
    return write(stored, Path(out) if out else Path(f"report-{study_slug(stored.study_name)}.html"))


def load_model(path: Path | str, device: str = "cpu") -> tuple[nn.Module, ModelCard]:
    """A model saved by `retrain` (its folder, .safetensors or .json), in eval mode, and its
    card (input shape, class names, normalisation, test scores, configuration)."""
    from tuner.trained import load_model as load

    return load(Path(path), device)


def visualize(
    model: ModelLike,
    *,
    image: Path | str | None = None,
    index: int = 0,
    out: Path | str | None = None,
    data_dir: Path | str | None = None,
    cache_dir: Path | str | None = None,
) -> Path:
    """Write one HTML page of a model's filters and feature maps for one image; its path.

    `image` is an image file; without it, test image `index` of the model's dataset. `out`
    defaults to viz.html next to a saved model (in the working directory for a loaded one).
    """
    from tuner.report.visualize import test_image, write_visualization
    from tuner.trained import model_paths, read_image

    loaded, card = _model(model)
    if out is None:
        saved = isinstance(model, str | os.PathLike)
        out = model_paths(Path(model))[1].parent / "viz.html" if saved else Path("viz.html")
    if image is not None:
        pixels, label = read_image(Path(image), card), Path(image).name
    else:
        pixels, label = test_image(
            card,
            index,
            None if data_dir is None else Path(data_dir),
            None if cache_dir is None else Path(cache_dir),
        )
    return write_visualization(Path(out), loaded, card, pixels, label)


def predict(
    model: ModelLike,
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | torch.Tensor | np.ndarray,
    *,
    top_k: int = 3,
) -> list[Prediction]:
    """The `top_k` classes of each image, most likely first, as `Prediction`s (`.top` holds
    (class name, probability) pairs).

    `model`: a saved model's path (or a .onnx/.pt2 file `tuner export` wrote), or the
    (module, card) pair `load_model` returns. `images`:
    image files (any size or mode: converted and resized as in training; one that cannot be
    read gets `.error` set, the others are still predicted), or uint8 pixels shaped like the
    card's input, (C, H, W) or (N, C, H, W), whose predictions have no `.path`.
    """
    from tuner.trained import load_predictor, predict_files

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise TunerError(f"top_k: must be an integer >= 1, got {top_k!r}")
    if isinstance(model, str | os.PathLike):
        loaded, card = load_predictor(Path(model))  # a saved model, or a `tuner export` file
    else:
        loaded, card = _model(model)
    if isinstance(images, str | os.PathLike):
        images = [images]
    if isinstance(images, Sequence):
        return predict_files(loaded, card, [Path(image) for image in images], top_k)
    return _predict_pixels(loaded, card, images, top_k)


def _model(model: ModelLike) -> tuple[nn.Module, ModelCard]:
    """A model argument as (module, card): loaded from its path, or as `load_model` gave it."""
    from tuner.trained import ModelCard

    if isinstance(model, str | os.PathLike):
        return load_model(model)
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[1], ModelCard):
        return model
    raise TunerError(
        "model: a saved model's path, or the (model, card) pair tuner.load_model returns; "
        f"got {type(model).__name__}"
    )


def _predict_pixels(model: nn.Module, card: ModelCard, images: Any, top_k: int) -> list[Prediction]:
    """Predictions for uint8 pixels in the card's (C, H, W) shape, one image or a batch."""
    import torch

    from tuner.trained import Prediction
    from tuner.trained.predict import probabilities
    from tuner.trained.predict import top_k as best_k

    pixels = torch.as_tensor(images)
    if pixels.dim() == 3:
        pixels = pixels.unsqueeze(0)
    if pixels.dtype != torch.uint8 or tuple(pixels.shape[1:]) != tuple(card.input_shape):
        raise TunerError(
            f"images: uint8 pixels shaped (N, {', '.join(map(str, card.input_shape))}) or "
            f"{tuple(card.input_shape)} for this model, got {pixels.dtype} "
            f"{tuple(pixels.shape)}"
        )
    probs = probabilities(model, card, pixels)
    return [Prediction(None, best_k(row, card.class_names, top_k)) for row in probs]
