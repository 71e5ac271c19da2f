"""merge: the merged model equals base + adapter; it is saved loadable, atomically, never from k-bit weights."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from covertune.core import rundir
from covertune.config.stages import MergeConfig
from covertune.stages.merge import merge


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory, make_tiny_adapter):
    return make_tiny_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter"))


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def nf4_round_trip(model):
    """``model`` with every decoder Linear weight quantized to NF4 (double quant, blocks of 64, as the
    train stage loads it) and dequantized again, computed with bitsandbytes' functions directly."""
    import bitsandbytes.functional as F

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name != "lm_head":
            q, state = F.quantize_4bit(module.weight.data, blocksize=64, compress_statistics=True, quant_type="nf4")
            module.weight.data = F.dequantize_4bit(q, state).to(module.weight.dtype)
    return model


@pytest.mark.parametrize("base_weights", ["original", "auto"])
def test_merged_logits_equal_base_plus_adapter(tiny_model_dir, adapter_dir, tmp_path, caplog, base_weights):
    """The merged model is base + adapter; the base is the checkpoint itself (original) or, for this
    NF4-trained adapter by default, the checkpoint rounded through NF4 as training saw it."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = MergeConfig(model=str(tiny_model_dir), out=str(tmp_path), adapter=str(adapter_dir), dtype="fp32",
                      base_weights=base_weights)
    with caplog.at_level(logging.INFO, logger="covertune.models.merge"):
        msg = merge(cfg)
    assert "wrote" in msg
    trained = base_weights == "auto"
    assert ("dequantized" if trained else "unquantized") in caplog.text  # the adapter says it was trained on nf4
    target = tmp_path / "merged"
    assert list(target.glob("*.safetensors")) and (target / "tokenizer.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".stages", "merged"], "temporary folder left behind"
    assert rundir.is_done(tmp_path, "merge")
    assert json.loads((target / "covertune_train.json").read_text())["prompt_format"] == "raw"
    info = json.loads((target / "covertune_merge.json").read_text())
    assert info["base_weights"] == ("trained" if trained else "original")

    tok = AutoTokenizer.from_pretrained(target)
    ids = tok(["Job Title: Data Scientist", "Dear Hiring Manager, I am writing to apply"],
              return_tensors="pt", padding=True).input_ids
    merged = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    assert getattr(merged.config, "quantization_config", None) is None, "the merged model must load unquantized"

    def with_adapter(base):
        return _logits(PeftModel.from_pretrained(base, str(adapter_dir)).eval(), ids)

    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    base_logits = _logits(original, ids)
    on_original = with_adapter(original)  # (injects the adapter into ``original``)
    assert not torch.allclose(on_original, base_logits, atol=1e-3), "the test adapter should change the logits"
    rounded = nf4_round_trip(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval())
    on_rounded = with_adapter(rounded)
    assert not torch.allclose(on_rounded, on_original, atol=1e-3), "NF4 rounding should change the logits"
    torch.testing.assert_close(_logits(merged, ids), on_rounded if trained else on_original, atol=1e-4, rtol=1e-4)


def test_base_weights_resolution():
    from covertune.models.load import resolve_base_weights

    assert resolve_base_weights("auto", "nf4") == "trained"
    assert resolve_base_weights("auto", "int8") == "original"
    assert resolve_base_weights("auto", "none") == "original"
    assert resolve_base_weights("trained", "int8") == "trained"
    assert resolve_base_weights("trained", None) == "original"  # an unquantized base is its own original
    assert resolve_base_weights("original", "nf4") == "original"
    with pytest.raises(ValueError, match="base_weights"):
        resolve_base_weights("dequant", "nf4")


def test_merge_again_when_base_weights_change(tiny_model_dir, adapter_dir, tmp_path):
    cfg = MergeConfig(model=str(tiny_model_dir), out=str(tmp_path), adapter=str(adapter_dir), dtype="fp32",
                      base_weights="original")
    merge(cfg)
    assert "complete" in merge(cfg)
    cfg.base_weights = "trained"
    assert "wrote" in merge(cfg) and "nf4 dequantized" in merge(MergeConfig(**{**cfg.__dict__, "force": True}))


def test_merge_again_when_dtype_or_adapter_change(tiny_model_dir, adapter_dir, tmp_path):
    """A merged folder is never reused for another dtype, nor for an adapter retrained in the same place."""
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(adapter_dir, adapter)
    cfg = MergeConfig(model=str(tiny_model_dir), out=str(tmp_path), dtype="fp32", base_weights="original")
    assert "wrote" in merge(cfg) and "complete" in merge(cfg)
    cfg.dtype = "bf16"
    assert "wrote" in merge(cfg)
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["dtype"] == "bfloat16"
    assert "complete" in merge(cfg)
    import safetensors.torch

    # trained again: other weights at the same path
    weights = safetensors.torch.load_file(adapter / "adapter_model.safetensors")
    safetensors.torch.save_file({k: v * 2 for k, v in weights.items()}, adapter / "adapter_model.safetensors")
    assert "wrote" in merge(cfg)


def test_merge_skips_when_complete_and_redoes_with_force(tiny_model_dir, adapter_dir, tmp_path):
    cfg = MergeConfig(model=str(tiny_model_dir), out=str(tmp_path), adapter=str(adapter_dir), dtype="fp32")
    merge(cfg)
    assert "complete" in merge(cfg)
    cfg.force = True
    assert "wrote" in merge(cfg)


def test_merge_missing_adapter(tiny_model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="covertune train"):
        merge(MergeConfig(model=str(tiny_model_dir), out=str(tmp_path)))
