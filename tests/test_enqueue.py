"""[[enqueue]] tables and the learning rate scaled to the batch size: checks and first trials."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from studies import spec_from, tiny_study_toml
from tuner.errors import TunerError
from tuner.search.space import suggest
from tuner.search.study import open_study, run_trials

SPACE = """\
learning_rate = { type = "float", low = 1e-3, high = 3e-2, log = true }
batch_size = 64
num_blocks = { type = "int", low = 1, high = 3 }
filters = { type = "int", low = 8, high = 32, step = 8 }
dropout = { type = "float", low = 0.0, high = 0.5 }
optimizer = { type = "categorical", choices = ["adamw", "sgd"] }
fc_units = 16
"""

KNOWN = """
[[enqueue]]
learning_rate = 0.002
num_blocks = 2
filters = [8, 16]
optimizer = "adamw"
"""


def study_text(enqueue: str = KNOWN, space: str = SPACE) -> str:
    return tiny_study_toml(space=space) + enqueue


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ("colour = 3", ["[[enqueue]][0].colour", "unknown parameter", "learning_rate"]),
        ("learning_rate = 0.5", ["[[enqueue]][0].learning_rate", "outside the range"]),
        ('optimizer = "adam"', ["[[enqueue]][0].optimizer", "not one of the choices", "'sgd'"]),
        ("filters = 12", ["[[enqueue]][0].filters", "steps of 8"]),
        ("batch_size = 32", ["[[enqueue]][0].batch_size", "fixed to 64"]),
        ("num_blocks = 1\nfilters = [8, 8]", ["[[enqueue]][0].filters", "2 values", "= 1"]),
        ("dropout = 'high'", ["[[enqueue]][0].dropout"]),
    ],
)
def test_bad_enqueue_tables_get_one_line_naming_file_and_key(
    tmp_path: Path, table: str, words: list[str]
) -> None:
    with pytest.raises(TunerError) as error:
        spec_from(tmp_path, study_text(f"\n[[enqueue]]\n{table}\n"))
    message = str(error.value)
    assert "\n" not in message and "study.toml" in message
    for word in words:
        assert word in message


def test_enqueue_is_refused_with_the_grid_sampler(tmp_path: Path) -> None:
    grid = study_text().replace('name = "random"', 'name = "grid"')
    grid = grid.replace('dropout = { type = "float", low = 0.0, high = 0.5 }', "dropout = 0.1")
    grid = grid.replace("log = true }", "log = true }", 1)
    with pytest.raises(TunerError, match=r"\[\[enqueue\]\].*grid"):
        spec_from(tmp_path, grid.replace(", log = true }", ", step = 0.001 }"))


def _value(trial: optuna.Trial, spec) -> float:
    config = suggest(trial, spec)
    return config.learning_rate * 100 + len(config.filters)


def _runs_of_known(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [
        trial
        for trial in study.get_trials(deepcopy=False)
        if trial.params.get("learning_rate") == 0.002
        and trial.params.get("num_blocks") == 2
        and trial.params.get("filters_1") == 8
        and trial.params.get("filters_2") == 16
        and trial.params.get("optimizer") == "adamw"
    ]


def test_the_known_configuration_runs_first_and_once_across_workers_and_resume(
    tmp_path: Path,
) -> None:
    spec = spec_from(tmp_path, study_text())
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    first = open_study(spec, url)
    second = open_study(spec, url, seed_offset=1_000_003)  # another worker opens the same study
    run_trials(first, lambda trial: _value(trial, spec), 2)
    run_trials(second, lambda trial: _value(trial, spec), 4)
    resumed = open_study(spec, url)  # a later `tuner run` of the same study
    run_trials(resumed, lambda trial: _value(trial, spec), 6)
    trials = resumed.get_trials(deepcopy=False)
    assert len(trials) == 6
    assert trials[0].number in [trial.number for trial in _runs_of_known(resumed)]
    assert len(_runs_of_known(resumed)) == 1
    assert "dropout" in trials[0].params  # what the table leaves out is sampled


def test_one_filter_count_applies_to_every_block(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, study_text("\n[[enqueue]]\nnum_blocks = 3\nfilters = 16\n"))
    study = open_study(spec, f"sqlite:///{tmp_path / 'db.sqlite'}")
    run_trials(study, lambda trial: _value(trial, spec), 1)
    params = study.trials[0].params
    assert (
        params["num_blocks"],
        params["filters_1"],
        params["filters_2"],
        params["filters_3"],
    ) == (
        3,
        16,
        16,
        16,
    )


LR_SCALED = SPACE.replace("log = true }", "log = true, scale_with_batch = 32 }", 1)


def test_learning_rate_range_scales_linearly_with_the_fixed_batch_size(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, tiny_study_toml(space=LR_SCALED))
    lr = spec.space["learning_rate"]
    assert (lr.low, lr.high, lr.log) == pytest.approx((2e-3, 6e-2, True))
    # An enqueued learning rate is checked against the scaled range.
    with pytest.raises(TunerError, match="outside the range"):
        spec_from(
            tmp_path, tiny_study_toml(space=LR_SCALED) + "\n[[enqueue]]\nlearning_rate = 0.001\n"
        )


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            ("batch_size = 64", 'batch_size = { type = "categorical", choices = [32, 64] }'),
            ["scale_with_batch", "fixed batch_size"],
        ),
        (("scale_with_batch = 32", "scale_with_batch = 0"), ["scale_with_batch", ">= 1"]),
        (("scale_with_batch = 32", 'scale_with_batch = "big"'), ["scale_with_batch"]),
    ],
)
def test_bad_learning_rate_scaling_gets_one_line(
    tmp_path: Path, change: tuple[str, str], words: list[str]
) -> None:
    with pytest.raises(TunerError) as error:
        spec_from(tmp_path, tiny_study_toml(space=LR_SCALED.replace(*change)))
    assert "\n" not in str(error.value) and "[space].learning_rate" in str(error.value)
    for word in words:
        assert word in str(error.value)


def test_sampled_augmentation_can_be_enqueued_and_is_checked(tmp_path: Path) -> None:
    space = SPACE + 'random_crop_padding = { type = "int", low = 0, high = 4 }\n'
    spec = spec_from(tmp_path, study_text("\n[[enqueue]]\nrandom_crop_padding = 2\n", space))
    assert spec.enqueue == ({"random_crop_padding": 2},)
    with pytest.raises(
        TunerError, match=r"\[\[enqueue\]\]\[0\]\.random_crop_padding: 9 is outside"
    ):
        spec_from(tmp_path, study_text("\n[[enqueue]]\nrandom_crop_padding = 9\n", space))
