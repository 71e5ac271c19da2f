"""A SentencePiece-style tokenizer (Llama-2's: BPE over "▁"-joined text with byte fallback) as GGUF tokenizer
metadata, llama.cpp's ``llama`` tokenizer model, read by the ``gguf`` package's own readers as llama.cpp's
converter reads it: ``gguf.vocab.LlamaHfVocab`` for the tokens and their types (byte tokens ``<0xNN>``,
control tokens), ``gguf.vocab.SpecialVocab`` for the special token ids, the merges (spaces in them encoded
as llama.cpp expects) and the chat template.

llama.cpp's SentencePiece tokenizer merges the adjacent pair whose joined piece has the highest score, the
leftmost first; Hugging Face's BPE merges the pair of lowest merge rank. ``LlamaHfVocab`` gives every token
the same placeholder score, with which llama.cpp would merge left to right instead; the score written for
a token is minus the rank of the first merge that makes it, so both pick the same pair (tokens no merge
makes score 0: they are never a merge's result). Whether a space is added before the text is read from
the tokenizer (a ``Prepend("▁")`` normalizer or a ``Metaspace`` pre-tokenizer that prepends).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import gguf
from gguf.vocab import LlamaHfVocab, SpecialVocab


def is_spm(spec: dict) -> bool:
    """Whether a parsed ``tokenizer.json`` is SentencePiece-style BPE (byte fallback, no byte-level alphabet)."""
    model = spec.get("model", {})
    return model.get("type") == "BPE" and bool(model.get("byte_fallback"))


def _adds_space_prefix(spec: dict) -> bool:
    def steps(node):
        if not node:
            return []
        return list(node.get("normalizers") or node.get("pretokenizers") or []) or [node]

    for step in steps(spec.get("normalizer")):
        if step.get("type") == "Prepend" and step.get("prepend") == "▁":
            return True
    for step in steps(spec.get("pre_tokenizer")):
        if step.get("type") == "Metaspace":
            scheme = step.get("prepend_scheme", "always" if step.get("add_prefix_space", True) else "never")
            return scheme in ("always", "first")
    return False


def _check(spec: dict) -> None:
    for step in (spec.get("normalizer") or {}).get("normalizers") or [spec.get("normalizer") or {}]:
        if step and step.get("type") not in ("Prepend", "Replace"):
            raise ValueError(f"a SentencePiece tokenizer with a {step.get('type')} normalizer is not supported yet "
                             "for GGUF export (llama.cpp applies none)")
    decoder = spec.get("decoder") or {}
    if decoder.get("type") != "Sequence":
        raise ValueError(f"a SentencePiece tokenizer with a {decoder.get('type')} decoder is not supported yet "
                         "for GGUF export")


def spm_fields(tokenizer, vocab_size: int) -> dict:
    """The ``tokenizer.ggml.*`` metadata of a SentencePiece-style tokenizer, padded to ``vocab_size`` rows."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    _check(spec)
    with tempfile.TemporaryDirectory(prefix="covertune-spm-") as tmp:
        tokenizer.save_pretrained(tmp)
        vocab = LlamaHfVocab(Path(tmp))
        special = SpecialVocab(Path(tmp), load_merges=True, n_vocab=vocab_size)
    tokens: list[bytes] = []
    types: list[int] = []
    for text, _, kind in vocab.all_tokens():
        tokens.append(text)
        types.append(int(kind))
    if len(tokens) > vocab_size:
        raise ValueError(f"the tokenizer has {len(tokens)} tokens, more than the model's {vocab_size} embedding rows")
    index = {t.decode("utf-8"): i for i, t in enumerate(tokens)}
    scores = [0.0] * len(tokens)
    merges = spec["model"].get("merges", [])
    made = set()
    for rank, m in enumerate(merges):
        left, right = m.split(" ", 1) if isinstance(m, str) else m
        i = index.get(left + right)
        if i is not None and i not in made:
            made.add(i)
            scores[i] = -float(rank)
    for i in range(len(tokens), vocab_size):  # embedding rows no token maps to
        tokens.append(f"[PAD{i}]".encode())
        types.append(int(gguf.TokenType.UNUSED))
        scores.append(-1e9)
    return {"tokens": tokens, "types": types, "scores": scores, "special": special,
            "add_space_prefix": _adds_space_prefix(spec)}


def add_spm_vocab(writer: gguf.GGUFWriter, fields: dict) -> None:
    """Write what ``vocab_fields`` gave for a SentencePiece-style tokenizer (``fields["spm"]``)."""
    spm = fields["spm"]
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(spm["tokens"])
    writer.add_token_scores(spm["scores"])
    writer.add_token_types(spm["types"])
    writer.add_add_space_prefix(spm["add_space_prefix"])
    special = spm["special"]
    for key in ("bos", "eos", "unk", "pad"):  # the ids and add flags the tokenizer actually uses
        if fields[key] is not None:
            special.special_token_ids[key] = int(fields[key])
    special.add_special_token["bos"] = fields["add_bos"]
    special.add_special_token["eos"] = fields["add_eos"]
    special.chat_template = fields["chat_template"]
    special.add_to_gguf(writer, quiet=True)
