"""Integration check on real MNIST digits from ../shared/datasets (skipped where absent)."""

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from tuner.cli import app
from tuner.data import load_dataset

MNIST_10K = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist-10k"

pytestmark = [
    pytest.mark.skipif(not MNIST_10K.is_dir(), reason=f"{MNIST_10K} is not here"),
    pytest.mark.usefixtures("one_torch_thread"),
]

SMALL_MNIST_STUDY = """
name = "mnist-small"
[sampler]
name = "tpe"
seed = 0
[pruner]
name = "none"
[dataset]
name = "mnist"
train_subset = 3000
[training]
max_epochs = 2
patience = 0
[space]
learning_rate = { type = "float", low = 2e-3, high = 4e-3, log = true }
batch_size = 64
kernel_size = 3
num_blocks = 2
filters = { type = "categorical", choices = [16] }
fc_units = 64
dropout = 0.1
"""


def test_real_mnist_files_load_with_the_documented_split(tmp_path):
    dataset = load_dataset("mnist", MNIST_10K, tmp_path, download=False)
    assert dataset.input_shape == (1, 28, 28)
    assert (len(dataset.train), len(dataset.test)) == (8000, 2000)
    assert sorted(dataset.train.labels.unique().tolist()) == list(range(10))


def test_a_short_study_on_real_mnist_learns_the_digits(tmp_path):
    study_file = tmp_path / "mnist-small.toml"
    study_file.write_text(SMALL_MNIST_STUDY)
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    result = CliRunner().invoke(
        app,
        ["run", "--study", str(study_file), "--trials", "1", "--storage", url,
         "--data-dir", str(MNIST_10K), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    trial = optuna.load_study(study_name="mnist-small", storage=url).trials[0]
    assert trial.state == TrialState.COMPLETE
    # Two epochs on 3,000 real digits: a working pipeline is far above chance (0.1).
    assert trial.value >= 0.93
