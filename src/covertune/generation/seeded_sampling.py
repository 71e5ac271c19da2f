"""Sampling whose draws belong to each row: a candidate's letter depends on its prompt, its seed and its
number among the candidates only, never on the other rows of its batch.

``model.generate`` samples every row of a batch from one random stream, so the same prompt sampled in a
batch of 24 prompts (``covertune generate``) and alone (``covertune write``, ``covertune serve``) draws
different tokens. Here each sampled row carries its own seed (``row_seed``: the run's seed, the
candidate's number and the prompt's token ids); at every step the row's logits are warped as
transformers' sampling warps them (its own temperature, top-k and top-p warpers, in that order), and one
token is drawn by inverse transform sampling from a uniform number that is a hash of the row's seed and
the step. The ``RowSampler`` logits processor then leaves only that token, and greedy decoding takes it.
Rows without a seed (the greedy candidate) are left as they are.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch
from transformers import LogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

_MASK = (1 << 64) - 1


def row_seed(seed: int, prompt_ids: Sequence[int], candidate: int) -> int:
    """The seed of candidate ``candidate`` of the prompt ``prompt_ids`` under the run's ``seed``."""
    text = f"{seed}:{candidate}:" + ",".join(map(str, prompt_ids))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def uniform(seed: int, step: int) -> float:
    """A number in [0, 1) that depends on ``seed`` and ``step`` only."""
    return (_splitmix64(seed ^ _splitmix64(step)) >> 11) / float(1 << 53)


class RowSampler(LogitsProcessor):
    """Draws one token per seeded row (``seeds``: one per batch row, None for a row left alone) and leaves
    only that token's score; use with greedy decoding (``do_sample`` off)."""

    def __init__(self, seeds: Sequence[int | None], temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
        self.rows = [i for i, s in enumerate(seeds) if s is not None]
        self.seeds = [int(s) for s in seeds if s is not None]
        self.warpers = []
        if temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(temperature))
        if top_k:
            self.warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
        self.start: int | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.rows:
            return scores
        if self.start is None:
            self.start = input_ids.shape[1]
        step = input_ids.shape[1] - self.start
        index = torch.tensor(self.rows, device=scores.device)
        logits = scores[index]
        for warp in self.warpers:
            logits = warp(input_ids[index], logits)
        probs = torch.softmax(logits.double(), dim=-1)
        cdf = probs.cumsum(dim=-1)
        u = torch.tensor([uniform(s, step) for s in self.seeds], dtype=torch.float64, device=scores.device)
        token = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)
        token = torch.minimum(token, torch.tensor(cdf.shape[1] - 1, device=scores.device))
        # a token of probability 0 is never drawn: fall back to the most likely one (float rounding at the top)
        token = torch.where(probs.gather(1, token.unsqueeze(1)).squeeze(1) > 0, token, probs.argmax(dim=-1))
        picked = torch.full_like(logits, float("-inf"))
        picked.scatter_(1, token.unsqueeze(1), 0.0)
        scores = scores.clone()
        scores[index] = picked.to(scores.dtype)
        return scores
