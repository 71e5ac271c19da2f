"""Candidates that share their prompt (covertune.generation.select.shared_prompt_batch): each prompt prefilled once and
its cache fanned out to the N rows gives, on a tiny random Llama in fp32, the same candidates as N full rows
(the prompt repeated N times) with the same per-row seeds (covertune.generation.seeded_sampling), and the unseeded row is
the greedy letter."""

from __future__ import annotations

import pytest
from dataclasses import replace

from transformers import LogitsProcessorList, set_seed

from conftest import varied_tiny_llama
from covertune.generation.decoding import Decoding, check_pad, generate_batch, stop_token_ids
from covertune.generation.letters import generate_letters
from covertune.core.prompt import text_ids
from covertune.generation.seeded_sampling import RowSampler, row_seed
from covertune.generation.select import generate_candidate_ids, shared_prompt_batch

TEXTS = ["Job Title: Data Scientist\nCompany: Acme Corp\nSkills: Python, SQL",
         "Dear Hiring Manager, I am writing to apply for",
         "Qualifications: MSc in Statistics"]  # three lengths: the batch is left-padded


@pytest.fixture(scope="module")
def varied(tiny_model_dir):
    return varied_tiny_llama(tiny_model_dir)


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_shared_prompt_rows_equal_full_rows_for_a_seed(varied, penalty):
    model, tok = varied
    rows = [text_ids(t, tok) for t in TEXTS]
    stop = stop_token_ids(tok, model)
    pad = check_pad(tok, stop)
    n = 4
    decoding = Decoding(max_new_tokens=16, do_sample=True, temperature=1.3, top_p=0.95, top_k=40,
                        repetition_penalty=penalty, seed=7)

    seeds = [None if k == 0 else row_seed(decoding.seed, row, k) for row in rows for k in range(n)]

    def procs():  # a fresh sampler per call: it counts the steps from its first call
        return LogitsProcessorList([RowSampler(seeds, decoding.temperature, decoding.top_k, decoding.top_p)])

    greedy = replace(decoding, do_sample=False)
    full = generate_batch(model, [row for row in rows for _ in range(n)], greedy, stop, pad, logits_processor=procs())
    shared = shared_prompt_batch(model, rows, n, greedy, stop, pad, procs())
    assert shared == full
    assert len({tuple(r) for r in shared}) > n  # samples, not copies of one row


def test_candidate_zero_is_the_greedy_letter_and_the_draws_repeat(varied):
    model, tok = varied
    rows = [text_ids(t, tok) for t in TEXTS]
    greedy = generate_letters(model, tok, rows, 3, Decoding(max_new_tokens=16), progress=False)
    decoding = Decoding(max_new_tokens=16, do_sample=True, temperature=1.2, top_p=0.9, seed=5)

    def run():
        set_seed(decoding.seed)
        return list(generate_candidate_ids(model, tok, rows, 3, decoding, batch_size=3))

    (batch, groups), = run()
    from covertune.core.prompt import extract_letter

    for i, group in zip(batch, groups):
        assert extract_letter(tok.decode(group[0], skip_special_tokens=True)) == greedy[i]
    assert run() == [(batch, groups)]
