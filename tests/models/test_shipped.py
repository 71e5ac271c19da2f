"""covertune.models.shipped: the shipped model's files match its manifest, it loads on the embedded base, and
`covertune write` uses it (with its recipe) when no model is named; `covertune models` lists it. Where this
checkout has no shipped model yet, a tiny stand-in LoRA for the embedded base is built in the same layout."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from covertune.models import shipped
from covertune.cli import main
from covertune.config.stages import GenerateConfig
from covertune.config.build import build
from covertune.models.recipe import read_recipe
from covertune.stages.write import write

REAL = shipped.shipped_model_dir(shipped.DEFAULT_MODEL)


def _stand_in(root):
    """A shipped-model folder: a random LoRA (r=2 on q_proj) for the embedded base, a card, a recipe and
    the manifest of their hashes."""
    import torch
    from peft import LoraConfig, get_peft_model

    from covertune.models.load import load_model, load_tokenizer

    folder = root / shipped.DEFAULT_MODEL
    torch.manual_seed(0)
    base = load_model("embedded", "none", "fp32", tokenizer=load_tokenizer("embedded"))
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(base, lora).save_pretrained(folder)
    (folder / "README.md").write_text("# stand-in\n\n## Test figures\n\n| ROUGE-L | 0.0 |\n")
    (folder / "recipe.json").write_text(json.dumps({"candidates": 2, "select": "grounded-mbr", "seed": 1,
                                                    "candidate_temperature": 0.7, "candidate_top_p": 0.95,
                                                    "max_new_tokens": 6, "prompt_format": "raw",
                                                    "base_model": "embedded"}))
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}
    (folder / "manifest.json").write_text(json.dumps({"files": files}))
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The real shipped model where it exists, else the stand-in."""
    if shipped.is_model(REAL):
        return REAL
    return _stand_in(tmp_path_factory.mktemp("shipped"))


@pytest.fixture
def installed(model_dir, monkeypatch):
    monkeypatch.setattr(shipped, "shipped_root", lambda: model_dir.parent)
    return model_dir


@pytest.mark.skipif(not shipped.is_model(REAL), reason=f"no shipped model in this checkout yet ({REAL})")
def test_shipped_files_match_the_manifest():
    assert shipped.verify(REAL) == []
    assert sum(p.stat().st_size for p in REAL.iterdir()) < 13e6


def test_verify_finds_a_changed_file(model_dir, tmp_path):
    copy = shutil.copytree(model_dir, tmp_path / "copy")
    assert shipped.verify(copy) == []
    (copy / "recipe.json").write_text((copy / "recipe.json").read_text() + " ")
    assert shipped.verify(copy) == ["recipe.json: sha256 differs from manifest.json"]


def test_loads_on_the_embedded_base(model_dir):
    from covertune.models.letter_model import load_letter_model

    lm = load_letter_model(GenerateConfig(model="embedded", out="", adapter=str(model_dir), dtype="fp32"))
    assert f"adapter {model_dir}" in lm.source


def test_write_uses_the_shipped_model_by_default(installed, capsys):
    fields = {"job_title": "Data Analyst", "hiring_company": "Acme Corp", "applicant_name": "Jane Doe",
              "skillsets": "SQL, Python"}
    # the recipe's candidates and seed; a short letter (an explicit option wins over the recipe)
    cfg = build("write", {**fields, "json": True, "max_new_tokens": 6})
    out = json.loads(write(cfg))
    assert str(installed) in out["model"] and cfg.adapter == str(installed)
    recipe = read_recipe(installed)
    assert len(out["candidates"]["candidates"]) == recipe["candidates"] and cfg.seed == recipe["seed"]
    assert cfg.select_skills_weight == recipe["select_skills_weight"] == 0.2  # the selection chosen on validation
    assert out["form"] == "full" and out["letter"].lower().startswith("dear")  # its own greeting, or completed
    assert out["letter"].rstrip().endswith("Jane Doe")
    bare = json.loads(write(build("write", {**fields, "json": True, "max_new_tokens": 6, "model": "embedded"})))
    assert bare["model"].split(" (")[0] == "embedded" and "candidates" not in bare  # " (llama.cpp, q8_0)": the engine
    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    assert listed.startswith(f"{shipped.DEFAULT_MODEL} (default)") and "base: embedded" in listed
    assert "candidates=" in listed and str(installed) in listed


def test_no_shipped_model(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(shipped, "shipped_root", lambda: tmp_path)
    assert shipped.default_model_dir() is None
    assert main(["models"]) == 0
    assert "no fine-tuned model ships in this install" in capsys.readouterr().out
