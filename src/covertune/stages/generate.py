"""Generate base and fine-tuned letters for a split and write ``eval.csv``.

The base pass runs the original base model. The fine-tuned pass runs a merged folder, or the adapter on
the base it learned against: for an NF4 adapter (``--base-weights auto``) the base quantized as in
training, dequantized and merged with the adapter in memory; otherwise the same loaded base with the
adapter switched on (it is switched off for the base pass). Prompts go through ``model.generate`` in
batches grouped by token length, left-padded with a pad token distinct from EOS; only the new tokens
are decoded and the letter is extracted from them. Every finished batch is appended to a journal
(``<out>/.generate/<split>.<model>.jsonl``), so an interrupted run resumes where it stopped;
``eval.csv`` is written atomically once every row is done.

With ``--candidates N`` every prompt of the fine-tuned pass (the base pass stays greedy: the untuned
baseline) gets the greedy letter and N-1 samples from one batched call (``--candidate-batch-size``
prompts per call), and one is chosen by ``--select`` (covertune.generation.select); each letter's candidates, their grounding failures
and MBR scores and the choice go to ``<out>/candidates/<split>.<model>.jsonl``. ``--select classifier-mbr``
also scores every candidate with the letter-quality classifier (``--classifier``, default
``<out>/classifier``; covertune.classify) and drops those below ``--classifier-threshold`` before MBR;
each candidate's score is recorded there as ``quality``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path

import torch

from covertune.classify.model import load_classifier
from covertune.config.build import validate
from covertune.config.stages import GenerateConfig
from covertune.core import distributed, io, limits, rundir
from covertune.core.prompt import prompt_ids, render_prompt
from covertune.core.records import EVAL_COLUMNS, MODEL_COLUMNS, TARGET_FIELD, inputs_of
from covertune.generation import engines
from covertune.generation.decoding import Decoding, model_device
from covertune.generation.letters import Journal, candidates_path, generate_letters, merge_parts, part_path, settings_hash
from covertune.generation.select import (
    candidate_batch, candidate_decoding, check_candidates, generate_chosen_letters, uses_candidates,
)
from covertune.models import adapter_check
from covertune.models import load as models
from covertune.models.letter_model import fine_tuned_weights, free_model, merged_adapter, resolve_format
from covertune.models.recipe import add_end_tokens, end_tokens_added

log = logging.getLogger(__name__)

MODEL_NAMES = tuple(MODEL_COLUMNS)  # ("base", "fine_tuned")
STATS_FILE = rundir.GENERATE_STATS


# ---------------------------------------------------------------- decoding settings


# ---------------------------------------------------------------- resume journal


# ---------------------------------------------------------------- batched generation


# ---------------------------------------------------------------- the stage


def _folder_identity(path: Path, hash_contents: bool) -> dict:
    """Name and contents of a model folder: full hashes for an adapter, sizes and times for a merged model."""
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".json") and p.is_file())
    if hash_contents:
        return {"path": str(path.resolve()), "files": {p.name: rundir.file_hash(p) for p in files}}
    return {"path": str(path.resolve()),
            "files": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}}


class PassModels:
    """The models of generate's two passes, each loaded when its pass first needs it, one in memory at a
    time: "base", the original base (a PeftModel when the adapter runs on it unmerged, switched off for
    the base pass), and "merged", the fine-tuned model as one set of weights (a merged folder, or the
    trained base + adapter merged here)."""

    def __init__(self, cfg: GenerateConfig, tokenizer, adapter: Path | None, merged: Path | None,
                 train_cfg: dict, adapter_on_base: bool):
        self.cfg, self.tokenizer, self.adapter, self.merged, self.train_cfg = cfg, tokenizer, adapter, merged, train_cfg
        self.adapter_on_base = adapter_on_base  # the adapter runs unmerged on the shared original base
        self.loaded: dict[str, object] = {}

    def model_for(self, which: str):
        """(model, context to generate in) for the pass ``which`` (base or fine_tuned)."""
        if self.cfg.engine == "llama.cpp":  # the pass's model as a GGUF file (covertune.generation.gguf_cache)
            return self._get(f"llama.cpp:{which}"), contextlib.nullcontext()
        if which == "fine_tuned" and not self.adapter_on_base:
            return self._get("merged"), contextlib.nullcontext()
        m = self._get("base")
        if which == "base" and self.adapter_on_base:
            return m, m.disable_adapter()
        if which == "fine_tuned":  # the adapter on the base: its recipe's end token for this pass only
            stack = contextlib.ExitStack()
            stack.enter_context(end_tokens_added(m, self.merged or self.adapter))
            if self.cfg.merge_adapter:
                stack.enter_context(merged_adapter(m))
            return m, stack
        return m, contextlib.nullcontext()

    def _get(self, name: str):
        if name not in self.loaded:
            self.close()  # the other model's memory goes first
            self.loaded[name] = self._load(name).eval()
        return self.loaded[name]

    def _load(self, name: str):
        cfg = self.cfg
        if name.startswith("llama.cpp:"):
            from covertune.generation.gguf_cache import load_pass_model

            return load_pass_model(cfg, name.split(":")[1] == "fine_tuned")
        if name == "merged":
            m = fine_tuned_weights(cfg, self.merged, self.adapter, self.train_cfg, self.tokenizer)
            add_end_tokens(m, self.merged or self.adapter)  # where the adapter's letters end (its recipe)
            return m
        log.info("loading %s", cfg.model)
        m = models.load_model(cfg.model, "none", cfg.dtype, tokenizer=self.tokenizer,
                              trust_remote_code=cfg.trust_remote_code)
        if self.adapter_on_base:
            log.info("loading the adapter %s", self.adapter)
            m = adapter_check.load_peft(m, self.adapter, cfg.model)
        return m

    def close(self) -> None:
        for name in list(self.loaded):
            free_model(self.loaded.pop(name))


def generate(cfg: GenerateConfig) -> str:
    validate(cfg)
    check_candidates(cfg)
    if cfg.engine == "continuous" and cfg.repetition_penalty != 1.0:  # refused before any model loads
        engines.resolve(cfg.engine, None, Decoding(repetition_penalty=cfg.repetition_penalty))
    out = rundir.check_out(cfg.out)
    output = rundir.output_path(out, cfg.output_file)
    split_path = rundir.split_path(out, cfg.split)
    records = rundir.read_split(out, cfg.split)
    if cfg.limit:
        records = records[:cfg.limit]
    if not records:
        raise ValueError(f"{split_path} has no rows")

    adapter, merged = rundir.fine_tuned_source(out, cfg.adapter, cfg.merged)
    if "fine_tuned" in cfg.models and adapter is None and merged is None:
        raise FileNotFoundError(f"no adapter at {rundir.adapter_dir(out)}: run `covertune train` first, pass "
                                "--adapter or --merged, or generate base letters only with --models base")
    if "fine_tuned" in cfg.models and (merged or adapter):  # before the base pass, not after it
        rundir.check_safetensors(merged or adapter)
    train_cfg = rundir.read_train_config(merged or adapter) if (merged or adapter) else {}
    if adapter is not None and "fine_tuned" in cfg.models:
        cfg = dataclasses.replace(cfg, model=adapter_check.base_model(cfg.model, train_cfg, adapter))
        adapter_check.check_weights(adapter)
    prompt_format = resolve_format(cfg, train_cfg)
    base_weights = (models.resolve_base_weights(cfg.base_weights, train_cfg.get("quantization"))
                    if adapter is not None and merged is None else None)
    decoding = Decoding(cfg.max_new_tokens, cfg.do_sample, cfg.temperature, cfg.top_p, cfg.top_k,
                        cfg.repetition_penalty, cfg.seed)

    dtype_name = str(models.compute_dtype(cfg.dtype)).replace("torch.", "")
    common = {"base_model": models.resolve_model(cfg.model), "dtype": dtype_name,
              "prompt_format": prompt_format, "decoding": decoding.identity()}
    if cfg.engine == "llama.cpp":  # another engine's letters
        common["engine"] = {"name": "llama.cpp", "quant": cfg.gguf_quant}
    classifier, classifier_path = None, None
    tuned: dict = {}  # the fine-tuned pass's own settings: candidates are for its letters only
    if cfg.candidates > 1:
        tuned["candidates"] = {"n": cfg.candidates, "select": cfg.select,
                               "repetition_weight": cfg.select_repetition_weight,
                               # only when set: the journals and keys of runs without it stay as they were
                               **({"skills_weight": cfg.select_skills_weight} if cfg.select_skills_weight else {}),
                               "sampling": candidate_decoding(cfg).identity(),
                               # each row's draws from its own seed (covertune.generation.seeded_sampling): the batch
                               # composition and the processes no longer change them
                               "draws": "per-row seed"}
        if cfg.select == "classifier-mbr":  # loaded (and checked) before any model
            classifier, classifier_path = load_classifier(cfg.classifier, out)
            tuned["candidates"].update(classifier=rundir.file_hash(classifier_path),
                                       classifier_threshold=cfg.classifier_threshold)
    processes, main = distributed.world_size(), distributed.is_main()
    if processes > 1:
        distributed.state()  # join the process group before the first barrier
    if cfg.do_sample:
        common["batch_size"] = cfg.batch_size  # batch composition changes the random draws
        if processes > 1:  # and so does each process's share of the rows
            common["processes"] = processes
    settings = {"base": {**common, "model": "base"}}
    if "fine_tuned" in cfg.models:
        source = ({"merged": _folder_identity(merged, hash_contents=False)} if merged
                  else {"adapter": _folder_identity(adapter, hash_contents=True), "base_weights": base_weights,
                        "merge_adapter": cfg.merge_adapter})
        settings["fine_tuned"] = {**common, **tuned, "model": "fine_tuned", **source}
    # the letter form is applied to the chosen letters after the journal: a run of another form reuses
    # the journal's letters, and writes its own eval.csv
    form_key = {"form": cfg.form} if cfg.form != "auto" and "fine_tuned" in cfg.models else {}
    run_key = settings_hash({"models": {m: settings[m] for m in cfg.models}, "split": cfg.split,
                             "limit": cfg.limit, "data": rundir.file_hash(split_path), **form_key})

    info = rundir.stage_info(out, "generate")
    if not cfg.force and info is not None and output.exists():
        if info.get("key") == run_key and info.get("output_file") == cfg.output_file:
            if "fine_tuned" in cfg.models and not rundir.recipe_path(out).exists():  # a run from before recipes
                from covertune.models.recipe import write_recipe

                write_recipe(out, cfg, prompt_format)
            return f"generate: {output} is complete (use --force to generate again)"

    with distributed.main_first():  # the embedded model is converted once, by the main process
        tokenizer = models.load_tokenizer(cfg.model, padding_side="left", trust_remote_code=cfg.trust_remote_code)
    inputs = [prompt_ids(r, tokenizer, prompt_format) for r in records]
    limits.check_context([len(ids) for ids in inputs], [r.get("id", i) for i, r in enumerate(records)],
                         models.context_length(str(merged) if merged else cfg.model), cfg.max_new_tokens,
                         source=str(split_path))
    journal_dir = out / ".generate"

    passes = PassModels(cfg, tokenizer, adapter, merged, train_cfg,
                        adapter_on_base="fine_tuned" in cfg.models and base_weights == "original")
    outputs: dict[str, list[str]] = {}
    stats: dict[str, dict] = {}
    choices: dict[str, list[dict]] = {}  # with --candidates: each letter's candidates and choice
    for which in cfg.models:
        # the journal holds every finished row; under several processes each one appends its rows to its
        # own part beside it, and the main process merges the parts into it (also those an interrupted
        # multi-process run left behind)
        path = journal_dir / f"{cfg.split}.{which}.jsonl"
        if main:
            merge_parts(path, settings[which], fresh=cfg.force)
        distributed.barrier()
        done = Journal(path, settings[which], readonly=True)
        pending = [i for i, p in enumerate(inputs) if done.lookup(i, p) is None]
        share = distributed.split(pending)  # this process's rows (all of them in one process)
        st: dict = dict(letters=0, resumed=0, new_tokens=0, seconds=0.0)
        device = engine_used = None
        if share:
            own = path if processes == 1 else part_path(path, distributed.rank())
            with Journal(own, settings[which], fresh=processes > 1) as journal:
                model, ctx = passes.model_for(which)
                with ctx:
                    if uses_candidates(cfg, which):
                        generate_chosen_letters(
                            model, tokenizer, inputs, [inputs_of(r) for r in records], cfg.candidates, cfg.select,
                            candidate_decoding(cfg), candidate_batch(cfg), journal=journal, stats=st, desc=which,
                            classifier=classifier, threshold=cfg.classifier_threshold,
                            repetition_weight=cfg.select_repetition_weight, progress=main,
                            indices=share, skills_weight=cfg.select_skills_weight)
                    else:
                        generate_letters(model, tokenizer, inputs, cfg.batch_size, decoding, journal=journal,
                                         stats=st, desc=which, engine=cfg.engine, progress=main, indices=share)
                if getattr(model, "is_llamacpp", False):
                    device, engine_used = "cpu", f"llama.cpp ({cfg.gguf_quant})"
                else:
                    device = model_device(model)
                    # --candidates writes every prompt's candidates in one plain model.generate call
                    engine_used = "plain" if uses_candidates(cfg, which) else engines.resolve(cfg.engine, model,
                                                                                              decoding)
                    device = (f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda"
                              else str(device))
                model = None  # so that freeing the base before the merged model's pass frees its memory
        shares = distributed.gather({**st, "device": device, "engine": engine_used})  # also a barrier
        if not main:
            continue
        merge_parts(path, settings[which])
        with Journal(path, settings[which], readonly=True) as journal:
            rows = [journal.lookup(i, p) for i, p in enumerate(inputs)]
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            raise RuntimeError(f"generate: {len(missing)} row(s) of {cfg.split} have no letter after the pass "
                               f"{which} (first: row {missing[0]}); run the same command again to write them")
        outputs[which] = [row["output"] for row in rows]
        if which == "fine_tuned" and cfg.form != "auto":
            from covertune.generation.letter_form import apply_form

            outputs[which] = [apply_form(text, cfg.form, inputs_of(r)) for text, r in zip(outputs[which], records)]
        if uses_candidates(cfg, which):
            choices[which] = [{"index": i, "id": r.get("id"), **row["choice"]}
                              for i, (r, row) in enumerate(zip(records, rows))]
        secs = max(sh["seconds"] for sh in shares)  # the processes ran side by side
        letters = sum(sh["letters"] for sh in shares)
        new_tokens = sum(sh["new_tokens"] for sh in shares)
        devices = sorted({sh["device"] for sh in shares if sh["device"]})
        stats[which] = {"letters": letters, "resumed": len(inputs) - len(pending), "new_tokens": new_tokens,
                        "seconds": secs, "letters_per_s": round(letters / secs, 3) if secs else None,
                        "tokens_per_s": round(new_tokens / secs, 1) if secs else None,
                        "batch_size": candidate_batch(cfg) if uses_candidates(cfg, which) else cfg.batch_size,
                        "processes": processes,
                        "device": ", ".join(devices) if devices else None,
                        "dtype": f"gguf {cfg.gguf_quant}" if cfg.engine == "llama.cpp" else dtype_name,
                        "engine": next((sh["engine"] for sh in shares if sh["engine"]), None),
                        "max_new_tokens": cfg.max_new_tokens}
        if processes > 1:
            stats[which]["per_process"] = shares
        if letters:
            log.info("%s: %d letters, %d new tokens in %.1f s (%.2f letters/s, %.0f tokens/s)%s", which,
                     letters, new_tokens, secs, stats[which]["letters_per_s"] or 0,
                     stats[which]["tokens_per_s"] or 0, f" on {processes} processes" if processes > 1 else "")
    passes.close()
    if not main:
        distributed.barrier()  # until the main process has written the outputs
        return f"generate: process {distributed.rank()} of {processes} wrote its share; the main process wrote {output}"

    import pandas as pd

    frame = pd.DataFrame({
        "prompt": [render_prompt(r) for r in records],
        "ground_truth": [str(r.get("cover_letter_raw") or r.get(TARGET_FIELD) or "").strip() for r in records],
        **{MODEL_COLUMNS[m]: outputs.get(m, [""] * len(records)) for m in MODEL_NAMES},
    }, columns=list(EVAL_COLUMNS))
    io.write_csv(output, frame)
    for which in cfg.models:
        side = candidates_path(out, cfg.split, which)
        if which in choices:
            io.write_jsonl(side, choices[which])
        elif side.exists():  # from an earlier run with --candidates: not these letters
            side.unlink()
    io.write_json(out / STATS_FILE, stats)
    if "fine_tuned" in cfg.models:
        from covertune.models.recipe import write_recipe

        write_recipe(out, cfg, prompt_format)
    rundir.mark_done(out, "generate", {"key": run_key, "output_file": cfg.output_file, "rows": len(records),
                                   "split": cfg.split, "models": list(cfg.models),
                                   "prompt_format": prompt_format, "stats": stats,
                                   "candidates": cfg.candidates, "select": cfg.select if cfg.candidates > 1 else None})
    distributed.barrier()  # the other processes end once the outputs are written
    missing = [m for m in MODEL_NAMES if m not in cfg.models]
    note = f"; {', '.join(MODEL_COLUMNS[m] for m in missing)} left empty" if missing else ""
    return f"generate: wrote {output} ({len(records)} rows, {', '.join(cfg.models)}, {prompt_format} prompts){note}"
