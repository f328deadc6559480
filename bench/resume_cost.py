"""What a kill at 90% of a trial costs: resumed from its checkpoint, or trained again.

One fixed configuration, E epochs, in real `tuner run` processes on one CPU thread each:

1. uninterrupted: the trial runs to its end (its own duration, for scale);
2. checkpoints: the trial is SIGKILLed once 90% of its epochs have been reported, the dead
   trial is failed and queued again (a 2 s grace period instead of the default, the same for
   both), and a new `tuner run` resumes it from its last checkpoint;
3. without: the same kill, then the trial's checkpoint is deleted before the new run, so the
   retry trains from epoch 1, as every retry did before checkpoints (tuner has no setting
   that turns them off; the retry still writes its own, as trial 1 does).

Reported: the epochs trained a second time (done before the kill, trained again after it:
the load-independent figure), the epochs the retry trains, the wall time from the kill to
the end of the new run (a fresh worker's start-up included) and the retry trial's own
duration, with their ratios.

    python bench/resume_cost.py                    # Fashion-MNIST from ../shared, else digits
    python bench/resume_cost.py --epochs 10 --train-subset 2000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import sqlalchemy
from common import ROOT, load_average, machine_header
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from tuner import attrs
from tuner.storage import open_storage, settle_stale_trials

FASHION = ROOT.parent / "shared" / "datasets" / "fashion-mnist"
STUDY = """\
name = "resume-cost"
portfolio = false  # one fixed configuration: nothing queued before it
[sampler]
name = "random"
seed = 0
[pruner]
name = "none"
[dataset]
name = "{dataset}"
train_subset = {train_subset}
[training]
max_epochs = {epochs}
patience = 0
trials = 1
reports_per_epoch = 1  # one report per epoch: the reported steps count epochs
[space]  # one trial of a new study, seeded: the same configuration in every run
learning_rate = {{ type = "float", low = 2e-3, high = 4e-3, log = true }}
batch_size = 128
num_blocks = 2
filters = 32
fc_units = 128
"""
KILL_AT = 0.9
POLL_SECONDS = 0.1


@dataclass(frozen=True)
class Retried:
    """One kill at 90% and the run that finished the trial afterwards."""

    killed_after: int  # epochs reported before the kill
    checkpoint: int  # epoch of the last checkpoint at the kill (0: none)
    resumed_from: int  # epoch the retry continued after (0: trained from epoch 1)
    retry_epochs: int  # epochs the retry trained
    seconds: float  # from the kill to the end of the new run
    trial_seconds: float  # the retry trial's own duration (the new worker's start-up excluded)

    @property
    def trained_twice(self) -> int:
        """Epochs done before the kill and trained again after it."""
        return self.killed_after - self.resumed_from


def tuner_run(folder: Path, data_dir: Path | None, log: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "tuner", "run", "--study", str(folder / "study.toml"),
               "--storage", url(folder), "--trials", "1"]  # fmt: skip
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    with open(folder / log, "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def url(folder: Path) -> str:
    return f"sqlite:///{folder / 'tuner.db'}"


def finish(process: subprocess.Popen, folder: Path, log: str) -> None:
    if process.wait() != 0:
        raise SystemExit(f"tuner run failed:\n{(folder / log).read_text()}")


def progress(engine: sqlalchemy.engine.Engine) -> tuple[int, int]:
    """Trial 0's epochs reported and the epoch of its last checkpoint (plain SQL: the run may
    be creating the schema)."""
    reported = sqlalchemy.text(
        "SELECT MAX(v.step) FROM trial_intermediate_values v JOIN trials t "
        "ON v.trial_id = t.trial_id WHERE t.number = 0"
    )
    pointer = sqlalchemy.text(
        "SELECT a.value_json FROM trial_user_attributes a JOIN trials t "
        "ON a.trial_id = t.trial_id WHERE t.number = 0 AND a.key = :key"
    )
    try:
        with engine.connect() as connection:
            epochs = connection.execute(reported).scalar() or 0
            value = connection.execute(pointer, {"key": attrs.CHECKPOINT}).scalar()
    except sqlalchemy.exc.DBAPIError:  # no tables yet
        return 0, 0
    saved = json.loads(value) if value else None
    return int(epochs), saved["epoch"] if saved else 0


def new_folder(root: Path, name: str, study: str) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "study.toml").write_text(study)
    return folder


def uninterrupted(folder: Path, data_dir: Path | None) -> FrozenTrial:
    finish(tuner_run(folder, data_dir, "run.log"), folder, "run.log")
    return optuna.load_study(study_name="resume-cost", storage=url(folder)).trials[0]


def kill_and_retry(
    folder: Path, data_dir: Path | None, epochs: int, keep_checkpoint: bool
) -> Retried:
    victim = tuner_run(folder, data_dir, "victim.log")
    engine = sqlalchemy.create_engine(url(folder))
    target = math.ceil(KILL_AT * epochs)
    while progress(engine)[0] < target:
        if victim.poll() is not None:
            raise SystemExit(f"the run ended first:\n{(folder / 'victim.log').read_text()}")
        time.sleep(POLL_SECONDS)
    victim.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    victim.wait()
    killed_after, checkpoint = progress(engine)
    engine.dispose()

    storage = open_storage(url(folder), heartbeat_interval=1, grace_period=2)
    study = optuna.load_study(study_name="resume-cost", storage=storage)
    while not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        settle_stale_trials(study)
        time.sleep(POLL_SECONDS)
    if not keep_checkpoint:
        shutil.rmtree(folder / "tuner.db.artifacts")
    finish(tuner_run(folder, data_dir, "retry.log"), folder, "retry.log")
    seconds = time.monotonic() - killed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retried = RetryHeartbeatStaleTrialCallback.retried_trial_number
        study = optuna.load_study(study_name="resume-cost", storage=url(folder))
        (retry,) = (t for t in study.trials if retried(t) == 0)
    if retry.state != TrialState.COMPLETE:
        raise SystemExit(f"the retry ended {retry.state.name}")
    resumed_from = retry.user_attrs.get(attrs.RESUMED_FROM) or 0
    own = (retry.datetime_complete - retry.datetime_start).total_seconds()
    return Retried(killed_after, checkpoint, resumed_from, epochs - resumed_from, seconds, own)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-subset", type=int, default=2000)
    parser.add_argument("--dataset-dir", type=Path, default=FASHION)
    parser.add_argument("--keep", action="store_true", help="keep the runs' folders")
    args = parser.parse_args()
    fashion = (args.dataset_dir / "train-images-idx3-ubyte.gz").is_file()
    dataset, data_dir = ("fashion-mnist", args.dataset_dir) if fashion else ("digits", None)
    study = STUDY.format(dataset=dataset, train_subset=args.train_subset, epochs=args.epochs)
    print("\n".join(machine_header()))
    print(f"dataset: {dataset}, {args.train_subset} training images, {args.epochs} epochs; "
          "one tuner run process per step, OMP_NUM_THREADS=1")  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="resume-cost-"))
    try:
        whole = uninterrupted(new_folder(root, "whole", study), data_dir)
        seconds = (whole.datetime_complete - whole.datetime_start).total_seconds()
        print(f"uninterrupted trial: {seconds:.1f} s for {args.epochs} epochs "
              f"(load {load_average()})")  # fmt: skip
        runs = {}
        for name, keep in (("checkpoints", True), ("without", False)):
            runs[name] = kill_and_retry(new_folder(root, name, study), data_dir, args.epochs, keep)
            print(f"{name}: {runs[name]} (load {load_average()})")
    finally:
        if args.keep:
            print(f"runs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    ours, before = runs["checkpoints"], runs["without"]
    print()
    print("| after a SIGKILL at 90% | with checkpoints | without | ratio |")
    print("|---|---|---|---|")
    rows = [
        ("epochs trained a second time", ours.trained_twice, before.trained_twice),
        ("epochs the retry trains", ours.retry_epochs, before.retry_epochs),
        ("seconds from the kill to the trial's end", ours.seconds, before.seconds),
        (
            "seconds the retry trial took (start-up excluded)",
            ours.trial_seconds,
            before.trial_seconds,
        ),
    ]
    for label, a, b in rows:
        ratio = f"{a / b:.2f}" if b else "-"
        shown = (f"{a:.1f}", f"{b:.1f}") if isinstance(a, float) else (str(a), str(b))
        print(f"| {label} | {shown[0]} | {shown[1]} | {ratio} |")
    print(f"killed after epoch {ours.killed_after} and {before.killed_after}; last checkpoint: "
          f"epoch {ours.checkpoint} and {before.checkpoint}")  # fmt: skip


if __name__ == "__main__":
    main()
