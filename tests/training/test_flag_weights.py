"""Flags as loss weights: the weighted token-mean loss of GlobalBatchTrainer against the Trainer's own loss
and a direct computation, with and without gradient accumulation, padded and packed, through a tiny random
Llama (fp32, CPU). The option's checks: tests/config/test_config.py; the train stage's use: tests/stages."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments

from covertune.models import load as models
from covertune.training import flag_weights, padding_free
from covertune.training.sft_data import PadCollator, encode_records
from covertune.training.trainer import GlobalBatchTrainer

FLAGS = {"generic": 0.5, "ungrounded": 0.5}


def rows(n: int = 4, seed: int = 0, vocab: int = 500) -> list[dict]:
    """Examples of different lengths whose first third carries no loss (a prompt), as encode_records makes."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for length in (37, 12, 25, 50, 19, 30)[:n]:
        ids = torch.randint(5, vocab, (length,), generator=g).tolist()
        out.append({"input_ids": ids, "attention_mask": [1] * length,
                    "labels": [-100] * (length // 3) + ids[length // 3:]})
    return out


def weighted(examples: list[dict], weights: list[float]) -> list[dict]:
    return [{**e, "loss_weight": w} for e, w in zip(examples, weights)]


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    tok = models.load_tokenizer(str(tiny_model_dir), padding_side="right")
    model = models.load_model(str(tiny_model_dir), dtype="fp32", tokenizer=tok, attn_implementation="sdpa")
    args = TrainingArguments(output_dir=str(tmp_path_factory.mktemp("ckpt")), use_cpu=True, report_to="none")
    trainer = GlobalBatchTrainer(model=model, args=args, processing_class=tok)
    assert trainer.model_accepts_loss_kwargs  # the Trainer counts each step's label tokens: the GA path
    return tok, model.eval(), trainer


def step(trainer, model, batches: list[dict], count: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step's loss and gradients, as the Trainer's loop computes them: the step's micro-batches
    and their (weighted) token count from get_batch_samples, each micro-batch's loss backpropagated."""
    model.zero_grad()
    batches, num_items = trainer.get_batch_samples(iter(batches), len(batches), torch.device("cpu"))
    if not count:  # a model that takes no loss kwargs: each micro-batch its own mean, divided by the steps
        num_items = None
    total = 0.0
    for batch in batches:
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=num_items)
        if num_items is None:
            loss = loss / len(batches)
        loss.backward()
        total += loss.detach()
    return total, torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def pad(tok, examples):
    return PadCollator(tok.pad_token_id)(examples)


def test_row_weight_is_the_product_of_its_flags_weights():
    flag = lambda *names: {"flags": [{"flag": n, "reason": "t"} for n in names]}  # noqa: E731
    assert flag_weights.row_weight(flag(), FLAGS) == 1.0
    assert flag_weights.row_weight({"flags": None}, FLAGS) == 1.0
    assert flag_weights.row_weight(flag("too_short"), FLAGS) == 1.0  # a flag not named
    assert flag_weights.row_weight(flag("generic", "too_short"), FLAGS) == 0.5
    assert flag_weights.row_weight(flag("generic", "ungrounded"), FLAGS) == 0.25
    assert flag_weights.row_weight(flag("generic", "ungrounded"), {"generic": 0.0, "ungrounded": 0.3}) == 0.0


@pytest.mark.parametrize("count", [True, False], ids=["step-count", "per-batch-mean"])
def test_weights_of_one_equal_the_unweighted_loss_and_gradients(setup, count):
    tok, model, trainer = setup
    ex = rows(4)
    plain = [pad(tok, ex[:2]), pad(tok, ex[2:])]  # two micro-batches of one step
    ones = [pad(tok, weighted(ex[:2], [1.0, 1.0])), pad(tok, weighted(ex[2:], [1.0, 1.0]))]
    assert "loss_weight" in ones[0] and "loss_weight" not in plain[0]
    loss_a, grad_a = step(trainer, model, plain, count)
    loss_b, grad_b = step(trainer, model, ones, count)
    torch.testing.assert_close(loss_b, loss_a, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grad_b, grad_a, atol=1e-7, rtol=1e-5)


def test_weight_zero_equals_leaving_those_rows_out(setup):
    """Rows weighted 0 add nothing to the loss nor to the step's token count: the gradients are those of the
    step without them, across gradient accumulation."""
    tok, model, trainer = setup
    ex = rows(6)
    with_zeros = [pad(tok, weighted(ex[:3], [1.0, 0.0, 1.0])), pad(tok, weighted(ex[3:], [0.0, 1.0, 1.0]))]
    without = [pad(tok, [ex[0], ex[2]]), pad(tok, [ex[4], ex[5]])]
    loss_a, grad_a = step(trainer, model, without)
    loss_b, grad_b = step(trainer, model, with_zeros)
    torch.testing.assert_close(loss_b, loss_a, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grad_b, grad_a, atol=1e-7, rtol=1e-4)
    everything, grad_c = step(trainer, model, [pad(tok, ex[:3]), pad(tok, ex[3:])])
    assert (grad_c - grad_a).abs().max() > 1e-4  # the zero-weight rows would have changed them


def direct_loss(model, examples: list[dict], weights: list[float]) -> torch.Tensor:
    """sum_i w_i sum_t CE_it / sum_i w_i n_i, each row run alone (no padding), CE of the shifted labels."""
    total, count = torch.zeros(()), torch.zeros(())
    for e, w in zip(examples, weights):
        ids, labels = torch.tensor([e["input_ids"]]), torch.tensor(e["labels"])
        logits = model(input_ids=ids).logits[0].float()
        ce = F.cross_entropy(logits[:-1], labels[1:], ignore_index=-100, reduction="sum")
        total = total + w * ce
        count = count + w * labels[1:].ne(-100).sum()
    return total / count


def test_half_weights_give_the_weighted_token_mean(setup):
    tok, model, trainer = setup
    ex = rows(4)
    flags = [[], ["generic"], ["generic", "ungrounded"], ["too_short"]]
    w = [flag_weights.row_weight({"flags": [{"flag": f} for f in fs]}, FLAGS) for fs in flags]
    assert w == [1.0, 0.5, 0.25, 1.0]
    with torch.no_grad():
        want = direct_loss(model, ex, w)
        unweighted = direct_loss(model, ex, [1.0] * 4)
        one_batch = trainer.compute_loss(model, pad(tok, weighted(ex, w)))
    torch.testing.assert_close(one_batch, want, atol=1e-6, rtol=1e-5)
    assert abs(want - unweighted) > 1e-3  # the weights matter for these rows
    loss, grads = step(trainer, model, [pad(tok, weighted(ex[:2], w[:2])), pad(tok, weighted(ex[2:], w[2:]))])
    torch.testing.assert_close(loss, want, atol=1e-6, rtol=1e-5)  # over the step, not per micro-batch
    model.zero_grad()
    direct_loss(model, ex, w).backward()
    torch.testing.assert_close(grads, torch.cat([p.grad.flatten() for p in model.parameters()
                                                 if p.grad is not None]), atol=1e-7, rtol=1e-4)


def test_a_packed_row_gives_the_padded_batchs_weighted_loss(setup, tiny_model_dir):
    tok, model, trainer = setup
    packed = models.load_model(str(tiny_model_dir), dtype="fp32", tokenizer=tok,
                               attn_implementation=padding_free.register()).eval()
    ex = weighted(rows(3), [1.0, 0.5, 0.25])
    flat = padding_free.collator()(ex)
    assert flat["loss_weight"].shape == flat["input_ids"].shape
    assert flat["loss_weight"][0, 37:49].eq(0.5).all()
    with torch.no_grad():
        a = trainer.compute_loss(model, pad(tok, ex))
        b = trainer.compute_loss(packed, flat)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_no_weights_leave_the_batches_and_the_loss_unchanged(setup, short_texts_records):
    """flag_weights empty: no example or batch carries a weight, and the Trainer's own loss is computed."""
    tok, model, trainer = setup
    encoded = encode_records(short_texts_records, tok, 512)
    assert all("loss_weight" not in e for e in encoded.examples)
    batch = pad(tok, encoded.examples[:2])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert "loss_weight" not in padding_free.collator()(encoded.examples[:2])
    with torch.no_grad():
        torch.testing.assert_close(trainer.compute_loss(model, dict(batch)), model(**batch).loss)
    _, count = trainer.get_batch_samples(iter([batch]), 1, torch.device("cpu"))
    _, trainers_count = Trainer.get_batch_samples(trainer, iter([batch]), 1, torch.device("cpu"))
    assert count == trainers_count == batch["labels"][:, 1:].ne(-100).sum()
    weighted_set = encode_records(short_texts_records, tok, 512,
                                  loss_weight=lambda r: flag_weights.row_weight(r, {"generic": 0.5}))
    assert [e["loss_weight"] for e in weighted_set.examples] == [0.5, 1.0]


@pytest.fixture
def short_texts_records() -> list[dict]:
    letter = "Dear Hiring Manager, I am writing to apply. Sincerely, Ana"
    base = {"job_title": "Engineer", "hiring_company": "Acme", "applicant_name": "Ana", "cover_letter": letter}
    return [{**base, "id": "train-0", "flags": [{"flag": "generic", "reason": "t"}]},
            {**base, "id": "train-1", "flags": []}]
