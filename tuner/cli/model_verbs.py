"""The verbs of trained models and reading aids: best, retrain, visualize, predict, export,
dashboard."""

from __future__ import annotations

import enum
import logging
from pathlib import Path
from typing import Annotated

import typer

from tuner.cli import views
from tuner.cli.common import (
    ArtifactsOption,
    CacheDirOption,
    DataDirOption,
    DeviceOption,
    StorageOption,
    StudiesDirOption,
    StudyOption,
    app,
    console,
    load_stored_study,
    spec_and_study,
    study_name,
)
from tuner.errors import TunerError

ModelOption = Annotated[
    Path,
    typer.Option(
        "--model",
        "-m",
        help="A model directory (`tuner retrain`, `tuner best --model`), or its .safetensors.",
    ),
]


class ExportFormat(enum.StrEnum):
    """`tuner best --format`."""

    toml = "toml"
    json = "json"


class ModelFormat(enum.StrEnum):
    """`tuner export --format`: the keys of tuner.trained.model_export.FORMATS."""

    onnx = "onnx"
    pt2 = "pt2"


@app.command()
def best(
    study: StudyOption = "digits-quick",
    fmt: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="toml (with comments) or json.")
    ] = ExportFormat.toml,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")
    ] = None,
    storage: StorageOption = None,
    studies: StudiesDirOption = None,
    pareto: Annotated[
        bool,
        typer.Option(
            "--pareto",
            help="List every Pareto-optimal trial of a multi-objective study (without it, "
            "such a study gives its Pareto trial with the best first objective).",
        ),
    ] = False,
    trial: Annotated[
        int | None, typer.Option("--trial", "-t", min=0, help="This trial instead of the best.")
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            help="Instead: write the trial's kept weights and their model card into this "
            "folder (trained on the training split only; for predict, visualize, export).",
        ),
    ] = None,
    artifacts: ArtifactsOption = None,
    data_dir: DataDirOption = None,
    cache_dir: CacheDirOption = None,
) -> None:
    """Print the best trial's full configuration (read back by `tuner retrain --config`), or
    with --model save its kept weights as a model, without retraining."""
    from tuner.api import best as best_config
    from tuner.files import write_text_atomic
    from tuner.trained.export import render
    from tuner.trained.pareto import render_pareto

    if model is not None:
        _save_kept(model, study, storage, studies, trial, artifacts, data_dir, cache_dir)
        return
    if pareto:
        stored = load_stored_study(study_name(study, studies), storage)
        text = render_pareto(stored, fmt.value)
    else:
        text = render(best_config(study, storage, trial=trial, studies_dir=studies), fmt.value)
    if out is None:
        typer.echo(text, nl=False)
    else:
        write_text_atomic(out, text)
        typer.echo(f"written to {out}", err=True)


def _save_kept(
    directory: Path,
    study: str,
    storage: str | None,
    studies: Path | None,
    trial: int | None,
    artifacts: str | None,
    data_dir: Path | None,
    cache_dir: Path | None,
) -> None:
    """`tuner best --model DIR`: the trial's kept weights, tested once, saved with their card."""
    from tuner.storage import resolve_storage_url
    from tuner.storage.artifacts import open_artifacts, resolve_artifacts
    from tuner.trained.kept import save_kept_model

    spec, stored = spec_and_study(study, storage, studies)
    location = resolve_artifacts(artifacts, resolve_storage_url(storage))
    weights, card = save_kept_model(
        directory,
        stored,
        spec.dataset,
        open_artifacts(location, create=False),
        trial,
        data_dir,
        cache_dir,
    )
    console().print(
        f"trial {card.trial} of {card.study}: weights of its epoch {card.kept_epoch}, trained on "
        f"the training split only; test accuracy {card.test_accuracy:.4f} on {card.test_count} "
        f"held-out images\nmodel: {weights}"
    )


@app.command()
def retrain(
    study: Annotated[
        str | None,
        typer.Option("--study", "-s", help="Retrain the best trial of this study."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Or a file written by `tuner best` (TOML or JSON)."),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs",
            "-e",
            min=1,
            help="Epochs on the full training split (default: the tuned trial's best epoch).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: runs/STUDY).")
    ] = None,
    storage: StorageOption = None,
    data_dir: DataDirOption = None,
    cache_dir: CacheDirOption = None,
    device: DeviceOption = "auto",
    studies: StudiesDirOption = None,
    trial: Annotated[
        int | None,
        typer.Option("--trial", "-t", min=0, help="With --study: this trial, not the best."),
    ] = None,
) -> None:
    """Train a configuration on train+validation, test it once, save model, card and report.

    Writes model.safetensors, model.json (the model card) and retrain.html into --out.
    """
    from tuner.api import retrain as retrain_best

    retrain_best(
        study,
        config=config,
        trial=trial,
        epochs=epochs,
        out=out,
        storage=storage,
        data_dir=data_dir,
        cache_dir=cache_dir,
        device=device,
        studies_dir=studies,
        console=console(),
    )


@app.command()
def visualize(
    model: ModelOption,
    image: Annotated[
        Path | None,
        typer.Option("--image", "-i", help="Image file to look at (default: a test image)."),
    ] = None,
    index: Annotated[
        int, typer.Option("--index", min=0, help="Which test image, without --image.")
    ] = 0,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="HTML file to write (default: MODEL_DIR/viz.html)."),
    ] = None,
    data_dir: DataDirOption = None,
    cache_dir: CacheDirOption = None,
) -> None:
    """One HTML page of a model's filters and feature maps for one image."""
    from tuner.api import visualize as write_visualization

    path = write_visualization(
        model, image=image, index=index, out=out, data_dir=data_dir, cache_dir=cache_dir
    )
    console().print(f"visualization written to {path}")


@app.command()
def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files (any size or mode).")],
    model: Annotated[
        Path,
        typer.Option(
            "--model",
            "-m",
            help="A model directory (`tuner retrain`, `tuner best --model`), its "
            ".safetensors, or a file written by `tuner export` (.onnx, or .pt2: load only .pt2 "
            "files you trust).",
        ),
    ],
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Classes per image.")] = 3,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON on stdout instead of a table.")
    ] = False,
) -> None:
    """Class probabilities for image files.

    A file that cannot be read gets an error line on stderr and the others are still
    predicted. Exit code 0 when every file was predicted; 1 when some were and others are not
    readable images; 2 when a named file does not exist, no file could be predicted, or for
    other usage errors (bad options, unusable model).
    """
    import json

    from tuner.api import predict as predict_images
    from tuner.trained import exit_code

    results = predict_images(model, images, top_k=top_k)
    for result in results:
        if result.error:
            typer.echo(f"error: {result.error}", err=True)
    if as_json:
        rows = [
            {"image": str(r.path), "error": r.error}
            if r.error
            else {
                "image": str(r.path),
                "predictions": [{"class": name, "probability": p} for name, p in r.top],
            }
            for r in results
        ]
        typer.echo(json.dumps(rows, indent=2))
    else:
        views.print_predictions(console(), results)
    if code := exit_code(results):
        raise typer.Exit(code)


@app.command("export")
def export_verb(
    card: Annotated[
        Path,
        typer.Option("--card", "-c", help="The model directory (or its model.json) to export."),
    ],
    fmt: Annotated[
        ModelFormat, typer.Option("--format", "-f", help="onnx (needs the onnx extra) or pt2.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="File to write (default: model.onnx or model.pt2 in the model directory).",
        ),
    ] = None,
) -> None:
    """Export a saved model to one file that takes raw uint8 images and returns logits.

    The card's normalisation is inside and the batch size is free; the file is loaded back and
    checked against the PyTorch model on a batch before it is kept. `tuner predict` reads it.
    """
    from tuner.trained import export_model, model_paths
    from tuner.trained.model_export import get_format

    target = out or model_paths(card)[1].parent / f"model{get_format(fmt.value).suffix}"
    result = export_model(card, fmt.value, target)
    channels, height, width = result.card.input_shape
    console().print(
        f"{result.format} written to {result.path}: input uint8 (batch, {channels}, {height}, "
        f"{width}), "
        f"logits for {result.card.num_classes} classes; parity on a batch: max abs difference "
        f"{result.max_abs_diff:.2e} (tolerance {result.tolerance:g})"
    )


def _check_port_free(host: str, port: int) -> None:
    """A one-line TunerError suggesting --port when `host:port` cannot be bound now."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            # As the server binds (reuse allowed): a port in TIME_WAIT is free, a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise TunerError(
            f"cannot serve on {host}:{port}: {getattr(exc, 'strerror', None) or exc}; "
            f"pick another port with --port, e.g. --port {port + 1 if port < 65535 else 8081}"
        ) from None


@app.command()
def dashboard(
    study: StudyOption = "digits-quick",
    storage: StorageOption = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; the dashboard has no login.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port.")] = 8080,
    studies: StudiesDirOption = None,
) -> None:
    """Serve optuna-dashboard on the study's storage (needs the optional dashboard extra)."""
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise TunerError(
            "optuna-dashboard is not installed; install it with: pip install 'tuner[dashboard]'"
        ) from None
    from tuner.storage import open_storage, resolve_storage_url

    name = study_name(study, studies)
    load_stored_study(name, storage)  # a clear error when the study isn't there
    _check_port_free(host, port)  # before the URL line, which would promise a server
    opened = open_storage(resolve_storage_url(storage))
    study_id = opened.get_study_id_from_name(name)
    shown_host = f"[{host}]" if ":" in host else host
    if host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger(__name__).warning(
            "the dashboard has no authentication: anyone who can reach %s:%d can read and "
            "edit the studies in this storage",
            host,
            port,
        )
    console().print(
        f"optuna-dashboard for study {name}: http://{shown_host}:{port}/dashboard/studies/"
        f"{study_id}  (Ctrl-C to stop)"
    )
    try:
        run_server(opened, host=host, port=port)
    except OSError as exc:
        raise TunerError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        console().print("dashboard stopped")
