"""tuner.search.checkpoints, tuner.storage.artifacts: trials' files in an Optuna artifact store."""

from __future__ import annotations

import builtins
import logging
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from tuner import attrs
from tuner.engine.checkpoint import RngState, TrainingState
from tuner.errors import TunerError
from tuner.search.checkpoints import (
    TrialCheckpoints,
    drop_checkpoint,
    keep_best_weights,
    load_best_weights,
    load_checkpoint,
    requeue_budget_cut,
    run_identity,
    save_checkpoint,
    space_used,
    tidy,
)
from tuner.storage.artifacts import ARTIFACTS_ENV, open_artifacts, resolve_artifacts

optuna.logging.set_verbosity(optuna.logging.WARNING)


def state(epoch: int, value: float = 0.0) -> TrainingState:
    weights = {"layer.weight": torch.full((3, 2), value), "layer.bias": torch.zeros(3)}
    return TrainingState(
        epoch=epoch,
        model=weights,
        optimizer={"state": {0: {"step": torch.tensor(float(epoch))}}, "param_groups": []},
        scheduler={"last_epoch": epoch},
        rng=RngState(
            torch=torch.get_rng_state(),
            cuda=(),
            numpy=np.random.get_state(),
            python=(3, tuple(range(625)), None),
            generator=torch.Generator().get_state(),
        ),
        history=tuple({"epoch": e, "val_loss": 1.0 / e} for e in range(1, epoch + 1)),
        best_loss=1.0 / epoch,
        best_epoch=epoch,
        epochs_without_improvement=0,
        best_model=weights,
    )


@pytest.fixture
def study(tmp_path: Path) -> optuna.Study:
    return optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s")


@pytest.fixture
def artifacts(tmp_path: Path):
    return open_artifacts(str(tmp_path / "artifacts"))


def files(artifacts) -> list[Path]:
    return sorted(artifacts.folder.iterdir())


def retry(study: optuna.Study, number: int) -> optuna.Trial:
    """Fail trial `number` and take its retry, as a dead worker's trial is re-run."""
    study.tell(number, state=TrialState.FAIL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=None)(study, study.trials[number])
    return study.ask()


def test_a_retried_trial_finds_its_predecessors_last_checkpoint(study, artifacts) -> None:
    trial = study.ask()
    save_checkpoint(artifacts, trial, state(1, 1.0))
    save_checkpoint(artifacts, trial, state(2, 2.0))
    assert len(files(artifacts)) == 1  # the epoch-1 checkpoint is gone once epoch 2 is kept

    again = retry(study, trial.number)
    loaded = load_checkpoint(artifacts, again)
    assert loaded is not None and loaded.epoch == 2
    assert torch.equal(loaded.model["layer.weight"], torch.full((3, 2), 2.0))
    assert [row["epoch"] for row in loaded.history] == [1, 2]

    save_checkpoint(artifacts, again, state(3, 3.0))  # the retry's own replaces the old one
    assert len(files(artifacts)) == 1
    assert again.user_attrs[attrs.CHECKPOINT]["trial"] == again.number
    assert load_checkpoint(artifacts, study.ask()) is None  # a new trial has none


def test_uploads_a_killed_save_left_behind_go_once_their_trial_is_settled(
    study, artifacts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed between the new checkpoint's pointer and removing the old file leaves
    the old file to nobody; tidy removes it once its trial is settled, never the user's."""
    trial = study.ask()
    save_checkpoint(artifacts, trial, state(1))
    own = tmp_path / "notes.txt"
    own.write_text("the user's own upload")
    optuna.artifacts.upload_artifact(
        artifact_store=artifacts.store, file_path=str(own), study_or_trial=trial
    )

    def killed(*_: object) -> int:
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr("tuner.search.checkpoints._remove", killed)
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(artifacts, trial, state(2))
    assert len(files(artifacts)) == 3
    assert tidy(artifacts, study) == 0  # the trial still runs: a save may be in flight

    again = retry(study, trial.number)  # the dead worker's trial fails and is retried
    resumed = load_checkpoint(artifacts, again)
    assert resumed is not None and resumed.epoch == 2
    save_checkpoint(artifacts, again, state(3))
    keep_best_weights(artifacts, again, {"w": torch.ones(2)}, epoch=3)
    study.tell(again, 0.5)
    assert tidy(artifacts, study) == 1  # the epoch-1 checkpoint nothing pointed at
    names = sorted(path.read_bytes()[:40] for path in files(artifacts))
    assert len(names) == 2 and b"the user's own upload" in names
    assert load_best_weights(artifacts, study.trials[again.number])[1] == 3


def test_a_just_failed_trial_keeps_its_checkpoint_for_the_retry_being_queued(
    study, artifacts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Optuna fails a dead worker's trial, then queues its retry: a tidy in between (another
    worker's trial ending) leaves the checkpoint; long after, with no retry, it goes."""
    trial = study.ask()
    save_checkpoint(artifacts, trial, state(2))
    study.tell(trial, state=TrialState.FAIL)
    assert tidy(artifacts, study) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=None)(study, study.trials[trial.number])
    again = study.ask()
    assert load_checkpoint(artifacts, again).epoch == 2

    lost = study.ask()
    save_checkpoint(artifacts, lost, state(1))
    study.tell(lost, state=TrialState.FAIL)  # its worker died before queueing a retry
    monkeypatch.setattr("tuner.search.checkpoints.FAILED_TRIAL_GRACE", timedelta(0))
    assert tidy(artifacts, study) == 1
    assert load_checkpoint(artifacts, again).epoch == 2  # the retry's is live


def test_a_save_killed_inside_the_write_leaves_nothing_tidy_cannot_find(
    study, artifacts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is linked to its trial before it is written (optuna-dashboard lists it the
    same way), so a worker killed once the bytes are stored leaves a file tidy removes."""
    trial = study.ask()
    save_checkpoint(artifacts, trial, state(1))
    write = artifacts.store.write

    def killed_after_writing(artifact_id: str, content) -> None:
        write(artifact_id, content)
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(artifacts.store, "write", killed_after_writing)
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(artifacts, trial, state(2))
    assert len(files(artifacts)) == 2
    listed = optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
    assert sorted(meta.filename for meta in listed) == [
        "trial-0-epoch-1.ckpt",
        "trial-0-epoch-2.ckpt",
    ]
    study.tell(trial, state=TrialState.FAIL)  # the dead worker's trial, never retried
    monkeypatch.setattr("tuner.search.checkpoints.FAILED_TRIAL_GRACE", timedelta(0))
    assert tidy(artifacts, study) == 2
    assert files(artifacts) == []


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_damaged_or_missing_checkpoint_is_one_log_line_and_a_restart(
    study, artifacts, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    trial = study.ask()
    save_checkpoint(artifacts, trial, state(4))
    (path,) = files(artifacts)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-100] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        path.unlink()
    again = retry(study, trial.number)
    with caplog.at_level(logging.WARNING, logger="tuner.search.checkpoints"):
        assert load_checkpoint(artifacts, again) is None
    (record,) = caplog.records
    expected = "is missing from" if damage == "delete" else "is damaged (checksum differs"
    assert expected in record.getMessage()
    assert f"the checkpoint of epoch 4 (left by trial {trial.number})" in record.getMessage()
    assert "training from epoch 1" in record.getMessage()


def test_a_checkpoint_of_another_configuration_is_not_resumed(
    study, artifacts, caplog: pytest.LogCaptureFixture
) -> None:
    """A budget run that planned other epochs must not continue a schedule it did not start."""
    config = {"learning_rate": 0.01, "max_epochs": 10}
    trial = study.ask()
    save_checkpoint(artifacts, trial, state(2), run_identity(config, 1000))
    again = retry(study, trial.number)
    assert load_checkpoint(artifacts, again, run_identity(config, 1000)) is not None
    for other in (run_identity({**config, "max_epochs": 12}, 1000), run_identity(config, 999)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tuner.search.checkpoints"):
            assert load_checkpoint(artifacts, again, other) is None
        (record,) = caplog.records
        assert "saved for another configuration or number of epochs" in record.getMessage()


def test_a_pruned_trial_drops_its_checkpoint(study, artifacts) -> None:
    trial = study.ask()
    save_checkpoint(artifacts, trial, state(1))
    drop_checkpoint(artifacts, trial)
    assert files(artifacts) == []
    assert load_checkpoint(artifacts, trial) is None


def test_only_the_best_finished_trials_keep_their_weights(study, artifacts) -> None:
    """Finished trials swap their checkpoint for their best weights; tidy keeps the top K."""
    for number, value in enumerate([0.5, 0.1, 0.9, 0.3]):
        trial = study.ask()
        save_checkpoint(artifacts, trial, state(2, value))
        keep_best_weights(artifacts, trial, {"w": torch.full((2,), value)}, epoch=2)
        study.tell(trial, value)
        assert number == trial.number
    running = study.ask()
    save_checkpoint(artifacts, running, state(1))
    assert len(files(artifacts)) == 5  # four kept weights, one running checkpoint
    used = space_used(artifacts, study)
    assert used == sum(p.stat().st_size for p in files(artifacts))

    assert tidy(artifacts, study, keep_best=2) == 2  # minimising: trials 1 and 3 stay
    assert len(files(artifacts)) == 3
    for number in (1, 3):
        weights, epoch = load_best_weights(artifacts, study.trials[number])
        assert epoch == 2 and weights["w"][0].item() == pytest.approx([0.5, 0.1, 0.9, 0.3][number])
    with pytest.raises(TunerError, match=r"only the best trials' weights are kept"):
        load_best_weights(artifacts, study.trials[0])
    assert load_checkpoint(artifacts, running) is not None  # running trials keep theirs
    assert space_used(artifacts, study) < used


def test_kept_weights_are_checked_before_use(study, artifacts) -> None:
    trial = study.ask()
    keep_best_weights(artifacts, trial, {"w": torch.ones(4)}, epoch=1)
    study.tell(trial, 1.0)
    (path,) = files(artifacts)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(TunerError, match="damaged"):
        load_best_weights(artifacts, study.trials[0])
    plain = study.ask()
    study.tell(plain, 2.0)
    with pytest.raises(TunerError, match="has no kept weights"):
        load_best_weights(artifacts, study.trials[1])


def test_budget_cut_trials_keep_their_checkpoint_and_are_queued_once(study, artifacts) -> None:
    cut = study.ask()
    cut.suggest_float("x", 0, 1)
    save_checkpoint(artifacts, cut, state(3))
    cut.set_user_attr(attrs.STOP_REASON, attrs.BUDGET_STOP)
    study.tell(cut, state=TrialState.PRUNED)
    pruned = study.ask()
    save_checkpoint(artifacts, pruned, state(1))
    pruned.set_user_attr(attrs.STOP_REASON, "pruned at epoch 1 by the median pruner")
    study.tell(pruned, state=TrialState.PRUNED)
    assert tidy(artifacts, study) == 1  # the pruned trial's; the budget-cut one stays
    assert load_checkpoint(artifacts, study.trials[0]) is not None

    assert requeue_budget_cut(study) == [cut.number]
    assert requeue_budget_cut(study) == []  # queued once
    again = study.ask()
    assert again.number == 2 and again.params == cut.params
    resumed = load_checkpoint(artifacts, again)
    assert resumed is not None and resumed.epoch == 3


def test_default_locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ARTIFACTS_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    db = tmp_path / "runs" / "tuner.db"
    assert resolve_artifacts(None, f"sqlite:///{db}") == f"{db}.artifacts"
    assert resolve_artifacts(None, f"journal:{tmp_path}/j.log") == f"{tmp_path}/j.log.artifacts"
    server = resolve_artifacts(None, "postgresql+psycopg://u:secret@db.example:5432/tuning")
    assert server.startswith(str(tmp_path / "cache" / "tuner" / "artifacts" / "db.example-tuning-"))
    assert "secret" not in server
    assert resolve_artifacts("/shared/a", f"sqlite:///{db}") == "/shared/a"
    monkeypatch.setenv(ARTIFACTS_ENV, "s3://bucket")
    assert resolve_artifacts(None, f"sqlite:///{db}") == "s3://bucket"


def test_s3_needs_a_bare_bucket_and_boto3(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TunerError, match="use s3://BUCKET"):
        open_artifacts("s3://bucket/some/prefix")
    real_import = builtins.__import__

    def no_boto3(name, *args, **kwargs):
        if name == "boto3":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_boto3)
    with pytest.raises(TunerError, match="S3 needs boto3; install it with: pip install boto3"):
        open_artifacts("s3://bucket")


def test_a_store_that_cannot_take_a_checkpoint_costs_one_warning_not_the_trial(
    study, artifacts, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    trial = study.ask()
    checkpoints = TrialCheckpoints(artifacts, trial, "id", seed=3)

    def full(*args, **kwargs) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifacts.store, "write", full)
    with caplog.at_level(logging.WARNING, logger="tuner.search.checkpoints"):
        checkpoints.save(state(2))
    (record,) = caplog.records
    assert "the checkpoint of epoch 2 was not saved" in record.getMessage()
    assert "No space left on device" in record.getMessage()
    assert checkpoints.resume() is None


def test_a_trial_saves_once_its_last_checkpoint_is_old_enough(study, artifacts) -> None:
    """Epochs shorter than checkpoint_seconds are not each worth a write."""
    trial = study.ask()
    hourly = TrialCheckpoints(artifacts, trial, "id", seed=3, every_seconds=3600)
    hourly.save(state(1))  # an hour has not passed since the trial started
    assert hourly.resume() is None and files(artifacts) == []
    every_epoch = TrialCheckpoints(artifacts, trial, "id", seed=3, every_seconds=0)
    every_epoch.save(state(2))
    found = every_epoch.resume()
    assert found is not None and found[0].epoch == 2 and found[1] == 3
