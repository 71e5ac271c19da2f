"""Decoding primitives: what ``model.generate`` is told (``Decoding``), the stop ids, the pad id, and one
left-padded ``model.generate`` call over token-id rows (``generate_batch``). torch is imported where a torch
model is driven, not with the module: the llama.cpp engine uses the settings and stop ids without it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Decoding:
    """What ``model.generate`` is told. The defaults are the reference's: greedy, 512 new tokens."""

    max_new_tokens: int = 512
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    repetition_penalty: float = 1.0
    seed: int = 42

    def generate_kwargs(self) -> dict:
        # Every knob is passed explicitly: a model's generation_config.json (Llama-2-chat's samples at
        # temperature 0.6) must not change what "greedy" means.
        kw = dict(max_new_tokens=self.max_new_tokens, do_sample=self.do_sample, num_beams=1,
                  repetition_penalty=self.repetition_penalty)
        if self.do_sample:
            kw.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:  # the neutral values, so transformers does not warn about sampling flags under greedy
            kw.update(temperature=1.0, top_p=1.0, top_k=50)
        return kw

    def identity(self) -> dict:
        """The settings that change outputs (sampling knobs only matter when sampling)."""
        d = asdict(self)
        if not self.do_sample:
            for k in ("temperature", "top_p", "top_k", "seed"):
                d.pop(k)
        return d


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """The tokenizer's EOS plus the model's generation_config EOS ids (e.g. chat models' end-of-turn)."""
    ids = [tokenizer.eos_token_id]
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None)
    ids += extra if isinstance(extra, (list, tuple)) else [extra]
    return sorted({int(i) for i in ids if i is not None})


def model_device(model) -> torch.device:
    import torch

    dev = getattr(model, "device", None)
    return dev if isinstance(dev, torch.device) else next(model.parameters()).device


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for n, r in enumerate(rows):
        if r:
            ids[n, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[n, width - len(r):] = 1
    return ids, mask


def check_pad(tokenizer, stop_ids: Sequence[int]) -> int:
    pad = tokenizer.pad_token_id
    if pad is None or pad in stop_ids:
        raise ValueError("the tokenizer's pad token must exist and differ from EOS (else a finished row "
                         "cannot be told from padding); load it with covertune.models.load.load_tokenizer")
    return int(pad)


def cut_at_stop(row: Sequence[int], stop_ids: Sequence[int]) -> list[int]:
    """A row of new tokens up to and including its first stop token (what follows is padding)."""
    stop_set = set(stop_ids)
    cut = next((k + 1 for k, t in enumerate(row) if t in stop_set), len(row))
    return list(row[:cut])


def generate_batch(model, rows: Sequence[Sequence[int]], decoding: Decoding, stop_ids: Sequence[int],
                   pad_id: int, **generate_kwargs) -> list[list[int]]:
    """One left-padded ``model.generate`` call over token-id rows; the new tokens of each row, cut after
    its first stop token. ``generate_kwargs`` (a streamer, stopping criteria) go to ``model.generate``."""
    import torch

    ids, mask = _left_pad([list(r) for r in rows], pad_id)
    device = model_device(model)
    with torch.inference_mode():
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             eos_token_id=list(stop_ids), pad_token_id=pad_id, **decoding.generate_kwargs(),
                             **generate_kwargs)
    return [cut_at_stop(row, stop_ids) for row in out[:, ids.shape[1]:].tolist()]
