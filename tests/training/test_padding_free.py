"""Padding-free batches: a packed row gives the padded batch's logits and loss, through a tiny random
Llama (grouped-query attention, fp32, CPU). The train stage's use of it: tests/test_train.py."""

from __future__ import annotations

import pytest
import torch

from covertune.models import load as models
from covertune.training import padding_free
from covertune.config.stages import TrainConfig
from covertune.training.sft_data import PadCollator


def examples(n: int = 3, seed: int = 0, vocab: int = 500) -> list[dict]:
    """Examples of different lengths whose first tokens carry no loss (a prompt), as encode_records makes."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for length in (37, 12, 25, 50)[:n]:
        ids = torch.randint(5, vocab, (length,), generator=g).tolist()
        labels = [-100] * (length // 3) + ids[length // 3:]
        out.append({"input_ids": ids, "attention_mask": [1] * length, "labels": labels})
    return out


@pytest.fixture(scope="module")
def pair(tiny_model_dir):
    """The tiny Llama twice: with SDPA, and with the padding-free attention function."""
    tok = models.load_tokenizer(str(tiny_model_dir))
    sdpa = models.load_model(str(tiny_model_dir), dtype="fp32", tokenizer=tok, attn_implementation="sdpa").eval()
    packed = models.load_model(str(tiny_model_dir), dtype="fp32", tokenizer=tok,
                               attn_implementation=padding_free.register()).eval()
    assert packed.config.num_key_value_heads < packed.config.num_attention_heads  # GQA is exercised
    return tok, sdpa, packed


def test_packed_row_equals_padded_batch(pair):
    tok, sdpa, packed = pair
    feats = examples()
    padded = PadCollator(tok.pad_token_id)(feats)
    flat = padding_free.collator()(feats)
    assert flat["input_ids"].shape == (1, sum(len(f["input_ids"]) for f in feats))
    assert flat["cu_seq_lens_q"].tolist() == [0, 37, 49, 74]
    with torch.no_grad():
        a = sdpa(**padded)
        b = packed(**flat)
    start = 0
    for row, f in enumerate(feats):
        n = len(f["input_ids"])
        torch.testing.assert_close(b.logits[0, start:start + n], a.logits[row, :n], atol=1e-5, rtol=1e-4)
        start += n
    # the same label tokens, averaged the same way
    torch.testing.assert_close(b.loss, a.loss, atol=1e-5, rtol=1e-5)


def test_packed_row_without_boundaries_attends_across_examples(pair):
    """The boundaries are what keep examples apart: drop them and the second example's logits change
    (so the equality above is not an accident of the inputs)."""
    tok, _, packed = pair
    flat = padding_free.collator()(examples(2))
    with torch.no_grad():
        kept = packed(**flat).logits
        crossed = packed(input_ids=flat["input_ids"]).logits
    torch.testing.assert_close(crossed[0, :37], kept[0, :37])
    assert (crossed[0, 37:] - kept[0, 37:]).abs().max() > 1e-3


def test_padded_batch_goes_to_sdpa(pair):
    """A model loaded for padding-free training still handles an ordinary padded batch correctly."""
    tok, sdpa, packed = pair
    padded = PadCollator(tok.pad_token_id)(examples())
    with torch.no_grad():
        a, b = sdpa(**padded).logits, packed(**padded).logits
    mask = padded["attention_mask"].bool()
    torch.testing.assert_close(b[mask], a[mask], atol=1e-5, rtol=1e-4)


def test_gradients_match(pair):
    """Backward through the packed row gives the padded batch's input gradients (what LoRA trains on)."""
    tok, sdpa, packed = pair
    feats = examples(2)
    padded, flat = PadCollator(tok.pad_token_id)(feats), padding_free.collator()(feats)
    grads = []
    for model, batch in ((sdpa, padded), (packed, flat)):
        emb = model.get_input_embeddings()(batch.pop("input_ids")).detach().requires_grad_()
        model(inputs_embeds=emb, **batch).loss.backward()
        grads.append(emb.grad)
    torch.testing.assert_close(grads[1][0, :37], grads[0][0, :37], atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(grads[1][0, 37:], grads[0][1, :12], atol=1e-6, rtol=1e-4)


def test_fused_kernel_is_called_causal_under_either_signature(monkeypatch):
    """PyTorch's varlen_attn asked for causal attention whichever way this PyTorch spells it."""
    q = torch.randn(20, 2, 8)
    cu = torch.tensor([0, 7, 20], dtype=torch.int32)
    want = padding_free._per_example(q, q, q, cu, 0.3)
    seen = {}

    def early(query, key, value, cu_q, cu_k, max_q, max_k, *, is_causal=False, scale=None):
        seen.update(is_causal=is_causal, scale=scale, max_q=max_q)
        return padding_free._per_example(query, key, value, cu_q, scale)

    def late(query, key, value, cu_q, cu_k, max_q, max_k, *, window_size=(-1, -1)):
        seen.update(window_size=window_size)
        return padding_free._per_example(query, key, value, cu_q, query.shape[-1] ** -0.5)

    monkeypatch.setattr(padding_free, "varlen_kernel", lambda: early)
    torch.testing.assert_close(padding_free._fused(q, q, q, cu, 13, 0.3), want)
    assert seen == {"is_causal": True, "scale": 0.3, "max_q": 13}
    monkeypatch.setattr(padding_free, "varlen_kernel", lambda: late)
    padding_free._fused(q, q, q, cu, 13, 8 ** -0.5)
    assert seen["window_size"] == (-1, 0)


def test_resolve():
    assert padding_free.resolve("on") is True
    assert padding_free.resolve("off") is False
    if not torch.cuda.is_available():  # auto packs rows only where the fused CUDA kernel runs
        assert padding_free.resolve("auto") is False
    elif torch.cuda.get_device_capability(0) >= (8, 0) and padding_free.varlen_kernel() is not None:
        assert padding_free.resolve("auto") is True
    assert padding_free.resolve("auto", "eager") is False
    assert padding_free.resolve("auto", torch_compile=True) is False
    assert padding_free.resolve("on", torch_compile=True) is True
    with pytest.raises(ValueError, match="padding_free must be one of"):
        padding_free.resolve("yes")


def test_attention_dropout_is_refused(pair):
    _, _, packed = pair
    layer = packed.model.layers[0].self_attn
    layer.train()
    q = torch.randn(1, 4, 10, 16)
    with pytest.raises(ValueError, match="attention dropout"):
        padding_free.attention(layer, q, q[:, :2], q[:, :2], None, dropout=0.1,
                               cu_seq_lens_q=torch.tensor([0, 10]), max_length_q=10)
    layer.eval()
