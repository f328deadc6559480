"""Search space -> trial configs: every declared parameter is sampled, within its range."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch

from studies import spec_from
from tuner.config import TrialConfig
from tuner.data import load_dataset, split
from tuner.engine import to_device
from tuner.errors import TunerError
from tuner.search.objective import make_objective
from tuner.search.samplers import make_sampler
from tuner.search.space import common_distributions, grid_search_space, suggest
from tuner.search.study import open_study, run_trials
from tuner.spec import PARAMETERS, StudySpec
from tuner.spec.grid import grid_size

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Every parameter of tuner.spec.PARAMETERS declared as a range or as choices.
ALL_RANGES = """\
name = "all-ranges"
[sampler]
name = "random"
[space]
learning_rate = { type = "float", low = 1e-4, high = 1e-1, log = true }
batch_size = { type = "categorical", choices = [16, 32, 64] }
kernel_size = { type = "categorical", choices = [3, 5] }
num_blocks = { type = "int", low = 1, high = 3 }
filters = { type = "int", low = 4, high = 16, step = 4 }
fc_units = { type = "int", low = 8, high = 64, log = true }
dropout = { type = "float", low = 0.0, high = 0.5 }
weight_decay = { type = "float", low = 1e-6, high = 1e-2, log = true }
label_smoothing = { type = "float", low = 0.0, high = 0.2, step = 0.05 }
optimizer = { type = "categorical", choices = ["adamw", "sgd"] }
momentum = { type = "float", low = 0.5, high = 0.99 }
batch_norm = { type = "categorical", choices = [true, false] }
"""

FIXED = """\
name = "fixed"
[space]
learning_rate = { type = "float", low = 1e-3, high = 1e-2, log = true }
batch_size = 48
kernel_size = 5
num_blocks = 2
filters = 12
fc_units = 20
dropout = 0.125
weight_decay = 0.001
label_smoothing = 0.05
optimizer = "sgd"
momentum = 0.8
batch_norm = false
[training]
max_epochs = 7
patience = 2
seed = 100
"""

GRID = """\
name = "grid"
[sampler]
name = "grid"
[pruner]
name = "none"
[dataset]
name = "digits"
train_subset = 200
[training]
max_epochs = 1
[space]
learning_rate = { type = "categorical", choices = [0.003, 0.03] }
dropout = { type = "float", low = 0.0, high = 0.2, step = 0.1 }
num_blocks = { type = "categorical", choices = [1, 2] }
filters = { type = "categorical", choices = [4, 8] }
batch_size = 64
fc_units = 16
"""


def sample(
    spec: StudySpec, n: int, sampler: optuna.samplers.BaseSampler | None = None
) -> list[tuple[optuna.trial.FrozenTrial, TrialConfig]]:
    """Ask `n` trials (RandomSampler by default) and the config `suggest` makes of each."""
    study = optuna.create_study(sampler=sampler or optuna.samplers.RandomSampler(seed=0))
    results = []
    for _ in range(n):
        trial = study.ask()
        config = suggest(trial, spec)
        study.tell(trial, 0.0)
        results.append((study.trials[-1], config))
    return results


def test_every_declared_parameter_is_sampled(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, ALL_RANGES)
    seen_blocks = set()
    for trial, config in sample(spec, 30):
        blocks = trial.params["num_blocks"]
        seen_blocks.add(blocks)
        filter_names = {f"filters_{k}" for k in range(1, blocks + 1)}
        assert set(trial.params) == (set(PARAMETERS) - {"filters"}) | filter_names
        assert config.num_blocks == blocks
        assert config.filters == tuple(trial.params[name] for name in sorted(filter_names))
        for name in set(PARAMETERS) - {"filters", "num_blocks"}:
            assert getattr(config, name) == trial.params[name]
    assert seen_blocks == {1, 2, 3}


def test_fixed_values_are_taken_as_given(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, FIXED)
    (trial, config), *_ = sample(spec, 1)
    assert set(trial.params) == {"learning_rate"}
    assert config == TrialConfig(
        learning_rate=trial.params["learning_rate"],
        batch_size=48,
        kernel_size=5,
        filters=(12, 12),
        fc_units=20,
        dropout=0.125,
        weight_decay=0.001,
        label_smoothing=0.05,
        optimizer="sgd",
        momentum=0.8,
        batch_norm=False,
        max_epochs=7,
        patience=2,
        seed=100 + trial.number,
    )


def test_sampled_values_stay_within_their_declared_ranges(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, ALL_RANGES)
    seen: dict[str, set] = {name: set() for name in trial_param_names(spec)}
    for trial, _ in sample(spec, 120, optuna.samplers.RandomSampler(seed=1)):
        for name, value in trial.params.items():
            param = spec.space["filters" if name.startswith("filters_") else name]
            seen[name].add(value)
            if param.type == "categorical":
                assert value in param.choices, name
                continue
            assert param.low <= value <= param.high, (name, value)
            if param.type == "int":
                assert isinstance(value, int)
            if param.step is not None:
                steps = (value - param.low) / param.step
                assert math.isclose(steps, round(steps), abs_tol=1e-9), (name, value)
    for name, param in spec.space.items():
        if param.type == "categorical":
            assert seen[name] == set(param.choices), name  # every choice comes up
    assert seen["filters_1"] == {4, 8, 12, 16}
    assert min(seen["learning_rate"]) < 1e-3 < 1e-2 < max(seen["learning_rate"])  # log-uniform


def trial_param_names(spec: StudySpec) -> list[str]:
    blocks = spec.space["num_blocks"].high
    names = [name for name in spec.space if name != "filters"]
    return names + [f"filters_{k}" for k in range(1, blocks + 1)]


def run_grid(spec: StudySpec) -> tuple[optuna.Study, list[TrialConfig]]:
    """Every point of a grid study, through `suggest` and an objective that trains nothing."""
    study = optuna.create_study(sampler=make_sampler(spec))
    configs = []

    def objective(trial: optuna.Trial) -> float:
        configs.append(suggest(trial, spec))
        return 0.0

    # More trials than the grid has: the grid sampler stops the study when every point ran.
    study.optimize(objective, n_trials=1_000_000)
    return study, configs


def test_grid_search_space_enumerates_the_grid(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, GRID)
    assert grid_search_space(spec) == {
        "learning_rate": [0.003, 0.03],
        "dropout": [0.0, 0.1, 0.2],  # exact decimals, not 0.30000000000000004
        # num_blocks and filters as one parameter: each distinct conv stack once
        "filters_per_block": ["[4]", "[8]", "[4, 4]", "[4, 8]", "[8, 4]", "[8, 8]"],
    }


def test_grid_of_int_and_float_steps(tmp_path: Path) -> None:
    text = GRID.replace(
        'filters = { type = "categorical", choices = [4, 8] }',
        'filters = { type = "int", low = 4, high = 16, step = 6 }',
    ).replace("high = 0.2, step = 0.1", "high = 0.3, step = 0.1")
    grid = grid_search_space(spec_from(tmp_path, text))
    assert grid["filters_per_block"][:4] == ["[4]", "[10]", "[16]", "[4, 4]"]
    assert len(grid["filters_per_block"]) == 3 + 3**2
    assert grid["dropout"] == [0.0, 0.1, 0.2, 0.3]


def test_grid_with_fixed_filters_keeps_num_blocks(tmp_path: Path) -> None:
    text = GRID.replace('filters = { type = "categorical", choices = [4, 8] }', "filters = 4")
    spec = spec_from(tmp_path, text)
    assert grid_search_space(spec)["num_blocks"] == [1, 2]
    assert "filters_per_block" not in grid_search_space(spec)
    _, configs = run_grid(spec)
    assert len(configs) == 2 * 3 * 2  # num_blocks x dropout x learning_rate
    assert {config.filters for config in configs} == {(4,), (4, 4)}


# num_blocks 1..3 with 3 filter values: 3 + 9 + 27 distinct conv stacks; x 2 optimizers.
DEEP_GRID = """\
name = "deep-grid"
[sampler]
name = "grid"
[space]
learning_rate = 0.01
num_blocks = { type = "int", low = 1, high = 3 }
filters = { type = "categorical", choices = [4, 8, 16] }
optimizer = { type = "categorical", choices = ["adamw", "sgd"] }
"""


def test_grid_study_trains_each_distinct_config_once(tmp_path: Path) -> None:
    study, configs = run_grid(spec_from(tmp_path, DEEP_GRID))
    expected = (3 + 3**2 + 3**3) * 2
    assert len(configs) == expected
    effective = {replace(config, seed=0) for config in configs}  # the seed follows the trial
    assert len(effective) == expected
    assert {config.filters for config in configs} == {
        stack for blocks in (1, 2, 3) for stack in itertools.product((4, 8, 16), repeat=blocks)
    }
    assert all(set(t.params) == {"filters_per_block", "optimizer"} for t in study.trials)


def test_grid_size_in_messages_counts_distinct_configs(tmp_path: Path) -> None:
    seven = "[4, 8, 12, 16, 24, 32, 64]"
    # 1..6 blocks of 7 filter values: 137256 distinct stacks (not 6 * 7**6), x 2 optimizers.
    text = DEEP_GRID.replace("high = 3", "high = 6").replace("[4, 8, 16]", seven)
    with pytest.raises(TunerError, match="the grid has 274512 points"):
        spec_from(tmp_path, text)
    # 1..5 blocks: 19607 stacks x 2 optimizers, under the limit (the full product is 168070).
    spec = spec_from(tmp_path, text.replace("high = 6", "high = 5"))
    assert len(grid_search_space(spec)["filters_per_block"]) == 19607


@pytest.mark.parametrize(
    ("text", "points"),
    [
        (GRID, 2 * 3 * 6),
        (GRID.replace('filters = { type = "categorical", choices = [4, 8] }', "filters = 4"), 12),
        (DEEP_GRID, (3 + 3**2 + 3**3) * 2),
        (DEEP_GRID.replace('{ type = "int", low = 1, high = 3 }', "2"), 3**2 * 2),
    ],
    ids=["grid", "fixed filters", "deep grid", "fixed depth"],
)
def test_grid_size_counts_the_points_grid_search_space_lists(
    tmp_path: Path, text: str, points: int
) -> None:
    """The spec refuses grids by this count without listing them: both must agree."""
    spec = spec_from(tmp_path, text)
    assert grid_size(spec.space) == points
    assert math.prod(len(values) for values in grid_search_space(spec).values()) == points


def test_common_distributions_are_what_every_trial_samples(tmp_path: Path) -> None:
    """The spec tries samplers on these before a study starts; they must match `suggest`."""
    spec = spec_from(tmp_path, ALL_RANGES.replace("low = 1, high = 3", "low = 2, high = 3"))
    trials = [trial for trial, _ in sample(spec, 20)]
    common = set.intersection(*(set(trial.params) for trial in trials))
    assert {trial.params["num_blocks"] for trial in trials} == {2, 3}
    distributions = common_distributions(spec.space)
    assert set(distributions) == common  # filters_1 and filters_2, never the conditional filters_3
    for trial in trials:
        assert all(trial.distributions[name] == distributions[name] for name in common)


def test_parsing_a_study_file_loads_no_lower_layer_torch_or_optuna(tmp_path: Path) -> None:
    """The spec sits above search and engine: parsing reads registries that load neither;
    the pre-flight step (tuner.search.preflight) is the only part that needs them."""
    path = tmp_path / "tiny.toml"
    path.write_text(
        '[dataset]\nname = "digits"\n[model]\nfamily = "resnet18"\n'
        '[space]\nlearning_rate = { type = "float", low = 1e-4, high = 1e-2, log = true }\n'
    )
    code = (
        "import sys; from tuner.spec import read_spec; read_spec(sys.argv[1]); "
        "print(sorted(name for name in sys.modules if name.split('.')[0] in "
        "('torch', 'optuna') or name.startswith(('tuner.search', 'tuner.engine'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("sampler", ["tpe", "random", "qmc"])
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # QMCSampler
def test_other_samplers_keep_one_filters_param_per_block(tmp_path: Path, sampler: str) -> None:
    spec = spec_from(tmp_path, DEEP_GRID.replace('name = "grid"', f'name = "{sampler}"'))
    for trial, config in sample(spec, 12, make_sampler(spec)):
        blocks = trial.params["num_blocks"]
        names = {f"filters_{k}" for k in range(1, blocks + 1)}
        assert set(trial.params) == {"num_blocks", "optimizer"} | names
        assert config.filters == tuple(trial.params[f"filters_{k}"] for k in range(1, blocks + 1))


def test_short_grid_study_runs_every_point_once(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, GRID.replace("high = 0.2, step = 0.1", "high = 0.0, step = 0.1"))
    data = to_device(
        split(
            load_dataset("digits"),
            val_fraction=spec.dataset.val_fraction,
            split_seed=spec.dataset.split_seed,
            train_subset=spec.dataset.train_subset,
        ),
        torch.device("cpu"),
    )
    study = open_study(spec, optuna.storages.InMemoryStorage())
    assert isinstance(study.sampler, optuna.samplers.GridSampler)
    # Ask for more trials than the grid has: the grid sampler stops the study when it is done.
    outcome = run_trials(study, make_objective(spec, data, torch.device("cpu")), 100)
    grid = grid_search_space(spec)
    assert outcome.finished_after == len(study.trials) == math.prod(map(len, grid.values()))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    grid_ids = sorted(t.system_attrs["grid_id"] for t in study.trials)
    assert grid_ids == list(range(len(study.trials)))  # every grid point once
    points = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    assert sorted(sorted(t.params.items()) for t in study.trials) == sorted(
        sorted(point.items()) for point in points
    )
    # Each trial's stored config (what export and retrain rebuild from) has its own filters.
    stored = {tuple(t.user_attrs["config"]["filters"]) for t in study.trials}
    assert stored == {(4,), (8,), (4, 4), (4, 8), (8, 4), (8, 8)}


def test_seeded_sampling_repeats_and_workers_get_distinct_seeds(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, ALL_RANGES)

    def params(seed_offset: int) -> list[dict]:
        return [t.params for t, _ in sample(spec, 3, make_sampler(spec, seed_offset))]

    assert params(0) == params(0)
    assert params(0) != params(1)
