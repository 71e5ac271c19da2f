#!/usr/bin/env bash
# The shipped model's letters on one GPU with torch (docs/RESULTS.md, docs/PERFORMANCE.md): the shipped adapter
# (src/covertune/shipped/smol) on the embedded base, its recipe (16 candidates, grounded MBR, temperature 0.7,
# top-p 0.95, seed 42, 512 new tokens), each prompt's candidates sharing its prefilled prompt.
# Steps, each a `covertune` command, their seconds in steps.log:
#   data      covertune data --preset smol (the splits)
#   test16    the 349 test prompts x 16 candidates, CANDIDATE_BATCH prompts per generate call (default 64:
#             1,024 sequences), -> eval.csv, candidates/test.fine_tuned.jsonl, generate_stats.json
#   greedy    the 349 greedy test letters in one batch -> eval_greedy.csv (each prompt's candidate 0 must
#             equal it)
#   val64     the 81 validation prompts x 64 candidates (the first 16 of each are the 16 the recipe draws:
#             each candidate has its own seed) -> candidates/validation.fine_tuned.jsonl, for
#             bench/candidate_sweep.py on a CPU machine (counts 16/32/64, the oracle)
# Same shape as bench/ship_smol.sh: here `bash bench/ship_smol.sh pack` (.gpu/m: packages and the dataset;
# .gpu/z1..: the embedded GGUF in parts), there one call per part (`bash bench/ship_smol.sh unpack`), the last:
#   bash bench/ship_smol.sh unpack && bash bench/shipped_gpu.sh /tmp/data /tmp/sg $OUT
# The steps run in their own session and go on between calls while the machine is held; the command waits up
# to WAIT seconds (default 560) and packs what exists into OUT/shipped_gpu.tgz; the same command again waits for
# the same job (or starts it again: each step skips what it finished, generate resumes from its journal).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = job ]; then
  DATA=$2; RUN=$3; mkdir -p "$RUN"
  step() {
    local name=$1; shift
    [ -f "$RUN/.done.$name" ] && return 0
    local s=$(date +%s)
    echo "$(date -u +%FT%TZ) $name: $*" >> "$RUN/steps.log"
    if "$@" >> "$RUN/job.log" 2>&1; then
      echo "$(date -u +%FT%TZ) $name: done in $(( $(date +%s) - s )) s" >> "$RUN/steps.log"; touch "$RUN/.done.$name"
    else
      echo "$(date -u +%FT%TZ) $name: FAILED after $(( $(date +%s) - s )) s" >> "$RUN/steps.log"; return 1
    fi
  }
  GEN=(python3 -m covertune generate --out "$RUN" --adapter src/covertune/shipped/smol --models fine_tuned --engine plain
       --select grounded-mbr --candidate-temperature 0.7 --candidate-top-p 0.95 --seed 42 --max-new-tokens 512
       ${EXTRA:-})  # EXTRA: more generate options, e.g. "--limit 2 --max-new-tokens 8" for a dry run
  step data python3 -m covertune data --preset smol --data "$DATA" --out "$RUN" || exit 1
  step test16 "${GEN[@]}" --split test --candidates 16 --candidate-batch-size "${CANDIDATE_BATCH:-64}" \
    --output-file eval.csv || exit 1
  cp "$RUN/generate_stats.json" "$RUN/test16_generate_stats.json"
  cp "$RUN/candidates/test.fine_tuned.jsonl" "$RUN/test16_candidates.jsonl"
  step greedy "${GEN[@]}" --split test --candidates 1 --batch-size 384 --output-file eval_greedy.csv || exit 1
  cp "$RUN/generate_stats.json" "$RUN/greedy_generate_stats.json"
  step val64 "${GEN[@]}" --split validation --candidates 64 --candidate-batch-size "${VAL_BATCH:-16}" \
    --output-file validation_c64.csv || exit 1
  cp "$RUN/generate_stats.json" "$RUN/val64_generate_stats.json"
  exit 0
fi
DATA=$1; RUN=$2; OUT=$3; WAIT=${WAIT:-560}
source scripts/gpu_env.sh .gpu/m/site.tgz
export OMP_NUM_THREADS=8 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
mkdir -p "$OUT" "$RUN"
echo "$(date -u +%FT%TZ) call on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" >> "$RUN/steps.log"
if [ -f "$RUN/job.rc" ] && [ "$(cat "$RUN/job.rc")" = 0 ]; then
  :
elif [ -f "$RUN/job.pid" ] && kill -0 "$(cat "$RUN/job.pid")" 2>/dev/null; then
  :
else
  rm -f "$RUN/job.rc"
  setsid bash -c "bash bench/shipped_gpu.sh job '$DATA' '$RUN'; echo \$? > '$RUN/job.rc'" \
    < /dev/null > /dev/null 2>&1 &
  echo $! > "$RUN/job.pid"
fi
end=$(( $(date +%s) + WAIT ))
while kill -0 "$(cat "$RUN/job.pid")" 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do sleep 2; done
cp "$RUN/steps.log" "$OUT/steps.log"; tail -c 200000 "$RUN/job.log" > "$OUT/job.log"
tar czf "$OUT/shipped_gpu.tgz" -C "$RUN" --exclude=./data --exclude=./.engine .
cat "$RUN/steps.log"; cat "$RUN/job.rc" 2>/dev/null || echo "job still running"
