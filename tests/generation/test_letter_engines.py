"""covertune write --engine (covertune.generation.letter_engines): auto picks llama.cpp on a machine without a GPU where
llama-cpp-python is installed, and ``write --engine llama.cpp`` writes the llama.cpp engine's letter of the run's
model, exported once into the run directory."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from covertune.generation import letter_engines, llamacpp_engine
from covertune.models import load as models
from covertune.config.stages import GenerateConfig, WriteConfig


def test_auto_follows_the_machine(monkeypatch, caplog):
    monkeypatch.setattr(models, "has_cuda", lambda: True)
    assert letter_engines.resolve("auto") == "torch"
    monkeypatch.setattr(models, "has_cuda", lambda: False)
    monkeypatch.setattr(llamacpp_engine, "available", lambda: False)
    with caplog.at_level("WARNING"):
        assert letter_engines.resolve("auto") == "torch"
    assert "pip install 'covertune[llamacpp]'" in caplog.text  # the slow path says how to leave it
    with pytest.raises(ValueError, match="needs llama-cpp-python"):
        letter_engines.resolve("llama.cpp")
    monkeypatch.setattr(llamacpp_engine, "available", lambda: True)
    assert letter_engines.resolve("auto") == "llama.cpp"
    with pytest.raises(ValueError, match="engine must be one of auto, torch, llama.cpp"):
        letter_engines.resolve("vllm")


def test_write_with_llamacpp_writes_its_greedy_letter(tiny_model_dir, make_tiny_adapter, dataset_dir, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'covertune[llamacpp]')")
    import pandas as pd

    from covertune.core import records
    from covertune.generation.decoding import Decoding
    from covertune.generation.letters import generate_letters
    from covertune.generation.gguf_cache import load_letter_model
    from covertune.stages.write import write

    out = tmp_path / "run"
    make_tiny_adapter(tiny_model_dir, out / "adapter", quantization="none")
    row = records.from_source_row(pd.read_csv(dataset_dir / "test.csv", dtype=str, keep_default_na=False).iloc[0])
    fields = {k: v for k, v in records.inputs_of(row).items() if v}
    cfg = WriteConfig(model=str(tiny_model_dir), out=str(out), max_new_tokens=12, engine="llama.cpp",
                      gguf_quant="f16", threads=1, form="auto", **fields)
    letter = write(cfg)
    assert list((out / ".engine" / "gguf").glob("f16-*/model.gguf"))  # exported into the run directory
    lm = load_letter_model(GenerateConfig(model=str(tiny_model_dir), out=str(out)), quant="f16", threads=1)
    assert "llama.cpp" in lm.source
    ids = lm.prompt_ids(records.inputs_of(row))
    assert letter == generate_letters(lm.model, lm.tokenizer, [ids], 1, Decoding(max_new_tokens=12),
                                      progress=False)[0]
    cfg.candidates, cfg.json, cfg.select = 4, True, "mbr"
    result = json.loads(write(cfg))
    assert len(result["candidates"]["candidates"]) == 4
    assert result["candidates"]["candidates"][0]["letter"] == letter  # candidate 0 is the greedy letter
    assert result["usage"]["completion_tokens"] == sum(c["new_tokens"] for c in result["candidates"]["candidates"])


BLOCKED = ("torch", "transformers", "peft", "bitsandbytes", "sklearn")
WITHOUT_TORCH = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError("imported " + name)
sys.meta_path.insert(0, Block())
from covertune.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_llamacpp_letter_starts_without_torch(tiny_model_dir, make_tiny_adapter, dataset_dir, tmp_path):
    """Once the run's GGUF is exported, `covertune write --engine llama.cpp` (greedy and with candidates) runs
    in a process where importing torch, transformers, peft, bitsandbytes or scikit-learn fails, and writes
    the letter it writes with them: its start-up is not theirs to pay (docs/PERFORMANCE.md)."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'covertune[llamacpp]')")
    import subprocess
    import sys

    out = tmp_path / "run"
    make_tiny_adapter(tiny_model_dir, out / "adapter", quantization="none")
    app = tmp_path / "app.json"
    row = pd.read_csv(dataset_dir / "test.csv", dtype=str, keep_default_na=False).iloc[1]
    from covertune.core import records

    app.write_text(json.dumps({k: v for k, v in records.inputs_of(records.from_source_row(row)).items() if v}))
    for extra in (["--candidates", "1"], ["--candidates", "3", "--select", "grounded-mbr"]):
        argv = ["write", "--model", str(tiny_model_dir), "--out", str(out), "--input", str(app), "--json",
                "--engine", "llama.cpp", "--gguf-quant", "f16", "--threads", "1", "--max-new-tokens", "10", *extra]
        with_torch = subprocess.run([sys.executable, "-m", "covertune", *argv], capture_output=True, text=True)
        assert with_torch.returncode == 0, with_torch.stderr
        without = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, *argv], capture_output=True, text=True)
        assert without.returncode == 0, without.stderr
        assert json.loads(without.stdout) == json.loads(with_torch.stdout)
    blocked = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, *argv[:-6], "--engine", "torch"],
                             capture_output=True, text=True)
    assert blocked.returncode != 0 and "error: imported " in blocked.stderr  # the blocker does block

    # `covertune serve` on the same model, torch blocked too: it starts and answers with write's greedy letter
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    greedy = json.loads(subprocess.run([sys.executable, "-m", "covertune", *argv[:-4], "--candidates", "1"],
                                       capture_output=True, text=True).stdout)["letter"]
    serve = subprocess.Popen([sys.executable, "-c", WITHOUT_TORCH, "serve", "--port", str(port), "--model",
                              str(tiny_model_dir), "--out", str(out), "--engine", "llama.cpp", "--gguf-quant", "f16",
                              "--threads", "1", "--max-new-tokens", "10"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        body = None
        for _ in range(120):
            assert serve.poll() is None, serve.stdout.read()
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/v1/cover-letter", headers={"Content-Type": "application/json"},
                    data=json.dumps({**json.loads(app.read_text()), "candidates": 1}).encode())
                with urllib.request.urlopen(request, timeout=60) as response:
                    body = json.loads(response.read())
                break
            except OSError:
                time.sleep(0.5)
        assert body is not None and body["letter"] == greedy
    finally:
        serve.terminate()
        serve.wait(30)


def test_generate_with_llamacpp_writes_its_letters(tiny_model_dir, make_tiny_adapter, dataset_dir, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'covertune[llamacpp]')")
    import pandas as pd

    from covertune.core import io, records
    from covertune.generation.decoding import Decoding
    from covertune.stages.generate import generate
    from covertune.generation.letters import generate_letters
    from covertune.generation.gguf_cache import load_letter_model

    out = tmp_path / "run"
    rows = [records.from_source_row(r) for r in
            pd.read_csv(dataset_dir / "test.csv", dtype=str, keep_default_na=False).head(3).to_dict("records")]
    io.write_jsonl(out / "data" / "test.jsonl", rows)
    make_tiny_adapter(tiny_model_dir, out / "adapter", quantization="none")
    cfg = GenerateConfig(model=str(tiny_model_dir), out=str(out), max_new_tokens=12, batch_size=2,
                         engine="llama.cpp", gguf_quant="f16")
    generate(cfg)
    frame = pd.read_csv(out / "eval.csv", dtype=str, keep_default_na=False)
    lm = load_letter_model(GenerateConfig(model=str(tiny_model_dir), out=str(out)), quant="f16")
    ids = [lm.prompt_ids(records.inputs_of(r)) for r in rows]
    expected = generate_letters(lm.model, lm.tokenizer, ids, 2, Decoding(max_new_tokens=12), progress=False)
    assert frame["fine_tuned_output"].tolist() == expected
    stats = json.loads((out / "generate_stats.json").read_text())
    assert stats["fine_tuned"]["engine"] == "llama.cpp (f16)" and stats["base"]["engine"] == "llama.cpp (f16)"
    assert stats["fine_tuned"]["dtype"] == "gguf f16"  # the weights llama.cpp ran, not a torch dtype
    assert frame["base_output"].tolist() != expected  # the base pass ran the base model alone
    # with candidates: one batch per prompt group, candidate 0 the greedy letter
    generate(GenerateConfig(**{**cfg.__dict__, "models": ["fine_tuned"], "candidates": 3, "select": "mbr",
                               "output_file": "eval_candidates.csv"}))
    side = io.read_jsonl(out / "candidates" / "test.fine_tuned.jsonl")
    assert [c["candidates"][0]["letter"] for c in side] == expected


@pytest.mark.parametrize("engine", ["torch", "llama.cpp"])
def test_generate_stops_where_the_adapters_recipe_says(engine, tiny_model_dir, make_tiny_adapter, dataset_dir,
                                                        tmp_path):
    """An adapter whose recipe names the token its letters end with (the shipped model's <|im_start|>): the
    generate stage's fine-tuned pass stops there, as write's loaders do."""
    if engine == "llama.cpp":
        pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'covertune[llamacpp]')")
    import pandas as pd

    from covertune.core import io, records
    from covertune.generation.decoding import Decoding
    from covertune.generation.letters import generate_letters, generate_token_ids
    from covertune.stages.generate import generate

    from conftest import varied_tiny_llama

    model_dir = tmp_path / "varied"  # a tiny Llama that writes varied tokens (the tied one repeats one)
    model, tokenizer = varied_tiny_llama(tiny_model_dir)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    out = tmp_path / "run"
    rows = [records.from_source_row(r) for r in
            pd.read_csv(dataset_dir / "test.csv", dtype=str, keep_default_na=False).head(2).to_dict("records")]
    io.write_jsonl(out / "data" / "test.jsonl", rows)
    make_tiny_adapter(model_dir, out / "adapter", quantization="none")
    source = GenerateConfig(model=str(model_dir), out=str(out), dtype="fp32")
    cfg = GenerateConfig(**{**source.__dict__, "models": ["fine_tuned"], "max_new_tokens": 12, "batch_size": 2,
                            "engine": "plain" if engine == "torch" else engine, "gguf_quant": "f16"})

    def loaded():
        return letter_engines.load_letter_model(engine, source, quant="f16", threads=1)

    lm = loaded()
    inputs = [lm.prompt_ids(records.inputs_of(r)) for r in rows]
    found = dict((i, r) for indices, batch in generate_token_ids(lm.model, lm.tokenizer, inputs, 2,
                                                                  Decoding(max_new_tokens=12))
                 for i, r in zip(indices, batch))
    ids = found[0]
    end = next(t for k, t in enumerate(ids) if k > 0 and t not in ids[:k])  # a token the letter reaches later
    generate(cfg)
    before = pd.read_csv(out / "eval.csv", dtype=str, keep_default_na=False)["fine_tuned_output"].tolist()
    (out / "adapter" / "recipe.json").write_text(json.dumps({"end_of_letter_token": {"id": int(end)}}))
    generate(cfg)  # another adapter (its files changed): generated again
    after = pd.read_csv(out / "eval.csv", dtype=str, keep_default_na=False)["fine_tuned_output"].tolist()
    lm = loaded()  # write's loader, which adds the recipe's end token
    assert end in lm.model.generation_config.eos_token_id
    assert after == generate_letters(lm.model, lm.tokenizer, inputs, 2, Decoding(max_new_tokens=12), progress=False)
    assert after[0] != before[0] and len(after[0]) < len(before[0])
