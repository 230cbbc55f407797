#!/usr/bin/env bash
# The GPU checks, as one script for a machine with CUDA (how the GPU numbers in benchmarks/results were made).
# Expects: python3 with torch/torchvision; medtl's other needs importable (PYTHONPATH); MEDTL_SHARED_DATA with
# medmnist/*.npz; OUT: a folder for the results. Each step has its own time limit so one slow step cannot eat the
# rest, and each writes its JSON as soon as it finishes; every step's output goes to one log, OUT/checks.log.
#
#   bash benchmarks/run_gpu_checks.sh                    # every step
#   PLANS=plans/ bash benchmarks/run_gpu_checks.sh concurrent parity ingest
#   LIMIT_parity=100 INGEST_SERIES=800 bash ...    # a step's time limit (s) and sizes, to fit the time at hand
#
# Steps: augmentation (batched GPU augmentation vs CPU loader workers), tests (the gpu-marked tests), quality (the
# planned path on PneumoniaMNIST, then BreastMNIST transferred from it), ingest (1 process against every core on
# a synthetic archive, the bare pydicom read beside it), parity (plans made on a CPU with
# `bench_medmnist_quality.py NAME --plan-only PLANS/NAME.plan.yaml`, each trained here unchanged), pretrain
# (self-supervised pretraining on unlabelled PneumoniaMNIST + BreastMNIST, then the label-share arms, seed 0),
# concurrent (four folds of a 28 px ResNet-18 side by side against one at a time).
set -u
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
steps=${*:-augmentation tests quality ingest parity pretrain concurrent}
LOG="$OUT/checks.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$LOG" 2>&1
WORK=$(mktemp -d)
limit() { local name="LIMIT_$1"; echo "${!name:-$2}"; }  # LIMIT_<step>=SECONDS overrides a step's time limit
for step in $steps; do
  echo "== $step $(date -u +%H:%M:%S)" >> "$LOG"
  case $step in
    augmentation)
      timeout "$(limit augmentation 140)" python3 benchmarks/bench_gpu_augmentation.py --all \
        --out "$OUT/gpu_augmentation.json" >> "$LOG" 2>&1 ;;
    tests)
      timeout "$(limit tests 80)" python3 -m pytest -q -p no:cacheprovider -m gpu tests/training tests/models \
        >> "$LOG" 2>&1 ;;
    quality)  # the same planned path as on the CPU (plan -> train --config plan.yaml -> evaluate --test)
      timeout 330 python3 benchmarks/bench_medmnist_quality.py pneumoniamnist --budget 4 --keep-artifacts \
        --workdir "$WORK" --out "$OUT/quality_pneumoniamnist_plan_gpu.json" >> "$LOG" 2>&1
      if [ -d "$WORK/pneumoniamnist-artifact" ]; then
        timeout 250 python3 benchmarks/bench_medmnist_quality.py breastmnist --budget 3 \
          --pretrain-artifact "$WORK/pneumoniamnist-artifact" --workdir "$WORK" \
          --out "$OUT/quality_breastmnist_from_pneumoniamnist_plan_gpu.json" >> "$LOG" 2>&1
      fi ;;
    ingest)  # 1 -> every core on a synthetic archive (five syntaxes), the bare pydicom read beside it; no Dask
      timeout "$(limit ingest 200)" python3 benchmarks/bench_ingest_scale.py --series "${INGEST_SERIES:-600}" \
        --workers "$(nproc)" --rounds 3 --no-dask \
        --out "$OUT/ingest_scale_cores.json" >> "$LOG" 2>&1 ;;
    parity)  # PLANS/NAME.plan.yaml for each MedMNIST set NAME
      for plan in "${PLANS:?PLANS=folder of NAME.plan.yaml}"/*.plan.yaml; do
        name=$(basename "$plan" .plan.yaml)
        echo "-- $name" >> "$LOG"
        timeout "$(limit parity 240)" python3 benchmarks/bench_medmnist_quality.py "$name" --plan "$plan" \
          --workdir "$WORK/medmnist" --out "$OUT/parity_${name}_gpu.json" >> "$LOG" 2>&1
      done ;;
    pretrain)  # the label-share runs append to runs-*.jsonl as they finish: kept even if the limit stops the rest
      timeout "$(limit pretrain 320)" python3 benchmarks/bench_pretrain.py breastmnist \
        --sources pneumoniamnist breastmnist --seeds 0 \
        --fractions 1.0 0.1 0.25 0.5 --pretrain-epochs 400 --pretrain-minutes 1.5 --pretrain-batch 256 \
        --workdir "$WORK/pretrain" \
        --out "$OUT/pretrain_breastmnist_gpu.json" >> "$LOG" 2>&1
      cp "$WORK/pretrain/runs-breastmnist.jsonl" "$OUT/pretrain_runs.jsonl" 2>/dev/null
      cp "$WORK"/pretrain/ssl-*/metrics/pretraining.json "$OUT/pretraining.json" 2>/dev/null ;;
    concurrent)  # folds of a small model side by side on one GPU against one at a time (same config and seed)
      timeout "$(limit concurrent 300)" python3 benchmarks/bench_concurrent_folds.py pneumoniamnist --concurrent 4 \
        --folds 4 --steps "${CONCURRENT_STEPS:-400}" --rounds 3 --workdir "$WORK/medmnist" \
        --out "$OUT/concurrent_folds_pneumoniamnist_gpu.json" \
        >> "$LOG" 2>&1 ;;
    *) echo "unknown step: $step" >&2 ;;
  esac
done
echo "== done $(date -u +%H:%M:%S)" >> "$LOG"
tail -n 40 "$LOG"
