"""merge: the merged model equals base + adapter; it is saved loadable, atomically, never from k-bit weights."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from covertune import io
from covertune.config import MergeConfig
from covertune.merge import merge


def make_tiny_adapter(model_dir, path, prompt_format="raw", quantization="nf4"):
    """A non-zero LoRA adapter (r=4 on q_proj/v_proj) on the tiny model, with the train stage's config."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                      task_type="CAUSAL_LM")
    get_peft_model(base, lora).save_pretrained(path)
    (path / "covertune_train.json").write_text(json.dumps(
        {"model": str(model_dir), "base_model": str(model_dir), "prompt_format": prompt_format,
         "quantization": quantization}))
    return path


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    return make_tiny_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter"))


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def test_merged_logits_equal_base_plus_adapter(tiny_model_dir, adapter_dir, tmp_path, caplog):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = MergeConfig(model=str(tiny_model_dir), out=str(tmp_path), adapter=str(adapter_dir), dtype="fp32")
    with caplog.at_level(logging.INFO, logger="covertune.merge"):
        msg = merge(cfg)
    assert "wrote" in msg
    assert "unquantized" in caplog.text  # the adapter says it was trained on an nf4 base
    target = tmp_path / "merged"
    assert list(target.glob("*.safetensors")) and (target / "tokenizer.json").exists()
    assert not list(tmp_path.glob(".merged-*")), "temporary folder left behind"
    assert io.is_done(tmp_path, "merge")
    assert json.loads((target / "covertune_train.json").read_text())["prompt_format"] == "raw"

    tok = AutoTokenizer.from_pretrained(target)
    ids = tok(["Job Title: Data Scientist", "Dear Hiring Manager, I am writing to apply"],
              return_tensors="pt", padding=True).input_ids
    merged = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    base_logits = _logits(base, ids)
    with_adapter = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    expected = _logits(with_adapter, ids)
    assert not torch.allclose(expected, base_logits, atol=1e-3), "the test adapter should change the logits"
    torch.testing.assert_close(_logits(merged, ids), expected, atol=1e-4, rtol=1e-4)


def test_merge_skips_when_complete_and_redoes_with_force(tiny_model_dir, adapter_dir, tmp_path):
    cfg = MergeConfig(model=str(tiny_model_dir), out=str(tmp_path), adapter=str(adapter_dir), dtype="fp32")
    merge(cfg)
    assert "complete" in merge(cfg)
    cfg.force = True
    assert "wrote" in merge(cfg)


def test_merge_missing_adapter(tiny_model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="covertune train"):
        merge(MergeConfig(model=str(tiny_model_dir), out=str(tmp_path)))
