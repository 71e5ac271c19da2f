"""covertune.generation.seeded_sampling: a sampled row's tokens depend on its prompt, seed and candidate number only."""

from __future__ import annotations

from covertune.generation.decoding import Decoding
from covertune.generation.select import generate_candidate_ids
from covertune.generation.seeded_sampling import row_seed, uniform

from conftest import varied_tiny_llama


def test_uniform_and_row_seed():
    draws = [uniform(row_seed(42, [1, 2, 3], 1), step) for step in range(200)]
    assert all(0 <= u < 1 for u in draws) and len(set(draws)) == 200
    assert 0.4 < sum(draws) / len(draws) < 0.6
    assert row_seed(42, [1, 2, 3], 1) != row_seed(42, [1, 2, 3], 2) != row_seed(43, [1, 2, 3], 2)


def test_candidates_do_not_depend_on_the_batch(tiny_model_dir):
    model, tok = varied_tiny_llama(tiny_model_dir)
    prompts = [tok(t)["input_ids"] for t in ("Dear hiring team, I am", "Skills: SQL", "A much longer prompt about a "
                                                                                   "data analyst role at Acme")]
    decoding = Decoding(max_new_tokens=12, do_sample=True, temperature=1.5, top_p=0.95, top_k=50, seed=9)
    together = {}
    for batch, groups in generate_candidate_ids(model, tok, prompts, 4, decoding, batch_size=3):
        together.update(zip(batch, groups))
    for i, prompt in enumerate(prompts):
        alone = [g for _, gs in generate_candidate_ids(model, tok, [prompt], 4, decoding, batch_size=1) for g in gs]
        assert alone[0] == together[i]
        assert len({tuple(c) for c in together[i]}) > 1  # the samples differ from the greedy row
    again = [g for _, gs in generate_candidate_ids(model, tok, prompts[:1], 4, Decoding(
        max_new_tokens=12, do_sample=True, temperature=1.5, top_p=0.95, top_k=50, seed=10), batch_size=1) for g in gs]
    assert again[0][0] == together[0][0] and again[0][1:] != together[0][1:]  # greedy kept, samples re-drawn
