"""A batch's ``BatchTracker`` (covertune.serve.batching) as transformers' ``generate`` hooks: the streamer that
receives each step's new tokens and the stopping criterion that ends rows the tracker has finished. Apart from
the tracker so that a server on the llama.cpp engine imports neither torch nor transformers."""

from __future__ import annotations

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer


class TrackerHooks(BaseStreamer, StoppingCriteria):
    """``generate``'s streamer and stopping criterion for one tracker."""

    def __init__(self, tracker):
        self.tracker = tracker
        self._prompt_seen = False

    # StoppingCriteria: True for rows that need no more tokens
    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        t = self.tracker
        new = input_ids.shape[1] - t.prompt_width
        done = [f or j.cancelled or new >= j.decoding.max_new_tokens for f, j in zip(t.finished, t.jobs)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    # BaseStreamer
    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate's first call hands over the prompts
            self._prompt_seen = True
            return
        for i, token in enumerate(value.view(-1).tolist()):
            self.tracker.token(i, int(token))

    def end(self) -> None:
        pass

    def generate_kwargs(self) -> dict:
        return {"streamer": self, "stopping_criteria": StoppingCriteriaList([self])}
