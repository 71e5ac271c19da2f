"""GGUF export of a Llama with a SentencePiece tokenizer (Llama-2's kind: BPE pieces joined by "▁", byte
fallback), built in the test: sentencepiece trains a tiny BPE model as Llama-2's was configured
(byte fallback, digits split, whitespace kept), transformers converts it to its fast tokenizer, and a tiny
random Llama goes with it. The export reads it with gguf.vocab's readers; transformers' GGUF loader and
llama.cpp tokenize as the original does, and llama.cpp's logits follow the model's."""

from __future__ import annotations

import json
import shutil

import gguf
import numpy as np
import pytest
import torch

from covertune.config.stages import ExportConfig
from covertune.stages.export import export
from covertune.export.modelfile import template_of
from covertune.core.prompt import TEMPLATE, letter_ids, prompt_ids, render_prompt, separator_ids
from covertune.core.records import from_source_row

from llama_cpp_check import load, logits, render_go_template, require_llama_cpp, runtime_tokenize

from conftest import CHATML, make_tiny_llama


@pytest.fixture(scope="module")
def rows(dataset_dir):
    import pandas as pd

    frame = pd.read_csv(dataset_dir / "test.csv", keep_default_na=False, dtype=str)
    return [from_source_row(r) for r in frame.to_dict("records")]


@pytest.fixture(scope="module")
def spm_dir(dataset_dir, tmp_path_factory):
    """A tiny Llama (std 0.1 weights) with a SentencePiece BPE tokenizer trained on 300 training rows."""
    import pandas as pd

    spm = pytest.importorskip("sentencepiece", reason="sentencepiece is not installed (the test extra has it)")
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("spm")
    frame = pd.read_csv(dataset_dir / "train.csv", keep_default_na=False, dtype=str).head(300)
    lines = [line for text in [TEMPLATE, *(" ".join(r) for r in frame.values.tolist())]
             for line in text.splitlines() if line.strip()]
    (root / "corpus.txt").write_text("\n".join(lines), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(root / "corpus.txt"), model_prefix=str(root / "tokenizer"), vocab_size=1000, model_type="bpe",
        byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        minloglevel=2)
    sp_dir = root / "sp"
    sp_dir.mkdir()
    shutil.move(root / "tokenizer.model", sp_dir / "tokenizer.model")
    (sp_dir / "tokenizer_config.json").write_text(json.dumps(  # Llama-2's settings: BOS added, legacy spaces
        {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False, "legacy": True}))
    tok = AutoTokenizer.from_pretrained(sp_dir)  # converted from the SentencePiece model, as from a hub repo
    tok.chat_template = CHATML
    model = make_tiny_llama(tok)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    out = root / "model"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def exported(spm_dir, tmp_path_factory):
    from covertune.models.load import load_model, load_tokenizer

    run = tmp_path_factory.mktemp("spm-run")
    shutil.copytree(spm_dir, run / "merged")
    (run / "merged" / "covertune_train.json").write_text(json.dumps({"prompt_format": "raw", "model": "tiny"}))
    export(ExportConfig(out=str(run), quant="f16"))
    tok = load_tokenizer(str(spm_dir))
    return {"folder": run / "export" / "gguf-f16", "tok": tok,
            "model": load_model(str(spm_dir), "none", "fp32", tokenizer=tok).eval()}


def test_the_tokenizer_is_sentencepiece_style(exported):
    tok = exported["tok"]
    spec = json.loads(tok.backend_tokenizer.to_str())
    assert spec["model"]["type"] == "BPE" and spec["model"]["byte_fallback"]
    assert tok("Dear\n").input_ids[0] == tok.bos_token_id == 1  # Llama-2 adds BOS
    assert "<0x0A>" in tok.convert_ids_to_tokens(tok("a\nb", add_special_tokens=False).input_ids)  # byte fallback


def test_metadata_is_llama_cpp_s_sentencepiece_vocabulary(exported):
    reader = gguf.GGUFReader(str(exported["folder"] / "model.gguf"))
    tok = exported["tok"]

    def field(key):
        return reader.fields[key].contents()

    assert field("tokenizer.ggml.model") == "llama"
    assert field("tokenizer.ggml.add_bos_token") is True and field("tokenizer.ggml.add_eos_token") is False
    assert (field("tokenizer.ggml.bos_token_id"), field("tokenizer.ggml.eos_token_id")) == (1, 2)
    tokens, types = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type")
    assert len(tokens) == len(tok) and tokens[3] == "<0x00>" and types[3] == gguf.TokenType.BYTE
    assert types[1] == gguf.TokenType.CONTROL and types[500] == gguf.TokenType.NORMAL
    assert len(field("tokenizer.ggml.merges")) > 100
    assert field("tokenizer.chat_template") == CHATML


def test_transformers_reads_back_the_same_tokenizer_and_logits(exported, rows):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, tok = exported["folder"], exported["tok"]
    back_tok = AutoTokenizer.from_pretrained(str(folder), gguf_file="model.gguf")
    texts = [render_prompt(r) for r in rows[:30]] + [r["cover_letter"] for r in rows[:10]]
    assert back_tok(texts).input_ids == tok(texts).input_ids
    back = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file="model.gguf", dtype=torch.float32).eval()
    ids = torch.tensor([tok(texts[0]).input_ids])
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=ids).logits, exported["model"](input_ids=ids).logits,
                                   atol=0.02, rtol=0)


def test_llama_cpp_tokenizes_and_runs_it_as_covertune(exported, rows):
    folder, tok, model = exported["folder"], exported["tok"], exported["model"]
    vocab = require_llama_cpp().Llama(model_path=str(folder / "model.gguf"), vocab_only=True, verbose=False)
    template = template_of((folder / "Modelfile").read_text())
    sep = separator_ids(tok)
    for row in rows:
        prompt = render_prompt(row)
        assert runtime_tokenize(vocab, prompt) == tok(prompt).input_ids, row["job_title"]
        fed = runtime_tokenize(vocab, render_go_template(template, {"Prompt": prompt}))
        expected = prompt_ids(row, tok, "raw")
        assert fed == expected[:len(fed)] and len(expected) - len(sep) < len(fed), row["job_title"]
    letters = [r["cover_letter"] for r in rows[:40]]
    assert [runtime_tokenize(vocab, t) for t in letters] == tok(letters).input_ids

    same = total = 0
    seqs = [prompt_ids(r, tok, "raw") + letter_ids(r["cover_letter"], tok, "raw")[:96] for r in rows[:3]]
    llm = load(folder / "model.gguf", n_ctx=max(map(len, seqs)) + 8)
    for ids in seqs:
        with torch.no_grad():
            ref = model(input_ids=torch.tensor([ids])).logits[0].numpy()
        got = logits(llm, ids)
        assert np.abs(ref - got).max() < 0.05
        same += int((ref.argmax(-1) == got.argmax(-1)).sum())
        total += len(ids)
    assert same / total >= 0.99
