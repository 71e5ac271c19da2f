"""covertune prefer: preference tuning for grounding after SFT, with TRL's DPOTrainer.

``prefer(cfg)`` reads top to bottom:

1. Pairs from the SFT model's own letters, on the training split only (never validation or test: rows
   whose id or inputs are also in a held-out split are skipped, and the pairs are checked once more
   before training). For every training prompt the SFT model, loaded as ``covertune generate`` loads
   it, writes K candidates in one batched call (covertune.generation.select: the greedy letter and K-1 samples).
   Each candidate gets the grounding check (select.grounding_failures) and its ROUGE-L F1 against the
   training letter. ``make_pair`` then picks:

   - chosen: the candidate that passes the check (no unsupported number or organisation; the applicant's
     name and the hiring company there where the training letter has them) with the best ROUGE-L to the
     training letter; with ``chosen_fallback ground_truth``, when none passes, the training letter itself, if it
     passes the check (some training letters hold numbers their inputs do not support);
   - rejected: a candidate with invented facts (an unsupported number or organisation; ``reject any``
     also takes a letter missing the name or the company), the one closest to the chosen letter
     (ROUGE-L), so that the pair differs in little besides the invented facts.

   A row without both gives no pair and is counted by reason. Every row's candidates go to a journal
   (``<out>/.prefer/samples.jsonl``) batch by batch, keyed by the fingerprint of the SFT adapter, the
   training split and the sampling settings: an interrupted stage resumes; a changed adapter or sampling
   setting samples afresh; a changed pair rule (``reject``, ``chosen_fallback``) is applied to the
   samples kept. The pairs are written to ``<out>/preference/pairs.jsonl``, every sampled row's
   candidates with their failures and ROUGE-L and its outcome to ``choices.jsonl``.

2. Training: the SFT adapter itself continues training (PeftModel loaded trainable on the base,
   quantized as SFT trained it) with TRL's DPOTrainer; the reference model is the SFT adapter, kept as
   TRL's frozen "ref" copy of the adapter. Prompts are ``covertune.core.prompt.prompt_ids`` and letters
   ``letter_ids`` + EOS, cut at ``max_length`` as covertune.training.sft_data cuts them, so preference training
   sees exactly the ids generate feeds (TRL's own text tokenization is not used).

3. ``<out>/preference_adapter/``: the adapter (written whole, atomically), the tokenizer and
   covertune_train.json (the SFT record, which generate, write and serve read for the prompt format and
   base weights, plus a "preference" entry); ``<out>/preference/summary.json`` (pairs, skips by reason,
   the chosen-minus-rejected log-probability margin on the pairs before and after) and
   ``train_log.jsonl``. Use it with ``--adapter <out>/preference_adapter``.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

import torch

from covertune.config.build import to_dict, validate
from covertune.config.options import EMBEDDED_MODEL
from covertune.config.stages import GenerateConfig, PreferConfig
from covertune.core import io, limits, rundir
from covertune.core.progress import is_terminal
from covertune.core.prompt import extract_letter, prompt_ids, letter_ids
from covertune.core.records import ID_FIELD, inputs_of
from covertune.core.versions import versions
from covertune.generation.decoding import Decoding
from covertune.generation.letters import Journal, ids_sha
from covertune.generation.select import generate_candidate_ids, grounding_failures
from covertune.metrics.rouge import rouge_l
from covertune.models import load as models
from covertune.models.card import preference_card
from covertune.models.letter_model import free_model, load_letter_model
from covertune.training.sft_data import letter_of
from covertune.training.train_log import JsonlLogger
from covertune.training.trainer import checkpointing_args

log = logging.getLogger(__name__)

INVENTED = ("unsupported number", "unsupported organisation")
SAMPLES_JOURNAL = Path(".prefer") / "samples.jsonl"
PAIRS_FILE = "pairs.jsonl"
CHOICES_FILE = "choices.jsonl"  # every sampled row: its candidates, their failures and ROUGE-L, the outcome
SUMMARY_FILE = "summary.json"
LOG_FILE = "train_log.jsonl"
# options that do not change the pairs (they shape training only)
TRAINING_OPTIONS = ("loss", "beta", "sft_weight", "epochs", "max_steps", "batch_size", "grad_accum", "learning_rate",
                    "lr_scheduler", "warmup_ratio", "max_length", "gradient_checkpointing", "max_pairs")
NOT_IN_FINGERPRINT = ("out", "force", "trust_remote_code", "logging_steps", "gradient_checkpointing")


# ---------------------------------------------------------------- the pair rule


def invents(failures: Sequence[str]) -> bool:
    """Whether grounding failures name an invented fact (a number or organisation the inputs lack)."""
    return any(f.startswith(INVENTED) for f in failures)


FORM = ("applicant name missing", "hiring company missing")  # failures the letter's form may excuse


def pair_failures(letter: str, inputs: dict[str, str], excused: Sequence[str] = ()) -> list[str]:
    """The grounding check's failures of a letter (select.grounding_failures) less the ``excused`` ones."""
    return [f for f in grounding_failures(letter, inputs) if f not in excused]


def make_pair(record: dict, candidates: Sequence[str], reject: str = "invented",
              chosen_fallback: str = "none") -> dict:
    """The pair a training row gives from its candidates (module docstring, step 1): ``chosen``,
    ``rejected``, ``chosen_from`` (a candidate's index or "ground_truth"), ``rejected_index`` and
    ``rejected_failures``; or ``skip`` (why there is none). Always ``candidates``: each one's letter,
    grounding failures and ROUGE-L to the training letter.

    The applicant's name and the hiring company are required where the training letter has them: a
    body-only training letter has no name (it ends before a signature), and a candidate in that form is
    not wrong for lacking it; so the pairs teach facts, not a change of the letter's form."""

    if reject not in ("invented", "any") or chosen_fallback not in ("none", "ground_truth"):
        raise ValueError(f"reject must be invented or any and chosen_fallback none or ground_truth; got "
                         f"{reject!r}, {chosen_fallback!r}")
    inputs, truth = inputs_of(record), letter_of(record)
    excused = [f for f in grounding_failures(truth, inputs) if f in FORM] if truth else []
    failures = [pair_failures(c, inputs, excused) for c in candidates]
    rouge = [rouge_l(truth, c) if c.strip() and truth else 0.0 for c in candidates]
    out: dict = {"excused": excused,
                 "candidates": [{"letter": c, "failures": f, "rouge_l": round(r, 6)}
                                for c, f, r in zip(candidates, failures, rouge)]}
    grounded = [k for k, f in enumerate(failures) if not f]
    if grounded:
        pick = max(grounded, key=lambda k: (rouge[k], -k))
        chosen, chosen_from = candidates[pick], pick
    elif chosen_fallback == "ground_truth" and truth and not pair_failures(truth, inputs, excused):
        chosen, chosen_from = truth, "ground_truth"
    else:
        reason = "no candidate passes the grounding check"
        if chosen_fallback == "ground_truth":
            reason += " and the training letter does not either"
        return {**out, "skip": reason}
    wrong = [k for k, f in enumerate(failures)
             if f and candidates[k].strip() and (invents(f) if reject == "invented" else True)]
    if not wrong:
        return {**out, "skip": "no candidate with invented facts" if reject == "invented"
                else "no candidate fails the grounding check"}
    closeness = {k: rouge_l(chosen, candidates[k]) for k in wrong}
    pick = max(wrong, key=lambda k: (invents(failures[k]), closeness[k], -k))
    return {**out, "chosen": chosen, "rejected": candidates[pick], "chosen_from": chosen_from,
            "rejected_index": pick, "rejected_failures": failures[pick]}


# ---------------------------------------------------------------- held-out splits


def _inputs_key(record: dict) -> tuple:
    return tuple(sorted(inputs_of(record).items()))


def held_out(out: Path) -> tuple[set, set]:
    """The ids and inputs of the validation and test splits (those present)."""
    ids, inputs = set(), set()
    for split in ("validation", "test"):
        path = rundir.split_path(out, split)
        if path.exists():
            for r in io.read_jsonl(path):
                ids.add(str(r.get(ID_FIELD)))
                inputs.add(_inputs_key(r))
    return ids, inputs


def check_train_only(pairs: Sequence[dict], train_rows: Sequence[dict], out: Path) -> None:
    """Every pair comes from a training row and from no validation or test row: a RuntimeError otherwise."""
    train_ids = {str(r.get(ID_FIELD)) for r in train_rows}
    ids, inputs = held_out(out)
    by_id = {str(r.get(ID_FIELD)): r for r in train_rows}
    bad = [p["id"] for p in pairs if p["id"] not in train_ids or p["id"] in ids or _inputs_key(by_id[p["id"]]) in inputs]
    if bad:
        raise RuntimeError(f"preference pairs {bad[:5]} are not from the training split alone; they are not used")


# ---------------------------------------------------------------- step 1: sampling the pairs


RULE_OPTIONS = ("reject", "chosen_fallback")  # the pair rule: applied to the samples, not part of them


def sampling_fingerprint(cfg: PreferConfig, out: Path, adapter: Path) -> dict:
    """What the samples are built from: the SFT adapter, the training split, the base model and the sampling
    settings (rundir.fingerprint)."""
    settings = {k: v for k, v in to_dict(cfg).items()
                if k not in TRAINING_OPTIONS + RULE_OPTIONS + NOT_IN_FINGERPRINT + ("adapter",)}
    settings["dtype"] = str(models.compute_dtype(cfg.compute_dtype)).replace("torch.", "")
    inputs = {"adapter": rundir.path_hash(adapter), "data/train.jsonl": rundir.path_hash(rundir.split_path(out, "train"))}
    if cfg.model not in ("", EMBEDDED_MODEL) and Path(cfg.model).expanduser().is_dir():
        inputs["model"] = rundir.model_identity(cfg.model)
    return rundir.fingerprint(settings, inputs)


def sample_pairs(cfg: PreferConfig, out: Path, adapter: Path, train_rows: list[dict]) -> tuple[list[dict], list[dict], dict]:
    """The pairs of the training split, every sampled row's choice (its candidates with their failures and
    ROUGE-L, and the pair or why there is none), and what sampling did. The candidates are kept in the samples
    journal (resumable); the pair rule (``reject``, ``chosen_fallback``) is applied to them on every call, so
    changing it samples nothing again."""
    from transformers import set_seed

    ids_held, inputs_held = held_out(out)
    eligible = [i for i, r in enumerate(train_rows)
                if str(r.get(ID_FIELD)) not in ids_held and _inputs_key(r) not in inputs_held]
    if len(eligible) < len(train_rows):
        log.warning("%d training row(s) share their id or inputs with a validation or test row; they give no pairs",
                    len(train_rows) - len(eligible))
    fp = sampling_fingerprint(cfg, out, adapter)
    tokenizer = models.load_tokenizer(cfg.model, padding_side="left", trust_remote_code=cfg.trust_remote_code)
    fmt = rundir.read_train_config(adapter).get("prompt_format") or "raw"
    inputs = [prompt_ids(r, tokenizer, fmt) for r in train_rows]
    outcomes: dict[int, dict] = {}  # row index -> make_pair's result, under this call's rule
    lm = None
    journal = Journal(out / SAMPLES_JOURNAL, fp)
    t0, sampled, new_tokens = time.perf_counter(), 0, 0
    try:
        for i in eligible:
            row = journal.lookup(i, inputs[i])
            if row is not None:
                outcomes[i] = make_pair(train_rows[i], row["letters"], cfg.reject, cfg.chosen_fallback)

        def found() -> int:
            return sum("chosen" in o for o in outcomes.values())

        pending = [i for i in eligible if i not in outcomes]
        if cfg.max_pairs and found() >= cfg.max_pairs:
            pending = []
        if pending:
            limits.check_context([len(inputs[i]) for i in pending], [train_rows[i].get(ID_FIELD, i) for i in pending],
                                 models.context_length(cfg.model), cfg.max_new_tokens,
                                 source=str(rundir.split_path(out, "train")))
            lm = load_letter_model(GenerateConfig(model=cfg.model, out="", adapter=str(adapter), dtype=cfg.compute_dtype,
                                                  trust_remote_code=cfg.trust_remote_code))
            decoding = Decoding(cfg.max_new_tokens, True, cfg.temperature, cfg.top_p, cfg.top_k, 1.0, cfg.seed)
            set_seed(cfg.seed)
            log.info("sampling %d candidates for each of %d training prompts", cfg.candidates, len(pending))
        for start in range(0, len(pending), cfg.sample_batch_size):
            if cfg.max_pairs and found() >= cfg.max_pairs:
                break
            chunk = pending[start:start + cfg.sample_batch_size]
            for batch, groups in generate_candidate_ids(lm.model, lm.tokenizer, inputs, cfg.candidates, decoding,
                                                        cfg.sample_batch_size, chunk):
                records = []
                for i, group in zip(batch, groups):
                    letters = [extract_letter(lm.tokenizer.decode(g, skip_special_tokens=True)) for g in group]
                    outcomes[i] = make_pair(train_rows[i], letters, cfg.reject, cfg.chosen_fallback)
                    records.append({"index": i, "id": str(train_rows[i].get(ID_FIELD)), "prompt_sha": ids_sha(inputs[i]),
                                    "new_tokens": sum(len(g) for g in group), "letters": letters})
                    new_tokens += sum(len(g) for g in group)
                journal.append(records)
                sampled += len(batch)
            log.info("sampled %d of %d prompts; %d pairs so far", start + len(chunk), len(pending), found())
    finally:
        journal.close()
        if lm is not None:
            free_model(lm.model)
    choices = [{"id": str(train_rows[i].get(ID_FIELD)), **outcomes[i]} for i in eligible if i in outcomes]
    pairs = [{"id": c["id"], "chosen": c["chosen"], "rejected": c["rejected"], "chosen_from": c["chosen_from"],
              "rejected_failures": c["rejected_failures"]} for c in choices if "chosen" in c]
    if cfg.max_pairs:
        pairs = pairs[:cfg.max_pairs]
    kinds: Counter = Counter()
    for p in pairs:
        kinds.update({f.split(":")[0] for f in p["rejected_failures"]})
    summary = {
        "split": "train", "train_rows": len(train_rows), "held_out_overlap_skipped": len(train_rows) - len(eligible),
        "rows_sampled": len(choices), "pairs": len(pairs),
        "skipped": dict(Counter(c["skip"] for c in choices if "skip" in c).most_common()),
        "chosen_from": dict(Counter("ground_truth" if p["chosen_from"] == "ground_truth" else
                                    "greedy" if p["chosen_from"] == 0 else "sample" for p in pairs)),
        "rejected_failures_by_kind": dict(kinds.most_common()),
        "candidates_per_prompt": cfg.candidates, "reject": cfg.reject, "chosen_fallback": cfg.chosen_fallback,
        "this_session": {"prompts_sampled": sampled, "new_tokens": new_tokens,
                         "seconds": round(time.perf_counter() - t0, 1)},
        "fingerprint": fp,
    }
    return pairs, choices, summary


# ---------------------------------------------------------------- step 2: training


def encode_pairs(pairs: Sequence[dict], records_by_id: dict[str, dict], tokenizer, prompt_format: str,
                 max_length: int) -> list[dict]:
    """TRL's tokenized preference rows: ``prompt_ids`` (covertune.core.prompt.prompt_ids), ``chosen_ids`` and
    ``rejected_ids`` (letter_ids + EOS, cut to fit ``max_length`` with the prompt kept whole; a cut letter
    has no EOS, as in covertune.training.sft_data). Pairs whose prompt fills max_length are left out."""

    rows = []
    for p in pairs:
        prompt = prompt_ids(records_by_id[p["id"]], tokenizer, prompt_format)
        room = max_length - len(prompt)
        if room <= 0:
            log.warning("pair %s: the prompt fills max_length=%d; left out", p["id"], max_length)
            continue
        chosen, rejected = ((letter_ids(p[k], tokenizer, prompt_format) + [tokenizer.eos_token_id])[:room]
                            for k in ("chosen", "rejected"))
        rows.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    return rows


@torch.no_grad()
def completion_logps(model, rows: Sequence[dict], batch_size: int = 8) -> list[tuple[float, float]]:
    """(log p(chosen | prompt), log p(rejected | prompt)) under ``model`` for each encoded pair: the sum of
    the completion tokens' log-probabilities."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    seqs = [(r["prompt_ids"], r[k]) for r in rows for k in ("chosen_ids", "rejected_ids")]
    sums: list[float] = []
    for s in range(0, len(seqs), batch_size):
        part = seqs[s:s + batch_size]
        width = max(len(p) + len(c) for p, c in part)
        ids = torch.zeros((len(part), width), dtype=torch.long)
        mask = torch.zeros((len(part), width), dtype=torch.long)
        for n, (p, c) in enumerate(part):
            ids[n, :len(p) + len(c)] = torch.tensor(p + c)
            mask[n, :len(p) + len(c)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
        for n, (p, c) in enumerate(part):
            sums.append(float(logp[n, len(p) - 1:len(p) + len(c) - 1].sum()))
    model.train(was_training)
    return [(sums[2 * k], sums[2 * k + 1]) for k in range(len(rows))]


def mean_margin(model, rows: Sequence[dict]) -> float:
    """The mean chosen-minus-rejected log-probability margin of encoded pairs under ``model``."""
    pairs = completion_logps(model, rows)
    return sum(c - r for c, r in pairs) / len(pairs)


def check_trl() -> None:
    """TRL 1.15 computes DPO's log-probabilities with a Triton kernel only (later versions fall back to
    PyTorch): without Triton (a CPU-only PyTorch) its DPOTrainer would fail at the first step."""
    from trl.trainer import utils as trl_utils

    if getattr(trl_utils, "_ChunkedLogProbFunction", True) is None:
        import trl

        raise RuntimeError(f"TRL {trl.__version__} computes DPO's log-probabilities with a Triton kernel, and Triton "
                           "is not installed here (a CPU-only PyTorch); upgrade TRL (`pip install 'trl>=1.16'`) or "
                           "run on a CUDA GPU")


def ids_trainer_class():
    """TRL's DPOTrainer fed covertune's token ids: its dataset preparation (text -> ids, by tokenizing the
    prompt and prompt + completion) is skipped, the rows already hold prompt_ids, chosen_ids and
    rejected_ids (encode_pairs), which its collator reads."""
    from trl import DPOTrainer

    class IdsDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            missing = {"prompt_ids", "chosen_ids", "rejected_ids"} - set(dataset.column_names)
            if missing:
                raise ValueError(f"preference rows need prompt_ids, chosen_ids and rejected_ids; missing {sorted(missing)}")
            return dataset

    return IdsDPOTrainer


def dpo_args(cfg: PreferConfig, output_dir: Path, dtype: torch.dtype):
    """TRL's DPOConfig for ``cfg`` (TRL 1.15's fields)."""
    from trl import DPOConfig

    loss_type, weights = {"dpo": (["sigmoid"], None), "ipo": (["ipo"], None),
                          "rpo": (["sigmoid", "sft"], [1.0, cfg.sft_weight])}[cfg.loss]
    on_gpu = models.has_cuda()
    return DPOConfig(
        output_dir=str(output_dir), per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=float(cfg.warmup_ratio),
        beta=cfg.beta, loss_type=loss_type, loss_weights=weights, max_length=None,
        bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16, **checkpointing_args(cfg.gradient_checkpointing),
        logging_steps=cfg.logging_steps, logging_first_step=True, save_strategy="no", report_to="none",
        seed=cfg.seed, data_seed=cfg.seed, use_cpu=not on_gpu, dataloader_pin_memory=on_gpu,
        disable_tqdm=not is_terminal())


def train_on_pairs(model, tokenizer, rows: list[dict], cfg: PreferConfig, work_dir: Path, log_path: Path):
    """Continue training the PeftModel ``model`` (its adapter "default") on encoded pairs with DPO against a
    frozen copy of the adapter as it is now; returns the trainer."""
    from datasets import Dataset

    dtype = models.compute_dtype(cfg.compute_dtype)
    args = dpo_args(cfg, work_dir, dtype)
    log_path.unlink(missing_ok=True)
    logger = JsonlLogger(log_path, log_lines=not is_terminal())
    trainer = ids_trainer_class()(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                  processing_class=tokenizer, callbacks=[logger])
    if not is_terminal():
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    trainer.train()
    return trainer


# ---------------------------------------------------------------- the stage


def fingerprint(cfg: PreferConfig, out: Path, adapter: Path) -> dict:
    """What the preference adapter is built from: the samples' fingerprint, the pair rule and the training
    options."""
    fp = sampling_fingerprint(cfg, out, adapter)
    fp["settings"].update({k: getattr(cfg, k) for k in TRAINING_OPTIONS + RULE_OPTIONS if k not in NOT_IN_FINGERPRINT})
    return fp


def _clear_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def prefer(cfg: PreferConfig) -> str:
    validate(cfg)
    out = rundir.check_out(cfg.out)
    target = rundir.preference_adapter_dir(out)
    adapter = rundir.find_adapter(out, cfg.adapter)
    rundir.check_safetensors(adapter)
    train_cfg = rundir.read_train_config(adapter)
    models.check_base_model(cfg.model, train_cfg, adapter)
    quantization = train_cfg.get("quantization") or "none"
    if quantization != "none":
        err = models.bitsandbytes_error(quantization)
        if err:
            raise RuntimeError(err)
    dtype = models.compute_dtype(cfg.compute_dtype)
    if dtype == torch.float16 and not models.has_cuda():
        raise ValueError("fp16 mixed precision needs a CUDA GPU; on the CPU use --compute-dtype bf16 or fp32")
    check_trl()
    fp = fingerprint(cfg, out, adapter)
    if rundir.check_stage(out, "prefer", fp, rundir.has_adapter(target), cfg.force, str(target)):
        return f"prefer: {target} is complete; skipped (--force trains again)"
    rundir.stage_marker(out, "prefer").unlink(missing_ok=True)

    # ---- step 1: pairs from the SFT model's own letters on the training split
    train_rows = rundir.read_split(out, "train")
    pairs, choices, summary = sample_pairs(cfg, out, adapter, train_rows)
    check_train_only(pairs, train_rows, out)
    pref_dir = rundir.preference_dir(out)
    io.write_jsonl(pref_dir / CHOICES_FILE, choices)
    io.write_jsonl(pref_dir / PAIRS_FILE, pairs)
    log.info("%d preference pairs from %d training rows (skipped: %s)", len(pairs), summary["rows_sampled"],
             summary["skipped"] or "none")
    if not pairs:
        io.write_json(pref_dir / SUMMARY_FILE, summary)
        raise ValueError(f"no preference pairs in {pref_dir / PAIRS_FILE} (skipped rows by reason: {summary['skipped']}); "
                         "sample more candidates (--candidates), take the training letter as chosen "
                         "(--chosen-fallback ground_truth), or reject any failing letter (--reject any)")

    # ---- step 2: the SFT adapter trained on the pairs, against a frozen copy of itself
    from peft import PeftModel

    tokenizer = models.load_tokenizer(cfg.model, padding_side="right", trust_remote_code=cfg.trust_remote_code)
    fmt = train_cfg.get("prompt_format") or "raw"
    rows = encode_pairs(pairs, {str(r.get(ID_FIELD)): r for r in train_rows}, tokenizer, fmt, cfg.max_length)
    if len(rows) < cfg.batch_size * cfg.grad_accum:
        raise ValueError(f"{len(rows)} usable preference pair(s), but one optimizer step takes batch_size "
                         f"{cfg.batch_size} x grad_accum {cfg.grad_accum}: lower --batch-size / --grad-accum, or find "
                         "more pairs (--candidates, --chosen-fallback ground_truth)")
    from transformers import set_seed

    set_seed(cfg.seed)
    base = models.load_model(cfg.model, quantization, cfg.compute_dtype, tokenizer=tokenizer,
                             trust_remote_code=cfg.trust_remote_code)
    model = PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
    before = mean_margin(model, rows)
    trainer = train_on_pairs(model, tokenizer, rows, cfg, out / ".prefer" / "trainer", pref_dir / LOG_FILE)
    after = mean_margin(model, rows)
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    log.info("preference training: %d steps; chosen-minus-rejected log-probability margin on the pairs %.3f -> %.3f",
             trainer.state.global_step, before, after)
    summary.update({"loss": cfg.loss, "beta": cfg.beta, "pairs_trained": len(rows), "global_step": trainer.state.global_step,
                    "base_quantization": "nf4" if getattr(base, "is_loaded_in_4bit", False) else
                    "int8" if getattr(base, "is_loaded_in_8bit", False) else "none",
                    "train_loss_first": losses[0] if losses else None, "train_loss_last": losses[-1] if losses else None,
                    "margin_before": round(before, 4), "margin_after": round(after, 4),
                    "margin_note": "mean over the trained pairs of log p(chosen) - log p(rejected), summed over "
                                   "letter tokens, under the SFT adapter (before) and the preference adapter (after)"})

    info = {**train_cfg, "preference": {**to_dict(cfg), **{k: v for k, v in summary.items() if k != "fingerprint"},
                                        "sft_adapter": str(adapter), "versions": versions()}}
    with io.atomic_dir(target) as tmp:
        model.save_pretrained(tmp, selected_adapters=["default"], safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        io.write_json(tmp / rundir.TRAIN_INFO, info)
        io.write_text(tmp / "README.md", preference_card(cfg, summary, adapter, train_cfg))
    io.write_json(pref_dir / SUMMARY_FILE, summary)
    del trainer, model, base
    _clear_memory()
    rundir.mark_done(out, "prefer", {"adapter": str(target), "pairs": len(rows), "margin_before": before,
                                     "margin_after": after, "fingerprint": fp})
    return (f"prefer: wrote {target} ({len(rows)} pairs from the training split, {cfg.loss}, beta {cfg.beta}; "
            f"chosen-minus-rejected margin {before:.3f} -> {after:.3f}), {pref_dir / PAIRS_FILE}, "
            f"{pref_dir / SUMMARY_FILE}; use it with --adapter {target}")
