"""Augmentations in the search space: fixed in [augment] or sampled in [space], like the rest."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

from studies import SMALL_SPACE, spec_from, tiny_study_toml
from tuner import attrs
from tuner.config import TrialConfig
from tuner.data import load_dataset, split
from tuner.engine import to_device
from tuner.errors import TunerError
from tuner.search.objective import make_objective
from tuner.search.space import suggest
from tuner.search.study import open_study, run_trials
from tuner.trained.export import best_config, read_best, render

pytestmark = pytest.mark.usefixtures("one_torch_thread")

AUGMENT_SPACE = (
    SMALL_SPACE
    + """\
mixup_alpha = { type = "float", low = 0.0, high = 0.4 }
horizontal_flip = { type = "categorical", choices = [true, false] }
random_crop_padding = { type = "int", low = 0, high = 2 }
cutout = 2
"""
)


def with_augment(text: str, augment: str) -> str:
    return text.replace("[space]\n", f"[augment]\n{augment}\n[space]\n")


def test_sampled_augmentations_land_in_the_trial_config(tmp_path: Path) -> None:
    text = with_augment(tiny_study_toml(space=AUGMENT_SPACE), "rotation_degrees = 10.0")
    spec = spec_from(tmp_path, text)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = []
    for _ in range(8):
        trial = study.ask()
        config = suggest(trial, spec)
        seen.append(config.augment)
        assert config.augment.mixup_alpha == trial.params["mixup_alpha"]
        assert config.augment.horizontal_flip == trial.params["horizontal_flip"]
        assert config.augment.random_crop_padding == trial.params["random_crop_padding"]
        assert config.augment.cutout == 2  # fixed in [space]
        assert config.augment.rotation_degrees == 10.0  # fixed in [augment]
        study.tell(trial, 0.5)
    assert len({a.horizontal_flip for a in seen}) == 2
    assert all(0.0 <= a.mixup_alpha <= 0.4 for a in seen)
    assert len({a.mixup_alpha for a in seen}) == 8


def test_trials_record_and_best_reproduces_sampled_augmentations(tmp_path: Path) -> None:
    space = SMALL_SPACE.replace("log = true }", "log = true }\nmixup_alpha = 0.3\n")
    space += 'horizontal_flip = { type = "categorical", choices = [true, false] }\n'
    spec = spec_from(tmp_path, tiny_study_toml(space=space, training="max_epochs = 1"))
    data = to_device(
        split(load_dataset("digits"), val_fraction=0.2, split_seed=0, train_subset=200),
        torch.device("cpu"),
    )
    study = open_study(spec, optuna.storages.InMemoryStorage())
    run_trials(study, make_objective(spec, data, torch.device("cpu")), 2)
    # The trials that ran (a new study also holds the portfolio's, queued: WAITING).
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        recorded = TrialConfig.from_dict(trial.user_attrs[attrs.CONFIG]).augment
        assert recorded.horizontal_flip == trial.params["horizontal_flip"]
        assert recorded.mixup_alpha == 0.3
    best = best_config(study)
    path = tmp_path / "best.toml"
    path.write_text(render(best, "toml"))
    assert read_best(path).config.augment == best.config.augment
    assert best.config.augment.horizontal_flip == study.best_trial.params["horizontal_flip"]


@pytest.mark.parametrize(
    ("augment", "space", "key", "allowed"),
    [
        ("mixup_alpha = 0.2", "mixup_alpha = 0.1", "[augment].mixup_alpha", "[space].mixup_alpha"),
        (
            "",
            'mixup_alpha = { type = "float", low = -0.1, high = 0.4 }',
            "[space].mixup_alpha.low",
            "a float in [0, 100]",
        ),
        (
            "",
            'random_crop_padding = { type = "int", low = 0, high = 40 }',
            "[space].random_crop_padding.high",
            "an int from 0 to 31",
        ),
        (
            "",
            'translate = { type = "categorical", choices = [0.1, 0.7] }',
            "[space].translate.choices[1]",
            "a float in [0, 0.5]",
        ),
        (
            "",
            'horizontal_flip = { type = "float", low = 0.0, high = 1.0 }',
            "[space].horizontal_flip.type",
            "'categorical'",
        ),
        ("color_jitter = 1.5", "", "[augment].color_jitter", "a float in [0, 1]"),
        ("", "cutout = -1", "[space].cutout", "an int from 0 to 1024"),
    ],
)
def test_bad_augmentations_are_one_line_errors(
    tmp_path: Path, augment: str, space: str, key: str, allowed: str
) -> None:
    text = with_augment(tiny_study_toml(space=SMALL_SPACE + space + "\n"), augment)
    with pytest.raises(TunerError) as error:
        spec_from(tmp_path, text)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "study.toml"))
    assert key in message
    assert allowed in message
