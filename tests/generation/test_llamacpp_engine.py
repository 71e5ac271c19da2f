"""The llama.cpp engine (covertune.generation.llamacpp_engine) and the run's GGUF cache (covertune.generation.gguf_cache) on tiny
random Llamas exported to f16 GGUF: teacher-forced argmax agreement with covertune's fp32 torch model, greedy
letters, seeded candidates that share their prompt, stop tokens, and the cache rebuilt when the adapter
changes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'covertune[llamacpp]')")

from conftest import varied_tiny_llama  # noqa: E402
from covertune.generation.decoding import Decoding, stop_token_ids
from covertune.generation.letters import generate_letters, generate_token_ids
from covertune.generation.gguf_cache import run_gguf
from covertune.generation.llamacpp_engine import LlamaCppModel, warp
from covertune.core.prompt import extract_letter, text_ids
from covertune.generation.select import generate_candidate_ids

TEXTS = ["Job Title: Data Scientist\nCompany: Acme Corp\nPreferred Qualifications: Python, SQL, dashboards",
         "Dear Hiring Manager, I am writing to apply for the analyst role at Brightwave",
         "Name: Ada Lovelace\nSkills: Statistics, machine learning, 2023 certifications",
         "Qualifications: MSc in Statistics"]


@pytest.fixture(scope="module")
def varied_run(tiny_model_dir, tmp_path_factory):
    """A run directory whose merged/ is the tiny Llama with varied weights (its greedy letters differ from
    prompt to prompt), with the torch model and tokenizer."""
    model, tok = varied_tiny_llama(tiny_model_dir)
    run = tmp_path_factory.mktemp("llamacpp-run")
    model.save_pretrained(run / "merged")
    tok.save_pretrained(run / "merged")
    (run / "merged" / "covertune_train.json").write_text(json.dumps({"prompt_format": "raw"}))
    return run, model, tok


@pytest.fixture(scope="module")
def engine(varied_run):
    run, model, tok = varied_run
    lm = LlamaCppModel(run_gguf(str(run), model=str(run / "merged"), quant="f16"), threads=1,
                       generation_config=model.generation_config)
    yield lm
    lm.close()


def prompts(tok):
    return [text_ids(t, tok) for t in TEXTS]


def test_teacher_forced_argmax_agrees_with_torch(varied_run, engine):
    _, model, tok = varied_run
    agree = total = 0
    worst = 0.0
    for ids in prompts(tok):
        # the torch model's greedy letter, fed back as the teacher
        new = next(generate_token_ids(model, tok, [ids], 1, Decoding(max_new_tokens=40)))[1][0]
        seq = ids + new
        with torch.no_grad():
            ref = model(input_ids=torch.tensor([seq])).logits[0].float().numpy()
        got = engine.prompt_logits(seq)
        assert got.shape == ref.shape
        agree += int((got.argmax(-1) == ref.argmax(-1)).sum())
        total += len(seq)
        worst = max(worst, float(np.abs(got - ref).max()))
    assert agree / total >= 0.99, (agree, total, worst)
    assert worst < 0.05  # f16 weights on logits of size ~1-10


def test_greedy_letters_equal_torch_where_no_near_tie(varied_run, engine):
    _, model, tok = varied_run
    rows = prompts(tok)
    decoding = Decoding(max_new_tokens=40)
    ours = dict(zip(*next(generate_token_ids(model, tok, rows, len(rows), decoding))))
    theirs = dict(zip(*next(generate_token_ids(engine, tok, rows, len(rows), decoding))))
    equal = 0
    for i, ids in enumerate(rows):
        a, b = ours[i], theirs[i]
        if a == b:
            equal += 1
            continue
        d = next(k for k in range(min(len(a), len(b))) if a[k] != b[k])  # where they part: a near-tie in torch
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids + a[:d]])).logits[0, -1].float()
        assert abs(float(logits[a[d]] - logits[b[d]])) < 0.05
    assert equal >= len(rows) - 1
    letters = generate_letters(engine, tok, rows, 2, decoding, progress=False)
    assert letters == [extract_letter(tok.decode(theirs[i], skip_special_tokens=True)) for i in range(len(rows))]


def test_candidates_are_seeded_share_the_prompt_and_keep_greedy_first(varied_run, engine):
    _, model, tok = varied_run
    rows = prompts(tok)
    stop = stop_token_ids(tok, engine)
    greedy = engine.generate(rows, 1, Decoding(max_new_tokens=24), stop)
    decoding = Decoding(max_new_tokens=24, do_sample=True, temperature=1.3, top_p=0.95, top_k=40, seed=11)
    first = engine.generate(rows, 6, decoding, stop)
    assert first == engine.generate(rows, 6, decoding, stop)  # reproducible
    for p, group in enumerate(first):
        assert len(group) == 6 and group[0] == greedy[p][0]  # candidate 0 is the greedy letter
        assert len({tuple(c) for c in group}) > 2  # the others are samples
    other_seed = engine.generate(rows, 6, Decoding(**{**decoding.__dict__, "seed": 12}), stop)
    assert [g[1:] for g in other_seed] != [g[1:] for g in first]
    # through covertune.generation.select, as generate --candidates and write --candidates call it
    (batch, groups), = list(generate_candidate_ids(engine, tok, rows, 6, decoding, batch_size=len(rows)))
    assert batch == sorted(range(len(rows)), key=lambda i: (-len(rows[i]), i))  # longest first
    assert groups == engine.generate([rows[i] for i in batch], 6, decoding, stop)
    # one sampled letter per prompt (generate --do-sample, write --do-sample): no row held greedy
    (_, sampled), = list(generate_token_ids(engine, tok, rows, len(rows), decoding))
    assert sampled == [g[0] for g in engine.generate([rows[i] for i in batch], 1, decoding, stop, greedy_first=False)]
    assert sum(s != g[0] for s, g in zip(sampled, engine.generate([rows[i] for i in batch], 1, decoding, stop))) >= 2


def test_stop_tokens_end_a_candidate_and_are_kept(varied_run, engine):
    _, _, tok = varied_run
    rows = prompts(tok)[:2]
    free = engine.generate(rows, 1, Decoding(max_new_tokens=30), stop=[])
    token = free[0][0][5]
    cut = engine.generate(rows, 1, Decoding(max_new_tokens=30), stop=[token])
    for (full,), (got,) in zip(free, cut):
        end = full.index(token) + 1 if token in full else len(full)
        assert got == full[:end]
    assert len(free[0][0]) == 30  # no stop: max_new_tokens ends it
    # a sampled candidate stops at the same token too
    sampled = engine.generate(rows, 4, Decoding(max_new_tokens=30, do_sample=True, seed=3), stop=[token])
    assert all(token not in c[:-1] for g in sampled for c in g)


def test_warp_matches_transformers_warpers():
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    rng = np.random.default_rng(0)
    logits = rng.normal(size=500).astype(np.float32) * 3
    for temperature, top_k, top_p in [(1.0, 50, 1.0), (0.7, 0, 0.9), (1.3, 40, 0.95), (1.0, 0, 1.0)]:
        decoding = Decoding(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p)
        scores = torch.tensor(logits[None].astype(np.float64))
        ref = TemperatureLogitsWarper(temperature)(None, scores)
        if top_k:
            ref = TopKLogitsWarper(top_k)(None, ref)
        if top_p < 1.0:
            ref = TopPLogitsWarper(top_p)(None, ref)
        ours = warp(logits, decoding)
        assert np.array_equal(np.isfinite(ours), torch.isfinite(ref[0]).numpy())
        kept = np.isfinite(ours)
        assert np.allclose(ours[kept], ref[0].numpy()[kept], atol=1e-5)


def test_gguf_cache_is_rebuilt_when_the_adapter_changes(tiny_model_dir, make_tiny_adapter, tmp_path):
    run = tmp_path / "run"
    make_tiny_adapter(tiny_model_dir, run / "adapter", quantization="none")
    first = run_gguf(str(run), model=str(tiny_model_dir), quant="f16")
    stamp = first.stat().st_mtime_ns
    assert run_gguf(str(run), model=str(tiny_model_dir), quant="f16") == first
    assert first.stat().st_mtime_ns == stamp  # read as it is, not written again
    tok_ids = list(range(3, 40))
    lm = LlamaCppModel(first, threads=1)
    before = lm.prompt_logits(tok_ids)
    lm.close()

    # another adapter (other LoRA weights) in the same place
    shutil.rmtree(run / "adapter")
    torch.manual_seed(99)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    get_peft_model(base, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                                    task_type="CAUSAL_LM")).save_pretrained(run / "adapter")
    (run / "adapter" / "covertune_train.json").write_text(json.dumps(
        {"model": str(tiny_model_dir), "base_model": str(tiny_model_dir), "prompt_format": "raw",
         "quantization": "none"}))
    second = run_gguf(str(run), model=str(tiny_model_dir), quant="f16")
    assert second != first and second.is_file() and not first.exists()  # the stale export is gone
    lm = LlamaCppModel(second, threads=1)
    after = lm.prompt_logits(tok_ids)
    lm.close()
    assert np.abs(after - before).max() > 1e-3  # the new adapter's weights are in it


def test_adapters_without_a_run_directory_keep_their_own_exports(tiny_model_dir, make_tiny_adapter, tmp_path,
                                                               monkeypatch):
    """Two adapter folders written with --adapter (no run directory) go to covertune's cache: exporting the
    second does not remove the first's, so taking turns between them exports each once."""
    monkeypatch.setenv("COVERTUNE_CACHE", str(tmp_path / "cache"))
    a = make_tiny_adapter(tiny_model_dir, tmp_path / "a", quantization="none")
    b = make_tiny_adapter(tiny_model_dir, tmp_path / "b", quantization="none")
    first = run_gguf(model=str(tiny_model_dir), adapter=str(a), quant="f16")
    second = run_gguf(model=str(tiny_model_dir), adapter=str(b), quant="f16")
    assert first.is_file() and second.is_file() and first.parent.parent != second.parent.parent
    stamp = first.stat().st_mtime_ns
    assert run_gguf(model=str(tiny_model_dir), adapter=str(a), quant="f16") == first
    assert first.stat().st_mtime_ns == stamp


def test_bad_input_is_a_clear_error(engine, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        LlamaCppModel(tmp_path / "missing.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf")
    with pytest.raises(ValueError, match="could not load"):
        LlamaCppModel(tmp_path / "junk.gguf")
    with pytest.raises(ValueError, match="empty prompt"):
        engine.generate([[]], 1, Decoding(max_new_tokens=4), [])
    with pytest.raises(ValueError, match="does not fit"):
        engine.generate([[5] * 10], 1, Decoding(max_new_tokens=5000), [])
