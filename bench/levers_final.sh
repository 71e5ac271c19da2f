#!/usr/bin/env bash
# The `smol` preset's test letters with the setting bench/levers_gpu.sh chose on the validation split, scored
# once: `covertune run --preset smol` with that setting's `--set` options (CHOSEN: its chosen.sets), BERTScore
# left to a CPU machine (`covertune evaluate` + `covertune report` there, on the eval.csv this writes). Then, with
# PROFILE=1 and time left, bench/profile_generate.py on the adapter (where a decoding step goes).
# With SEED (the chosen variant's run directory of bench/levers_gpu.sh, and BASE its base run), RUN starts from
# that run's data, adapter (and preference adapter) and their stage markers, so `covertune run` skips what the
# same settings already built (it checks their fingerprints; on any mismatch it starts again from nothing).
# OUTDIR gets the logs, eval.csv, the candidates (gzip), the statistics, the train log and the adapter's settings.
#   bash bench/levers_final.sh DATA RUN OUTDIR CHOSEN [SEED BASE]
set -uo pipefail
DATA=$1; RUN=$2; OUT=$3; CHOSEN=$4
export OMP_NUM_THREADS=8 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
mkdir -p "$OUT"; t0=$(date +%s)
step() { echo "$(date +%T) +$(( $(date +%s) - t0 ))s $*" >> "$OUT/steps.log"; }
SEED=${5:-}; BASE=${6:-}
sets=$(cat "$CHOSEN"); echo "$sets" > "$OUT/chosen.sets"
seed() {  # copy SEED's stage outputs (BASE's markers where SEED has none)
  mkdir -p "$RUN/.stages"
  for st in data train prefer; do
    for src in "$SEED" "$BASE"; do [ -f "$src/.stages/$st.json" ] && { cp "$src/.stages/$st.json" "$RUN/.stages/"; break; }; done
  done
  [ -f "$SEED/.stages/prefer.json" ] || rm -f "$RUN/.stages/prefer.json"
  cp -r "$SEED/data" "$SEED/adapter" "$RUN/"
  for f in train_log.jsonl loss.png; do cp "$SEED/$f" "$RUN/" 2>/dev/null || cp "$BASE/$f" "$RUN/" 2>/dev/null; done
  for d in preference preference_adapter .prefer; do [ -d "$SEED/$d" ] && cp -r "$SEED/$d" "$RUN/"; done
  return 0
}
[ -n "$SEED" ] && seed && step "seeded from $SEED"
run() {
  step "run --preset smol $sets"
  # shellcheck disable=SC2086
  python3 -m covertune run --preset smol --data "$DATA" --out "$RUN" $sets --set evaluate.bertscore_model=none \
    > "$OUT/run$1.log" 2>&1; rc=$?
  step "run rc=$rc"
}
run ""
if [ "$rc" != 0 ] && [ -n "$SEED" ] && grep -q -- "--force" "$OUT/run.log"; then
  step "seeded outputs refused: starting over"; rm -rf "$RUN"; run _fresh
fi
cp "$RUN/eval.csv" "$RUN/generate_stats.json" "$RUN/train_log.jsonl" "$OUT/" 2>/dev/null
cp "$RUN/adapter/covertune_train.json" "$RUN/adapter/adapter_config.json" "$OUT/" 2>/dev/null
[ -d "$RUN/preference" ] && cp "$RUN/preference/summary.json" "$OUT/preference_summary.json"
gzip -c "$RUN/candidates/test.fine_tuned.jsonl" > "$OUT/candidates_test.fine_tuned.jsonl.gz" 2>/dev/null
cp "$RUN/eval_summary.csv" "$OUT/eval_summary_no_bertscore.csv" 2>/dev/null
if [ "${PROFILE:-1}" = 1 ] && [ $(( $(date +%s) - t0 )) -lt "${PROFILE_BEFORE:-430}" ]; then
  step profile
  python3 bench/profile_generate.py --run "$RUN" --adapter "$RUN/adapter" --json "$OUT/profile_generate.json" \
    > "$OUT/profile.log" 2>&1
fi
step done
