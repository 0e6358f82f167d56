#!/usr/bin/env bash
# Run on the device machine from the repository root: `bash benchmarks/device/run.sh`, with carry=["gpu_pack"].
# The device check, one call: install the harness beside the image's PyTorch (Keras on its torch backend), then the many-core decode sweep
# (issue 16) and GPU-budget training on a 5,000-image slice of pcam-sample with its 1,500 labelled test images.
set -uo pipefail
export OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
LOG="$OUT/log.txt"; exec > >(tee -a "$LOG") 2>&1
T0=$(date +%s); stamp() { echo "== $(( $(date +%s) - T0 )) s: $*"; }
stamp setup
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc
python3 -m pip install -q --no-deps --no-index gpu_pack/wheels/*.whl 2>&1 | tail -2
python3 -m pip install -q --no-deps --no-build-isolation . 2>&1 | tail -2
export KERAS_BACKEND=${BACKEND:-torch} XLA_PYTHON_CLIENT_PREALLOCATE=false HARNESS_DB_WAIT_SECONDS=30
python3 -c "import keras, torch; print(keras.__version__, keras.backend.backend(), torch.cuda.get_device_name(0))"
DATA=gpu_pack/pcam; R=/tmp/r; mkdir -p $R
stamp threads
timeout 60 python3 benchmarks/device/threads.py $DATA > "$OUT/threads.txt" 2>&1; cat "$OUT/threads.txt"
stamp runs
H="python3 -m harness.cli"
timeout ${RUN_LIMIT:-430} bash benchmarks/device/jobs.sh "$H" $DATA $R
stamp leaderboard
$H leaderboard --data $DATA --results $R --all --test-labels $DATA/test_labels.csv --by val_auc --format csv --no-submission > "$OUT/leaderboard.csv" 2>"$OUT/leaderboard.err"
cat "$OUT/leaderboard.csv"
stamp done
