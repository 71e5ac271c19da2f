"""K-quants (q4_k_m and the rest) by llama.cpp's own quantizer: the ``gguf`` package cannot write them.

The model is first written as an f16 GGUF, then requantized by ``llama-quantize`` when it is on PATH, else
by the same code in llama-cpp-python (``llama_model_quantize``, the ``llamacpp`` extra) when that is
installed; with neither, asking for a K-quant is a one-line error naming what to install. llama.cpp picks
each tensor's type as its recipe says (q4_k_m keeps some in q6_k) and falls back to a legacy type for rows
that are not a multiple of 256 values.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

# covertune's name -> llama.cpp's file type name (llama-quantize's argument, LLAMA_FTYPE_MOSTLY_<name>)
KQUANTS = {"q2_k": "Q2_K", "q3_k_s": "Q3_K_S", "q3_k_m": "Q3_K_M", "q3_k_l": "Q3_K_L", "q4_k_s": "Q4_K_S",
           "q4_k_m": "Q4_K_M", "q5_k_s": "Q5_K_S", "q5_k_m": "Q5_K_M", "q6_k": "Q6_K"}
TOOL = "llama-quantize"


def quantizer() -> str | None:
    """What will quantize: the path of ``llama-quantize``, "llama_cpp" (the binding), or None."""
    tool = shutil.which(TOOL)
    if tool:
        return tool
    if importlib.util.find_spec("llama_cpp") is not None:
        return "llama_cpp"
    return None


def check_kquant(quant: str) -> None:
    """A clear error, before any model is loaded, when ``quant`` is a K-quant and nothing can make it."""
    if quant in KQUANTS and quantizer() is None:
        raise RuntimeError(f"quant {quant} needs llama.cpp's quantizer: put its {TOOL} on PATH or "
                           "pip install 'covertune[llamacpp]' (llama-cpp-python); or choose f16, bf16, q8_0, "
                           "q5_1, q5_0 or q4_0")


def requantize(src: Path, dst: Path, quant: str, threads: int = 0) -> None:
    """``src`` (an f16 GGUF) requantized to ``quant`` in ``dst``."""
    check_kquant(quant)
    name = KQUANTS[quant]
    tool = quantizer()
    if tool != "llama_cpp":
        args = [tool, str(src), str(dst), name] + ([str(threads)] if threads else [])
        done = subprocess.run(args, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"{TOOL} failed ({done.returncode}) making {quant}: {tail[0]}")
        return
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}")
    params.nthread = threads
    llama_cpp.llama_backend_init()
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0 or not dst.exists():
        raise RuntimeError(f"llama.cpp's quantizer (llama-cpp-python) failed making {quant} (code {rc})")


def write_model_gguf(path: Path, source, quant: str, name: str = "") -> dict:
    """``path``: the model of ``source`` (covertune.export.source) as one GGUF file in ``quant``; a K-quant
    is the f16 file requantized by llama.cpp (``requantize``)."""
    from covertune.export.gguf_llama import write_gguf  # numpy and the gguf package: only when writing

    if quant not in KQUANTS:
        return write_gguf(path, source, quant, name)
    f16 = path.with_name(".f16-" + path.name)
    written = write_gguf(f16, source, "f16", name)
    try:
        requantize(f16, path, quant)
    finally:
        f16.unlink(missing_ok=True)
    import gguf

    reader = gguf.GGUFReader(str(path))
    written["tensor_types"] = sorted({t.tensor_type.name for t in reader.tensors})
    del reader
    return written
