#!/usr/bin/env bash
# The GPU checks, as one script for a machine with CUDA (how the GPU numbers in benchmarks/results were made).
# Expects: python3 with torch/torchvision; medtl's other needs importable (PYTHONPATH); MEDTL_SHARED_DATA with
# medmnist/*.npz; OUT: a folder for the results. Each step has its own time limit so one slow step cannot eat the
# rest, and each writes its JSON as soon as it finishes.
set -u
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
timeout 140 python3 benchmarks/bench_gpu_augmentation.py --all --out "$OUT/gpu_augmentation.json" > "$OUT/bench_aug.log" 2>&1
timeout 80 python3 -m pytest -q -p no:cacheprovider -m gpu tests/training tests/models > "$OUT/gpu_tests.log" 2>&1
WORK=$(mktemp -d)
# The same planned path as on the CPU (plan -> train --config plan.yaml -> evaluate --test), with GPU-sized budgets.
timeout 330 python3 benchmarks/bench_medmnist_quality.py pneumoniamnist --budget 4 --keep-artifacts \
  --workdir "$WORK" --out "$OUT/quality_pneumoniamnist_plan_gpu.json" > "$OUT/quality_pneumonia.log" 2>&1
if [ -d "$WORK/pneumoniamnist-artifact" ]; then
  timeout 250 python3 benchmarks/bench_medmnist_quality.py breastmnist --budget 3 \
    --pretrain-artifact "$WORK/pneumoniamnist-artifact" --workdir "$WORK" \
    --out "$OUT/quality_breastmnist_from_pneumoniamnist_plan_gpu.json" > "$OUT/quality_breast.log" 2>&1
fi
tail -n 3 "$OUT"/*.log
