"""An adapter runs on the base it was trained on: the trained base by default, one line for a mismatch
(another model named, other shapes) and for weights that are not finite, before any letter is written."""

from __future__ import annotations

import json
import shutil

import pytest

from covertune.cli import main
from covertune.config.stages import GenerateConfig, MergeConfig
from covertune.models.letter_model import load_letter_model
from conftest import make_tiny_llama


@pytest.fixture(scope="module")
def two_bases(tiny_model_dir, tmp_path_factory):
    """Base A (the tiny Llama) and base B (the same tokenizer, other shapes: hidden 32, 1 layer)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    b = tmp_path_factory.mktemp("base-b")
    make_tiny_llama(tokenizer, seed=3, layers=1, hidden=32).save_pretrained(b)
    tokenizer.save_pretrained(b)
    return tiny_model_dir, b


@pytest.fixture
def adapter_on_a(two_bases, make_tiny_adapter, tmp_path):
    return make_tiny_adapter(two_bases[0], tmp_path / "adapter", quantization="none")


def one_line_error(argv, capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1, err
    return err[0]


def test_the_trained_base_is_used_unless_told_otherwise(two_bases, adapter_on_a):
    a, _ = two_bases
    lm = load_letter_model(GenerateConfig(adapter=str(adapter_on_a), out="", dtype="fp32"))  # --model left at its default
    assert str(a) in lm.source
    assert lm.model.config.hidden_size == 64


def test_the_base_is_read_from_adapter_config_without_a_train_config(two_bases, adapter_on_a):
    (adapter_on_a / "covertune_train.json").unlink()
    config = json.loads((adapter_on_a / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(two_bases[0])
    lm = load_letter_model(GenerateConfig(adapter=str(adapter_on_a), out="", dtype="fp32"))
    assert str(two_bases[0]) in lm.source


def test_another_model_named_is_one_line_naming_both(two_bases, adapter_on_a, capsys, tmp_path):
    a, b = two_bases
    msg = one_line_error(["write", "--model", str(b), "--adapter", str(adapter_on_a), "--job-title", "Welder",
                          "--dtype", "fp32"], capsys)
    assert str(a) in msg and str(b) in msg and "trained on" in msg
    msg = one_line_error(["merge", "--model", str(b), "--adapter", str(adapter_on_a), "--out", str(tmp_path / "run")],
                         capsys)
    assert str(a) in msg and str(b) in msg


def test_a_shape_mismatch_is_one_line_naming_both(two_bases, adapter_on_a, tmp_path, capsys):
    """The base folder the adapter names now holds another model (B's shapes)."""
    a, b = two_bases
    moved = tmp_path / "base-a"
    shutil.copytree(a, moved)
    for f in moved.glob("*.safetensors"):
        f.unlink()
    for f in b.glob("*"):
        shutil.copy(f, moved / f.name)
    train = json.loads((adapter_on_a / "covertune_train.json").read_text())
    (adapter_on_a / "covertune_train.json").write_text(json.dumps({**train, "model": str(moved)}))
    msg = one_line_error(["write", "--adapter", str(adapter_on_a), "--job-title", "Welder", "--dtype", "fp32"], capsys)
    assert str(moved) in msg and str(adapter_on_a) in msg and "shape" in msg
    msg = one_line_error(["merge", "--adapter", str(adapter_on_a), "--out", str(tmp_path / "run")], capsys)
    assert "shape" in msg


@pytest.mark.parametrize("value,dtype", [(float("nan"), "float32"), (float("inf"), "float32"),
                                         (float("-inf"), "bfloat16"), (float("nan"), "float16")])
def test_non_finite_adapter_weights_are_refused(adapter_on_a, value, dtype, capsys, tmp_path):
    """A NaN or infinity in an fp32, bf16 (the shipped model's type) or fp16 adapter file."""
    import torch
    from safetensors.torch import load_file, save_file

    path = adapter_on_a / "adapter_model.safetensors"
    tensors = {k: v.to(getattr(torch, dtype)) for k, v in load_file(path).items()}
    name = sorted(tensors)[-1]
    tensors[name][-1, -1] = value
    save_file(tensors, path)
    msg = one_line_error(["write", "--adapter", str(adapter_on_a), "--job-title", "Welder", "--dtype", "fp32"], capsys)
    assert name in msg and "adapter_model.safetensors" in msg and "finite" in msg
    with pytest.raises(ValueError, match="finite"):
        from covertune.models.merge import merged_model

        merged_model(MergeConfig(adapter=str(adapter_on_a), out=str(tmp_path), dtype="fp32"))


def test_finite_weights_of_every_float_type_pass(adapter_on_a):
    """Large, small and zero values in fp32, bf16 and fp16 are not mistaken for infinities."""
    import torch
    from safetensors.torch import load_file, save_file

    from covertune.models.adapter_check import check_weights

    path = adapter_on_a / "adapter_model.safetensors"
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        tensors = {k: v.to(dtype) for k, v in load_file(path).items()}
        name = sorted(tensors)[0]
        tensors[name][0, :3] = torch.tensor([torch.finfo(dtype).max, -torch.finfo(dtype).tiny, 0.0])
        save_file(tensors, path)
        check_weights(adapter_on_a)
