"""The compute dtype chosen for ``auto``: bf16 on a CPU only where it computes bf16 in hardware."""

from __future__ import annotations

import torch

from covertune import models


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
