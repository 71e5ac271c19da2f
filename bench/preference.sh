#!/usr/bin/env bash
# The prefer stage's effect on the `smol` preset, measured on the validation split, in one call on a GPU machine
# (after `source scripts/gpu_env.sh`):
#   1. `covertune data` + `covertune train --preset smol` (skipped where RUN already holds them);
#   2. the SFT adapter's greedy validation letters, scored (the baseline);
#   3. for each variant in VARIANTS ("name:options", options with commas for spaces), a copy of RUN's data and
#      SFT adapter, `covertune prefer` with those options (pairs from the training split only), then the preference
#      adapter's greedy validation letters, scored;
#   4. a table of the fine-tuned letters' validation means: ROUGE-L, repetition, unsupported numbers and
#      organisations, name/company/title mentions, pairs and the margin on them.
# Everything lands in OUTDIR (logs, pairs, summaries, eval CSVs, evaluate outputs, preference.md).
#   bash bench/preference.sh DATA RUN OUTDIR
# PRESET (default smol) and DATA_ARGS, TRAIN_ARGS, GEN_ARGS, PREFER_ARGS (added to every data, train, generate, prefer call) change
# the recipe, e.g. for a CPU smoke run on a small model.
set -uo pipefail
DATA=$1; RUN=$2; OUT=$3; PRESET=${PRESET:-smol}
DATA_ARGS=${DATA_ARGS:-}; TRAIN_ARGS=${TRAIN_ARGS:-}; GEN_ARGS=${GEN_ARGS:-}; PREFER_ARGS=${PREFER_ARGS:-}
VARIANTS=${VARIANTS:-"dpo:--loss,dpo rpo:--loss,rpo dpo_lr2e-4:--loss,dpo,--learning-rate,2e-4,--epochs,2"}
mkdir -p "$OUT"
step() { echo "$(date +%T) $*" >> "$OUT/steps.log"; }
step data; python3 -m covertune data --preset $PRESET --data "$DATA" --out "$RUN" $DATA_ARGS > "$OUT/data.log" 2>&1 || exit 1
step train; python3 -m covertune train --preset $PRESET --out "$RUN" $TRAIN_ARGS > "$OUT/train.log" 2>&1 || exit 1
step "validation letters: SFT"
python3 -m covertune generate --preset $PRESET --out "$RUN" --split validation --models fine_tuned \
  --output-file validation_sft.csv $GEN_ARGS > "$OUT/validation_sft.log" 2>&1 || exit 1
python3 -m covertune evaluate --out "$OUT/eval_sft" --eval-csv "$RUN/validation_sft.csv" --bertscore-model none \
  > "$OUT/eval_sft.log" 2>&1 || exit 1
for v in $VARIANTS; do
  name=${v%%:*}; opts=${v#*:}; opts=${opts//,/ }; R="$RUN-pref-$name"
  mkdir -p "$R"; cp -r "$RUN/data" "$R/"; rm -rf "$R/adapter"; cp -r "$RUN/adapter" "$R/adapter"
  # the candidates sampled for an earlier variant are reused where the sampling options are the same
  [ -n "${SAMPLED:-}" ] && [ ! -d "$R/.prefer" ] && mkdir -p "$R/.prefer" && cp "$SAMPLED" "$R/.prefer/samples.jsonl"
  step "prefer $name: $opts"
  python3 -m covertune prefer --preset $PRESET --out "$R" $opts $PREFER_ARGS > "$OUT/prefer_$name.log" 2>&1 || { step "prefer $name failed"; continue; }
  cp "$R/preference/summary.json" "$OUT/summary_$name.json"; cp "$R/preference/pairs.jsonl" "$OUT/pairs_$name.jsonl"
  cp "$R/preference/choices.jsonl" "$OUT/choices_$name.jsonl"; SAMPLED=${SAMPLED:-$R/.prefer/samples.jsonl}
  cp "$R/preference/train_log.jsonl" "$OUT/train_log_$name.jsonl"
  step "validation letters: $name"
  python3 -m covertune generate --preset $PRESET --out "$R" --adapter "$R/preference_adapter" --split validation \
    --models fine_tuned --output-file validation_pref.csv $GEN_ARGS > "$OUT/validation_$name.log" 2>&1 || continue
  python3 -m covertune evaluate --out "$OUT/eval_$name" --eval-csv "$R/validation_pref.csv" --bertscore-model none \
    > "$OUT/eval_$name.log" 2>&1 || continue
done
step table
python3 - "$OUT" <<'EOF' > "$OUT/preference.md"
import json, sys
from pathlib import Path
import pandas as pd
out = Path(sys.argv[1])
metrics = ["rougeL_f", "repetition_ratio", "unsupported_numbers", "unsupported_orgs", "name_mentioned",
           "company_mentioned", "job_title_mentioned"]
rows = []
for d in sorted(out.glob("eval_*")):
    if not (d / "eval_summary.csv").exists():
        continue
    s = pd.read_csv(d / "eval_summary.csv")
    s = s[(s["subset"] == "full") & (s["model"] == "fine_tuned")].set_index("metric")["mean"]
    name = d.name[5:]
    row = {"variant": name, **{m: round(float(s[m]), 4) for m in metrics if m in s}}
    summary = out / f"summary_{name}.json"
    if summary.exists():
        j = json.loads(summary.read_text())
        row.update(pairs=j["pairs"], margin_before=j["margin_before"], margin_after=j["margin_after"])
    rows.append(row)
keys = list(dict.fromkeys(k for r in rows for k in r))
print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
for r in rows:
    print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
EOF
cat "$OUT/preference.md"
step done
