#!/usr/bin/env bash
# The grounded-letter levers not yet measured on the `smol` preset as it stands (rsLoRA, 16 grounded candidates,
# skills weight 0.2), side by side on the validation split, in one job on a GPU machine that outlasts a call
# (run it through bench/gpu_background.sh, after `bash bench/ship_smol.sh unpack` and
# `source scripts/gpu_env.sh .gpu/m/site.tgz`):
#   bench/levers_gpu.sh's variants base (the preset), ungrounded (rsLoRA + train --drop-flags ungrounded),
#   task (train --select-checkpoint task), dpo and rpo (covertune prefer on base's adapter, at most MAX_PAIRS
#   pairs), nf4 (the preset on a 4-bit NF4 base: whether it still learns the letter form), flagw
#   (the data stage's flags as loss weights: bench/levers_gpu.sh), each with its 16 candidates for the validation split (and the test split with TEST_CANDIDATES=1);
#   the shipped adapter's 16 candidates for the training split (a reranker is learned on the training split only).
# At the end, each variant's validation candidates are chosen among with the shipped rule (grounded MBR + 0.2 x
# skills coverage; bench/select_utilities.py) and the rule fixed before the run picks the winner: among the
# variants with no more letters holding an unsupported number than base and none with an unsupported
# organisation, the highest ROUGE-L; it replaces base only if it beats base's by at least 0.015 (the spread
# of two trainings of the same recipe on these 81 letters, docs/RESULTS.md). The winner's adapter is copied to
# OUTDIR/winner_adapter, and when it is not base, its 16 candidates for the test split are written
# (OUTDIR/test_cands_WINNER.jsonl.gz), to be scored once on a CPU machine.
# VARIANTS, MAXJ, DEADLINE, DATA_ARGS, TRAIN_ARGS, GEN_ARGS, PREFER_ARGS go to bench/levers_gpu.sh.
#   bash bench/levers_round.sh DATA ROOT OUTDIR
set -uo pipefail
DATA=$1; ROOT=$2; OUT=$3
SHIPPED=${SHIPPED-src/covertune/shipped/smol}; MARGIN=${MARGIN:-0.015}; GEN_ARGS=${GEN_ARGS:-}
mkdir -p "$OUT" "$ROOT"
t0=$(date +%s)
step() { echo "$(date +%T) +$(( $(date +%s) - t0 ))s $*" >> "$OUT/round_steps.log"; }
step "on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"

train_candidates() {  # the shipped adapter's candidates for the training split (its records as a validation file)
  while [ ! -f "$ROOT/base/.stages/data.json" ]; do sleep 2; done
  local run=$OUT/trainc; mkdir -p "$run/data"
  cp "$ROOT/base/data/train.jsonl" "$run/data/validation.jsonl"
  step "train-split candidates of $SHIPPED"
  python3 -m covertune generate --out "$run" --adapter "$SHIPPED" --split validation --models fine_tuned \
    --candidates 16 --select grounded-mbr --select-skills-weight 0.2 --candidate-temperature 0.7 \
    --candidate-top-p 0.95 --seed 42 --max-new-tokens 512 --candidate-batch-size 24 --output-file train_c16.csv \
    > "$OUT/trainc.log" 2>&1
  step "train-split candidates rc=$?"
}
[ -n "$SHIPPED" ] && train_candidates &  # SHIPPED= (empty): none
TEST_CANDIDATES=${TEST_CANDIDATES:-0} SWEEP=0 MAXJ=${MAXJ:-8} DEADLINE=${DEADLINE:-1500} \
  VARIANTS=${VARIANTS:-"base ungrounded task dpo rpo nf4 flagw"} PREFER_ARGS=${PREFER_ARGS:-"--max-pairs ${MAX_PAIRS:-256}"} \
  bash bench/levers_gpu.sh "$DATA" "$ROOT" "$OUT"
step "variants rc=$?"
for f in "$OUT"/cands_*.jsonl; do
  [ -f "$f" ] || continue; v=$(basename "$f" .jsonl); v=${v#cands_}
  python3 bench/select_utilities.py --data "$ROOT/base/data/validation.jsonl" --candidates "$f" --counts 16 \
    --skill-weights 0.2 --subset --json "$OUT/select_$v.json" > "$OUT/select_$v.log" 2>&1
done
python3 - "$OUT" "$MARGIN" > "$OUT/winner.json" <<'PY'
import json, sys
from pathlib import Path
out, margin = Path(sys.argv[1]), float(sys.argv[2])
rule = "grounded-mbr+skills:0.2"
figures = {p.stem[len("select_"):]: json.loads(p.read_text())["by_count"]["16"][rule] for p in out.glob("select_*.json")}
base = figures.get("base")
ok = {v: f for v, f in figures.items() if base and f["letters_with_unsupported_numbers"] <= base["letters_with_unsupported_numbers"]
      and f["letters_with_unsupported_orgs"] == 0}
best = max(ok, key=lambda v: ok[v]["rouge_l"]) if ok else None
winner = best if best and base and ok[best]["rouge_l"] >= base["rouge_l"] + margin else "base"
print(json.dumps({"rule": rule, "margin": margin, "figures": figures, "best": best, "winner": winner}, indent=1))
PY
w=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['winner'])" "$OUT/winner.json")
a=$ROOT/$w/adapter; [ -d "$ROOT/$w/preference_adapter" ] && a=$ROOT/$w/preference_adapter
mkdir -p "$OUT/winner_adapter" && cp "$a"/*.json "$a"/*.safetensors "$a"/*.md "$OUT/winner_adapter/" 2>/dev/null
step "winner $w ($a)"
if [ "$w" != base ] && [ ! -f "$OUT/test_cands_$w.jsonl.gz" ]; then
  adapter=; [ -d "$ROOT/$w/preference_adapter" ] && adapter=$ROOT/$w/preference_adapter
  step "$w: test candidates"
  python3 -m covertune generate --preset smol --out "$ROOT/$w" ${adapter:+--adapter "$adapter"} --split test \
    --models fine_tuned --candidates 16 --select grounded-mbr --candidate-temperature 0.7 --candidate-top-p 0.95 \
    --candidate-batch-size ${TEST_BATCH:-64} --output-file test_c16.csv $GEN_ARGS > "$OUT/${w}_test.log" 2>&1 \
    && gzip -c "$ROOT/$w/candidates/test.fine_tuned.jsonl" > "$OUT/test_cands_$w.jsonl.gz"
  step "$w: test candidates rc=$?"
fi
wait
step done
