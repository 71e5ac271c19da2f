#!/usr/bin/env bash
# Generation speed on a GPU machine, one call (after `source scripts/gpu_env.sh`): the embedded model's 349
# fine-tuned test letters through bench/generate_embedded.py (the path before: adapter unmerged, batch 128,
# plain; against the adapter merged in memory, all rows in one batch, plain and static), in fp32 (where the
# letters can be compared token for token) and bf16; then bench/generate_7b.py's engines on the 7B shape.
#   bash bench/speed_gpu.sh DATA RUN OUTDIR      (RUN: a run directory holding the smol preset's adapter,
#                                                  trained here first if it has none)
set -uo pipefail
DATA=$1; RUN=$2; OUT=$3
mkdir -p "$OUT"
step() { echo "$(date +%T) $*" >> "$OUT/steps.log"; }
if [ ! -f "$RUN/adapter/adapter_model.safetensors" ]; then
  step train
  python3 -m covertune data --preset smol --data "$DATA" --out "$RUN" > "$OUT/data.log" 2>&1 || exit 1
  python3 -m covertune train --preset smol --out "$RUN" > "$OUT/train.log" 2>&1 || exit 1
fi
step "embedded fp32"
python3 bench/generate_embedded.py --run "$RUN" --dtypes fp32 \
  --variants plain:128:adapter plain:384:merged static:384:merged:2 \
  --json "$OUT/bench_generate_embedded_fp32.json" --letters "$OUT/letters_fp32.json" > "$OUT/embedded_fp32.log" 2>&1
step "embedded bf16"
python3 bench/generate_embedded.py --run "$RUN" --dtypes bf16 --variants plain:128:adapter plain:384:merged \
  --json "$OUT/bench_generate_embedded_bf16.json" --letters "$OUT/letters_bf16.json" > "$OUT/embedded_bf16.log" 2>&1
step "7b"
python3 bench/generate_7b.py --new-tokens 128 --ref-prompts 0 --batches --engines plain static \
  --engine-batch ${ENGINE_BATCH:-128} --passes 2 --out "$OUT/bench_generate_7b_engines.json" > "$OUT/7b.log" 2>&1
step done
