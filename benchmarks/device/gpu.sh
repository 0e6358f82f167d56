#!/usr/bin/env bash
# The issue 25 device check, one call, from the repository root (carry=["gpu_pack"], built by make_pack.py):
#   bash benchmarks/device/gpu.sh
# 1. throughput of the modern first point and seed_model1 on 220,025 synthetic images: float32 and bf16, XLA on/off,
#    batches 64-512, prediction, as shares of the chip's bf16 peak and of the feed (throughput.py);
# 2. a clocked search on the PCam slice at a GPU budget (--deadline 4), for trials an hour against the CPU's.
set -uo pipefail
export OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu-log.txt") 2>&1
T0=$(date +%s); stamp() { echo "== $(( $(date +%s) - T0 )) s: $*"; }
stamp setup
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m pip install -q --no-deps --no-index gpu_pack/wheels/*.whl 2>&1 | tail -2
python3 -m pip install -q --no-deps --no-build-isolation . 2>&1 | tail -2
export KERAS_BACKEND=${BACKEND:-jax} XLA_PYTHON_CLIENT_PREALLOCATE=false HARNESS_DB_WAIT_SECONDS=30
stamp throughput
timeout ${T_THROUGHPUT:-300} python3 benchmarks/device/throughput.py --images 220025 --seconds ${SECONDS_EACH:-8} \
    --batches ${BATCHES:-256,512} --out "$OUT/throughput.csv"
stamp clocked-search
R=/tmp/r; mkdir -p $R
timeout ${T_SEARCH:-300} python3 -m harness.cli search --space modern --deadline ${DEADLINE:-4} --data gpu_pack/pcam \
    --results $R --no-progress > "$OUT/search.txt" 2>&1; tail -25 "$OUT/search.txt"
python3 -m harness.cli leaderboard --data gpu_pack/pcam --results $R --all --holdout gpu_pack/pcam/test_labels.csv \
    --by val_auc --format csv --no-submission > "$OUT/leaderboard.csv" 2>/dev/null
stamp done
