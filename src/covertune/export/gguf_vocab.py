"""A Hugging Face tokenizer as GGUF tokenizer metadata (llama.cpp's ``tokenizer.ggml.*`` keys).

SentencePiece-style tokenizers (Llama-2's) are written by ``covertune.export.gguf_spm``.
Byte-level BPE tokenizers (GPT-2's scheme: SmolLM2, Llama-3, the tiny test models) are written as
llama.cpp's ``gpt2`` tokenizer model: the vocabulary in id order, the merges, a type per token (normal,
control for special tokens, user-defined for other added tokens, unused for ids without a token), the
special token ids, whether a BOS/EOS is added, and the pre-tokenizer: the rule that splits text into
words before the merges, named as llama.cpp names it. The pre-tokenizer written is the one the
tokenizer actually uses (the one training saw), recognised from its ``tokenizer.json``; one llama.cpp
has no name for is an error rather than a file that tokenizes differently.
"""

from __future__ import annotations

import json

import gguf

from covertune.export.gguf_spm import add_spm_vocab, is_spm, spm_fields

# Llama-3's split rule (tokenizer.json's Split pattern; llama.cpp's "llama-bpe")
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _steps(pre: dict | None) -> list[dict]:
    if not pre:
        return []
    return list(pre.get("pretokenizers", [])) if pre.get("type") == "Sequence" else [pre]


def pre_tokenizer_name(spec: dict) -> str:
    """llama.cpp's name for the pre-tokenizer of a byte-level BPE ``tokenizer.json`` (parsed)."""
    steps = _steps(spec.get("pre_tokenizer"))
    kinds = [s.get("type") for s in steps]
    if spec.get("normalizer"):
        raise ValueError(f"a tokenizer with a normalizer ({spec['normalizer'].get('type')}) is not supported yet "
                         "for GGUF export (llama.cpp's byte-level BPE applies none)")
    byte_level = steps[-1] if kinds and kinds[-1] == "ByteLevel" else None
    if byte_level is None:
        raise ValueError(f"pre-tokenizer {kinds or None} is not supported yet for GGUF export "
                         "(byte-level BPE tokenizers only)")
    if byte_level.get("add_prefix_space"):
        raise ValueError("a byte-level pre-tokenizer that adds a prefix space is not supported yet for GGUF export")
    if kinds == ["ByteLevel"] and byte_level.get("use_regex", True):
        return "gpt-2"
    if (kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits")
            and byte_level.get("use_regex", True)):
        return "smollm"  # digits one by one, then GPT-2's rule
    if kinds == ["Split", "ByteLevel"] and not byte_level.get("use_regex", True):
        pattern = steps[0].get("pattern", {}).get("Regex")
        if pattern == LLAMA3_SPLIT and steps[0].get("behavior") == "Isolated":
            return "llama-bpe"
    raise ValueError(f"pre-tokenizer {kinds} (its split rule) has no llama.cpp name known to covertune; "
                     "GGUF export of this tokenizer is not supported yet")


def _adds(tokenizer, token_id: int | None, at_start: bool) -> bool:
    """Whether encoding with special tokens adds ``token_id`` at the start (or end) of the text."""
    if token_id is None:
        return False
    plain = tokenizer("covertune", add_special_tokens=False)["input_ids"]
    full = tokenizer("covertune", add_special_tokens=True)["input_ids"]
    if len(full) <= len(plain):
        return False
    return (full[0] if at_start else full[-1]) == token_id


def vocab_fields(tokenizer, vocab_size: int) -> dict:
    """The ``tokenizer.ggml.*`` metadata for ``tokenizer``, padded to the model's ``vocab_size`` rows."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise ValueError(f"a {model.get('type')} tokenizer is not supported yet for GGUF export "
                         "(byte-level BPE and SentencePiece-style BPE only)")
    if is_spm(spec):  # Llama-2's
        return _with_specials(tokenizer, {"model": "llama", "pre": "default", "spm": spm_fields(tokenizer, vocab_size)})
    decoder = spec.get("decoder") or {}
    if decoder.get("type") != "ByteLevel":
        raise ValueError(f"tokenizer decoder {decoder.get('type')} is not byte-level: "
                         "not supported yet for GGUF export")
    pre = pre_tokenizer_name(spec)

    tokens: list[str | None] = [None] * vocab_size
    types = [int(gguf.TokenType.UNUSED)] * vocab_size
    for text, i in model["vocab"].items():
        if i < vocab_size:
            tokens[i], types[i] = text, int(gguf.TokenType.NORMAL)
    for added in spec.get("added_tokens", []):
        i = added["id"]
        if i >= vocab_size:
            raise ValueError(f"token {added['content']!r} has id {i}, beyond the model's {vocab_size} embedding rows")
        tokens[i] = added["content"]
        types[i] = int(gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED)
    if max(model["vocab"].values(), default=-1) >= vocab_size:
        raise ValueError(f"the tokenizer has more tokens than the model's {vocab_size} embedding rows")
    for i, t in enumerate(tokens):
        if t is None:  # an embedding row no token maps to (e.g. a vocabulary padded to a multiple of 64)
            tokens[i] = f"[PAD{i}]"
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return _with_specials(tokenizer, {"model": "gpt2", "pre": pre, "tokens": tokens, "types": types, "merges": merges})


def _with_specials(tokenizer, fields: dict) -> dict:
    """``fields`` with the special token ids, whether BOS/EOS are added, and the chat template."""

    def token_id(name: str) -> int | None:
        return getattr(tokenizer, f"{name}_token_id", None)

    fields = {
        **fields,
        "bos": token_id("bos"), "eos": token_id("eos"), "unk": token_id("unk"), "pad": token_id("pad"),
        "add_bos": _adds(tokenizer, token_id("bos"), at_start=True),
        "add_eos": _adds(tokenizer, token_id("eos"), at_start=False),
        "chat_template": tokenizer.chat_template if isinstance(getattr(tokenizer, "chat_template", None), str)
        else None,
    }
    if fields["eos"] is None:
        raise ValueError("the tokenizer has no EOS token; a runtime could not stop at the letter's end")
    return fields


def add_vocab(writer: gguf.GGUFWriter, fields: dict) -> None:
    if "spm" in fields:
        add_spm_vocab(writer, fields)
        return
    writer.add_tokenizer_model(fields["model"])
    writer.add_tokenizer_pre(fields["pre"])
    writer.add_token_list(fields["tokens"])
    writer.add_token_types(fields["types"])
    writer.add_token_merges(fields["merges"])
    for key, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                     ("unk", writer.add_unk_token_id), ("pad", writer.add_pad_token_id)):
        if fields[key] is not None:
            add(int(fields[key]))
    writer.add_add_bos_token(fields["add_bos"])
    writer.add_add_eos_token(fields["add_eos"])
    if fields["chat_template"]:
        writer.add_chat_template(fields["chat_template"])
