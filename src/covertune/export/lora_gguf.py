"""A PEFT LoRA adapter alone as a GGUF LoRA: llama.cpp's ``--lora`` and Ollama's ``ADAPTER`` apply it to the
base model's GGUF at load time, so one base file serves several fine-tunes.

What llama.cpp reads (its own ``convert_lora_to_gguf.py`` writes the same): ``general.type`` "adapter",
``adapter.type`` "lora", ``adapter.lora.alpha``, the base's architecture, and per adapted matrix
``<gguf name>.lora_a`` (r x in) and ``<gguf name>.lora_b`` (out x r), the base tensor's GGUF name with the
q and k projections' output rows permuted as the base's rows are (``permute_rotary`` of B permutes B @ A).
llama.cpp scales each pair by alpha / r (r read from the tensors), so the alpha written is PEFT's scaling
times r (rank-stabilized LoRA's alpha / sqrt(r) included). The tensors are written in f32.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np

from covertune.export.gguf_llama import ARCHITECTURES, hparams, permute_rotary

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _adapter_tensors(adapter: Path) -> dict:
    from safetensors.numpy import load_file

    weights = adapter / "adapter_model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"{adapter} has no adapter_model.safetensors; GGUF LoRA export reads safetensors only")
    return load_file(str(weights))


def lora_plan(adapter: Path, config) -> tuple[float, list[tuple[str, np.ndarray, np.ndarray]]]:
    """(scaling, [(base GGUF tensor name, A, B)]) of a PEFT LoRA adapter on a Llama ``config``; a clear error
    for what a GGUF LoRA cannot hold."""
    lcfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    if lcfg.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"a {lcfg.get('peft_type')} adapter cannot be written as a GGUF LoRA (LoRA only)")
    if lcfg.get("use_dora"):
        raise ValueError("a DoRA adapter cannot be written as a GGUF LoRA; use --format gguf (merged)")
    if lcfg.get("rank_pattern") or lcfg.get("alpha_pattern"):
        raise ValueError("an adapter with per-module ranks or alphas cannot be written as one GGUF LoRA "
                         "(one alpha per file); use --format gguf (merged)")
    if lcfg.get("modules_to_save"):
        raise ValueError(f"the adapter also trains whole modules ({', '.join(lcfg['modules_to_save'])}), which a "
                         "GGUF LoRA cannot hold; use --format gguf (merged)")
    if lcfg.get("lora_bias"):
        raise ValueError("an adapter with LoRA biases cannot be written as a GGUF LoRA; use --format gguf (merged)")
    r, alpha = int(lcfg["r"]), float(lcfg["lora_alpha"])
    scaling = alpha / (r ** 0.5 if lcfg.get("use_rslora") else r)
    hp = hparams(config)
    tmap = gguf.get_tensor_name_map(ARCHITECTURES["llama"], hp["block_count"])
    tensors = _adapter_tensors(adapter)
    plan = []
    for name_a in sorted(k for k in tensors if k.endswith(".lora_A.weight")):
        module = name_a[: -len(".lora_A.weight")]
        name_b = module + ".lora_B.weight"
        if module.rsplit(".", 1)[-1] not in PROJECTIONS or name_b not in tensors:
            raise ValueError(f"adapter tensor {name_a}: only LoRA on the attention and MLP projections "
                             f"({', '.join(PROJECTIONS)}) can be written as a GGUF LoRA; use --format gguf (merged)")
        if "layers." not in module:
            raise ValueError(f"adapter tensor {name_a} is not in a decoder layer; use --format gguf (merged)")
        hf_name = "model." + module[module.index("layers."):] + ".weight"  # PEFT's base_model.model. prefix off
        g_name = tmap.get_name(hf_name, try_suffixes=(".weight",))
        if g_name is None:
            raise ValueError(f"adapter tensor {name_a} ({hf_name}) has no GGUF name in the llama architecture")
        a = tensors[name_a].astype(np.float32)
        b = tensors[name_b].astype(np.float32)
        if g_name.endswith("attn_q.weight"):
            b = permute_rotary(b, hp["head_count"])
        elif g_name.endswith("attn_k.weight"):
            b = permute_rotary(b, hp["head_count_kv"])
        plan.append((g_name, a, b))
    extra = [k for k in tensors if not k.endswith((".lora_A.weight", ".lora_B.weight"))]
    if extra:
        raise ValueError(f"adapter tensor {extra[0]} is not a LoRA matrix a GGUF LoRA can hold; use --format gguf")
    if not plan:
        raise ValueError(f"{adapter} holds no LoRA matrices")
    return scaling, plan


def write_lora_gguf(path: Path, adapter: Path, config, name: str = "") -> dict:
    """The adapter in ``adapter`` (PEFT, safetensors) for a base with ``config``, as a GGUF LoRA in ``path``."""
    from covertune.export.gguf_llama import check_architecture

    arch = check_architecture(config, str(adapter))
    scaling, plan = lora_plan(adapter, config)
    writer = gguf.GGUFWriter(str(path), arch)
    try:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        ranks = {a.shape[0] for _, a, _ in plan}
        if len(ranks) != 1:
            raise ValueError(f"the adapter's matrices have several ranks ({sorted(ranks)}); one alpha cannot scale them")
        rank = ranks.pop()
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, scaling * rank)
        writer.add_name(name or "covertune adapter")
        writer.add_finetune("covertune")
        for g_name, a, b in plan:
            writer.add_tensor(g_name + ".lora_a", a)
            writer.add_tensor(g_name + ".lora_b", b)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return {"architecture": arch, "tensors": 2 * len(plan), "rank": rank, "alpha": scaling * rank,
            "modules": sorted({g.split(".", 2)[-1].rsplit(".", 1)[0] for g, _, _ in plan})}
