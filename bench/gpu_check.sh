#!/usr/bin/env bash
# The CUDA path of tuner, end to end, in well under 10 minutes: run this first when a GPU is lent.
#
#   bash bench/gpu_check.sh                 # from the repository root
#   MNIST_DIR=../shared/datasets/mnist bash bench/gpu_check.sh   # real MNIST instead of synthetic
#
# 1. environment: nvidia-smi, torch and torch.cuda
# 2. a short study on the bundled digits with --device cuda (bf16 autocast, channels_last)
# 3. an MNIST-sized study (28x28, 10 classes: real MNIST from $MNIST_DIR, else 6,000 synthetic
#    images in an image folder) with --jobs-per-device 1, 2 and 4: trials per minute
# 4. an out-of-memory trial (a model far too big for a capped share of the GPU): tuner must
#    end that trial cleanly (pruned, reason recorded) and go on to the next one
# 5. a table of the figures
# Exits 1 with a clear message on a machine without CUDA, and non-zero if any check fails.
set -euo pipefail

cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tuner-gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
FIGURES="$WORK/figures.txt"
: >"$FIGURES"

if ! "$PY" - <<'PY'
import sys
import torch
if not torch.cuda.is_available():
    print(f"gpu_check: no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda}): "
          "this script checks the GPU path and needs a machine with an NVIDIA GPU", file=sys.stderr)
    sys.exit(1)
PY
then
    exit 1
fi

echo "== environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "(nvidia-smi not found)"
"$PY" - <<'PY'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
for index in range(torch.cuda.device_count()):
    props = torch.cuda.get_device_properties(index)
    print(f"cuda:{index} {props.name}, {props.total_memory / 2**30:.0f} GiB, "
          f"capability {props.major}.{props.minor}, bf16 {torch.cuda.is_bf16_supported()}")
PY

# $1 study name, $2 storage: "trials complete/pruned/fail" of a stored study, and pruned reasons
summarise() {
    "$PY" - "$1" "$2" <<'PY'
import sys
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.load_study(study_name=sys.argv[1], storage=sys.argv[2])
states = [t.state.name for t in study.trials]
print(f"{states.count('COMPLETE')} {states.count('PRUNED')} {states.count('FAIL')}")
for t in study.trials:
    print(f"  trial {t.number} {t.state.name} {t.value} {t.user_attrs.get('precision')} "
          f"{t.user_attrs.get('stop_reason') or ''}", file=sys.stderr)
PY
}

# $1 label, rest: tuner run arguments. Records wall seconds and trials per minute.
timed_run() {
    local label="$1"
    shift
    local start end
    start=$(date +%s.%N)
    "$PY" -m tuner run "$@" --device cuda
    end=$(date +%s.%N)
    awk -v a="$start" -v b="$end" -v l="$label" 'BEGIN { printf "%s %.1f\n", l, b - a }' \
        >>"$WORK/times.txt"
}

cat >"$WORK/digits-gpu.toml" <<'TOML'
name = "digits-gpu"
[sampler]
name = "tpe"
seed = 0
[pruner]
name = "median"
[dataset]
name = "digits"
[training]
max_epochs = 5
patience = 0
trials = 6
[space]
learning_rate = { type = "float", low = 1e-3, high = 1e-2, log = true }
batch_size = 64
num_blocks = { type = "int", low = 1, high = 2 }
filters = { type = "categorical", choices = [32, 64] }
TOML

echo "== digits on cuda, bf16 (channels_last inputs)"
timed_run digits --study "$WORK/digits-gpu.toml" --storage "sqlite:///$WORK/digits.db" \
    --precision bf16
read -r done pruned failed < <(summarise digits-gpu "sqlite:///$WORK/digits.db")
[ "$failed" = 0 ] || { echo "gpu_check: digits study had $failed failed trials" >&2; exit 1; }
echo "digits 6 trials: complete $done pruned $pruned" >>"$FIGURES"

if [ -n "${MNIST_DIR:-}" ]; then
    DATASET="mnist"
    DATA_ARGS=(--data-dir "$MNIST_DIR")
else
    echo "== writing 6,000 synthetic 28x28 images (set MNIST_DIR for real MNIST)"
    "$PY" - "$WORK/synthetic" <<'PY'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
root, rng = Path(sys.argv[1]), np.random.default_rng(0)
for label in range(10):
    folder = root / f"class{label}"
    folder.mkdir(parents=True)
    for index in range(600):
        image = rng.integers(0, 60, (28, 28), dtype=np.uint8)
        image[label * 2 : label * 2 + 8, 4:24] += 150  # a learnable bar per class
        Image.fromarray(image).save(folder / f"{index}.png")
PY
    DATASET="imagefolder:$WORK/synthetic"
    DATA_ARGS=()
fi

cat >"$WORK/mnist-gpu.toml" <<TOML
name = "mnist-gpu"
[sampler]
name = "random"
seed = 0
[pruner]
name = "none"
[dataset]
name = "$DATASET"
train_subset = 6000
[training]
max_epochs = 3
patience = 0
trials = 8
[space]
learning_rate = { type = "float", low = 1e-3, high = 3e-3, log = true }
batch_size = 128
num_blocks = 3
filters = { type = "categorical", choices = [32, 64, 128] }
TOML

for jobs in 1 2 4; do
    echo "== MNIST-sized, bf16, --jobs-per-device $jobs"
    sed "s/name = \"mnist-gpu\"/name = \"mnist-gpu-$jobs\"/" "$WORK/mnist-gpu.toml" \
        >"$WORK/mnist-gpu-$jobs.toml"
    timed_run "jobs$jobs" --study "$WORK/mnist-gpu-$jobs.toml" \
        --storage "sqlite:///$WORK/mnist-$jobs.db" --precision bf16 \
        --jobs-per-device "$jobs" "${DATA_ARGS[@]}"
    read -r done pruned failed < <(summarise "mnist-gpu-$jobs" "sqlite:///$WORK/mnist-$jobs.db")
    seconds=$(grep "^jobs$jobs " "$WORK/times.txt" | cut -d' ' -f2)
    rate=$(awk -v n="$done" -v s="$seconds" 'BEGIN { printf "%.1f", n * 60 / s }')
    echo "mnist-sized jobs-per-device=$jobs: $done trials in ${seconds%.*} s = $rate trials/min" \
        >>"$FIGURES"
    [ "$failed" = 0 ] || { echo "gpu_check: $failed failed trials with $jobs jobs" >&2; exit 1; }
done

echo "== out of memory: a huge model on a 2% share of the GPU, then a small one"
cat >"$WORK/oom.toml" <<TOML
name = "oom"
[sampler]
name = "random"
seed = 0
[pruner]
name = "none"
[dataset]
name = "$DATASET"
train_subset = 6000
[training]
max_epochs = 1
patience = 0
trials = 2
[space]
learning_rate = 1e-3
batch_size = 4096
num_blocks = { type = "int", low = 1, high = 6 }
filters = { type = "categorical", choices = [8, 1024] }
[[enqueue]]
num_blocks = 6
filters = 1024
[[enqueue]]
num_blocks = 1
filters = 8
TOML
"$PY" - "$WORK/oom.toml" "sqlite:///$WORK/oom.db" "${DATA_ARGS[@]}" <<'PY'
import sys
import torch
torch.cuda.set_per_process_memory_fraction(0.02)  # the huge model must not fit
from tuner.cli import app
app(["run", "--study", sys.argv[1], "--storage", sys.argv[2], "--device", "cuda",
     *sys.argv[3:]], prog_name="tuner", standalone_mode=True)
PY
read -r done pruned failed < <(summarise oom "sqlite:///$WORK/oom.db")
echo "out of memory: complete $done pruned $pruned failed $failed (want 1 1 0)" >>"$FIGURES"
if [ "$done $pruned $failed" != "1 1 0" ]; then
    echo "gpu_check: the out-of-memory trial was not ended cleanly" >&2
    exit 1
fi

echo
echo "== figures ($(nvidia-smi --query-gpu=name --format=csv,noheader | head -1))"
cat "$FIGURES"
