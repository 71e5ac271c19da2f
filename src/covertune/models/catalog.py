"""``covertune models``: what ships with covertune (covertune.models.shipped), each model with its base,
size, recipe (covertune.models.recipe) and the test figures of its card."""

from __future__ import annotations

import json

from covertune.models.recipe import read_recipe
import re

from covertune.models.shipped import CARD, DEFAULT_MODEL, shipped_model_dir, shipped_models, shipped_root


def _card_figures(card: str) -> list[str]:
    """The card's test figures: the lines of its first section whose heading names test results."""
    lines = card.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("#") and re.search(r"\b(test|results?|evaluation|figures)\b", line, re.I):
            body = []
            for nxt in lines[i + 1:]:
                if nxt.startswith("#"):
                    break
                body.append(nxt)
            return [b for b in body if b.strip()]
    return []


def describe(name: str) -> dict:
    """What ``covertune models`` shows of a shipped model: base, size, recipe, the card's test figures."""
    folder = shipped_model_dir(name)
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    raw = json.loads((folder / "recipe.json").read_text(encoding="utf-8")) if (folder / "recipe.json").is_file() else {}
    base = raw.get("base_model") or raw.get("model") or config.get("base_model_name_or_path") or "?"
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    card = (folder / CARD).read_text(encoding="utf-8") if (folder / CARD).is_file() else ""
    return {"name": name, "default": name == DEFAULT_MODEL, "base": base, "folder": str(folder),
            "size_bytes": size, "lora_r": config.get("r"), "recipe": read_recipe(folder),
            "test_figures": _card_figures(card)}


def models_text() -> str:
    """``covertune models``: each shipped model, or a line saying none ships in this install."""
    names = shipped_models()
    if not names:
        return f"no fine-tuned model ships in this install ({shipped_root()}); write and serve use the base model"
    blocks = []
    for name in names:
        d = describe(name)
        recipe = ", ".join(f"{k}={v}" for k, v in d["recipe"].items()) or "none (the options' defaults)"
        lines = [f"{d['name']}{' (default)' if d['default'] else ''}",
                 f"  base: {d['base']}", f"  size: {d['size_bytes'] / 1e6:.1f} MB (LoRA r={d['lora_r']})",
                 f"  recipe: {recipe}", f"  folder: {d['folder']}"]
        if d["test_figures"]:
            lines += ["  test figures (model card):"] + [f"    {x}" for x in d["test_figures"]]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
