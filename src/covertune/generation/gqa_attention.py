"""SDPA for one decoding query that never copies the key/value heads, compiled or not.

In a model whose query heads share key/value heads (grouped-query attention: the embedded model has 9
query heads over 3 key/value heads), transformers' ``sdpa`` attention folds the query heads of a group
into the query-length dimension for a single decoding query (``pack_gqa``) and attends to the cache as it
is. It does so only outside torch.compile: when the decoding step is compiled (the ``static`` engine), it
copies the whole cache once per query head of a group (``repeat_kv``) at every layer and step instead.
This attention does the same folding in both cases, with transformers' own ``pack_gqa``, and hands every
other call (prompts, models without groups) to transformers' ``sdpa`` unchanged. Its masks are SDPA's.

    from covertune import gqa_attention
    with gqa_attention.packed(model):  # sdpa -> this attention while the block runs
        model.generate(...)
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

NAME = "sdpa_packed_gqa"


def attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask,
              dropout: float = 0.0, scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """transformers' attention-function signature: ``query`` (batch, heads, q_len, dim), ``key`` and
    ``value`` (batch, key/value heads, kv_len, dim); returns (batch, q_len, heads, dim) and no weights."""
    from transformers.integrations.sdpa_attention import pack_gqa, sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    if query.shape[2] != 1 or groups == 1 or kwargs.get("position_bias") is not None \
            or kwargs.get("softcap") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    batch, heads, _, _ = query.shape
    out = torch.nn.functional.scaled_dot_product_attention(
        pack_gqa(query, groups), key, value, attn_mask=pack_gqa(attention_mask, groups),
        dropout_p=dropout, scale=scaling)  # (batch, key/value heads, groups, dim)
    return out.reshape(batch, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None


def register() -> str:
    """Registers the attention (with SDPA's mask function) with transformers; the name to give
    ``set_attn_implementation`` or ``attn_implementation``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


@contextmanager
def packed(model):
    """While the block runs, a model whose attention is ``sdpa`` uses this one instead; any other attention,
    or a model that takes no attention function from transformers' interface, is left as it is. Put back
    afterwards."""
    before = model.config._attn_implementation
    backend = getattr(model, "is_backend_compatible", None)
    if before != "sdpa" or not (callable(backend) and backend()):
        yield
        return
    model.set_attn_implementation(register())
    try:
        yield
    finally:
        model.set_attn_implementation(before)
