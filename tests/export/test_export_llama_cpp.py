"""Exported GGUF files of a tiny Llama run by llama.cpp itself (llama-cpp-python): the 349 test prompts
tokenize to covertune's ids, the Modelfile's TEMPLATE rendered as Ollama renders it feeds covertune's prompt
ids, and teacher-forced on a few letters llama.cpp's next-token argmax agrees with covertune's fp32 model.

The tiny Llama (2 layers, hidden 64, the tests' byte-level BPE tokenizer) is redrawn with weights of std 0.1,
so its logits spread and an argmax means something; at the usual 0.02 init they are near-ties. Thresholds:
argmax agreement >= 99% (f16) and >= 97% (q8_0) of the letter positions, logits within 0.05 (f16) and 0.5
(q8_0).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from covertune.config.stages import ExportConfig
from covertune.stages.export import export
from covertune.export.modelfile import template_of
from covertune.core.prompt import letter_ids, prompt_ids, render_prompt, separator_ids, text_ids
from covertune.core.records import from_source_row

from llama_cpp_check import load, logits, render_go_template, require_llama_cpp, runtime_tokenize

N_TEST_ROWS = 349
LETTER_TOKENS = 96  # letter positions teacher-forced per application
AGREEMENT = {"f16": 0.99, "q8_0": 0.97}
LETTER_ROWS = (0, 7, 50, 200)  # fixed held-out applications


@pytest.fixture(scope="module")
def test_rows(dataset_dir):
    import pandas as pd

    frame = pd.read_csv(dataset_dir / "test.csv", keep_default_na=False, dtype=str)
    return [from_source_row(r) for r in frame.to_dict("records")]


@pytest.fixture(scope="module")
def spread_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny Llama with its matrices redrawn at std 0.1 (norms kept), saved with its tokenizer."""
    from transformers import AutoModelForCausalLM

    require_llama_cpp()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    path = tmp_path_factory.mktemp("spread-llama")
    model.save_pretrained(path)
    for f in tiny_model_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy2(f, path / f.name)
    return path


def make_run(root, model_dir, prompt_format="raw"):
    run = root / f"run-{prompt_format}"
    shutil.copytree(model_dir, run / "merged")
    (run / "merged" / "covertune_train.json").write_text(json.dumps({"prompt_format": prompt_format,
                                                                     "model": "tiny"}))
    return run


@pytest.fixture(scope="module")
def exported(spread_model_dir, tmp_path_factory):
    """{quant: export folder} of the raw-format run, and the reference model and tokenizer."""
    from covertune.models.load import load_model, load_tokenizer

    run = make_run(tmp_path_factory.mktemp("llama-cpp"), spread_model_dir)
    for quant in AGREEMENT:
        export(ExportConfig(out=str(run), quant=quant))
    tok = load_tokenizer(str(spread_model_dir))
    model = load_model(str(spread_model_dir), "none", "fp32", tokenizer=tok).eval()
    return {"folders": {q: run / "export" / f"gguf-{q}" for q in AGREEMENT}, "model": model, "tok": tok}


def test_test_prompts_tokenize_to_covertune_s_ids(exported, test_rows):
    tok = exported["tok"]
    folder = exported["folders"]["f16"]
    llm = require_llama_cpp().Llama(model_path=str(folder / "model.gguf"), vocab_only=True, verbose=False)
    template = template_of((folder / "Modelfile").read_text())
    sep = separator_ids(tok)
    assert len(test_rows) == N_TEST_ROWS
    for row in test_rows:
        prompt = render_prompt(row)
        assert runtime_tokenize(llm, prompt) == tok(prompt).input_ids, row["job_title"]
        # Ollama renders the TEMPLATE, then tokenizes the whole text: covertune's prompt ids, the separator
        # written in full or but for the tokens the model writes itself
        fed = runtime_tokenize(llm, render_go_template(template, {"Prompt": prompt}))
        expected = prompt_ids(row, tok, "raw")
        assert fed == expected[:len(fed)] and len(expected) - len(sep) < len(fed), row["job_title"]
    letters = [r["cover_letter"] for r in test_rows[:40]]
    assert [runtime_tokenize(llm, t) for t in letters] == tok(letters).input_ids


def test_chat_modelfile_feeds_the_chat_prompt(spread_model_dir, tmp_path, test_rows):
    from covertune.models.load import load_tokenizer

    run = make_run(tmp_path, spread_model_dir, "chat")
    export(ExportConfig(out=str(run)))
    folder = run / "export" / "gguf-f16"
    llm = require_llama_cpp().Llama(model_path=str(folder / "model.gguf"), vocab_only=True, verbose=False)
    template = template_of((folder / "Modelfile").read_text())
    tok = load_tokenizer(str(spread_model_dir))
    for row in [*test_rows[:20], {**test_rows[0], "job_title": "Nurse {{ night shift }} <|im_end|>"}]:
        prompt = render_prompt(row)
        fed = runtime_tokenize(llm, render_go_template(template, {"Prompt": prompt}))
        assert fed == text_ids(prompt, tok, "chat")


def test_go_template_rendering():
    """The helper renders what Go's text/template would for the constructs covertune's Modelfiles use, and
    refuses any other action rather than guess."""
    data = {"Prompt": "Job: {{ x }}\n"}
    assert render_go_template('A {{ .Prompt }}B', data) == "A Job: {{ x }}\nB"  # values are not re-parsed
    assert render_go_template('{{ "{{" }} .Prompt }}', data) == "{{ .Prompt }}"
    assert render_go_template('{{ "a}}b\\n" }}', data) == "a}}b\n"
    assert render_go_template("x  \n {{- .Prompt -}} \n y", data) == "xJob: {{ x }}\ny"
    assert render_go_template("a{{/* note */}}b", data) == "ab"
    with pytest.raises(NotImplementedError):
        render_go_template("{{ if .System }}s{{ end }}", data)
    with pytest.raises(KeyError):
        render_go_template("{{ .System }}", data)


def _letter_sequences(tok, rows):
    """(ids, first) per application: the prompt's ids and the letter's first LETTER_TOKENS ids teacher-forced;
    ``first`` is the position whose logits predict the letter's first token."""
    out = []
    for row in rows:
        p = prompt_ids(row, tok, "raw")
        out.append((p + letter_ids(row["cover_letter"], tok, "raw")[:LETTER_TOKENS], len(p) - 1))
    return out


@pytest.mark.parametrize("quant", list(AGREEMENT))
def test_teacher_forced_argmax_agrees_with_covertune_s_model(exported, test_rows, quant):
    model, tok = exported["model"], exported["tok"]
    seqs = _letter_sequences(tok, [test_rows[i] for i in LETTER_ROWS])
    n_ctx = max(len(ids) for ids, _ in seqs) + 8
    llm = load(exported["folders"][quant] / "model.gguf", n_ctx=n_ctx)
    same = total = 0
    worst = 0.0
    for ids, first in seqs:
        with torch.no_grad():
            ref = model(input_ids=torch.tensor([ids])).logits[0].float().numpy()
        got = logits(llm, ids)
        assert np.abs(ref).max() > 1.0, "a model whose logits spread, so that argmax means something"
        ref, got = ref[first:len(ids) - 1], got[first:len(ids) - 1]
        same += int((ref.argmax(-1) == got.argmax(-1)).sum())
        total += len(ref)
        worst = max(worst, float(np.abs(ref - got).max()))
    assert total == sum(len(ids) - 1 - first for ids, first in seqs) > 300
    assert same / total >= AGREEMENT[quant], f"{quant}: {same}/{total} positions agree"
    assert worst < (0.05 if quant == "f16" else 0.5), f"{quant}: logits differ by up to {worst:.3f}"


def test_gguf_lora_on_the_base_equals_the_merged_model(spread_model_dir, exported, tmp_path, test_rows):
    """--format gguf-lora: llama.cpp's base f16 file with the adapter applied (--lora) gives the logits of the
    adapter merged into the base (covertune's own merge, exported f16), within the f16 tolerance (measured:
    at most 0.014 apart, where the adapter moves them by up to 5.3), and the same argmax wherever the top
    two are not within 0.1 of each other."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    torch.manual_seed(4)
    base = AutoModelForCausalLM.from_pretrained(spread_model_dir, dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                         "up_proj", "down_proj"], init_lora_weights=False,
                      task_type="CAUSAL_LM")
    get_peft_model(base, lora).save_pretrained(run / "adapter")
    (run / "adapter" / "covertune_train.json").write_text(json.dumps(
        {"model": str(spread_model_dir), "prompt_format": "raw", "quantization": "none"}))

    msg = export(ExportConfig(out=str(run), format="gguf-lora"))
    folder = run / "export" / "gguf-lora"
    assert "adapter.gguf" in msg and sorted(p.name for p in folder.iterdir()) == [
        "Modelfile", "README.md", "adapter.gguf", "covertune_export.json", "example_prompt.txt"]
    modelfile = (folder / "Modelfile").read_text()
    assert f"FROM {spread_model_dir.resolve()}\n" in modelfile and "ADAPTER ./adapter.gguf\n" in modelfile
    export(ExportConfig(out=str(run), model=str(spread_model_dir), dtype="fp32"))  # merged on the fly, f16

    ids = prompt_ids(test_rows[3], exported["tok"], "raw")
    n_ctx = len(ids) + 8
    with_lora = logits(load(exported["folders"]["f16"] / "model.gguf", n_ctx, lora=folder / "adapter.gguf"), ids)
    merged = logits(load(run / "export" / "gguf-f16" / "model.gguf", n_ctx), ids)
    plain = logits(load(exported["folders"]["f16"] / "model.gguf", n_ctx), ids)
    assert np.abs(merged - plain).max() > 0.5, "the adapter should change the model"
    np.testing.assert_allclose(with_lora, merged, atol=0.05, rtol=0)
    top2 = np.sort(merged, -1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.1  # positions that are no near-tie within the tolerance
    assert clear.mean() > 0.5 and (with_lora.argmax(-1) == merged.argmax(-1))[clear].all()


def test_k_quant_through_llama_cpp_s_quantizer(spread_model_dir, exported, tmp_path, test_rows, monkeypatch, capsys):
    """q4_k_m is made by llama.cpp's quantizer (llama-quantize on PATH, else llama-cpp-python's); the file
    says Q4_K_M and runs. Rows of 64 values are not a multiple of the K-quants' 256, so llama.cpp falls back
    to q5_0 for them, as it does for any such model; with neither quantizer, a one-line refusal."""
    import sys

    import gguf

    from covertune.cli import main

    run = make_run(tmp_path, spread_model_dir)
    export(ExportConfig(out=str(run), quant="q4_k_m"))
    folder = run / "export" / "gguf-q4_k_m"
    reader = gguf.GGUFReader(str(folder / "model.gguf"))
    assert reader.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q4_K_M
    types = {t.tensor_type for t in reader.tensors if len(t.shape) == 2}
    assert types and types <= {gguf.GGMLQuantizationType.Q5_0, gguf.GGMLQuantizationType.Q8_0,
                               gguf.GGMLQuantizationType.Q6_K, gguf.GGMLQuantizationType.Q4_K}, types
    assert not any(p.name.startswith(".f16") for p in folder.iterdir())
    ids = prompt_ids(test_rows[0], exported["tok"], "raw")
    with torch.no_grad():
        ref = exported["model"](input_ids=torch.tensor([ids])).logits[0].numpy()
    got = logits(load(folder / "model.gguf", len(ids) + 8), ids)
    corr = np.corrcoef(ref.ravel(), got.ravel())[0, 1]
    assert corr > 0.95  # 4/5-bit weights of a random model: the same model, not noise (the embedded model's
    # argmax agreement per quant type is measured in README's export section)

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    capsys.readouterr()
    assert main(["export", "--out", str(run), "--quant", "q5_k_m"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "llama-quantize" in err and "covertune[llamacpp]" in err, err
    assert not (run / "export" / "gguf-q5_k_m").exists()
