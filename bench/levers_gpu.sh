#!/usr/bin/env bash
# The grounded-letter levers of the `smol` preset, measured side by side on the validation split in one call on
# a GPU machine (after `source scripts/gpu_env.sh`), several runs sharing the GPU at once:
#   base        the preset as it stands
#   ungrounded  train --drop-flags ungrounded (the training letters that claim a number or organisation their
#               inputs do not hold are skipped)
#   classifier  data --filter-classifier 0.5 (the letter-quality classifier's filter on the train rows)
#   dora        train --use-dora;      rslora  train --use-rslora;      neftune  train --neftune-noise-alpha 5
#   task        train --select-checkpoint task (the checkpoint chosen by its validation letters)
#   flagw       train --flag-weights FLAG_WEIGHTS (the data stage's flags as loss weights instead of drops;
#               default ungrounded=0.25 generic=0.5 collapsed_bullets=0.5 too_short=0.5)
#   nf4         train --quantization nf4 (QLoRA's 4-bit base: does the model still learn the letter form?)
#   dpo, rpo    covertune prefer on the base adapter (pairs from the training split only), losses dpo and rpo
# Every variant's adapter writes 16 candidates per validation prompt (the greedy letter + 15 samples at T 0.7,
# top-p 0.95); bench/candidate_sweep.py then re-makes grounded-mbr for 12/16 candidates and repetition weights
# 0/1 and picks one setting by its rule (fixed before the run): at most 0.005 unsupported numbers per
# letter, no unsupported organisation, name and company rates no lower than the base's greedy letters, a
# validation repetition ratio at most MAX_REP (0.354: the test letters ran 0.006-0.009 above validation in the
# run before), then the best ROUGE-L. Variants still running at DEADLINE seconds are stopped and left out.
# OUTDIR gets the logs, candidate files, the sweep (candidate_sweep.json) and chosen.sets: the `covertune run
# --set` options of the chosen setting, for bench/levers_final.sh.
#   bash bench/levers_gpu.sh DATA ROOT OUTDIR
# TEST_CANDIDATES=1: each variant then writes its 16 candidates for the test split too (OUTDIR/test_cands_NAME.jsonl.gz),
# so that the variant chosen on validation (on a CPU machine, after the call) has its test letters without another
# GPU call; only the chosen variant's are ever scored. SWEEP=0 leaves the sweep to the CPU machine.
# DATA_ARGS, TRAIN_ARGS, GEN_ARGS, PREFER_ARGS are added to every data, train, generate, prefer call (a CPU smoke
# run on a tiny model: tests/bench/test_levers_gpu.sh's settings).
set -uo pipefail
DATA=$1; ROOT=$2; OUT=$3
DATA_ARGS=${DATA_ARGS:-}; TRAIN_ARGS=${TRAIN_ARGS:-}; GEN_ARGS=${GEN_ARGS:-}; PREFER_ARGS=${PREFER_ARGS:-}
export FLAG_WEIGHTS=${FLAG_WEIGHTS:-"ungrounded=0.25 generic=0.5 collapsed_bullets=0.5 too_short=0.5"}
WORKERS=${WORKERS:-16}; DEADLINE=${DEADLINE:-470}; MAXJ=${MAXJ:-6}; MAX_REP=${MAX_REP:-0.354}
VARIANTS=${VARIANTS:-"base ungrounded classifier dora neftune rslora task dpo rpo"}
export OMP_NUM_THREADS=2 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
mkdir -p "$OUT" "$ROOT"
t0=$(date +%s)
step() { echo "$(date +%T) +$(( $(date +%s) - t0 ))s $*" >> "$OUT/steps.log"; }
gate() { while [ "$(pgrep -fc 'covertune (train|generate|prefer|data)')" -ge "$MAXJ" ]; do sleep 2; done; }
GEN=(--split validation --models fine_tuned --candidates 16 --select grounded-mbr --candidate-temperature 0.7
     --candidate-top-p 0.95 --candidate-batch-size 24 --output-file validation_c16.csv)

step data
python3 -m covertune data --preset smol --data "$DATA" --out "$ROOT/base" $DATA_ARGS > "$OUT/data.log" 2>&1 || exit 1
cp "$ROOT/base/data/report.md" "$OUT/data_report.md"

candidates() {  # NAME RUN [ADAPTER]
  local name=$1 run=$2 adapter=${3:-}
  gate; step "$name: validation candidates"
  python3 -m covertune generate --preset smol --out "$run" ${adapter:+--adapter "$adapter"} "${GEN[@]}" $GEN_ARGS \
    > "$OUT/${name}_validation.log" 2>&1 || { step "$name: generate failed"; return 1; }
  cp "$run/candidates/validation.fine_tuned.jsonl" "$OUT/cands_$name.jsonl"
  cp "$run/generate_stats.json" "$OUT/${name}_validation_stats.json"
  if [ "${TEST_CANDIDATES:-0}" = 1 ]; then
    gate; step "$name: test candidates"
    python3 -m covertune generate --preset smol --out "$run" ${adapter:+--adapter "$adapter"} "${GEN[@]}" --split test \
      --output-file test_c16.csv $GEN_ARGS > "$OUT/${name}_test.log" 2>&1 || { step "$name: test generate failed"; return 1; }
    gzip -c "$run/candidates/test.fine_tuned.jsonl" > "$OUT/test_cands_$name.jsonl.gz"
    cp "$run/generate_stats.json" "$OUT/${name}_test_stats.json"
  fi
  step "$name: done"
}

trained() {  # NAME [train options]: its run's data (else a copy of the base's), trained with the options, then its candidates
  local name=$1; shift; local run=$ROOT/$name
  [ -d "$run/data" ] || { mkdir -p "$run"; cp -r "$ROOT/base/data" "$run/"; }
  gate; step "$name: train $*"
  python3 -m covertune train --preset smol --out "$run" "$@" $TRAIN_ARGS > "$OUT/${name}_train.log" 2>&1 \
    || { step "$name: train failed"; return 1; }
  cp "$run/train_log.jsonl" "$OUT/${name}_train_log.jsonl"; cp "$run/adapter/covertune_train.json" "$OUT/${name}_train.json"
  [ "$name" = base ] && touch "$ROOT/base.trained"
  candidates "$name" "$run"
}

classifier() {  # the data stage again with the classifier's filter (validation is carved before it: the same rows)
  local run=$ROOT/classifier
  gate; step "classifier: data --filter-classifier 0.5"
  python3 -m covertune data --preset smol --data "$DATA" --out "$run" --filter-classifier 0.5 $DATA_ARGS \
    > "$OUT/classifier_data.log" 2>&1 || { step "classifier: data failed"; return 1; }
  cmp -s "$run/data/validation.jsonl" "$ROOT/base/data/validation.jsonl" || { step "classifier: validation differs"; return 1; }
  cp "$run/data/report.md" "$OUT/classifier_data_report.md"
  trained classifier
}

preferred() {  # NAME LOSS: covertune prefer on a copy of the base run's data and SFT adapter
  local name=$1 loss=$2 run=$ROOT/$1
  while [ ! -f "$ROOT/base.trained" ]; do sleep 3; [ $(( $(date +%s) - t0 )) -gt "$DEADLINE" ] && return 1; done
  mkdir -p "$run"; cp -r "$ROOT/base/data" "$ROOT/base/adapter" "$run/"
  # the samples of the first preference variant are reused by the next (the same sampling options)
  while [ "$name" != dpo ] && [ ! -f "$ROOT/dpo/.prefer/samples.jsonl.done" ]; do
    sleep 3; [ $(( $(date +%s) - t0 )) -gt "$DEADLINE" ] && return 1; done
  [ "$name" != dpo ] && mkdir -p "$run/.prefer" && cp "$ROOT/dpo/.prefer/samples.jsonl" "$run/.prefer/"
  gate; step "$name: prefer --loss $loss"
  python3 -m covertune prefer --preset smol --out "$run" --loss "$loss" --candidates 6 --sample-batch-size 64 $PREFER_ARGS \
    > "$OUT/${name}_prefer.log" 2>&1 || { step "$name: prefer failed"; return 1; }
  [ "$name" = dpo ] && touch "$run/.prefer/samples.jsonl.done"
  cp "$run/preference/summary.json" "$OUT/${name}_summary.json"; cp "$run/preference/train_log.jsonl" "$OUT/${name}_train_log.jsonl"
  candidates "$name" "$run" "$run/preference_adapter"
}

pids=()
for v in $VARIANTS; do
  case $v in
    base) trained base & ;;
    ungrounded) trained ungrounded --drop-flags ungrounded & ;;
    classifier) classifier & ;;
    dora) trained dora --use-dora & ;;
    rslora) trained rslora --use-rslora & ;;
    neftune) trained neftune --neftune-noise-alpha 5 & ;;
    task) trained task --select-checkpoint task & ;;
    nf4) trained nf4 --quantization nf4 & ;;
    flagw) trained flagw --flag-weights $FLAG_WEIGHTS & ;;
    dpo) preferred dpo dpo & ;;
    rpo) preferred rpo rpo & ;;
    *) echo "unknown variant $v" >&2; exit 2 ;;
  esac
  pids+=($!); sleep 5
done
while [ "$(jobs -rp | wc -l)" -gt 0 ] && [ $(( $(date +%s) - t0 )) -lt "$DEADLINE" ]; do sleep 3; done
if [ "$(jobs -rp | wc -l)" -gt 0 ]; then
  step "deadline: stopping $(jobs -rp | wc -l) variants"
  pkill -f 'covertune (train|generate|prefer|data)'; sleep 3; kill "${pids[@]}" 2>/dev/null
fi
nvidia-smi --query-gpu=memory.used,memory.total --format=csv > "$OUT/nvidia_smi_end.csv" 2>/dev/null

[ "${SWEEP:-1}" = 1 ] || { step "no sweep (SWEEP=0)"; exit 0; }
step sweep
sets=(); [ -f "$OUT/cands_base.jsonl" ] || { step "no base candidates"; exit 1; }
for v in base $VARIANTS; do
  [ -f "$OUT/cands_$v.jsonl" ] && [[ ! " ${sets[*]} " =~ ",$v " ]] && sets+=(--set "$OUT/cands_$v.jsonl,0.7,0.95,$v")
done
python3 bench/candidate_sweep.py --data "$ROOT/base/data/validation.jsonl" "${sets[@]}" --counts 1 12 16 \
  --selects grounded-mbr --repetition-weights 0 1 --max-repetition "$MAX_REP" --workers "$WORKERS" \
  --json "$OUT/candidate_sweep.json" > "$OUT/candidate_sweep.log" 2>&1 || { step "sweep failed"; exit 1; }
python3 - "$OUT/candidate_sweep.json" > "$OUT/chosen.sets" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))["chosen"]
train = {"base": [], "ungrounded": ["train.drop_flags=ungrounded"], "classifier": ["data.filter_classifier=0.5"],
         "dora": ["train.use_dora=true"], "rslora": ["train.use_rslora=true"],
         "neftune": ["train.neftune_noise_alpha=5"], "task": ["train.select_checkpoint=task"], "nf4": ["train.quantization=nf4"],
         "flagw": ["train.flag_weights=" + ",".join(__import__("os").environ["FLAG_WEIGHTS"].split())],
         "dpo": ["prefer.loss=dpo"], "rpo": ["prefer.loss=rpo"]}[c["variant"]]
if c["variant"] in ("dpo", "rpo"):
    train += ["prefer.candidates=6", "prefer.sample_batch_size=64"]
n = c["candidates"]
sets = train + [f"generate.candidates={n}", f"generate.candidate_batch_size={384 // n}",
                f"generate.select_repetition_weight={c['repetition_weight']}"]
print(" ".join(f"--set {s}" for s in sets) + (" --prefer" if c["variant"] in ("dpo", "rpo") else ""))
EOF
step "chosen: $(cat "$OUT/chosen.sets")"
