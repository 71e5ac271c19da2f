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
prompts per call), and one is chosen by ``--select`` (covertune.select); each letter's candidates, their grounding failures
and MBR scores and the choice go to ``<out>/candidates/<split>.<model>.jsonl``. ``--select classifier-mbr``
also scores every candidate with the letter-quality classifier (``--classifier``, default
``<out>/classifier``; covertune.classify) and drops those below ``--classifier-threshold`` before MBR;
each candidate's score is recorded there as ``quality``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from covertune import adapter_check, distributed, engines, io, limits, models, recipe, rundir
from covertune.config import BaseWeights, GenerateConfig, PromptFormat, check_choice, choices, validate
from covertune.prompt import extract_letter, prompt_ids, render_prompt, text_ids
from covertune.records import EVAL_COLUMNS, MODEL_COLUMNS, TARGET_FIELD, inputs_of

log = logging.getLogger(__name__)

MODEL_NAMES = tuple(MODEL_COLUMNS)  # ("base", "fine_tuned")
STATS_FILE = rundir.GENERATE_STATS


def candidates_path(out: str | os.PathLike, split: str, which: str) -> Path:
    """With --candidates: every letter's candidates, their grounding failures and MBR scores, the choice."""
    return Path(out) / "candidates" / f"{split}.{which}.jsonl"


# ---------------------------------------------------------------- decoding settings


@dataclass(frozen=True)
class Decoding:
    """What ``model.generate`` is told. The defaults are the reference's: greedy, 512 new tokens."""

    max_new_tokens: int = 512
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    repetition_penalty: float = 1.0
    seed: int = 42

    def generate_kwargs(self) -> dict:
        # Every knob is passed explicitly: a model's generation_config.json (Llama-2-chat's samples at
        # temperature 0.6) must not change what "greedy" means.
        kw = dict(max_new_tokens=self.max_new_tokens, do_sample=self.do_sample, num_beams=1,
                  repetition_penalty=self.repetition_penalty)
        if self.do_sample:
            kw.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:  # the neutral values, so transformers does not warn about sampling flags under greedy
            kw.update(temperature=1.0, top_p=1.0, top_k=50)
        return kw

    def identity(self) -> dict:
        """The settings that change outputs (sampling knobs only matter when sampling)."""
        d = asdict(self)
        if not self.do_sample:
            for k in ("temperature", "top_p", "top_k", "seed"):
                d.pop(k)
        return d


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """The tokenizer's EOS plus the model's generation_config EOS ids (e.g. chat models' end-of-turn)."""
    ids = [tokenizer.eos_token_id]
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None)
    ids += extra if isinstance(extra, (list, tuple)) else [extra]
    return sorted({int(i) for i in ids if i is not None})


# ---------------------------------------------------------------- resume journal


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def ids_sha(ids: Sequence[int]) -> str:
    """The journal's key of a prompt: a hash of the token ids fed."""
    return _sha(",".join(str(int(i)) for i in ids))


def settings_hash(settings: dict) -> str:
    return _sha(json.dumps(settings, sort_keys=True, default=str))[:16]


def part_path(path: Path, rank: int) -> Path:
    """The journal part of process ``rank`` beside the journal ``path`` (several processes)."""
    return path.with_name(f"{path.stem}.part{rank}{path.suffix}")


def merge_parts(path: Path, settings: dict, fresh: bool = False) -> int:
    """The rows of the journal parts beside ``path`` (written by the processes of a multi-process run,
    finished or interrupted) appended to the journal ``path``, and the parts removed; ``fresh``: the
    journal and the parts start empty. The number of rows taken from the parts."""
    parts = sorted(path.parent.glob(f"{path.stem}.part*{path.suffix}"))
    taken = 0
    with Journal(path, settings, fresh=fresh) as journal:
        for part in parts:
            rows = [] if fresh else list(Journal(part, settings, readonly=True).rows.values())
            journal.append(rows)
            taken += len(rows)
    for part in parts:
        part.unlink()
    return taken


class Journal:
    """Append-only record of finished rows, ``{"index", "output", "new_tokens", "prompt_sha"}`` per line
    (``prompt_sha``: ``ids_sha`` of the prompt's token ids),
    after a header line holding the hash of the settings that shape outputs. A journal with another hash
    (a changed model, adapter, prompt format or decoding setting) is discarded and started fresh; a row
    whose prompt changed is generated again. ``readonly``: the rows are read, the file is left as it is
    (another process may be writing it)."""

    def __init__(self, path: str | os.PathLike, settings: dict, fresh: bool = False, readonly: bool = False):
        self.path = Path(path)
        self.settings = settings
        self.key = settings_hash(settings)
        self.rows: dict[int, dict] = {}
        self._file = None
        if self.path.exists() and not fresh:
            self._load()
        if readonly:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # rewrite cleanly (drops a line cut off by a crash, or a stale journal), then append to it
        header = {"settings_hash": self.key, "settings": settings}
        io.write_jsonl(self.path, [header, *(self.rows[i] for i in sorted(self.rows))])
        self._file = open(self.path, "a", encoding="utf-8")

    def _load(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
        except json.JSONDecodeError:
            header = {}
        if header.get("settings_hash") != self.key:
            log.info("%s was written with other settings; starting it afresh", self.path)
            return
        for line in lines[1:]:
            try:
                row = json.loads(line)
                self.rows[int(row["index"])] = row
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a line cut off by a crash: that row is generated again

    def lookup(self, index: int, ids: Sequence[int]) -> dict | None:
        row = self.rows.get(index)
        return row if row is not None and row.get("prompt_sha") == ids_sha(ids) else None

    def append(self, rows: Sequence[dict]) -> None:
        for row in rows:
            self.rows[int(row["index"])] = row
            self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- batched generation


def _device(model) -> torch.device:
    dev = getattr(model, "device", None)
    return dev if isinstance(dev, torch.device) else next(model.parameters()).device


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for n, r in enumerate(rows):
        if r:
            ids[n, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[n, width - len(r):] = 1
    return ids, mask


def check_pad(tokenizer, stop_ids: Sequence[int]) -> int:
    pad = tokenizer.pad_token_id
    if pad is None or pad in stop_ids:
        raise ValueError("the tokenizer's pad token must exist and differ from EOS (else a finished row "
                         "cannot be told from padding); load it with covertune.models.load_tokenizer")
    return int(pad)


def cut_at_stop(row: Sequence[int], stop_ids: Sequence[int]) -> list[int]:
    """A row of new tokens up to and including its first stop token (what follows is padding)."""
    stop_set = set(stop_ids)
    cut = next((k + 1 for k, t in enumerate(row) if t in stop_set), len(row))
    return list(row[:cut])


def generate_batch(model, rows: Sequence[Sequence[int]], decoding: Decoding, stop_ids: Sequence[int],
                   pad_id: int, **generate_kwargs) -> list[list[int]]:
    """One left-padded ``model.generate`` call over token-id rows; the new tokens of each row, cut after
    its first stop token. ``generate_kwargs`` (a streamer, stopping criteria) go to ``model.generate``."""
    ids, mask = _left_pad([list(r) for r in rows], pad_id)
    device = _device(model)
    with torch.inference_mode():
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             eos_token_id=list(stop_ids), pad_token_id=pad_id, **decoding.generate_kwargs(),
                             **generate_kwargs)
    return [cut_at_stop(row, stop_ids) for row in out[:, ids.shape[1]:].tolist()]


def generate_token_ids(model, tokenizer, inputs: Sequence[Sequence[int]], batch_size: int = 32,
                       decoding: Decoding = Decoding(), indices: Sequence[int] | None = None,
                       engine: str = "plain"
                       ) -> Iterator[tuple[list[int], list[list[int]]]]:
    """Yield ``(row indices, new token ids per row)`` batch by batch for ``inputs[indices]``.

    ``inputs`` are prompts as token ids (``covertune.prompt.prompt_ids``). Rows are grouped by length
    (longest first, so a batch that does not fit in memory fails at once), left-padded, and cut after
    their first stop token (which is kept); padding after it is not. ``engine`` (covertune.engines)
    decides how the batches are decoded: plain, static, continuous or auto."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    llamacpp = getattr(model, "is_llamacpp", False)  # covertune.llamacpp_engine decodes its own batches
    engine = engine if llamacpp else engines.resolve(engine, model, decoding)
    stop = stop_token_ids(tokenizer, model)
    pad = check_pad(tokenizer, stop)
    indices = list(range(len(inputs))) if indices is None else list(indices)
    if not indices:
        return
    order = sorted(indices, key=lambda i: (-len(inputs[i]), i))
    batches = ((order[s:s + batch_size], [list(inputs[i]) for i in order[s:s + batch_size]])
               for s in range(0, len(order), batch_size))
    if llamacpp:
        yield from model.batches(batches, stop=stop, decoding=decoding)
        return
    yield from engines.generate_batches(model, batches, engine=engine, stop=stop, pad=pad, decoding=decoding,
                                        batch_size=batch_size, max_prompt_tokens=len(inputs[order[0]]))


def generate_letters(model, tokenizer, inputs: Sequence[Sequence[int]], batch_size: int = 32,
                     decoding: Decoding = Decoding(), *, journal: Journal | None = None,
                     stats: dict | None = None, progress: bool = True, desc: str = "letters",
                     engine: str = "plain", indices: Sequence[int] | None = None) -> list[str]:
    """The letter for every prompt (decoded new tokens, special tokens skipped, extract_letter applied).

    ``inputs`` are prompts as token ids (``covertune.prompt.prompt_ids``), decoded as ``decoding`` says.
    With a ``journal``, rows it holds are not generated again and each finished batch is appended to it.
    ``stats``, if given, receives letters, resumed, new_tokens and seconds of this call.
    ``engine``: how batches are decoded (covertune.engines: plain, static, continuous, auto).
    ``indices``: the rows to write (default all); the others are left None (another process's share)."""
    from covertune.progress import progress_bar

    letters: list[str | None] = [None] * len(inputs)
    if journal is not None:
        for i, ids in enumerate(inputs):
            row = journal.lookup(i, ids)
            if row is not None:
                letters[i] = row["output"]
    wanted = range(len(inputs)) if indices is None else indices
    pending = [i for i in wanted if letters[i] is None]
    if decoding.do_sample and pending:
        from transformers import set_seed

        set_seed(decoding.seed)
    done_letters, done_tokens, t0 = 0, 0, time.perf_counter()
    bar = progress_bar(total=len(wanted), initial=len(wanted) - len(pending), desc=desc, unit="letter",
                       disable=not progress)
    try:
        for batch, rows in generate_token_ids(model, tokenizer, inputs, batch_size, decoding, pending,
                                              engine=engine):
            records = []
            for i, ids in zip(batch, rows):
                letters[i] = extract_letter(tokenizer.decode(ids, skip_special_tokens=True))
                records.append({"index": i, "output": letters[i], "new_tokens": len(ids),
                                "prompt_sha": ids_sha(inputs[i])})
                done_tokens += len(ids)
            if journal is not None:
                journal.append(records)
            elapsed = max(time.perf_counter() - t0, 1e-9)
            done_letters += len(batch)
            bar.update(len(batch))
            bar.set_postfix({"letters/s": f"{done_letters / elapsed:.2f}",
                             "tok/s": f"{done_tokens / elapsed:.0f}"})
    finally:
        bar.close()
        if stats is not None:
            stats.update(letters=done_letters,
                         resumed=len(wanted) - len(pending), new_tokens=done_tokens,
                         seconds=round(time.perf_counter() - t0, 3))
    return letters  # type: ignore[return-value]


# ---------------------------------------------------------------- the stage


def _folder_identity(path: Path, hash_contents: bool) -> dict:
    """Name and contents of a model folder: full hashes for an adapter, sizes and times for a merged model."""
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".json") and p.is_file())
    if hash_contents:
        return {"path": str(path.resolve()), "files": {p.name: rundir.file_hash(p) for p in files}}
    return {"path": str(path.resolve()),
            "files": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}}


def _resolve_format(cfg: GenerateConfig, train_cfg: dict) -> str:
    trained = train_cfg.get("prompt_format")
    if cfg.prompt_format == "auto":
        return trained if trained in choices(PromptFormat) else "raw"
    if trained and trained != cfg.prompt_format:
        log.warning("the adapter was trained with prompt_format %r but %r was asked for; the fine-tuned "
                    "letters will likely be worse", trained, cfg.prompt_format)
    return cfg.prompt_format


def uses_candidates(cfg, which: str) -> bool:
    """Whether the pass ``which`` chooses among candidates: the fine-tuned pass with --candidates above 1
    (the base pass stays greedy: it is the untuned model's baseline)."""
    return cfg.candidates > 1 and which == "fine_tuned"


def candidate_batch(cfg: GenerateConfig) -> int:
    """Prompts per generation call when choosing among candidates (each call decodes that many x N rows)."""
    return cfg.candidate_batch_size or cfg.batch_size


def check_candidates(cfg) -> None:
    """The candidate options of a generate or write config, checked."""
    from covertune.select import SELECT_MODES

    if cfg.candidates < 1:
        raise ValueError(f"candidates must be at least 1, got {cfg.candidates}")
    if cfg.select not in SELECT_MODES:
        raise ValueError(f"select must be one of {', '.join(SELECT_MODES)}, got {cfg.select!r}")
    if cfg.candidates > 1:
        if cfg.do_sample:
            raise ValueError("--candidates already samples (all but the first candidate): drop --do-sample and "
                             "set --candidate-temperature and --candidate-top-p instead")
        if cfg.candidate_temperature <= 0 or not 0 < cfg.candidate_top_p <= 1:
            raise ValueError("candidate_temperature must be > 0 and candidate_top_p in (0, 1]")


def load_classifier(path: str, out) -> tuple[object, Path]:
    """The letter-quality classifier for --select classifier-mbr: ``path`` (its classifier.json or folder),
    else ``<out>/classifier``; with the file it was read from."""
    from covertune.classify.model import CLASSIFIER_FILE, LetterClassifier
    from covertune.classify.stage import classifier_dir

    target = Path(path).expanduser() if path else classifier_dir(out) if out else None
    if target is None:
        raise ValueError("--select classifier-mbr needs --classifier (a classifier.json from `covertune classify "
                         "train`) or --out with a trained classifier")
    file = target / CLASSIFIER_FILE if target.is_dir() else target
    return LetterClassifier.load(file), file


def candidate_decoding(cfg) -> Decoding:
    """How the candidates after the first are sampled."""
    return Decoding(cfg.max_new_tokens, True, cfg.candidate_temperature, cfg.candidate_top_p, cfg.top_k,
                    cfg.repetition_penalty, cfg.seed)


def _free(model) -> None:
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _fine_tuned_weights(cfg: GenerateConfig, merged: Path | None, adapter: Path | None, train_cfg: dict,
                        tokenizer):
    """The fine-tuned model as plain weights: the merged folder, or the adapter merged in memory into
    the base it learned against (quantized as in training, then dequantized)."""
    if merged is not None:
        log.info("loading the merged model %s", merged)
        return models.load_model(str(merged), "none", cfg.dtype, tokenizer=tokenizer,
                                 trust_remote_code=cfg.trust_remote_code)
    trained_q = train_cfg.get("quantization")
    log.info("loading %s quantized %s as in training, dequantized, and merging the adapter %s",
             cfg.model, trained_q, adapter)
    base = models.load_adapter_base(cfg.model, trained_q, "trained", cfg.dtype, tokenizer=tokenizer,
                                    trust_remote_code=cfg.trust_remote_code)
    return adapter_check.load_peft(base, adapter, cfg.model).merge_and_unload()


@dataclass
class LetterModel:
    """A model ready to write letters: the weights, the left-padding tokenizer, and the prompt format
    its prompts are encoded in (``covertune.prompt.prompt_ids`` / ``text_ids``)."""

    model: object
    tokenizer: object
    prompt_format: str
    source: str  # what was loaded, for logs and /v1/models

    def prompt_ids(self, record: dict) -> list[int]:
        """The ids fed for a record of the 8 fields, as ``covertune generate`` feeds them."""
        return prompt_ids(record, self.tokenizer, self.prompt_format)

    def text_ids(self, text: str) -> list[int]:
        """The ids fed for a free-text prompt, encoded as a record's rendered schema is."""
        return text_ids(text, self.tokenizer, self.prompt_format)


def load_letter_model(cfg: GenerateConfig) -> LetterModel:
    """The model ``write`` and ``serve`` use, loaded as the fine-tuned pass of ``generate`` loads it: a
    merged folder, or the adapter (``cfg.adapter``, else ``<cfg.out>/adapter``) on the base it learned
    against; the base model alone when there is neither (``cfg.out`` empty, or a run without an adapter).
    Only ``model, out, adapter, merged, base_weights, prompt_format, dtype, merge_adapter,
    trust_remote_code`` are read."""
    check_choice("base_weights", cfg.base_weights, BaseWeights)
    out = Path(cfg.out).expanduser() if cfg.out else None
    if out is not None and not out.is_dir():
        raise FileNotFoundError(f"run directory {out} does not exist")
    adapter = merged = None
    if out is not None or cfg.adapter or cfg.merged:
        adapter, merged = rundir.fine_tuned_source(out or "", cfg.adapter, cfg.merged)
    if merged or adapter:
        rundir.check_safetensors(merged or adapter)
    train_cfg = rundir.read_train_config(merged or adapter) if (merged or adapter) else {}
    if adapter is not None:
        cfg = dataclasses.replace(cfg, model=adapter_check.base_model(cfg.model, train_cfg, adapter))
        adapter_check.check_weights(adapter)
    prompt_format = _resolve_format(cfg, train_cfg)
    tokenizer = models.load_tokenizer(cfg.model, padding_side="left", trust_remote_code=cfg.trust_remote_code)
    base_weights = (models.resolve_base_weights(cfg.base_weights, train_cfg.get("quantization"))
                    if adapter is not None else None)
    if merged is not None or base_weights == "trained":
        model = _fine_tuned_weights(cfg, merged, adapter, train_cfg, tokenizer)
        source = f"merged model {merged}" if merged else f"{cfg.model} + adapter {adapter} (merged in memory)"
    else:
        log.info("loading %s", cfg.model)
        model = models.load_model(cfg.model, "none", cfg.dtype, tokenizer=tokenizer,
                                  trust_remote_code=cfg.trust_remote_code)
        source = cfg.model
        if adapter is not None:
            log.info("loading the adapter %s", adapter)
            model = adapter_check.load_peft(model, adapter, cfg.model)
            source = f"{cfg.model} + adapter {adapter}"
            if cfg.merge_adapter:  # as generate's fine-tuned pass: the same letters
                model = model.merge_and_unload()
                source += " (merged in memory)"
        elif out is not None:
            log.warning("%s holds no adapter or merged model: writing with the base model %s", out, cfg.model)
    recipe.add_end_tokens(model, merged or adapter)
    return LetterModel(model.eval(), tokenizer, prompt_format, source)


@contextlib.contextmanager
def merged_adapter(model):
    """The adapter of a PeftModel folded into its base weights while inside (peft's merge_adapter), and
    taken out again after (unmerge_adapter): each LoRA layer then runs one matrix product instead of three."""
    with torch.no_grad():
        model.merge_adapter()
    try:
        yield model
    finally:
        with torch.no_grad():
            model.unmerge_adapter()


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
        if self.cfg.engine == "llama.cpp":  # the pass's model as a GGUF file (covertune.gguf_cache)
            return self._get(f"llama.cpp:{which}"), contextlib.nullcontext()
        if which == "fine_tuned" and not self.adapter_on_base:
            return self._get("merged"), contextlib.nullcontext()
        m = self._get("base")
        if which == "base" and self.adapter_on_base:
            return m, m.disable_adapter()
        if which == "fine_tuned" and self.cfg.merge_adapter:
            return m, merged_adapter(m)
        return m, contextlib.nullcontext()

    def _get(self, name: str):
        if name not in self.loaded:
            self.close()  # the other model's memory goes first
            self.loaded[name] = self._load(name).eval()
        return self.loaded[name]

    def _load(self, name: str):
        cfg = self.cfg
        if name.startswith("llama.cpp:"):
            from covertune.gguf_cache import load_pass_model

            return load_pass_model(cfg, name.split(":")[1] == "fine_tuned")
        if name == "merged":
            return _fine_tuned_weights(cfg, self.merged, self.adapter, self.train_cfg, self.tokenizer)
        log.info("loading %s", cfg.model)
        m = models.load_model(cfg.model, "none", cfg.dtype, tokenizer=self.tokenizer,
                              trust_remote_code=cfg.trust_remote_code)
        if self.adapter_on_base:
            log.info("loading the adapter %s", self.adapter)
            m = adapter_check.load_peft(m, self.adapter, cfg.model)
        return m

    def close(self) -> None:
        for name in list(self.loaded):
            _free(self.loaded.pop(name))


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
    prompt_format = _resolve_format(cfg, train_cfg)
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
                               "sampling": candidate_decoding(cfg).identity(),
                               # each row's draws from its own seed (covertune.seeded_sampling): the batch
                               # composition and the processes no longer change them
                               "draws": "per-row seed"}
        if cfg.select == "classifier-mbr":  # loaded (and checked) before any model
            classifier, classifier_path = load_classifier(cfg.classifier, out)
            tuned["candidates"].update(classifier=rundir.file_hash(classifier_path),
                                       classifier_threshold=cfg.classifier_threshold)
    if cfg.form != "auto":  # full prefers full-form candidates: it changes the choice
        tuned["form"] = cfg.form
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
    run_key = settings_hash({"models": {m: settings[m] for m in cfg.models}, "split": cfg.split,
                             "limit": cfg.limit, "data": rundir.file_hash(split_path)})

    info = rundir.stage_info(out, "generate")
    if not cfg.force and info is not None and output.exists():
        if info.get("key") == run_key and info.get("output_file") == cfg.output_file:
            if "fine_tuned" in cfg.models and not rundir.recipe_path(out).exists():  # a run from before recipes
                from covertune.recipe import write_recipe

                write_recipe(out, cfg, prompt_format)
            return f"generate: {output} is complete (use --force to generate again)"

    with distributed.main_first():  # the embedded model is converted once, by the main process
        tokenizer = models.load_tokenizer(cfg.model, padding_side="left", trust_remote_code=cfg.trust_remote_code)
    inputs = [prompt_ids(r, tokenizer, prompt_format) for r in records]
    limits.check_context([len(ids) for ids in inputs], [r.get("id", i) for i, r in enumerate(records)],
                         limits.context_length(str(merged) if merged else cfg.model), cfg.max_new_tokens,
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
                        from covertune.select import generate_chosen_letters

                        generate_chosen_letters(
                            model, tokenizer, inputs, [inputs_of(r) for r in records], cfg.candidates, cfg.select,
                            candidate_decoding(cfg), candidate_batch(cfg), journal=journal, stats=st, desc=which,
                            classifier=classifier, threshold=cfg.classifier_threshold,
                            repetition_weight=cfg.select_repetition_weight, progress=main,
                            indices=share, form=cfg.form)
                    else:
                        generate_letters(model, tokenizer, inputs, cfg.batch_size, decoding, journal=journal,
                                         stats=st, desc=which, engine=cfg.engine, progress=main, indices=share)
                if getattr(model, "is_llamacpp", False):
                    device, engine_used = "cpu", f"llama.cpp ({cfg.gguf_quant})"
                else:
                    device = _device(model)
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
            from covertune.letter_form import apply_form

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
                        "device": ", ".join(devices) if devices else None, "dtype": dtype_name,
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
        from covertune.recipe import write_recipe

        write_recipe(out, cfg, prompt_format)
    rundir.mark_done(out, "generate", {"key": run_key, "output_file": cfg.output_file, "rows": len(records),
                                   "split": cfg.split, "models": list(cfg.models),
                                   "prompt_format": prompt_format, "stats": stats,
                                   "candidates": cfg.candidates, "select": cfg.select if cfg.candidates > 1 else None})
    distributed.barrier()  # the other processes end once the outputs are written
    missing = [m for m in MODEL_NAMES if m not in cfg.models]
    note = f"; {', '.join(MODEL_COLUMNS[m] for m in missing)} left empty" if missing else ""
    return f"generate: wrote {output} ({len(records)} rows, {', '.join(cfg.models)}, {prompt_format} prompts){note}"
