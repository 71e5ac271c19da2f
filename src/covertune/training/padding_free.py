"""Padding-free training batches: a micro-batch's examples are concatenated into one row with no
padding (transformers' ``DataCollatorWithFlattening``: position ids restart at every example, and
the first label of each is -100), and attention stays inside each example through a variable-length
attention kernel that reads the examples' boundaries (``cu_seq_lens_q``) from the batch.

The kernel is PyTorch's own ``torch.nn.attention.varlen.varlen_attn`` (flash or cuDNN, CUDA only);
it is registered with transformers' attention interface under ``ATTN_IMPLEMENTATION``, so every
model that uses that interface (Llama, Mistral, Qwen, Gemma, SmolLM...) trains this way without
the flash-attn package. Elsewhere (CPU, or an older PyTorch) the same function runs SDPA once per
example: exact, and what the tests compare against padded batches. A batch that carries no
boundaries (an ordinary padded batch) goes to transformers' SDPA attention unchanged.

The loss is the padded batch's (the same label tokens, averaged the same way); only the padding's
compute goes away, which for grouped batches of this task's lengths is 4-16% of all tokens.
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F

from covertune.config.options import AutoOnOff, check_choice
from covertune.training.sft_data import LOSS_WEIGHT

ATTN_IMPLEMENTATION = "covertune_varlen"


def varlen_kernel():
    """PyTorch's variable-length attention function, or None where this PyTorch has none."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def kernel_available() -> bool:
    """Whether the fused variable-length kernel can run here (a CUDA GPU of compute capability 8.0+)."""
    return (varlen_kernel() is not None and torch.cuda.is_available()
            and torch.cuda.get_device_capability(0) >= (8, 0))


def resolve(setting: str, attn_implementation: str = "auto", torch_compile: bool = False) -> bool:
    """on: always (the exact per-example fallback where the kernel cannot run); off: never; auto: where
    the fused kernel runs, no other attention implementation was asked for, and the model is not
    compiled (packed rows under torch.compile are untested on a GPU)."""
    if check_choice("padding_free", setting, AutoOnOff) == "auto":
        return (kernel_available() and attn_implementation in ("auto", ATTN_IMPLEMENTATION)
                and not torch_compile)
    return setting == "on"


@functools.cache
def _call_style(fn) -> tuple[bool, dict]:
    """Whether ``fn`` (a varlen_attn) takes ``scale``, and how it asks for causal attention:
    ``is_causal=True`` in early PyTorch versions, ``window_size=(-1, 0)`` later. Read once per function,
    not in every layer's forward."""
    params = inspect.signature(fn).parameters
    return "scale" in params, ({"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)})


def _fused(q, k, v, cu_seqlens, max_len: int, scale: float):
    """varlen_attn on (tokens, heads, dim) tensors, causal, across the PyTorch versions that have it."""
    fn = varlen_kernel()
    takes_scale, causal = _call_style(fn)
    kwargs = {**causal, **({"scale": scale} if takes_scale else {})}
    return fn(q, k, v, cu_seqlens, cu_seqlens, max_len, max_len, **kwargs)


def _per_example(q, k, v, cu_seqlens, scale: float):
    """The same attention with SDPA, one example at a time (the reference the fused kernel must equal)."""
    bounds = cu_seqlens.tolist()
    out = torch.empty_like(q)
    for start, end in zip(bounds[:-1], bounds[1:]):
        part = [t[start:end].transpose(0, 1) for t in (q, k, v)]  # (heads, length, dim)
        out[start:end] = F.scaled_dot_product_attention(*part, is_causal=True, scale=scale).transpose(0, 1)
    return out


def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
              **kwargs):
    """transformers attention-interface function: (batch, heads, length, dim) in, (batch, length,
    heads, dim) out. Packed batches (``cu_seq_lens_q`` given) attend within each example; others go
    to transformers' SDPA attention."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    if query.shape[0] != 1:
        raise ValueError(f"a padding-free batch is one packed row, got a batch of {query.shape[0]} rows")
    if dropout and module.training:
        raise ValueError("attention dropout is not supported with padding-free batches: "
                         "set the model's attention_dropout to 0 or train with --padding-free off")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    groups = query.shape[1] // key.shape[1]  # grouped-query attention: repeat the key/value heads
    if groups > 1:
        key, value = (t.repeat_interleave(groups, dim=1) for t in (key, value))
    q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))  # (tokens, heads, dim)
    cu = cu.to(device=q.device, dtype=torch.int32)
    if q.is_cuda and varlen_kernel() is not None:
        out = _fused(q, k, v, cu, int(kwargs.get("max_length_q") or (cu[1:] - cu[:-1]).max()), scale)
    else:
        out = _per_example(q, k, v, cu, scale)
    return out.unsqueeze(0), None


def _mask(*args, attention_mask=None, **kwargs):
    """No mask for packed rows (the boundaries travel as cu_seq_lens); SDPA's mask for padded batches."""
    if attention_mask is None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def register() -> str:
    """Registers the attention function (and its mask function) with transformers; the name to pass
    as ``attn_implementation``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, _mask)
    return ATTN_IMPLEMENTATION


class PackedCollator:
    """transformers' flattening collator, with the boundaries the attention function reads; examples that
    carry a "loss_weight" (train's flag_weights) give the packed row one weight per token, their example's."""

    def __init__(self):
        from transformers import DataCollatorWithFlattening

        self.flatten = DataCollatorWithFlattening(return_flash_attn_kwargs=True)

    def __call__(self, features: list[dict]) -> dict:
        batch = self.flatten(features)
        if features and LOSS_WEIGHT in features[0]:
            weights = [float(f[LOSS_WEIGHT]) for f in features for _ in range(len(f["input_ids"]))]
            batch[LOSS_WEIGHT] = torch.tensor([weights], dtype=torch.float32)
        return batch


def collator() -> PackedCollator:
    """The collator of padding-free batches (PackedCollator)."""
    return PackedCollator()
