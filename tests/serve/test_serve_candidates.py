"""/v1/cover-letter with candidates: one batch per request, the greedy letter among them, the choice as
covertune.generation.select makes it, and clear errors."""

from __future__ import annotations

import pytest

from covertune.config.stages import ServeConfig
from covertune.generation.select import choose, mbr_scores
from covertune.serve.app import check_config

from serve_fixtures import FIELDS, client, make_client, serve_model_dir, tiny_lm  # noqa: F401  (fixtures)


def _batches_when_idle(engine, timeout: float = 60.0) -> int:
    """The batch count once the worker has finished its batch: a response is sent as soon as its own
    letter ends, and the worker counts the batch just after."""
    import time

    end = time.monotonic() + timeout
    while engine.batcher.busy or engine.batcher.waiting():
        assert time.monotonic() < end, "the batch worker did not go idle"
        time.sleep(0.01)
    return engine.metrics.batches


def test_candidates_come_from_one_batch_and_the_choice_is_selects(client):
    greedy = client.post("/v1/cover-letter", json=FIELDS).json()["letter"]
    engine = client.app.state.engine
    batches = _batches_when_idle(engine)
    r = client.post("/v1/cover-letter", json={**FIELDS, "candidates": 4, "select": "mbr", "temperature": 1.5,
                                              "seed": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert _batches_when_idle(engine) == batches + 1  # the 4 candidates were generated in one batch
    cands = body["candidates"]["candidates"]
    letters = [c["letter"] for c in cands]
    assert len(cands) == 4 and cands[0]["greedy"] and letters[0] == greedy  # the held row is greedy
    assert len(set(letters)) > 1
    assert body["letter"] == choose(letters, "mbr", FIELDS).letter == letters[body["candidates"]["chosen"]]
    assert [c["mbr"] for c in cands] == pytest.approx(mbr_scores(letters), abs=1e-6)
    assert body["usage"]["completion_tokens"] == sum(c["new_tokens"] for c in cands)
    # seeded: the same request gives the same candidates
    again = client.post("/v1/cover-letter", json={**FIELDS, "candidates": 4, "select": "mbr", "temperature": 1.5,
                                                  "seed": 3}).json()
    assert again["candidates"] == body["candidates"]


def test_server_default_candidates_and_grounded_select(make_client):
    c = make_client(candidates=3)
    body = c.post("/v1/cover-letter", json=FIELDS).json()
    assert body["candidates"]["select"] == "grounded-mbr" and len(body["candidates"]["candidates"]) == 3
    assert all(isinstance(x["failures"], list) for x in body["candidates"]["candidates"])
    assert "candidates" not in c.post("/v1/cover-letter", json={**FIELDS, "candidates": 1}).json()


def test_candidate_errors(make_client):
    c = make_client(max_batch_size=4)
    for extra, field in (({"candidates": 5}, "candidates"), ({"candidates": 2, "select": "best"}, "select"),
                         ({"candidates": 2, "form": "letter"}, "form"), ({"candidates": 0}, "candidates")):
        r = c.post("/v1/cover-letter", json={**FIELDS, **extra})
        assert r.status_code == 422, r.text
        assert field in r.text and "Traceback" not in r.text
    with pytest.raises(ValueError, match="--candidates must be 1 to --max-batch-size"):
        check_config(ServeConfig(candidates=20, max_batch_size=16))
    with pytest.raises(ValueError, match="--select must be one of"):
        check_config(ServeConfig(select="best"))


def test_classifier_mbr_scores_every_candidate(make_client, flagged_train_records, tmp_path):
    from covertune.classify.model import LetterClassifier, examine_all
    from covertune.core.records import inputs_of
    from covertune.stages.serve import build_engine

    c = make_client(max_batch_size=4)
    r = c.post("/v1/cover-letter", json={**FIELDS, "candidates": 3, "select": "classifier-mbr"})
    assert r.status_code == 422 and "select" in r.text and "--classifier" in r.text  # this server has none

    rows = flagged_train_records[:150]
    checks, labels, _ = examine_all([x["cover_letter"] for x in rows], [inputs_of(x) for x in rows],
                                    [x["flags"] for x in rows])
    classifier = LetterClassifier.fit([x["cover_letter"] for x in rows], checks, labels)
    c.app.state.engine.classifier = classifier
    r = c.post("/v1/cover-letter", json={**FIELDS, "candidates": 3, "select": "classifier-mbr", "temperature": 1.5,
                                         "seed": 3})
    assert r.status_code == 200, r.text
    body = r.json()["candidates"]
    letters = [x["letter"] for x in body["candidates"]]
    assert body["select"] == "classifier-mbr" and body["quality_threshold"] == 0.5
    assert [x["quality"] for x in body["candidates"]] == pytest.approx(
        classifier.score(letters, [inputs_of(FIELDS)] * 3), abs=1e-6)

    # a server told to use a classifier that is not there stops before loading the model
    with pytest.raises(FileNotFoundError, match="no letter-quality classifier"):
        build_engine(ServeConfig(candidates=2, select="classifier-mbr", classifier=str(tmp_path / "none.json")))
