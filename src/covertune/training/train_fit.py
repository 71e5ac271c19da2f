"""Training on a machine without a GPU: a micro-batch that fits its memory, and what the run will cost.

A preset's micro-batch is chosen for a GPU (the ``smol`` preset: 16 x 768 tokens); on a CPU in fp32 its
activations and logits outgrow a 24 GiB machine and the kernel kills the process without a word. Before
training starts on a CPU, ``plan_cpu`` measures the forward and backward pass of one sequence of the
longest training length twice (the peak resident memory it adds over what the process holds now, and the
second pass's tokens per second), takes the larger of that memory and the estimate of ``sequence_bytes`` per
sequence, and chooses the largest micro-batch that divides the global batch and whose sequences fit
``MEMORY_SHARE`` of the memory available beyond what the process already holds; gradient accumulation
keeps the global batch (micro-batch x accumulation) as asked. It logs the expected peak memory and the
expected time: the training tokens of all epochs divided by the measured rate (one sequence's rate: a
larger micro-batch is at most somewhat faster per token on a CPU).
"""

from __future__ import annotations

import logging
import os
import resource
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

MEMORY_SHARE = 0.6  # of the memory available when training starts: the rest for the OS, data, other work
GIB = 2**30


def available_memory() -> int:
    """Bytes of memory available now (Linux MemAvailable), else the machine's total."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def sequence_bytes(length: int, vocab: int, hidden: int, intermediate: int, layers: int, heads: int,
                   value_bytes: int = 4, checkpointing: bool = False) -> int:
    """An estimate of the memory one training sequence of ``length`` tokens holds at its peak: its logits
    three times (the logits, their log-softmax for the loss, the gradient), and per decoder layer the
    activations kept for backward (about 8 values per hidden unit and 3 per MLP unit per token, plus the
    attention weights of every head, length x length, as eager or math attention keeps them); with
    checkpointing, one layer's activations and each layer's input."""
    logits = 3 * length * vocab
    layer = length * (8 * hidden + 3 * intermediate) + 2 * heads * length * length
    kept = (layers * length * hidden + layer) if checkpointing else layers * layer
    return (logits + kept) * value_bytes


@dataclass(frozen=True)
class Plan:
    micro_batch: int
    grad_accum: int
    sequence_bytes: int  # per sequence at its peak, as used for the choice
    fixed_bytes: int  # the process before training (model, optimizer state, data), already outside the budget
    budget_bytes: int  # for the micro-batch's sequences: a share of the memory available beyond the process

    @property
    def peak_bytes(self) -> int:
        return self.fixed_bytes + self.micro_batch * self.sequence_bytes


def choose_micro_batch(batch_size: int, grad_accum: int, sequence: int, fixed: int, budget: int) -> Plan:
    """The largest micro-batch dividing the global batch (``batch_size`` x ``grad_accum``), at most
    ``batch_size``, whose sequences fit ``budget`` (memory beyond the ``fixed`` bytes the process already
    holds); the accumulation that keeps the global batch. A ValueError when not even one sequence fits."""
    global_batch = batch_size * grad_accum
    for micro in range(batch_size, 0, -1):
        if global_batch % micro == 0 and micro * sequence <= budget:
            return Plan(micro, global_batch // micro, sequence, fixed, budget)
    raise ValueError(f"one training sequence needs about {sequence / GIB:.1f} GiB, more than the "
                     f"{budget / GIB:.1f} GiB ({MEMORY_SHARE:.0%} of the memory available beside the "
                     f"{fixed / GIB:.1f} GiB this process holds) this machine can give: lower --max-length, "
                     "or train with --gradient-checkpointing")


def resident_bytes() -> int:
    """The process's resident memory now (Linux /proc/self/statm), else its peak so far."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _reset_peak() -> bool:
    """Start the process's peak resident memory (VmHWM) afresh at its present size (Linux: 5 into
    /proc/self/clear_refs); False where this cannot be done."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_bytes() -> int:
    """The process's peak resident memory since the last reset (VmHWM), else since it started."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_sequence(model, length: int) -> tuple[int, float]:
    """(peak bytes added, tokens per second) of a forward and backward pass of one random sequence of
    ``length`` tokens with its loss on every token, run twice: the peak over both, the rate of the second
    (the first pays for one-time allocations); the gradients are cleared afterwards. The peak is counted
    from what the process holds now, not from an earlier, larger peak of the same process; where the peak
    cannot be reset (not Linux) the added bytes are 0 and the estimate decides."""
    import torch

    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(0))
    before = resident_bytes()
    fresh = _reset_peak()
    model.train()
    for _ in range(2):
        t0 = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        seconds = time.perf_counter() - t0
        model.zero_grad(set_to_none=True)
    added = max(_peak_bytes() - before, 0) if fresh else 0
    return added, length / seconds


def plan_cpu(model, batch_size: int, grad_accum: int, length: int, train_tokens: int, epochs: float,
             checkpointing: bool, value_bytes: int = 4) -> Plan:
    """The micro-batch and accumulation for training ``model`` on this CPU (see the module docstring),
    logged with the expected peak memory and time."""
    config = model.config
    estimate = sequence_bytes(length, config.vocab_size, config.hidden_size,
                              getattr(config, "intermediate_size", 4 * config.hidden_size),
                              config.num_hidden_layers, config.num_attention_heads, value_bytes, checkpointing)
    measured, rate = measure_sequence(model, length)
    fixed = resident_bytes()
    plan = choose_micro_batch(batch_size, grad_accum, max(estimate, measured), fixed,
                              int(MEMORY_SHARE * available_memory()))
    hours = train_tokens * epochs / rate / 3600
    log.info("no GPU: micro-batch %d x gradient accumulation %d (global batch %d as asked; %d x %d would need "
             "about %.1f GiB). Expected peak memory %.1f GiB of the %.1f GiB this process holds and may take (one %d-token sequence "
             "measured at %.2f GiB, estimated at %.2f GiB); expected time about %.1f h for %d tokens x %g "
             "epochs at the %.0f tokens/s one sequence's forward and backward pass measured here",
             plan.micro_batch, plan.grad_accum, batch_size * grad_accum, batch_size, grad_accum,
             (fixed + batch_size * plan.sequence_bytes) / GIB, plan.peak_bytes / GIB, (fixed + available_memory()) / GIB,
             length, measured / GIB, estimate / GIB, hours, train_tokens, epochs, rate)
    return plan
