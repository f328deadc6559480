"""A known dataset is recognised by its content: MNIST files are refused as Fashion-MNIST and
the other way round, by the published files' checksums or by pixel statistics for subsets."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest
from datasets import write_idx_dataset, write_idx_lookalike
from typer.testing import CliRunner

from tuner.cli import app
from tuner.data import Dataset, identity, load_dataset
from tuner.data.registry import IDX_SIGNATURES
from tuner.errors import TunerError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
MNIST_10K, FASHION = SHARED / "mnist-10k", SHARED / "fashion-mnist"
STUDIES = Path(__file__).resolve().parents[1] / "studies"
TITLES = {"mnist": "MNIST digits", "fashion-mnist": "Fashion-MNIST"}


def load(name: str, data_dir: Path, cache: Path) -> Dataset:
    return load_dataset(name, data_dir, cache, download=False)


def load_error(name: str, data_dir: Path, cache: Path) -> str:
    with pytest.raises(TunerError) as caught:
        load(name, data_dir, cache)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("like", "name"), [("mnist", "fashion-mnist"), ("fashion-mnist", "mnist")])
def test_lookalike_files_of_the_other_dataset_are_refused(
    tmp_path: Path, like: str, name: str
) -> None:
    source, cache = write_idx_lookalike(tmp_path / like, like), tmp_path / "cache"
    message = load_error(name, source, cache)
    assert message.startswith(f"{source / 'train-images-idx3-ubyte.gz'}: ")
    assert f"look like {TITLES[like]}, not {TITLES[name]}" in message
    assert "pixel mean" in message
    assert not list(cache.glob("*.safetensors")), "a refused dataset must not be cached"


@pytest.mark.parametrize("like", ["mnist", "fashion-mnist"])
def test_lookalike_files_load_under_their_own_name(tmp_path: Path, like: str) -> None:
    dataset = load(like, write_idx_lookalike(tmp_path / like, like), tmp_path / "cache")
    assert (len(dataset.train), len(dataset.test)) == (400, 100)


def test_a_test_split_of_the_other_dataset_is_refused_too(tmp_path: Path) -> None:
    fashion = write_idx_lookalike(tmp_path / "fashion", "fashion-mnist")
    digits = write_idx_lookalike(tmp_path / "digits", "mnist")
    for stem in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (fashion / stem).write_bytes((digits / stem).read_bytes())
    message = load_error("fashion-mnist", fashion, tmp_path / "cache")
    assert message.startswith(f"{fashion / 't10k-images-idx3-ubyte.gz'}: these images look like")


def test_a_published_files_checksum_names_the_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Random pixels look like neither dataset, so only the checksum can tell.
    source = write_idx_dataset(tmp_path / "data", train=40, test=10)
    labels = source / "train-labels-idx1-ubyte.gz"
    md5 = hashlib.md5(gzip.decompress(labels.read_bytes())).hexdigest()
    published = IDX_SIGNATURES["fashion-mnist"].published_md5
    monkeypatch.setitem(published, md5, "train-labels-idx1-ubyte")
    message = load_error("mnist", source, tmp_path / "cache")
    assert message.startswith(f"{labels}: ")
    assert "is the published Fashion-MNIST train-labels-idx1-ubyte (MD5 " in message
    assert "not MNIST digits" in message
    assert len(load("fashion-mnist", source, tmp_path / "cache").train) == 40


def test_the_content_is_checked_when_decoding_not_on_every_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, cache = write_idx_lookalike(tmp_path / "f", "fashion-mnist"), tmp_path / "cache"
    checks: list[str] = []
    real = identity.check_idx_identity

    def counting(name, files, signatures):
        checks.append(name)
        return real(name, files, signatures)

    monkeypatch.setattr(identity, "check_idx_identity", counting)
    load("fashion-mnist", source, cache)
    load("fashion-mnist", source, cache)
    assert checks == ["fashion-mnist"]


# ---------------------------------------------------------------- the real files in ../shared

needs_mnist = pytest.mark.skipif(not MNIST_10K.is_dir(), reason=f"{MNIST_10K} is not here")
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason=f"{FASHION} is not here")


@needs_mnist
def test_real_mnist_subset_is_refused_as_fashion_mnist(tmp_path: Path) -> None:
    message = load_error("fashion-mnist", MNIST_10K, tmp_path)
    assert message.startswith(f"{MNIST_10K / 'train-images-idx3-ubyte.gz'}: ")
    assert "these images look like MNIST digits, not Fashion-MNIST (pixel mean 0.13" in message


@needs_mnist
def test_the_cli_refuses_the_fashion_study_on_mnist_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["run", "--study", str(STUDIES / "fashion-mnist.toml"), "--trials", "1",
         "--storage", f"sqlite:///{tmp_path / 'tuner.db'}", "--data-dir", str(MNIST_10K),
         "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "look like MNIST digits, not Fashion-MNIST" in lines[0]


@needs_fashion
def test_real_fashion_mnist_is_recognised_by_its_published_checksums(tmp_path: Path) -> None:
    message = load_error("mnist", FASHION, tmp_path)
    assert message.startswith(f"{FASHION / 'train-images-idx3-ubyte.gz'}: ")
    assert "is the published Fashion-MNIST train-images-idx3-ubyte" in message
    dataset = load("fashion-mnist", FASHION, tmp_path)
    assert (len(dataset.train), len(dataset.test)) == (60_000, 10_000)
