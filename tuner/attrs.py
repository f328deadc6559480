"""Names of the user attributes tuner stores on Optuna trials and studies.

The objective writes them; reports, `best`, `retrain` and `status` read them. Keeping the
names in one place is what lets those modules agree without importing each other.
"""

# --- trial user attributes (written by tuner.search.objective) ---
CONFIG = "config"  # TrialConfig.to_dict(): the full concrete configuration of the trial
EPOCHS_RUN = "epochs_run"  # int: epochs actually trained (early stopping / pruning cut it short)
BEST_EPOCH = "best_epoch"  # int: 1-based epoch whose weights the trial kept
TRAIN_SECONDS = "train_seconds"  # float: wall seconds spent training and evaluating
PARAM_COUNT = "param_count"  # int: parameters of the model (frozen ones included)
PRETRAINED = "pretrained"  # str: tensors loaded and skipped from [model].pretrained
DEVICE = "device"  # str: "cuda:0", "cpu", ...
PRECISION = "precision"  # str: "bf16" or "fp32", what --precision auto chose for the model
SEED = "seed"  # int: the torch seed the trial trained with
WORKER = "worker"  # str: "hostname:pid" of the process that ran the trial
# list of {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"}
HISTORY = "history"
# {"params", "flops", "latency_ms", "memory_mb"}: the built model, measured before training
MEASURES = "measures"
TRAIN_IMAGES = "train_images"  # int: training images the trial's steps saw (its cost measure)
STEPS_PER_EPOCH = "steps_per_epoch"  # int: intermediate values reported per epoch (the rungs)
# int: training images per epoch, when fewer than the training split (a --budget too short
# for a whole epoch trains the first trial on part of it)
EPOCH_IMAGES = "epoch_images"
# True on the short trial of [training].first_result_epochs (set when the study queues it):
# it trains fewer epochs and reports nothing to the pruner
FIRST_RESULT = "first_result"
# str: where a queued trial's configuration came from: "enqueue" (the study file's
# [[enqueue]]), "portfolio:N" (the shipped portfolio's N-th, tuner.search.portfolio) or
# "enqueue-from:STUDY"; trials the sampler chose have none (reports show "sampler")
SOURCE = "source"
SOURCE_ENQUEUE = "enqueue"
SOURCE_SAMPLER = "sampler"
# str: why a trial ended early ("pruned at epoch 3 by ...", "training loss is nan ...")
STOP_REASON = "stop_reason"
BUDGET_STOP = "budget"  # the STOP_REASON of a trial cut by the run's wall-clock budget

# --- checkpoints (tuner.search.checkpoints) ---
# {"artifact_id", "epoch", "trial"}: the last epoch-end checkpoint of an unfinished trial, in
# the artifact store; "trial" is the trial that wrote it (a retry inherits it), None once dropped
CHECKPOINT = "checkpoint"
# {"artifact_id", "epoch", "sha256"}: the weights a finished trial kept (its best epoch's)
BEST_WEIGHTS = "best_weights"
RESUMED_FROM = "resumed_from_epoch"  # int: the epoch whose checkpoint the trial continued from

# --- study user attributes (written when the study is created) ---
STUDY_DATASET = "dataset"  # str: dataset name from the study file
STUDY_METRIC = "metric"  # str: the (first) objective's measure name, e.g. "val_accuracy"
STUDY_METRICS = "metrics"  # list[str]: all objectives of a multi-objective study, in order
STUDY_CONSTRAINTS = "constraints"  # dict: measure -> upper limit, from [constraints]
STUDY_SPACE = "space"  # dict: StudySpec.space_dict(), compared on resume
STUDY_FILE = "study_file"  # str: path of the study file the study was created from

# --- warm starts (tuner.search.warmstart) ---
WARM_START = "warm_start"  # trial, str: "STUDY trial N" it was copied from (`tuner run --from`)
STUDY_SEEDED_FROM = "seeded_from"  # study, str: the study whose trials `--from` copied in
STUDY_BUDGET_EPOCHS = "budget_epochs"  # int: max_epochs a --budget run chose (runner.budget)
STUDY_BUDGET_SECONDS = "budget_seconds"  # float: the budget that chose budget_epochs
# float: the --budget this machine needs for a first finished trial on the whole training split
STUDY_BUDGET_NEEDED = "budget_needed"
