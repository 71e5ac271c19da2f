#!/usr/bin/env bash
# The checkpoint chosen by the task (`covertune train --select-checkpoint task`) for the `smol` preset, in one call
# on a GPU machine (after `source scripts/gpu_env.sh`):
#   1. `covertune data --preset smol` (the preset's validation split, 81 rows of the full dataset);
#   2. `covertune train --preset smol --select-checkpoint task`, every epoch's checkpoint kept (--save-total-limit 8),
#      the validation letters written and scored at each epoch in batches of 128 (the preset's generate batch);
#   3. OUTDIR/checkpoint_choice.json: per checkpoint the validation loss, ROUGE-L, repetition, unsupported numbers
#      and organisations per letter and the seconds its scoring took; the training's seconds; the step each
#      criterion (last, loss, rouge_l, task) chooses;
#   4. with TEST=1 (the default) and a chosen checkpoint other than the last, that adapter's test letters, generated
#      and evaluated once (the last checkpoint is the preset's adapter as it stands: docs/RESULTS.md).
# Everything lands in OUTDIR (logs, train_log.jsonl, loss.png, the model card, the summary, the test scores).
#   bash bench/checkpoint_choice.sh DATA RUN OUTDIR
set -uo pipefail
DATA=$1; RUN=$2; OUT=$3; TEST=${TEST:-1}; MARGIN=${MARGIN:-0.01}
mkdir -p "$OUT"
step() { echo "$(date +%T) $*" >> "$OUT/steps.log"; }
step data; python3 -m covertune data --preset smol --data "$DATA" --out "$RUN" > "$OUT/data.log" 2>&1 || exit 1
step train
start=$(date +%s)
python3 -m covertune train --preset smol --out "$RUN" --select-checkpoint task --task-grounding-margin "$MARGIN" \
  --save-total-limit 8 > "$OUT/train.log" 2>&1 || exit 1
wall=$(( $(date +%s) - start ))
cp "$RUN/train_log.jsonl" "$RUN/loss.png" "$OUT/"; cp "$RUN/adapter/README.md" "$OUT/model_card.md"
cp "$RUN/adapter/covertune_train.json" "$OUT/"
step summary
python3 - "$RUN/adapter/covertune_train.json" "$wall" > "$OUT/checkpoint_choice.json" <<'EOF'
import json, sys
info = json.load(open(sys.argv[1]))
sel = info["checkpoint_selection"]
rows = [{"step": r["step"], "epoch": r["epoch"], "eval_loss": r["eval_loss"],
         **{k: r["task"][k] for k in ("rougeL_f", "repetition_ratio", "unsupported_numbers", "unsupported_orgs",
                                      "name_mentioned", "company_mentioned", "letters", "seconds")}}
        for r in sel["checkpoints"] if r.get("task")]
print(json.dumps({"chosen_step": sel["step"], "final_step": sel["final_step"], "reason": sel["reason"],
                  "by_criterion": sel["by_criterion"], "checkpoints": rows,
                  "scoring_seconds": round(sum(r["seconds"] for r in rows), 1),
                  "train_seconds_optimizer_steps": info["speed"]["train_seconds"],
                  "train_command_wall_seconds": int(sys.argv[2]), "device": info["speed"]["device"],
                  "versions": info["versions"]}, indent=2))
EOF
chosen=$(python3 -c "import json; s=json.load(open('$OUT/checkpoint_choice.json')); print(s['chosen_step'] != s['final_step'])")
if [ "$TEST" = 1 ] && [ "$chosen" = True ]; then
  step "test letters of the chosen checkpoint"
  python3 -m covertune generate --preset smol --out "$RUN" --split test --models fine_tuned \
    --output-file test_chosen.csv --force > "$OUT/test.log" 2>&1 || exit 1
  python3 -m covertune evaluate --out "$OUT/test_chosen" --eval-csv "$RUN/test_chosen.csv" \
    > "$OUT/evaluate.log" 2>&1 || exit 1
  cp "$RUN/test_chosen.csv" "$OUT/"
fi
step done
