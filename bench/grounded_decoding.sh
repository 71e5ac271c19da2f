#!/usr/bin/env bash
# Grounded decoding for the `smol` preset, chosen on the validation split and scored once on the test split,
# in one call on a GPU machine (after `source scripts/gpu_env.sh`):
#   1. `covertune data` + `covertune train --preset smol` (the preset's recipe, unchanged);
#   2. 16 candidates per validation prompt (the greedy letter + 15 samples) at each temperature in TEMPS;
#   3. bench/candidate_sweep.py re-makes the choice for 1/4/8/12/16 candidates, mbr and grounded-mbr, scores
#      them against the validation letters and picks one setting by its stated rule (chosen.args);
#   4. the test split's fine-tuned letters with that setting, once; the base letters greedy.
# Everything lands in OUTDIR (logs, the adapter, candidate files, the sweep, test_chosen.csv, test_base.csv).
#   bash bench/grounded_decoding.sh DATA RUN OUTDIR
set -uo pipefail
DATA=$1; RUN=$2; OUT=$3; TEMPS=${TEMPS:-"0.7 1.0"}
mkdir -p "$OUT"
step() { echo "$(date +%T) $*" >> "$OUT/steps.log"; }
step data; python3 -m covertune data --preset smol --data "$DATA" --out "$RUN" > "$OUT/data.log" 2>&1 || exit 1
step train; python3 -m covertune train --preset smol --out "$RUN" > "$OUT/train.log" 2>&1 || exit 1
cp -r "$RUN/adapter" "$OUT/adapter"; cp "$RUN"/train_log.jsonl "$OUT/" 2>/dev/null
sets=()
for T in $TEMPS; do
  step "validation candidates T=$T"
  python3 -m covertune generate --preset smol --out "$RUN" --split validation --models fine_tuned --candidates 16 \
    --select mbr --candidate-temperature "$T" --candidate-top-p 0.95 --batch-size 32 \
    --output-file "validation_c16_t$T.csv" --force > "$OUT/validation_t$T.log" 2>&1 || exit 1
  cp "$RUN/candidates/validation.fine_tuned.jsonl" "$OUT/validation_candidates_t$T.jsonl"
  cp "$RUN/generate_stats.json" "$OUT/validation_stats_t$T.json"
  sets+=(--set "$OUT/validation_candidates_t$T.jsonl,$T,0.95")
done
step sweep
python3 bench/candidate_sweep.py --data "$RUN/data/validation.jsonl" "${sets[@]}" --json "$OUT/candidate_sweep.json" \
  --args "$OUT/chosen.args" --workers 12 > "$OUT/candidate_sweep.log" 2>&1 || exit 1
step "test with $(cat "$OUT/chosen.args")"
python3 -m covertune generate --preset smol --out "$RUN" --split test --models fine_tuned $(cat "$OUT/chosen.args") \
  --batch-size 32 --output-file test_chosen.csv --force > "$OUT/test.log" 2>&1 || exit 1
cp "$RUN/test_chosen.csv" "$OUT/"; cp "$RUN/candidates/test.fine_tuned.jsonl" "$OUT/test_candidates.jsonl"
cp "$RUN/generate_stats.json" "$OUT/test_stats.json"
step "test base letters"
python3 -m covertune generate --preset smol --out "$RUN" --split test --models base --batch-size 384 \
  --output-file test_base.csv --force > "$OUT/test_base.log" 2>&1 || exit 1
cp "$RUN/test_base.csv" "$OUT/"; cp "$RUN/generate_stats.json" "$OUT/test_base_stats.json"
step done
