"""Flags as loss weights (train's ``flag_weights``): each train row's weight from its quality flags, and the
weighted token-mean loss that GlobalBatchTrainer computes when a batch carries them.

A row's weight is the product of the weights of its flags (flags not named and unflagged rows: 1). The
collators (sft_data.PadCollator, padding_free.collator) put it in the batch as ``loss_weight``: one float
per row of a padded batch, one per token of a packed row. The loss of an optimizer step is the weighted
mean over its loss tokens,

    sum_i w_i * sum_t CE_it / sum_i w_i * n_i      (n_i: row i's tokens with a label),

so weights of 1 give the Trainer's own token mean. Where the Trainer counts the step's label tokens over
all accumulated micro-batches (``num_items_in_batch``), the denominator is the step's weighted count
(``weighted_tokens`` over every micro-batch, summed across processes as the Trainer sums its count);
otherwise each micro-batch is its own weighted mean, as the unweighted loss would be.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from covertune.core.records import FLAGS_FIELD
from covertune.training.sft_data import IGNORE_INDEX


def row_weight(record: dict, weights: dict[str, float]) -> float:
    """The product of the weights of the record's flags (each flag counted once)."""
    weight = 1.0
    for flag in {f["flag"] for f in record.get(FLAGS_FIELD) or []}:
        weight *= weights.get(flag, 1.0)
    return weight


def token_weights(labels: torch.Tensor, loss_weight: torch.Tensor) -> torch.Tensor:
    """Every label position's weight, shaped as ``labels``: a row's weight repeated along it (a padded batch's
    (rows,) weights) or the weights as given (a packed row's (1, tokens))."""
    weight = loss_weight.to(device=labels.device, dtype=torch.float32)
    return (weight[:, None] if weight.dim() == 1 else weight).expand(labels.shape)


def weighted_tokens(labels: torch.Tensor, loss_weight: torch.Tensor) -> torch.Tensor:
    """sum_i w_i * n_i of one batch: the weights of the tokens the causal loss predicts (labels shifted by one)."""
    weight = token_weights(labels, loss_weight)[..., 1:]
    return (weight * labels[..., 1:].ne(IGNORE_INDEX)).sum()


def weighted_loss(logits: torch.Tensor, labels: torch.Tensor, loss_weight: torch.Tensor,
                  num_items_in_batch: torch.Tensor | float | None = None) -> torch.Tensor:
    """The weighted token-mean cross-entropy of a causal LM batch: position t's logits predict label t+1
    (as transformers' ForCausalLMLoss, in fp32). Divided by ``num_items_in_batch`` (the optimizer step's
    weighted token count) when given, else by this batch's own weighted count. A denominator of 0 (every
    row weighted 0) gives a loss of 0."""
    labels = labels.to(logits.device)
    target = labels[..., 1:]
    token_ce = F.cross_entropy(logits[..., :-1, :].float().flatten(0, -2), target.flatten(),
                               ignore_index=IGNORE_INDEX, reduction="none")
    weight = token_weights(labels, loss_weight)[..., 1:].flatten()
    total = (token_ce * weight).sum()
    count = weighted_tokens(labels, loss_weight) if num_items_in_batch is None else num_items_in_batch
    count = torch.as_tensor(count, dtype=total.dtype, device=total.device)
    return total / count.clamp(min=torch.finfo(total.dtype).tiny)
