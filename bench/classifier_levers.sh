#!/usr/bin/env bash
# The letter-quality classifier's two levers for the `smol` preset, measured on the validation split, in one
# call on a GPU machine (after `source scripts/gpu_env.sh`):
#   1. baseline: `covertune data` + `covertune train --preset smol`, the validation letters greedy;
#   2. filter: the same with `covertune data --filter-classifier $THRESHOLD` (train rows the classifier scores
#      below it dropped; validation untouched), the validation letters greedy;
#   3. candidates: on the baseline adapter, 8 candidates per validation prompt (the greedy letter + 7 samples at
#      T=0.7, top-p 0.95) in one generate pass; `covertune classify train` on the baseline run; then
#      bench/candidate_sweep.py re-makes the choice for 1/4/8 candidates by mbr, grounded-mbr and classifier-mbr
#      (thresholds 0.5, 0.9) and scores each against the validation letters.
# Then `covertune evaluate` (no BERTScore) of both greedy letter sets. Everything lands in OUTDIR.
#   bash bench/classifier_levers.sh DATA ROOT OUTDIR
set -uo pipefail
DATA=$1; ROOT=$2; OUT=$3; THRESHOLD=${THRESHOLD:-0.5}
mkdir -p "$OUT"
step() { echo "$(date +%T) $*" >> "$OUT/steps.log"; }
for v in base filter; do
  RUN=$ROOT/$v
  extra=(); [ "$v" = filter ] && extra=(--filter-classifier "$THRESHOLD")
  step "$v: data"; python3 -m covertune data --preset smol --data "$DATA" --out "$RUN" "${extra[@]}" \
    > "$OUT/${v}_data.log" 2>&1 || exit 1
  cp "$RUN/data/report.md" "$OUT/${v}_data_report.md"
  step "$v: train"; python3 -m covertune train --preset smol --out "$RUN" > "$OUT/${v}_train.log" 2>&1 || exit 1
  cp "$RUN"/train_log.jsonl "$OUT/${v}_train_log.jsonl" 2>/dev/null
  step "$v: validation letters"
  python3 -m covertune generate --preset smol --out "$RUN" --split validation --models fine_tuned \
    --output-file validation_greedy.csv > "$OUT/${v}_validation.log" 2>&1 || exit 1
  cp "$RUN/validation_greedy.csv" "$OUT/${v}_validation_greedy.csv"
done
cp "$ROOT/filter/classifier/report.md" "$OUT/filter_classifier_report.md"
RUN=$ROOT/base
step "classifier on the baseline run"
python3 -m covertune classify train --out "$RUN" --hand-labels docs/letter_quality_hand_labels.csv \
  > "$OUT/classify.log" 2>&1 || exit 1
cp "$RUN/classifier/report.md" "$OUT/classifier_report.md"
step "validation candidates"
python3 -m covertune generate --preset smol --out "$RUN" --split validation --models fine_tuned --candidates 8 \
  --select classifier-mbr --candidate-temperature 0.7 --candidate-top-p 0.95 --batch-size 16 \
  --output-file validation_c8.csv > "$OUT/validation_c8.log" 2>&1 || exit 1
cp "$RUN/candidates/validation.fine_tuned.jsonl" "$OUT/validation_candidates_c8.jsonl"
cp "$RUN/generate_stats.json" "$OUT/validation_c8_stats.json"
step sweep
python3 bench/candidate_sweep.py --data "$RUN/data/validation.jsonl" \
  --set "$OUT/validation_candidates_c8.jsonl,0.7,0.95" --counts 1 4 8 --selects mbr grounded-mbr \
  --classifier "$RUN/classifier/classifier.json" --classifier-thresholds 0.5 0.9 --workers 12 \
  --json "$OUT/candidate_sweep_classifier.json" > "$OUT/candidate_sweep.log" 2>&1 || exit 1
for v in base filter; do
  step "$v: evaluate"
  python3 -m covertune evaluate --eval-csv "$OUT/${v}_validation_greedy.csv" --out "$OUT/eval_$v" \
    --bertscore-model none > "$OUT/${v}_evaluate.log" 2>&1 || exit 1
done
step done
