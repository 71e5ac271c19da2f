"""models: the compute dtype chosen for ``auto`` (bf16 on a CPU only where it computes bf16 in hardware), how a
model name is resolved (embedded, a local folder with or without ./, a hub id) and the one-line errors for
what cannot be loaded."""

from __future__ import annotations

import shutil

import pytest
import torch

from covertune.models import load as models


def test_cpu_bf16_from_torch_capabilities():
    assert models.cpu_has_native_bf16({"avx512_bf16": True, "amx_bf16": False}, flags=set())
    assert models.cpu_has_native_bf16({"avx512_bf16": False, "amx_bf16": True}, flags=set())
    # torch's answer wins over the flags when it has one
    assert not models.cpu_has_native_bf16({"avx512_bf16": False, "amx_bf16": False, "avx512_f": True},
                                          flags={"avx512_bf16"})


def test_cpu_bf16_from_cpuinfo_flags_when_torch_has_no_check():
    assert models.cpu_has_native_bf16({}, flags={"avx2", "avx512f", "avx512_bf16"})
    assert models.cpu_has_native_bf16({}, flags={"avx2", "amx_tile", "amx_bf16"})
    assert not models.cpu_has_native_bf16({}, flags={"avx2", "avx512f", "avx512bw", "avx512_vnni"})


def test_cpuinfo_flags_parsed(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 avx512_bf16 amx_tile\n\n")
    assert models._cpuinfo_flags(str(info)) == {"fpu", "avx2", "avx512_bf16", "amx_tile"}
    assert models._cpuinfo_flags(str(tmp_path / "missing")) == set()


def test_auto_on_cpu_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(models, "has_cuda", lambda: False)
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: True)
    assert models.compute_dtype("auto") is torch.bfloat16
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: False)
    assert models.compute_dtype("auto") is torch.float32
    assert models.compute_dtype("bf16") is torch.bfloat16  # a named dtype is kept


def test_this_machine_is_read_consistently():
    flags = models._cpuinfo_flags()
    if flags:  # Linux: torch's check and the kernel's flags agree on this CPU
        assert models.cpu_has_native_bf16() == any(f in flags for f in models.CPU_BF16_FLAGS)


def test_a_relative_folder_without_dot_slash_is_local(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "mine")
    assert models.resolve_model("models/mine") == "models/mine"  # 'namespace/name' shaped, but here
    tok = models.load_tokenizer("models/mine")
    model = models.load_model("models/mine", "none", "fp32", tokenizer=tok, device="cpu")
    assert model.config.vocab_size == len(tok)


def test_a_missing_path_is_a_missing_folder_not_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("runs/x/merged", "./mine", str(tmp_path / "nowhere")):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            models.resolve_model(name)


def test_a_pickle_only_folder_is_refused(tiny_model_dir, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, folder / name)
    torch.save({"w": torch.zeros(2)}, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="safetensors only") as err:
        models.load_model(str(folder), "none", "fp32")
    assert "\n" not in str(err.value) and "pytorch_model.bin" in str(err.value)


def test_a_name_the_hub_cannot_serve_is_one_line(tmp_path, monkeypatch):
    """Offline (as here) or a typo online: one line naming the model, never the hub's traceback. The hub is
    switched to offline mode, as on a machine without a network, so that no connection attempt waits."""
    import huggingface_hub.constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError) as err:
        models.load_tokenizer("covertune-no-such-model")
    message = str(err.value)
    assert message.startswith("model 'covertune-no-such-model': no folder") and "\n" not in message
