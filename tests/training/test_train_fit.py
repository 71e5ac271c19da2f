"""covertune.training.train_fit: on a CPU, the largest micro-batch that fits, the global batch kept; the memory
estimate; one measured sequence."""

from __future__ import annotations

import pytest

from covertune.training.train_fit import GIB, Plan, choose_micro_batch, measure_sequence, plan_cpu, sequence_bytes


def test_the_global_batch_is_kept():
    # the smol preset's 16 x 1 on 24 GiB: 1.2 GiB a sequence fits 8 in the 12 GiB budget (60% of 20 GiB
    # available beside the 2 GiB the process holds)
    plan = choose_micro_batch(16, 1, int(1.2 * GIB), 2 * GIB, 12 * GIB)
    assert (plan.micro_batch, plan.grad_accum) == (8, 2) and plan.peak_bytes == 2 * GIB + 8 * int(1.2 * GIB)
    assert choose_micro_batch(16, 1, GIB, GIB, 100 * GIB) == Plan(16, 1, GIB, GIB, 100 * GIB)  # it fits: unchanged
    for batch, accum in ((16, 1), (8, 4), (6, 2), (7, 3)):
        for budget in (3, 5, 9, 20):
            plan = choose_micro_batch(batch, accum, GIB, GIB, budget * GIB)
            assert plan.micro_batch * plan.grad_accum == batch * accum and plan.micro_batch <= batch
            assert plan.micro_batch * GIB <= budget * GIB
    assert choose_micro_batch(7, 1, GIB, GIB, 6 * GIB).micro_batch == 1  # 7 is prime: 1 x 7
    # what the process holds is outside the budget: a large process still trains one small sequence
    assert choose_micro_batch(4, 1, GIB, 14 * GIB, 2 * GIB).micro_batch == 2
    with pytest.raises(ValueError, match="lower --max-length, or train with --gradient-checkpointing"):
        choose_micro_batch(16, 1, 20 * GIB, GIB, 14 * GIB)


def test_sequence_estimate():
    smol = dict(vocab=49152, hidden=576, intermediate=1536, layers=30, heads=9)
    full = sequence_bytes(768, **smol)
    assert sequence_bytes(768, checkpointing=True, **smol) < full / 3
    assert sequence_bytes(384, **smol) < full / 2
    # 16 x 768 in fp32 outgrows 24 GiB (the run the kernel killed); a micro-batch of 8 plus 2 GiB would not
    assert 16 * full > 24 * GIB and 8 * full + 2 * GIB < 24 * GIB


def test_measure_sequence(tiny_model_dir):
    from conftest import varied_tiny_llama

    model, _ = varied_tiny_llama(tiny_model_dir)
    added, rate = measure_sequence(model, 64)
    assert added >= 0 and rate > 0
    assert all(p.grad is None for p in model.parameters())


def test_an_earlier_peak_of_the_process_does_not_count(tiny_model_dir):
    """A process that once held 1 GiB more (a test before it, a model loaded and freed) plans from what it
    holds now, not from its old peak: the tiny model trains where the old peak would leave no room."""
    import resource

    import torch
    from conftest import varied_tiny_llama

    model, _ = varied_tiny_llama(tiny_model_dir)
    big = torch.ones(GIB // 4)  # 1 GiB of fp32, touched
    del big
    old_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    plan = plan_cpu(model, 4, 1, 64, train_tokens=64 * 8, epochs=1, checkpointing=False)
    assert plan.micro_batch == 4 and plan.fixed_bytes < old_peak - GIB / 2
