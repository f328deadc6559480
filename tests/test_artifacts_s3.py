"""`--artifacts s3://BUCKET`: trials' checkpoints and kept weights in S3, through
optuna.artifacts.Boto3ArtifactStore, against moto's S3 emulator on 127.0.0.1 (never real AWS).

boto3 finds the emulator through AWS_ENDPOINT_URL, as it would find any S3-compatible server;
the subprocess runs inherit the same environment. Skipped where boto3 or moto[server] is absent.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch
from PIL import Image

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")  # moto[server]: flask, werkzeug

from test_checkpoints import retry, state  # noqa: E402
from test_cli import assert_user_error, invoke  # noqa: E402
from test_resume_kill import baseline as baseline  # noqa: E402  (the fixture, shared)
from test_resume_kill import sigkill, stop_then_resume  # noqa: E402

from studies import SMALL_SPACE, tiny_data, tiny_study_toml  # noqa: E402
from tuner import attrs  # noqa: E402
from tuner.engine.train import evaluate  # noqa: E402
from tuner.search.checkpoints import (  # noqa: E402
    TrialCheckpoints,
    drop_checkpoint,
    keep_best_weights,
    load_checkpoint,
    save_checkpoint,
    space_used,
    tidy,
)
from tuner.spec import load_spec  # noqa: E402
from tuner.storage.artifacts import open_artifacts  # noqa: E402
from tuner.trained import load_model  # noqa: E402

BUCKET = "tuner-test"
STUDY = tiny_study_toml(
    "s3",
    train_subset=200,
    training="max_epochs = 2\ntrials = 3\nkeep_weights = 1\ncheckpoint_seconds = 0",
    space=SMALL_SPACE,
)


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """moto's S3 on a free loopback port; its endpoint URL."""
    # Its request log would interleave with the CLI's output.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """An empty bucket in the emulator, with this process's and its children's boto3 pointed
    at it (fake credentials; no AWS config file is read); a boto3 client to inspect it."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    yield client
    for key in keys(client):
        client.delete_object(Bucket=BUCKET, Key=key)
    client.delete_bucket(Bucket=BUCKET)


def unreachable(*args, **kwargs) -> None:
    """What boto3 raises when the endpoint does not answer."""
    from botocore.exceptions import EndpointConnectionError

    raise EndpointConnectionError(endpoint_url="http://s3.example")


def keys(client) -> list[str]:
    listed = client.list_objects_v2(Bucket=BUCKET)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def sizes(client) -> int:
    listed = client.list_objects_v2(Bucket=BUCKET)
    return sum(item["Size"] for item in listed.get("Contents", []))


def test_a_run_keeps_its_best_weights_in_the_bucket_for_best_and_predict(
    s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "s3.toml").write_text(STUDY)
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    args = ["--study", "s3", "--studies-dir", studies, "--storage", storage]
    where = ["--artifacts", f"s3://{BUCKET}"]
    result = invoke("run", *args, *where)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="s3", storage=storage)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 3
    # Each finished trial swapped its checkpoints for its best weights; keep_weights = 1
    # removed all but the best trial's from the bucket.
    assert all(t.user_attrs[attrs.CHECKPOINT] is None for t in done)
    assert keys(s3) == [study.best_trial.user_attrs[attrs.BEST_WEIGHTS]["artifact_id"]]
    assert not (tmp_path / "tuner.db.artifacts").exists()  # nothing went to the disk

    status = invoke("status", *args, *where)
    assert status.exit_code == 0, status.output
    line = next(x for x in status.stdout.splitlines() if x.startswith("checkpoints and kept"))
    assert line == f"checkpoints and kept weights: {sizes(s3) / 1e3:.1f} kB in s3://{BUCKET}"

    out = tmp_path / "kept"
    result = invoke("best", *args, *where, "--model", out)
    assert result.exit_code == 0, result.output
    model, card = load_model(out)
    assert card.trial == study.best_trial.number and card.trained_on == "train"
    data = tiny_data(load_spec(studies / "s3.toml"))
    _, accuracy = evaluate(model, data, data.val_images, data.val_labels)
    assert accuracy == study.best_value
    image = tmp_path / "digit.png"
    Image.new("L", (8, 8), 128).save(image)
    assert invoke("predict", "--model", out, image).exit_code == 0

    other = next(t for t in done if t.number != study.best_trial.number)
    removed = invoke("best", *args, *where, "--trial", other.number, "--model", tmp_path / "x")
    assert_user_error(removed, f"its weights are no longer in s3://{BUCKET}")


def test_checkpoints_replace_each_other_and_go_when_dropped(s3, tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}")
    artifacts = open_artifacts(f"s3://{BUCKET}")
    trial = study.ask()
    save_checkpoint(artifacts, trial, state(1, 1.0))
    save_checkpoint(artifacts, trial, state(2, 2.0))
    assert keys(s3) == [trial.user_attrs[attrs.CHECKPOINT]["artifact_id"]]
    assert space_used(artifacts, study) == sizes(s3)

    again = retry(study, trial.number)  # a new process would see the same
    loaded = load_checkpoint(open_artifacts(f"s3://{BUCKET}", create=False), again)
    assert loaded is not None and loaded.epoch == 2
    assert torch.equal(loaded.model["layer.weight"], torch.full((3, 2), 2.0))
    drop_checkpoint(artifacts, again)
    assert keys(s3) == []


def test_tidy_removes_what_falls_out_of_the_top_once(
    s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """S3 answers a delete of a missing key as a success: tidy must not delete the removed
    weights of every past trial again at each trial's end, nor count them as removed."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}")
    artifacts = open_artifacts(f"s3://{BUCKET}")
    for value in (0.5, 0.1, 0.9, 0.3):
        trial = study.ask()
        save_checkpoint(artifacts, trial, state(2, value))
        keep_best_weights(artifacts, trial, {"w": torch.full((2,), value)}, epoch=2)
        study.tell(trial, value)
    assert len(keys(s3)) == 4
    assert tidy(artifacts, study, keep_best=2) == 2
    kept = [study.trials[n].user_attrs[attrs.BEST_WEIGHTS]["artifact_id"] for n in (1, 3)]
    assert keys(s3) == sorted(kept)
    assert space_used(artifacts, study) == sizes(s3)

    with monkeypatch.context() as patch:
        patch.setattr(artifacts.store.client, "get_paginator", unreachable)
        with caplog.at_level(logging.WARNING, logger="tuner.search.checkpoints"):
            assert tidy(artifacts, study, keep_best=1) == 0  # not the run's end
        assert "could not tidy s3://" in caplog.records[0].getMessage()
    assert tidy(artifacts, study, keep_best=1) == 1  # the next trial's end does it

    deleted = []
    remove = artifacts.store.remove
    monkeypatch.setattr(artifacts.store, "remove", lambda key: deleted.append(key) or remove(key))
    assert tidy(artifacts, study, keep_best=1) == 0
    assert deleted == []


def test_an_unreachable_bucket_costs_a_checkpoint_or_the_kept_weights_not_the_trial(
    s3, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}")
    artifacts = open_artifacts(f"s3://{BUCKET}")
    checkpoints = TrialCheckpoints(artifacts, study.ask(), "id", seed=3)

    def warning(call) -> str:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tuner.search.checkpoints"):
            call()
        (record,) = caplog.records
        return record.getMessage()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(artifacts.store, "write", unreachable)
        saved = warning(lambda: checkpoints.save(state(2)))
        assert "the checkpoint of epoch 2 was not saved in s3://" in saved
        assert "Could not connect to the endpoint URL" in saved
        assert checkpoints.resume() is None and keys(s3) == []
        kept = warning(lambda: checkpoints.keep({"w": torch.ones(2)}, epoch=2))
        assert "its best weights were not kept in s3://" in kept  # the trial's result stands

    checkpoints.save(state(3))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(artifacts.store, "open_reader", unreachable)
        unread = warning(lambda: checkpoints.resume())  # the retry trains from epoch 1
    assert "its checkpoint could not be read in s3://" in unread
    assert unread.endswith("; training from epoch 1")


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_damaged_or_missing_object_is_one_log_line_and_a_restart(
    s3, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}")
    artifacts = open_artifacts(f"s3://{BUCKET}")
    trial = study.ask()
    save_checkpoint(artifacts, trial, state(3))
    (key,) = keys(s3)
    if damage == "truncate":
        data = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        s3.put_object(Bucket=BUCKET, Key=key, Body=data[: len(data) // 2])
    else:
        s3.delete_object(Bucket=BUCKET, Key=key)
    again = retry(study, trial.number)
    with caplog.at_level(logging.WARNING, logger="tuner.search.checkpoints"):
        assert load_checkpoint(artifacts, again) is None
    (record,) = caplog.records
    expected = "is missing from s3://" if damage == "delete" else "is damaged"
    assert expected in record.getMessage() and "training from epoch 1" in record.getMessage()


def test_a_missing_bucket_or_endpoint_is_one_error_line(
    s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "s3.toml").write_text(STUDY)
    args = ["--study", "s3", "--studies-dir", studies, "--storage", f"sqlite:///{tmp_path}/t.db"]
    result = invoke("run", *args, "--artifacts", "s3://no-such-bucket")
    assert_user_error(result, "--artifacts s3://no-such-bucket", "no such bucket")
    assert invoke("run", *args, "--artifacts", f"s3://{BUCKET}", "--trials", "1").exit_code == 0
    # status still shows the trials; only the space line says why it is not measured.
    result = invoke("status", *args, "--artifacts", "s3://no-such-bucket")
    assert result.exit_code == 0, result.output
    reason = "--artifacts s3://no-such-bucket: no such bucket"
    assert f"checkpoints and kept weights: not measured ({reason})" in result.stdout.splitlines()
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    result = invoke("run", *args, "--artifacts", f"s3://{BUCKET}")
    assert_user_error(result, f"--artifacts s3://{BUCKET}", "cannot reach")


@pytest.mark.slow
def test_sigkill_mid_trial_then_a_new_process_resumes_it_from_the_bucket(
    s3, tmp_path: Path, baseline: list[tuple]
) -> None:
    """The killed run's checkpoint is in the bucket only; the new run reads it from there."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        url = f"sqlite:///{tmp_path / 'tuner.db'}"
        stop_then_resume(url, tmp_path, baseline, sigkill, artifacts=f"s3://{BUCKET}")
    assert not (tmp_path / "artifacts").exists()
    assert len(keys(s3)) == 1  # the resumed trial's best weights; its checkpoints are gone
