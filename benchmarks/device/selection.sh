#!/usr/bin/env bash
# Run on the device machine from the repository root, carry=["gpu_pack"]: the selection check of issue 13 (Spearman
# between val AUC and public-test AUC over a no-pruning `widen` study, seed against grouped protocol).
set -uo pipefail
export OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-index gpu_pack/wheels/*.whl 2>&1 | tail -2
python3 -m pip install -q --no-deps --no-build-isolation . 2>&1 | tail -2
export KERAS_BACKEND=${BACKEND:-torch} HARNESS_DB_WAIT_SECONDS=30 PYTHONUNBUFFERED=1
python3 benchmarks/device/selection.py gpu_pack/pcam /tmp/sel "${MINUTES:-1.4}" > "$OUT/selection.log" 2>&1
grep -E "^(seed|grouped):|Error|error" "$OUT/selection.log" | tail -20
