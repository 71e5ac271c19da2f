"""A merged Llama-architecture model written as one GGUF file with the ``gguf`` package's writer.

What llama.cpp expects of a Llama GGUF, and what transformers' GGUF loader undoes when it reads one:
- tensor names from ``gguf``'s own name map (``model.layers.0.self_attn.q_proj.weight`` ->
  ``blk.0.attn_q.weight``); a tied output matrix is not written (llama.cpp reuses ``token_embd``);
- the q and k projections' rows permuted from Hugging Face's rotary layout (the two halves of each
  head) to llama.cpp's (interleaved pairs), per attention head (per KV head for k);
- hyperparameters under ``llama.*`` (context length, sizes, heads, RMSNorm epsilon, rope base and
  dimension; linear rope scaling as metadata, Llama-3.1's as a ``rope_freqs`` tensor of per-frequency
  divisors, as llama.cpp's converter writes it);
- weights as f16, bf16, q8_0, q5_1, q5_0 or q4_0 (``gguf.quants``); 1-D tensors (norms, biases) stay f32,
  and rows whose length is not a multiple of the 32-value block stay f16. With q5_1, q5_0 and q4_0 the
  token embedding and output matrix are q8_0, as llama.cpp's own quantizer keeps them finer.

The file is streamed: header and tensor table first, then each tensor loaded, converted and written
in turn, so memory holds one tensor at a time beyond the source.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import gguf
import numpy as np

from covertune.export.gguf_vocab import add_vocab, vocab_fields

log = logging.getLogger(__name__)

QUANTS = {
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "q5_1": (gguf.GGMLQuantizationType.Q5_1, gguf.LlamaFileType.MOSTLY_Q5_1),
    "q5_0": (gguf.GGMLQuantizationType.Q5_0, gguf.LlamaFileType.MOSTLY_Q5_0),
    "q4_0": (gguf.GGMLQuantizationType.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
}
FINER_EMBEDDINGS = ("q5_1", "q5_0", "q4_0")  # token embedding and output matrix kept in q8_0
ARCHITECTURES = {"llama": gguf.MODEL_ARCH.LLAMA}
SKIPPED = ("rotary_emb.inv_freq",)  # buffers some checkpoints carry; llama.cpp computes them


def check_architecture(config, where: str) -> str:
    """The GGUF architecture name for ``config``; a clear error for one not supported yet."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        archs = ", ".join(getattr(config, "architectures", None) or [str(model_type)])
        raise ValueError(f"GGUF export of the {model_type!r} architecture ({archs}, {where}) is not supported yet: "
                         f"only {', '.join(ARCHITECTURES)} (SmolLM2, Llama-3 and their fine-tunes); "
                         "use --format safetensors and llama.cpp's own converter")
    return gguf.MODEL_ARCH_NAMES[ARCHITECTURES[model_type]]


def hparams(config) -> dict:
    n_head = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    rope = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    return {"context_length": config.max_position_embeddings, "embedding_length": config.hidden_size,
            "block_count": config.num_hidden_layers, "feed_forward_length": config.intermediate_size,
            "head_count": n_head, "head_count_kv": getattr(config, "num_key_value_heads", None) or n_head,
            "head_dim": head_dim, "rms_eps": float(config.rms_norm_eps), "rope_theta": float(theta),
            "rope": rope, "tied": bool(getattr(config, "tie_word_embeddings", False))}


def llama3_rope_factors(rope: dict, theta: float, head_dim: int) -> np.ndarray:
    """llama.cpp's ``rope_freqs`` for Llama-3.1's rope: per frequency, the divisor of the base frequency."""
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_ctx = rope.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def permute_rotary(w: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of a q/k projection (weight or bias) from Hugging Face's rotary layout to llama.cpp's."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tensor_type(gguf_name: str, shape: tuple[int, ...], quant: str) -> gguf.GGMLQuantizationType:
    if len(shape) < 2:
        return gguf.GGMLQuantizationType.F32
    qtype = QUANTS[quant][0]
    if quant in FINER_EMBEDDINGS and gguf_name in ("token_embd.weight", "output.weight"):
        qtype = gguf.GGMLQuantizationType.Q8_0
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    return qtype if shape[-1] % block == 0 else gguf.GGMLQuantizationType.F16


def _encode(data: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    if qtype == gguf.GGMLQuantizationType.F32:
        return data.astype(np.float32)
    if qtype == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16)
    return gguf.quants.quantize(data.astype(np.float32), qtype)


def _info_args(shape: tuple[int, ...], qtype: gguf.GGMLQuantizationType):
    """(shape, numpy dtype, nbytes, raw dtype) for GGUFWriter.add_tensor_info."""
    if qtype == gguf.GGMLQuantizationType.F32:
        return shape, np.float32, int(np.prod(shape)) * 4, None
    if qtype == gguf.GGMLQuantizationType.F16:
        return shape, np.float16, int(np.prod(shape)) * 2, None
    byte_shape = gguf.quant_shape_to_byte_shape(shape, qtype)
    return byte_shape, np.uint8, int(np.prod(byte_shape)), qtype


def write_gguf(path: Path, source, quant: str = "f16", name: str = "") -> dict:
    """Write ``source`` (covertune.export.source.ModelSource) to ``path``; returns what was written
    (architecture, context length, token ids, tensor types) for the export's record."""
    if quant not in QUANTS:
        raise ValueError(f"quant must be one of {', '.join(QUANTS)}, got {quant!r}")
    arch = check_architecture(source.config, str(source.folder or source.origin.get("base_model", "")))
    hp = hparams(source.config)
    emb_name = "model.embed_tokens.weight"
    if emb_name not in source.shapes:
        raise ValueError(f"the model has no {emb_name}; not a Llama checkpoint covertune can export")
    vocab_size = source.shapes[emb_name][0]
    vocab = vocab_fields(source.tokenizer, vocab_size)
    rope_type = hp["rope"].get("rope_type", hp["rope"].get("type", "default")) or "default"
    if rope_type not in ("default", "linear", "llama3"):
        raise ValueError(f"rope scaling {rope_type!r} is not supported yet for GGUF export (default, linear, llama3)")

    tmap = gguf.get_tensor_name_map(ARCHITECTURES["llama"], hp["block_count"])
    plan: list[tuple[str, str | None, gguf.GGMLQuantizationType, tuple[int, ...]]] = []
    for hf_name, shape in source.shapes.items():
        if hf_name.endswith(SKIPPED) or (hf_name == "lm_head.weight" and hp["tied"]):
            continue
        g_name = tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if g_name is None:
            raise ValueError(f"tensor {hf_name} has no GGUF name in the llama architecture; this checkpoint "
                             "is not supported yet for GGUF export")
        plan.append((g_name, hf_name, tensor_type(g_name, shape, quant), shape))
    if not hp["tied"] and "lm_head.weight" not in source.shapes:
        raise ValueError("the model's embeddings are not tied but it has no lm_head.weight")
    rope_factors = None
    if rope_type == "llama3":
        rope_factors = llama3_rope_factors(hp["rope"], hp["rope_theta"], hp["head_dim"])
        plan.append((gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", None,
                     gguf.GGMLQuantizationType.F32, rope_factors.shape))

    writer = gguf.GGUFWriter(str(path), arch)
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name or "covertune model")
        writer.add_finetune("covertune")
        writer.add_context_length(hp["context_length"])
        writer.add_embedding_length(hp["embedding_length"])
        writer.add_block_count(hp["block_count"])
        writer.add_feed_forward_length(hp["feed_forward_length"])
        writer.add_head_count(hp["head_count"])
        writer.add_head_count_kv(hp["head_count_kv"])
        writer.add_layer_norm_rms_eps(hp["rms_eps"])
        writer.add_rope_freq_base(hp["rope_theta"])
        writer.add_rope_dimension_count(hp["head_dim"])
        if hp["head_dim"] * hp["head_count"] != hp["embedding_length"]:
            writer.add_key_length(hp["head_dim"])
            writer.add_value_length(hp["head_dim"])
        if rope_type == "linear":
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(float(hp["rope"]["factor"]))
        writer.add_vocab_size(vocab_size)
        writer.add_file_type(QUANTS[quant][1])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        add_vocab(writer, vocab)
        for g_name, _, qtype, shape in plan:
            writer.add_tensor_info(g_name, *_info_args(shape, qtype))

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for g_name, hf_name, qtype, shape in plan:
            if hf_name is None:
                data = rope_factors
            else:
                data = source.load(hf_name).float().cpu().numpy()
                if g_name.endswith(("attn_q.weight", "attn_q.bias")):
                    data = permute_rotary(data, hp["head_count"])
                elif g_name.endswith(("attn_k.weight", "attn_k.bias")):
                    data = permute_rotary(data, hp["head_count_kv"])
            writer.write_tensor_data(_encode(data, qtype))
    finally:
        writer.close()
    types = sorted({qtype.name for _, _, qtype, _ in plan})
    return {"architecture": arch, "context_length": hp["context_length"], "vocab_size": vocab_size,
            "eos_token_id": vocab["eos"], "bos_token_id": vocab["bos"], "add_bos_token": vocab["add_bos"],
            "pre_tokenizer": vocab["pre"], "chat_template": bool(vocab["chat_template"]),
            "tensors": len(plan), "tensor_types": types}
