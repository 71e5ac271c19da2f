"""generate: eval.csv contract, letter-only outputs, batching equivalence, resume, limit, clear errors."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest
import torch

from covertune.core import io, records, rundir
from covertune.config.stages import GenerateConfig
from covertune.generation.decoding import Decoding, check_pad, stop_token_ids
from covertune.generation.letters import Journal, generate_letters, generate_token_ids
from covertune.stages.generate import generate
from covertune.models.load import load_model, load_tokenizer
from covertune.core.prompt import LETTER_SEPARATOR, prompt_ids, render_prompt, wrap_chat
from conftest import CountGenerate

N_ROWS = 6


@pytest.fixture(scope="module")
def test_records(dataset_dir):
    frame = pd.read_csv(dataset_dir / "test.csv", dtype=str, keep_default_na=False).head(N_ROWS)
    rows = []
    for n, row in enumerate(frame.to_dict("records")):
        rec = records.from_source_row(row)
        rec.update(id=f"test-{n}", flags=[], missing_fields=[k for k in records.INPUT_FIELDS if not rec[k]])
        rows.append(rec)
    rows[1]["cover_letter_raw"] = "  The letter before cleaning.  "
    return rows


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory, make_tiny_adapter):
    return make_tiny_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter"), quantization="none")


@pytest.fixture(scope="module")
def nf4_adapter(tiny_model_dir, tmp_path_factory, make_tiny_adapter):
    """An adapter whose covertune_train.json says it was trained on an NF4 base."""
    return make_tiny_adapter(tiny_model_dir, tmp_path_factory.mktemp("nf4-adapter"), quantization="nf4")


@pytest.fixture
def run_dir(tmp_path, test_records, adapter_dir):
    """A run directory holding data/test.jsonl; the adapter stays outside it (passed with --adapter)."""
    io.write_jsonl(tmp_path / "data" / "test.jsonl", test_records)
    return tmp_path


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir), padding_side="left")
    model = load_model(str(tiny_model_dir), "none", "fp32", tokenizer=tok).eval()
    return model, tok


def _cfg(run_dir, tiny_model_dir, adapter_dir=None, **kw):
    base = dict(model=str(tiny_model_dir), out=str(run_dir), adapter=str(adapter_dir) if adapter_dir else "",
                max_new_tokens=10, batch_size=2, dtype="fp32")
    return GenerateConfig(**{**base, **kw})


def test_eval_csv_contract(run_dir, tiny_model_dir, adapter_dir, test_records, monkeypatch):
    counter = CountGenerate(monkeypatch)
    msg = generate(_cfg(run_dir, tiny_model_dir, adapter_dir))
    assert "wrote" in msg and counter.calls == 2 * 3  # two models, 6 rows in batches of 2
    frame = pd.read_csv(run_dir / "eval.csv", dtype=str, keep_default_na=False)
    assert tuple(frame.columns) == records.EVAL_COLUMNS
    assert frame["prompt"].tolist() == [render_prompt(r) for r in test_records]  # split order, raw schema
    assert frame["ground_truth"][1] == "The letter before cleaning."
    assert frame["ground_truth"][0] == test_records[0]["cover_letter"].strip()
    for col in ("base_output", "fine_tuned_output"):
        for text, prompt in zip(frame[col], frame["prompt"]):
            assert "### Job Description" not in text and prompt not in text
    assert (frame["base_output"] != frame["fine_tuned_output"]).sum() >= N_ROWS - 1
    stats = json.loads((run_dir / "generate_stats.json").read_text())
    assert stats["base"]["letters"] == N_ROWS and stats["fine_tuned"]["new_tokens"] > 0
    assert {"seconds", "letters_per_s", "tokens_per_s", "batch_size", "device"} <= set(stats["base"])
    assert rundir.is_done(run_dir, "generate")
    # complete: skipped without generating; a changed decoding setting generates again
    assert "complete" in generate(_cfg(run_dir, tiny_model_dir, adapter_dir))
    assert counter.calls == 6
    generate(_cfg(run_dir, tiny_model_dir, adapter_dir, max_new_tokens=6))
    assert counter.calls == 12


def test_resume_after_interruption(run_dir, tiny_model_dir, adapter_dir, monkeypatch):
    cfg = _cfg(run_dir, tiny_model_dir, adapter_dir)
    counter = CountGenerate(monkeypatch, fail_on=2)  # the second batch of the base pass fails
    with pytest.raises(KeyboardInterrupt):
        generate(cfg)
    assert not (run_dir / "eval.csv").exists()
    journal = io.read_jsonl(run_dir / ".generate" / "test.base.jsonl")
    done = {row["index"]: row["output"] for row in journal[1:]}
    assert len(done) == 2 and all(r["new_tokens"] > 0 for r in journal[1:])

    counter = CountGenerate(monkeypatch)
    generate(cfg)
    assert counter.calls == 2 + 3  # the base pass's 4 remaining rows, then all 6 fine-tuned rows
    frame = pd.read_csv(run_dir / "eval.csv", dtype=str, keep_default_na=False)
    assert len(frame) == N_ROWS and all(frame["base_output"][i] == out for i, out in done.items())

    # the resumed csv equals an uninterrupted run
    fresh = run_dir / "fresh"
    io.write_jsonl(fresh / "data" / "test.jsonl", io.read_jsonl(run_dir / "data" / "test.jsonl"))
    generate(_cfg(fresh, tiny_model_dir, adapter_dir))
    pd.testing.assert_frame_equal(frame, pd.read_csv(fresh / "eval.csv", dtype=str, keep_default_na=False))


def test_batched_greedy_equals_unbatched(tiny, test_records):
    model, tok = tiny
    inputs = [prompt_ids(r, tok, "raw") for r in test_records]
    assert len({len(p) for p in inputs}) > 1  # lengths differ: left padding is exercised
    decoding = Decoding(max_new_tokens=16)

    def ids(batch_size):
        got = {}
        for batch, rows in generate_token_ids(model, tok, inputs, batch_size, decoding):
            got.update(zip(batch, rows))
        return [got[i] for i in range(len(inputs))]

    single = ids(1)
    assert ids(N_ROWS) == single and ids(4) == single


def test_sampling_is_seeded(tiny, test_records):
    model, tok = tiny
    inputs = [prompt_ids(r, tok, "raw") for r in test_records[:3]]
    sampling = Decoding(max_new_tokens=12, do_sample=True, temperature=1.5, top_k=0, seed=7)
    first = generate_letters(model, tok, inputs, 3, sampling, progress=False)
    assert generate_letters(model, tok, inputs, 3, sampling, progress=False) == first
    greedy = generate_letters(model, tok, inputs, 3, Decoding(max_new_tokens=12), progress=False)
    assert first != greedy


def test_outputs_hold_only_the_new_letter(tiny, monkeypatch):
    """Only new tokens are decoded, cut at EOS (padding after it ignored), the extractor applied."""
    model, tok = tiny
    letter = "Dear Hiring Manager,\nI am applying."
    tail = tok("### Cover Letter\n" + "Using the information above, write a professional, personalized "
               "cover letter.\n\n" + letter).input_ids + [tok.eos_token_id, tok.pad_token_id, tok.pad_token_id]

    def fake_generate(input_ids, attention_mask, **kw):
        assert (attention_mask[:, -1] == 1).all()  # left padding
        assert kw["pad_token_id"] != tok.eos_token_id and tok.eos_token_id in kw["eos_token_id"]
        return torch.cat([input_ids, torch.tensor([tail] * input_ids.shape[0])], dim=1)

    monkeypatch.setattr(model, "generate", fake_generate)
    stats = {}
    out = generate_letters(model, tok, [tok("Job Title: X").input_ids, tok("short").input_ids], batch_size=2,
                           stats=stats, progress=False)
    assert out == [letter, letter]
    assert stats["new_tokens"] == 2 * (len(tail) - 2)  # padding after EOS not counted


@pytest.mark.parametrize("prompt_format", ["raw", "chat"])
def test_inputs_are_a_token_prefix_of_the_training_text(tiny, test_records, prompt_format):
    """The ids fed to the model are the start of the training text tokenized in one piece (raw:
    BOS + prompt + "\n\n" + letter; chat: the template + letter), so the fine-tuned model continues
    exactly where it learned to."""
    _, tok = tiny
    for record in test_records:
        fed, letter = prompt_ids(record, tok, prompt_format), record["cover_letter"]
        if prompt_format == "raw":
            text = tok(render_prompt(record) + LETTER_SEPARATOR + letter).input_ids
        else:
            text = tok(wrap_chat(render_prompt(record), tok) + letter, add_special_tokens=False).input_ids
        assert text[:len(fed)] == fed and len(text) > len(fed)


def test_separator_ids_where_bpe_merges_newlines(test_records):
    """A byte-level BPE that has a "\n\n" token: the trailing separator as text would be that token, but
    before a letter it is two "\n" tokens; the separator ids fed are the latter."""
    from conftest import make_tiny_tokenizer

    texts = ["\n\n"] * 500 + [render_prompt(r) + "\n\n" + r["cover_letter"] for r in test_records]
    tok = make_tiny_tokenizer(texts, 400)  # many texts ending in "\n\n": BPE learns a "\n\n" token
    assert "ĊĊ" in tok.get_vocab()
    prompt, letter = render_prompt(test_records[0]), "Dear Hiring Manager,"
    as_text = tok(prompt + LETTER_SEPARATOR).input_ids
    in_training = tok(prompt).input_ids + tok(LETTER_SEPARATOR + letter).input_ids
    assert in_training[:len(as_text)] != as_text  # the trap
    fed = prompt_ids(test_records[0], tok, "raw")
    assert in_training[:len(fed)] == fed and tok.decode(fed[-2:]) == "\n\n"
    assert in_training == tok(prompt + LETTER_SEPARATOR + letter).input_ids  # also the joint tokenization


def test_journal_settings_and_prompt_changes(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal(path, {"a": 1}) as j:
        j.append([{"index": 0, "output": "x", "new_tokens": 3, "prompt_sha": hashlib.sha256(b"1,2,3").hexdigest()}])
    with open(path, "a") as f:
        f.write('{"index": 1, "outp')  # a line cut off by a crash
    with Journal(path, {"a": 1}) as j:
        assert j.lookup(0, [1, 2, 3])["output"] == "x" and j.lookup(0, [1, 2, 4]) is None
        assert j.lookup(1, [5]) is None
    with Journal(path, {"a": 2}) as j:  # changed settings: fresh
        assert j.lookup(0, [1, 2, 3]) is None
    assert len(io.read_jsonl(path)) == 1  # the header alone; the file stays valid JSONL


def test_limit_and_base_only(run_dir, tiny_model_dir, test_records):
    msg = generate(_cfg(run_dir, tiny_model_dir, models=["base"], limit=3))
    assert "fine_tuned_output left empty" in msg
    frame = pd.read_csv(run_dir / "eval.csv", dtype=str, keep_default_na=False)
    assert len(frame) == 3 and frame["prompt"].tolist() == [render_prompt(r) for r in test_records[:3]]
    assert (frame["fine_tuned_output"] == "").all()
    journal = io.read_jsonl(run_dir / ".generate" / "test.base.jsonl")[1:]
    assert sorted(r["index"] for r in journal) == [0, 1, 2] and all(r["new_tokens"] == 10 for r in journal)


def test_prompt_format_follows_the_adapter(run_dir, tiny_model_dir, tmp_path_factory, make_tiny_adapter):
    chat_adapter = make_tiny_adapter(tiny_model_dir, tmp_path_factory.mktemp("chat-adapter"), prompt_format="chat")
    generate(_cfg(run_dir, tiny_model_dir, chat_adapter, limit=2, max_new_tokens=4))
    assert json.loads(rundir.stage_marker(run_dir, "generate").read_text())["prompt_format"] == "chat"
    generate(_cfg(run_dir, tiny_model_dir, chat_adapter, limit=2, max_new_tokens=4, prompt_format="raw"))
    assert json.loads(rundir.stage_marker(run_dir, "generate").read_text())["prompt_format"] == "raw"


@pytest.mark.parametrize("base_weights", ["original", "auto"])
def test_generate_from_merged_folder(run_dir, tiny_model_dir, nf4_adapter, base_weights):
    """Adapter and merged folder give the same letters, with the adapter on the original base or (auto,
    for this NF4-trained adapter) on the base rounded through NF4 as in training."""
    from covertune.config.stages import MergeConfig
    from covertune.stages.merge import merge

    merge(MergeConfig(model=str(tiny_model_dir), out=str(run_dir), adapter=str(nf4_adapter), dtype="fp32",
                      base_weights=base_weights))
    generate(_cfg(run_dir, tiny_model_dir, nf4_adapter, limit=4, output_file="via_adapter.csv",
                  base_weights=base_weights))
    generate(_cfg(run_dir, tiny_model_dir, merged=str(run_dir / "merged"), limit=4, output_file="via_merged.csv"))
    a = pd.read_csv(run_dir / "via_adapter.csv", dtype=str, keep_default_na=False)
    b = pd.read_csv(run_dir / "via_merged.csv", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(a, b)


def test_base_pass_ignores_base_weights(run_dir, tiny_model_dir, nf4_adapter):
    """Only the fine-tuned pass changes with base_weights: the base letters come from the original model,
    and a changed base_weights generates the fine-tuned letters again."""
    generate(_cfg(run_dir, tiny_model_dir, nf4_adapter, limit=3, base_weights="original", output_file="o.csv"))
    msg = generate(_cfg(run_dir, tiny_model_dir, nf4_adapter, limit=3, base_weights="trained", output_file="t.csv"))
    assert "complete" not in msg
    journal = io.read_jsonl(run_dir / ".generate" / "test.fine_tuned.jsonl")
    assert any("trained" in json.dumps(row) for row in journal), "the journal should record the base weights"
    o = pd.read_csv(run_dir / "o.csv", dtype=str, keep_default_na=False)
    t = pd.read_csv(run_dir / "t.csv", dtype=str, keep_default_na=False)
    assert o["base_output"].tolist() == t["base_output"].tolist()
    with pytest.raises(ValueError, match="base_weights"):
        generate(_cfg(run_dir, tiny_model_dir, nf4_adapter, limit=3, base_weights="nf4"))


def test_missing_adapter(run_dir, tiny_model_dir):
    with pytest.raises(FileNotFoundError, match="covertune train"):
        generate(_cfg(run_dir, tiny_model_dir))
    with pytest.raises(FileNotFoundError, match="no PEFT adapter"):
        generate(_cfg(run_dir, tiny_model_dir, adapter_dir=run_dir / "nowhere"))


def test_truncated_adapter_is_named_before_the_base_pass(run_dir, tiny_model_dir, adapter_dir, tmp_path,
                                                        monkeypatch):
    import shutil

    broken = tmp_path / "broken-adapter"
    shutil.copytree(adapter_dir, broken)
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    counter = CountGenerate(monkeypatch)
    with pytest.raises(ValueError, match=r"broken-adapter/adapter_model\.safetensors is not a readable safetensors"):
        generate(_cfg(run_dir, tiny_model_dir, broken))
    assert counter.calls == 0  # no letter generated before the error


def test_output_file_stays_in_the_run_directory(run_dir, tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="leads outside the run directory"):
        generate(_cfg(run_dir, tiny_model_dir, models=["base"], limit=1, output_file="../../x.csv"))
    assert not (run_dir.parent.parent / "x.csv").exists()
    target = tmp_path / "elsewhere" / "x.csv"  # an absolute path is taken as given
    generate(_cfg(run_dir, tiny_model_dir, models=["base"], limit=1, max_new_tokens=2, output_file=str(target)))
    assert target.is_file()


def test_missing_split(tmp_path, tiny_model_dir):
    with pytest.raises(FileNotFoundError, match="covertune data"):
        generate(_cfg(tmp_path, tiny_model_dir, models=["base"]))


def test_pad_distinct_from_eos(tiny):
    model, tok = tiny
    stop = stop_token_ids(tok, model)
    assert tok.pad_token_id not in stop and check_pad(tok, stop) == tok.pad_token_id
    with pytest.raises(ValueError, match="differ from EOS"):
        check_pad(tok, stop + [tok.pad_token_id])


def test_bad_options(run_dir, tiny_model_dir):
    with pytest.raises(ValueError, match="models"):
        generate(_cfg(run_dir, tiny_model_dir, models=["sft"]))
    with pytest.raises(ValueError, match="prompt_format"):
        generate(_cfg(run_dir, tiny_model_dir, models=["base"], prompt_format="xml"))


def test_a_prompt_beyond_the_context_is_an_error_naming_the_row(tmp_path, tiny_model_dir, test_records, monkeypatch):
    rows = [dict(r) for r in test_records[:3]]
    rows[2]["skillsets"] = "word " * 200_000  # 1 MB: far beyond the tiny model's 2,048 positions
    io.write_jsonl(tmp_path / "data" / "test.jsonl", rows)
    counter = CountGenerate(monkeypatch)
    with pytest.raises(ValueError) as e:
        generate(_cfg(tmp_path, tiny_model_dir, models=["base"]))
    msg = str(e.value)
    assert "test-2" in msg and "context of 2,048 tokens" in msg and "\n" not in msg
    assert counter.calls == 0 and not (tmp_path / "eval.csv").exists()
    # a prompt that fits alone but not with the new tokens is refused too
    rows[2]["skillsets"] = "word " * 300
    io.write_jsonl(tmp_path / "data" / "test.jsonl", rows)
    tok = load_tokenizer(str(tiny_model_dir))
    length = len(prompt_ids(rows[2], tok, "raw"))  # the ids generate feeds
    assert length < 2048
    with pytest.raises(ValueError, match="test-2"):
        generate(_cfg(tmp_path, tiny_model_dir, models=["base"], max_new_tokens=2048 - length + 1))
    assert counter.calls == 0


def test_candidates_choose_one_letter_per_row_from_one_call_per_batch(run_dir, tiny_model_dir, adapter_dir,
                                                                      monkeypatch):
    greedy_dir = run_dir / "greedy"
    io.write_jsonl(greedy_dir / "data" / "test.jsonl", io.read_jsonl(run_dir / "data" / "test.jsonl"))
    generate(_cfg(greedy_dir, tiny_model_dir, adapter_dir, models=["fine_tuned"]))
    greedy = pd.read_csv(greedy_dir / "eval.csv", dtype=str, keep_default_na=False)["fine_tuned_output"]

    counter = CountGenerate(monkeypatch)
    cfg = _cfg(run_dir, tiny_model_dir, adapter_dir, models=["fine_tuned"], candidates=3, select="mbr",
               candidate_temperature=1.5)
    generate(cfg)
    assert counter.calls == 3  # 6 rows in batches of 2, 3 candidates each: one call per batch
    frame = pd.read_csv(run_dir / "eval.csv", dtype=str, keep_default_na=False)
    side = io.read_jsonl(run_dir / "candidates" / "test.fine_tuned.jsonl")
    assert [r["index"] for r in side] == list(range(N_ROWS)) and side[0]["id"] == "test-0"
    for row, letter, greedy_letter in zip(side, frame["fine_tuned_output"], greedy):
        cands = row["candidates"]
        assert len(cands) == 3 and row["select"] == "mbr"
        assert cands[row["chosen"]]["letter"] == letter
        assert cands[0]["greedy"] and cands[0]["letter"] == greedy_letter
        scores = [c["mbr"] for c in cands]
        assert scores[row["chosen"]] == max(scores)
    assert any(r["chosen"] != 0 for r in side)  # MBR does not always keep the greedy letter

    assert "complete" in generate(cfg)
    cfg.select = "grounded-mbr"  # the choice is part of the settings: generated again
    generate(cfg)
    assert counter.calls == 6
    assert io.read_jsonl(run_dir / "candidates" / "test.fine_tuned.jsonl")[0]["select"] == "grounded-mbr"

    # one candidate: the greedy pass as before, and no candidates file
    generate(_cfg(run_dir, tiny_model_dir, adapter_dir, models=["fine_tuned"], candidates=1))
    frame = pd.read_csv(run_dir / "eval.csv", dtype=str, keep_default_na=False)
    assert frame["fine_tuned_output"].tolist() == greedy.tolist()
    assert not (run_dir / "candidates" / "test.fine_tuned.jsonl").exists()


def test_bad_candidate_options(run_dir, tiny_model_dir, adapter_dir):
    for kw, msg in ((dict(candidates=0), "candidates must be >= 1"),
                    (dict(select="best"), "select must be one of greedy, mbr, grounded-mbr"),
                    (dict(candidates=4, do_sample=True), "drop --do-sample"),
                    (dict(candidates=4, candidate_top_p=0.0), "candidate_top_p")):
        with pytest.raises(ValueError, match=msg):
            generate(_cfg(run_dir, tiny_model_dir, adapter_dir, **kw))


def test_merged_adapter_writes_the_unmerged_letters(run_dir, tiny_model_dir, adapter_dir, tmp_path):
    """The fine-tuned pass folds the adapter into the base (merge_adapter) by default: the same letters as the
    LoRA layers run unmerged, the base pass untouched, and the setting is part of the resume key."""
    merged_run = run_dir
    generate(_cfg(merged_run, tiny_model_dir, adapter_dir, max_new_tokens=16, models=["fine_tuned", "base"]))
    unmerged_run = tmp_path / "unmerged"
    io.write_jsonl(unmerged_run / "data" / "test.jsonl", io.read_jsonl(run_dir / "data" / "test.jsonl"))
    generate(_cfg(unmerged_run, tiny_model_dir, adapter_dir, max_new_tokens=16, models=["fine_tuned", "base"],
                  merge_adapter=False))
    a = pd.read_csv(merged_run / "eval.csv", dtype=str, keep_default_na=False)
    b = pd.read_csv(unmerged_run / "eval.csv", dtype=str, keep_default_na=False)
    assert (a["fine_tuned_output"] != a["base_output"]).all()  # the adapter changed every letter
    pd.testing.assert_frame_equal(a, b)  # base pass after the unmerge: the original weights again
    # the setting is in the fine-tuned pass's key: switching it generates again
    assert "complete" not in generate(_cfg(merged_run, tiny_model_dir, adapter_dir, max_new_tokens=16,
                                           models=["fine_tuned", "base"], merge_adapter=False))


def test_merged_adapter_context_restores_the_weights(tiny_model_dir, adapter_dir):
    import torch
    from peft import PeftModel

    from covertune.models.letter_model import merged_adapter

    model = PeftModel.from_pretrained(load_model(str(tiny_model_dir), "none", "fp32"), str(adapter_dir)).eval()
    weight = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    before = weight.detach().clone()
    with merged_adapter(model):
        assert not torch.equal(weight, before)  # folded in
    assert torch.allclose(weight, before, atol=1e-6)


def test_classifier_mbr_records_each_candidates_quality(run_dir, tiny_model_dir, adapter_dir, flagged_train_records,
                                                        monkeypatch):
    from covertune.classify.model import LetterClassifier, examine_all

    cfg = _cfg(run_dir, tiny_model_dir, adapter_dir, models=["fine_tuned"], candidates=3, select="classifier-mbr",
               candidate_temperature=1.5, classifier_threshold=0.3)
    counter = CountGenerate(monkeypatch)
    with pytest.raises(FileNotFoundError, match="no letter-quality classifier.*covertune classify train"):
        generate(cfg)
    assert counter.calls == 0  # refused before any model loads

    rows = flagged_train_records[:150]
    checks, labels, _ = examine_all([r["cover_letter"] for r in rows], [records.inputs_of(r) for r in rows],
                                    [r["flags"] for r in rows])
    classifier = LetterClassifier.fit([r["cover_letter"] for r in rows], checks, labels)
    classifier.save(run_dir / "classifier" / "classifier.json")  # where `covertune classify train` writes it
    generate(cfg)
    side = io.read_jsonl(run_dir / "candidates" / "test.fine_tuned.jsonl")
    test_rows = io.read_jsonl(run_dir / "data" / "test.jsonl")
    for row, rec in zip(side, test_rows):
        cands = row["candidates"]
        assert row["select"] == "classifier-mbr" and row["quality_threshold"] == 0.3
        expected = classifier.score([c["letter"] for c in cands], [records.inputs_of(rec)] * 3)
        assert [c["quality"] for c in cands] == pytest.approx(expected, abs=1e-6)
    assert "complete" in generate(cfg)
    # another classifier is another setting: generated again
    LetterClassifier.fit([r["cover_letter"] for r in rows], checks, labels, c=5.0).save(
        run_dir / "classifier" / "classifier.json")
    assert "wrote" in generate(cfg)


def test_candidates_are_for_the_fine_tuned_pass_and_candidate_batch_size_sets_their_calls(
        run_dir, tiny_model_dir, adapter_dir, monkeypatch, tmp_path):
    greedy_run = tmp_path / "greedy"
    io.write_jsonl(greedy_run / "data" / "test.jsonl", io.read_jsonl(run_dir / "data" / "test.jsonl"))
    generate(_cfg(greedy_run, tiny_model_dir, adapter_dir, models=["base"], batch_size=6))
    counter = CountGenerate(monkeypatch)
    generate(_cfg(run_dir, tiny_model_dir, adapter_dir, candidates=3, batch_size=6, candidate_batch_size=4))
    # the base pass: one greedy call of 6 rows; the fine-tuned pass: 6 prompts x 3 candidates, 4 prompts a call
    assert counter.calls == 1 + 2
    frame = pd.read_csv(run_dir / "eval.csv", dtype=str, keep_default_na=False)
    greedy = pd.read_csv(greedy_run / "eval.csv", dtype=str, keep_default_na=False)
    assert frame["base_output"].tolist() == greedy["base_output"].tolist()
    assert not (run_dir / "candidates" / "test.base.jsonl").exists()
    assert len(io.read_jsonl(run_dir / "candidates" / "test.fine_tuned.jsonl")) == N_ROWS
    stats = json.loads((run_dir / "generate_stats.json").read_text())
    assert stats["base"]["batch_size"] == 6 and stats["fine_tuned"]["batch_size"] == 4
    # another candidate batch draws the same candidates (each row from its own seed): nothing to write again;
    # forced, the fine-tuned pass writes the same letters in calls of 3 prompts
    counter.calls = 0
    generate(_cfg(run_dir, tiny_model_dir, adapter_dir, candidates=3, batch_size=6, candidate_batch_size=3))
    assert counter.calls == 0
    generate(_cfg(run_dir, tiny_model_dir, adapter_dir, candidates=3, batch_size=6, candidate_batch_size=3, force=True))
    assert counter.calls == 1 + 2
    again = pd.read_csv(run_dir / "eval.csv", dtype=str, keep_default_na=False)
    assert again["fine_tuned_output"].tolist() == frame["fine_tuned_output"].tolist()


def test_interrupted_force_run_says_how_to_continue_without_losing_letters(tiny_model_dir, tmp_path, capsys,
                                                                           monkeypatch, dataset_dir):
    """Ctrl-C during `generate --force`: the message gives the command that continues (without --force),
    and that command keeps the letters already written."""
    import shlex

    import pandas as pd

    from covertune.core import records as records_module
    from covertune.cli import main
    from covertune.stages.generate import STATS_FILE
    from covertune.generation.letters import Journal

    frame = pd.read_csv(dataset_dir / "test.csv", dtype=str, keep_default_na=False).head(4)
    io.write_jsonl(tmp_path / "data" / "test.jsonl", [records_module.from_source_row(r) for r in frame.to_dict("records")])
    argv = ["generate", "--out", str(tmp_path), "--model", str(tiny_model_dir), "--models", "base",
            "--max-new-tokens", "4", "--batch-size", "1", "--dtype", "fp32", "--force"]
    append = Journal.append

    def interrupted(self, rows):
        append(self, rows)
        if len(self.rows) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Journal, "append", interrupted)
    assert main(argv) == 130
    message = capsys.readouterr().err.strip().splitlines()[-1]
    command = shlex.split(message.split("without --force: ", 1)[1])
    assert command[:2] == ["covertune", "generate"] and "--force" not in command
    assert command[2:] == [a for a in argv[1:] if a != "--force"]
    monkeypatch.setattr(Journal, "append", append)
    assert main(command[1:]) == 0
    stats = json.loads((tmp_path / STATS_FILE).read_text())
    assert stats["base"]["resumed"] == 2 and stats["base"]["letters"] == 2


def test_another_letter_form_reuses_the_letters_and_writes_its_own_eval_csv(run_dir, tiny_model_dir, adapter_dir,
                                                                           test_records):
    """The form is applied after the journal: generate --form full after --form auto writes the same chosen
    letters completed (none generated again), and never reports the auto eval.csv as complete."""
    import pandas as pd

    from covertune.core.records import inputs_of
    from covertune.generation.letter_form import apply_form, is_full

    generate(_cfg(run_dir, tiny_model_dir, adapter_dir, models=["fine_tuned"], candidates=2))
    auto = pd.read_csv(run_dir / "eval.csv", dtype=str, keep_default_na=False)["fine_tuned_output"].tolist()
    message = generate(_cfg(run_dir, tiny_model_dir, adapter_dir, models=["fine_tuned"], candidates=2, form="full"))
    assert "is complete" not in message
    full = pd.read_csv(run_dir / "eval.csv", dtype=str, keep_default_na=False)["fine_tuned_output"].tolist()
    fields = [inputs_of(r) for r in test_records]
    assert full == [apply_form(a, "full", f) for a, f in zip(auto, fields)]
    assert all(is_full(text, f) for text, f in zip(full, fields) if text.strip())
    stats = json.loads((run_dir / "generate_stats.json").read_text())["fine_tuned"]
    assert stats["resumed"] == len(test_records)  # the journal's letters, none written again
    assert "is complete" in generate(_cfg(run_dir, tiny_model_dir, adapter_dir, models=["fine_tuned"], candidates=2,
                                          form="full"))
