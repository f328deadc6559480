"""tuner.trained.retrain and `tuner retrain`: the best configuration on all training data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch
from typer.testing import CliRunner

from studies import TWO_EPOCHS, tiny_study_toml
from tuner import attrs
from tuner.cli import app
from tuner.config import TrialConfig
from tuner.data import load_dataset
from tuner.engine import DivergedError, EpochResult
from tuner.errors import TunerError
from tuner.report import RETRAIN_REPORT_FILE as REPORT_FILE
from tuner.trained.card import CARD_FILE, WEIGHTS_FILE, load_model
from tuner.trained.export import BestConfig
from tuner.trained.predict import probabilities
from tuner.trained.retrain import Retrained, epochs_for, retrain, save

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Tuning only needs to pick a trial; retrain then uses all 1438 images.
STUDY_FILE = tiny_study_toml(
    "tiny-digits",
    training=TWO_EPOCHS + "trials = 2",
    space="""\
learning_rate = { type = "float", low = 3e-3, high = 1e-2, log = true }
batch_size = 128
kernel_size = 3
num_blocks = { type = "categorical", choices = [1, 2] }
filters = { type = "categorical", choices = [4, 8] }
fc_units = 16
""",
)


@pytest.fixture(scope="module")
def retrained(tmp_path_factory) -> tuple[Path, optuna.Study, Path]:
    """A real two-trial study run through the CLI, then `tuner retrain` of its best trial."""
    folder = tmp_path_factory.mktemp("retrain")
    (folder / "tiny.toml").write_text(STUDY_FILE)
    url = f"sqlite:///{folder / 'tuner.db'}"
    torch.set_num_threads(1)
    runner = CliRunner()
    ran = runner.invoke(
        app, ["run", "--study", str(folder / "tiny.toml"), "--storage", url, "--device", "cpu"]
    )
    assert ran.exit_code == 0, ran.output
    out = folder / "out"
    result = runner.invoke(
        app,
        ["retrain", "-s", "tiny-digits", "--storage", url, "--out", str(out), "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="tiny-digits", storage=url)
    return out, study, folder


def test_writes_model_card_and_report(retrained) -> None:
    out, _, _ = retrained
    assert sorted(p.name for p in out.iterdir()) == sorted([WEIGHTS_FILE, CARD_FILE, REPORT_FILE])
    page = (out / REPORT_FILE).read_text()
    assert page.count('class="plotly-graph-div"') == 3  # confusion, per class, training
    assert "<script src=" not in page  # plotly.js is embedded


def test_card_describes_the_best_trial(retrained) -> None:
    out, study, _ = retrained
    card = json.loads((out / CARD_FILE).read_text())
    best = study.best_trial
    assert card["study"] == "tiny-digits" and card["trial"] == best.number
    assert card["epochs"] == best.user_attrs[attrs.BEST_EPOCH]
    tuned = TrialConfig.from_dict(best.user_attrs[attrs.CONFIG])
    assert card["config"]["filters"] == list(tuned.filters)
    assert card["config"]["patience"] == 0 and card["config"]["max_epochs"] == card["epochs"]
    assert card["dataset"] == "digits" and card["input_shape"] == [1, 8, 8]
    assert card["class_names"] == [str(i) for i in range(10)]
    assert card["train_count"] == 1438  # all of the official train split: train + validation
    assert card["tuner_version"] and card["created"].endswith("+00:00")
    assert card["param_count"] > 0 and len(card["mean"]) == len(card["std"]) == 1


def test_card_says_what_retraining_evaluated_and_kept(retrained) -> None:
    """No held-out data in retraining: the card says the per-epoch numbers came from training
    images and that the saved weights are the last epoch's."""
    out, _, _ = retrained
    card = json.loads((out / CARD_FILE).read_text())
    assert card["kept_epoch"] == card["epochs"]
    assert card["precision"] == "fp32"  # "auto" on CPU: an 8x8 model too small for bf16
    assert card["train_sample_count"] == 1438  # digits' 1438 training images < PROGRESS_SAMPLE
    assert len(card["train_sample_loss"]) == len(card["train_sample_accuracy"]) == card["epochs"]
    assert all(0 <= accuracy <= 1 for accuracy in card["train_sample_accuracy"])
    _, loaded = load_model(out)
    assert loaded.train_sample_accuracy == tuple(card["train_sample_accuracy"])


def test_test_accuracy_matches_a_recomputation(retrained) -> None:
    out, _, _ = retrained
    model, card = load_model(out)
    test = load_dataset("digits").test
    predicted = probabilities(model, card, test.images).argmax(dim=1)
    assert card.test_count == len(test)
    assert card.test_accuracy == int((predicted == test.labels).sum()) / len(test)
    assert card.test_accuracy > 0.3  # two epochs of a tiny CNN: well above chance (0.1)

    assert list(card.per_class_accuracy) == list(card.class_names)
    confusion = torch.tensor(card.confusion_matrix)
    assert int(confusion.sum()) == len(test)
    for index, name in enumerate(card.class_names):
        in_class = test.labels == index
        expected = (predicted[in_class] == index).float().mean().item()
        assert card.per_class_accuracy[name] == pytest.approx(expected)
        assert int(confusion[index].sum()) == int(in_class.sum())


def test_interrupted_save_leaves_no_partial_files(retrained, tmp_path: Path, monkeypatch) -> None:
    out, _, _ = retrained
    model, card = load_model(out)

    def interrupted(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a model")
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing the weights

    monkeypatch.setattr("tuner.trained.card.save_file", interrupted)
    target = tmp_path / "fresh"
    with pytest.raises(KeyboardInterrupt):
        save(target, Retrained(model, card, ()))
    assert not (target / WEIGHTS_FILE).exists()
    assert list(target.iterdir()) == []

    # Over an earlier run's files, the earlier model stays whole.
    before = {name: (out / name).read_bytes() for name in (WEIGHTS_FILE, CARD_FILE)}
    with pytest.raises(KeyboardInterrupt):
        save(out, Retrained(model, card, ()))
    assert {name: (out / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in out.iterdir()) == sorted([WEIGHTS_FILE, CARD_FILE, REPORT_FILE])


def test_epochs_default_to_the_trials_best_epoch(caplog) -> None:
    config = TrialConfig(max_epochs=9)
    assert epochs_for(BestConfig("digits", config, best_epoch=4), None) == 4
    assert epochs_for(BestConfig("digits", config, best_epoch=4), 2) == 2
    assert epochs_for(BestConfig("digits", config), None) == 9
    assert "no best epoch" in caplog.text


TINY = BestConfig("digits", TrialConfig(filters=(2,), fc_units=4, batch_size=512, seed=3))


def test_keeps_the_final_epochs_weights(monkeypatch) -> None:
    """fit restores its 'best' epoch when it ends; retrain must keep the last one instead."""

    def fake_fit(model, data, config, device, options, keep="best") -> Iterator[EpochResult]:
        first = {k: v.clone() for k, v in model.state_dict().items()}
        try:
            for epoch in range(1, config.max_epochs + 1):
                with torch.no_grad():
                    for parameter in model.parameters():
                        parameter.fill_(float(epoch))
                yield EpochResult(epoch, 1.0, 0.5, 1.0, 0.5, 0.0, improved=epoch == 1)
        finally:
            if keep == "best":
                model.load_state_dict(first)  # like fit: back to the epoch it judged best

    monkeypatch.setattr("tuner.trained.retrain.fit", fake_fit)
    result = retrain(TINY, load_dataset("digits"), torch.device("cpu"), epochs=3)
    assert all(torch.all(p == 3.0) for p in result.model.parameters())
    assert [r.epoch for r in result.history] == [1, 2, 3]


def test_divergence_is_a_user_error(monkeypatch) -> None:
    def diverging_fit(model, data, config, device, options, keep="best") -> Iterator[EpochResult]:
        raise DivergedError(1, float("nan"))
        yield  # a generator, like fit

    monkeypatch.setattr("tuner.trained.retrain.fit", diverging_fit)
    with pytest.raises(TunerError, match="diverged"):
        retrain(TINY, load_dataset("digits"), torch.device("cpu"), epochs=1)


def test_cli_needs_study_or_config() -> None:
    result = CliRunner().invoke(app, ["retrain"])
    assert result.exit_code == 2
    assert "--study NAME or --config FILE" in result.stderr
