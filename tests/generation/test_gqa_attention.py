"""covertune.gqa_attention: SDPA's results for one decoding query, without copying the key/value heads, also
when the decoding step is compiled."""

from __future__ import annotations

import pytest

from covertune.generation import engines, gqa_attention
from conftest import engine_token_ids, varied_tiny_llama


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    """The tiny Llama: 4 query heads over 2 key/value heads."""
    model, tok = varied_tiny_llama(tiny_model_dir, seed=2)
    assert model.config.num_attention_heads // model.config.num_key_value_heads == 2
    return model, tok


PROMPTS = ["Dear hiring manager, I am", "Python and SQL", "I led a team of five engineers at a bank for",
           "Thank you"]


def _prompt_ids(tok):
    return [tok(p, add_special_tokens=False).input_ids for p in PROMPTS]


@pytest.mark.parametrize("mask", [False, True])
def test_one_query_matches_sdpa(mask):
    """Against transformers' own SDPA attention (which copies the heads under torch.compile), with a
    padding mask and without."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    g = torch.Generator().manual_seed(0)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 3, True
    query = torch.randn(2, 6, 1, 8, generator=g)
    key, value = torch.randn(2, 2, 11, 8, generator=g), torch.randn(2, 2, 11, 8, generator=g)
    attn_mask = None
    if mask:
        attn_mask = torch.ones(2, 1, 1, 11, dtype=torch.bool)
        attn_mask[1, :, :, :4] = False  # the second row's left padding
    want, _ = sdpa_attention_forward(module, query, key, value, attn_mask, scaling=0.3)
    got, weights = gqa_attention.attention(module, query, key, value, attn_mask, scaling=0.3)
    assert weights is None and got.shape == want.shape == (2, 1, 6, 8)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # a prompt (several queries) goes to transformers' SDPA as it is
    query = torch.randn(2, 6, 11, 8, generator=g)
    torch.testing.assert_close(gqa_attention.attention(module, query, key, value, None, scaling=0.3)[0],
                               sdpa_attention_forward(module, query, key, value, None, scaling=0.3)[0])


def _ids(model, tok, engine):
    return engine_token_ids(model, tok, _prompt_ids(tok), engine, 2, max_new_tokens=12)


def test_static_engine_uses_it_and_writes_plain_letters(tiny, monkeypatch):
    model, tok = tiny
    calls = []
    real = gqa_attention.attention

    def counted(module, query, *args, **kwargs):
        calls.append(query.shape[2])
        return real(module, query, *args, **kwargs)

    monkeypatch.setattr(gqa_attention, "attention", counted)
    plain = _ids(model, tok, "plain")
    assert calls == []  # plain keeps transformers' SDPA
    assert _ids(model, tok, "static") == plain
    assert calls.count(1) >= 11 * 2 * model.config.num_hidden_layers  # every decoding step of both batches
    assert model.config._attn_implementation == "sdpa"  # put back
    monkeypatch.setattr(engines, "STATIC_PACK_GQA", False)
    calls.clear()
    assert _ids(model, tok, "static") == plain and calls == []


def test_another_attention_is_left_as_it_is(tiny, monkeypatch):
    model, _ = tiny
    model.set_attn_implementation("eager")
    try:
        with gqa_attention.packed(model):
            assert model.config._attn_implementation == "eager"
    finally:
        model.set_attn_implementation("sdpa")
    with gqa_attention.packed(model):
        assert model.config._attn_implementation == gqa_attention.NAME
    # a model class that takes no attention function from transformers' interface keeps its own
    monkeypatch.setattr(type(model), "_supports_attention_backend", False)
    with gqa_attention.packed(model):
        assert model.config._attn_implementation == "sdpa"


def test_compiled_decoding_copies_no_heads(tiny, monkeypatch):
    """The static engine's compiled decoding step (torch.compile, here on the CPU) with this attention traces
    no ``repeat_kv`` and writes the uncompiled letters; with transformers' SDPA the same step does copy the
    heads (the prompt's step is not compiled and copies them in both)."""
    import torch
    from transformers import StaticCache
    from transformers.generation.configuration_utils import CompileConfig
    from transformers.integrations import sdpa_attention

    model, tok = tiny
    ids = _prompt_ids(tok)[:2]
    width = max(map(len, ids))
    inputs = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in ids])
    mask = (torch.arange(width)[None] >= torch.tensor([width - len(r) for r in ids])[:, None]).long()
    copies = []
    real = sdpa_attention.repeat_kv
    # transformers compiles the decoding step only (the prompt runs uncompiled, and copies in either case)
    monkeypatch.setattr(sdpa_attention, "repeat_kv",
                        lambda h, n: (torch.compiler.is_compiling() and copies.append(h.shape)) or real(h, n))

    def run(compiled: bool):
        config = CompileConfig(fullgraph=True, dynamic=False)
        config._compile_all_devices = compiled  # compile on the CPU too (transformers does on a GPU only)
        with torch.inference_mode():
            out = model.generate(input_ids=inputs, attention_mask=mask, max_new_tokens=8, do_sample=False,
                                 pad_token_id=tok.pad_token_id, compile_config=config if compiled else None,
                                 past_key_values=StaticCache(config=model.config, max_cache_len=width + 8))
        return out[:, width:].tolist()

    torch._dynamo.reset()
    eager = run(False)
    with gqa_attention.packed(model):
        assert run(True) == eager
    assert copies == []
    torch._dynamo.reset()
    run(True)  # transformers' SDPA, compiled
    assert copies, "the compiled SDPA step was expected to copy the key/value heads"
    torch._dynamo.reset()
