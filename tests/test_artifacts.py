"""tuner.trained.card: saving and loading a model + card, and refusing files that are not one."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import pytest
import torch
from model_fixtures import save_untrained_model, untrained_card
from safetensors.torch import save_file

from tuner.errors import TunerError
from tuner.trained.card import CARD_FILE, WEIGHTS_FILE, ModelCard, load_card, load_model, save_model


@pytest.fixture
def saved(tmp_path: Path):
    directory = tmp_path / "model"
    model, card = save_untrained_model(directory)
    return directory, model, card


def test_round_trip_gives_identical_logits(saved) -> None:
    directory, model, card = saved
    images = torch.randint(0, 256, (5, *card.input_shape), dtype=torch.uint8)
    with torch.inference_mode():
        expected = model(card.normalise(images))
    for path in (directory, directory / WEIGHTS_FILE, directory / CARD_FILE):
        loaded, loaded_card = load_model(path)
        with torch.inference_mode():
            assert torch.equal(loaded(loaded_card.normalise(images)), expected)
        assert not loaded.training


def test_card_round_trips_through_json(saved) -> None:
    directory, _, card = saved
    loaded = load_card(directory)
    assert loaded.weights_sha256  # filled in by save_model
    assert loaded == ModelCard(**{**card.__dict__, "weights_sha256": loaded.weights_sha256})
    data = json.loads((directory / CARD_FILE).read_text())
    assert data["format"] == "tuner-model/1"
    assert data["input_shape"] == [1, 8, 8]
    assert data["config"]["filters"] == [4, 6]


def test_normalise_matches_training_arithmetic() -> None:
    from tuner.data import ImageSet, Splits
    from tuner.engine import to_device

    card = untrained_card(channels=3)
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    labels = torch.zeros(4, dtype=torch.int64)
    data = to_device(
        Splits(ImageSet(images, labels), ImageSet(images, labels), 3, card.mean, card.std),
        torch.device("cpu"),
    )
    assert torch.equal(card.normalise(images), data.normalise(images))


def test_garbage_bytes_are_refused_naming_the_file(saved) -> None:
    directory, _, _ = saved
    weights = directory / WEIGHTS_FILE
    weights.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(TunerError, match=str(weights)) as error:
        load_model(directory)
    assert "safetensors" in str(error.value)
    assert "\n" not in str(error.value)


class _Evil:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_a_malicious_pickle_is_never_executed(saved, tmp_path: Path, writer: str) -> None:
    directory, _, _ = saved
    marker = tmp_path / "pwned"
    weights = directory / WEIGHTS_FILE
    if writer == "pickle":
        weights.write_bytes(pickle.dumps(_Evil(marker)))
    else:
        buffer = io.BytesIO()
        torch.save({"model": _Evil(marker)}, buffer)
        weights.write_bytes(buffer.getvalue())
    with pytest.raises(TunerError, match=str(weights)):
        load_model(weights)
    assert not marker.exists()


def test_a_pickled_state_dict_renamed_is_refused(saved) -> None:
    directory, model, _ = saved
    weights = directory / WEIGHTS_FILE
    torch.save(model.state_dict(), weights)
    with pytest.raises(TunerError, match="not a safetensors weights file"):
        load_model(directory)


def test_missing_card(saved) -> None:
    directory, _, _ = saved
    (directory / CARD_FILE).unlink()
    with pytest.raises(TunerError, match=f"{directory / WEIGHTS_FILE}: not a tuner model"):
        load_model(directory / WEIGHTS_FILE)


def test_no_such_model(tmp_path: Path) -> None:
    with pytest.raises(TunerError, match="no such model"):
        load_model(tmp_path / "nothing")


def test_malformed_card(saved) -> None:
    directory, _, _ = saved
    card = directory / CARD_FILE
    card.write_text("{not json")
    with pytest.raises(TunerError, match=f"{card}: unreadable model card"):
        load_model(directory)
    card.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(TunerError, match=f"{card}: not a tuner model card"):
        load_model(directory)


def test_shape_mismatch_names_the_file(saved) -> None:
    directory, _, _ = saved
    card_path = directory / CARD_FILE
    data = json.loads(card_path.read_text())
    data["config"]["filters"] = [5, 6]  # the weights were saved for [4, 6]
    card_path.write_text(json.dumps(data))
    with pytest.raises(TunerError, match=f"{directory / WEIGHTS_FILE}: weights do not fit") as e:
        load_model(directory)
    assert "size mismatch" in str(e.value)
    assert "\n" not in str(e.value)


def test_wrong_keys_are_refused(tmp_path: Path) -> None:
    directory = tmp_path / "model"
    save_untrained_model(directory)
    save_file({"something.else": torch.zeros(3)}, str(directory / WEIGHTS_FILE))
    data = json.loads((directory / CARD_FILE).read_text())
    data["weights_sha256"] = ""  # a hand-made card without checksum
    (directory / CARD_FILE).write_text(json.dumps(data))
    with pytest.raises(TunerError, match="Missing key"):
        load_model(directory)


def test_weights_from_another_run_are_refused(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    save_untrained_model(first, seed=1)
    save_untrained_model(second, seed=2)
    (first / WEIGHTS_FILE).write_bytes((second / WEIGHTS_FILE).read_bytes())
    with pytest.raises(TunerError, match="checksum differs"):
        load_model(first)


def test_save_is_atomic_when_interrupted(tmp_path: Path, monkeypatch) -> None:
    directory = tmp_path / "model"
    model, card = save_untrained_model(tmp_path / "first")

    def interrupted(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr("tuner.trained.card.save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_model(directory, model, card)
    assert list(directory.iterdir()) == []  # no partial file, no temporary file


def test_saved_files_are_readable_by_others(saved) -> None:
    directory, _, _ = saved
    for name in (WEIGHTS_FILE, CARD_FILE):
        assert (directory / name).stat().st_mode & 0o044 == 0o044
