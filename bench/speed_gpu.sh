#!/usr/bin/env bash
# Generation speed on a GPU machine, one call (after `source scripts/gpu_env.sh`):
# - embedded: the embedded model's 349 fine-tuned test letters through bench/generate_embedded.py, every
#   variant in one process (ENGINE:BATCH:WEIGHTS[:PASSES]; the first is the path the others are compared
#   with, letter for letter), in DTYPE;
# - 7b: bench/generate_7b.py's engines on the 7B shape, every (engine, batch) pair in one process, in turn.
#   bash bench/speed_gpu.sh DATA RUN OUTDIR      (RUN: a run directory holding the smol preset's adapter,
#                                                  trained here first if it has none)
# Environment: STAGES (default "embedded 7b"), VARIANTS, DTYPE (default fp32), RUNS (the 7B ENGINE:BATCH
# pairs; static@1 is one static cache per pass), PASSES (7B, default 2).
set -uo pipefail
DATA=$1; RUN=$2; OUT=$3
STAGES=${STAGES:-embedded 7b}
VARIANTS=${VARIANTS:-plain:384:merged:2 plain:175:merged:2 plain:128:merged:2 plain:117:merged:2 plain:88:merged:2 static:175:merged:2 static:117:merged:2}
DTYPE=${DTYPE:-fp32}
RUNS=${RUNS:-plain:128 static@1:175 static:175 static:117 static:128}
mkdir -p "$OUT"
step() { echo "$(date +%T) $*" >> "$OUT/steps.log"; }
for stage in $STAGES; do
  case $stage in
    embedded)
      if [ ! -f "$RUN/adapter/adapter_model.safetensors" ]; then
        step train
        python3 -m covertune data --preset smol --data "$DATA" --out "$RUN" > "$OUT/data.log" 2>&1 || exit 1
        python3 -m covertune train --preset smol --out "$RUN" > "$OUT/train.log" 2>&1 || exit 1
      fi
      step "embedded $DTYPE"
      # shellcheck disable=SC2086
      python3 bench/generate_embedded.py --run "$RUN" --dtypes "$DTYPE" --variants $VARIANTS \
        --json "$OUT/bench_generate_embedded_$DTYPE.json" --letters "$OUT/letters_$DTYPE.json" \
        > "$OUT/embedded_$DTYPE.log" 2>&1 ;;
    7b)
      step 7b
      # shellcheck disable=SC2086
      PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python3 bench/generate_7b.py --new-tokens 128 \
        --ref-prompts 0 --batches --engine-runs $RUNS --passes "${PASSES:-2}" \
        --out "$OUT/bench_generate_7b_engine_runs.json" > "$OUT/7b.log" 2>&1 ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
step done
