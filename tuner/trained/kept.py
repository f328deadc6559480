"""A tuned trial's own weights as a saved model, without retraining: `tuner best --model DIR`.

A finished trial keeps its best epoch's weights in the study's artifact store (while it is
among the [training].keep_weights best, `tuner.search.checkpoints`). Here they are rebuilt
into the trial's network, tested once on the test split, and given the model card `retrain`
writes, marked `trained_on = "train"`: the weights saw the training split only, and the
validation split chose their epoch. `tuner retrain` stays the way to train on both.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import torch

from tuner import attrs
from tuner.data import load_dataset, split
from tuner.engine import to_device
from tuner.errors import TunerError
from tuner.families import build_model
from tuner.search.checkpoints import load_best_weights
from tuner.storage.artifacts import Artifacts
from tuner.trained.card import ModelCard, save_model
from tuner.trained.export import best_config
from tuner.trained.retrain import tested_card

if TYPE_CHECKING:
    from tuner.spec import DatasetSpec


def save_kept_model(
    directory: Path,
    study: optuna.Study,
    dataset_spec: DatasetSpec,
    artifacts: Artifacts,
    trial: int | None = None,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> tuple[Path, ModelCard]:
    """Write the best trial's (or trial `trial`'s) kept weights and their card into
    `directory`; the weights' path and the card. Raises TunerError when the trial's weights
    are not kept (any more) or do not fit its configuration."""
    chosen = best_config(study, trial)
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == chosen.trial)
    weights, epoch = load_best_weights(artifacts, frozen)
    # The split the trial trained on: its normalisation, and the test images held out of it.
    dataset = load_dataset(dataset_spec.name, data_dir, cache_dir)
    splits = split(
        dataset,
        val_fraction=dataset_spec.val_fraction,
        split_seed=dataset_spec.split_seed,
        train_subset=dataset_spec.train_subset,
    )
    config = chosen.config
    model = build_model(config, dataset.input_shape, dataset.num_classes)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise TunerError(
            f"trial {frozen.number}: its kept weights do not fit its configuration "
            f"({str(exc).splitlines()[0]})"
        ) from None
    model.eval()
    history = frozen.user_attrs.get(attrs.HISTORY) or []
    card = tested_card(
        model,
        to_device(splits, torch.device("cpu")),
        splits,
        dataset,
        config,
        study=study.study_name,
        trial=frozen.number,
        epochs=max(1, len(history)),
        train_count=len(splits.train),
        train_loss=tuple(row["train_loss"] for row in history),
        train_accuracy=tuple(row["train_accuracy"] for row in history),
        kept_epoch=epoch,
        precision=str(frozen.user_attrs.get(attrs.PRECISION, "")),
        trained_on="train",
    )
    return save_model(directory, model, card), card
