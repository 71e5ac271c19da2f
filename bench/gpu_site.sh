#!/usr/bin/env bash
# Builds .gpu/w/bsite.tgz here (unpacked on the GPU machine by scripts/gpu_env.sh):
# the Python packages the benchmarks need that the lent GPU machine lacks
# (bitsandbytes for CUDA 13 only, liger-kernel, TRL, datasets, Unsloth and their small dependencies,
# gguf, and FastAPI, uvicorn and pydantic for bench/serve_load.py; anyio, h11 and httpx are there), unpacked,
# for the machine's python3 3.12; its own torch 2.11 and transformers 5.17 are used.
# Versions: Unsloth 2026.10.9 accepts transformers <= 5.17 and trl <= 1.15, hence those pins.
# rouge-score (an sdist only: built into a wheel here), rapidfuzz (its LCS) and nltk are for ROUGE-L on that machine (grounded
# decoding's MBR choice, sweeps). GPU_SITE=lean leaves out Unsloth, xformers, torchao and liger-kernel
# (only the Unsloth benchmark needs them), for a smaller archive that travels in one call.
# GPU_TRANSFORMERS=VERSION also builds .gpu/w/tf.tgz: that transformers (the version a fresh install gets;
# 5.24 decodes a single query without copying the key/value heads, docs/PERFORMANCE.md) and the hub
# packages it needs; scripts/gpu_env.sh puts it ahead of the machine's own when it was carried (not with
# Unsloth, which accepts transformers <= 5.17).
set -euo pipefail
cd "$(dirname "$0")/.."
W=$(mktemp -d); S=$(mktemp -d)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$W" \
  bitsandbytes==0.50.2 liger-kernel==0.8.5 trl==1.15.0 datasets==4.8.5 dill==0.4.1 multiprocess==0.70.19 \
  unsloth==2026.10.9 unsloth_zoo==2026.10.9 cut_cross_entropy==25.1.1 tyro==1.0.17 docstring_parser==0.18.0 \
  typeguard==4.6.1 msgspec==0.22.0 torchao==0.18.0 xformers==0.0.35 hf_transfer==0.1.9 json5==0.17.3 \
  nest_asyncio==1.6.0 structlog==26.1.0 gguf==0.19.0 \
  fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0 pydantic==2.14.4 pydantic_core==2.50.5 \
  annotated-types==0.8.0 typing-inspection==0.4.5 opentelemetry-api==1.45.2 \
  nltk==3.9.2 regex==2026.4.4 click==8.3.1 joblib==1.5.2 rapidfuzz==3.14.6
python3 -m pip wheel -q --no-deps -w "$W" rouge-score==0.1.2
if [ "${GPU_SITE:-full}" = lean ]; then
  rm -f "$W"/unsloth* "$W"/xformers* "$W"/torchao* "$W"/liger_kernel* "$W"/cut_cross_entropy* "$W"/tyro* \
    "$W"/hf_transfer*
fi
for w in "$W"/*.whl; do unzip -q -o "$w" -d "$S"; done
rm -rf "$S/studio"  # Unsloth's web UI, not needed to train
find "$S/bitsandbytes" -name 'libbitsandbytes*' ! -name '*cuda130*' ! -name '*cpu*' -delete
mkdir -p .gpu/w && tar czf .gpu/w/bsite.tgz -C "$S" . && rm -rf "$W" "$S"
ls -la .gpu/w/bsite.tgz
if [ -n "${GPU_TRANSFORMERS:-}" ]; then
  W=$(mktemp -d); S=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$W" "transformers==$GPU_TRANSFORMERS" huggingface_hub==2.4.0 tokenizers==0.23.3 \
    safetensors==0.8.0 hf-xet==1.8.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 idna==3.20 \
    anyio==4.16.0 h11==0.16.0 certifi click==8.5.1 typer==0.29.2 shellingham==1.5.4 rich==15.0.0 \
    annotated-doc==0.0.7 markdown-it-py mdurl pygments
  for w in "$W"/*.whl; do unzip -q -o "$w" -d "$S"; done
  tar czf .gpu/w/tf.tgz -C "$S" . && rm -rf "$W" "$S"
  ls -la .gpu/w/tf.tgz
fi
