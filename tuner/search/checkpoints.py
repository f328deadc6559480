"""Trials' checkpoints and best weights in the study's artifact store, found through the trial.

Each artifact is uploaded as `optuna.artifacts.upload_artifact` does it (linked to its trial, shown
by optuna-dashboard); a trial user attribute points at the one in use: `attrs.CHECKPOINT` at
the last epoch-end checkpoint of a running trial, `attrs.BEST_WEIGHTS` at the kept weights of a
finished one. The pointer is set only after the upload is complete and the artifact it
replaces is removed only after that, so a reader never follows it to a partial file. When a
trial is retried (Optuna's stale-trial retry, an interrupted run) the copy inherits the user
attributes, so the retry finds the checkpoint its predecessor left.

A checkpoint that is missing or damaged is never trusted: `load_checkpoint` logs one line and
returns None, and the trial trains from its first epoch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import time
import uuid
import warnings
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import optuna
from optuna.artifacts import ArtifactMeta
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from tuner import attrs
from tuner.engine.checkpoint import DamagedCheckpoint, Tensors, TrainingState, from_bytes, to_bytes
from tuner.errors import TunerError
from tuner.storage.artifacts import Artifacts, store_errors

log = logging.getLogger(__name__)

DEFAULT_KEEP_BEST = 5  # finished trials whose best weights stay in the store
# How long a failed trial keeps its checkpoint for the retry being queued (Optuna stores
# datetime_complete as naive local time, as datetime.now() gives it).
FAILED_TRIAL_GRACE = timedelta(minutes=5)
WEIGHTS_FORMAT = "tuner-weights/1"
# How `optuna.artifacts.upload_artifact` links an upload to its trial (a system attribute;
# optuna-dashboard lists a trial's files by it). `_upload` writes the same link.
UPLOAD_LINK_PREFIX = "artifacts:"
# The endings of the names `save_checkpoint` and `keep_best_weights` give their uploads.
TUNER_SUFFIXES = (".ckpt", "-best.safetensors")

AnyTrial = optuna.Trial | FrozenTrial


class TrialCheckpoints:
    """One running trial's use of the store: what it resumes from, its save after each epoch,
    and what it keeps or drops as it ends. `identity` is its `run_identity`, `seed` the seed
    it trains with.

    An epoch's end is saved when the trial's last save (or its start) is at least
    `every_seconds` old ([training].checkpoint_seconds): an epoch shorter than that costs
    less to train again than its checkpoint costs to write, so a crash costs at most that
    long plus the epoch it cuts. State: the time of the last save.
    """

    def __init__(
        self,
        artifacts: Artifacts,
        trial: optuna.Trial,
        identity: str,
        seed: int,
        every_seconds: float = 0.0,
    ) -> None:
        self.artifacts = artifacts
        self.trial = trial
        self.identity = identity
        self.seed = seed
        self.every_seconds = every_seconds
        self.last_saved = time.monotonic()

    def resume(self) -> tuple[TrainingState, int] | None:
        """The checkpoint to continue from and the seed it was trained with; None: none, or
        a store that cannot give it (one warning: the trial trains from epoch 1)."""
        try:
            state = load_checkpoint(self.artifacts, self.trial, self.identity)
        except store_errors() as exc:
            self._warn("its checkpoint could not be read", exc, "; training from epoch 1")
            return None
        if state is None:
            return None
        pointer = _pointer(self.trial, attrs.CHECKPOINT)
        return state, int(pointer.get("seed", self.seed)) if pointer else self.seed

    def save(self, state: TrainingState) -> None:
        """Save after an epoch, if due; a store that cannot take it (a full disk) costs the
        resume point, not the trial: one warning, and training goes on."""
        if time.monotonic() - self.last_saved < self.every_seconds:
            return
        try:
            save_checkpoint(self.artifacts, self.trial, state, self.identity, self.seed)
            self.last_saved = time.monotonic()
        except store_errors() as exc:
            self._warn(f"the checkpoint of epoch {state.epoch} was not saved", exc)

    def drop(self) -> None:
        try:
            drop_checkpoint(self.artifacts, self.trial)
        except store_errors() as exc:
            self._warn("its checkpoint was not removed", exc)

    def keep(self, weights: Tensors, epoch: int) -> None:
        """Keep the best weights; a store that cannot take them costs `tuner best --model`
        this trial (one warning), not the trial's result."""
        try:
            keep_best_weights(self.artifacts, self.trial, weights, epoch)
        except store_errors() as exc:
            self._warn("its best weights were not kept", exc)

    def _warn(self, what: str, exc: Exception, then: str = "") -> None:
        reason = getattr(exc, "strerror", None) or exc
        where = self.artifacts.location
        log.warning("trial %d: %s in %s (%s)%s", self.trial.number, what, where, reason, then)


def run_identity(config: dict[str, Any], train_images: int) -> str:
    """What a checkpoint can only be resumed under: the trial's configuration (epochs, every
    hyperparameter) and its training images. A retry that would train otherwise (a budget run
    that planned other epochs) starts afresh. The seed is left out: a retry is a new trial
    with a seed of its own, and continues with the seed of the checkpoint it resumes."""
    config = {key: value for key, value in config.items() if key != "seed"}
    text = json.dumps({"config": config, "train_images": train_images}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_checkpoint(
    artifacts: Artifacts,
    trial: optuna.Trial,
    state: TrainingState,
    identity: str = "",
    seed: int | None = None,
) -> str:
    """Upload `state` as the trial's checkpoint, then drop the one it replaces; its id.

    `identity` (`run_identity`) and the `seed` the run trains with are recorded with it."""
    name = f"trial-{trial.number}-epoch-{state.epoch}.ckpt"
    artifact_id = _upload(artifacts, trial, name, to_bytes(state))
    previous = _pointer(trial, attrs.CHECKPOINT)
    pointer = {"artifact_id": artifact_id, "epoch": state.epoch, "trial": trial.number}
    trial.set_user_attr(attrs.CHECKPOINT, {**pointer, "identity": identity, "seed": seed})
    if previous is not None:
        _remove(artifacts, previous["artifact_id"])
    return artifact_id


def load_checkpoint(
    artifacts: Artifacts, trial: AnyTrial, identity: str | None = None
) -> TrainingState | None:
    """The trial's last checkpoint (or its retried predecessor's); None when it has none.

    A checkpoint that is missing from the store or damaged, or (with `identity`) was saved
    under another `run_identity`, gives one warning and None.
    """
    pointer = _pointer(trial, attrs.CHECKPOINT)
    if pointer is None:
        return None
    where = f"trial {trial.number}: the checkpoint of epoch {pointer['epoch']}"
    if pointer["trial"] != trial.number:
        where += f" (left by trial {pointer['trial']})"
    if identity is not None and pointer.get("identity") != identity:
        log.warning(
            "%s was saved for another configuration or number of epochs; training from epoch 1",
            where,
        )
        return None
    try:
        return from_bytes(_read(artifacts, pointer["artifact_id"]))
    except ArtifactNotFound:
        log.warning("%s is missing from %s; training from epoch 1", where, artifacts.location)
    except DamagedCheckpoint as exc:
        log.warning("%s is damaged (%s); training from epoch 1", where, exc)
    return None


def drop_checkpoint(artifacts: Artifacts, trial: optuna.Trial) -> None:
    """Remove the running trial's checkpoint (a pruned trial is never resumed)."""
    pointer = _pointer(trial, attrs.CHECKPOINT)
    if pointer is not None:
        trial.set_user_attr(attrs.CHECKPOINT, None)
        _remove(artifacts, pointer["artifact_id"])


def keep_best_weights(
    artifacts: Artifacts, trial: optuna.Trial, weights: Tensors, epoch: int
) -> None:
    """Keep the finishing trial's best weights (safetensors) and drop its last checkpoint."""
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in weights.items()}
    data = save_tensors(state, metadata={"format": WEIGHTS_FORMAT})
    artifact_id = _upload(artifacts, trial, f"trial-{trial.number}-best.safetensors", data)
    trial.set_user_attr(
        attrs.BEST_WEIGHTS,
        {"artifact_id": artifact_id, "epoch": epoch, "sha256": hashlib.sha256(data).hexdigest()},
    )
    drop_checkpoint(artifacts, trial)


def load_best_weights(artifacts: Artifacts, trial: FrozenTrial) -> tuple[Tensors, int]:
    """The kept best weights of a finished trial and their epoch. Raises TunerError."""
    pointer = _pointer(trial, attrs.BEST_WEIGHTS)
    if pointer is None:
        raise TunerError(
            f"trial {trial.number} has no kept weights (it finished without checkpoints); "
            "use `tuner retrain` to train it again"
        )
    try:
        data = _read(artifacts, pointer["artifact_id"])
    except ArtifactNotFound:
        raise TunerError(
            f"trial {trial.number}: its weights are no longer in {artifacts.location} (only the "
            "best trials' weights are kept); use `tuner retrain`"
        ) from None
    if hashlib.sha256(data).hexdigest() != pointer["sha256"]:
        raise TunerError(f"trial {trial.number}: its kept weights are damaged (checksum differs)")
    try:
        return load_tensors(data), int(pointer["epoch"])
    except (SafetensorError, ValueError) as exc:
        raise TunerError(f"trial {trial.number}: its kept weights are unreadable ({exc})") from None


def tidy(artifacts: Artifacts, study: optuna.Study, keep_best: int = DEFAULT_KEEP_BEST) -> int:
    """Remove what no trial will read again; returns how many artifacts were removed.

    Kept: the checkpoint of every unfinished trial (running, waiting, or cut by a run's
    budget and not yet retried), and the best weights of the `keep_best` best finished trials.
    A store that cannot be listed or deleted from (a network error) costs one warning.
    """
    trials = study.get_trials(deepcopy=False)
    live = {
        pointer["artifact_id"]
        for trial in trials
        if (pointer := _pointer(trial, attrs.CHECKPOINT)) is not None and _resumable(trial)
    }
    kept = {
        pointer["artifact_id"]
        for trial in _ranked(study, trials)[:keep_best]
        if (pointer := _pointer(trial, attrs.BEST_WEIGHTS)) is not None
    }
    unwanted = {
        pointer["artifact_id"]
        for trial in trials
        for key, wanted in ((attrs.CHECKPOINT, live), (attrs.BEST_WEIGHTS, kept))
        if (pointer := _pointer(trial, key)) is not None and pointer["artifact_id"] not in wanted
    }
    # A worker killed inside a save leaves an upload no pointer names (between the upload and
    # the pointer, or between the new pointer and removing the old file). Optuna links every
    # upload to its trial: a settled trial's tuner files that nothing wants are such orphans. A
    # running trial's may be a save in flight, so they wait until the trial is settled.
    unwanted |= {
        artifact_id
        for trial in trials
        if trial.state.is_finished()
        for artifact_id in _linked_uploads(trial)
        if artifact_id not in live and artifact_id not in kept
    }
    removed = 0
    try:
        # Only what is still there: a finished trial's pointer outlives its removed weights.
        for artifact_id in artifacts.sizes(unwanted):
            removed += _remove(artifacts, artifact_id)
    except store_errors() as exc:  # it runs after every trial: a later one removes the rest
        log.warning(
            "could not tidy %s (%s); trying again after the next trial", artifacts.location, exc
        )
    return removed


def requeue_budget_cut(study: optuna.Study) -> list[int]:
    """Queue again each trial a run's budget cut that left a checkpoint and that no trial has
    retried yet (Optuna's stale-trial retry: a WAITING copy that inherits the checkpoint);
    returns their numbers. The next run of any worker resumes them first."""
    trials = study.get_trials(deepcopy=False)
    numbers = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # the retry API is experimental
        retry = RetryHeartbeatStaleTrialCallback(max_retry=None)
        retried = {number for trial in trials for number in retry.retry_history(trial)}
        for trial in trials:
            if (
                trial.state == TrialState.PRUNED
                and trial.user_attrs.get(attrs.STOP_REASON) == attrs.BUDGET_STOP
                and _pointer(trial, attrs.CHECKPOINT) is not None
                and trial.number not in retried
            ):
                retry(study, trial)
                numbers.append(trial.number)
    return numbers


def space_used(artifacts: Artifacts, study: optuna.Study) -> int:
    """Bytes the study's checkpoints and kept weights take, in a folder or a bucket."""
    return artifacts.size(_artifact_ids(study.get_trials(deepcopy=False)))


# ---------------------------------------------------------------- helpers


def _resumable(trial: FrozenTrial) -> bool:
    """Whether a trial may still continue from its checkpoint."""
    if trial.state in (TrialState.RUNNING, TrialState.WAITING):
        return True
    if trial.state == TrialState.FAIL and trial.datetime_complete is not None:
        # Optuna's stale check fails a dead worker's trial and then queues its retry, which
        # takes the pointer over: two steps, not one. In between, another worker's tidy must
        # not remove what the retry is about to resume from.
        return datetime.now() - trial.datetime_complete < FAILED_TRIAL_GRACE
    # Cut by a budget: the next run queues it again; cleared once a retry has taken it over.
    return (
        trial.state == TrialState.PRUNED
        and trial.user_attrs.get(attrs.STOP_REASON) == attrs.BUDGET_STOP
    )


def _ranked(study: optuna.Study, trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Complete trials, best first (by the first objective)."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    minimise = study.directions[0] == optuna.study.StudyDirection.MINIMIZE
    return sorted(complete, key=lambda t: t.values[0], reverse=not minimise)


def _artifact_ids(trials: Iterable[FrozenTrial]) -> set[str]:
    return {
        pointer["artifact_id"]
        for trial in trials
        for key in (attrs.CHECKPOINT, attrs.BEST_WEIGHTS)
        if (pointer := _pointer(trial, key)) is not None
    }


def _linked_uploads(trial: FrozenTrial) -> list[str]:
    """The ids of the checkpoints and weights tuner uploaded for `trial`, from the links
    `_upload` (and, before it, `upload_artifact`) recorded in its system attributes; other
    uploads are the user's."""
    ids = []
    for key, value in trial.system_attrs.items():
        if not key.startswith(UPLOAD_LINK_PREFIX) or not isinstance(value, str):
            continue
        try:
            meta = json.loads(value)
        except json.JSONDecodeError:
            continue
        filename = meta.get("filename", "") if isinstance(meta, dict) else ""
        if filename.startswith("trial-") and filename.endswith(TUNER_SUFFIXES):
            ids.append(meta["artifact_id"])
    return ids


def _pointer(trial: AnyTrial, key: str) -> dict[str, Any] | None:
    """A pointer attribute, or None when absent or not one tuner wrote."""
    value = trial.user_attrs.get(key)
    if isinstance(value, dict) and isinstance(value.get("artifact_id"), str):
        return value
    return None


def _upload(artifacts: Artifacts, trial: optuna.Trial, name: str, data: bytes) -> str:
    """Upload `data` linked to `trial`, as `upload_artifact` does but link first.

    `upload_artifact` writes the file, then links it to the trial: a worker killed between
    the two (the write is the slow part, so a kill lands there) leaves a file that nothing
    names and `tidy` can never find. Linked first, a kill leaves at worst a link to a file
    that is missing or complete, and `tidy` removes it once the trial is settled.
    """
    artifact_id = str(uuid.uuid4())
    meta = ArtifactMeta(
        artifact_id=artifact_id,
        filename=name,
        mimetype="application/octet-stream",
        encoding=None,
    )
    trial.storage.set_trial_system_attr(
        trial._trial_id, UPLOAD_LINK_PREFIX + artifact_id, json.dumps(dataclasses.asdict(meta))
    )
    artifacts.store.write(artifact_id, io.BytesIO(data))
    return artifact_id


def _read(artifacts: Artifacts, artifact_id: str) -> bytes:
    with artifacts.store.open_reader(artifact_id) as reader:
        return reader.read()


def _remove(artifacts: Artifacts, artifact_id: str) -> int:
    try:
        artifacts.store.remove(artifact_id)
    except ArtifactNotFound:
        return 0
    return 1
