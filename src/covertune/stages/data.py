"""The data stage, top to bottom: load -> limits and letters -> clean letters -> flag -> dedupe -> overlap
-> filter -> validation split -> (the letter-quality classifier's filter on train) -> write the splits, the
report and the plots.

Limits (covertune.core.limits): every field at most ``max_field_chars`` characters, every prompt at most
``max_prompt_tokens`` tokens of the model's tokenizer (and the model's context), every letter one that
evaluate can score against (not empty, not a bare number). Train/validation rows that break one are
dropped and listed in the report; a test row that breaks one is an error naming the row and field, since
the test split keeps every row.

Writes ``<out>/data/{train,validation,test}.jsonl``: one record per line with the 9 record keys,
``id`` (``<source split>-<row index in the source>``), ``cover_letter_raw`` (the letter as loaded),
``missing_fields`` and ``flags`` ([{"flag", "reason"}]); plus ``report.json``, ``report.md`` and
PNG plots. The test split keeps every row, in source order; only its letters are cleaned.
"""

from __future__ import annotations

import logging
from pathlib import Path

from covertune.classify.fit import filter_train
from covertune.classify.model import CLASSIFIER_FILE, classifier_dir
from covertune.config.build import to_dict, validate
from covertune.config.stages import DataConfig
from covertune.core import io, limits, rundir
from covertune.core.records import FLAGS_FIELD, ID_FIELD, MISSING_FIELD, RECORD_FIELDS, SPLITS
from covertune.data import report as rep
from covertune.data.clean import RAW_FIELD, clean_records
from covertune.data.load import load
from covertune.data.quality import FLAG_NAMES, flag_names, flag_records
from covertune.data.sample import sample_dir
from covertune.data.split import carve_validation, dedupe, drop_flagged, drop_ids, duplicates, input_overlap

log = logging.getLogger(__name__)

STAGE = "data"
SPLIT_FILES = {name: f"{name}.jsonl" for name in SPLITS}
OUTPUTS = (*SPLIT_FILES.values(), "report.json", "report.md", *rep.PLOTS)


def _check(cfg: DataConfig) -> None:
    unknown = sorted(set(cfg.drop_flags) - set(FLAG_NAMES))
    if unknown:
        raise ValueError(f"drop_flags: unknown flag(s) {unknown}; flags are {', '.join(FLAG_NAMES)}")
    if cfg.val_size < 0:
        raise ValueError(f"val_size must be >= 0, got {cfg.val_size}")
    if cfg.min_letter_words < 0:
        raise ValueError(f"min_letter_words must be >= 0, got {cfg.min_letter_words}")
    for name in ("max_field_chars", "max_prompt_tokens"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0 (0: no limit), got {getattr(cfg, name)}")


def _check_rows(cfg: DataConfig, splits: dict) -> tuple[dict, dict]:
    """Limits and letters on every split (covertune.core.limits): over-limit or letter-less train/validation
    rows are removed from their split; a test row is an error. Returns (settings, dropped rows per split)."""
    test = splits["test"]
    early = limits.check_rows(test.records, cfg.max_field_chars)  # characters and letters: no tokenizer yet
    if early:
        raise _test_row_error(test.origin, early)
    tokenizer, context = None, None
    if cfg.max_prompt_tokens:
        from covertune.models.load import context_length, load_tokenizer  # torch and transformers: only when tokens are counted

        tokenizer = load_tokenizer(cfg.model)
        context = context_length(cfg.model)
    settings = {"model": cfg.model, "max_field_chars": cfg.max_field_chars,
                "max_prompt_tokens": cfg.max_prompt_tokens, "model_context": context,
                "prompt_limit": limits.prompt_limit(cfg.max_prompt_tokens, context)[0]}
    dropped = {}
    for name, split in splits.items():
        problems = limits.check_rows(split.records, cfg.max_field_chars, cfg.max_prompt_tokens, tokenizer, context)
        if problems and name == "test":
            raise _test_row_error(split.origin, problems)
        split.records = [r for i, r in enumerate(split.records) if i not in problems]
        dropped[name] = [{"split": name, **p} for p in problems.values()]
        for p in problems.values():
            log.warning("%s: dropped %s (%s: %s)", name, p["id"], p["field"], p["reason"])
    return settings, dropped


def _test_row_error(origin: str, problems: dict) -> ValueError:
    first = next(iter(problems.values()))
    where = "prompt" if first["field"] == "prompt" else f"field {first['field']}"
    more = f" (and {len(problems) - 1} more test row(s))" if len(problems) > 1 else ""
    fix = ", or raise the limit" if first["kind"] == "limit" else ""
    return ValueError(f"{origin}: test row {first['id']}, {where}: {first['reason']}{more}. The test split keeps "
                      f"every row: fix or remove the row in the dataset{fix}")


def _record(rec: dict) -> dict:
    """A record in its written key order."""
    out = {ID_FIELD: rec[ID_FIELD]}
    out.update({k: rec[k] for k in RECORD_FIELDS})
    out[RAW_FIELD] = rec[RAW_FIELD]
    out[MISSING_FIELD] = rec[MISSING_FIELD]
    out[FLAGS_FIELD] = rec[FLAGS_FIELD]
    return out


def fingerprint(cfg: DataConfig) -> dict:
    """What the splits are built from: every option but the run directory and --force, and the dataset's
    files (a hub dataset by its id, a local file or folder by its contents' hash)."""
    settings = {k: v for k, v in to_dict(cfg).items() if k not in ("out", "force")}
    if cfg.data == "sample":
        source = rundir.path_hash(sample_dir())
    else:
        source = rundir.path_hash(Path(cfg.data).expanduser())
    return rundir.fingerprint(settings, {"dataset": source} if source else {})


def run_data(cfg: DataConfig) -> str:
    validate(cfg)
    rundir.check_out(cfg.out)
    data_dir = rundir.data_dir(cfg.out)
    fp = fingerprint(cfg)
    complete = all((data_dir / f).exists() for f in OUTPUTS)
    if cfg.filter_classifier > 0:  # the classifier that chose the dropped rows is an output too
        complete = complete and (classifier_dir(cfg.out) / CLASSIFIER_FILE).exists()
    if rundir.check_stage(cfg.out, STAGE, fp, complete, cfg.force, str(data_dir)):
        return f"data: {data_dir} is complete; skipped (--force redoes it)"
    _check(cfg)
    rundir.stage_marker(cfg.out, STAGE).unlink(missing_ok=True)  # outputs are incomplete until the end

    # 1. load
    splits, note = load(cfg.data, seed=cfg.seed, test_size=cfg.test_size)
    log.info("loaded %s", ", ".join(f"{s.name}: {len(s.records)} rows" for s in splits.values()))

    # 2. limits and letters on every split: over-limit or letter-less train/validation rows dropped, test
    # rows checked (an error); before anything else reads a field
    loaded = {name: len(s.records) for name, s in splits.items()}
    limit_settings, invalid = _check_rows(cfg, splits)

    # 3. clean the letters (inputs are never touched)
    cleaning = {name: dict(clean_records(s.records)) for name, s in splits.items()}
    log.info("cleaned letters: %s", {r: sum(c[r] for c in cleaning.values()) for r in next(iter(cleaning.values()))})

    # 4. flag every row; letter reuse is counted over all splits
    flag_records([r for s in splits.values() for r in s.records], cfg.min_letter_words)
    flags = {name: rep.flag_counts(s.records) for name, s in splits.items()}
    every = [r for s in splits.values() for r in s.records]
    flags["all"] = rep.flag_counts(every)
    flags["share"] = {k: (v / len(every) if every else 0.0) for k, v in flags["all"].items() if k != "rows"}
    log.info("flags: %s", {k: v for k, v in flags["all"].items() if k != "rows"})

    test = splits["test"].records
    train_loaded = splits["train"].records
    given_val = splits["validation"].records if "validation" in splits else None
    stats = {name: {"loaded": loaded[name], "invalid_dropped": len(invalid[name]), "duplicates_removed": 0,
                    "test_overlap_dropped": 0, "flagged_dropped": 0, "classifier_dropped": 0, "moved_to_validation": 0}
             for name, s in splits.items()}
    stats.setdefault("validation", {"loaded": 0, "invalid_dropped": 0, "duplicates_removed": 0,
                                    "test_overlap_dropped": 0, "flagged_dropped": 0, "classifier_dropped": 0, "moved_to_validation": 0})

    # 5. exact duplicates: removed from train/validation, only reported for test
    train, dup_train = dedupe(train_loaded)
    dups = {"train": dup_train, "test": duplicates(test)}
    stats["train"]["duplicates_removed"] = len(dup_train)
    if given_val is not None:
        given_val, dups["validation"] = dedupe(given_val)
        stats["validation"]["duplicates_removed"] = len(dups["validation"])

    # 6. train rows whose inputs equal a test row's: reported on the loaded rows, dropped after dedupe
    overlap_rows = input_overlap(train_loaded, test) + (input_overlap(splits["validation"].records, test)
                                                        if given_val is not None else [])
    dropped_overlap = 0
    if cfg.drop_test_overlap:
        ids = {o["id"] for o in overlap_rows}
        before = len(train)
        train = drop_ids(train, ids)
        stats["train"]["test_overlap_dropped"] = before - len(train)
        dropped_overlap += before - len(train)
        if given_val is not None:
            before = len(given_val)
            given_val = drop_ids(given_val, ids)
            stats["validation"]["test_overlap_dropped"] = before - len(given_val)
            dropped_overlap += before - len(given_val)
    log.info("exact duplicates removed from train: %d; train rows overlapping test: %d (%d dropped)",
             len(dup_train), len(overlap_rows), dropped_overlap)

    # 7. flagged rows (train/validation only)
    filtering = bool(cfg.drop_flagged or cfg.drop_flags)
    if filtering:
        train, gone = drop_flagged(train, cfg.drop_flags)
        stats["train"]["flagged_dropped"] = len(gone)
        if given_val is not None:
            given_val, gone = drop_flagged(given_val, cfg.drop_flags)
            stats["validation"]["flagged_dropped"] = len(gone)
    if not train:
        raise ValueError("no train rows left after removing rows over a limit or without a letter, duplicates, "
                         "test overlap and flagged rows; drop fewer flags (--drop-flags), turn --drop-flagged "
                         "off, or raise --max-field-chars/--max-prompt-tokens")

    # 8. validation: the given split, else carved from train (seeded)
    if given_val is not None:
        val = given_val
        val_note = f"the dataset's own validation split ({len(val)} rows); val_size is not used"
    else:
        train, val = carve_validation(train, cfg.val_size, cfg.seed)
        stats["train"]["moved_to_validation"] = len(val)
        val_note = f"{len(val)} rows carved from train (val_size={cfg.val_size}, seed={cfg.seed}), source order kept"
    # 9. the letter-quality classifier's filter (train only): fitted on the train rows, each scored out of fold
    classifier = None
    if cfg.filter_classifier > 0:
        before = len(train)
        train, classifier = filter_train(train, val, cfg.out, cfg.filter_classifier, cfg.min_letter_words, cfg.seed)
        stats["train"]["classifier_dropped"] = before - len(train)
        if not train:
            raise ValueError(f"the letter-quality classifier scored every train row below --filter-classifier "
                             f"{cfg.filter_classifier}; lower the threshold")
    written = {"train": train, "validation": val, "test": test}
    for name, recs in written.items():
        stats[name]["written"] = len(recs)
        stats[name]["written_flagged"] = sum(bool(flag_names(r)) for r in recs)

    # 10. write splits, plots, report; the marker last
    for name, recs in written.items():
        io.write_jsonl(data_dir / SPLIT_FILES[name], (_record(r) for r in recs))
    plots = rep.write_plots(written, data_dir)
    report = {
        "source": {"data": cfg.data, "note": note, "origins": {n: s.origin for n, s in splits.items()}},
        "config": to_dict(cfg),
        "splits": {name: stats[name] for name in SPLITS},
        "validation": val_note,
        "limits": {**limit_settings, "dropped": [d for name in splits for d in invalid[name]]},
        "cleaning": cleaning,
        "flags": flags,
        "filtering": {"drop_flagged": filtering, "drop_flags": list(cfg.drop_flags)},
        "classifier_filter": classifier,
        "duplicates": dups,
        "test_overlap": {"rows": overlap_rows, "drop": cfg.drop_test_overlap, "dropped": dropped_overlap},
        "examples": rep.examples(every),
        "lengths": {name: rep.length_stats(recs) for name, recs in written.items()},
        "plots": plots,
        "files": {name: SPLIT_FILES[name] for name in SPLITS},
    }
    io.write_json(data_dir / "report.json", report)
    io.write_text(data_dir / "report.md", rep.render_markdown(report))
    rundir.mark_done(cfg.out, STAGE, {"config": to_dict(cfg), "rows": {n: len(r) for n, r in written.items()},
                                      "fingerprint": fp})

    share = flags["all"]["any"] / max(1, flags["all"]["rows"])
    return (f"data: wrote {data_dir}/{{train,validation,test}}.jsonl ({len(train)}/{len(val)}/{len(test)} rows), "
            f"report.md, report.json and {len(plots)} plots; {flags['all']['any']} of {flags['all']['rows']} "
            f"rows flagged ({share:.0%}, generic {flags['share']['generic']:.0%}); "
            f"{len(dup_train)} duplicates removed, {len(overlap_rows)} train rows overlap test "
            f"({dropped_overlap} dropped)")
