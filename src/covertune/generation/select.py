"""Grounded decoding: several candidate letters per prompt, and the choice among them.

For every prompt the model writes N candidates in one ``model.generate`` call (the prompt repeated N
times): the first of each prompt's N rows is the greedy letter; the other N-1 are samples at
``temperature``/``top_p``/``top_k``, each drawn from its own seed (covertune.generation.seeded_sampling: the run's
seed, the candidate's number and the prompt), so a prompt's candidates are the same in a batch of many
prompts (``covertune generate``) and alone (``covertune write``, ``covertune serve``). Then one
candidate is chosen:

- ``greedy``: the greedy letter.
- ``mbr``: minimum Bayes risk: the candidate with the highest mean ROUGE-L F1 against the other
  candidates (ties: the earlier candidate, the greedy one first).
- ``grounded-mbr``: the candidates that fail the grounding check are dropped first (a number or an
  organisation the inputs do not support, the applicant's name or the hiring company missing where the
  inputs give them, an empty letter; see covertune.metrics.grounding), then the MBR choice among the
  rest, scored against all candidates. When every candidate fails, the one with the fewest failures
  (an empty letter last), then the best MBR score.
- ``classifier-mbr``: as ``grounded-mbr``, and then the candidates the letter-quality classifier
  (covertune.classify) scores below a threshold are dropped too before the MBR choice; when none of the
  grounded ones reaches it, the best-scored of them is chosen.

With a ``repetition_weight`` w above 0, the MBR choices take the candidate with the highest MBR score
minus w times its repetition ratio (covertune.metrics.repetition) instead: among candidates that agree
about as well with the others, the one that repeats its words least. With a ``skills_weight`` s above 0, s times the
candidate's skills coverage (the share of the applicant's skills it names) is added to its MBR score,
among the candidates that pass the grounding check: the shipped recipe's 0.2 names more of the skills at
the same ROUGE-L (docs/RESULTS.md).

Each choice is kept with every candidate's letter, MBR score, failures and (with a classifier) quality
score, for the report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Sequence

from covertune.config.build import check_fields
from covertune.config.groups import CANDIDATES
from covertune.config.options import Select, choices
from covertune.config.stages import GenerateConfig
from covertune.core.progress import progress_bar
from covertune.core.prompt import extract_letter
from covertune.core.records import inputs_of
from covertune.metrics.grounding import ground_details, skill_coverage
from covertune.metrics.repetition import repetition_ratio
from covertune.metrics.rouge import rouge_l_tokens, tokens

if TYPE_CHECKING:
    from covertune.generation.decoding import Decoding

SELECT_MODES: tuple[str, ...] = choices(Select)  # the --select option's values (covertune.config)


# ---------------------------------------------------------------- the choice


def grounding_failures(letter: str, inputs: dict[str, str] | None) -> list[str]:
    """Why a letter fails the grounding check, one reason per finding; [] when it passes (or when the
    inputs are unknown: nothing to check against)."""
    if not letter.strip():
        return ["empty letter"]
    if inputs is None:
        return []

    d = ground_details(letter, inputs)
    reasons = [f"unsupported number: {x}" for x in d["unsupported_numbers"]]
    reasons += [f"unsupported organisation: {x}" for x in d["unsupported_orgs"]]
    if d["name_mentioned"] == 0.0:
        reasons.append("applicant name missing")
    if d["company_mentioned"] == 0.0:
        reasons.append("hiring company missing")
    return reasons


def mbr_scores(candidates: Sequence[str]) -> list[float]:
    """Each candidate's mean ROUGE-L F1 against the other candidates (1.0 for a lone candidate)."""

    n = len(candidates)
    if n == 1:
        return [1.0]
    words = [tokens(c) for c in candidates]  # each candidate tokenized once, not once per pair
    pair = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):  # the F-measure is symmetric
            pair[i][j] = pair[j][i] = rouge_l_tokens(words[i], words[j])
    return [sum(row) / (n - 1) for row in pair]


@dataclass
class Choice:
    index: int  # of the chosen candidate
    select: str
    candidates: list[str]
    scores: list[float] = field(default_factory=list)  # MBR, one per candidate ([] for greedy)
    reasons: list[list[str]] = field(default_factory=list)  # grounding failures, one list per candidate
    quality: list[float] = field(default_factory=list)  # the classifier's scores, one per candidate ([]: none)
    threshold: float | None = None  # the classifier's threshold with classifier-mbr

    @property
    def letter(self) -> str:
        return self.candidates[self.index]

    def record(self, new_tokens: Sequence[int] = ()) -> dict:
        """As JSON: the choice and every candidate with its score, failures and length in tokens."""
        rows = []
        for k, text in enumerate(self.candidates):
            row = {"letter": text, "greedy": k == 0, "chosen": k == self.index,
                   "mbr": round(self.scores[k], 6) if self.scores else None,
                   "failures": self.reasons[k] if self.reasons else []}
            if self.quality:
                row["quality"] = round(self.quality[k], 6)
            if new_tokens:
                row["new_tokens"] = int(new_tokens[k])
            rows.append(row)
        out = {"select": self.select, "chosen": self.index,
               "all_failed": bool(self.reasons) and all(self.reasons), "candidates": rows}
        if self.threshold is not None:
            out["quality_threshold"] = self.threshold
        return out


def choose(candidates: Sequence[str], select: str = "grounded-mbr", inputs: dict[str, str] | None = None,
           quality: Sequence[float] | None = None, threshold: float = 0.5,
           repetition_weight: float = 0.0, scores: Sequence[float] | None = None,
           skills_weight: float = 0.0) -> Choice:
    """The chosen candidate of ``candidates`` (the greedy letter first) by ``select``; ``inputs`` are the
    prompt's eight fields, for the grounding check (every candidate's failures are recorded whatever
    ``select`` is, when they are given); ``quality`` the letter-quality classifier's score of each
    candidate (needed by classifier-mbr, recorded whenever given), ``threshold`` its cut;
    ``repetition_weight`` what a point of repetition ratio costs a candidate's MBR score (0: plain MBR);
    ``scores``: the candidates' MBR scores where they are known (a choice record's), else computed;
    ``skills_weight`` what a candidate's skills coverage (the share of the applicant's skills it names,
    covertune.metrics.grounding.skill_coverage) adds to its MBR score (0: plain MBR), among the candidates
    that pass the grounding check (when every one fails, the least bad is chosen as without it). The
    letter form plays no part in the choice: the chosen letter gets its form afterwards
    (covertune.generation.letter_form.apply_form; preferring full-form candidates was measured on the
    validation split and gained nothing, docs/RESULTS.md)."""
    if select not in SELECT_MODES:
        raise ValueError(f"select must be one of {', '.join(SELECT_MODES)}, got {select!r}")
    candidates = list(candidates)
    if not candidates:
        raise ValueError("no candidates to choose from")
    quality = [float(q) for q in quality] if quality is not None else []
    if quality and len(quality) != len(candidates):
        raise ValueError(f"{len(quality)} quality scores for {len(candidates)} candidates")
    if select == "classifier-mbr" and not quality:
        raise ValueError("select classifier-mbr needs the letter-quality classifier's score of every candidate "
                         "(train one with `covertune classify train`)")
    reasons = [grounding_failures(c, inputs) for c in candidates] if inputs is not None else []
    threshold_used = threshold if select == "classifier-mbr" else None
    if select == "greedy" or len(candidates) == 1:
        return Choice(0, select, candidates, [], reasons, quality, threshold_used)
    scores = list(scores) if scores is not None else mbr_scores(candidates)
    pool = list(range(len(candidates)))
    all_failed = False
    if select in ("grounded-mbr", "classifier-mbr") and reasons:
        passing = [k for k in pool if not reasons[k]]
        if passing:
            pool = passing
        else:  # the fewest failures; an empty letter is worse than any written one
            all_failed = True
            bad = [(not candidates[k].strip(), len(reasons[k])) for k in pool]
            pool = [k for k, b in zip(pool, bad) if b == min(bad)]
    if select == "classifier-mbr":
        good = [k for k in pool if quality[k] >= threshold]
        pool = good or [max(pool, key=lambda k: (quality[k], scores[k], -k))]
    utility = {k: scores[k] for k in pool}
    if repetition_weight:
        for k in pool:
            utility[k] -= repetition_weight * repetition_ratio(candidates[k])
    if skills_weight and inputs is not None and not all_failed:  # among letters that pass the check (as measured)
        for k in pool:
            total, named, _ = skill_coverage(candidates[k], inputs.get("skillsets", ""))
            utility[k] += skills_weight * (named / total if total else 0.0)
    best = max(pool, key=lambda k: (utility[k], -k))
    return Choice(best, select, candidates, scores, reasons, quality, threshold_used)


def summarise(choices: Sequence[dict]) -> dict:
    """What the choices of a run did (``Choice.record`` rows): letters, candidates, how many letters took a
    candidate other than the greedy one, letters whose greedy and whose chosen candidate fail the grounding
    check, letters where every candidate failed, and the failures of all candidates by kind."""
    from collections import Counter

    kinds: Counter = Counter()
    for c in choices:
        for cand in c["candidates"]:
            kinds.update({reason.split(":")[0] for reason in cand["failures"]})
    scored = [c for c in choices if any("quality" in cand for cand in c["candidates"])]
    quality = {}
    if scored:
        chosen = [c["candidates"][c["chosen"]]["quality"] for c in scored]
        quality = {"chosen_quality_mean": round(sum(chosen) / len(chosen), 4),
                   "greedy_quality_mean": round(sum(c["candidates"][0]["quality"] for c in scored) / len(scored), 4)}
        cut = [c for c in scored if c.get("quality_threshold") is not None]
        if cut:
            quality["candidates_below_quality_threshold"] = sum(
                cand["quality"] < c["quality_threshold"] for c in cut for cand in c["candidates"])
    return {
        "letters": len(choices),
        "candidates": sum(len(c["candidates"]) for c in choices),
        "select": sorted({c["select"] for c in choices}),
        "not_greedy": sum(c["chosen"] != 0 for c in choices),
        "greedy_failing": sum(bool(c["candidates"][0]["failures"]) for c in choices),
        "chosen_failing": sum(bool(c["candidates"][c["chosen"]]["failures"]) for c in choices),
        "all_failed": sum(bool(c["all_failed"]) for c in choices),
        "candidates_failing_by_kind": dict(kinds.most_common()),
        **quality,
    }


# ---------------------------------------------------------------- candidates, batched


def generate_candidate_ids(model, tokenizer, inputs: Sequence[Sequence[int]], n: int, decoding, batch_size: int = 8,
                           indices: Sequence[int] | None = None) -> Iterator[tuple[list[int], list[list[list[int]]]]]:
    """Yield ``(row indices, n candidates' new token ids per row)`` batch by batch: one ``model.generate``
    call per batch of ``batch_size`` prompts (``inputs``: token ids, ``covertune.core.prompt.prompt_ids``;
    ``batch_size`` x ``n`` sequences), the first candidate of each prompt greedy, the rest sampled with
    ``decoding`` (whose ``do_sample`` must be on), each from its own seed (covertune.generation.seeded_sampling)."""
    from dataclasses import replace

    from covertune.generation.decoding import check_pad, generate_batch, stop_token_ids

    if n < 1 or batch_size < 1:
        raise ValueError(f"candidates and batch_size must be at least 1, got {n} and {batch_size}")
    if not decoding.do_sample:
        raise ValueError("candidates are sampled: decoding.do_sample must be on")
    stop = stop_token_ids(tokenizer, model)
    pad = check_pad(tokenizer, stop)
    indices = list(range(len(inputs))) if indices is None else list(indices)
    if not indices:
        return
    encoded = {i: list(inputs[i]) for i in indices}
    order = sorted(indices, key=lambda i: (-len(encoded[i]), i))
    if getattr(model, "is_llamacpp", False):  # covertune.generation.llamacpp_engine: one batch, the prompts shared
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            yield batch, model.generate([encoded[i] for i in batch], n, decoding, stop)
        return
    from transformers import LogitsProcessorList

    from covertune.generation.seeded_sampling import RowSampler, row_seed  # torch and transformers

    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        seeds = [None if k == 0 else row_seed(decoding.seed, encoded[i], k) for i in batch for k in range(n)]
        processors = LogitsProcessorList([RowSampler(seeds, decoding.temperature, decoding.top_k, decoding.top_p)])
        greedy = replace(decoding, do_sample=False)  # RowSampler draws each seeded row's token
        if min(len(encoded[i]) for i in batch) > 1:
            rows = shared_prompt_batch(model, [encoded[i] for i in batch], n, greedy, stop, pad, processors)
        else:
            rows = generate_batch(model, [encoded[i] for i in batch for _ in range(n)], greedy, stop, pad,
                                  logits_processor=processors)
        yield batch, [rows[k * n:(k + 1) * n] for k in range(len(batch))]


def shared_prompt_batch(model, rows: Sequence[Sequence[int]], n: int, decoding, stop: Sequence[int], pad: int,
                        processors) -> list[list[int]]:
    """``n`` rows per prompt from one ``model.generate`` call, each prompt prefilled once: its key/value
    cache (all but the last prompt token, left-padded, positions as ``generate`` numbers them) is repeated
    into its ``n`` rows, which ``generate`` then continues from the last prompt token. Rows in the order
    of the prompt repeated n times, so the same per-row seeded draws; cut after their first stop token."""
    import torch

    from covertune.generation.decoding import _left_pad, cut_at_stop, model_device

    ids, mask = _left_pad([list(r) for r in rows], pad)
    device = model_device(model)
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    with torch.inference_mode():
        prefix = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
                       use_cache=True)
        key = "cache" if "cache" in prefix else "past_key_values"  # transformers >= 5.2x call it `cache`
        cache = prefix[key]
        cache.batch_repeat_interleave(n)
        out = model.generate(input_ids=ids.repeat_interleave(n, 0), attention_mask=mask.repeat_interleave(n, 0),
                             eos_token_id=list(stop), pad_token_id=pad, logits_processor=processors,
                             **{key: cache}, **decoding.generate_kwargs())
    return [cut_at_stop(row, stop) for row in out[:, ids.shape[1]:].tolist()]


def generate_chosen_letters(model, tokenizer, inputs: Sequence[Sequence[int]],
                            fields: Sequence[dict[str, str] | None], n: int, select: str, decoding,
                            batch_size: int = 8, *, journal=None, stats: dict | None = None,
                            progress: bool = True, desc: str = "letters", classifier=None,
                            threshold: float = 0.5, repetition_weight: float = 0.0,
                            indices: Sequence[int] | None = None,
                            skills_weight: float = 0.0) -> tuple[list[str], list[dict]]:
    """The chosen letter for every prompt (``inputs``: token ids, ``covertune.core.prompt.prompt_ids``), and
    each prompt's choice record (``Choice.record``).

    ``fields`` are each prompt's eight input fields (None: unknown, nothing is dropped). With a
    ``journal`` (covertune.generation.letters.Journal), rows it holds are not generated again; each finished batch
    is appended to it, the choice record under "choice". ``stats`` receives letters, resumed,
    new_tokens (all candidates') and seconds of this call. A ``classifier``
    (covertune.classify.model.LetterClassifier) scores every candidate (needed by classifier-mbr, which
    drops those below ``threshold``); ``repetition_weight``, ``skills_weight``: as ``choose`` (the chosen
    candidate is returned as written; covertune.generation.letter_form.apply_form gives it its form). ``indices``: the rows to write (default all; the others are left
    None), as ``covertune.generation.letters.generate_letters``."""
    from covertune.generation.letters import ids_sha

    if select not in SELECT_MODES:
        raise ValueError(f"select must be one of {', '.join(SELECT_MODES)}, got {select!r}")
    if select == "classifier-mbr" and classifier is None:
        raise ValueError("select classifier-mbr needs a letter-quality classifier (covertune classify train)")
    letters: list[str | None] = [None] * len(inputs)
    choices: list[dict | None] = [None] * len(inputs)
    if journal is not None:
        for i, p in enumerate(inputs):
            row = journal.lookup(i, p)
            if row is not None and "choice" in row:
                letters[i], choices[i] = row["output"], row["choice"]
    wanted = range(len(inputs)) if indices is None else indices
    pending = [i for i in wanted if letters[i] is None]
    if pending and not getattr(model, "is_llamacpp", False):  # llama.cpp seeds each candidate itself
        from transformers import set_seed

        set_seed(decoding.seed)
    done_letters, done_tokens, t0 = 0, 0, time.perf_counter()
    bar = progress_bar(total=len(wanted), initial=len(wanted) - len(pending), desc=desc, unit="letter",
                       disable=not progress)
    try:
        for batch, groups in generate_candidate_ids(model, tokenizer, inputs, n, decoding, batch_size, pending):
            records = []
            for i, group in zip(batch, groups):
                texts = [extract_letter(tokenizer.decode(ids, skip_special_tokens=True)) for ids in group]
                quality = None
                if classifier is not None:
                    known = fields[i] if fields[i] is not None else inputs_of({})
                    quality = classifier.score(texts, [known] * len(texts))
                choice = choose(texts, select, fields[i], quality, threshold, repetition_weight,
                                skills_weight=skills_weight)
                tokens = [len(ids) for ids in group]
                letters[i], choices[i] = choice.letter, choice.record(tokens)
                records.append({"index": i, "output": letters[i], "new_tokens": sum(tokens),
                                "prompt_sha": ids_sha(inputs[i]), "choice": choices[i]})
                done_tokens += sum(tokens)
            if journal is not None:
                journal.append(records)
            done_letters += len(batch)
            bar.update(len(batch))
    finally:
        bar.close()
        if stats is not None:
            stats.update(letters=done_letters, resumed=len(wanted) - len(pending), new_tokens=done_tokens,
                         seconds=round(time.perf_counter() - t0, 3))
    return letters, choices  # type: ignore[return-value]


def uses_candidates(cfg, which: str) -> bool:
    """Whether the pass ``which`` chooses among candidates: the fine-tuned pass with --candidates above 1
    (the base pass stays greedy: it is the untuned model's baseline)."""
    return cfg.candidates > 1 and which == "fine_tuned"


def candidate_batch(cfg: GenerateConfig) -> int:
    """Prompts per generation call when choosing among candidates (each call decodes that many x N rows)."""
    return cfg.candidate_batch_size or cfg.batch_size


def check_candidates(cfg) -> None:
    """The candidate options of a generate or write config: their declared ranges and choices
    (covertune.config.groups.CANDIDATES) and the rule across them."""
    check_fields(cfg, CANDIDATES.names())
    if cfg.candidates > 1 and cfg.do_sample:
        raise ValueError("--candidates already samples (all but the first candidate): drop --do-sample and "
                         "set --candidate-temperature and --candidate-top-p instead")


def candidate_decoding(cfg) -> Decoding:
    """How the candidates after the first are sampled."""
    from covertune.generation.decoding import Decoding  # torch (through the decoding primitives): only when letters are generated

    return Decoding(cfg.max_new_tokens, True, cfg.candidate_temperature, cfg.candidate_top_p, cfg.top_k,
                    cfg.repetition_penalty, cfg.seed)
