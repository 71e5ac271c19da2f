"""A model's tokenizer read straight from its ``tokenizer.json`` by the ``tokenizers`` library, for the llama.cpp
engine: what transformers' tokenizer does for covertune's prompts and letters (encode with or without the
special tokens, decode skipping them, the EOS and pad ids ``covertune.models.load.load_tokenizer`` sets), without
importing torch and transformers (about 2.5 s of a 6 s cold ``covertune write`` on 2 cores).

``load`` answers None wherever transformers' tokenizer could differ, and the caller loads that one instead:
no ``tokenizer.json`` or ``tokenizer_config.json``, a config whose special tokens or options are not plain
(``add_bos_token``/``add_eos_token``, which transformers applies on top of the file's post-processor; clean-up of
tokenization spaces), a chat prompt format (the chat template is transformers' to render), or a pad token that
``load_tokenizer`` would have to add. tests/models/test_tokenizer_file.py checks the ids and texts against
transformers' on the 349 test prompts and letters.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)

_UNSUPPORTED_OPTIONS = ("add_bos_token", "add_eos_token", "add_prefix_space", "chat_template_kwargs")


class FileTokenizer:
    """The subset of transformers' tokenizer interface covertune's llama.cpp path uses."""

    chat_template = None  # chat prompts are rendered by transformers' tokenizer (``load`` refuses them)

    def __init__(self, tokenizer, eos_token: str, pad_token: str):
        self._tok = tokenizer
        self.eos_token_id = tokenizer.token_to_id(eos_token)
        self.pad_token_id = tokenizer.token_to_id(pad_token)

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": self._tok.encode(text, add_special_tokens=add_special_tokens).ids}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)


def _token(value) -> str | None:
    """A special token of tokenizer_config.json: a string, or transformers' serialized AddedToken."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def load(folder: str | Path, prompt_format: str) -> FileTokenizer | None:
    """The tokenizer of the model folder ``folder`` without transformers, or None where it could differ from
    transformers' (see the module's notes)."""
    folder = Path(folder)
    if prompt_format != "raw" or not (folder / "tokenizer.json").is_file():
        return None
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as e:  # no config, bad JSON, a file the tokenizers library cannot read
        log.debug("reading the tokenizer of %s with transformers (%s)", folder, e)
        return None
    if any(k in config for k in _UNSUPPORTED_OPTIONS) or config.get("clean_up_tokenization_spaces"):
        return None
    eos, pad, unk = (_token(config.get(k)) for k in ("eos_token", "pad_token", "unk_token"))
    if eos is None or tokenizer.token_to_id(eos) is None:
        return None
    if pad is None or pad == eos:  # load_tokenizer's rule: the unknown token pads, where it is not EOS
        pad = unk if unk is not None and unk != eos else None
    if pad is None or tokenizer.token_to_id(pad) is None:
        return None  # load_tokenizer would add a pad token: transformers' tokenizer does that
    return FileTokenizer(tokenizer, eos, pad)
